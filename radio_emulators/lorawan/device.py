"""An emulated LoRaWAN end device: the device side of TS003 (clock sync), TS005 (remote
multicast setup), TS004 (fragmented data block transport) and TS006 (firmware management),
with its own codecs, FEC decoder and keys (nothing from proxyota).

Sans-IO: the radio layer calls `on_downlink(fport, payload, now, mc_addr=...)` when a frame
reaches the device and `poll(now)` at `next_deadline()`; poll returns the uplink the device
transmits at `now` (at most one: class A, half duplex), already accounted against its own
duty cycle. Times are emulated GPS seconds (floats); the device's own clock drifts
(`clock_drift_ppm`, `clock_offset`) and only TS003 corrects it, so session starts, reboot
times and DeviceTime are all seen through that clock.

Device profiles (`DeviceProfile`) emulate how stacks differ:

- `LORAMAC_NODE` (v1 packages, LoRaMac-node's LmhpFragmentation/FragDecoder): fragments
  below the last counter seen are dropped; FragSessionStatusAns reports NbFragReceived = last
  counter seen and MissingFrag = lost uncoded fragments (never lowered, 8-bit wrap); a matrix
  error ends the session as if it had succeeded (the image then fails its check);
  DeviceAppTimePeriodicityReq is answered NotSupported; a class C session whose start has
  passed is refused with McGroupUndefined; an undefined group gets all three error bits.
- `LBM` (v2 packages, LoRa Basics Modem): same in-order decoder; NbFragReceived = counter -
  lost, MissingFrag = "still needed" (left at its previous value when the last uncoded
  fragment completes a loss-free block, as LBM does), Status b2 for a missing session, MIC
  error reported, StartMissed, SessionCnt replay protection, FragDataBlockReceivedReq.
- `IDEAL` (Zephyr-like v1 reporting, any-order decoding): true counts.

Answers to FragSessionStatusReq are delayed by a random [0, 2^(BlockAckDelay+4)] s as both
stacks do. Fragments are accepted only for an active session, on a multicast group named in
its McGroupBitMask whose session is open by the device's clock (or by unicast). Unicast
frames are accepted only in the RX1/RX2 window of the last uplink (class A), multicast frames
not while the device transmits (half duplex). The block, once complete (padding dropped,
v2 MIC checked), goes to the pluggable image verifier; a valid image waits in the download
slot until DevRebootTime/DevRebootCountdown, then boots if its self-test passes, else the
device rolls back to the old version; DevVersionAns is sent after every reboot.
"""

from __future__ import annotations

import heapq
import math
import random
import struct
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

from radio_emulators.lorawan import appcodec as ac
from radio_emulators.lorawan import crypto
from radio_emulators.lorawan.firmware import DigestImageVerifier, ImageVerifier, normalize_check
from radio_emulators.lorawan.fragdecoder import FragDecoder, Push
from radio_emulators.lorawan.phy import (EU868, DutyCycle, Region, class_b_window,
                                         class_c_window, phy_payload_len, time_on_air)

__all__ = ["DeviceProfile", "LORAMAC_NODE", "LBM", "IDEAL", "PROFILES", "EndDevice",
           "Uplink", "DeviceClock", "Battery", "McGroup", "McSession", "FragSession",
           "APP_PORT", "app_status_payload", "parse_app_status"]

CLOCK_SYNC, MULTICAST, FRAGMENTATION, FIRMWARE = 1, 2, 3, 4
APP_PORT = 2
_RX_TOLERANCE = 0.01


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    packages: Mapping[int, int]          # package id -> version; absent = unsupported
    status_semantics: str                # "loramac-node" | "lbm" | "true-count"
    in_order_fragments: bool
    matrix_error_completes: bool = False
    periodicity_supported: bool = True
    start_missed_flag: bool = False      # v2 StartMissed; else McGroupUndefined when passed
    undefined_group_all_errors: bool = False
    lbm_stale_missing: bool = False
    max_frag_sessions: int = 4
    max_mc_groups: int = 4
    max_nb_frag: int = 4096
    max_frag_size: int = 242
    max_lost: int = 1024                 # FRAG_MAX_REDUNDANCY: lost fragments the matrix holds
    flash_size: int = 512 * 1024         # the download slot
    fmp_multicast: bool = False          # accept TS006 requests by multicast
    announce_version_after_boot: bool = True
    auto_reboot_after_image: float | None = None  # stacks without TS006 reboot by themselves
    time_sync_at_boot: bool = True
    time_sync_period: float | None = 24 * 3600.0
    resync_spacing: float = 20.0
    block_ack_retries: int = 3
    # a unicast downlink with FPending set: uplink again as soon as the duty cycle allows to
    # fetch the rest (LoRaMac-node's class A example does; an application may not)
    fetch_on_fpending: bool = True


LORAMAC_NODE = DeviceProfile(
    name="loramac-node", packages={CLOCK_SYNC: 1, MULTICAST: 1, FRAGMENTATION: 1, FIRMWARE: 1},
    status_semantics="loramac-node", in_order_fragments=True, matrix_error_completes=True,
    periodicity_supported=False, start_missed_flag=False, undefined_group_all_errors=True)

