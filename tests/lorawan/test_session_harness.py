"""Scripted fake devices and network for the FUOTA session machine tests (no tests here).

The fakes play the device side of TS003/TS004/TS005/TS006 the way the reference stacks
behave, closely enough to drive :class:`proxyota.lorawan.session.FuotaSession`:

* ``stack="loramac"`` (LoRaMac-node-like, TS004 v1): NbFragReceived = last counter
  processed (frozen at completion), MissingFrag = uncoded fragments lost, never lowered
  after recovery; with Participants = 0 it answers only while MissingFrag > 0.
* ``stack="lbm"`` (LoRa Basics Modem-like, TS004 v2, TS005 v2, TS003 v2): NbFragReceived =
  last counter - uncoded lost, MissingFrag = rank deficit (0 once decoded); AckReception:
  FragDataBlockReceivedReq (MIC checked) repeated on each uplink until acknowledged.

Being the gateway's own unit test, the fakes decode downlinks with proxyota's codecs and
FEC decoder (the independent emulators live in radio_emulators/). Everything is
deterministic: losses are explicit counter sets, delays derive from the DevEUI.

Class A is modelled simply: a device uplinks every ``period`` seconds (sooner when it has
something to say); on each uplink the network delivers at most one queued unicast downlink.
"""

from __future__ import annotations

import heapq
import itertools
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from proxyota.fec.ts004 import Decoder
from proxyota.lorawan import keys
from proxyota.lorawan.applayer import (
    AppTimeAns,
    AppTimeReq,
    DataFragment,
    DevRebootCountdownAns,
    DevRebootCountdownReq,
    DevRebootTimeAns,
    DevRebootTimeReq,
    DevUpgradeImageAns,
    DevUpgradeImageReq,
    DevVersionAns,
    DevVersionReq,
    ForceDeviceResyncReq,
    FragDataBlockReceivedAns,
    FragDataBlockReceivedReq,
    FragSessionDeleteAns,
    FragSessionDeleteReq,
    FragSessionSetupAns,
    FragSessionSetupReq,
    FragSessionStatusAns,
    FragSessionStatusReq,
    McClassBSessionAns,
    McClassBSessionReq,
    McClassCSessionAns,
    McClassCSessionReq,
    McGroupDeleteAns,
    McGroupDeleteReq,
    McGroupSetupAns,
    McGroupSetupReq,
    PackageVersionAns,
    PackageVersionReq,
    UpImageStatus,
    decode_downlink,
    encode_commands,
)
from proxyota.lorawan.session import FuotaSession
from proxyota.lorawan.session_actions import (
    CreateMulticastGroup,
    DeleteMulticastGroup,
    Log,
    SendMulticast,
    SendUnicast,
)
from proxyota.lorawan.session_config import DeviceConfig, SessionConfig, Timeouts

T0 = 1_400_000_000.0  # GPS seconds
OLD_FW = 0x00010000
NEW_FW = 0x00020000
IMAGE = bytes((i * 37 + 11) % 251 for i in range(1000))  # 1000 B -> 25 fragments of 40 B
FRAG_SIZE = 40
MC_KEY = bytes(range(0x10, 0x20))
MC_ADDR = 0x01AB23CD


def key_for(eui: str) -> bytes:
    return bytes.fromhex(eui) * 2


