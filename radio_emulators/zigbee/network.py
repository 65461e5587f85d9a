"""The emulated Zigbee network at run time: the mesh radio model (`mesh.Mesh`), the
emulated nodes, and the host side (the coordinator's application, e.g. the zigpy
`ControllerApplication` in `radio.py`), all in emulated time on a clock with the
`radio_emulators.clock.VirtualClock` interface (`now()`, `sleep_until()`, `sleep()`,
`busy()`).

Every frame is planned when it is sent (`Mesh.plan_unicast` / `plan_broadcast`) and handed
to its receiver by a task that sleeps until the planned time; receivers run inside
`clock.busy()`, so time never moves while a frame is being processed (host deliveries
also yield to the event loop a few times while busy, so that the handlers' own tasks
start before the clock may jump).

Fault hooks: `reboot_at`, `corrupt_block`, `drop_node` / `restore_node`; figures:
`report()` (per node blocks, bytes, times, reboots...; mesh airtime; makespan) and
`airtime_bound_s`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable

from radio_emulators.zigbee import phy
from radio_emulators.zigbee.aps import GROUP, UNICAST, ApsFrame
from radio_emulators.zigbee.devices import ROUTER, SLEEPY, DeviceProfile, END_DEVICE
from radio_emulators.zigbee.mesh import Mesh, MeshConfig, MeshStats
from radio_emulators.zigbee.node import EmulatedNode
from radio_emulators.zigbee.topology import MeshNode, Topology

__all__ = ["ZigbeeNetwork", "NetworkSettings", "NodeReport", "NetworkReport", "register_network",
           "lookup_network", "HostSendResult"]

_REGISTRY: dict[str, "ZigbeeNetwork"] = {}


def register_network(name: str, network: "ZigbeeNetwork") -> None:
    """Make `network` reachable as device path `emulated:<name>` (see radio.py)."""
    _REGISTRY[name] = network


def lookup_network(name: str) -> "ZigbeeNetwork":
    try:
        return _REGISTRY[name]
    except KeyError:
        raise LookupError(f"no emulated Zigbee network registered as {name!r}") from None


@dataclass
class NetworkSettings:
    pan_id: int = 0x1A62
    extended_pan_id: bytes = bytes.fromhex("0123456789abcdef")
    channel: int = 15
    network_key: bytes = bytes(range(16))
    network_key_seq: int = 0
    tc_link_key: bytes = b"ZigBeeAlliance09"
    nwk_update_id: int = 0
    formed: bool = True
    frame_counter: int = 0


@dataclass(frozen=True)
class HostSendResult:
    success: bool
    confirm_at: float
    delivered_at: float | None
    aps_attempts: int


@dataclass
class NodeReport:
    nwk: int
    ieee: str
    role: str
    sleepy: bool
    hops: int
    profile: str
    file_version: int
    versions: list[int]
    blocks: int
    bytes: int
    ignored_blocks: int
    timeouts: int
    wait_for_data: int
    aborts: int
    resumes: int
    restarts_from_zero: int
    integrity_failures: int
    reboots: int
    download_started_at: float | None
    download_done_at: float | None
    activated_at: float | None
    version_reported_at: float | None

    @property
    def download_s(self) -> float | None:
        if self.download_started_at is None or self.download_done_at is None:
            return None
        return self.download_done_at - self.download_started_at


@dataclass
class NetworkReport:
    started_at: float
    now: float
    nodes: list[NodeReport]
    mesh: MeshStats
    host_frames_in: int
    host_frames_out: int
    host_dropped: int

    @property
    def airtime_s(self) -> float:
        return self.mesh.total_airtime_s

    @property
    def makespan_s(self) -> float | None:
        """From the network's start to the last node reporting its new version (None while
        a node has not)."""
        ends = [n.version_reported_at for n in self.nodes]
        if not ends or any(e is None for e in ends):
            return None
        return max(ends) - self.started_at

    def summary(self) -> dict:
        return {
            "nodes": len(self.nodes),
            "emulated_s": round(self.now - self.started_at, 3),
            "makespan_s": None if self.makespan_s is None else round(self.makespan_s, 3),
            "airtime_s": round(self.airtime_s, 3),
            "blocks": sum(n.blocks for n in self.nodes),
            "bytes": sum(n.bytes for n in self.nodes),
            "mac_attempts": self.mesh.mac_attempts,
            "mac_failures": self.mesh.mac_failures,
            "aps_retries": self.mesh.aps_retries,
            "indirect_expired": self.mesh.indirect_expired,
        }


ProfileSpec = DeviceProfile | dict[int, DeviceProfile] | Callable[[MeshNode], DeviceProfile] | None


def _default_profile(node: MeshNode) -> DeviceProfile:
    if node.sleepy:
        return SLEEPY
    return ROUTER if node.is_router else END_DEVICE


class ZigbeeNetwork:
    def __init__(self, clock, topology: Topology, *, profiles: ProfileSpec = None,
                 config: MeshConfig | None = None, seed: int = 0,
                 settings: NetworkSettings | None = None, handover_yields: int = 4) -> None:
        self.clock = clock
        self.topology = topology
        self.settings = settings or NetworkSettings()
        self.seed = seed
        self.handover_yields = handover_yields
        self.mesh = Mesh(topology, config, seed=seed, poll_schedule=self._poll, alive=self._alive)
        self.nodes: dict[int, EmulatedNode] = {}
        for mn in topology.nodes[1:]:
            self.nodes[mn.nwk] = EmulatedNode(mn, self._profile_for(profiles, mn), self, seed=seed,
                                              coordinator_ieee=topology.coordinator.ieee)
        self._host: Callable[[ApsFrame], None] | None = None
        self._tasks: set[asyncio.Task] = set()
        self._timers: dict[int, tuple[float, asyncio.Task] | None] = {}
        self._watchers: list[tuple[Callable[[], bool], asyncio.Future]] = []
        self._host_aps = 0
        self.started_at: float | None = None
        self.coordinator_up = True
        self.host_frames_in = 0
        self.host_frames_out = 0
        self.host_dropped = 0
        self.trace: list[tuple[float, str, int, int, int, bytes]] | None = None   # opt-in

    @classmethod
    def generate(cls, clock, *, routers: int, end_devices: int = 0, sleepy: int = 0, max_hops: int = 3,
                 seed: int = 0, **kwargs) -> "ZigbeeNetwork":
        topo = Topology.generate(routers=routers, end_devices=end_devices, sleepy=sleepy,
                                 max_hops=max_hops, seed=seed)
        return cls(clock, topo, seed=seed, **kwargs)

    @staticmethod
    def _profile_for(spec: ProfileSpec, node: MeshNode) -> DeviceProfile:
        if spec is None:
            return _default_profile(node)
        if isinstance(spec, DeviceProfile):
            return spec.with_(sleepy=node.sleepy) if spec.sleepy != node.sleepy else spec
        if isinstance(spec, dict):
            return spec.get(node.nwk) or spec.get(node.index) or _default_profile(node)
        return spec(node)

    # -- look-ups ---------------------------------------------------------------------------------
    def node(self, nwk: int) -> EmulatedNode:
        try:
            return self.nodes[nwk]
        except KeyError:
            raise KeyError(f"no emulated node with NWK 0x{nwk:04X}") from None

    def node_by_ieee(self, ieee: bytes) -> EmulatedNode:
        for n in self.nodes.values():
            if n.ieee == bytes(ieee):
                return n
        raise KeyError(f"no emulated node with IEEE {bytes(ieee)[::-1].hex(':')}")

    def _alive(self, index: int) -> bool:
        if index == 0:
            return self.coordinator_up
        return self.nodes[self.topology.nodes[index].nwk].alive

    def _poll(self, index: int, t: float) -> float | None:
        return self.nodes[self.topology.nodes[index].nwk].next_poll(t)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """All nodes running (joined earlier, as after a gateway restart) from now on."""
        now = self.clock.now()
        self.started_at = now
        for node in self.nodes.values():
            node.start(now)

    async def close(self) -> None:
        tasks = list(self._tasks) + [v[1] for v in self._timers.values() if v is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        self._timers.clear()
        for _, fut in self._watchers:
            if not fut.done():
                fut.cancel()
        self._watchers.clear()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def at(self, t: float, fn: Callable, *args, yields: int = 0) -> asyncio.Task:
        """Run fn(*args) at emulated time t, inside clock.busy()."""
        return self._spawn(self._run_at(t, fn, args, yields))

    async def _run_at(self, t: float, fn: Callable, args: tuple, yields: int) -> None:
        await self.clock.sleep_until(t)
        with self.clock.busy():
            fn(*args)
            self._check_watchers()
            for _ in range(yields):
                await asyncio.sleep(0)

    # -- node timers --------------------------------------------------------------------------------
    def node_rearm(self, node: EmulatedNode) -> None:
        t = node.deadline
        current = self._timers.get(node.nwk)
        if current is not None:
            if current[0] == t and not current[1].done():
                return
            current[1].cancel()
        if t is None:
            self._timers[node.nwk] = None
            return
        task = asyncio.get_running_loop().create_task(self._node_timer(node, t))
        self._timers[node.nwk] = (t, task)

    async def _node_timer(self, node: EmulatedNode, t: float) -> None:
        await self.clock.sleep_until(t)
        with self.clock.busy():
            self._timers[node.nwk] = None
            node.on_timer(self.clock.now())
            self.node_rearm(node)
            self._check_watchers()

    # -- sending --------------------------------------------------------------------------------------
    def node_send(self, node: EmulatedNode, frame: ApsFrame, *, ack: bool) -> None:
        now = self.clock.now()
        self._trace(now, "node", frame)
        src = node.mesh_node.index
        if frame.mode == UNICAST:
            if not self.topology.has_nwk(frame.dst):
                return
            dst = self.topology.by_nwk(frame.dst).index
            try:
                plan = self.mesh.plan_unicast(src, dst, len(frame.payload), now, aps_ack=ack)
            except ValueError:
                return                         # the node's stack refuses it
            if plan.delivered_at is not None:
                self._deliver_at(plan.delivered_at, dst, frame)
        else:
            self._broadcast(src, frame, now)

    def host_send(self, frame: ApsFrame, *, ack: bool) -> "asyncio.Future[HostSendResult]":
        """The coordinator sends `frame`; the future resolves when its stack confirms (APS
        ACK or failure for unicasts with `ack`, first hop otherwise, at once for
        broadcasts). Raises ValueError for a payload over the APS limit and LookupError
        for an unknown destination."""
        now = self.clock.now()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[HostSendResult] = loop.create_future()
        if len(frame.payload) > self.mesh.config.max_aps_payload:
            raise ValueError(f"APS payload of {len(frame.payload)} bytes exceeds "
                             f"{self.mesh.config.max_aps_payload}")
        self._host_aps = (self._host_aps + 1) & 0xFF
        frame = ApsFrame(0x0000, frame.dst, frame.profile, frame.cluster, frame.src_ep, frame.dst_ep,
                         frame.payload, frame.mode, self._host_aps)
        self.host_frames_out += 1
        self._trace(now, "host", frame)
        if frame.mode == UNICAST:
            if frame.dst == 0x0000:
                raise LookupError("unicast to the coordinator itself goes through the host, not the mesh")
            if not self.topology.has_nwk(frame.dst):
                raise LookupError(f"no node with NWK 0x{frame.dst:04X} in the emulated mesh")
            dst = self.topology.by_nwk(frame.dst).index
            plan = self.mesh.plan_unicast(0, dst, len(frame.payload), now, aps_ack=ack)
            if plan.delivered_at is not None:
                self._deliver_at(plan.delivered_at, dst, frame)
            result = HostSendResult(plan.success, plan.confirm_at, plan.delivered_at, plan.aps_attempts)
            self.at(plan.confirm_at, self._resolve, fut, result)
        else:
            self._broadcast(0, frame, now)
            result = HostSendResult(True, now, None, 1)
            self.at(now + phy.frame_airtime(phy.data_psdu(len(frame.payload))), self._resolve, fut, result)
        return fut

    @staticmethod
    def _resolve(fut: asyncio.Future, result: HostSendResult) -> None:
        if not fut.done():
            fut.set_result(result)

    def _broadcast(self, src: int, frame: ApsFrame, now: float) -> None:
        try:
            heard = self.mesh.plan_broadcast(src, len(frame.payload), now)
        except ValueError:
            return
        if frame.mode == GROUP:
            return                                  # no emulated node is a group member
        for index, t in heard.items():
            mn = self.topology.nodes[index]
            if index == 0 or frame.accepts(mn.rx_on_when_idle, mn.is_router):
                self._deliver_at(t, index, frame)

    def _deliver_at(self, t: float, index: int, frame: ApsFrame) -> None:
        if index == 0:
            self.at(t, self._to_host, frame, yields=self.handover_yields)
        else:
            node = self.nodes[self.topology.nodes[index].nwk]
            self.at(t, self._to_node, node, frame)

    def _to_node(self, node: EmulatedNode, frame: ApsFrame) -> None:
        node.receive(frame, self.clock.now())

    def _to_host(self, frame: ApsFrame) -> None:
        if self._host is None:
            self.host_dropped += 1
            return
        self.host_frames_in += 1
        self._host(frame)

    def _trace(self, now: float, who: str, frame: ApsFrame) -> None:
        if self.trace is not None:
            self.trace.append((now, who, frame.src, frame.dst, frame.cluster, frame.payload))

    # -- host attachment ------------------------------------------------------------------------------
    def attach_host(self, receiver: Callable[[ApsFrame], None]) -> None:
        """Frames for the coordinator go to `receiver` (sync, called inside clock.busy())."""
        self._host = receiver

    def detach_host(self) -> None:
        """The host application is gone (gateway restart): the coordinator radio still
        acknowledges frames, but what reaches it is dropped."""
        self._host = None

    @property
    def host_attached(self) -> bool:
        return self._host is not None

    # -- faults -----------------------------------------------------------------------------------------
    def reboot_at(self, nwk: int, t: float, *, down_s: float | None = None) -> None:
        node = self.node(nwk)
        self.at(t, lambda: node.reboot(self.clock.now(), down_s=down_s))

    def corrupt_block(self, nwk: int, k: int = 1) -> None:
        """The k-th image block delivered to the node from now on arrives with a flipped byte."""
        self.node(nwk).corrupt_block(k)

    def drop_node(self, nwk: int, at: float | None = None) -> None:
        node = self.node(nwk)
        self.at(self.clock.now() if at is None else at, node.power_off)

    def restore_node(self, nwk: int, at: float | None = None) -> None:
        node = self.node(nwk)
        self.at(self.clock.now() if at is None else at, lambda: node.power_on(self.clock.now(), announce=True))

    def announce_all(self, *, spacing_s: float = 0.5) -> None:
        """Every node sends a Device_annce (as after joining), `spacing_s` apart."""
        now = self.clock.now()
        for k, node in enumerate(self.nodes.values()):
            self.at(now + k * spacing_s, lambda n=node: n.announce(self.clock.now()))

    # -- waiting ----------------------------------------------------------------------------------------
    def _check_watchers(self) -> None:
        if not self._watchers:
            return
        keep = []
        for pred, fut in self._watchers:
            if fut.done():
                continue
            if pred():
                fut.set_result(True)
            else:
                keep.append((pred, fut))
        self._watchers = keep

    async def wait_until(self, predicate: Callable[[], bool], *, timeout_s: float) -> bool:
        """Wait (in emulated time) until predicate() holds, checked after every network
        event; False if `timeout_s` emulated seconds pass first."""
        if predicate():
            return True
        fut = asyncio.get_running_loop().create_future()
        self._watchers.append((predicate, fut))
        sleeper = asyncio.ensure_future(self.clock.sleep(timeout_s))
        try:
            await asyncio.wait({fut, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            if not fut.done():
                fut.cancel()
        return predicate()

    def all_on_version(self, file_version: int, nwks: list[int] | None = None) -> bool:
        """Every (given) node runs `file_version` and has queried with it since."""
        targets = [self.nodes[n] for n in nwks] if nwks is not None else list(self.nodes.values())
        return all(n.current_file_version == file_version and n.stats.version_reported_at is not None
                   for n in targets)

    # -- figures --------------------------------------------------------------------------------------------
    def report(self) -> NetworkReport:
        nodes = []
        for n in self.nodes.values():
            s = n.stats.ota
            nodes.append(NodeReport(
                nwk=n.nwk, ieee=n.mesh_node.ieee_str, role=n.mesh_node.role, sleepy=n.sleepy,
                hops=n.mesh_node.depth, profile=n.profile.name, file_version=n.current_file_version,
                versions=list(n.stats.versions), blocks=s.blocks, bytes=s.bytes,
                ignored_blocks=s.ignored_blocks, timeouts=s.timeouts, wait_for_data=s.wait_for_data,
                aborts=s.aborts, resumes=s.resumes, restarts_from_zero=s.restarts_from_zero,
                integrity_failures=s.integrity_failures, reboots=n.stats.reboots,
                download_started_at=s.download_started_at, download_done_at=s.download_done_at,
                activated_at=n.stats.activated_at, version_reported_at=n.stats.version_reported_at))
        started = self.started_at if self.started_at is not None else self.clock.now()
        return NetworkReport(started, self.clock.now(), nodes, self.mesh.stats, self.host_frames_in,
                             self.host_frames_out, self.host_dropped)

    def airtime_bound_s(self, image_bytes: int, nwks: list[int] | None = None, **kwargs) -> float:
        """`phy.airtime_bound_s` for the given nodes (default all) at their hop counts."""
        targets = nwks if nwks is not None else list(self.nodes)
        return phy.airtime_bound_s(image_bytes, hops=[self.node(n).mesh_node.depth for n in targets], **kwargs)