LBM = DeviceProfile(
    name="lbm", packages={CLOCK_SYNC: 2, MULTICAST: 2, FRAGMENTATION: 2, FIRMWARE: 1},
    status_semantics="lbm", in_order_fragments=True, matrix_error_completes=False,
    periodicity_supported=True, start_missed_flag=True, lbm_stale_missing=True)

IDEAL = DeviceProfile(
    name="ideal", packages={CLOCK_SYNC: 1, MULTICAST: 1, FRAGMENTATION: 1, FIRMWARE: 1},
    status_semantics="true-count", in_order_fragments=False)

PROFILES = {p.name: p for p in (LORAMAC_NODE, LBM, IDEAL)}


@dataclass(frozen=True)
class Uplink:
    """One frame the device transmits."""

    fport: int
    payload: bytes
    f_cnt: int
    t_start: float
    airtime: float
    freq: int
    dr: int
    kind: str

    @property
    def t_end(self) -> float:
        return self.t_start + self.airtime


class DeviceClock:
    """local(t) = t + offset + drift x (t - t_ref); TS003 corrections move the offset."""

    def __init__(self, offset: float = 0.0, drift_ppm: float = 0.0, t_ref: float = 0.0):
        self.offset = offset
        self.drift = drift_ppm * 1e-6
        self.t_ref = t_ref

    def local(self, t: float) -> float:
        return t + self.offset + self.drift * (t - self.t_ref)

    def true_at(self, local: float) -> float:
        return (local - self.offset + self.drift * self.t_ref) / (1.0 + self.drift)

    def error(self, t: float) -> float:
        return self.local(t) - t

    def adjust(self, delta: float) -> None:
        self.offset += delta


@dataclass
class Battery:
    """A simple charge model: TX and class C listening draw current; level in [0, 1]."""

    capacity_mah: float = 2400.0
    level: float = 1.0
    tx_ma: float = 40.0
    rx_ma: float = 11.0

    def draw(self, seconds: float, ma: float) -> None:
        if seconds > 0:
            self.level = max(0.0, self.level - seconds * ma / 3600.0 / self.capacity_mah)

    @property
    def empty(self) -> bool:
        return self.level <= 0.0

    def status_byte(self) -> int:
        """The DevStatusAns convention: 1 (empty) .. 254 (full)."""
        return 1 + round(self.level * 253)


@dataclass
class McSession:
    kind: str            # "C" or "B"
    start: float         # device-local GPS seconds
    end: float
    freq: int            # Hz (class B v2: 0 = hopping)
    dr: int
    periodicity: int | None = None


@dataclass
class McGroup:
    group_id: int
    mc_addr: int
    mc_key: bytes
    app_s_key: bytes
    nwk_s_key: bytes
    min_fcnt: int
    max_fcnt: int
    session: McSession | None = None
    last_fcnt: int | None = None


@dataclass
class FragSession:
    index: int
    version: int
    mc_group_mask: int
    nb_frag: int
    frag_size: int
    padding: int
    block_ack_delay: int
    descriptor: bytes
    decoder: FragDecoder
    ack_reception: bool = False
    session_cnt: int | None = None
    mic: bytes | None = None
    mic_ok: bool | None = None
    result: str | None = None        # "complete", "matrix-error", "failed"
    block: bytes | None = None       # the reassembled data block (padding removed)


@dataclass(order=True)
class _Pending:
    due: float
    seq: int
    port: int = field(compare=False)
    kind: str = field(compare=False)
    length: int = field(compare=False)
    payload: bytes | None = field(compare=False, default=None)
    build: Callable[[float], bytes] | None = field(compare=False, default=None)
    on_sent: Callable[[float], None] | None = field(compare=False, default=None)


def app_status_payload(fw_version: int, battery_byte: int, reboots: int) -> bytes:
    """The emulator's own periodic application uplink (fPort 2): FW version u32, battery
    (DevStatus convention), reboot count u16."""
    return struct.pack("<IBH", fw_version & 0xFFFFFFFF, battery_byte & 0xFF, reboots & 0xFFFF)


def parse_app_status(payload: bytes) -> dict:
    fw, bat, reboots = struct.unpack("<IBH", payload)
    return {"fw_version": fw, "battery": bat, "reboots": reboots}


