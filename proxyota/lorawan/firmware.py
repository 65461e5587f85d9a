"""TS006 Firmware Management Protocol commands (fPort 203, PackageIdentifier 4), v1.0.0.

| CID  | uplink (end-device)    | downlink (application server) |
|------|------------------------|-------------------------------|
| 0x00 | PackageVersionAns      | PackageVersionReq             |
| 0x01 | DevVersionAns          | DevVersionReq                 |
| 0x02 | DevRebootTimeAns       | DevRebootTimeReq              |
| 0x03 | DevRebootCountdownAns  | DevRebootCountdownReq         |
| 0x04 | DevUpgradeImageAns     | DevUpgradeImageReq            |
| 0x05 | DevDeleteImageAns      | DevDeleteImageReq             |

Reboot conventions: a request of 0 reboots as soon as possible (no answer), all-ones
(0xFFFFFFFF / 0xFFFFFF) cancels a programmed reboot; in an answer 0 means "cannot reboot
at that time" and all-ones acknowledges a cancellation, other values are seconds to reboot.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import ClassVar

from proxyota.lorawan.codec import (
    FPORT_FIRMWARE_MANAGEMENT,
    PACKAGE_FIRMWARE_MANAGEMENT,
    U32,
    Command,
    FieldError,
    Package,
    PackageVersionAns,
    PackageVersionReq,
    Reader,
    check_bool,
    check_optional_uint,
    check_uint,
    le,
    require,
)


class UpImageStatus(enum.IntEnum):
    """DevUpgradeImageAns UpImageStatus (2 bits)."""

    NO_IMAGE = 0  # no firmware upgrade image present
    CORRUPT_OR_BAD_SIGNATURE = 1  # present but corrupted or its signature is wrong
    WRONG_HARDWARE = 2  # authenticated but for another hardware platform
    VALID = 3  # valid, installed at the next reboot


@dataclass(frozen=True)
class DevVersionReq(Command):
    """DevVersionReq (downlink): no payload."""

    CID = 0x01


@dataclass(frozen=True)
class DevVersionAns(Command):
    """DevVersionAns (uplink): FWversion u32 | HWversion u32 (manufacturer-defined)."""

    CID = 0x01
    fw_version: int
    hw_version: int

    def __post_init__(self) -> None:
        check_uint(self, "fw_version", self.fw_version, U32)
        check_uint(self, "hw_version", self.hw_version, U32)

    def _encode_payload(self) -> bytes:
        return le(self.fw_version, 4) + le(self.hw_version, 4)

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        return cls(r.u32("fw_version"), r.u32("hw_version"))


class _RebootValue(Command):
    """The four reboot commands: one little-endian unsigned field (``_FIELD``, ``_BYTES``
    wide) where 0 and all ones are the spec's sentinels."""

    _FIELD: ClassVar[str]
    _BYTES: ClassVar[int]

    @property
    def _value(self) -> int:
        return getattr(self, self._FIELD)

    @classmethod
    def _all_ones(cls) -> int:
        return (1 << (8 * cls._BYTES)) - 1

    def __post_init__(self) -> None:
        check_uint(self, self._FIELD, self._value, self._all_ones())

    def _encode_payload(self) -> bytes:
        return le(self._value, self._BYTES)

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        return cls(r.u32(cls._FIELD) if cls._BYTES == 4 else r.u24(cls._FIELD))


class _RebootRequest(_RebootValue):
    @property
    def reboot_now(self) -> bool:
        return self._value == 0

    @property
    def cancel(self) -> bool:
        return self._value == self._all_ones()


class _RebootAnswer(_RebootValue):
    @property
    def error(self) -> bool:
        return self._value == 0

    @property
    def cancelled(self) -> bool:
        return self._value == self._all_ones()


@dataclass(frozen=True)
class DevRebootTimeReq(_RebootRequest):
    """DevRebootTimeReq (downlink): RebootTime u32 (GPS s; 0 = now, 0xFFFFFFFF = cancel)."""

    CID = 0x02
    _FIELD = "reboot_time"
    _BYTES = 4
    reboot_time: int


@dataclass(frozen=True)
class DevRebootTimeAns(_RebootAnswer):
    """DevRebootTimeAns (uplink): RebootTime u32 = seconds until reboot
    (0 = cannot reboot at the requested time, 0xFFFFFFFF = cancellation acknowledged)."""

    CID = 0x02
    _FIELD = "reboot_time"
    _BYTES = 4
    reboot_time: int