@dataclass
class FakeDevice:
    eui: str
    stack: str = "loramac"  # "loramac" (v1) | "lbm" (v2)
    packages: dict[int, int] | None = None  # fport -> version; missing port = ignored
    lost: set[int] = field(default_factory=set)  # multicast counters this device misses
    lost_unicast: set[int] = field(default_factory=set)
    period: float = 60.0
    busy_period: float = 5.0  # uplink interval while it has something to send or fetch
    clock_offset: float = 0.0  # device clock - GPS
    silent: bool = False  # never uplinks anything the machine cares about
    setup_bits: dict[str, bool] = field(default_factory=dict)  # FragSessionSetupAns flags
    session_bits: dict[str, bool] = field(default_factory=dict)  # McClassCSessionAns flags
    mc_id_error: bool = False
    fw_after: int | None = None  # firmware reported after the reboot (None: NEW if image ok)
    reboot_errors: int = 0  # answer 0 to this many reboot requests
    memory_error_status: bool = False
    mic_error: bool = False  # corrupt the data block MIC check
    drop_status_answers: int = 0  # ignore this many FragSessionStatusReq
    duplicate_answers: bool = False  # send every answer twice
    apptime_on_resync_only: bool = False

    def __post_init__(self) -> None:
        if self.packages is None:
            v = 1 if self.stack == "loramac" else 2
            self.packages = {200: v, 201: v, 202: v, 203: 1}
        self.outbox: deque[tuple[int, bytes]] = deque()
        self.key = key_for(self.eui)
        self.fw = OLD_FW
        self.decoder: Decoder | None = None
        self.setup: FragSessionSetupReq | None = None
        self.seen: set[int] = set()
        self.last_counter = 0
        self.stopped = False  # processing stopped at completion
        self.complete_data: bytes | None = None
        self.session: tuple[float, float] | None = None  # GPS start, end
        self.mc_key: bytes | None = None
        self.block_ack_pending = False
        self.reboot_at: float | None = None
        self.received_downlinks: list[tuple[float, int, bytes]] = []
        self.multicast_heard = 0

    # -- helpers ---------------------------------------------------------------------
    def version(self, port: int) -> int:
        assert self.packages is not None
        return self.packages.get(port, 1)

    def say(self, port: int, *cmds) -> None:
        payload = encode_commands(list(cmds))
        self.outbox.append((port, payload))
        if self.duplicate_answers:
            self.outbox.append((port, payload))

    def device_time(self, t: float) -> float:
        return t + self.clock_offset

    @property
    def complete(self) -> bool:
        return self.decoder is not None and self.decoder.complete

    def status(self) -> FragSessionStatusAns:
        assert self.setup is not None and self.decoder is not None
        m = self.setup.nb_frag
        lost_uncoded = sum(1 for n in range(1, min(self.last_counter, m) + 1) if n not in self.seen)
        v = self.setup.version
        if self.stack == "loramac":
            nb, missing = self.last_counter, min(lost_uncoded, 255)
        else:
            nb = max(0, self.last_counter - lost_uncoded)
            missing = self.decoder.needed % 256
        return FragSessionStatusAns(self.setup.frag_index, min(nb, 0x3FFF), missing,
                                    memory_error=self.memory_error_status, version=v)

    def wants_to_answer(self, participants: bool) -> bool:
        if participants:
            return True
        if self.stack == "loramac":
            return self.status().missing_frag > 0
        return not self.complete

    # -- downlinks -------------------------------------------------------------------
    def on_unicast(self, port: int, payload: bytes, t: float, net: FakeNetwork) -> None:
        self.received_downlinks.append((t, port, payload))
        assert self.packages is not None
        if port not in self.packages:
            return  # package not implemented: the port is ignored
        versions = {200: (1, 2), 201: (1, 2), 202: (1, 2), 203: (1,)}[port]
        cmds = decode_downlink(port, payload, min(self.version(port), versions[-1]))
        for cmd in cmds:
            self.on_command(port, cmd, t, net)

    def on_command(self, port: int, cmd, t: float, net: FakeNetwork) -> None:
        if isinstance(cmd, PackageVersionReq):
            ident = {200: 2, 201: 3, 202: 1, 203: 4}[port]
            self.say(port, PackageVersionAns(ident, self.version(port)))
        elif isinstance(cmd, ForceDeviceResyncReq):
            self.outbox.append((202, b"APPTIME"))  # DeviceTime is captured when it is sent
        elif isinstance(cmd, AppTimeAns):
            self.clock_offset += cmd.time_correction
        elif isinstance(cmd, McGroupSetupReq):
            root = keys.mc_root_key(self.key)
            self.mc_key = keys.decrypt_mc_key(keys.mc_ke_key(root), cmd.mc_key_encrypted)
            assert self.mc_key == MC_KEY, "McKey_encrypted does not decrypt to the campaign McKey"
            self.say(200, McGroupSetupAns(cmd.mc_group_id, id_error=self.mc_id_error))
        elif isinstance(cmd, (McClassCSessionReq, McClassBSessionReq)):
            bits = dict(self.session_bits)
            v = self.version(200)
            ans_cls = McClassCSessionAns if isinstance(cmd, McClassCSessionReq) else McClassBSessionAns
            if any(bits.values()):
                self.say(200, ans_cls(cmd.mc_group_id, time_to_start=None, version=v, **bits))
                return
            tts = int(cmd.session_time - self.device_time(t))
            tts = max(0, tts)
            start = cmd.session_time - self.clock_offset  # in GPS time
            self.session = (start, start + cmd.time_out_seconds)
            self.say(200, ans_cls(cmd.mc_group_id, time_to_start=tts, version=v))
        elif isinstance(cmd, McGroupDeleteReq):
            self.say(200, McGroupDeleteAns(cmd.mc_group_id))
        elif isinstance(cmd, FragSessionSetupReq):
            bits = {k: v for k, v in self.setup_bits.items() if v}
            if cmd.version == 2:
                mic = keys.data_block_mic(keys.data_block_int_key(self.key), cmd.session_cnt, cmd.frag_index,
                                          cmd.descriptor, IMAGE)
                assert mic == cmd.mic, "FragSessionSetupReq MIC does not match the image"
            if bits:
                self.say(201, FragSessionSetupAns(cmd.frag_index, version=cmd.version, **bits))
                return
            self.setup = cmd
            self.decoder = Decoder(cmd.nb_frag, cmd.frag_size, version=cmd.version)
            self.say(201, FragSessionSetupAns(cmd.frag_index, version=cmd.version))
        elif isinstance(cmd, FragSessionStatusReq):
            self.on_status_req(cmd, t, net, unicast=True)
        elif isinstance(cmd, DataFragment):
            if cmd.n in self.lost_unicast:
                return
            self.on_fragment(cmd, t, net)
        elif isinstance(cmd, FragSessionDeleteReq):
            self.say(201, FragSessionDeleteAns(cmd.frag_index, session_does_not_exist=self.setup is None))
            self.setup = None
        elif isinstance(cmd, FragDataBlockReceivedAns):
            self.block_ack_pending = False
        elif isinstance(cmd, DevUpgradeImageReq):
            if self.complete_data is not None and self.complete_data == IMAGE:
                self.say(203, DevUpgradeImageAns(UpImageStatus.VALID, NEW_FW))
            else:
                self.say(203, DevUpgradeImageAns(UpImageStatus.NO_IMAGE))
        elif isinstance(cmd, DevRebootCountdownReq):
            if self.reboot_errors > 0:
                self.reboot_errors -= 1
                self.say(203, DevRebootCountdownAns(0))
                return
            self.reboot_at = t + cmd.countdown
            self.say(203, DevRebootCountdownAns(cmd.countdown))
        elif isinstance(cmd, DevRebootTimeReq):
            if self.reboot_errors > 0:
                self.reboot_errors -= 1
                self.say(203, DevRebootTimeAns(0))
                return
            delta = int(cmd.reboot_time - self.device_time(t))
            self.reboot_at = t + delta
            self.say(203, DevRebootTimeAns(max(1, delta)))
        elif isinstance(cmd, DevVersionReq):
            if self.reboot_at is not None and t >= self.reboot_at:
                self.reboot_at = None
                if self.fw_after is not None:
                    self.fw = self.fw_after
                elif self.complete_data == IMAGE:
                    self.fw = NEW_FW
            self.say(203, DevVersionAns(self.fw, 0x42))

    def on_status_req(self, cmd: FragSessionStatusReq, t: float, net: FakeNetwork, unicast: bool) -> None:
        if self.setup is None or cmd.frag_index != self.setup.frag_index:
            if self.stack == "lbm" and self.setup is None and unicast:
                self.say(201, FragSessionStatusAns(None, None, None, session_does_not_exist=True, version=2))
            return
        if self.drop_status_answers > 0:
            self.drop_status_answers -= 1
            return
        if not self.wants_to_answer(cmd.participants):
            return
        self.say(201, self.status())
        if not unicast:
            # random delay in [0, 2^(BlockAckDelay+4)] s, derived from the DevEUI
            span = 1 << (self.setup.block_ack_delay + 4)
            net.schedule(self, t + 1 + zlib.crc32(self.eui.encode() + bytes([self.multicast_heard % 256])) % span)

    def on_fragment(self, cmd: DataFragment, t: float, net: FakeNetwork) -> None:
        if self.setup is None or self.decoder is None or cmd.frag_index != self.setup.frag_index:
            return
        if self.stopped:
            return
        self.seen.add(cmd.n)
        self.last_counter = max(self.last_counter, cmd.n)
        if self.decoder.push(cmd.n, cmd.payload):
            self.stopped = True
            data = self.decoder.data[: len(self.decoder.data) - self.setup.padding]
            self.complete_data = data
            if self.setup.version == 2 and self.setup.ack_reception:
                ok = data == IMAGE and not self.mic_error
                self.say(201, FragDataBlockReceivedReq(self.setup.frag_index, mic_error=not ok))
                self.block_ack_pending = True
                net.schedule(self, t + 5)

    def on_multicast(self, payload: bytes, t: float, net: FakeNetwork) -> None:
        if self.session is None or not self.session[0] <= t < self.session[1]:
            return
        cmds = decode_downlink(201, payload, self.setup.version if self.setup else 1)
        for cmd in cmds:
            if isinstance(cmd, DataFragment):
                self.multicast_heard += 1
                if cmd.n in self.lost:
                    continue
                self.on_fragment(cmd, t, net)
            elif isinstance(cmd, FragSessionStatusReq):
                self.multicast_heard += 1
                self.on_status_req(cmd, t, net, unicast=False)

    # -- uplinks ---------------------------------------------------------------------
    def next_uplink(self, t: float) -> tuple[int, bytes] | None:
        if self.silent:
            return None
        if self.outbox:
            port, payload = self.outbox.popleft()
            if payload == b"APPTIME":
                payload = encode_commands([AppTimeReq(int(self.device_time(t)) % 2**32, 1)])
            return port, payload
        if self.block_ack_pending and self.setup is not None:
            # LBM repeats FragDataBlockReceivedReq until it hears the answer
            return 201, encode_commands([FragDataBlockReceivedReq(self.setup.frag_index,
                                                                  mic_error=self.mic_error)])
        return None


