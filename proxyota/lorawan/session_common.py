"""Constants and small helpers shared by the FUOTA session modules."""

from __future__ import annotations

import math
from typing import Any

from proxyota.errors import InvalidArgument
from proxyota.lorawan.applayer import (
    FPORT_CLOCK_SYNC,
    FPORT_FIRMWARE_MANAGEMENT,
    FPORT_FRAGMENTATION,
    FPORT_MULTICAST_SETUP,
)
from proxyota.lorawan.repair import GiveUp
from proxyota.lorawan.session_outcomes import Reason
from proxyota.lorawan.session_state import Phase

PORTS = (FPORT_MULTICAST_SETUP, FPORT_FRAGMENTATION, FPORT_CLOCK_SYNC, FPORT_FIRMWARE_MANAGEMENT)
REQUIRED_PORTS = (FPORT_MULTICAST_SETUP, FPORT_FRAGMENTATION)
PACKAGE_NAMES = {
    FPORT_MULTICAST_SETUP: "TS005 remote multicast setup",
    FPORT_FRAGMENTATION: "TS004 fragmented data block transport",
    FPORT_CLOCK_SYNC: "TS003 clock synchronization",
    FPORT_FIRMWARE_MANAGEMENT: "TS006 firmware management",
}
SETUP_PHASES = (Phase.PROBE, Phase.CLOCK_SYNC, Phase.MC_SETUP, Phase.FRAG_SETUP, Phase.SESSION_SETUP)
SESSION_PHASES = (Phase.SESSION_SETUP, Phase.READY, Phase.RECEIVING)
GIVE_UP_REASONS = {
    GiveUp.MISSING_FRAG: Reason.MISSING_FRAG,
    GiveUp.NO_ANSWER: Reason.NO_ANSWER,
    GiveUp.MEMORY_ERROR: Reason.MEMORY_ERROR,
    GiveUp.LOSS_TOO_HIGH: Reason.LOSS_TOO_HIGH,
    GiveUp.COUNTERS_EXHAUSTED: Reason.MISSING_FRAG,
}
GPS_TIME_THRESHOLD = 0x40000000  # a DevRebootTimeAns above this is read as a GPS time
MAX_TIMER_STEPS = 1_000_000


def finite(value: Any, name: str) -> float:
    """`value` as a float of GPS seconds (InvalidArgument unless a finite number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number of GPS seconds, got {value!r}")
    return float(value)
