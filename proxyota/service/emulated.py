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
  are written to the store at start, as a provisioning system would.

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
from proxyota.images.signing import generate_key, public_key_pem
from proxyota.images.tuf_repo import TufRepository
from proxyota.service.logging import SECRETS
from proxyota.store import NodeRecord, Store, UnknownNode

__all__ = ["EmulatorConfig", "EmulatedWorld", "DEMO_HW_CLASS"]

#: the hardware class of the emulated devices (a class UUID like any vendor's)
DEMO_HW_CLASS = str(envelope.class_id("emulated.proxyota.example", "lorawan-node"))
DEMO_APPLICATION_ID = str(uuid.UUID(int=0x9E5))
_TARGET = "emulated/node-firmware.bin"


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
        self.image: bytes = b""
        self.server_address = ""

    # ------------------------------------------------------------------ the repository

    @property
    def vendor_key_path(self) -> Path:
        return self.config.repo_dir / "vendor.pub"

    @property
    def trusted_root_path(self) -> Path:
        return self.config.repo_dir / "root.json"

    def _ensure_repo(self) -> None:
        cfg = self.config
        www = cfg.repo_dir / "www"
        if (cfg.repo_dir / "repo" / "repo.json").exists() and self.trusted_root_path.exists():
            repo = TufRepository(cfg.repo_dir / "repo")
            self.image = (cfg.repo_dir / "image.bin").read_bytes()
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
        repo.publish(www)
        self.trusted_root_path.write_bytes(repo.metadata_bytes("root", 1))

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

    async def stop(self) -> None:
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
