"""Per-device outcome of a LoRaWAN FUOTA campaign session: why a device ended as it did.

Every device of a :class:`~proxyota.lorawan.session.FuotaSession` ends ``successful`` or
with exactly one failure :class:`Reason`; :class:`Outcome` adds a ``detail`` mapping of
plain (JSON) values: the phase the device was in, every error bit the device reported,
whether the new firmware was verified (TS006), the completion signal, and so on.

Reasons named after a device's error bit use the spec's bit names (TS004
FragSessionSetupAns, TS005 McClassCSessionAns, TS004 v2 FragSessionStatusAns); the others
say which step gave up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping

__all__ = ["Outcome", "Reason", "FRAG_SETUP_ERROR_REASONS", "SESSION_ERROR_REASONS"]


class Reason(StrEnum):
    """Why a device ended (``SUCCESSFUL`` or a failure)."""

    SUCCESSFUL = "successful"
    # PackageVersion probe
    PACKAGE_NOT_SUPPORTED = "package_not_supported"  # no (usable) TS004 or TS005 package
    # FragSessionSetupAns error bits (TS004)
    FRAG_ALGO_UNSUPPORTED = "frag_algo_unsupported"  # v1 EncodingUnsupported
    NOT_ENOUGH_MEMORY = "not_enough_memory"  # setup NotEnoughMemory / v1 NotEnoughMatrixMemory
    FRAG_INDEX_UNSUPPORTED = "frag_index_unsupported"
    WRONG_DESCRIPTOR = "wrong_descriptor"
    SESSION_CNT_REPLAY = "session_cnt_replay"  # v2
    # McGroupSetupAns / McClassC|BSessionAns error bits (TS005)
    MC_GROUP_ID_ERROR = "mc_group_id_error"
    MC_GROUP_UNDEFINED = "mc_group_undefined"
    FREQ_ERROR = "freq_error"
    DR_ERROR = "dr_error"
    START_MISSED = "start_missed"  # v2, and no clock resync possible
    CLOCK_SYNC_FAILED = "clock_sync_failed"  # TimeToStart kept disagreeing with our clock
    # fragment transport
    MISSING_FRAG = "missing_frag"  # still incomplete when the repair rounds ran out
    LOSS_TOO_HIGH = "loss_too_high"  # the repair planner gave up on the link
    MEMORY_ERROR = "memory_error"  # v2 FragSessionStatusAns MemoryError
    MIC_ERROR = "mic_error"  # v2 MICError (status or FragDataBlockReceivedReq)
    SESSION_DOES_NOT_EXIST = "session_does_not_exist"  # v2 status: the device lost the session
    # TS006
    IMAGE_CORRUPT = "image_corrupt"  # DevUpgradeImageAns: corrupt or bad signature
    WRONG_HARDWARE = "wrong_hardware"  # DevUpgradeImageAns: image for another platform
    REBOOT_ERROR = "reboot_error"  # DevReboot*Ans kept answering 0 (cannot reboot)
    WRONG_VERSION_AFTER_REBOOT = "wrong_version_after_reboot"
    # anything
    NO_ANSWER = "no_answer"  # a required request was never answered (retries exhausted)
    CANCELLED = "cancelled"  # the campaign was cancelled by the caller


FRAG_SETUP_ERROR_REASONS: tuple[tuple[str, Reason], ...] = (
    ("frag_algo_unsupported", Reason.FRAG_ALGO_UNSUPPORTED),
    ("not_enough_memory", Reason.NOT_ENOUGH_MEMORY),
    ("frag_index_unsupported", Reason.FRAG_INDEX_UNSUPPORTED),
    ("wrong_descriptor", Reason.WRONG_DESCRIPTOR),
    ("session_cnt_replay", Reason.SESSION_CNT_REPLAY),
)
"""FragSessionSetupAns flag -> reason, in the order a multi-bit answer is judged by."""

SESSION_ERROR_REASONS: tuple[tuple[str, Reason], ...] = (
    ("mc_group_undefined", Reason.MC_GROUP_UNDEFINED),
    ("freq_error", Reason.FREQ_ERROR),
    ("dr_error", Reason.DR_ERROR),
    ("start_missed", Reason.START_MISSED),
)
"""McClassCSessionAns / McClassBSessionAns flag -> reason, in judging order."""


@dataclass(frozen=True)
class Outcome:
    """The end of one device: ``reason`` and a mapping of plain values explaining it."""

    reason: Reason
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def successful(self) -> bool:
        return self.reason is Reason.SUCCESSFUL

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason.value, "detail": dict(self.detail)}
