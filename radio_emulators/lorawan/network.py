"""A sans-IO emulated LoRaWAN radio network: one gateway, many `EndDevice`s, a multicast
group table, a per-device channel model, and an emulated clock driven by an event heap.

What it does, all in emulated time (nothing sleeps; `run_until(t)` processes events):

- polls each device at its `next_deadline()` and carries its uplinks to the network side
  (uplink handlers, e.g. an emulated ChirpStack) unless the channel loses them;
- class A: a queued unicast downlink goes out only in the RX1 (uplink end + 1 s) or RX2
  (+ 2 s) window after an uplink the network received, one per uplink, if the gateway is
  free and its sub-band's duty cycle allows it; otherwise it waits for the next uplink;
- class C / class B multicast: `schedule_multicast` books the frame at the earliest time
  >= not_before at which the (half-duplex) gateway is free and the sub-band duty cycle
  allows it (class B: at the group's next ping slot), and delivers it then to the group
  members the channel lets it reach; each device checks its own session window;
- accounts gateway airtime per sub-band, device airtime, losses and delays (`stats()`).

This is the radio the emulated ChirpStack (gRPC + HTTP integration) will drive later:
its multicast queue maps onto `schedule_multicast`, its device queue onto
`enqueue_unicast`, and its integration events onto `uplink_handlers`.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Callable

from radio_emulators.lorawan.channel import ChannelModel, Perfect
from radio_emulators.lorawan.device import EndDevice, Uplink
from radio_emulators.lorawan.phy import (EU868, DutyCycle, PhyError, Region, next_ping_slot,
                                         phy_payload_len, time_on_air)

__all__ = ["Network", "MulticastGroup", "UplinkEvent", "DownlinkTx", "NetworkStats"]


@dataclass
class MulticastGroup:
    ref: str
    mc_addr: int
    mc_nwk_s_key: bytes
    mc_app_s_key: bytes
    group_type: str = "C"          # "C" or "B"
    dr: int = 0
    frequency: int = 0
    ping_slot_periodicity: int = 0
    members: set[bytes] = field(default_factory=set)
    f_cnt: int = 0


@dataclass(frozen=True)
class UplinkEvent:
    dev_eui: bytes
    uplink: Uplink
    received: bool

    @property
    def fport(self) -> int:
        return self.uplink.fport

    @property
    def payload(self) -> bytes:
        return self.uplink.payload

    @property
    def rx_time(self) -> float:
        """GPS time at which the gateway finished receiving the frame."""
        return self.uplink.t_end


@dataclass
class DownlinkTx:
    kind: str                # "unicast" or "multicast"
    target: object           # DevEUI or group ref
    fport: int
    payload: bytes
    t_start: float
    airtime: float
    freq: int
    dr: int
    f_cnt: int | None = None
    requested: float = 0.0   # not_before (multicast) / uplink end (unicast)
    reached: int = 0         # devices the channel let the frame reach
    accepted: int = 0        # devices that accepted it
    f_pending: bool = False  # unicast: more downlinks wait in the device's queue (FPending)

    @property
    def t_end(self) -> float:
        return self.t_start + self.airtime

    @property
    def delay(self) -> float:
        return self.t_start - self.requested


@dataclass
class NetworkStats:
    emulated_seconds: float
    gateway_airtime: dict[str, float]
    gateway_frames: dict[str, int]
    multicast_frames: int
    unicast_frames: int
    multicast_delay: float
    deliveries: int
    delivery_losses: int
    rejected: int
    uplinks: int
    uplinks_lost: int
    uplink_airtime: float
    unicast_pending: int


@dataclass
class _Unicast:
    fport: int
    payload: bytes
    expires_at: float | None
    seq: int


class Network:
    """The emulated radio network (see the module docstring)."""

    def __init__(self, region: Region = EU868, *, start: float = 0.0,
                 answer_in_same_rx: bool = False, gateway_duty_cycle: bool = True) -> None:
        self.region = region
        self.start = start
        self.now = start
        self.answer_in_same_rx = answer_in_same_rx
        self.gw_duty = DutyCycle(region, enforce=gateway_duty_cycle)
        self.devices: dict[bytes, EndDevice] = {}
        self.downlink_models: dict[bytes, ChannelModel] = {}
        self.uplink_models: dict[bytes, ChannelModel] = {}
        self.groups: dict[str, MulticastGroup] = {}
        self.uplink_handlers: list[Callable[[UplinkEvent], None]] = []
        self.tx_handlers: list[Callable[[DownlinkTx], None]] = []
        self.uplink_log: list[UplinkEvent] = []
        self.downlink_log: list[DownlinkTx] = []
        self._queues: dict[bytes, list[_Unicast]] = {}
        self._heap: list[tuple[float, int, str, object]] = []
        self._seq = itertools.count()
        self._dev_due: dict[bytes, float | None] = {}
        self._gw_busy: list[tuple[float, float]] = []
        self._n_deliveries = 0
        self._n_losses = 0
        self._n_rejected = 0
        self._n_uplinks_lost = 0
        self._uplink_airtime = 0.0

    # ------------------------------------------------------------------ set-up
    def add_device(self, device: EndDevice, *, downlink: ChannelModel | None = None,
                   uplink: ChannelModel | None = None) -> None:
        """Add a device; `downlink` decides which frames reach it, `uplink` which of its
        frames reach the gateway (the downlink model's presence applies both ways)."""
        eui = device.dev_eui
        if eui in self.devices:
            raise ValueError(f"device {eui.hex()} already added")
        self.devices[eui] = device
        self.downlink_models[eui] = downlink or Perfect()
        self.uplink_models[eui] = uplink or Perfect()
        self._queues[eui] = []
        self._dev_due[eui] = None
        self._reschedule(eui)

    def add_group(self, ref: str, mc_addr: int, mc_nwk_s_key: bytes, mc_app_s_key: bytes, *,
                  group_type: str = "C", dr: int | None = None, frequency: int | None = None,
                  ping_slot_periodicity: int = 0) -> MulticastGroup:
        if group_type not in ("B", "C"):
            raise ValueError("group_type must be 'B' or 'C'")
        if ref in self.groups:
            raise ValueError(f"group {ref!r} exists")
        if group_type == "B":
            f0, d0 = self.region.ping_slot
        else:
            f0, d0 = self.region.rx2
        g = MulticastGroup(ref, mc_addr, bytes(mc_nwk_s_key), bytes(mc_app_s_key), group_type,
                           d0 if dr is None else dr, f0 if frequency is None else frequency,
                           ping_slot_periodicity)
        self.region.downlink_dr(g.dr)
        self.region.sub_band(g.frequency)
        self.groups[ref] = g
        return g

    def add_to_group(self, ref: str, dev_eui: bytes) -> None:
        if dev_eui not in self.devices:
            raise KeyError(f"unknown device {dev_eui.hex()}")
        self.groups[ref].members.add(bytes(dev_eui))

    def remove_group(self, ref: str) -> None:
        self.groups.pop(ref)

    def device(self, dev_eui: bytes) -> EndDevice:
        return self.devices[dev_eui]

    # ------------------------------------------------------------------ downlinks
    def enqueue_unicast(self, dev_eui: bytes, fport: int, payload: bytes, *,
                        expires_at: float | None = None) -> None:
        """Queue a class A downlink; it leaves after the device's next received uplink."""
        if dev_eui not in self.devices:
            raise KeyError(f"unknown device {dev_eui.hex()}")
        if not 1 <= fport <= 223:
            raise ValueError(f"fPort {fport} outside 1..223")
        self._queues[dev_eui].append(_Unicast(fport, bytes(payload), expires_at,
                                              next(self._seq)))

    def unicast_queue(self, dev_eui: bytes) -> list[tuple[int, bytes]]:
        return [(u.fport, u.payload) for u in self._queues[dev_eui]]

    def _gw_next_free(self, t: float, airtime: float) -> float:
        busy = self._gw_busy
        i = bisect.bisect_left(busy, (t, -math.inf))
        if i > 0 and busy[i - 1][1] > t:
            t = busy[i - 1][1]
        while i < len(busy):
            s, e = busy[i]
            if e <= t:
                i += 1
                continue
            if s >= t + airtime:
                break
            t = max(t, e)
            i += 1
        return t

    def _reserve(self, t: float, freq: int, airtime: float) -> None:
        self.gw_duty.book(t, freq, airtime)
        bisect.insort(self._gw_busy, (t, t + airtime))

    def _fits(self, t: float, freq: int, airtime: float) -> bool:
        return self._gw_next_free(t, airtime) == t and self.gw_duty.allowed(t, freq, airtime)

    def schedule_multicast(self, ref: str, fport: int, payload: bytes, *,
                           not_before: float | None = None) -> DownlinkTx:
        """Book a multicast frame for group `ref` at the earliest time >= not_before (and
        >= now) the gateway and the duty cycle allow; it is delivered when the emulated
        clock gets there. Raises PhyError if the payload exceeds the DR's maximum."""
        g = self.groups[ref]
        drd = self.region.downlink_dr(g.dr)
        if len(payload) > drd.max_frm_payload():
            raise PhyError(f"{len(payload)} bytes exceed DR{g.dr}'s {drd.max_frm_payload()}")
        airtime = time_on_air(drd, phy_payload_len(len(payload)), uplink=False)
        t0 = self.now if not_before is None else max(self.now, not_before)
        if g.group_type == "C":
            t = t0
            while True:
                t1 = self.gw_duty.earliest_tx(t, g.frequency, airtime)
                t2 = self._gw_next_free(t1, airtime)
                if t2 == t1:
                    t = t1
                    break
                t = t2
        else:
            t = next_ping_slot(t0, g.mc_addr, g.ping_slot_periodicity)
            while not self._fits(t, g.frequency, airtime):
                t = next_ping_slot(t + 1e-3, g.mc_addr, g.ping_slot_periodicity)
        self._reserve(t, g.frequency, airtime)
        tx = DownlinkTx("multicast", ref, fport, bytes(payload), t, airtime, g.frequency, g.dr,
                        g.f_cnt, requested=t0)
        g.f_cnt = (g.f_cnt + 1) & 0xFFFFFFFF
        heapq.heappush(self._heap, (t, next(self._seq), "multicast", tx))
        return tx

    # ------------------------------------------------------------------ the clock
    def _reschedule(self, eui: bytes) -> None:
        due = self.devices[eui].next_deadline()
        if due is not None and due < self.now:
            due = self.now
        if due != self._dev_due[eui]:
            self._dev_due[eui] = due
            if due is not None:
                heapq.heappush(self._heap, (due, next(self._seq), "device", eui))

    def run_until(self, t_end: float) -> None:
        """Process every event up to emulated time t_end."""
        heap = self._heap
        stuck = 0
        while heap and heap[0][0] <= t_end:
            t, _, kind, obj = heapq.heappop(heap)
            self.now = max(self.now, t)
            if kind == "device":
                if self._dev_due.get(obj) != t:
                    continue  # stale entry
                self._dev_due[obj] = None
                sent = self._poll(obj)
                self._reschedule(obj)
                nxt = self._dev_due[obj]
                if not sent and nxt is not None and nxt <= t:
                    stuck += 1
                    if stuck > 1000:
                        raise RuntimeError(f"device {obj.hex()} does not advance at {t}")
                else:
                    stuck = 0
            elif kind == "multicast":
                self._deliver_multicast(obj)
            elif kind == "unicast":
                self._deliver_unicast(*obj)
        self.now = max(self.now, t_end)
        self.gw_duty.forget_before(self.now - 3600.0)
        k = bisect.bisect_left(self._gw_busy, (self.now - 60.0, -math.inf))
        if k:
            del self._gw_busy[:k]

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def next_event_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    # ------------------------------------------------------------------ dispatch
    def _poll(self, eui: bytes) -> bool:
        dev = self.devices[eui]
        ups = dev.poll(self.now)
        for up in ups:
            self._uplink_airtime += up.airtime
            present = self.downlink_models[eui].present(up.t_start)
            received = self.uplink_models[eui].deliver(up.t_start) and present
            ev = UplinkEvent(eui, up, received)
            self.uplink_log.append(ev)
            if not received:
                self._n_uplinks_lost += 1
                continue
            snapshot = None if self.answer_in_same_rx else list(self._queues[eui])
            for h in list(self.uplink_handlers):
                h(ev)
            self._class_a_downlink(eui, up, snapshot)
        return bool(ups)

    def _class_a_downlink(self, eui: bytes, up: Uplink, snapshot: list[_Unicast] | None) -> None:
        queue = self._queues[eui]
        candidates = queue if snapshot is None else [u for u in queue if u in snapshot]
        while candidates:
            item = candidates[0]
            if item.expires_at is not None and item.expires_at < up.t_end:
                queue.remove(item)
                candidates = candidates[1:]
                continue
            break
        else:
            return
        rx1_freq, rx1_dr = self.region.rx1(up.freq, up.dr)
        options = ((up.t_end + 1.0, rx1_freq, rx1_dr), (up.t_end + 2.0, *self.region.rx2))
        for t, freq, dr in options:
            drd = self.region.downlink_dr(dr)
            if len(item.payload) > drd.max_frm_payload():
                continue
            airtime = time_on_air(drd, phy_payload_len(len(item.payload)), uplink=False)
            if not self._fits(t, freq, airtime):
                continue
            self._reserve(t, freq, airtime)
            queue.remove(item)
            tx = DownlinkTx("unicast", eui, item.fport, item.payload, t, airtime, freq, dr,
                            requested=up.t_end, f_pending=bool(queue))
            heapq.heappush(self._heap, (t, next(self._seq), "unicast", (eui, tx)))
            return

    def _deliver_unicast(self, eui: bytes, tx: DownlinkTx) -> None:
        self.downlink_log.append(tx)
        for h in list(self.tx_handlers):
            h(tx)
        dev = self.devices[eui]
        if self.downlink_models[eui].deliver(tx.t_start):
            tx.reached = 1
            self._n_deliveries += 1
            if dev.on_downlink(tx.fport, tx.payload, tx.t_start, f_pending=tx.f_pending):
                tx.accepted = 1
            else:
                self._n_rejected += 1
        else:
            self._n_losses += 1
        self._reschedule(eui)

    def _deliver_multicast(self, tx: DownlinkTx) -> None:
        self.downlink_log.append(tx)
        for h in list(self.tx_handlers):
            h(tx)
        g = self.groups.get(tx.target)
        if g is None:
            return
        keys = (g.mc_nwk_s_key, g.mc_app_s_key)
        for eui in sorted(g.members):
            if self.downlink_models[eui].deliver(tx.t_start):
                tx.reached += 1
                self._n_deliveries += 1
                if self.devices[eui].on_downlink(tx.fport, tx.payload, tx.t_start,
                                                 mc_addr=g.mc_addr, freq=tx.freq, dr=tx.dr,
                                                 f_cnt=tx.f_cnt, keys=keys):
                    tx.accepted += 1
                else:
                    self._n_rejected += 1
                self._reschedule(eui)
            else:
                self._n_losses += 1

    # ------------------------------------------------------------------ reporting
    def stats(self) -> NetworkStats:
        mc = [d for d in self.downlink_log if d.kind == "multicast"]
        return NetworkStats(
            emulated_seconds=self.now - self.start,
            gateway_airtime={k: v for k, v in self.gw_duty.airtime.items() if v},
            gateway_frames={k: v for k, v in self.gw_duty.frames.items() if v},
            multicast_frames=len(mc),
            unicast_frames=sum(1 for d in self.downlink_log if d.kind == "unicast"),
            multicast_delay=sum(d.delay for d in mc),
            deliveries=self._n_deliveries,
            delivery_losses=self._n_losses,
            rejected=self._n_rejected,
            uplinks=len(self.uplink_log),
            uplinks_lost=self._n_uplinks_lost,
            uplink_airtime=self._uplink_airtime,
            unicast_pending=sum(len(q) for q in self._queues.values()),
        )
