"""The multicast part of the FUOTA session (a mixin of :class:`FuotaSession`).

Session window sizing (TimeOut), the session start, duty-cycle pacing of the multicast
frames (fragments and FragSessionStatusReq), the status polls that follow each round, the
repair planning (:func:`proxyota.lorawan.repair.plan_round`) per fragmentation session,
unicast repair, and reopening the session when its window would close first.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from proxyota.fec.blocks import MAX_FRAG_COUNTER
from proxyota.lorawan.airtime import LORAWAN_FRAME_OVERHEAD, fsk_time_on_air, time_on_air
from proxyota.lorawan.applayer import FPORT_FRAGMENTATION, DataFragment, FragSessionStatusReq, encode_commands
from proxyota.lorawan.regions import Modulation
from proxyota.lorawan.repair import Action as PlanAction
from proxyota.lorawan.repair import CounterRange, DeviceStatus, SentRound, Stack, StatusReport, plan_round
from proxyota.lorawan.session_actions import Action, SendMulticast
from proxyota.lorawan.session_common import GIVE_UP_REASONS, SETUP_PHASES
from proxyota.lorawan.session_outcomes import Reason
from proxyota.lorawan.session_state import DeviceState, Phase, Stage, TxItem

if TYPE_CHECKING:
    from proxyota.lorawan.airtime import DutyCycleAccount
    from proxyota.lorawan.regions import Region
    from proxyota.lorawan.repair import RepairPolicy
    from proxyota.lorawan.session_config import SessionConfig
    from proxyota.lorawan.session_fragments import FragmentSource
    from proxyota.lorawan.session_state import SessionState

__all__ = ["SessionRounds"]


class SessionRounds:
    """Multicast rounds of :class:`~proxyota.lorawan.session.FuotaSession`.

    Uses the session's attributes below and its bookkeeping helpers (``_event``,
    ``_request``, ``_send``, ``_fail``, ``_complete``, ``_confirm_or_fail``, ...).
    """

    config: SessionConfig
    _state: SessionState
    _region: Region
    _duty: DutyCycleAccount
    _frags: FragmentSource
    _policy: RepairPolicy
    _freq: int
    _frag_airtime: float
    _status_airtime: float
    _frag_period: float
    _ping_period: float

    # ------------------------------------------------------------------ timing helpers

    def _downlink_airtime(self, frm_payload_len: int) -> float:
        rate = self._region.data_rate(self.config.dr)
        phy = LORAWAN_FRAME_OVERHEAD + frm_payload_len
        if rate.modulation == Modulation.FSK:
            return fsk_time_on_air(phy, bitrate=rate.bitrate)
        return time_on_air(phy, rate.sf, rate.bw_hz, crc=False)

    @property
    def _status_wait(self) -> float:
        return float(1 << (self.config.block_ack_delay + 4)) + self.config.timeouts.status_margin

    def _window_work(self, fragments: int, extra_rounds: int, lanes: int = 1) -> float:
        """Seconds a session window must last for ``fragments`` + ``extra_rounds`` repairs
        (per fragmentation session; ``lanes`` sessions share the window)."""
        nb = self._state.nb_frag
        repair = max(16, math.ceil(0.1 * nb))
        total = fragments + extra_rounds * repair
        return (
            self.config.timeouts.start_guard
            + lanes * total * self._frag_period
            + (1 + extra_rounds) * (self._status_wait + lanes * self._frag_period)
        )

    def _size_window(self) -> None:
        """TimeOut for round 1 and the expected repairs of every fragmentation session."""
        st = self._state
        if self.config.session_time_out is not None:
            st.time_out = self.config.session_time_out
        else:
            work = self._window_work(st.round1_size, extra_rounds=min(self._policy.max_rounds - 1, 2),
                                     lanes=max(1, len(st.lanes)))
            st.time_out = self._time_out_for(work)
        assert st.session_time is not None
        st.session_end = st.session_time + self._window_seconds(st.time_out)

    def _time_out_for(self, seconds: float) -> int:
        unit = 128.0 if self.config.device_class == "B" else 1.0
        need = max(1.0, seconds / unit)
        return min(15, max(0, math.ceil(math.log2(need))))

    def _window_seconds(self, time_out: int) -> float:
        return float((128 if self.config.device_class == "B" else 1) << time_out)

    def _align_session_time(self, t: float) -> int:
        value = math.ceil(t)
        if self.config.device_class == "B":
            value = -(-value // 128) * 128
        return value

    def _status_round(self, dev: DeviceState) -> int:
        """The round a status answer received now describes: the current one, unless the
        lane's fragments of the current round are still being sent."""
        lane = self._lane(dev)
        busy = any(item.kind == "fragment" and item.lane == dev.lane for item in self._state.tx_queue)
        return len(lane.rounds) - (1 if busy else 0)

    # ------------------------------------------------------------------ the multicast session

    def _session_start(self, now: float, out: list[Action]) -> None:
        st = self._state
        first = st.stage is Stage.SETUP
        for dev in st.devices.values():
            if dev.phase is Phase.READY:
                dev.phase = Phase.RECEIVING
            elif dev.phase in SETUP_PHASES:
                why = "not ready at the session start" if first else "did not accept the reopened session"
                self._fail(dev, Reason.NO_ANSWER, {"why": why}, now, out)
        if first:
            for key, lane in sorted(st.lanes.items()):
                if not self._lane_devices(key):
                    continue
                lane.rounds.append({"multicast": [1, st.round1_size], "unicast": {}})
                lane.highest = st.round1_size
                st.tx_queue.append(TxItem("fragment", key, 1, st.round1_size))
            for key, lane in sorted(st.lanes.items()):
                if self._lane_devices(key):
                    st.tx_queue.append(TxItem("status", key, participants=True))
        self._campaign_event(now, "session_start", session_time=st.session_time,
                             receiving=len([d for d in st.devices.values() if d.phase is Phase.RECEIVING]))
        st.stage = Stage.TRANSMITTING
        st.poll_started_at = now
        st.poll_awaited = [d.dev_eui for d in st.devices.values() if d.phase is Phase.RECEIVING]
        assert st.session_time is not None
        st.next_tx_at = max(now, st.session_time + self.config.timeouts.start_guard,
                            self._duty.earliest(now, self._freq, self._frag_airtime))

    def _lane_devices(self, key: str, *, plannable: bool = False) -> list[DeviceState]:
        return [
            d for d in self._state.devices.values()
            if d.lane == key and d.phase is Phase.RECEIVING and not (plannable and d.confirming)
        ]

    def _transmit(self, now: float, out: list[Action]) -> None:
        st = self._state
        # drop what no device needs any more
        while st.tx_queue and not self._lane_devices(st.tx_queue[0].lane):
            st.tx_queue.pop(0)
        if not st.tx_queue:
            self._start_poll(now)
            return
        item = st.tx_queue[0]
        airtime = self._frag_airtime if item.kind == "fragment" else self._status_airtime
        ready = self._duty.earliest(now, self._freq, airtime)
        if ready > now:  # the sub-band is still closed (e.g. a restored duty-cycle account)
            st.next_tx_at = ready
            return
        assert st.session_end is not None
        lane = st.lanes[item.lane]
        if now + airtime > st.session_end - 1.0:
            if item.kind == "fragment":
                self._reopen(now, out)
                return
            # the window closed before the status request: ask each device by unicast
            st.tx_queue.pop(0)
            for dev in self._lane_devices(item.lane, plannable=True):
                if "status" not in dev.pending:
                    self._request(dev, "status", FPORT_FRAGMENTATION, [FragSessionStatusReq(lane.frag_index, True)],
                                  now, out)
            self._campaign_event(now, "status_by_unicast", lane=item.lane)
            if not st.tx_queue:
                self._start_poll(now)
            else:
                st.next_tx_at = now
            return
        if item.kind == "fragment":
            n = item.next_n
            frag = self._frags.fragment(n, lane.version)
            payload = encode_commands([DataFragment(lane.frag_index, n, frag)])
            out.append(SendMulticast(FPORT_FRAGMENTATION, payload, "fragment", airtime))
            st.multicast_fragments += 1
            item.next_n += 1
            if item.next_n > item.last_n:
                st.tx_queue.pop(0)
        else:
            payload = encode_commands([FragSessionStatusReq(lane.frag_index, item.participants)])
            out.append(SendMulticast(FPORT_FRAGMENTATION, payload, "status", airtime))
            st.multicast_status += 1
            st.tx_queue.pop(0)
            self._campaign_event(now, "status_request", lane=item.lane, participants=item.participants)
        self._duty.record(now, self._freq, airtime)
        st.duty_cycle = self._duty.state()
        st.airtime += airtime
        if st.tx_queue:
            nxt = st.tx_queue[0]
            nxt_air = self._frag_airtime if nxt.kind == "fragment" else self._status_airtime
            # the network server's own spacing (ChirpStack's multicast_class_c_margin) too:
            # a frame handed over sooner is queued behind the previous one or, at a gateway
            # enforcing the duty cycle, dropped when the server's scheduler tick bunches them
            st.next_tx_at = max(self._duty.earliest(now, self._freq, nxt_air), now + airtime,
                                now + self._ping_period, now + self.config.min_frame_spacing)
        else:
            self._start_poll(now)

    def _start_poll(self, now: float) -> None:
        st = self._state
        st.stage = Stage.POLLING
        st.next_tx_at = None
        st.poll_until = self._poll_deadline(now + self._status_wait)

    def _poll_deadline(self, base: float) -> float:
        """``base``, or later if an awaited device still has a status / image request out."""
        st = self._state
        until = base
        for eui in st.poll_awaited:
            for kind in ("status", "upgrade_image"):
                req = st.devices[eui].pending.get(kind)
                if req is not None:
                    until = max(until, req.deadline)
        return until

    def _answered_poll(self, dev: DeviceState) -> bool:
        st = self._state
        if dev.phase is not Phase.RECEIVING or dev.confirming:
            return True
        if "upgrade_image" in dev.pending:
            return False  # its DevUpgradeImageAns may settle it: wait for that first
        rep = dev.report
        return (
            rep is not None
            and rep["round"] == len(self._lane(dev).rounds)
            and st.poll_started_at is not None
            and rep["at"] >= st.poll_started_at
        )

    def _close_poll(self, now: float, out: list[Action]) -> None:
        st = self._state
        st.poll_until = None
        silent = []
        for eui in st.poll_awaited:
            dev = st.devices[eui]
            if self._answered_poll(dev):
                continue
            dev.unanswered_polls += 1
            silent.append(eui)
        st.poll_awaited = []
        self._plan(now, out)
        # ask the devices that stayed silent by unicast (unless a unicast repair just did)
        for eui in silent:
            dev = st.devices[eui]
            if dev.phase is Phase.RECEIVING and not dev.confirming and "status" not in dev.pending:
                frag_index = self._lane(dev).frag_index
                self._request(dev, "status", FPORT_FRAGMENTATION, [FragSessionStatusReq(frag_index, True)], now, out)
        if st.stage is Stage.POLLING:
            st.poll_until = self._poll_deadline(st.poll_until or now)

    def _plan(self, now: float, out: list[Action]) -> None:
        """Ask the repair planner what every fragmentation session does next."""
        st = self._state
        tx: list[TxItem] = []
        awaited: list[str] = []
        for key, lane in sorted(st.lanes.items()):
            devs = self._lane_devices(key, plannable=True)
            if not devs or not lane.rounds:
                continue
            rounds = len(lane.rounds)
            statuses = []
            for d in devs:
                rep = d.report if d.report is not None and d.report["round"] == rounds else None
                statuses.append(DeviceStatus(
                    dev=d.dev_eui,
                    report=StatusReport(min(rep["nb_frag_received"], MAX_FRAG_COUNTER),
                                        min(rep["missing_frag"], 255)) if rep else None,
                    stack=Stack(self.config.devices[d.dev_eui].stack),
                    complete=False if d.image_absent_round == rounds else None,
                    unanswered_polls=d.unanswered_polls,
                ))
            history = [self._sent_round(r) for r in lane.rounds]
            decision = plan_round(st.nb_frag, statuses, history, self._policy)
            self._campaign_event(now, "plan", lane=key, action=decision.action.value,
                                 multicast=decision.multicast_count, unicast=decision.unicast_count,
                                 give_up={k: v.value for k, v in decision.give_up.items()},
                                 done=sorted(decision.done), p=None if math.isnan(decision.success_probability)
                                 else round(decision.success_probability, 6))
            by_eui = {d.dev_eui: d for d in devs}
            for eui, why in sorted(decision.give_up.items()):
                dev = by_eui[eui]
                self._confirm_or_fail(dev, GIVE_UP_REASONS[why], {"planner": why.value, "rounds": rounds},
                                      now, out)
            for eui in sorted(decision.done):
                self._confirm_done(by_eui[eui], now, out)
            send = decision.send
            if decision.action is PlanAction.MULTICAST and send is not None and send.multicast is not None:
                rng = send.multicast
                lane.rounds.append({"multicast": [rng.first, rng.count], "unicast": {}})
                lane.highest = max(lane.highest, rng.last)
                tx.append(TxItem("fragment", key, rng.first, rng.last))
                tx.append(TxItem("status", key, participants=False))
                awaited += [d.dev_eui for d in self._lane_devices(key, plannable=True)]
            elif decision.action is PlanAction.UNICAST and send is not None:
                lane.rounds.append({"multicast": None,
                                    "unicast": {e: [r.first, r.count] for e, r in send.unicast.items()}})
                for eui, rng in sorted(send.unicast.items()):
                    dev = by_eui[eui]
                    lane.highest = max(lane.highest, rng.last)
                    for n in range(rng.first, rng.last + 1):
                        frag = self._frags.fragment(n, lane.version)
                        self._send(dev, "fragment", FPORT_FRAGMENTATION, [DataFragment(lane.frag_index, n, frag)],
                                   now, out, log=False)
                    st.unicast_fragments += rng.count
                    self._event(dev, now, "unicast_fragments", first=rng.first, count=rng.count)
                    dev.pending.pop("status", None)
                    self._request(dev, "status", FPORT_FRAGMENTATION, [FragSessionStatusReq(lane.frag_index, True)],
                                  now, out, ahead=rng.count)
                    awaited.append(eui)
            elif decision.action is PlanAction.POLL:
                for eui in sorted(decision.silent):
                    dev = by_eui[eui]
                    if "status" not in dev.pending:
                        self._request(dev, "status", FPORT_FRAGMENTATION,
                                      [FragSessionStatusReq(lane.frag_index, True)], now, out)
                    awaited.append(eui)
        st.poll_started_at = now
        st.poll_awaited = awaited
        if tx:
            st.tx_queue.extend(tx)
            st.stage = Stage.TRANSMITTING
            first_air = self._frag_airtime
            st.next_tx_at = max(now, self._duty.earliest(now, self._freq, first_air))
        elif awaited:
            st.stage = Stage.POLLING
            st.poll_until = self._poll_deadline(now + self._status_wait)
        else:
            st.stage = Stage.IDLE

    @staticmethod
    def _sent_round(data: dict[str, Any]) -> SentRound:
        mc = data.get("multicast")
        return SentRound(
            multicast=CounterRange(mc[0], mc[1]) if mc else None,
            unicast={e: CounterRange(r[0], r[1]) for e, r in (data.get("unicast") or {}).items()},
        )

    def _reopen(self, now: float, out: list[Action]) -> None:
        """The session window closes before the next frame: schedule a new session."""
        st = self._state
        assert st.session_end is not None
        timeouts = self.config.timeouts
        # every receiving device must fetch a new session request, at a moment the gateway's
        # downlinks are busiest (repairs, status): twice the lead of the first session
        wait = timeouts.reopen if timeouts.session_lead is None else min(2 * timeouts.session_lead,
                                                                         timeouts.reopen)
        st.session_time = self._align_session_time(max(now + wait, st.session_end + 1.0))
        fragments = sum(it.last_n - it.next_n + 1 for it in st.tx_queue if it.kind == "fragment")
        if self.config.session_time_out is not None:
            st.time_out = self.config.session_time_out
        else:
            st.time_out = self._time_out_for(self._window_work(fragments, extra_rounds=1))
        st.session_end = st.session_time + self._window_seconds(st.time_out)
        st.stage = Stage.REOPENING
        st.next_tx_at = None
        st.reopenings += 1
        self._campaign_event(now, "reopen", session_time=st.session_time, time_out=st.time_out,
                             fragments_left=fragments)
        for dev in st.devices.values():
            if dev.phase is Phase.RECEIVING:
                dev.phase = Phase.SESSION_SETUP
                dev.pending.pop("session_setup", None)
                self._advance(dev, now, out)
