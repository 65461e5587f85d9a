"""A Zigbee OTA campaign through zigpy against the emulated mesh (``proxyota simulate zigbee``).

Set-up: a seeded mesh (``radio_emulators.zigbee``: routers, rx-on end devices and sleepy end
devices up to ``hops`` hops from the coordinator, ``loss`` per hop and attempt) whose nodes
run emulated OTA clients; the mesh is a zigpy radio library, so a real zigpy
``ControllerApplication`` runs on it, knowing the nodes as from its database. The image is
``--image FILE`` (an OTA file or a vendor container) or one built here with
:func:`proxyota.zigbee.otafile.build` (AES-MMO integrity code, hardware versions 1..3),
newer than what the nodes run. Everything runs on one emulated timeline
(``radio_emulators.zigbee.looptime``: the event loop's clock is emulated, so zigpy's own
timers, the mesh and the campaign all agree on time) and a campaign of hours completes in
seconds.

Servers: ``proxyota`` (default): a :class:`~proxyota.zigbee.campaign.ZigbeeCampaign` with its
state in a :class:`~proxyota.chirpstack.fuota.FileStateSink`; optionally the gateway is
restarted mid-campaign (``restart_at_s``: the campaign and zigpy are shut down, the mesh keeps
running, a new zigpy application and a campaign resumed from the saved state take over).
``zigpy``: zigpy's built-in OTA, ``Device.update_firmware(image)`` started for every node at
once (the baseline of the benchmark).

Ground truth comes from the emulated devices (the file version each runs at the end), not
from the server. Figures: ``makespan_s`` (emulated seconds from the campaign start until the
last updated node reported its new version), ``airtime_bound_s``
(:func:`radio_emulators.zigbee.phy.airtime_bound_s` for the nodes expected to update),
``blocks_served``, gateway CPU (process CPU time over the campaign, including the emulator,
per block) and ``wall_s`` (reported, never asserted).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from proxyota.chirpstack.fuota import FileStateSink
from proxyota.errors import InvalidArgument
from proxyota.zigbee import otafile
from proxyota.zigbee.campaign import ZigbeeCampaign
from proxyota.zigbee.containers import parse_any
from proxyota.zigbee.ota_server import CampaignPolicy
from proxyota.zigbee.otafile import OTAFile
from proxyota.zigbee.zcl_ota import CLUSTER_ID, CommandId

__all__ = ["DEFAULT_MANUFACTURER", "DEFAULT_IMAGE_TYPE", "DEFAULT_POLICY", "LOOP_START", "START_GPS", "SERVERS",
           "GpsClock", "ZigbeeSimulation", "build_image", "run", "simulate"]

#: identity of the built image and of the emulated devices
DEFAULT_MANUFACTURER = 0x1234
DEFAULT_IMAGE_TYPE = 0x0001
#: the gateway's clock reads this GPS time (2025-01-05) at the start, so ZCL UTC times are
#: realistic; the event loop itself starts at LOOP_START (small: at 1.4e9 s a float cannot
#: hold asyncio's 1 ns clock resolution and the loop would never reach its next timer)
START_GPS = 1_420_000_000.0
LOOP_START = 1000.0
SERVERS = ("proxyota", "zigpy")
#: the simulation's server policy: 32 downloads at once (the server's own default, 4,
#: leaves the mesh to other traffic; an emulated mesh has none)
DEFAULT_POLICY = CampaignPolicy(max_concurrent=32)


@dataclass(frozen=True)
class ZigbeeSimulation:
    """What to simulate (see the module docstring).

    ``sink``: where the campaign state goes (a ``StateSink``); default a
    :class:`~proxyota.chirpstack.fuota.FileStateSink` in ``state_dir`` (default a temporary
    directory). ``policy``: the server's; default :data:`DEFAULT_POLICY`. ``on_app``: called
    as ``on_app(network, app)`` after each start of the zigpy application (instrumentation).
    ``profiles``: topology index (1 = first router; routers come first, then sleepy end
    devices, then rx-on end devices) -> a ``radio_emulators.zigbee.devices.PROFILES`` name
    (quirks: ``reboots-mid-download``, ``corrupting-link``, ``hw-out-of-range``,
    ``slow-crc`` ...). ``routers``: None = 60 % of the non-sleepy nodes (at least one).
    """

    nodes: int = 30
    sleepy: int = 5
    hops: int = 4
    loss: float = 0.10
    seed: int = 1
    image: bytes | None = None
    image_size: int = 4096
    server: str = "proxyota"
    routers: int | None = None
    profiles: Mapping[int, str] = field(default_factory=dict)
    restart_at_s: float | None = None
    restart_down_s: float = 30.0
    timeout_s: float = 48 * 3600.0
    policy: CampaignPolicy | None = None
    state_dir: str | None = None
    sink: Any = None
    notify: str = "unicast"
    on_app: Any = None

    def __post_init__(self) -> None:
        def integer(name: str, value: Any, low: int, high: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidArgument(f"{name} must be an integer {low}..{high}, got {value!r}")

        integer("nodes", self.nodes, 1, 500)
        integer("sleepy", self.sleepy, 0, self.nodes)
        integer("hops", self.hops, 1, 15)
        integer("seed", self.seed, 0, 2**63)
        integer("image_size", self.image_size, 1, 16 * 1024 * 1024)
        if isinstance(self.loss, bool) or not isinstance(self.loss, (int, float)) or not 0.0 <= self.loss < 1.0:
            raise InvalidArgument(f"loss must be a probability in [0, 1), got {self.loss!r}")
        if self.server not in SERVERS:
            raise InvalidArgument(f"server must be one of {', '.join(SERVERS)}, got {self.server!r}")
        if self.routers is not None:
            integer("routers", self.routers, 1 if self.nodes > self.sleepy else 0, self.nodes - self.sleepy)
        if self.sleepy and self.nodes - self.sleepy < 1:
            raise InvalidArgument("sleepy end devices need at least one router as parent")
        restart = self.restart_at_s
        if restart is not None and (not isinstance(restart, (int, float)) or restart <= 0):
            raise InvalidArgument("restart_at_s must be > 0 emulated seconds")
        if self.restart_at_s is not None and self.server != "proxyota":
            raise InvalidArgument("a gateway restart is only simulated for the proxyota server")
        if not isinstance(self.timeout_s, (int, float)) or self.timeout_s <= 0:
            raise InvalidArgument("timeout_s must be > 0")
        from radio_emulators.zigbee.devices import PROFILES

        for index, name in dict(self.profiles).items():
            integer("profile index", index, 1, self.nodes)
            if name not in PROFILES:
                raise InvalidArgument(f"unknown device profile {name!r}; known: {', '.join(sorted(PROFILES))}")

    @property
    def router_count(self) -> int:
        if self.routers is not None:
            return self.routers
        rest = self.nodes - self.sleepy
        return max(1, round(rest * 0.6)) if rest else 0


def build_image(size: int, *, seed: int = 1, file_version: int = 2,
                manufacturer_code: int = DEFAULT_MANUFACTURER, image_type: int = DEFAULT_IMAGE_TYPE,
                hardware_versions: tuple[int, int] | None = (1, 3)) -> bytes:
    """A vendor-style OTA file: seeded firmware bytes, AES-MMO integrity code."""
    rng = random.Random(seed)
    firmware = bytes(rng.getrandbits(8) for _ in range(size))
    header: dict[str, Any] = {"header_string": "proxyota simulated image"}
    if hardware_versions is not None:
        header.update(minimum_hardware_version=hardware_versions[0], maximum_hardware_version=hardware_versions[1])
    ota = otafile.build(manufacturer_code, image_type, file_version, firmware, integrity="with-header", **header)
    return ota.to_bytes()


def _load_image(sim: ZigbeeSimulation) -> tuple[OTAFile, bytes]:
    """The OTA file to serve and the bytes the nodes download (the OTA image proper)."""
    data = sim.image if sim.image is not None else build_image(sim.image_size, seed=sim.seed)
    container = parse_any(data)
    ota = container.ota
    return ota, ota.image_bytes()


def _profile_spec(sim: ZigbeeSimulation, ota: OTAFile):
    from radio_emulators.zigbee.devices import END_DEVICE, PROFILES, ROUTER, SLEEPY

    old_version = max(0, ota.file_version - 1)
    low, high = ota.minimum_hardware_version, ota.maximum_hardware_version

    def spec(node):
        name = sim.profiles.get(node.index)
        if name is not None:
            base = PROFILES[name]
        elif node.sleepy:
            base = SLEEPY
        else:
            base = ROUTER if node.is_router else END_DEVICE
        changes: dict[str, Any] = dict(manufacturer_code=ota.manufacturer_code, image_type=ota.image_type,
                                       file_version=old_version)
        hw = base.hardware_version
        if low is not None and high is not None and hw == ROUTER.hardware_version and not low <= hw <= high:
            changes["hardware_version"] = low  # a device the file is meant for
        return base.with_(**changes)

    return spec


class GpsClock:
    """The gateway's view of an emulated timeline: ``base`` (the loop clock) shifted to GPS
    seconds. Same interface as :class:`proxyota.clock.Clock`."""

    def __init__(self, base: Any, offset: float) -> None:
        self.base = base
        self.offset = float(offset)

    def now(self) -> float:
        return self.base.now() + self.offset

    async def sleep_until(self, t: float) -> None:
        await self.base.sleep_until(t - self.offset)

    async def sleep(self, dt: float) -> None:
        await self.base.sleep(dt)

    def busy(self) -> Any:
        return self.base.busy()


class _TxCounter:
    """Counts the OTA cluster commands the coordinator transmits (both servers alike)."""

    def __init__(self, app: Any) -> None:
        self.commands: collections.Counter[str] = collections.Counter()
        self.block_responses = 0
        self._send = app.send_packet
        app.send_packet = self.send_packet

    async def send_packet(self, packet: Any) -> None:
        if int(packet.cluster_id) == CLUSTER_ID:
            data = packet.data.serialize()
            if len(data) >= 3 and data[0] & 0x08:
                offset = 5 if data[0] & 0x04 else 3
                if len(data) >= offset:
                    cmd = data[offset - 1]
                    general = data[0] & 0x03 == 0
                    self.commands["default_response" if general else f"0x{cmd:02x}"] += 1
                    if not general and cmd == CommandId.IMAGE_BLOCK_RESPONSE and len(data) > offset \
                            and data[offset] == 0:
                        self.block_responses += 1
        await self._send(packet)


async def _start_app(net: Any, name: str, on_app: Any = None) -> Any:
    from radio_emulators.zigbee.radio import EmulatedControllerApplication, emulated_config

    app = EmulatedControllerApplication(emulated_config(name), network=net)
    await app.startup()
    app.add_emulated_devices()  # zigpy knows the joined nodes, as from its database
    if on_app is not None:
        on_app(net, app)
    return app


async def simulate(sim: ZigbeeSimulation) -> dict[str, Any]:
    """Run ``sim`` on the running event loop (a ``VirtualTimeEventLoop`` for emulated time:
    use :func:`run`) and return the report."""
    from radio_emulators.zigbee import MeshConfig, ZigbeeNetwork
    from radio_emulators.zigbee import phy
    from radio_emulators.zigbee.looptime import LoopClock

    wall0 = time.perf_counter()
    clock = LoopClock()
    gateway_clock = GpsClock(clock, START_GPS - clock.now())
    ota, image = _load_image(sim)
    routers = sim.router_count
    net = ZigbeeNetwork.generate(
        clock, routers=routers, end_devices=sim.nodes - sim.sleepy - routers, sleepy=sim.sleepy,
        max_hops=sim.hops, seed=sim.seed, config=MeshConfig(loss=sim.loss), profiles=_profile_spec(sim, ota))
    name = f"proxyota-sim-{sim.seed}"
    app = await _start_app(net, name, sim.on_app)
    counter = _TxCounter(app)
    targets = {node.mesh_node.ieee_str: node for node in net.nodes.values()}
    tmp: tempfile.TemporaryDirectory[str] | None = None
    extra: dict[str, Any] = {}
    try:
        net.start()
        started = clock.now()
        cpu0 = time.process_time()
        if sim.server == "proxyota":
            if sim.state_dir is None and sim.sink is None:
                tmp = tempfile.TemporaryDirectory(prefix="proxyota-sim-")
            root = Path(sim.state_dir if sim.state_dir is not None else tmp.name if tmp is not None else ".")
            result, app, counter = await _run_proxyota(sim, ota, net, app, counter, gateway_clock, root, name,
                                                      list(targets))
        else:
            result = await _run_zigpy(sim, ota, net, app, clock)
        cpu = time.process_time() - cpu0
        ended = clock.now()
        extra = result
    finally:
        quiet = logging.getLogger("zigpy")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # zigpy logs the handler tasks shutdown cancels
        try:
            await app.shutdown()
        finally:
            await net.close()
            quiet.setLevel(level)
            if tmp is not None:
                tmp.cleanup()

    # ground truth: the emulated devices
    new_version = ota.file_version
    net_report = net.report()
    by_nwk = {n.nwk: n for n in net_report.nodes}
    per_node: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    expected_hops: list[int] = []
    reported: list[float] = []
    server_nodes = extra.get("per_node", {})
    for ieee, node in targets.items():
        nr = by_nwk[node.nwk]
        srv = server_nodes.get(ieee, {})
        ok = node.current_file_version == new_version
        if srv.get("status") != "refused":
            expected_hops.append(node.mesh_node.depth)
        if ok and nr.version_reported_at is not None:
            reported.append(nr.version_reported_at)
        if not ok:
            failed[ieee] = srv.get("reason") or srv.get("zigpy_status") or (
                f"still on 0x{node.current_file_version:08X}")
        per_node.append({
            "ieee": ieee, "nwk": f"0x{node.nwk:04X}", "role": nr.role, "sleepy": nr.sleepy, "hops": nr.hops,
            "profile": nr.profile, "file_version": node.current_file_version, "updated": ok,
            "versions": nr.versions, "blocks_received": nr.blocks, "bytes_received": nr.bytes, "resumes": nr.resumes,
            "restarts_from_zero": nr.restarts_from_zero, "integrity_failures": nr.integrity_failures,
            "reboots": nr.reboots, "no_image": node.stats.ota.no_image,
            "version_reported_at": (None if nr.version_reported_at is None
                                    else round(nr.version_reported_at - started, 3)),
            "server": srv,
        })
    blocks = extra.get("blocks_served", counter.block_responses)
    bound = phy.airtime_bound_s(len(image), hops=expected_hops) if expected_hops else 0.0
    makespan = (max(reported) - started) if reported else None
    report: dict[str, Any] = {
        "server": sim.server,
        "nodes": sim.nodes,
        "updated": sum(1 for p in per_node if p["updated"]),
        "failed": failed,
        "blocks_served": blocks,
        "makespan_s": None if makespan is None else round(makespan, 3),
        "airtime_bound_s": round(bound, 3),
        "makespan_over_bound": None if makespan is None or not bound else round(makespan / bound, 2),
        "wall_s": round(time.perf_counter() - wall0, 3),
        "emulated_s": round(ended - started, 3),
        "cpu_s": round(cpu, 3),
        "cpu_per_block_ms": None if not blocks else round(1000 * cpu / blocks, 4),
        "seed": sim.seed,
        "sleepy": sim.sleepy,
        "routers": routers,
        "hops": sim.hops,
        "max_hops": max((p["hops"] for p in per_node), default=0),
        "loss": sim.loss,
        "image": {"manufacturer_code": ota.manufacturer_code, "image_type": ota.image_type,
                  "file_version": ota.file_version, "size": len(image),
                  "hardware_versions": None if ota.minimum_hardware_version is None else
                  [ota.minimum_hardware_version, ota.maximum_hardware_version]},
        "mesh": net_report.summary(),
        "tx": dict(sorted(counter.commands.items())),
        "per_node": per_node,
    }
    for key in ("campaign", "gateway_restarts", "zigpy"):
        if key in extra:
            report[key] = extra[key]
    return report


async def _run_proxyota(sim: ZigbeeSimulation, ota: OTAFile, net: Any, app: Any, counter: _TxCounter,
                        clock: Any, root: Path, name: str, targets: list[str]) -> tuple[dict, Any, _TxCounter]:
    sink = sim.sink if sim.sink is not None else FileStateSink(root)
    campaign_id = f"zigbee-sim-{sim.seed}"
    aps = net.mesh.config.max_aps_payload
    campaign = ZigbeeCampaign(_server(sim, ota), app, clock, campaign_id=campaign_id, sink=sink, targets=targets,
                              notify=sim.notify, aps_max_payload=aps)
    end = clock.now() + sim.timeout_s
    restarts = 0
    block_responses = 0
    task = asyncio.ensure_future(campaign.run(timeout_s=sim.timeout_s))
    if sim.restart_at_s is not None:
        crash = asyncio.ensure_future(clock.sleep(sim.restart_at_s))
        await asyncio.wait([task, crash], return_when=asyncio.FIRST_COMPLETED)
        crash.cancel()
        if not task.done():
            # the gateway goes down: campaign and zigpy stop, the mesh keeps running
            await campaign.close()
            await task
            block_responses += counter.block_responses
            await app.shutdown()
            await clock.sleep(sim.restart_down_s)
            app = await _start_app(net, name, sim.on_app)
            counter = _TxCounter(app)
            campaign = await ZigbeeCampaign.resume([ota], sim.policy if sim.policy is not None else DEFAULT_POLICY,
                                                   app, clock, campaign_id=campaign_id, sink=sink,
                                                   notify=sim.notify, aps_max_payload=aps)
            restarts += 1
            task = asyncio.ensure_future(campaign.run(timeout_s=max(1.0, end - clock.now())))
    try:
        report = await task
    finally:
        await campaign.close(wait=True)
    counter.block_responses += block_responses
    return {
        "blocks_served": report["blocks_served"],
        "per_node": report["per_node"],
        "gateway_restarts": restarts,
        "campaign": {k: v for k, v in report.items() if k != "per_node"},
    }, app, counter


def _server(sim: ZigbeeSimulation, ota: OTAFile):
    from proxyota.zigbee.ota_server import OtaServer

    return OtaServer([ota], sim.policy if sim.policy is not None else DEFAULT_POLICY)


async def _run_zigpy(sim: ZigbeeSimulation, ota: OTAFile, net: Any, app: Any, clock: Any) -> dict[str, Any]:
    """zigpy's built-in OTA: ``Device.update_firmware`` for every node at once."""
    import zigpy.types as zt
    from zigpy.ota import OtaImageWithMetadata
    from zigpy.ota.image import parse_ota_image
    from zigpy.ota.providers import BaseOtaImageMetadata

    firmware, _ = parse_ota_image(ota.to_bytes())
    image = OtaImageWithMetadata(
        metadata=BaseOtaImageMetadata(file_version=ota.file_version, manufacturer_id=ota.manufacturer_code,
                                      image_type=ota.image_type),
        firmware=firmware)
    statuses: dict[str, str] = {}

    async def one(ieee: str) -> None:
        device = app.get_device(ieee=zt.EUI64.convert(ieee))
        try:
            status = await device.update_firmware(image)
        except Exception as exc:  # zigpy re-raises what its OTA manager hit
            statuses[ieee] = f"exception: {type(exc).__name__}: {exc}"
            return
        statuses[ieee] = "SUCCESS" if status is not None and int(status) == 0 else (
            f"zigpy status {getattr(status, 'name', status)}")

    ieees = [node.mesh_node.ieee_str for node in net.nodes.values()]
    work = asyncio.gather(*(one(ieee) for ieee in ieees))
    try:
        await asyncio.wait_for(work, timeout=sim.timeout_s)
    except TimeoutError:
        pass
    per_node = {ieee: {"zigpy_status": statuses.get(ieee, "unfinished")} for ieee in ieees}
    for ieee, entry in per_node.items():
        if entry["zigpy_status"] == "SUCCESS":
            entry["zigpy_status"] = None
    return {"per_node": per_node,
            "zigpy": {"statuses": dict(collections.Counter(s for s in statuses.values()))}}


def run(sim: ZigbeeSimulation) -> dict[str, Any]:
    """Run ``sim`` on a fresh emulated-time event loop (blocking)."""
    from radio_emulators.zigbee.looptime import run_virtual

    return run_virtual(simulate(sim), start=LOOP_START)