@dataclass(frozen=True)
class DevRebootCountdownReq(_RebootRequest):
    """DevRebootCountdownReq (downlink): Countdown u24 s (0 = now, 0xFFFFFF = cancel)."""

    CID = 0x03
    _FIELD = "countdown"
    _BYTES = 3
    countdown: int


@dataclass(frozen=True)
class DevRebootCountdownAns(_RebootAnswer):
    """DevRebootCountdownAns (uplink): Countdown u24 = seconds until reboot
    (0 = cannot reboot, 0xFFFFFF = cancellation acknowledged)."""

    CID = 0x03
    _FIELD = "countdown"
    _BYTES = 3
    countdown: int


@dataclass(frozen=True)
class DevUpgradeImageReq(Command):
    """DevUpgradeImageReq (downlink): no payload."""

    CID = 0x04


@dataclass(frozen=True)
class DevUpgradeImageAns(Command):
    """DevUpgradeImageAns (uplink): Status (b7:2 RFU, b1:0 UpImageStatus) |
    nextFirmwareVersion u32, present only when UpImageStatus = 3 (VALID)."""

    CID = 0x04
    up_image_status: UpImageStatus = dataclasses.field(metadata={"json": "enum"})
    next_firmware_version: int | None = None

    def __post_init__(self) -> None:
        status = self.up_image_status
        if isinstance(status, bool) or not isinstance(status, int) or status not in tuple(UpImageStatus):
            raise FieldError(type(self).__name__, "up_image_status", f"must be an UpImageStatus (0..3), got {status!r}")
        object.__setattr__(self, "up_image_status", UpImageStatus(status))
        check_optional_uint(self, "next_firmware_version", self.next_firmware_version, U32)
        if self.up_image_status is UpImageStatus.VALID:
            require(self, "next_firmware_version", self.next_firmware_version is not None,
                    "is required when up_image_status is VALID")
        else:
            require(self, "next_firmware_version", self.next_firmware_version is None,
                    "must be None unless up_image_status is VALID")

    def _encode_payload(self) -> bytes:
        out = bytes((int(self.up_image_status),))
        if self.next_firmware_version is not None:
            out += le(self.next_firmware_version, 4)
        return out

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        status = UpImageStatus(r.u8("up_image_status", rfu=0xFC, label="Status") & 0x03)
        nxt = r.u32("next_firmware_version") if status is UpImageStatus.VALID else None
        return cls(status, nxt)


@dataclass(frozen=True)
class DevDeleteImageReq(Command):
    """DevDeleteImageReq (downlink): FirmwareToDeleteVersion u32."""

    CID = 0x05
    firmware_to_delete_version: int

    def __post_init__(self) -> None:
        check_uint(self, "firmware_to_delete_version", self.firmware_to_delete_version, U32)

    def _encode_payload(self) -> bytes:
        return le(self.firmware_to_delete_version, 4)

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        return cls(r.u32("firmware_to_delete_version"))


@dataclass(frozen=True)
class DevDeleteImageAns(Command):
    """DevDeleteImageAns (uplink): Status (b7:2 RFU, b1 ErrorInvalidVersion, b0 ErrorNoValidImage)."""

    CID = 0x05
    error_no_valid_image: bool = False
    error_invalid_version: bool = False

    def __post_init__(self) -> None:
        check_bool(self, "error_no_valid_image", self.error_no_valid_image)
        check_bool(self, "error_invalid_version", self.error_invalid_version)

    @property
    def deleted(self) -> bool:
        return not (self.error_no_valid_image or self.error_invalid_version)

    def _encode_payload(self) -> bytes:
        return bytes(((1 if self.error_no_valid_image else 0) | (2 if self.error_invalid_version else 0),))

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        b = r.u8("error_no_valid_image", "error_invalid_version", rfu=0xFC, label="Status")
        return cls(bool(b & 1), bool(b & 2))


_UP = {0x00: PackageVersionAns, 0x01: DevVersionAns, 0x02: DevRebootTimeAns, 0x03: DevRebootCountdownAns,
       0x04: DevUpgradeImageAns, 0x05: DevDeleteImageAns}
_DOWN = {0x00: PackageVersionReq, 0x01: DevVersionReq, 0x02: DevRebootTimeReq, 0x03: DevRebootCountdownReq,
         0x04: DevUpgradeImageReq, 0x05: DevDeleteImageReq}

FIRMWARE_MANAGEMENT = Package(
    name="FirmwareManagement",
    identifier=PACKAGE_FIRMWARE_MANAGEMENT,
    fport=FPORT_FIRMWARE_MANAGEMENT,
    versions=(1,),
    uplink={1: _UP},
    downlink={1: _DOWN},
)
