"""TS003 Application Layer Clock Synchronization (fPort 202, PackageIdentifier 1), v1.0.0 and v2.0.0.

| CID  | uplink (end-device)            | downlink (application server)                   |
|------|--------------------------------|-------------------------------------------------|
| 0x00 | PackageVersionAns              | PackageVersionReq                               |
| 0x01 | AppTimeReq                     | AppTimeAns                                      |
| 0x02 | DeviceAppTimePeriodicityAns    | DeviceAppTimePeriodicityReq                     |
| 0x03 | —                              | ForceDeviceResyncReq (v1) / ForceDeviceResyncCmd (v2) |

The byte layouts are identical in v1 and v2; v2 renames ForceDeviceResyncReq and defines
the saturated TimeCorrection convention (0x7FFFFFFF / 0x80000000: "ask again").
Times are GPS seconds modulo 2^32.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxyota.lorawan.codec import (
    FPORT_CLOCK_SYNC,
    PACKAGE_CLOCK_SYNC,
    U32,
    Command,
    Package,
    PackageVersionAns,
    PackageVersionReq,
    Reader,
    check_bool,
    check_uint,
    le,
)

TIME_CORRECTION_MAX = 0x7FFFFFFF
TIME_CORRECTION_MIN = -0x80000000


def clamp_time_correction(seconds: int) -> int:
    """The TimeCorrection to send for a clock error of ``seconds`` (saturated to i32, v2 rule)."""
    return max(TIME_CORRECTION_MIN, min(TIME_CORRECTION_MAX, int(seconds)))


@dataclass(frozen=True)
class AppTimeReq(Command):
    """AppTimeReq (uplink): DeviceTime u32 | Param (b7:5 RFU, b4 AnsRequired, b3:0 TokenReq)."""

    CID = 0x01
    device_time: int
    token_req: int
    ans_required: bool = False

    def __post_init__(self) -> None:
        check_uint(self, "device_time", self.device_time, U32)
        check_uint(self, "token_req", self.token_req, 0x0F)
        check_bool(self, "ans_required", self.ans_required)

    def _encode_payload(self) -> bytes:
        return le(self.device_time, 4) + bytes((self.token_req | (0x10 if self.ans_required else 0),))

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        device_time = r.u32("device_time")
        param = r.u8("ans_required", "token_req", rfu=0xE0, label="Param")
        return cls(device_time, param & 0x0F, bool(param & 0x10))


@dataclass(frozen=True)
class AppTimeAns(Command):
    """AppTimeAns (downlink): TimeCorrection i32 | Param (b7:4 RFU, b3:0 TokenAns)."""

    CID = 0x01
    time_correction: int
    token_ans: int

    def __post_init__(self) -> None:
        check_uint(self, "time_correction", self.time_correction, TIME_CORRECTION_MAX, TIME_CORRECTION_MIN)
        check_uint(self, "token_ans", self.token_ans, 0x0F)

    @property
    def saturated(self) -> bool:
        """v2: the correction did not fit; the device applies it and asks again."""
        return self.time_correction in (TIME_CORRECTION_MAX, TIME_CORRECTION_MIN)

    def _encode_payload(self) -> bytes:
        return le(self.time_correction, 4, signed=True) + bytes((self.token_ans,))

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        correction = r.i32("time_correction")
        return cls(correction, r.u8("token_ans", rfu=0xF0, label="Param"))


@dataclass(frozen=True)
class DeviceAppTimePeriodicityReq(Command):
    """DeviceAppTimePeriodicityReq (downlink): b7:4 RFU, b3:0 Period (128·2^Period s ± 30 s)."""

    CID = 0x02
    period: int

    def __post_init__(self) -> None:
        check_uint(self, "period", self.period, 0x0F)

    @property
    def periodicity_seconds(self) -> int:
        return 128 << self.period

    def _encode_payload(self) -> bytes:
        return bytes((self.period,))

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        return cls(r.u8("period", rfu=0xF0))


@dataclass(frozen=True)
class DeviceAppTimePeriodicityAns(Command):
    """DeviceAppTimePeriodicityAns (uplink): Status (b7:1 RFU, b0 NotSupported) | DeviceTime u32.

    v1.0.0 calls the time field ``Time``; it is the same DeviceTime as in AppTimeReq.
    """

    CID = 0x02
    JSON_ALIASES = {"time": "device_time"}
    not_supported: bool
    device_time: int

    def __post_init__(self) -> None:
        check_bool(self, "not_supported", self.not_supported)
        check_uint(self, "device_time", self.device_time, U32)

    def _encode_payload(self) -> bytes:
        return bytes((1 if self.not_supported else 0,)) + le(self.device_time, 4)

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        status = r.u8("not_supported", rfu=0xFE, label="Status")
        return cls(bool(status & 1), r.u32("device_time"))


@dataclass(frozen=True)
class ForceDeviceResyncReq(Command):
    """ForceDeviceResyncReq (v1, downlink): ForceConf (b7:3 RFU, b2:0 NbTransmissions); no answer."""

    CID = 0x03
    nb_transmissions: int

    def __post_init__(self) -> None:
        check_uint(self, "nb_transmissions", self.nb_transmissions, 7)

    def _encode_payload(self) -> bytes:
        return bytes((self.nb_transmissions,))

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        return cls(r.u8("nb_transmissions", rfu=0xF8, label="ForceConf"))


@dataclass(frozen=True)
class ForceDeviceResyncCmd(ForceDeviceResyncReq):
    """ForceDeviceResyncCmd: the v2.0.0 name of ForceDeviceResyncReq (same layout)."""


_UP = {0x00: PackageVersionAns, 0x01: AppTimeReq, 0x02: DeviceAppTimePeriodicityAns}
_DOWN = {0x00: PackageVersionReq, 0x01: AppTimeAns, 0x02: DeviceAppTimePeriodicityReq}

CLOCK_SYNC = Package(
    name="ClockSync",
    identifier=PACKAGE_CLOCK_SYNC,
    fport=FPORT_CLOCK_SYNC,
    versions=(1, 2),
    uplink={1: _UP, 2: _UP},
    downlink={
        1: {**_DOWN, 0x03: ForceDeviceResyncReq},
        2: {**_DOWN, 0x03: ForceDeviceResyncCmd},
    },
)
