"""Codec of the ZCL OTA Upgrade cluster (0x0019) command payloads.

Payloads only: the 3-byte ZCL header (frame control, TSN, command id; 5 bytes with a
manufacturer code) belongs to the adapter. Every command is a frozen dataclass with
``to_bytes()`` and ``from_bytes(payload)``; :func:`decode_request` / :func:`decode_response`
dispatch on the command id. All integers are little-endian; EUI64 addresses are ints whose
little-endian 8 bytes are the air format (``eui64_str`` prints them the zigpy way).

Client -> server: QueryNextImageRequest (0x01), ImageBlockRequest (0x03), ImagePageRequest
(0x04), UpgradeEndRequest (0x06), QuerySpecificFileRequest (0x08). Server -> client:
ImageNotify (0x00), QueryNextImageResponse (0x02), ImageBlockResponse (0x05),
UpgradeEndResponse (0x07), QuerySpecificFileResponse (0x09); plus the ZCL Default Response
(global command 0x0B).

Leniency, documented:

* ImageBlockResponse WAIT_FOR_DATA comes in two layouts: ``current_time, request_time`` (9
  bytes with the status; Silicon Labs servers built without MIN_BLOCK_REQUEST support,
  older revisions) and ``current_time, request_time, minimum_block_period`` (11 bytes; the
  current specification, and what zigpy's schema always expects). Both are decoded
  (``minimum_block_period`` is None in the short one); 10 bytes is a truncated field.
* UpgradeEndRequest with a failure status may carry the status alone (the Silicon Labs
  server reads the image id only on SUCCESS); SUCCESS needs the image id.
* Octets after the last field are ignored (the ZCL rule that lets later revisions append
  fields); a field cut short is a :class:`~proxyota.errors.DecodeError`.
* Status bytes are kept as ints; :class:`Status` names the ZCL values.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from proxyota.clock import gps_to_unix
from proxyota.errors import DecodeError, InvalidArgument

__all__ = [
    "CLUSTER_ID",
    "DEFAULT_RESPONSE_COMMAND_ID",
    "IMAGE_BLOCK_RESPONSE_OVERHEAD",
    "UPGRADE_TIME_WAIT_FOR_COMMAND",
    "ZCL_EPOCH_UNIX",
    "ZCL_HEADER_SIZE",
    "ZCL_HEADER_SIZE_MANUFACTURER",
    "CommandId",
    "DefaultResponse",
    "ImageBlockRequest",
    "ImageBlockResponse",
    "ImageNotify",
    "ImagePageRequest",
    "QueryNextImageRequest",
    "QueryNextImageResponse",
    "QuerySpecificFileRequest",
    "QuerySpecificFileResponse",
    "Status",
    "UnknownCommand",
    "UpgradeEndRequest",
    "UpgradeEndResponse",
    "decode_request",
    "decode_response",
    "eui64_from_str",
    "eui64_str",
    "max_block_data_size",
    "status_name",
    "zcl_utc_time",
]

CLUSTER_ID = 0x0019
#: ZCL global command "Default Response".
DEFAULT_RESPONSE_COMMAND_ID = 0x0B
#: frame control + TSN + command id; two more with a manufacturer code.
ZCL_HEADER_SIZE = 3
ZCL_HEADER_SIZE_MANUFACTURER = 5
#: ImageBlockResponse bytes besides the data: status 1, manufacturer 2, image type 2,
#: file version 4, file offset 4, data length 1.
IMAGE_BLOCK_RESPONSE_OVERHEAD = 14
#: UpgradeEndResponse upgrade_time meaning "wait for a later upgrade command".
UPGRADE_TIME_WAIT_FOR_COMMAND = 0xFFFFFFFF
#: ZCL UTCTime counts seconds since 2000-01-01T00:00:00Z.
ZCL_EPOCH_UNIX = 946_684_800
#: Query jitter range of ImageNotify (ZCL: 1..100; 100 makes every client answer).
QUERY_JITTER_MAX = 100

FC_HARDWARE_VERSION = 0x01  # QueryNextImageRequest
FC_REQUEST_NODE_ADDR = 0x01  # ImageBlockRequest, ImagePageRequest
FC_MINIMUM_BLOCK_PERIOD = 0x02  # ImageBlockRequest


class CommandId(enum.IntEnum):
    """OTA Upgrade cluster-specific command identifiers."""

    IMAGE_NOTIFY = 0x00
    QUERY_NEXT_IMAGE_REQUEST = 0x01
    QUERY_NEXT_IMAGE_RESPONSE = 0x02
    IMAGE_BLOCK_REQUEST = 0x03
    IMAGE_PAGE_REQUEST = 0x04
    IMAGE_BLOCK_RESPONSE = 0x05
    UPGRADE_END_REQUEST = 0x06
    UPGRADE_END_RESPONSE = 0x07
    QUERY_SPECIFIC_FILE_REQUEST = 0x08
    QUERY_SPECIFIC_FILE_RESPONSE = 0x09


class Status(enum.IntEnum):
    """ZCL status codes (ZCL specification, table "Enumerated Status Values")."""

    SUCCESS = 0x00
    FAILURE = 0x01
    NOT_AUTHORIZED = 0x7E
    RESERVED_FIELD_NOT_ZERO = 0x7F
    MALFORMED_COMMAND = 0x80
    UNSUP_CLUSTER_COMMAND = 0x81
    UNSUP_GENERAL_COMMAND = 0x82
    UNSUP_MANUF_CLUSTER_COMMAND = 0x83
    UNSUP_MANUF_GENERAL_COMMAND = 0x84
    INVALID_FIELD = 0x85
    UNSUPPORTED_ATTRIBUTE = 0x86
    INVALID_VALUE = 0x87
    READ_ONLY = 0x88
    INSUFFICIENT_SPACE = 0x89
    DUPLICATE_EXISTS = 0x8A
    NOT_FOUND = 0x8B
    UNREPORTABLE_ATTRIBUTE = 0x8C
    INVALID_DATA_TYPE = 0x8D
    INVALID_SELECTOR = 0x8E
    WRITE_ONLY = 0x8F
    INCONSISTENT_STARTUP_STATE = 0x90
    DEFINED_OUT_OF_BAND = 0x91
    INCONSISTENT = 0x92
    ACTION_DENIED = 0x93
    TIMEOUT = 0x94
    ABORT = 0x95
    INVALID_IMAGE = 0x96
    WAIT_FOR_DATA = 0x97
    NO_IMAGE_AVAILABLE = 0x98
    REQUIRE_MORE_IMAGE = 0x99
    NOTIFICATION_PENDING = 0x9A
    HARDWARE_FAILURE = 0xC0
    SOFTWARE_FAILURE = 0xC1
    CALIBRATION_ERROR = 0xC2
    UNSUPPORTED_CLUSTER = 0xC3


def status_name(status: int) -> str:
    """``"ABORT"`` for 0x95; ``"0x42"`` for values without a name."""
    try:
        return Status(status).name
    except ValueError:
        return f"0x{status:02X}"


class UnknownCommand(DecodeError):
    """The command id is not one this direction of the OTA cluster defines."""


# -- helpers ---------------------------------------------------------------------------


def zcl_utc_time(gps_seconds: float) -> int:
    """ZCL UTCTime (whole seconds since 2000-01-01 UTC) of a GPS time (the project clock).

    Rounded up, so a "come back at" time is never earlier than meant; clamped to
    0..0xFFFFFFFE (0xFFFFFFFF is reserved as "invalid / wait").
    """
    if not math.isfinite(gps_seconds):
        raise InvalidArgument(f"time must be finite, got {gps_seconds!r}")
    value = math.ceil(gps_to_unix(gps_seconds) - ZCL_EPOCH_UNIX - 1e-9)
    return min(max(value, 0), 0xFFFFFFFE)


def eui64_str(value: int) -> str:
    """``0x0706050403020100`` -> ``"07:06:05:04:03:02:01:00"`` (zigpy's EUI64 text)."""
    _check_uint("EUI64", value, 64)
    text = f"{value:016x}"
    return ":".join(text[i : i + 2] for i in range(0, 16, 2))


def eui64_from_str(text: str) -> int:
    """Inverse of :func:`eui64_str` (colons optional)."""
    if not isinstance(text, str):
        raise InvalidArgument(f"EUI64 must be text, got {type(text).__name__}")
    digits = text.replace(":", "").replace("-", "")
    if len(digits) != 16:
        raise InvalidArgument(f"EUI64 {text!r} must have 16 hex digits")
    try:
        return int(digits, 16)
    except ValueError:
        raise InvalidArgument(f"EUI64 {text!r} is not hexadecimal") from None


def max_block_data_size(aps_max_payload: int, *, manufacturer_specific: bool = False) -> int:
    """Largest image_data an ImageBlockResponse can carry in one APS payload."""
    header = ZCL_HEADER_SIZE_MANUFACTURER if manufacturer_specific else ZCL_HEADER_SIZE
    return min(aps_max_payload - header - IMAGE_BLOCK_RESPONSE_OVERHEAD, 0xFF)


def _check_uint(name: str, value: Any, bits: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise InvalidArgument(f"{name} must be an unsigned {bits}-bit integer, got {value!r}")


def _check_optional(obj: Any, names: tuple[str, ...], bits: tuple[int, ...]) -> None:
    for name, size in zip(names, bits):
        value = getattr(obj, name)
        if value is not None:
            _check_uint(name, value, size)


class _Reader:
    """Bounds-checked little-endian reads raising DecodeError that names the field."""

    def __init__(self, data: Any, command: str) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"{command} payload must be bytes, got {type(data).__name__}")
        self.data = bytes(data)
        self.pos = 0
        self.command = command

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int, field_name: str) -> bytes:
        if size > self.left:
            raise DecodeError(
                f"truncated: {field_name} needs {size} bytes, {self.left} left",
                command=self.command,
                offset=self.pos,
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u8(self, field_name: str) -> int:
        return self.take(1, field_name)[0]

    def u16(self, field_name: str) -> int:
        return int.from_bytes(self.take(2, field_name), "little")

    def u32(self, field_name: str) -> int:
        return int.from_bytes(self.take(4, field_name), "little")

    def u64(self, field_name: str) -> int:
        return int.from_bytes(self.take(8, field_name), "little")


class _Command:
    """Shared bits of the command dataclasses."""

    command_id: ClassVar[int]
    name: ClassVar[str]

    def to_bytes(self) -> bytes:  # pragma: no cover - every command overrides it
        raise NotImplementedError

    @classmethod
    def from_bytes(cls, payload: bytes) -> Any:  # pragma: no cover
        raise NotImplementedError

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _image_id(reader: _Reader) -> tuple[int, int, int]:
    return reader.u16("manufacturer_code"), reader.u16("image_type"), reader.u32("file_version")


# -- client -> server ----------------------------------------------------------------


@dataclass(frozen=True)
class QueryNextImageRequest(_Command):
    """0x01: the client asks whether a newer image is available for it."""

    command_id: ClassVar[int] = CommandId.QUERY_NEXT_IMAGE_REQUEST
    name: ClassVar[str] = "QueryNextImageRequest"

    manufacturer_code: int
    image_type: int
    current_file_version: int
    hardware_version: int | None = None
    field_control_reserved: int = 0  # bits 1-7 as received (kept for a byte-exact round trip)

    def __post_init__(self) -> None:
        _check_uint("manufacturer_code", self.manufacturer_code, 16)
        _check_uint("image_type", self.image_type, 16)
        _check_uint("current_file_version", self.current_file_version, 32)
        _check_optional(self, ("hardware_version",), (16,))
        _check_uint("field_control_reserved", self.field_control_reserved, 8)
        if self.field_control_reserved & FC_HARDWARE_VERSION:
            raise InvalidArgument("field_control_reserved must not set bit 0 (hardware version present)")

    @property
    def field_control(self) -> int:
        return self.field_control_reserved | (FC_HARDWARE_VERSION if self.hardware_version is not None else 0)

    def to_bytes(self) -> bytes:
        out = struct.pack(
            "<BHHI", self.field_control, self.manufacturer_code, self.image_type, self.current_file_version
        )
        if self.hardware_version is not None:
            out += struct.pack("<H", self.hardware_version)
        return out

    @classmethod
    def from_bytes(cls, payload: bytes) -> QueryNextImageRequest:
        r = _Reader(payload, cls.name)
        fc = r.u8("field_control")
        mfr, itype, version = r.u16("manufacturer_code"), r.u16("image_type"), r.u32("current_file_version")
        hw = r.u16("hardware_version") if fc & FC_HARDWARE_VERSION else None
        return cls(mfr, itype, version, hw, field_control_reserved=fc & ~FC_HARDWARE_VERSION & 0xFF)


@dataclass(frozen=True)
class ImageBlockRequest(_Command):
    """0x03: the client asks for ``maximum_data_size`` bytes at ``file_offset``."""

    command_id: ClassVar[int] = CommandId.IMAGE_BLOCK_REQUEST
    name: ClassVar[str] = "ImageBlockRequest"

    manufacturer_code: int
    image_type: int
    file_version: int
    file_offset: int
    maximum_data_size: int
    request_node_addr: int | None = None
    minimum_block_period: int | None = None
    field_control_reserved: int = 0

    def __post_init__(self) -> None:
        _check_uint("manufacturer_code", self.manufacturer_code, 16)
        _check_uint("image_type", self.image_type, 16)
        _check_uint("file_version", self.file_version, 32)
        _check_uint("file_offset", self.file_offset, 32)
        _check_uint("maximum_data_size", self.maximum_data_size, 8)
        _check_optional(self, ("request_node_addr", "minimum_block_period"), (64, 16))
        _check_uint("field_control_reserved", self.field_control_reserved, 8)
        if self.field_control_reserved & (FC_REQUEST_NODE_ADDR | FC_MINIMUM_BLOCK_PERIOD):
            raise InvalidArgument("field_control_reserved must not set bits 0-1 (they follow from the fields)")

    @property
    def field_control(self) -> int:
        fc = self.field_control_reserved
        if self.request_node_addr is not None:
            fc |= FC_REQUEST_NODE_ADDR
        if self.minimum_block_period is not None:
            fc |= FC_MINIMUM_BLOCK_PERIOD
        return fc

    def to_bytes(self) -> bytes:
        out = struct.pack(
            "<BHHIIB",
            self.field_control,
            self.manufacturer_code,
            self.image_type,
            self.file_version,
            self.file_offset,
            self.maximum_data_size,
        )
        if self.request_node_addr is not None:
            out += self.request_node_addr.to_bytes(8, "little")
        if self.minimum_block_period is not None:
            out += struct.pack("<H", self.minimum_block_period)
        return out

    @classmethod
    def from_bytes(cls, payload: bytes) -> ImageBlockRequest:
        r = _Reader(payload, cls.name)
        fc = r.u8("field_control")
        mfr, itype, version = _image_id(r)
        offset, size = r.u32("file_offset"), r.u8("maximum_data_size")
        addr = r.u64("request_node_addr") if fc & FC_REQUEST_NODE_ADDR else None
        period = r.u16("minimum_block_period") if fc & FC_MINIMUM_BLOCK_PERIOD else None
        reserved = fc & ~(FC_REQUEST_NODE_ADDR | FC_MINIMUM_BLOCK_PERIOD) & 0xFF
        return cls(mfr, itype, version, offset, size, addr, period, field_control_reserved=reserved)


@dataclass(frozen=True)
class ImagePageRequest(_Command):
    """0x04: the client asks for ``page_size`` bytes from ``file_offset``, sent as a train
    of ImageBlockResponses ``response_spacing`` milliseconds apart."""

    command_id: ClassVar[int] = CommandId.IMAGE_PAGE_REQUEST
    name: ClassVar[str] = "ImagePageRequest"

    manufacturer_code: int
    image_type: int
    file_version: int
    file_offset: int
    maximum_data_size: int
    page_size: int
    response_spacing: int
    request_node_addr: int | None = None
    field_control_reserved: int = 0

    def __post_init__(self) -> None:
        _check_uint("manufacturer_code", self.manufacturer_code, 16)
        _check_uint("image_type", self.image_type, 16)
        _check_uint("file_version", self.file_version, 32)
        _check_uint("file_offset", self.file_offset, 32)
        _check_uint("maximum_data_size", self.maximum_data_size, 8)
        _check_uint("page_size", self.page_size, 16)
        _check_uint("response_spacing", self.response_spacing, 16)
        _check_optional(self, ("request_node_addr",), (64,))
        _check_uint("field_control_reserved", self.field_control_reserved, 8)
        if self.field_control_reserved & FC_REQUEST_NODE_ADDR:
            raise InvalidArgument("field_control_reserved must not set bit 0 (request node address present)")

    @property
    def field_control(self) -> int:
        return self.field_control_reserved | (FC_REQUEST_NODE_ADDR if self.request_node_addr is not None else 0)

    def to_bytes(self) -> bytes:
        out = struct.pack(
            "<BHHIIBHH",
            self.field_control,
            self.manufacturer_code,
            self.image_type,
            self.file_version,
            self.file_offset,
            self.maximum_data_size,
            self.page_size,
            self.response_spacing,
        )
        if self.request_node_addr is not None:
            out += self.request_node_addr.to_bytes(8, "little")
        return out

    @classmethod
    def from_bytes(cls, payload: bytes) -> ImagePageRequest:
        r = _Reader(payload, cls.name)
        fc = r.u8("field_control")
        mfr, itype, version = _image_id(r)
        offset, size = r.u32("file_offset"), r.u8("maximum_data_size")
        page, spacing = r.u16("page_size"), r.u16("response_spacing")
        addr = r.u64("request_node_addr") if fc & FC_REQUEST_NODE_ADDR else None
        reserved = fc & ~FC_REQUEST_NODE_ADDR & 0xFF
        return cls(mfr, itype, version, offset, size, page, spacing, addr, field_control_reserved=reserved)


@dataclass(frozen=True)
class UpgradeEndRequest(_Command):
    """0x06: the client reports the end of a download (SUCCESS, INVALID_IMAGE,
    REQUIRE_MORE_IMAGE or ABORT). The image id may be absent on a failure status."""

    command_id: ClassVar[int] = CommandId.UPGRADE_END_REQUEST
    name: ClassVar[str] = "UpgradeEndRequest"

    status: int
    manufacturer_code: int | None = None
    image_type: int | None = None
    file_version: int | None = None

    def __post_init__(self) -> None:
        _check_uint("status", self.status, 8)
        _check_optional(self, ("manufacturer_code", "image_type", "file_version"), (16, 16, 32))
        present = [v is not None for v in (self.manufacturer_code, self.image_type, self.file_version)]
        if any(present) and not all(present):
            raise InvalidArgument("manufacturer_code, image_type and file_version go together")
        if self.status == Status.SUCCESS and not all(present):
            raise InvalidArgument("UpgradeEndRequest with SUCCESS needs the image id")

    @property
    def has_image_id(self) -> bool:
        return self.file_version is not None

    def to_bytes(self) -> bytes:
        out = bytes([self.status])
        if self.has_image_id:
            out += struct.pack("<HHI", self.manufacturer_code, self.image_type, self.file_version)
        return out

    @classmethod
    def from_bytes(cls, payload: bytes) -> UpgradeEndRequest:
        r = _Reader(payload, cls.name)
        status = r.u8("status")
        if status != Status.SUCCESS and r.left < 8:  # status alone (any shorter rest ignored)
            return cls(status)
        return cls(status, *_image_id(r))


@dataclass(frozen=True)
class QuerySpecificFileRequest(_Command):
    """0x08: the client asks for one specific file (e.g. a log or configuration file)."""

    command_id: ClassVar[int] = CommandId.QUERY_SPECIFIC_FILE_REQUEST
    name: ClassVar[str] = "QuerySpecificFileRequest"

    request_node_addr: int
    manufacturer_code: int
    image_type: int
    file_version: int
    current_zigbee_stack_version: int

    def __post_init__(self) -> None:
        _check_uint("request_node_addr", self.request_node_addr, 64)
        _check_uint("manufacturer_code", self.manufacturer_code, 16)
        _check_uint("image_type", self.image_type, 16)
        _check_uint("file_version", self.file_version, 32)
        _check_uint("current_zigbee_stack_version", self.current_zigbee_stack_version, 16)

    def to_bytes(self) -> bytes:
        return self.request_node_addr.to_bytes(8, "little") + struct.pack(
            "<HHIH", self.manufacturer_code, self.image_type, self.file_version, self.current_zigbee_stack_version
        )

    @classmethod
    def from_bytes(cls, payload: bytes) -> QuerySpecificFileRequest:
        r = _Reader(payload, cls.name)
        addr = r.u64("request_node_addr")
        mfr, itype, version = _image_id(r)
        return cls(addr, mfr, itype, version, r.u16("current_zigbee_stack_version"))


# -- server -> client ----------------------------------------------------------------


@dataclass(frozen=True)
class ImageNotify(_Command):
    """0x00: the server tells clients an image is available. ``payload_type`` 0: jitter
    only; 1: + manufacturer_code; 2: + image_type; 3: + new_file_version."""

    command_id: ClassVar[int] = CommandId.IMAGE_NOTIFY
    name: ClassVar[str] = "ImageNotify"

    payload_type: int
    query_jitter: int
    manufacturer_code: int | None = None
    image_type: int | None = None
    new_file_version: int | None = None

    def __post_init__(self) -> None:
        if self.payload_type not in (0, 1, 2, 3):
            raise InvalidArgument(f"payload_type must be 0..3, got {self.payload_type!r}")
        _check_uint("query_jitter", self.query_jitter, 8)
        _check_optional(self, ("manufacturer_code", "image_type", "new_file_version"), (16, 16, 32))
        for level, name in ((1, "manufacturer_code"), (2, "image_type"), (3, "new_file_version")):
            if (getattr(self, name) is not None) != (self.payload_type >= level):
                raise InvalidArgument(
                    f"{name} is {'required' if self.payload_type >= level else 'not allowed'} "
                    f"with payload_type {self.payload_type}"
                )

    def to_bytes(self) -> bytes:
        out = bytes([self.payload_type, self.query_jitter])
        if self.payload_type >= 1:
            out += struct.pack("<H", self.manufacturer_code)
        if self.payload_type >= 2:
            out += struct.pack("<H", self.image_type)
        if self.payload_type >= 3:
            out += struct.pack("<I", self.new_file_version)
        return out

    @classmethod
    def from_bytes(cls, payload: bytes) -> ImageNotify:
        r = _Reader(payload, cls.name)
        payload_type = r.u8("payload_type")
        if payload_type > 3:
            raise DecodeError(f"reserved payload_type {payload_type}", command=cls.name, offset=0)
        jitter = r.u8("query_jitter")
        mfr = r.u16("manufacturer_code") if payload_type >= 1 else None
        itype = r.u16("image_type") if payload_type >= 2 else None
        version = r.u32("new_file_version") if payload_type >= 3 else None
        return cls(payload_type, jitter, mfr, itype, version)


@dataclass(frozen=True)
class _ImageQueryResponse(_Command):
    """Status, then on SUCCESS the image id and its total size."""

    status: int
    manufacturer_code: int | None = None
    image_type: int | None = None
    file_version: int | None = None
    image_size: int | None = None

    def __post_init__(self) -> None:
        _check_uint("status", self.status, 8)
        _check_optional(self, ("manufacturer_code", "image_type", "file_version", "image_size"), (16, 16, 32, 32))
        fields = (self.manufacturer_code, self.image_type, self.file_version, self.image_size)
        if self.status == Status.SUCCESS:
            if any(v is None for v in fields):
                raise InvalidArgument(f"{self.name} with SUCCESS needs the image id and size")
        elif any(v is not None for v in fields):
            raise InvalidArgument(f"{self.name} carries the image id and size only with SUCCESS")

    def to_bytes(self) -> bytes:
        out = bytes([self.status])
        if self.status == Status.SUCCESS:
            out += struct.pack("<HHII", self.manufacturer_code, self.image_type, self.file_version, self.image_size)
        return out

    @classmethod
    def from_bytes(cls, payload: bytes) -> Any:
        r = _Reader(payload, cls.name)
        status = r.u8("status")
        if status != Status.SUCCESS:
            return cls(status)
        mfr, itype, version = _image_id(r)
        return cls(status, mfr, itype, version, r.u32("image_size"))


@dataclass(frozen=True)
class QueryNextImageResponse(_ImageQueryResponse):
    """0x02: SUCCESS with the image to download, or NO_IMAGE_AVAILABLE / NOT_AUTHORIZED."""

    command_id: ClassVar[int] = CommandId.QUERY_NEXT_IMAGE_RESPONSE
    name: ClassVar[str] = "QueryNextImageResponse"


@dataclass(frozen=True)
class QuerySpecificFileResponse(_ImageQueryResponse):
    """0x09: SUCCESS with the requested file, or NO_IMAGE_AVAILABLE / NOT_AUTHORIZED."""

    command_id: ClassVar[int] = CommandId.QUERY_SPECIFIC_FILE_RESPONSE
    name: ClassVar[str] = "QuerySpecificFileResponse"


@dataclass(frozen=True)
class ImageBlockResponse(_Command):
    """0x05, in three shapes chosen by ``status``:

    * SUCCESS: manufacturer_code, image_type, file_version, file_offset, image_data;
    * WAIT_FOR_DATA: current_time, request_time and (current layout) minimum_block_period
      (None = the older layout without it);
    * anything else (ABORT): the status alone.

    Times are ZCL UTCTime; ``current_time`` 0 means ``request_time`` is relative (seconds).
    """

    command_id: ClassVar[int] = CommandId.IMAGE_BLOCK_RESPONSE
    name: ClassVar[str] = "ImageBlockResponse"

    status: int
    manufacturer_code: int | None = None
    image_type: int | None = None
    file_version: int | None = None
    file_offset: int | None = None
    image_data: bytes | None = None
    current_time: int | None = None
    request_time: int | None = None
    minimum_block_period: int | None = None

    def __post_init__(self) -> None:
        _check_uint("status", self.status, 8)
        _check_optional(
            self,
            ("manufacturer_code", "image_type", "file_version", "file_offset", "current_time", "request_time",
             "minimum_block_period"),
            (16, 16, 32, 32, 32, 32, 16),
        )
        if self.image_data is not None:
            if not isinstance(self.image_data, (bytes, bytearray, memoryview)):
                raise InvalidArgument(f"image_data must be bytes, got {type(self.image_data).__name__}")
            object.__setattr__(self, "image_data", bytes(self.image_data))
            if len(self.image_data) > 0xFF:
                raise InvalidArgument(f"image_data is {len(self.image_data)} bytes, at most 255 fit")
        success = ("manufacturer_code", "image_type", "file_version", "file_offset", "image_data")
        wait = ("current_time", "request_time")
        if self.status == Status.SUCCESS:
            required, forbidden = success, wait + ("minimum_block_period",)
        elif self.status == Status.WAIT_FOR_DATA:
            required, forbidden = wait, success
        else:
            required, forbidden = (), success + wait + ("minimum_block_period",)
        for name in required:
            if getattr(self, name) is None:
                raise InvalidArgument(f"{self.name} with {status_name(self.status)} needs {name}")
        for name in forbidden:
            if getattr(self, name) is not None:
                raise InvalidArgument(f"{self.name} with {status_name(self.status)} has no {name}")

    @classmethod
    def success(
        cls, manufacturer_code: int, image_type: int, file_version: int, file_offset: int, image_data: bytes
    ) -> ImageBlockResponse:
        return cls(Status.SUCCESS, manufacturer_code, image_type, file_version, file_offset, image_data)

    @classmethod
    def wait_for_data(
        cls, current_time: int, request_time: int, minimum_block_period: int | None = None
    ) -> ImageBlockResponse:
        return cls(
            Status.WAIT_FOR_DATA,
            current_time=current_time,
            request_time=request_time,
            minimum_block_period=minimum_block_period,
        )

    @classmethod
    def abort(cls) -> ImageBlockResponse:
        return cls(Status.ABORT)

    def to_bytes(self) -> bytes:
        out = bytes([self.status])
        if self.status == Status.SUCCESS:
            assert self.image_data is not None
            out += struct.pack(
                "<HHIIB", self.manufacturer_code, self.image_type, self.file_version, self.file_offset,
                len(self.image_data),
            )
            out += self.image_data
        elif self.status == Status.WAIT_FOR_DATA:
            out += struct.pack("<II", self.current_time, self.request_time)
            if self.minimum_block_period is not None:
                out += struct.pack("<H", self.minimum_block_period)
        return out

    @classmethod
    def from_bytes(cls, payload: bytes) -> ImageBlockResponse:
        r = _Reader(payload, cls.name)
        status = r.u8("status")
        if status == Status.SUCCESS:
            mfr, itype, version = _image_id(r)
            offset = r.u32("file_offset")
            size = r.u8("data_size")
            return cls.success(mfr, itype, version, offset, r.take(size, "image_data"))
        if status == Status.WAIT_FOR_DATA:
            current, request = r.u32("current_time"), r.u32("request_time")
            period = r.u16("minimum_block_period") if r.left else None
            return cls.wait_for_data(current, request, period)
        return cls(status)


@dataclass(frozen=True)
class UpgradeEndResponse(_Command):
    """0x07: when the client should switch to the new image. ``current_time`` 0: the
    upgrade time is relative (seconds from now); 0xFFFFFFFF as upgrade time: wait for a
    later (unsolicited) UpgradeEndResponse."""

    command_id: ClassVar[int] = CommandId.UPGRADE_END_RESPONSE
    name: ClassVar[str] = "UpgradeEndResponse"

    manufacturer_code: int
    image_type: int
    file_version: int
    current_time: int
    upgrade_time: int

    def __post_init__(self) -> None:
        _check_uint("manufacturer_code", self.manufacturer_code, 16)
        _check_uint("image_type", self.image_type, 16)
        _check_uint("file_version", self.file_version, 32)
        _check_uint("current_time", self.current_time, 32)
        _check_uint("upgrade_time", self.upgrade_time, 32)

    def to_bytes(self) -> bytes:
        return struct.pack(
            "<HHIII", self.manufacturer_code, self.image_type, self.file_version, self.current_time, self.upgrade_time
        )

    @classmethod
    def from_bytes(cls, payload: bytes) -> UpgradeEndResponse:
        r = _Reader(payload, cls.name)
        mfr, itype, version = _image_id(r)
        return cls(mfr, itype, version, r.u32("current_time"), r.u32("upgrade_time"))


@dataclass(frozen=True)
class DefaultResponse(_Command):
    """ZCL Default Response (global command 0x0B): which command, and its status."""

    command_id: ClassVar[int] = DEFAULT_RESPONSE_COMMAND_ID
    name: ClassVar[str] = "DefaultResponse"

    command: int
    status: int

    def __post_init__(self) -> None:
        _check_uint("command", self.command, 8)
        _check_uint("status", self.status, 8)

    def to_bytes(self) -> bytes:
        return bytes([self.command, self.status])

    @classmethod
    def from_bytes(cls, payload: bytes) -> DefaultResponse:
        r = _Reader(payload, cls.name)
        return cls(r.u8("command_id"), r.u8("status"))


REQUESTS: dict[int, type[_Command]] = {
    CommandId.QUERY_NEXT_IMAGE_REQUEST: QueryNextImageRequest,
    CommandId.IMAGE_BLOCK_REQUEST: ImageBlockRequest,
    CommandId.IMAGE_PAGE_REQUEST: ImagePageRequest,
    CommandId.UPGRADE_END_REQUEST: UpgradeEndRequest,
    CommandId.QUERY_SPECIFIC_FILE_REQUEST: QuerySpecificFileRequest,
}
RESPONSES: dict[int, type[_Command]] = {
    CommandId.IMAGE_NOTIFY: ImageNotify,
    CommandId.QUERY_NEXT_IMAGE_RESPONSE: QueryNextImageResponse,
    CommandId.IMAGE_BLOCK_RESPONSE: ImageBlockResponse,
    CommandId.UPGRADE_END_RESPONSE: UpgradeEndResponse,
    CommandId.QUERY_SPECIFIC_FILE_RESPONSE: QuerySpecificFileResponse,
}


def _decode(table: dict[int, type[_Command]], direction: str, command_id: int, payload: bytes) -> Any:
    if not isinstance(command_id, int) or isinstance(command_id, bool):
        raise InvalidArgument(f"command_id must be an int, got {command_id!r}")
    cls = table.get(command_id)
    if cls is None:
        raise UnknownCommand(f"command 0x{command_id:02X} is not a {direction} command of the OTA cluster",
                             command="OTA cluster")
    try:
        return cls.from_bytes(payload)
    except InvalidArgument as exc:  # a decoded value the dataclass rejects
        if isinstance(payload, (bytes, bytearray, memoryview)):
            raise DecodeError(str(exc), command=cls.name) from None
        raise


def decode_request(command_id: int, payload: bytes) -> Any:
    """Decode a client -> server command; UnknownCommand for other ids."""
    return _decode(REQUESTS, "client-to-server", command_id, payload)


def decode_response(command_id: int, payload: bytes) -> Any:
    """Decode a server -> client command (ImageNotify and the responses)."""
    return _decode(RESPONSES, "server-to-client", command_id, payload)
