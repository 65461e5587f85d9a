"""The emulated world behind ``configs/emulated.toml``: the service runs against an
in-process emulated ChirpStack + LoRaWAN network (``radio_emulators``) and a demo TUF
repository served on loopback, so ``proxyota serve --config configs/emulated.toml`` works
on one machine with nothing else installed.

What it plays (everything outside the gateway):

* the **cloud repository**: created once in ``repo_dir`` (TUF role keys, one firmware
  envelope signed by a demo vendor key whose private half is discarded after signing;
  the gateway only gets the public key), served over HTTP on 127.0.0.1;
* **ChirpStack** (gRPC API with a random token, HTTP integration posting to the
  service's receiver) and **N end devices** running ``old_version`` that accept exactly
  the demo image (as its firmware version) once it arrives;
* an **inventory**: the devices' node records (hardware class, version, security counter)
  are written to the store at start, as a provisioning system would;
* with ``[emulator.zigbee]``, a **Zigbee mesh** (``radio_emulators.zigbee``: routers, end
  devices, sleepy end devices up to ``hops`` hops away, ``loss`` per hop and attempt)
  whose nodes run OTA clients on ``old_version``, on the service's clock; the service
  opens it as its coordinator radio (zigpy knows the nodes as from its database). The demo
  repository then also publishes a Zigbee OTA file (``new_version``, signed by a second
  demo vendor whose public key the gateway trusts), so a Zigbee campaign can be created
  from the API at once; the nodes' records (``zigbee:<mfr>:<type>`` class, version, hops)
  are in the inventory.

The emulated network lives in the service's process: a restart starts it afresh (new
devices), so unlike a real deployment a campaign running across a restart of the emulated
service finds devices that forgot it. Use the ``proxyota serve`` crash tests for restarts.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from proxyota.images import envelope
from proxyota.images.policy import zigbee_hw_class
from proxyota.images.signing import generate_key, public_key_pem
from proxyota.images.tuf_repo import TufRepository
from proxyota.service.logging import SECRETS
from proxyota.store import NodeRecord, Store, UnknownNode

__all__ = ["EmulatorConfig", "EmulatedWorld", "EmulatedZigbeeConfig", "DEMO_HW_CLASS",
           "ZIGBEE_HW_CLASS"]

#: the hardware class of the emulated devices (a class UUID like any vendor's)
DEMO_HW_CLASS = str(envelope.class_id("emulated.proxyota.example", "lorawan-node"))
DEMO_APPLICATION_ID = str(uuid.UUID(int=0x9E5))
_TARGET = "emulated/node-firmware.bin"
_ZIGBEE_TARGET = "emulated/zigbee-node.ota"
#: manufacturer code and image type of the emulated Zigbee nodes and their OTA file
ZIGBEE_MANUFACTURER, ZIGBEE_IMAGE_TYPE = 0x1234, 0x0001
ZIGBEE_HW_CLASS = zigbee_hw_class(ZIGBEE_MANUFACTURER, ZIGBEE_IMAGE_TYPE)


@dataclass(frozen=True)
class EmulatedZigbeeConfig:
    """The ``[emulator.zigbee]`` table (``routers`` None: 60 % of the non-sleepy nodes)."""

    nodes: int = 8
    sleepy: int = 1
    routers: int | None = None
    hops: int = 3
    loss: float = 0.0
    seed: int = 1
    image_size: int = 2048
    old_version: int = 1
    new_version: int = 2

    @property
    def router_count(self) -> int:
        if self.routers is not None:
            return self.routers
        return max(1, round((self.nodes - self.sleepy) * 0.6))


@dataclass(frozen=True)
class EmulatorConfig:
    """The ``[emulator]`` section."""

    repo_dir: Path
    devices: int = 10
    seed: int = 1
    uplink_period: float = 60.0
    downlink_loss: float = 0.0
    uplink_loss: float = 0.0
    profiles: tuple[str, ...] = ("loramac-node",)
    image_size: int = 4096
    old_version: int = 0x0001_0000
    new_version: int = 0x0002_0000
    security_counter: int = 2
    zigbee: EmulatedZigbeeConfig | None = None


class _StaticServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_static("/", self.root, show_index=False)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class EmulatedWorld:
    """Demo repository + emulated ChirpStack and devices (see the module docstring)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.api_token = secrets.token_urlsafe(24)
        SECRETS.add(self.api_token)
        self.application_id = DEMO_APPLICATION_ID
        self.hw_class = DEMO_HW_CLASS
        self._server: _StaticServer | None = None
        self.chirpstack: Any = None
        self.network: Any = None
        self.zigbee_network: Any = None  #: the emulated Zigbee mesh ([emulator.zigbee])
        self.image: bytes = b""
        self.zigbee_image: bytes = b""
        self.server_address = ""

    # ------------------------------------------------------------------ the repository

    @property
    def vendor_key_path(self) -> Path:
        return self.config.repo_dir / "vendor.pub"

    @property
    def zigbee_vendor_key_path(self) -> Path:
        return self.config.repo_dir / "zigbee-vendor.pub"

    @property
    def vendor_key_paths(self) -> tuple[Path, ...]:
        """The vendors' public keys the gateway trusts."""
        if self.config.zigbee is None:
            return (self.vendor_key_path,)
        return (self.vendor_key_path, self.zigbee_vendor_key_path)

    @property
    def hw_classes(self) -> tuple[str, ...]:
        """The hardware classes the gateway serves."""
        return (self.hw_class,) if self.config.zigbee is None else (self.hw_class, ZIGBEE_HW_CLASS)

    @property
    def trusted_root_path(self) -> Path:
        return self.config.repo_dir / "root.json"

    def _ensure_repo(self) -> None:
        cfg = self.config
        www = cfg.repo_dir / "www"
        if (cfg.repo_dir / "repo" / "repo.json").exists() and self.trusted_root_path.exists():
            repo = TufRepository(cfg.repo_dir / "repo")
            self.image = (cfg.repo_dir / "image.bin").read_bytes()
            self._ensure_zigbee_target(repo)
            repo.publish(www)
            return
        cfg.repo_dir.mkdir(parents=True, exist_ok=True)
        repo = TufRepository.init(cfg.repo_dir / "repo", expiry_days={
            "root": 3650, "targets": 365, "snapshot": 365, "timestamp": 365})
        vendor = generate_key()  # the demo vendor signs once; its private key is not kept
        payload = bytes((i * 131 + cfg.seed * 7 + (i >> 8)) & 0xFF for i in range(cfg.image_size))
        self.image = envelope.build(payload, hw_class=self.hw_class,
                                    firmware_version=cfg.new_version,
                                    security_counter=cfg.security_counter, private_key=vendor)
        self.vendor_key_path.write_bytes(public_key_pem(vendor))
        (cfg.repo_dir / "image.bin").write_bytes(self.image)
        repo.add_target(self.image, _TARGET)
        repo.sign()
        self._ensure_zigbee_target(repo)
        repo.publish(www)
        self.trusted_root_path.write_bytes(repo.metadata_bytes("root", 1))

    def _ensure_zigbee_target(self, repo: TufRepository) -> None:
        """With [emulator.zigbee]: the Zigbee OTA file, signed once by its demo vendor (a
        repository made before keeps its file)."""
        zb = self.config.zigbee
        if zb is None:
            return
        path = self.config.repo_dir / "zigbee-image.ota"
        if _ZIGBEE_TARGET in repo.targets() and path.exists() and self.zigbee_vendor_key_path.exists():
            self.zigbee_image = path.read_bytes()
            return
        from proxyota.zigbee import otafile

        vendor = generate_key()  # signs once; its private key is not kept
        firmware = bytes((i * 167 + zb.seed * 13 + (i >> 7)) & 0xFF for i in range(zb.image_size))
        # no AES-MMO integrity code: it would cover the header's total size, which the
        # signature sub-element changes; the signature protects the whole file instead
        ota = otafile.build(ZIGBEE_MANUFACTURER, ZIGBEE_IMAGE_TYPE, zb.new_version, firmware,
                            header_string="proxyota emulated zigbee node",
                            minimum_hardware_version=1, maximum_hardware_version=3)
        self.zigbee_image = envelope.sign_zigbee_ota(ota.to_bytes(), vendor)
        self.zigbee_vendor_key_path.write_bytes(public_key_pem(vendor))
        path.write_bytes(self.zigbee_image)
        repo.add_target(self.zigbee_image, _ZIGBEE_TARGET)
        repo.sign()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, clock: Any, integration_url: str) -> None:
        from radio_emulators.lorawan.campaign import build_campaign_network
        from radio_emulators.lorawan.chirpstack import EmulatedChirpStack
        from radio_emulators.lorawan.firmware import DigestImageVerifier

        cfg = self.config
        self._ensure_repo()
        self._server = _StaticServer(cfg.repo_dir / "www")
        await self._server.start()
        verifier = DigestImageVerifier(1, {hashlib.sha256(self.image).digest(): cfg.new_version})
        cn = build_campaign_network(cfg.devices, losses=cfg.downlink_loss,
                                    uplink_losses=cfg.uplink_loss, seed=cfg.seed,
                                    start=clock.now(), uplink_period=cfg.uplink_period,
                                    profiles=cfg.profiles, image_verifier=verifier,
                                    fw_version=cfg.old_version)
        self.network = cn
        self.chirpstack = EmulatedChirpStack(
            cn.network, clock, api_token=self.api_token, integration_url=integration_url,
            application_id=self.application_id, device_keys=cn.keys, seed=cfg.seed)
        port = await self.chirpstack.start()
        self.server_address = f"127.0.0.1:{port}"
        if cfg.zigbee is not None:
            self.zigbee_network = self._zigbee_mesh(clock, cfg.zigbee)
            self.zigbee_network.start()

    def _zigbee_mesh(self, clock: Any, zb: EmulatedZigbeeConfig) -> Any:
        """The mesh: nodes of the OTA file's manufacturer code and image type, on
        ``old_version``, hardware version 1 (the file allows 1..3), each trusting the
        Zigbee vendor's public key (a node verifies the signature itself)."""
        from radio_emulators.zigbee import END_DEVICE, ROUTER, SLEEPY, MeshConfig, ZigbeeNetwork
        from radio_emulators.zigbee.otafile import raw_public_key

        from proxyota.images.signing import load_public_key

        trusted = (raw_public_key(load_public_key(self.zigbee_vendor_key_path)),)

        def profile(node: Any) -> Any:
            base = SLEEPY if node.sleepy else (ROUTER if node.is_router else END_DEVICE)
            return base.with_(manufacturer_code=ZIGBEE_MANUFACTURER, image_type=ZIGBEE_IMAGE_TYPE,
                              file_version=zb.old_version, hardware_version=1, trusted_keys=trusted)

        routers = zb.router_count
        return ZigbeeNetwork.generate(
            clock, routers=routers, end_devices=zb.nodes - zb.sleepy - routers, sleepy=zb.sleepy,
            max_hops=zb.hops, seed=zb.seed, config=MeshConfig(loss=zb.loss), profiles=profile)

    async def stop(self) -> None:
        if self.zigbee_network is not None:
            try:
                await self.zigbee_network.close()
            finally:
                self.zigbee_network = None
        if self.chirpstack is not None:
            try:
                await self.chirpstack.stop()
            finally:
                self.chirpstack = None
        if self._server is not None:
            await self._server.stop()
            self._server = None

    @property
    def metadata_url(self) -> str:
        assert self._server is not None
        return self._server.url + "metadata/"

    @property
    def targets_url(self) -> str:
        assert self._server is not None
        return self._server.url + "targets/"

    @property
    def dev_euis(self) -> list[str]:
        return [eui.hex() for eui in self.network.dev_euis] if self.network else []

    async def seed_nodes(self, store: Store) -> None:
        """The inventory: hardware class, running version and counter of every device."""
        for eui in self.dev_euis:
            async with store.transaction():  # events may update the same node meanwhile
                try:
                    node = await store.get_node(eui)
                except UnknownNode:
                    node = NodeRecord(eui, "lorawan")
                await store.upsert_node(NodeRecord(
                    eui, "lorawan", self.hw_class, self.config.old_version, 1,
                    node.battery, node.last_seen, dict(node.rx_meta)))
        if self.zigbee_network is None:
            return
        old = self.config.zigbee.old_version if self.config.zigbee else 0
        for zb_node in self.zigbee_network.nodes.values():
            mesh_node = zb_node.mesh_node
            async with store.transaction():
                try:
                    node = await store.get_node(mesh_node.ieee_str)
                except UnknownNode:
                    node = NodeRecord(mesh_node.ieee_str, "zigbee")
                rx_meta = {**node.rx_meta, "hops": mesh_node.depth, "role": mesh_node.role,
                           "sleepy": zb_node.sleepy}
                await store.upsert_node(NodeRecord(
                    mesh_node.ieee_str, "zigbee", ZIGBEE_HW_CLASS, old, old,
                    node.battery, node.last_seen, rx_meta))

    @property
    def zigbee_ieees(self) -> list[str]:
        """The emulated Zigbee nodes' IEEE addresses (zigpy's text form)."""
        if self.zigbee_network is None:
            return []
        return [n.mesh_node.ieee_str for n in self.zigbee_network.nodes.values()]
