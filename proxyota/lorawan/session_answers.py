"""What each device answer does to the FUOTA session (a mixin of :class:`FuotaSession`).

One handler per uplink command: PackageVersionAns (negotiation), AppTimeReq (always
answered), McGroupSetupAns, FragSessionSetupAns, McClassCSessionAns / McClassBSessionAns
(error bits, TimeToStart check and clock resync), FragSessionStatusAns (completion, status
bits, the report kept for the repair planner), FragDataBlockReceivedReq, DevUpgradeImageAns,
DevRebootTimeAns / DevRebootCountdownAns and DevVersionAns. An answer counts only while the
matching request is pending, so duplicates and late answers change nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxyota.lorawan.applayer import (
    FPORT_CLOCK_SYNC,
    FPORT_FIRMWARE_MANAGEMENT,
    FPORT_FRAGMENTATION,
    FPORT_MULTICAST_SETUP,
    AppTimeAns,
    AppTimeReq,
    Command,
    DevRebootCountdownAns,
    DevRebootTimeAns,
    DevUpgradeImageAns,
    DevUpgradeImageReq,
    DevVersionAns,
    FragDataBlockReceivedAns,
    FragDataBlockReceivedReq,
    FragSessionDeleteAns,
    FragSessionSetupAns,
    FragSessionStatusAns,
    McClassBSessionAns,
    McClassCSessionAns,
    McGroupDeleteAns,
    McGroupSetupAns,
    PackageVersionAns,
    UpImageStatus,
    clamp_time_correction,
)
from proxyota.lorawan.session_actions import Action
from proxyota.lorawan.session_common import GPS_TIME_THRESHOLD, PACKAGE_NAMES, REQUIRED_PORTS, SESSION_PHASES
from proxyota.lorawan.session_outcomes import FRAG_SETUP_ERROR_REASONS, SESSION_ERROR_REASONS, Reason
from proxyota.lorawan.session_state import TERMINAL_PHASES, DeviceState, Phase, Stage

if TYPE_CHECKING:
    from proxyota.lorawan.session_config import SessionConfig
    from proxyota.lorawan.session_state import SessionState

__all__ = ["SessionAnswers"]


class SessionAnswers:
    """Uplink handlers of :class:`~proxyota.lorawan.session.FuotaSession`.

    Uses the session's ``config`` / ``_state`` and its bookkeeping helpers (``_event``,
    ``_request``, ``_send``, ``_fail``, ``_complete``, ``_advance``, ...).
    """

    config: SessionConfig
    _state: SessionState

    # ------------------------------------------------------------------ uplink handling

    def _handle(self, dev: DeviceState, fport: int, cmd: Command, now: float, rx_time: float,
                out: list[Action]) -> None:
        name = cmd.command
        if isinstance(cmd, AppTimeReq):
            self._on_app_time_req(dev, cmd, now, rx_time, out)
            return
        if isinstance(cmd, FragDataBlockReceivedReq):
            self._on_data_block_received(dev, cmd, now, out)
            return
        if isinstance(cmd, (FragSessionDeleteAns, McGroupDeleteAns)):
            self._event(dev, now, "cleanup_answer", command=name)
            return
        if isinstance(cmd, FragSessionStatusAns):
            self._on_status(dev, cmd, now, out)
            return
        kind = self._answer_kind(fport, cmd)
        if kind is None or kind not in dev.pending:
            self._event(dev, now, "ignored", command=name, why="no matching request pending")
            return
        if dev.phase in TERMINAL_PHASES:  # pragma: no cover - terminal devices have nothing pending
            return
        if isinstance(cmd, PackageVersionAns):
            self._on_package_version(dev, fport, cmd, now, out)
        elif isinstance(cmd, McGroupSetupAns):
            self._on_mc_group_setup(dev, cmd, now, out)
        elif isinstance(cmd, FragSessionSetupAns):
            self._on_frag_setup(dev, cmd, now, out)
        elif isinstance(cmd, (McClassCSessionAns, McClassBSessionAns)):
            self._on_session_ans(dev, cmd, now, rx_time, out)
        elif isinstance(cmd, DevUpgradeImageAns):
            self._on_upgrade_image(dev, cmd, now, out)
        elif isinstance(cmd, (DevRebootTimeAns, DevRebootCountdownAns)):
            self._on_reboot_ans(dev, cmd, now, rx_time, out)
        elif isinstance(cmd, DevVersionAns):
            self._on_version(dev, cmd, now, out)

    def _answer_kind(self, fport: int, cmd: Command) -> str | None:
        if isinstance(cmd, PackageVersionAns):
            return f"probe:{fport}"
        if isinstance(cmd, McGroupSetupAns):
            return "mc_setup"
        if isinstance(cmd, FragSessionSetupAns):
            return "frag_setup"
        if isinstance(cmd, McClassCSessionAns):
            return "session_setup" if self.config.device_class == "C" else None
        if isinstance(cmd, McClassBSessionAns):
            return "session_setup" if self.config.device_class == "B" else None
        if isinstance(cmd, DevUpgradeImageAns):
            return "upgrade_image"
        if isinstance(cmd, (DevRebootTimeAns, DevRebootCountdownAns)):
            return "reboot"
        if isinstance(cmd, DevVersionAns):
            return "version"
        return None

    def _on_package_version(self, dev: DeviceState, fport: int, cmd: PackageVersionAns, now: float,
                            out: list[Action]) -> None:
        dev.pending.pop(f"probe:{fport}", None)
        version = cmd.package_version
        accepted = {
            FPORT_MULTICAST_SETUP: (1, 2),
            FPORT_FRAGMENTATION: self.config.frag_versions,
            FPORT_CLOCK_SYNC: (1, 2),
            FPORT_FIRMWARE_MANAGEMENT: (1,),
        }[fport]
        ok = version in accepted
        dev.versions[str(fport)] = version if ok else 0
        self._event(dev, now, "package_version", fport=fport, version=version, accepted=ok)
        if not ok and fport in REQUIRED_PORTS:
            self._fail(dev, Reason.PACKAGE_NOT_SUPPORTED,
                       {"package": PACKAGE_NAMES[fport], "version": version, "accepted": list(accepted)},
                       now, out)
            return
        self._advance(dev, now, out)

    def _on_app_time_req(self, dev: DeviceState, cmd: AppTimeReq, now: float, rx_time: float,
                         out: list[Action]) -> None:
        gps = round(rx_time) % (1 << 32)
        correction = clamp_time_correction(gps - cmd.device_time)
        saturated = correction != gps - cmd.device_time
        self._event(dev, now, "app_time_req", device_time=cmd.device_time, correction=correction,
                    token=cmd.token_req)
        if correction != 0 or cmd.ans_required:
            self._send(dev, "app_time_ans", FPORT_CLOCK_SYNC, [AppTimeAns(correction, cmd.token_req)], now, out,
                       log=False)
        if saturated or dev.phase in TERMINAL_PHASES:
            return
        dev.synced_at = now
        if dev.phase is Phase.CLOCK_SYNC:
            dev.pending.pop("clock_sync", None)
            self._advance(dev, now, out)

    def _on_mc_group_setup(self, dev: DeviceState, cmd: McGroupSetupAns, now: float, out: list[Action]) -> None:
        if cmd.mc_group_id != self.config.mc_group_id:
            self._event(dev, now, "ignored", command=cmd.command, why=f"McGroupID {cmd.mc_group_id}")
            return
        dev.pending.pop("mc_setup", None)
        if cmd.id_error:
            self._fail(dev, Reason.MC_GROUP_ID_ERROR, {"errors": ["id_error"]}, now, out)
            return
        self._event(dev, now, "mc_group_setup")
        dev.phase = Phase.FRAG_SETUP
        self._advance(dev, now, out)

    def _on_frag_setup(self, dev: DeviceState, cmd: FragSessionSetupAns, now: float, out: list[Action]) -> None:
        lane = self._lane(dev)
        if cmd.frag_index != lane.frag_index:
            self._event(dev, now, "ignored", command=cmd.command, why=f"FragIndex {cmd.frag_index}")
            return
        dev.pending.pop("frag_setup", None)
        errors = [flag for flag, _r in FRAG_SETUP_ERROR_REASONS if getattr(cmd, flag)]
        if errors:
            reason = dict(FRAG_SETUP_ERROR_REASONS)[errors[0]]
            self._fail(dev, reason, {"errors": errors, "frag_version": lane.version}, now, out)
            return
        self._event(dev, now, "frag_session_setup", frag_index=lane.frag_index, version=lane.version)
        dev.phase = Phase.SESSION_SETUP
        self._advance(dev, now, out)

    def _on_session_ans(self, dev: DeviceState, cmd: McClassCSessionAns | McClassBSessionAns, now: float,
                        rx_time: float, out: list[Action]) -> None:
        st = self._state
        if cmd.mc_group_id != self.config.mc_group_id:
            self._event(dev, now, "ignored", command=cmd.command, why=f"McGroupID {cmd.mc_group_id}")
            return
        dev.pending.pop("session_setup", None)
        assert st.session_time is not None
        errors = [flag for flag, _r in SESSION_ERROR_REASONS if getattr(cmd, flag)]
        if errors and errors != ["start_missed"]:
            reason = dict(SESSION_ERROR_REASONS)[errors[0]]
            self._fail(dev, reason, {"errors": errors}, now, out)
            return
        expected = st.session_time - rx_time
        if errors:
            why: dict[str, Any] = {"errors": errors}
        elif cmd.time_to_start_unknown:
            why = {"time_to_start": cmd.time_to_start, "expected": round(expected, 3)}
        else:
            assert cmd.time_to_start is not None
            if abs(cmd.time_to_start - expected) <= self.config.timeouts.clock_tolerance:
                dev.phase = Phase.READY
                dev.session_time = st.session_time
                self._event(dev, now, "session_ready", time_to_start=cmd.time_to_start,
                            expected=round(expected, 3))
                return
            why = {"time_to_start": cmd.time_to_start, "expected": round(expected, 3)}
        # the device's clock disagrees with ours: resync it, then ask again
        if self._supports(dev, FPORT_CLOCK_SYNC) and dev.resyncs < self.config.timeouts.max_retries + 1:
            dev.resyncs += 1
            dev.resync = True
            dev.synced_at = None
            dev.phase = Phase.CLOCK_SYNC
            self._event(dev, now, "clock_resync", **why)
            self._advance(dev, now, out)
            return
        reason = Reason.START_MISSED if errors else Reason.CLOCK_SYNC_FAILED
        self._fail(dev, reason, {**why, "resyncs": dev.resyncs}, now, out)

    def _on_status(self, dev: DeviceState, cmd: FragSessionStatusAns, now: float, out: list[Action]) -> None:
        if dev.phase in TERMINAL_PHASES or dev.lane is None or not self._in_session(dev) or \
                dev.phase not in SESSION_PHASES:
            self._event(dev, now, "ignored", command=cmd.command, why=f"phase {dev.phase.value}")
            return
        dev.pending.pop("status", None)
        lane = self._lane(dev)
        if cmd.session_does_not_exist:
            self._event(dev, now, "status", session_does_not_exist=True)
            self._confirm_or_fail(dev, Reason.SESSION_DOES_NOT_EXIST, {}, now, out)
            return
        if cmd.frag_index != lane.frag_index:
            self._event(dev, now, "ignored", command=cmd.command, why=f"FragIndex {cmd.frag_index}")
            return
        assert cmd.nb_frag_received is not None and cmd.missing_frag is not None
        self._event(dev, now, "status", nb_frag_received=cmd.nb_frag_received, missing_frag=cmd.missing_frag,
                    memory_error=cmd.memory_error, mic_error=cmd.mic_error)
        if cmd.memory_error:
            reason = Reason.NOT_ENOUGH_MEMORY if cmd.version == 1 else Reason.MEMORY_ERROR
            self._fail(dev, reason, {"errors": ["memory_error"]}, now, out)
            return
        if cmd.mic_error:
            self._fail(dev, Reason.MIC_ERROR, {"errors": ["mic_error"]}, now, out)
            return
        if cmd.missing_frag == 0 and cmd.nb_frag_received >= self._state.nb_frag:
            self._complete(dev, "status", now, out, nb_frag_received=cmd.nb_frag_received)
            return
        rnd = self._status_round(dev)
        prev = dev.report
        if prev is not None and prev["round"] == rnd and cmd.nb_frag_received < prev["nb_frag_received"]:
            self._event(dev, now, "ignored", command=cmd.command, why="older than the report kept")
            return
        dev.report = {
            "nb_frag_received": cmd.nb_frag_received,
            "missing_frag": cmd.missing_frag,
            "round": rnd,
            "at": now,
        }
        dev.unanswered_polls = 0
        if dev.phase is not Phase.RECEIVING:
            return
        # LoRaMac-node-like: enough received but MissingFrag never drops: ask TS006 early
        if (self._supports(dev, FPORT_FIRMWARE_MANAGEMENT) and not dev.confirming
                and cmd.nb_frag_received - cmd.missing_frag >= self._state.nb_frag
                and dev.upgrade_asked_round != rnd and "upgrade_image" not in dev.pending):
            dev.upgrade_asked_round = rnd
            self._request(dev, "upgrade_image", FPORT_FIRMWARE_MANAGEMENT, [DevUpgradeImageReq()], now, out)
            st = self._state
            if st.stage is Stage.POLLING and st.poll_until is not None:
                st.poll_until = self._poll_deadline(st.poll_until)

    def _on_data_block_received(self, dev: DeviceState, cmd: FragDataBlockReceivedReq, now: float,
                                out: list[Action]) -> None:
        if dev.lane is None or cmd.frag_index != self._lane(dev).frag_index:
            self._event(dev, now, "ignored", command=cmd.command, why="no such fragmentation session")
            return
        # acknowledge; the device repeats its request until it hears the answer, which may
        # still be queued behind other downlinks: answer again only after an answer timeout
        last = dev.block_ack_at
        if last is None or now >= last + self.config.timeouts.answer:
            dev.block_ack_at = now
            self._send(dev, "data_block_received_ans", FPORT_FRAGMENTATION,
                       [FragDataBlockReceivedAns(cmd.frag_index)], now, out)
        self._event(dev, now, "data_block_received", mic_error=cmd.mic_error)
        if cmd.mic_error:
            if dev.phase not in TERMINAL_PHASES and self._in_session(dev):
                self._fail(dev, Reason.MIC_ERROR, {"errors": ["mic_error"], "signal": "FragDataBlockReceivedReq"},
                           now, out)
            return
        self._complete(dev, "data_block_received", now, out)

    def _on_upgrade_image(self, dev: DeviceState, cmd: DevUpgradeImageAns, now: float, out: list[Action]) -> None:
        dev.pending.pop("upgrade_image", None)
        status = cmd.up_image_status
        expected = self.config.expected_fw_version
        self._event(dev, now, "upgrade_image", status=status.name, next_firmware_version=cmd.next_firmware_version)
        if status is UpImageStatus.VALID and (expected is None or cmd.next_firmware_version == expected):
            self._complete(dev, "upgrade_image_valid", now, out, next_firmware_version=cmd.next_firmware_version)
            return
        detail = {**dev.confirm_detail, "image_status": status.name}
        if status is UpImageStatus.VALID:
            detail["next_firmware_version"] = cmd.next_firmware_version
        # a whole block was received but is unusable: more fragments will not help
        if status is UpImageStatus.CORRUPT_OR_BAD_SIGNATURE and self._in_session(dev):
            self._fail(dev, Reason.IMAGE_CORRUPT, detail, now, out)
        elif status is UpImageStatus.WRONG_HARDWARE and self._in_session(dev):
            self._fail(dev, Reason.WRONG_HARDWARE, detail, now, out)
        elif not dev.confirming:
            if dev.lane is not None:
                dev.image_absent_round = len(self._lane(dev).rounds)
        elif dev.confirm_reason is not None:
            self._fail(dev, Reason(dev.confirm_reason), detail, now, out)
        else:
            # the planner thought it done, the device says not: back to the repair rounds
            dev.confirming = False
            dev.image_absent_round = len(self._lane(dev).rounds)

    def _on_reboot_ans(self, dev: DeviceState, cmd: DevRebootTimeAns | DevRebootCountdownAns, now: float,
                       rx_time: float, out: list[Action]) -> None:
        dev.pending.pop("reboot", None)
        value = cmd.reboot_time if isinstance(cmd, DevRebootTimeAns) else cmd.countdown
        self._event(dev, now, "reboot_answer", value=value)
        if cmd.error or cmd.cancelled:
            if dev.reboot_attempts <= self.config.timeouts.max_retries:
                self._send_reboot(dev, now, out)
            else:
                self._fail(dev, Reason.REBOOT_ERROR, {"answer": value, "attempts": dev.reboot_attempts}, now, out)
            return
        if isinstance(cmd, DevRebootTimeAns) and value >= GPS_TIME_THRESHOLD:
            reboot_at = float(value)  # some stacks answer the GPS time itself
        else:
            reboot_at = rx_time + value
        dev.reboot_at = reboot_at
        dev.verify_at = max(now, reboot_at) + self.config.timeouts.boot_margin

    def _on_version(self, dev: DeviceState, cmd: DevVersionAns, now: float, out: list[Action]) -> None:
        dev.pending.pop("version", None)
        dev.fw_version = cmd.fw_version
        expected = self.config.expected_fw_version
        detail = {"verified": True, "fw_version": cmd.fw_version, "hw_version": cmd.hw_version}
        if expected is None or cmd.fw_version == expected:
            self._succeed(dev, detail, now, out)
        else:
            self._fail(dev, Reason.WRONG_VERSION_AFTER_REBOOT, {**detail, "expected": expected}, now, out)
