"""The sans-IO LoRaWAN FUOTA campaign session: one image, a set of devices, one multicast group.

h11-style: the machine never does IO, reads no clock and draws no random number. The
driver feeds it events with an explicit ``now`` (GPS seconds, float) and executes the
actions it returns (:mod:`proxyota.lorawan.session_actions`)::

    session = FuotaSession(config, image)          # or FuotaSession(config, image, state)
    actions = session.start(now)
    actions = session.on_uplink(dev_eui, fport, payload, now, gps_time=rx_gps_time)
    actions = session.on_timer(now)                # at session.next_deadline()
    session.state.to_dict()                        # persist; SessionState.from_dict() resumes

Per device (phases in :class:`~proxyota.lorawan.session_state.Phase`):

1. PROBE: PackageVersionReq on fPorts 200-203. TS004 (with a version in
   ``config.frag_versions``) and TS005 are required (else ``package_not_supported``;
   silence on a required probe is ``no_answer`` if the device never answered anything);
   TS003 and TS006 are optional. Versions are negotiated per device.
2. CLOCK_SYNC (TS003 devices): ForceDeviceResyncReq until an AppTimeReq arrives (skipped
   if the device synced during the campaign already; given up silently after the retries).
   Every AppTimeReq, in any phase, is answered: TimeCorrection = GPS time of reception -
   DeviceTime, saturated to i32 (TS003 v2 rule), token echoed; only when non-zero or
   AnsRequired (as ChirpStack does).
3. MC_SETUP: McGroupSetupReq (McKey encrypted with the device's McKEKey).
4. FRAG_SETUP: FragSessionSetupReq (v2: SessionCnt, AckReception, data-block MIC with
   the device's DataBlockIntKey); each error bit of the answer is a reason.
5. SESSION_SETUP: McClassCSessionReq / McClassBSessionReq with the campaign's session
   time. Error bits are reasons; a TimeToStart that disagrees with ``session_time - now``
   by more than ``timeouts.clock_tolerance`` (or v2 StartMissed / 0xFFFFFF) forces a clock
   resync and a new session request (TS003 devices; else ``clock_sync_failed``).
6. READY -> RECEIVING at the session start (devices not READY then fail ``no_answer``).
7. Rounds: round 1 multicasts the NbFrag uncoded fragments plus the initial redundancy
   (:func:`proxyota.lorawan.repair.first_round_size`), then FragSessionStatusReq
   (participants=1); later rounds use participants=0 plus unicast FragSessionStatusReq for
   devices that stayed silent. After 2^(BlockAckDelay+4) s + margin (or once every awaited
   device answered) :func:`proxyota.lorawan.repair.plan_round` decides: more coded
   fragments on fresh counters (multicast), unicast DataFragments to a few stragglers,
   polling again, or done; devices it gives up on fail with its reason. Fragments are
   paced by the duty cycle (:class:`proxyota.lorawan.airtime.DutyCycleAccount`); if the
   class C/B window (2^TimeOut s) would close first, the session is reopened with a new
   session request to the devices still receiving.
8. Completion (any of): FragSessionStatusAns with MissingFrag = 0 and NbFragReceived >=
   NbFrag; v2 FragDataBlockReceivedReq (answered with FragDataBlockReceivedAns; MICError
   -> ``mic_error``); TS006 DevUpgradeImageAns VALID with the expected version. Before a
   device is failed, or accepted as done on the planner's inference alone, a TS006 device
   is asked DevUpgradeImageReq (LoRaMac-node never lowers MissingFrag after recovering).
9. TS006 devices: DevRebootCountdownReq / DevRebootTimeReq (answer 0 = error: retried,
   then ``reboot_error``), then after the reboot + ``boot_margin`` DevVersionReq: the
   expected version -> ``successful``, else ``wrong_version_after_reboot``. Without TS006
   a complete device is ``successful`` with ``verified: False`` in its detail.
10. Cleanup once a device has its outcome: FragSessionDeleteReq and McGroupDeleteReq
    (best effort, not retried); the network server's group is deleted when no device
    needs multicast any more.

Unicast requests are class A: each has a deadline (``timeouts.answer`` per request queued
for the device) and is resent up to ``timeouts.max_retries`` times. Answers are accepted
only while the matching request is pending, so duplicates and answers for a phase already
passed change nothing; a status report older than the one kept is dropped.

Devices speaking different TS004 versions get one fragmentation session (FragIndex) per
version, because the v1 and v2 parity codes differ and a coded fragment of one corrupts
a decoder of the other; uncoded fragments are then sent once per session.

Modules: this one (public API, per-device setup, timers, outcomes), ``session_answers``
(what each uplink command does), ``session_rounds`` (multicast pacing, polls, repair
planning, reopening), ``session_state`` (the serialisable state), ``session_config``,
``session_actions``, ``session_outcomes`` (reasons), ``session_fragments`` (fragments
computed on demand) and ``session_common``.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from proxyota.errors import DecodeError, InvalidArgument
from proxyota.fec.blocks import MAX_FRAG_COUNTER
from proxyota.lorawan import keys
from proxyota.lorawan.airtime import DutyCycleAccount, min_fragment_period, multicast_fragment_airtime
from proxyota.lorawan.applayer import (
    FPORT_CLOCK_SYNC,
    FPORT_FIRMWARE_MANAGEMENT,
    FPORT_FRAGMENTATION,
    FPORT_MULTICAST_SETUP,
    Command,
    DevRebootCountdownReq,
    DevRebootTimeReq,
    DevUpgradeImageReq,
    DevVersionReq,
    ForceDeviceResyncCmd,
    ForceDeviceResyncReq,
    FragSessionDeleteReq,
    FragSessionSetupReq,
    McClassBSessionReq,
    McClassCSessionReq,
    McGroupDeleteReq,
    McGroupSetupReq,
    PackageVersionReq,
    decode_uplink,
    encode_commands,
)
from proxyota.lorawan.repair import first_round_size
from proxyota.lorawan.session_actions import (
    Action,
    CreateMulticastGroup,
    DeleteMulticastGroup,
    Log,
    SendUnicast,
)
from proxyota.lorawan.session_answers import SessionAnswers
from proxyota.lorawan.session_common import (
    MAX_TIMER_STEPS,
    PACKAGE_NAMES,
    PORTS,
    REQUIRED_PORTS,
    SESSION_PHASES,
    finite,
)
from proxyota.lorawan.session_config import SessionConfig, normalise_dev_eui
from proxyota.lorawan.session_fragments import FragmentSource
from proxyota.lorawan.session_outcomes import Outcome, Reason
from proxyota.lorawan.session_rounds import SessionRounds
from proxyota.lorawan.session_state import (
    TERMINAL_PHASES,
    DeviceState,
    LaneState,
    PendingRequest,
    Phase,
    SessionState,
    Stage,
)

__all__ = ["FuotaSession"]


class FuotaSession(SessionAnswers, SessionRounds):
    """One FUOTA campaign session (see the module docstring for the protocol flow).

    ``image`` is the data block (already verified); ``state`` a saved
    :class:`SessionState` (or its ``to_dict()`` form) to resume, which must belong to the
    same image and device set.
    """

    def __init__(self, config: SessionConfig, image: bytes, state: SessionState | dict | None = None) -> None:
        if not isinstance(config, SessionConfig):
            raise InvalidArgument(f"config must be a SessionConfig, got {type(config).__name__}")
        if not isinstance(image, (bytes, bytearray, memoryview)) or len(image) == 0:
            raise InvalidArgument("image must be non-empty bytes")
        self.config = config
        self._image = bytes(image)
        self._frags = FragmentSource(self._image, config.frag_size)
        nb = self._frags.nb_frag
        if nb > MAX_FRAG_COUNTER:
            raise InvalidArgument(
                f"the image needs {nb} fragments of {config.frag_size} bytes, over the 14-bit "
                f"fragment counter ({MAX_FRAG_COUNTER}); use larger fragments"
            )
        if nb > 0xFFFF:  # pragma: no cover - implied by the counter limit
            raise InvalidArgument("NbFrag does not fit FragSessionSetupReq")
        self._policy = config.policy
        digest = hashlib.sha256(self._image).hexdigest()
        if state is None:
            state = SessionState(
                image_sha256=digest,
                image_length=len(self._image),
                nb_frag=nb,
                frag_size=config.frag_size,
                padding=self._frags.padding,
                round1_size=first_round_size(nb, self._policy),
                devices={eui: DeviceState(eui) for eui in config.devices},
            )
        else:
            if isinstance(state, dict):
                state = SessionState.from_dict(state)
            if not isinstance(state, SessionState):
                raise InvalidArgument(f"state must be a SessionState, got {type(state).__name__}")
            if state.image_sha256 != digest or state.image_length != len(self._image):
                raise InvalidArgument("the saved session state belongs to another image")
            if state.frag_size != config.frag_size or state.nb_frag != nb:
                raise InvalidArgument("the saved session state used another FragSize")
            if set(state.devices) != set(config.devices):
                raise InvalidArgument("the saved session state has another device set than the config")
        self._state = state
        self._region = config.region_params
        self._freq = config.frequency or self._region.rx2_frequency_hz  # duty-cycle sub-band
        self._frag_airtime = multicast_fragment_airtime(self._region, config.dr, config.frag_size)
        self._status_airtime = self._downlink_airtime(2)
        self._ping_period = float(1 << config.ping_slot_periodicity) if config.device_class == "B" else 0.0
        # spacing of back-to-back fragments: airtime / duty cycle (class B: at most one per ping slot)
        period = min_fragment_period(self._region, config.dr, config.frag_size, self._freq)
        self._frag_period = max(period, self._ping_period, self._frag_airtime,
                                config.min_frame_spacing)
        self._duty = DutyCycleAccount(self._region, state.duty_cycle)
        self._mc_key_enc: dict[str, bytes] = {}
        self._mic: dict[tuple[str, int], bytes] = {}

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> SessionState:
        """The live state (persist ``state.to_dict()`` after each call)."""
        return self._state

    @property
    def finished(self) -> bool:
        return self._state.stage is Stage.FINISHED

    def start(self, now: float) -> list[Action]:
        """Begin the campaign: create the multicast group, probe every device."""
        now = finite(now, "now")
        st = self._state
        if st.stage is not Stage.CREATED:
            raise InvalidArgument(f"the session is already started (stage {st.stage.value})")
        out: list[Action] = []
        st.started_at = now
        st.session_time = self._align_session_time(now + self.config.timeouts.setup_window)
        self._size_window()
        st.stage = Stage.SETUP
        cfg = self.config
        out.append(
            CreateMulticastGroup(
                mc_addr=cfg.mc_addr,
                mc_app_s_key=keys.mc_app_s_key(cfg.mc_key, cfg.mc_addr),
                mc_nwk_s_key=keys.mc_nwk_s_key(cfg.mc_key, cfg.mc_addr),
                group_type=cfg.device_class,
                dr=cfg.dr,
                frequency=cfg.frequency,
                ping_slot_periodicity=cfg.ping_slot_periodicity if cfg.device_class == "B" else None,
                dev_euis=tuple(st.devices),
            )
        )
        st.group_created = True
        self._campaign_event(now, "started", session_time=st.session_time, time_out=st.time_out,
                             nb_frag=st.nb_frag, round1=st.round1_size)
        for dev in st.devices.values():
            for port in PORTS:
                self._request(dev, f"probe:{port}", port, [PackageVersionReq()], now, out)
        out += self._pump(now)
        return out

    def on_uplink(
        self, dev_eui: str, fport: int, payload: bytes, now: float, *, gps_time: float | None = None
    ) -> list[Action]:
        """An uplink of ``dev_eui`` on ``fport``; ``gps_time`` is its GPS reception time
        (defaults to ``now``). Undecodable payloads are recorded in the device's history
        and change nothing else; other fPorts and unknown devices are ignored."""
        eui = normalise_dev_eui(dev_eui)
        now = finite(now, "now")
        rx_time = now if gps_time is None else finite(gps_time, "gps_time")
        if isinstance(fport, bool) or not isinstance(fport, int):
            raise InvalidArgument(f"fport must be an int, got {fport!r}")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"payload must be bytes, got {type(payload).__name__}")
        payload = bytes(payload)
        st = self._state
        if st.stage is Stage.CREATED:
            raise InvalidArgument("start() the session before feeding it uplinks")
        dev = st.devices.get(eui)
        if dev is None or fport not in PORTS:
            return []
        version = dev.versions.get(str(fport)) or 1
        try:
            commands = decode_uplink(fport, payload, version, strict=False)
        except DecodeError as exc:
            self._event(dev, now, "decode_error", fport=fport, payload=payload.hex(), error=str(exc))
            return [Log("decode_error", eui, {"fport": fport, "error": str(exc)})]
        out: list[Action] = []
        if commands:
            dev.answered = True
        for cmd in commands:
            self._handle(dev, fport, cmd, now, rx_time, out)
        out += self._pump(now)
        return out

    def on_timer(self, now: float) -> list[Action]:
        """Process every deadline <= ``now`` (retries, session start, the next paced
        multicast frame, the end of a status wait, reboot checks)."""
        now = finite(now, "now")
        if self._state.stage is Stage.CREATED:
            return []
        out: list[Action] = []
        for _ in range(MAX_TIMER_STEPS):
            due = self._next_due(now)
            if due is None:
                break
            _when, kind, ref = due
            self._fire(kind, ref, now, out)
            out += self._pump(now)
        else:  # pragma: no cover - a bug: a handler did not move its deadline
            raise RuntimeError("FuotaSession.on_timer made no progress")
        out += self._pump(now)
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` has something to do next (None: nothing scheduled)."""
        times = [t for t, _k, _r in self._deadlines()]
        return min(times) if times else None

    def cancel(self, now: float) -> list[Action]:
        """Stop the campaign: every device without an outcome fails ``cancelled``."""
        now = finite(now, "now")
        out: list[Action] = []
        st = self._state
        if st.stage is Stage.CREATED:
            st.stage = Stage.FINISHED
            st.finished_at = now
            return out
        for dev in st.devices.values():
            self._fail(dev, Reason.CANCELLED, {}, now, out)
        out += self._pump(now)
        return out

    def outcomes(self) -> dict[str, Outcome]:
        """dev_eui -> Outcome for every device that has one (all of them once finished)."""
        return {
            eui: Outcome(Reason(dev.reason), dict(dev.detail))
            for eui, dev in self._state.devices.items()
            if dev.phase in TERMINAL_PHASES and dev.reason is not None
        }

    def report(self) -> dict[str, Any]:
        """Figures of the campaign (plain values)."""
        st = self._state
        return {
            "stage": st.stage.value,
            "nb_frag": st.nb_frag,
            "frag_size": st.frag_size,
            "padding": st.padding,
            "image_length": st.image_length,
            "round1_size": st.round1_size,
            "session_time": st.session_time,
            "time_out": st.time_out,
            "reopenings": st.reopenings,
            "rounds": max((len(lane.rounds) for lane in st.lanes.values()), default=0),
            "lanes": {
                key: {
                    "version": lane.version,
                    "frag_index": lane.frag_index,
                    "rounds": len(lane.rounds),
                    "highest_counter": lane.highest,
                }
                for key, lane in st.lanes.items()
            },
            "multicast_fragments": st.multicast_fragments,
            "multicast_status_requests": st.multicast_status,
            "unicast_fragments": st.unicast_fragments,
            "airtime_s": round(st.airtime, 6),
            "fragment_period_s": self._frag_period,
            "finished_at": st.finished_at,
            "devices": {
                eui: {
                    "phase": dev.phase.value,
                    "reason": dev.reason,
                    "versions": dict(dev.versions),
                    "lane": dev.lane,
                    "completion": dev.completion,
                    "report": dict(dev.report) if dev.report else None,
                    "fw_version": dev.fw_version,
                }
                for eui, dev in st.devices.items()
            },
        }

    # ------------------------------------------------------------------ bookkeeping

    def _event(self, dev: DeviceState, now: float, event: str, **detail: Any) -> None:
        dev.history.append({"t": now, "event": event, **detail})

    def _campaign_event(self, now: float, event: str, **detail: Any) -> None:
        self._state.log.append({"t": now, "event": event, **detail})

    def _version(self, dev: DeviceState, port: int) -> int:
        return dev.versions.get(str(port), 0)

    def _supports(self, dev: DeviceState, port: int) -> bool:
        return self._version(dev, port) > 0

    def _lane(self, dev: DeviceState) -> LaneState:
        assert dev.lane is not None
        return self._state.lanes[dev.lane]

    def _request(self, dev: DeviceState, kind: str, fport: int, cmds: list[Command], now: float,
                 out: list[Action], *, ahead: int = 0) -> None:
        """Send a unicast request that waits for an answer (deadline, retries)."""
        payload = encode_commands(cmds)
        dev.pending[kind] = PendingRequest(kind, fport, payload.hex(), now,
                                           self._request_deadline(dev, now, ahead))
        out.append(SendUnicast(dev.dev_eui, fport, payload, kind))
        self._event(dev, now, "sent", request=kind, payload=payload.hex())

    def _request_deadline(self, dev: DeviceState, now: float, ahead: int = 0) -> float:
        """When a request just queued times out: with delivery tracking, the time the device
        has to fetch it; without, one ``answer`` per request queued for the device."""
        t = self.config.timeouts
        if t.delivery is not None:
            dev.unfetched += 1
            return now + t.delivery * dev.unfetched
        return now + t.answer * (1 + len(dev.pending) + ahead)

    def on_delivered(self, dev_eui: str, kind: str, now: float) -> list[Action]:
        """The network server transmitted the unicast request ``kind`` (the ``kind`` of the
        :class:`SendUnicast`) to ``dev_eui`` at ``now``: its answer timer starts. Unknown
        devices, untracked kinds and repeated reports change nothing."""
        dev = self._state.devices.get(dev_eui)
        if dev is None or self.config.timeouts.delivery is None:
            return []
        dev.unfetched = max(0, dev.unfetched - 1)
        req = dev.pending.get(kind)
        if req is None or req.delivered_at is not None:
            return []
        req.delivered_at = now
        req.deadline = now + self.config.timeouts.answer
        return []

    def _send(self, dev: DeviceState, kind: str, fport: int, cmds: list[Command], now: float,
              out: list[Action], log: bool = True) -> None:
        """Send a unicast downlink that expects no tracked answer."""
        payload = encode_commands(cmds)
        out.append(SendUnicast(dev.dev_eui, fport, payload, kind))
        if self.config.timeouts.delivery is not None:
            dev.unfetched += 1
        if log:
            self._event(dev, now, "sent", request=kind, payload=payload.hex())

    def _mc_key_encrypted(self, dev: DeviceState) -> bytes:
        enc = self._mc_key_enc.get(dev.dev_eui)
        if enc is None:
            dc = self.config.devices[dev.dev_eui]
            root = keys.mc_root_key(dc.root_key, lorawan_1_1=dc.lorawan_1_1)
            enc = keys.encrypt_mc_key(keys.mc_ke_key(root), self.config.mc_key)
            self._mc_key_enc[dev.dev_eui] = enc
        return enc

    def _data_block_mic(self, dev: DeviceState, frag_index: int) -> bytes:
        mic = self._mic.get((dev.dev_eui, frag_index))
        if mic is None:
            dc = self.config.devices[dev.dev_eui]
            mic = keys.data_block_mic(
                keys.data_block_int_key(dc.root_key), self.config.session_cnt, frag_index,
                self.config.descriptor, self._image,
            )
            self._mic[(dev.dev_eui, frag_index)] = mic
        return mic

    # ------------------------------------------------------------------ outcomes

    def _fail(self, dev: DeviceState, reason: Reason, detail: dict[str, Any], now: float,
              out: list[Action]) -> None:
        if dev.phase in TERMINAL_PHASES:
            return
        previous = dev.phase
        dev.phase = Phase.FAILED
        dev.reason = reason.value
        dev.detail = {"phase": previous.value, **detail}
        dev.finished_at = now
        dev.pending.clear()
        dev.confirming = False
        dev.verify_at = None
        self._event(dev, now, "failed", reason=reason.value, **detail)
        out.append(Log("device_failed", dev.dev_eui, {"reason": reason.value, "phase": previous.value, **detail}))
        self._cleanup(dev, now, out)

    def _succeed(self, dev: DeviceState, detail: dict[str, Any], now: float, out: list[Action]) -> None:
        if dev.phase in TERMINAL_PHASES:
            return
        dev.phase = Phase.DONE
        dev.reason = Reason.SUCCESSFUL.value
        dev.detail = {"completion": dev.completion, **detail}
        dev.finished_at = now
        dev.pending.clear()
        self._event(dev, now, "successful", **detail)
        out.append(Log("device_successful", dev.dev_eui, dict(dev.detail)))
        self._cleanup(dev, now, out)

    def _cleanup(self, dev: DeviceState, now: float, out: list[Action]) -> None:
        """Best effort: remove the fragmentation session and the multicast group."""
        if dev.frag_setup_sent and dev.lane is not None:
            frag_index = self._lane(dev).frag_index
            self._send(dev, "frag_delete", FPORT_FRAGMENTATION, [FragSessionDeleteReq(frag_index)], now, out)
        if dev.mc_setup_sent:
            self._send(dev, "mc_delete", FPORT_MULTICAST_SETUP, [McGroupDeleteReq(self.config.mc_group_id)], now, out)

    def _in_session(self, dev: DeviceState) -> bool:
        """Taking part in the multicast session (possibly being re-set-up for a reopening)."""
        return dev.report is not None or dev.phase is Phase.RECEIVING or (
            dev.phase in SESSION_PHASES and dev.completion is None and dev.lane is not None
            and self._state.stage not in (Stage.CREATED, Stage.SETUP)
        )

    def _complete(self, dev: DeviceState, signal: str, now: float, out: list[Action], **detail: Any) -> None:
        if dev.phase in TERMINAL_PHASES or dev.phase not in SESSION_PHASES or not self._in_session(dev):
            return
        dev.phase = Phase.COMPLETE
        dev.completion = signal
        dev.completed_at = now
        dev.confirming = False
        dev.confirm_reason = None
        for kind in ("status", "session_setup", "upgrade_image"):
            dev.pending.pop(kind, None)
        self._event(dev, now, "complete", signal=signal, **detail)
        self._advance(dev, now, out)

    def _confirm_or_fail(self, dev: DeviceState, reason: Reason, detail: dict[str, Any], now: float,
                         out: list[Action]) -> None:
        """Fail ``dev`` unless TS006 says it has the image (asked first, once per round)."""
        rounds = len(self._lane(dev).rounds) if dev.lane else 0
        if self._supports(dev, FPORT_FIRMWARE_MANAGEMENT) and dev.image_absent_round != rounds:
            dev.confirming = True
            dev.confirm_reason = reason.value
            dev.confirm_detail = dict(detail)
            if "upgrade_image" not in dev.pending:
                self._request(dev, "upgrade_image", FPORT_FIRMWARE_MANAGEMENT, [DevUpgradeImageReq()], now, out)
            self._event(dev, now, "confirming", reason=reason.value)
        else:
            self._fail(dev, reason, detail, now, out)

    def _confirm_done(self, dev: DeviceState, now: float, out: list[Action]) -> None:
        """The planner judges ``dev`` complete without a definite signal: check with TS006."""
        rounds = len(self._lane(dev).rounds)
        if self._supports(dev, FPORT_FIRMWARE_MANAGEMENT) and dev.image_absent_round != rounds:
            dev.confirming = True
            dev.confirm_reason = None
            dev.confirm_detail = {}
            if "upgrade_image" not in dev.pending:
                self._request(dev, "upgrade_image", FPORT_FIRMWARE_MANAGEMENT, [DevUpgradeImageReq()], now, out)
            self._event(dev, now, "confirming", reason="planner_done")
        else:
            self._complete(dev, "inferred", now, out)

    # ------------------------------------------------------------------ per-device progress

    def _advance(self, dev: DeviceState, now: float, out: list[Action]) -> None:
        """Move ``dev`` on as far as it can go without waiting for anything."""
        cfg = self.config
        st = self._state
        for _ in range(16):
            phase = dev.phase
            if phase is Phase.PROBE:
                if any(f"probe:{p}" in dev.pending for p in PORTS):
                    return
                if not all(str(p) in dev.versions for p in PORTS):
                    return  # pragma: no cover - every probe resolves to a version or 0
                dev.phase = Phase.CLOCK_SYNC
            elif phase is Phase.CLOCK_SYNC:
                if dev.resync:
                    if dev.synced_at is not None:
                        dev.resync = False
                        dev.phase = Phase.SESSION_SETUP
                        continue
                elif (not self._supports(dev, FPORT_CLOCK_SYNC) or dev.synced_at is not None
                      or not cfg.clock_sync_required or dev.clock_skipped):
                    dev.phase = Phase.MC_SETUP
                    continue
                if "clock_sync" not in dev.pending:
                    version = self._version(dev, FPORT_CLOCK_SYNC)
                    cls = ForceDeviceResyncCmd if version >= 2 else ForceDeviceResyncReq
                    self._request(dev, "clock_sync", FPORT_CLOCK_SYNC, [cls(cfg.resync_nb_transmissions)], now, out)
                return
            elif phase is Phase.MC_SETUP:
                if "mc_setup" not in dev.pending:
                    req = McGroupSetupReq(
                        cfg.mc_group_id, cfg.mc_addr, self._mc_key_encrypted(dev),
                        cfg.min_mc_fcount, cfg.max_mc_fcount,
                    )
                    dev.mc_setup_sent = True
                    self._request(dev, "mc_setup", FPORT_MULTICAST_SETUP, [req], now, out)
                return
            elif phase is Phase.FRAG_SETUP:
                if "frag_setup" not in dev.pending:
                    lane = self._lane_for(dev)
                    v2 = lane.version == 2
                    req = FragSessionSetupReq(
                        frag_index=lane.frag_index,
                        nb_frag=st.nb_frag,
                        frag_size=st.frag_size,
                        padding=st.padding,
                        mc_group_bit_mask=cfg.mc_group_bit_mask,
                        frag_algo=0,
                        block_ack_delay=cfg.block_ack_delay,
                        descriptor=cfg.descriptor,
                        ack_reception=cfg.ack_reception if v2 else False,
                        session_cnt=cfg.session_cnt if v2 else None,
                        mic=self._data_block_mic(dev, lane.frag_index) if v2 else None,
                        version=lane.version,
                    )
                    dev.frag_setup_sent = True
                    self._request(dev, "frag_setup", FPORT_FRAGMENTATION, [req], now, out)
                return
            elif phase is Phase.SESSION_SETUP:
                if not self._session_committed():
                    return  # held until the session time is fixed (_commit_session)
                if "session_setup" not in dev.pending:
                    self._request(dev, "session_setup", FPORT_MULTICAST_SETUP, [self._session_req()], now, out)
                return
            elif phase is Phase.COMPLETE:
                if self._supports(dev, FPORT_FIRMWARE_MANAGEMENT):
                    dev.phase = Phase.REBOOTING
                    self._send_reboot(dev, now, out)
                else:
                    self._succeed(dev, {"verified": False}, now, out)
                return
            elif phase is Phase.VERIFYING:
                if "version" not in dev.pending:
                    self._request(dev, "version", FPORT_FIRMWARE_MANAGEMENT, [DevVersionReq()], now, out)
                return
            else:
                return

    def _lane_for(self, dev: DeviceState) -> LaneState:
        st = self._state
        version = self._version(dev, FPORT_FRAGMENTATION)
        key = str(version)
        lane = st.lanes.get(key)
        if lane is None:
            used = {ln.frag_index for ln in st.lanes.values()}
            index = self.config.frag_index
            while index in used:
                index = (index + 1) % 4
            lane = LaneState(version=version, frag_index=index)
            st.lanes[key] = lane
            # a second session shares the window: resize it while no device has been told
            if not any(d.session_time is not None or "session_setup" in d.pending for d in st.devices.values()):
                self._size_window()
        dev.lane = key
        return lane

    def _session_committed(self) -> bool:
        st = self._state
        return (self.config.timeouts.session_lead is None or st.stage is not Stage.SETUP
                or st.session_committed)

    def _fleet_ready(self) -> bool:
        """Every device still in the campaign waits only for its session request."""
        phases = [d.phase for d in self._state.devices.values() if d.phase not in TERMINAL_PHASES]
        return bool(phases) and all(p is Phase.SESSION_SETUP for p in phases)

    def _commit_session(self, now: float, out: list[Action], *, ready: bool) -> None:
        """Fix the session time (``ready``: the whole fleet is set up: ``session_lead`` s
        from now, never later than planned) and send the held session requests."""
        st = self._state
        lead = self.config.timeouts.session_lead
        assert lead is not None and st.session_time is not None
        st.session_committed = True
        if ready:
            st.session_time = min(st.session_time, self._align_session_time(now + lead))
            self._size_window()
        self._campaign_event(now, "session_time", session_time=st.session_time,
                             early=ready, time_out=st.time_out)
        for dev in st.devices.values():
            if dev.phase is Phase.SESSION_SETUP:
                self._advance(dev, now, out)

    def _session_req(self) -> Command:
        cfg, st = self.config, self._state
        assert st.session_time is not None and st.time_out is not None
        session_time = st.session_time & 0xFFFFFFFF
        if cfg.device_class == "B":
            return McClassBSessionReq(cfg.mc_group_id, session_time, st.time_out, cfg.ping_slot_periodicity,
                                      cfg.frequency, cfg.dr)
        return McClassCSessionReq(cfg.mc_group_id, session_time, st.time_out, cfg.frequency, cfg.dr)

    def _send_reboot(self, dev: DeviceState, now: float, out: list[Action]) -> None:
        policy = self.config.reboot
        dev.reboot_attempts += 1
        if policy.mode == "countdown":
            cmd: Command = DevRebootCountdownReq(policy.delay)
        else:
            assert policy.at is not None
            at = policy.at if policy.at >= now + policy.delay else math.ceil(now + policy.delay)
            cmd = DevRebootTimeReq(at & 0xFFFFFFFF)
        self._request(dev, "reboot", FPORT_FIRMWARE_MANAGEMENT, [cmd], now, out)

    # ------------------------------------------------------------------ timers

    def _deadlines(self) -> list[tuple[float, str, Any]]:
        st = self._state
        out: list[tuple[float, str, Any]] = []
        if st.stage in (Stage.SETUP, Stage.REOPENING) and st.session_time is not None:
            out.append((float(st.session_time), "session_start", None))
            if not self._session_committed():
                lead = self.config.timeouts.session_lead
                assert lead is not None
                out.append((float(st.session_time) - lead, "commit", None))
        if st.stage is Stage.TRANSMITTING and st.next_tx_at is not None:
            out.append((st.next_tx_at, "tx", None))
        if st.stage is Stage.POLLING and st.poll_until is not None:
            out.append((st.poll_until, "poll", None))
        for eui, dev in st.devices.items():
            for kind, req in sorted(dev.pending.items()):
                out.append((req.deadline, "pending", (eui, kind)))
            if dev.verify_at is not None and dev.phase is Phase.REBOOTING:
                out.append((dev.verify_at, "verify", eui))
        return out

    def _next_due(self, now: float) -> tuple[float, str, Any] | None:
        due = [d for d in self._deadlines() if d[0] <= now]
        if not due:
            return None
        order = {"session_start": 0, "commit": 1, "tx": 2, "poll": 3, "pending": 4, "verify": 5}
        return min(due, key=lambda d: (d[0], order[d[1]], str(d[2])))

    def _fire(self, kind: str, ref: Any, now: float, out: list[Action]) -> None:
        st = self._state
        if kind == "session_start":
            self._session_start(now, out)
        elif kind == "commit":
            self._commit_session(now, out, ready=False)
        elif kind == "tx":
            self._transmit(now, out)
        elif kind == "poll":
            self._close_poll(now, out)
        elif kind == "pending":
            eui, req_kind = ref
            self._on_timeout(st.devices[eui], req_kind, now, out)
        elif kind == "verify":
            dev = st.devices[ref]
            dev.verify_at = None
            dev.phase = Phase.VERIFYING
            self._advance(dev, now, out)

    def _on_timeout(self, dev: DeviceState, kind: str, now: float, out: list[Action]) -> None:
        req = dev.pending[kind]
        tracked = self.config.timeouts.delivery is not None
        never_fetched = tracked and req.delivered_at is None
        if never_fetched and req.waits < self.config.timeouts.max_retries:
            # still queued at the network server (the gateway's duty cycle rations unicast
            # downlinks): wait another delivery window, never resend a queued request
            req.waits += 1
            req.deadline = now + self.config.timeouts.delivery
            self._event(dev, now, "waiting_delivery", request=kind, waits=req.waits)
            return
        if kind != "status" and not never_fetched and req.attempts <= self.config.timeouts.max_retries:
            payload = bytes.fromhex(req.payload)
            req.attempts += 1
            req.sent_at = now
            req.delivered_at = None
            req.deadline = self._request_deadline(dev, now, -1)
            out.append(SendUnicast(dev.dev_eui, req.fport, payload, kind))
            self._event(dev, now, "retry", request=kind, attempt=req.attempts)
            return
        if never_fetched:
            self._event(dev, now, "not_fetched", request=kind)
        del dev.pending[kind]
        self._event(dev, now, "timeout", request=kind, attempts=req.attempts)
        if kind.startswith("probe:"):
            port = int(kind.split(":", 1)[1])
            if port in REQUIRED_PORTS:
                if dev.answered and not never_fetched:
                    self._fail(dev, Reason.PACKAGE_NOT_SUPPORTED,
                               {"package": PACKAGE_NAMES[port], "why": "no PackageVersionAns"}, now, out)
                else:
                    self._fail(dev, Reason.NO_ANSWER, {"request": kind}, now, out)
                return
            dev.versions[str(port)] = 0
            self._advance(dev, now, out)
        elif kind == "clock_sync":
            if dev.resync:
                self._fail(dev, Reason.CLOCK_SYNC_FAILED, {"why": "no AppTimeReq after ForceDeviceResyncReq",
                                                            "resyncs": dev.resyncs}, now, out)
            else:
                dev.clock_skipped = True
                self._advance(dev, now, out)
        elif kind == "status":
            # counted as an unanswered poll when the poll closes; the poll waited for this
            # request's first deadline (long when it queued behind unicast fragments): now it
            # waits only for what is still out
            st = self._state
            if st.stage is Stage.POLLING and dev.dev_eui in st.poll_awaited and st.poll_until is not None:
                base = max(now, (st.poll_started_at or now) + self._status_wait)
                st.poll_until = min(st.poll_until, self._poll_deadline(base))
        elif kind == "upgrade_image":
            if not dev.confirming:
                return
            if dev.confirm_reason is not None:
                self._fail(dev, Reason(dev.confirm_reason),
                           {**dev.confirm_detail, "image_status": "no answer"}, now, out)
            else:
                self._complete(dev, "inferred", now, out)
        else:
            self._fail(dev, Reason.NO_ANSWER, {"request": kind, "attempts": req.attempts}, now, out)

    # ------------------------------------------------------------------ campaign pump

    def _multicast_needed(self) -> bool:
        st = self._state
        if st.stage is Stage.SETUP:
            return any(d.phase not in TERMINAL_PHASES for d in st.devices.values())
        return any(d.phase in SESSION_PHASES for d in st.devices.values())

    def _pump(self, now: float) -> list[Action]:
        """Campaign-level consequences of the last event (no deadline involved)."""
        st = self._state
        out: list[Action] = []
        for _ in range(8):
            stage = st.stage
            if stage in (Stage.CREATED, Stage.FINISHED):
                break
            if stage is not Stage.WRAPUP and not self._multicast_needed():
                st.tx_queue.clear()
                st.next_tx_at = None
                st.poll_until = None
                st.poll_awaited = []
                st.stage = Stage.WRAPUP
                if st.group_created and not st.group_deleted:
                    st.group_deleted = True
                    out.append(DeleteMulticastGroup())
                self._campaign_event(now, "multicast_over")
                continue
            if stage is Stage.SETUP and not self._session_committed() and self._fleet_ready():
                self._commit_session(now, out, ready=True)
                continue
            if stage is Stage.POLLING and all(self._answered_poll(st.devices[e]) for e in st.poll_awaited):
                self._close_poll(now, out)
                continue
            if stage is Stage.IDLE and any(
                self._lane_devices(k, plannable=True) for k in st.lanes
            ):
                self._plan(now, out)
                if st.stage is Stage.IDLE:
                    break
                continue
            if stage is Stage.WRAPUP and all(d.phase in TERMINAL_PHASES for d in st.devices.values()):
                st.stage = Stage.FINISHED
                st.finished_at = now
                self._campaign_event(now, "finished")
                out.append(Log("campaign_finished", None, {
                    "successful": sum(d.reason == Reason.SUCCESSFUL.value for d in st.devices.values()),
                    "failed": sum(d.phase is Phase.FAILED for d in st.devices.values()),
                }))
            break
        return out