class FakeNetwork:
    """The class A / multicast plumbing between the machine and the fake devices."""

    def __init__(self, machine: FuotaSession, devices: list[FakeDevice], *, start: float = T0,
                 hook: Callable[[FakeNetwork], None] | None = None, txack: bool = False) -> None:
        self.machine = machine
        self.devices = {d.eui: d for d in devices}
        self.now = start
        self.queues: dict[str, deque[tuple[int, bytes, str]]] = {d.eui: deque() for d in devices}
        self.events: list[tuple[float, int, str]] = []
        self.seq = itertools.count()
        self.actions: list = []
        self.multicast: list[SendMulticast] = []
        self.groups_created = 0
        self.groups_deleted = 0
        self.uplinks = 0
        self.hook = hook
        self.txack = txack  # report each fetched unicast (ChirpStack txack) to the machine
        for i, d in enumerate(devices):
            self.schedule(d, start + 7 + 3 * i)

    def schedule(self, dev: FakeDevice, t: float) -> None:
        heapq.heappush(self.events, (t, next(self.seq), dev.eui))

    def route(self, actions: list, t: float) -> None:
        for a in actions:
            self.actions.append((t, a))
            if isinstance(a, SendUnicast):
                self.queues[a.dev_eui].append((a.fport, a.payload, a.kind))
            elif isinstance(a, SendMulticast):
                self.multicast.append(a)
                for d in self.devices.values():
                    d.on_multicast(a.payload, t, self)
            elif isinstance(a, CreateMulticastGroup):
                self.groups_created += 1
            elif isinstance(a, DeleteMulticastGroup):
                self.groups_deleted += 1
            else:
                assert isinstance(a, Log)

    def uplink(self, dev: FakeDevice, t: float) -> None:
        up = dev.next_uplink(t)
        if up is not None:
            self.uplinks += 1
            self.route(self.machine.on_uplink(dev.eui, up[0], up[1], t, gps_time=t), t)
        elif not dev.silent:
            # an ordinary application uplink: the machine ignores other fPorts
            assert self.machine.on_uplink(dev.eui, 1, b"\x01", t) == []
        if not dev.silent and self.queues[dev.eui]:
            port, payload, kind = self.queues[dev.eui].popleft()
            if self.txack:
                self.route(self.machine.on_delivered(dev.eui, kind, t + 1), t + 1)
            dev.on_unicast(port, payload, t + 1, self)
        soon = dev.outbox or self.queues[dev.eui] or dev.block_ack_pending
        self.schedule(dev, t + (dev.busy_period if soon else dev.period))

    def step(self) -> bool:
        tm = self.machine.next_deadline()
        td = self.events[0][0] if self.events else None
        if self.machine.finished:
            return False
        if td is not None and (tm is None or td < tm):
            t, _s, eui = heapq.heappop(self.events)
            self.now = max(self.now, t)
            self.uplink(self.devices[eui], self.now)
        elif tm is not None:
            self.now = max(self.now, tm)
            self.route(self.machine.on_timer(self.now), self.now)
        else:
            return False
        if self.hook is not None:
            self.hook(self)
        return True

    def run(self, *, max_steps: int = 200_000, until: float | None = None) -> None:
        for _ in range(max_steps):
            if until is not None:
                tm = self.machine.next_deadline()
                td = self.events[0][0] if self.events else None
                nxt = min(x for x in (tm, td, float("inf")) if x is not None)
                if nxt > until:
                    return
            if not self.step():
                return
        raise AssertionError("the campaign did not finish")

    def sent_to(self, eui: str) -> list[tuple[int, bytes]]:
        return [(a.fport, a.payload) for _t, a in self.actions if isinstance(a, SendUnicast) and a.dev_eui == eui]


def make_config(devices: list[FakeDevice], **overrides) -> SessionConfig:
    stacks = {"loramac": "loramac_node", "lbm": "lbm"}
    timeouts = overrides.pop("timeouts", Timeouts(answer=120.0, max_retries=2, setup_window=3600.0))
    kwargs = dict(
        devices={d.eui: DeviceConfig(gen_app_key=d.key, stack=stacks[d.stack]) for d in devices},
        mc_addr=MC_ADDR,
        mc_key=MC_KEY,
        frag_size=FRAG_SIZE,
        dr=5,
        timeouts=timeouts,
        expected_fw_version=NEW_FW,
        descriptor=b"\x01\x02\x03\x04",
        session_cnt=7,
    )
    kwargs.update(overrides)
    return SessionConfig(**kwargs)


def run_campaign(devices: list[FakeDevice], image: bytes = IMAGE, **overrides) -> tuple[FuotaSession, FakeNetwork]:
    machine = FuotaSession(make_config(devices, **overrides), image)
    net = FakeNetwork(machine, devices)
    net.route(machine.start(T0), T0)
    net.run()
    return machine, net