class EndDevice:
    """One emulated end device (see the module docstring)."""

    def __init__(self, profile: DeviceProfile, dev_eui: bytes, *,
                 gen_app_key: bytes | None = None, app_key: bytes | None = None,
                 mac_version: str = "1.0.4", fw_version: int = 1, hw_version: int = 1,
                 region: Region = EU868, uplink_dr: int | None = None, now: float = 0.0,
                 clock_offset: float = 0.0, clock_drift_ppm: float = 0.0,
                 battery: Battery | None = None, uplink_period: float | None = 3600.0,
                 rng: random.Random | None = None, image_verifier: ImageVerifier | None = None,
                 self_test: Callable[[int], bool] | bool = True,
                 descriptor_check: Callable[[bytes], bool] | None = None,
                 strict_rx_windows: bool = True, **profile_overrides) -> None:
        if len(dev_eui) != 8:
            raise ValueError("DevEUI must be 8 bytes")
        if profile_overrides:
            profile = replace(profile, **profile_overrides)
        self.profile = profile
        self.dev_eui = bytes(dev_eui)
        self.mac_version = mac_version
        self._root = crypto.root_key_for(mac_version, gen_app_key=gen_app_key, app_key=app_key)
        self._mc_root = crypto.mc_root_key(gen_app_key=self._root) if not mac_version.startswith(
            "1.1") else crypto.mc_root_key(app_key=self._root)
        self._mc_ke = crypto.mc_ke_key(self._mc_root)
        self._int_key = crypto.data_block_int_key(self._root)
        self.fw_version = fw_version
        self.previous_version: int | None = None
        self.hw_version = hw_version
        self.region = region
        self.uplink_dr = uplink_dr if uplink_dr is not None else (5 if region is EU868 else 3)
        region.uplink_dr(self.uplink_dr)
        self.channels = tuple(region.default_uplink_channels)
        self.clock = DeviceClock(clock_offset, clock_drift_ppm, now)
        self.battery = battery if battery is not None else Battery()
        self.uplink_period = uplink_period
        self.rng = rng if rng is not None else random.Random(int.from_bytes(self.dev_eui, "big"))
        self.image_verifier = image_verifier or DigestImageVerifier(hw_version)
        self.self_test = self_test
        self.descriptor_check = descriptor_check
        self.strict_rx_windows = strict_rx_windows
        self.duty_cycle = DutyCycle(region)

        self.mc_groups: dict[int, McGroup] = {}
        self.frag_sessions: dict[int, FragSession] = {}
        self._frag_cnt_prev: dict[int, int] = {}
        # image in the download slot: status 0 none, 1 corrupt, 2 wrong HW, 3 valid
        self.image_status = 0
        self.image_version: int | None = None
        self.image_reason = ""
        self.reboots = 0
        self.rollbacks = 0
        self.reboot_at: float | None = None  # device-local GPS seconds
        self.time_synced = False
        self.f_cnt_up = 0
        self.uplinks_sent = 0
        self.airtime = 0.0
        self.counters: Counter[str] = Counter()
        self.log: deque[tuple[float, str, str]] = deque(maxlen=2000)

        self._pending: list[_Pending] = []
        self._seq = 0
        self._busy_until = -math.inf
        self._rx_windows: tuple[float, float] | None = None
        self._tx_span = (-math.inf, -math.inf)
        self._rx_taken = True
        self._ch = 0
        self._now = now
        self._rx_accounted = now
        self._token = 0
        self._resync_left = 0
        self._sync_period = profile.time_sync_period
        self._next_sync = None if self._sync_period is None else now + self._jitter(
            self._sync_period)
        self._next_app = None if uplink_period is None else now + self.rng.uniform(
            0, uplink_period)
        self._block_ack_pending: dict[int, int] = {}  # frag index -> retries left
        self._boot(now, first=True)

    # ------------------------------------------------------------------ public helpers
    @property
    def alive(self) -> bool:
        return not self.battery.empty

    def local_time(self, now: float) -> float:
        return self.clock.local(now)

    def clock_error(self, now: float) -> float:
        return self.clock.error(now)

    def supports(self, package_id: int) -> int | None:
        return self.profile.packages.get(package_id)

    def group_by_addr(self, mc_addr: int) -> McGroup | None:
        for g in self.mc_groups.values():
            if g.mc_addr == mc_addr:
                return g
        return None

    def session_open(self, group: McGroup, now: float) -> bool:
        s = group.session
        if s is None:
            return False
        local = self.clock.local(now)
        return s.start <= local < s.end

    def rx_windows(self) -> tuple[float, float] | None:
        """(RX1, RX2) opening times after the last uplink, if not used yet."""
        return None if self._rx_taken else self._rx_windows

    def _note(self, now: float, kind: str, detail: str = "") -> None:
        self.counters[kind] += 1
        self.log.append((now, kind, detail))

    def _jitter(self, period: float) -> float:
        return max(1.0, period + self.rng.uniform(-30.0, 30.0))

    # ------------------------------------------------------------------ scheduling
    def _push(self, due: float, port: int, kind: str, *, payload: bytes | None = None,
              build: Callable[[float], bytes] | None = None, length: int | None = None,
              on_sent: Callable[[float], None] | None = None) -> None:
        self._seq += 1
        n = len(payload) if payload is not None else length
        heapq.heappush(self._pending, _Pending(due, self._seq, port, kind, n, payload, build,
                                               on_sent))

    def _fetch_soon(self, now: float) -> None:
        """FPending: an uplink at the next chance (unless one is queued already; its RX
        windows fetch the next downlink too)."""
        if any(p.kind != "app" for p in self._pending):
            return  # an answer (or a fetch) is queued already
        self._push(now, APP_PORT, "fetch", length=7,
                   build=lambda t: app_status_payload(self.fw_version, self.battery.status_byte(),
                                                      self.reboots))

    def _answer(self, now: float, port: int, answers: list, delay: float = 0.0,
                kind: str = "answer") -> None:
        """Queue answers as uplinks, packing as many as fit in one frame."""
        if not answers:
            return
        limit = self.region.uplink_dr(self.uplink_dr).max_frm_payload()
        frame = b""
        for a in answers:
            b = a.encode()
            if len(b) > limit:
                self._note(now, "drop.answer-too-long", type(a).__name__)
                continue
            if len(frame) + len(b) > limit:
                self._push(now + delay, port, kind, payload=frame)
                frame = b""
            frame += b
        if frame:
            self._push(now + delay, port, kind, payload=frame)

    def _estimated_airtime(self, length: int) -> float:
        return time_on_air(self.region.uplink_dr(self.uplink_dr), phy_payload_len(length),
                           uplink=True)

    def _earliest_channel(self, t: float, airtime: float) -> tuple[float, int]:
        best = (math.inf, 0)
        n = len(self.channels)
        for k in range(n):
            i = (self._ch + k) % n
            e = self.duty_cycle.earliest_tx(t, self.channels[i], airtime)
            if e < best[0]:
                best = (e, i)
            if e == t:
                break
        return best

    def next_deadline(self) -> float | None:
        """The next emulated time the device has something to do (transmit, reboot, start a
        periodic exchange); None if nothing is scheduled."""
        if not self.alive:
            return None
        cands = []
        if self._pending:
            p = self._pending[0]
            t = max(p.due, self._busy_until, self._now)
            cands.append(self._earliest_channel(t, self._estimated_airtime(p.length))[0])
        for t in (self._next_sync, self._next_app):
            if t is not None:
                cands.append(max(t, self._now))
        if self.reboot_at is not None:
            cands.append(max(self.clock.true_at(self.reboot_at), self._now))
        return min(cands) if cands else None

    # ------------------------------------------------------------------ time passing
    def _reboot_due(self, now: float) -> bool:
        return self.reboot_at is not None and self.clock.local(now) >= self.reboot_at - 1e-6

    def _advance(self, now: float) -> None:
        if now < self._now:
            now = self._now
        # class C listening costs charge
        if now > self._rx_accounted:
            listen = 0.0
            for g in self.mc_groups.values():
                s = g.session
                if s is not None and s.kind == "C":
                    a = max(self._rx_accounted, self.clock.true_at(s.start))
                    b = min(now, self.clock.true_at(s.end))
                    if b > a:
                        listen += b - a
            self.battery.draw(listen, self.battery.rx_ma)
            self._rx_accounted = now
        self._now = now
        if self._reboot_due(now):
            self._reboot(now)
        if self._next_sync is not None and now >= self._next_sync:
            self._queue_app_time_req(now, ans_required=False)
            self._next_sync = now + self._jitter(self._sync_period) if self._sync_period else None
        if self._next_app is not None and now >= self._next_app:
            self._push(now, APP_PORT, "app", length=7,
                       build=lambda t: app_status_payload(self.fw_version,
                                                          self.battery.status_byte(),
                                                          self.reboots))
            self._next_app = now + self.uplink_period

    def poll(self, now: float) -> list[Uplink]:
        """Let emulated time reach `now`; return the uplink the device sends now, if any."""
        if not self.alive:
            return []
        self._advance(now)
        if not self.alive or now < self._busy_until or not self._pending:
            return []
        p = self._pending[0]
        if p.due > now:
            return []
        airtime = self._estimated_airtime(p.length)
        t, ch = self._earliest_channel(now, airtime)
        if t > now:
            return []
        heapq.heappop(self._pending)
        payload = p.payload if p.payload is not None else p.build(now)
        airtime = self._estimated_airtime(len(payload))
        freq = self.channels[ch]
        self._ch = (ch + 1) % len(self.channels)
        self.duty_cycle.book(now, freq, airtime)
        up = Uplink(p.port, payload, self.f_cnt_up, now, airtime, freq, self.uplink_dr, p.kind)
        self.f_cnt_up = (self.f_cnt_up + 1) & 0xFFFFFFFF
        self.uplinks_sent += 1
        self.airtime += airtime
        self.battery.draw(airtime, self.battery.tx_ma)
        self._rx_windows = (up.t_end + 1.0, up.t_end + 2.0)
        self._tx_span = (up.t_start, up.t_end)
        self._rx_taken = False
        self._busy_until = up.t_end + 3.0
        self._note(now, "uplink." + p.kind, f"port {p.port} {payload.hex()}")
        if p.on_sent is not None:
            p.on_sent(now)
        return [up]

    # ------------------------------------------------------------------ downlinks
    def on_downlink(self, fport: int, payload: bytes, now: float, *, mc_addr: int | None = None,
                    freq: int | None = None, dr: int | None = None, f_cnt: int | None = None,
                    keys: tuple[bytes, bytes] | None = None, f_pending: bool = False) -> bool:
        """A frame reaches the device at `now` (the start of the frame). Multicast frames
        name their McAddr (and may give the channel, FCnt and the (McNwkSKey, McAppSKey)
        the network used); a unicast one may say more downlinks wait (FPending). Returns
        whether the device accepted the frame."""
        if not self.alive:
            return False
        self._advance(now)
        if not self.alive:
            return False
        group: McGroup | None = None
        if mc_addr is not None:
            group = self.group_by_addr(mc_addr)
            reason = self._multicast_reject(group, now, freq, dr, f_cnt, keys)
            if reason:
                self._note(now, "drop." + reason, f"McAddr {mc_addr:08x}")
                return False
            if f_cnt is not None:
                group.last_fcnt = f_cnt
        else:
            if self.strict_rx_windows and not self._in_rx_window(now):
                self._note(now, "drop.outside-rx-window", f"port {fport}")
                return False
            self._rx_taken = True
        self._note(now, "downlink.multicast" if group else "downlink.unicast", f"port {fport}")
        if fport not in ac.PACKAGE_ID:
            self._note(now, "downlink.app", f"port {fport}")
            if group is None and f_pending and self.profile.fetch_on_fpending:
                self._fetch_soon(now)
            return True
        version = self.supports(ac.PACKAGE_ID[fport])
        if version is None:
            self._note(now, "drop.unsupported-package", f"port {fport}")
            return True
        cmds, err = ac.decode_downlink(fport, payload, version)
        if err is not None:
            self._note(now, "drop.malformed", str(err))
        handler = {ac.PORT_CLOCK_SYNC: self._on_clock_sync, ac.PORT_MULTICAST: self._on_multicast,
                   ac.PORT_FRAGMENTATION: self._on_fragmentation,
                   ac.PORT_FIRMWARE: self._on_firmware}[fport]
        immediate: list = []
        for cmd in cmds:
            handler(cmd, now, group, version, immediate)
        self._answer(now, fport, immediate)
        if group is None and f_pending and self.profile.fetch_on_fpending:
            self._fetch_soon(now)
        if self._reboot_due(now):
            self._reboot(now)
        return True

    def _in_rx_window(self, now: float) -> bool:
        if self._rx_taken or self._rx_windows is None:
            return False
        return any(abs(now - w) <= _RX_TOLERANCE for w in self._rx_windows)

    def _multicast_reject(self, group, now, freq, dr, f_cnt, keys) -> str | None:
        if self._tx_span[0] <= now < self._tx_span[1]:
            return "half-duplex"  # the radio is transmitting
        if group is None:
            return "unknown-mcaddr"
        if keys is not None and tuple(keys) != (group.nwk_s_key, group.app_s_key):
            return "mic-failure"
        if f_cnt is not None:
            if not group.min_fcnt <= f_cnt <= group.max_fcnt:
                return "fcnt-out-of-range"
            if group.last_fcnt is not None and f_cnt <= group.last_fcnt:
                return "fcnt-replay"
        s = group.session
        if s is None or not self.session_open(group, now):
            return "no-open-session"
        if freq is not None and s.freq and freq != s.freq:
            return "wrong-frequency"
        if dr is not None and dr != s.dr:
            return "wrong-dr"
        return None

    # ------------------------------------------------------------------ TS003
    def _queue_app_time_req(self, now: float, *, ans_required: bool, delay: float = 0.0,
                            forced: bool = False) -> None:
        def build(t: float) -> bytes:
            return ac.AppTimeReq(int(math.floor(self.clock.local(t))), self._token,
                                 ans_required).encode()
        self._push(now + delay, ac.PORT_CLOCK_SYNC, "resync" if forced else "time", build=build,
                   length=6, on_sent=self._forced_resync_sent if forced else None)

    def _forced_resync_sent(self, t: float) -> None:
        self._resync_left -= 1
        if self._resync_left > 0:
            self._queue_app_time_req(t, ans_required=True, delay=self.profile.resync_spacing,
                                     forced=True)

    def _cancel_pending(self, kind: str, match: Callable[[_Pending], bool] | None = None) -> None:
        kept = [p for p in self._pending if p.kind != kind or (match is not None
                                                                and not match(p))]
        if len(kept) != len(self._pending):
            self._pending = kept
            heapq.heapify(self._pending)

    def _on_clock_sync(self, cmd, now, group, version, out) -> None:
        if group is not None:
            self._note(now, "drop.multicast-command", type(cmd).__name__)
            return
        if isinstance(cmd, ac.PackageVersionReq):
            out.append(ac.PackageVersionAns(CLOCK_SYNC, version))
        elif isinstance(cmd, ac.AppTimeAns):
            self._resync_left = 0
            self._cancel_pending("resync")
            if cmd.token != self._token:
                self._note(now, "time.stale-token", str(cmd.token))
                return
            self._token = (self._token + 1) & 0x0F
            saturated = cmd.time_correction in (0x7FFFFFFF, -0x80000000)
            self.clock.adjust(cmd.time_correction)
            self.time_synced = not saturated
            self._note(now, "time.corrected", str(cmd.time_correction))
            if saturated and version >= 2:
                self._queue_app_time_req(now, ans_required=True, delay=1.0)
        elif isinstance(cmd, ac.DeviceAppTimePeriodicityReq):
            local = int(math.floor(self.clock.local(now)))
            if self.profile.periodicity_supported:
                self._sync_period = 128.0 * (1 << cmd.period)
                self._next_sync = now + self._jitter(self._sync_period)
                out.append(ac.DeviceAppTimePeriodicityAns(False, local))
            else:
                out.append(ac.DeviceAppTimePeriodicityAns(True, local))
        elif isinstance(cmd, ac.ForceDeviceResyncReq):
            self._cancel_pending("resync")
            self._resync_left = cmd.nb_transmissions
            if cmd.nb_transmissions:
                self._queue_app_time_req(now, ans_required=True, forced=True)

    # ------------------------------------------------------------------ TS005
    def _on_multicast(self, cmd, now, group, version, out) -> None:
        if group is not None:  # TS005 is unicast only
            self._note(now, "drop.multicast-command", type(cmd).__name__)
            return
        p = self.profile
        if isinstance(cmd, ac.PackageVersionReq):
            out.append(ac.PackageVersionAns(MULTICAST, version))
        elif isinstance(cmd, ac.McGroupStatusReq):
            items = tuple((g.group_id, g.mc_addr) for g in sorted(self.mc_groups.values(),
                                                                   key=lambda g: g.group_id)
                          if cmd.req_group_mask & (1 << g.group_id))
            out.append(ac.McGroupStatusAns(len(self.mc_groups), items))
        elif isinstance(cmd, ac.McGroupSetupReq):
            gid = cmd.mc_group_id
            if gid >= p.max_mc_groups:
                out.append(ac.McGroupSetupAns(gid, True))
                return
            mc_key = crypto.decrypt_mc_key(self._mc_ke, cmd.mc_key_encrypted)
            self.mc_groups[gid] = McGroup(
                gid, cmd.mc_addr, mc_key, crypto.mc_app_s_key(mc_key, cmd.mc_addr),
                crypto.mc_nwk_s_key(mc_key, cmd.mc_addr), cmd.min_mc_fcount, cmd.max_mc_fcount)
            self._note(now, "mc.group-setup", f"{gid} {cmd.mc_addr:08x}")
            out.append(ac.McGroupSetupAns(gid, False))
        elif isinstance(cmd, ac.McGroupDeleteReq):
            gid = cmd.mc_group_id
            undefined = gid not in self.mc_groups
            if not undefined:
                self._account_and_delete_group(now, gid)
            out.append(ac.McGroupDeleteAns(gid, undefined))
        elif isinstance(cmd, (ac.McClassCSessionReq, ac.McClassBSessionReq)):
            out.append(self._session_req(cmd, now, version))

    def _account_and_delete_group(self, now: float, gid: int) -> None:
        del self.mc_groups[gid]  # listening was accounted up to now by _advance

    def _session_req(self, cmd, now: float, version: int) -> ac.McSessionAns:
        p = self.profile
        class_b = isinstance(cmd, ac.McClassBSessionReq)
        cid = 0x05 if class_b else 0x04
        gid = cmd.mc_group_id
        group = self.mc_groups.get(gid)
        if group is None and p.undefined_group_all_errors:
            return ac.McSessionAns(cid, gid, dr_error=True, freq_error=True,
                                   mc_group_undefined=True)
        hopping = class_b and version >= 2 and cmd.dl_frequency == 0
        freq_error = not hopping and not self.region.is_valid_downlink_freq(cmd.dl_frequency)
        dr_error = not self.region.is_valid_downlink_dr(cmd.dr)
        local = int(math.floor(self.clock.local(now)))
        tts = cmd.session_time - local
        undefined = group is None
        start_missed = False
        if tts <= 0:
            if p.start_missed_flag and version >= 2:
                start_missed = True
            else:
                undefined = True
        if undefined or freq_error or dr_error or start_missed:
            self._note(now, "mc.session-refused", f"group {gid} tts {tts}")
            return ac.McSessionAns(cid, gid, dr_error=dr_error, freq_error=freq_error,
                                   mc_group_undefined=undefined, start_missed=start_missed)
        window = (class_b_window if class_b else class_c_window)(cmd.session_time, cmd.timeout)
        group.session = McSession("B" if class_b else "C", window[0], window[1],
                                  cmd.dl_frequency, cmd.dr,
                                  cmd.periodicity if class_b else None)
        group.last_fcnt = None
        self._note(now, "mc.session", f"group {gid} class {group.session.kind} in {tts} s")
        tts_field = min(tts, 0xFFFFFF) if version >= 2 else tts & 0xFFFFFF
        return ac.McSessionAns(cid, gid, time_to_start=tts_field)

    # ------------------------------------------------------------------ TS004
    def _on_fragmentation(self, cmd, now, group, version, out) -> None:
        if isinstance(cmd, ac.DataFragment):
            self._on_fragment(cmd, now, group)
            return
        if isinstance(cmd, ac.FragSessionStatusReq):
            sess = self.frag_sessions.get(cmd.frag_index)
            ans = self._status_answer(sess, cmd.frag_index, cmd.participants, version)
            if ans is not None:
                bad = sess.block_ack_delay if sess is not None else 0
                delay = self.rng.uniform(0.0, float(1 << (bad + 4)))
                self._answer(now, ac.PORT_FRAGMENTATION, [ans], delay=delay, kind="status")
            return
        if group is not None:
            self._note(now, "drop.multicast-command", type(cmd).__name__)
            return
        if isinstance(cmd, ac.PackageVersionReq):
            out.append(ac.PackageVersionAns(FRAGMENTATION, version))
        elif isinstance(cmd, ac.FragSessionSetupReq):
            out.append(self._setup_session(cmd, now, version))
        elif isinstance(cmd, ac.FragSessionDeleteReq):
            missing = cmd.frag_index not in self.frag_sessions
            if not missing:
                del self.frag_sessions[cmd.frag_index]
            out.append(ac.FragSessionDeleteAns(cmd.frag_index, missing))
        elif isinstance(cmd, ac.FragDataBlockReceivedAns):
            self._block_ack_pending.pop(cmd.frag_index, None)
            self._cancel_pending("block-ack",
                                 lambda p, i=cmd.frag_index: (p.payload[1] & 0x03) == i)
            self._note(now, "frag.block-ack", str(cmd.frag_index))

    def _setup_session(self, cmd: ac.FragSessionSetupReq, now: float,
                       version: int) -> ac.FragSessionSetupAns:
        p = self.profile
        idx = cmd.frag_index
        unsupported = cmd.frag_algo != 0 or cmd.nb_frag == 0 or cmd.frag_size == 0
        memory = (cmd.nb_frag > p.max_nb_frag or cmd.frag_size > p.max_frag_size
                  or cmd.nb_frag * cmd.frag_size > p.flash_size)
        index_bad = idx >= p.max_frag_sessions
        wrong_desc = self.descriptor_check is not None and not self.descriptor_check(
            cmd.descriptor)
        replay = (version >= 2 and cmd.session_cnt is not None
                  and cmd.session_cnt <= self._frag_cnt_prev.get(idx, -1))
        ans = ac.FragSessionSetupAns(idx, encoding_unsupported=unsupported,
                                     not_enough_memory=memory, index_not_supported=index_bad,
                                     wrong_descriptor=wrong_desc, session_cnt_replay=replay)
        if not ans.ok:
            self._note(now, "frag.setup-refused", repr(ans))
            return ans
        decoder = FragDecoder(cmd.nb_frag, cmd.frag_size, matrix_version=2 if version >= 2 else 1,
                              in_order=p.in_order_fragments, max_lost=p.max_lost)
        self.frag_sessions[idx] = FragSession(
            idx, version, cmd.mc_group_bit_mask, cmd.nb_frag, cmd.frag_size, cmd.padding,
            cmd.block_ack_delay, cmd.descriptor, decoder, cmd.ack_reception, cmd.session_cnt,
            cmd.mic)
        self._block_ack_pending.pop(idx, None)
        self._cancel_pending("block-ack", lambda q: (q.payload[1] & 0x03) == idx)
        self._note(now, "frag.setup", f"{idx}: {cmd.nb_frag} x {cmd.frag_size}")
        return ans

    def _on_fragment(self, cmd: ac.DataFragment, now: float, group: McGroup | None) -> None:
        sess = self.frag_sessions.get(cmd.frag_index)
        if sess is None:
            self._note(now, "drop.fragment-no-session", str(cmd.frag_index))
            return
        if group is not None and not sess.mc_group_mask & (1 << group.group_id):
            self._note(now, "drop.fragment-wrong-group", str(group.group_id))
            return
        if len(cmd.payload) != sess.frag_size or cmd.n == 0:
            self._note(now, "drop.fragment-malformed", f"N={cmd.n} len={len(cmd.payload)}")
            return
        dec = sess.decoder
        if dec.finished:
            self._note(now, "frag.after-done", str(cmd.n))
            return
        if sess.version >= 2 and sess.session_cnt is not None:
            self._frag_cnt_prev[sess.index] = sess.session_cnt
        res = dec.push(cmd.n, cmd.payload)
        self.counters["frag." + res.value] += 1
        if res is Push.COMPLETE:
            sess.result = "complete"
            self._on_block(sess, dec.data(), now)
        elif res is Push.MATRIX_ERROR:
            self._note(now, "frag.matrix-error", f"lost {dec.lost}")
            if self.profile.matrix_error_completes:
                sess.result = "matrix-error"
                self._on_block(sess, dec.best_effort(), now)
            else:
                sess.result = "failed"

    def _on_block(self, sess: FragSession, data: bytes, now: float) -> None:
        block = data[:sess.nb_frag * sess.frag_size - sess.padding]
        sess.block = block
        self._note(now, "frag.block", f"{len(block)} bytes")
        if sess.version >= 2 and sess.mic is not None:
            mic = crypto.data_block_mic(self._int_key, sess.session_cnt or 0, sess.index,
                                        sess.descriptor, block)
            sess.mic_ok = mic == sess.mic
            if sess.ack_reception:
                self._block_ack_pending[sess.index] = self.profile.block_ack_retries
                self._queue_block_ack(sess, now)
            if not sess.mic_ok:
                self._note(now, "frag.mic-error")
                self._set_image(1, None, "data block MIC error")
                return
        check = normalize_check(self.image_verifier(block))
        if check.ok:
            self._set_image(3, check.version, check.reason)
            if self.profile.auto_reboot_after_image is not None:
                self.reboot_at = self.clock.local(now) + self.profile.auto_reboot_after_image
        else:
            self._set_image(2 if check.wrong_hw else 1, check.version, check.reason)

    def _queue_block_ack(self, sess: FragSession, now: float) -> None:
        delay = self.rng.uniform(0.0, float(1 << (sess.block_ack_delay + 4)))
        ans = ac.FragDataBlockReceivedReq(sess.index, not sess.mic_ok)

        def sent(t: float, idx=sess.index) -> None:
            left = self._block_ack_pending.get(idx)
            if left is None:
                return
            left -= 1
            if left <= 0:
                self._block_ack_pending.pop(idx, None)
            else:
                self._block_ack_pending[idx] = left
                s = self.frag_sessions.get(idx)
                if s is not None:
                    self._queue_block_ack(s, t)

        self._push(now + delay, ac.PORT_FRAGMENTATION, "block-ack", payload=ans.encode(),
                   on_sent=sent)

    def _status_answer(self, sess: FragSession | None, index: int, participants: bool,
                       version: int) -> ac.FragSessionStatusAns | None:
        sem = self.profile.status_semantics
        if sess is None:
            if sem == "true-count" or (sem == "loramac-node" and not participants):
                return None
            if version >= 2:
                return ac.FragSessionStatusAns(version, index, 0, 0, session_does_not_exist=True)
            return ac.FragSessionStatusAns(version, index, 0, 0)
        dec = sess.decoder
        if sem == "loramac-node":
            if not participants and dec.lost == 0:
                return None
            return ac.FragSessionStatusAns(version, index, dec.last_counter & 0x3FFF,
                                           dec.lost & 0xFF, dec.matrix_error)
        if sem == "lbm":
            missing = dec.lbm_missing
            if dec.complete and not self.profile.lbm_stale_missing:
                missing = 0
            if not participants and missing == 0:
                return None
            if dec.last_counter == 0:  # session not started: zeros
                return ac.FragSessionStatusAns(version, index, 0, 0, dec.matrix_error)
            mic_error = missing == 0 and sess.mic_ok is False
            return ac.FragSessionStatusAns(version, index,
                                           (dec.last_counter - dec.lost) & 0x3FFF,
                                           missing & 0xFF, dec.matrix_error, mic_error)
        # true counts
        if not participants and dec.complete:
            return None
        missing = 0 if dec.complete else min(255, max(0, sess.nb_frag - dec.received))
        return ac.FragSessionStatusAns(version, index, min(dec.received, 0x3FFF), missing,
                                       dec.memory_error, sess.mic_ok is False)

    # ------------------------------------------------------------------ TS006
    def _on_firmware(self, cmd, now, group, version, out) -> None:
        if group is not None and not self.profile.fmp_multicast:
            self._note(now, "drop.multicast-command", type(cmd).__name__)
            return
        local = self.clock.local(now)
        if isinstance(cmd, ac.PackageVersionReq):
            out.append(ac.PackageVersionAns(FIRMWARE, version))
        elif isinstance(cmd, ac.DevVersionReq):
            out.append(ac.DevVersionAns(self.fw_version, self.hw_version))
        elif isinstance(cmd, ac.DevRebootTimeReq):
            t = cmd.reboot_time
            if t == 0:
                self.reboot_at = local
            elif t == 0xFFFFFFFF:
                self.reboot_at = None
                out.append(ac.DevRebootTimeAns(0xFFFFFFFF))
            elif t > local:
                self.reboot_at = float(t)
                out.append(ac.DevRebootTimeAns(t - int(math.floor(local))))
            else:
                out.append(ac.DevRebootTimeAns(0))
        elif isinstance(cmd, ac.DevRebootCountdownReq):
            c = cmd.countdown
            if c == 0:
                self.reboot_at = local
            elif c == 0xFFFFFF:
                self.reboot_at = None
                out.append(ac.DevRebootCountdownAns(0xFFFFFF))
            else:
                self.reboot_at = local + c
                out.append(ac.DevRebootCountdownAns(c))
        elif isinstance(cmd, ac.DevUpgradeImageReq):
            out.append(ac.DevUpgradeImageAns(self.image_status,
                                             self.image_version if self.image_status == 3
                                             else None))
        elif isinstance(cmd, ac.DevDeleteImageReq):
            if self.image_status != 3:
                out.append(ac.DevDeleteImageAns(True, False))
            elif cmd.version != self.image_version:
                out.append(ac.DevDeleteImageAns(False, True))
            else:
                self._set_image(0, None, "deleted")
                out.append(ac.DevDeleteImageAns(False, False))

    def _set_image(self, status: int, version: int | None, reason: str) -> None:
        self.image_status = status
        self.image_version = version
        self.image_reason = reason
        self._note(self._now, f"image.status-{status}", reason)

    # ------------------------------------------------------------------ reboot
    def _self_test_passes(self, version: int) -> bool:
        if callable(self.self_test):
            return bool(self.self_test(version))
        return bool(self.self_test)

    def _reboot(self, now: float) -> None:
        self.reboot_at = None
        self.reboots += 1
        self.frag_sessions.clear()
        self._block_ack_pending.clear()
        for g in self.mc_groups.values():  # groups live in NVM, sessions in RAM
            g.session = None
            g.last_fcnt = None
        self._pending.clear()
        self._resync_left = 0
        if self.image_status == 3 and self.image_version is not None:
            new = self.image_version
            if self._self_test_passes(new):
                self.previous_version, self.fw_version = self.fw_version, new
                self._note(now, "boot.new-image", str(new))
            else:
                self.rollbacks += 1
                self._note(now, "boot.rollback", f"{new} failed its self-test, back to "
                                                 f"{self.fw_version}")
            self._set_image(0, None, "consumed by reboot")
        else:
            self._note(now, "boot.same-image", str(self.fw_version))
        self._boot(now, first=False)

    def _boot(self, now: float, first: bool) -> None:
        p = self.profile
        if not first and p.announce_version_after_boot and self.supports(FIRMWARE):
            self._push(now + self.rng.uniform(1.0, 5.0), ac.PORT_FIRMWARE, "version",
                       payload=ac.DevVersionAns(self.fw_version, self.hw_version).encode())
        if p.time_sync_at_boot and self.supports(CLOCK_SYNC):
            self._queue_app_time_req(now, ans_required=True, delay=self.rng.uniform(1.0, 10.0))
