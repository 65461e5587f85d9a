"""The emulated node's ZCL frame codec: the ZCL header, the few global commands a node
answers (Read/Write Attributes, Configure Reporting, Default Response) and attribute
values. Independent of zigpy's and proxyota's codecs (tests cross-check against zigpy).

ZCL header: frame control u8 (b0-1 frame type: 0 global, 1 cluster-specific; b2
manufacturer-specific; b3 direction, 1 = server to client; b4 disable default response),
[manufacturer code u16], transaction sequence number u8, command id u8. Little-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "FrameError", "ZclFrame", "GLOBAL", "Status", "DataType", "encode_attribute_value",
    "read_attributes_request", "parse_read_attributes", "read_attributes_response",
    "parse_read_attributes_response", "default_response", "parse_default_response",
    "parse_write_attributes", "write_attributes_response",
]


class FrameError(ValueError):
    """A frame could not be decoded (names the structure and byte offset)."""

    def __init__(self, message: str, *, command: str | None = None, offset: int | None = None):
        self.command = command
        self.offset = offset
        where = ", ".join(x for x in (command, None if offset is None else f"byte {offset}") if x)
        super().__init__(f"{where}: {message}" if where else message)


class GLOBAL:
    READ_ATTRIBUTES = 0x00
    READ_ATTRIBUTES_RSP = 0x01
    WRITE_ATTRIBUTES = 0x02
    WRITE_ATTRIBUTES_RSP = 0x04
    CONFIGURE_REPORTING = 0x06
    CONFIGURE_REPORTING_RSP = 0x07
    DEFAULT_RSP = 0x0B


class Status:
    SUCCESS = 0x00
    FAILURE = 0x01
    MALFORMED_COMMAND = 0x80
    UNSUP_CLUSTER_COMMAND = 0x81
    UNSUP_GENERAL_COMMAND = 0x82
    UNSUPPORTED_ATTRIBUTE = 0x86
    INVALID_VALUE = 0x87
    READ_ONLY = 0x88
    TIMEOUT = 0x94
    ABORT = 0x95
    INVALID_IMAGE = 0x96
    WAIT_FOR_DATA = 0x97
    NO_IMAGE_AVAILABLE = 0x98
    REQUIRE_MORE_IMAGE = 0x99


class DataType:
    BOOL = 0x10
    UINT8 = 0x20
    UINT16 = 0x21
    UINT32 = 0x23
    ENUM8 = 0x30
    CHAR_STRING = 0x42
    EUI64 = 0xF0


_FIXED = {DataType.BOOL: "<B", DataType.UINT8: "<B", DataType.UINT16: "<H",
          DataType.UINT32: "<I", DataType.ENUM8: "<B"}


def encode_attribute_value(type_id: int, value) -> bytes:
    if type_id in _FIXED:
        return struct.pack(_FIXED[type_id], int(value))
    if type_id == DataType.CHAR_STRING:
        raw = value.encode() if isinstance(value, str) else bytes(value)
        if len(raw) > 254:
            raise ValueError("ZCL character string longer than 254 bytes")
        return bytes([len(raw)]) + raw
    if type_id == DataType.EUI64:
        raw = bytes(value)
        if len(raw) != 8:
            raise ValueError("EUI64 must be 8 bytes")
        return raw
    raise ValueError(f"unsupported ZCL data type 0x{type_id:02X}")


def decode_attribute_value(type_id: int, data: bytes, pos: int, command: str) -> tuple[object, int]:
    if type_id in _FIXED:
        size = struct.calcsize(_FIXED[type_id])
        if pos + size > len(data):
            raise FrameError("attribute value truncated", command=command, offset=pos)
        return struct.unpack_from(_FIXED[type_id], data, pos)[0], pos + size
    if type_id == DataType.CHAR_STRING:
        if pos >= len(data) or pos + 1 + data[pos] > len(data):
            raise FrameError("string value truncated", command=command, offset=pos)
        n = data[pos]
        return bytes(data[pos + 1:pos + 1 + n]).decode(errors="replace"), pos + 1 + n
    if type_id == DataType.EUI64:
        if pos + 8 > len(data):
            raise FrameError("EUI64 value truncated", command=command, offset=pos)
        return bytes(data[pos:pos + 8]), pos + 8
    raise FrameError(f"unsupported data type 0x{type_id:02X}", command=command, offset=pos - 1)


@dataclass(frozen=True)
class ZclFrame:
    command_id: int
    tsn: int
    payload: bytes = b""
    cluster_specific: bool = True
    server_to_client: bool = False
    disable_default_response: bool = False
    manufacturer: int | None = None

    def encode(self) -> bytes:
        fc = (1 if self.cluster_specific else 0) | (0x04 if self.manufacturer is not None else 0)
        fc |= (0x08 if self.server_to_client else 0) | (0x10 if self.disable_default_response else 0)
        out = bytes([fc])
        if self.manufacturer is not None:
            out += struct.pack("<H", self.manufacturer)
        return out + bytes([self.tsn & 0xFF, self.command_id & 0xFF]) + bytes(self.payload)

    @classmethod
    def decode(cls, data: bytes) -> "ZclFrame":
        data = bytes(data)
        if not data:
            raise FrameError("empty frame", command="ZCL header", offset=0)
        fc = data[0]
        if fc & 0x03 > 1:
            raise FrameError(f"reserved frame type {fc & 3}", command="ZCL header", offset=0)
        pos = 1
        mfr = None
        if fc & 0x04:
            if len(data) < 3:
                raise FrameError("manufacturer code truncated", command="ZCL header", offset=1)
            mfr = struct.unpack_from("<H", data, 1)[0]
            pos = 3
        if len(data) < pos + 2:
            raise FrameError("header truncated", command="ZCL header", offset=len(data))
        return cls(command_id=data[pos + 1], tsn=data[pos], payload=data[pos + 2:],
                   cluster_specific=bool(fc & 1), server_to_client=bool(fc & 0x08),
                   disable_default_response=bool(fc & 0x10), manufacturer=mfr)


def read_attributes_request(attribute_ids: list[int]) -> bytes:
    return b"".join(struct.pack("<H", a) for a in attribute_ids)


def parse_read_attributes(payload: bytes) -> list[int]:
    if len(payload) % 2:
        raise FrameError("odd length", command="Read Attributes", offset=len(payload) - 1)
    return [struct.unpack_from("<H", payload, i)[0] for i in range(0, len(payload), 2)]


def read_attributes_response(records: list[tuple[int, int, int | None, object]]) -> bytes:
    """records: (attribute id, status, type id or None, value)."""
    out = b""
    for attrid, status, type_id, value in records:
        out += struct.pack("<HB", attrid, status)
        if status == Status.SUCCESS:
            out += bytes([type_id]) + encode_attribute_value(type_id, value)
    return out


def parse_read_attributes_response(payload: bytes) -> dict[int, tuple[int, object]]:
    """attribute id -> (status, value or None)."""
    out: dict[int, tuple[int, object]] = {}
    pos = 0
    while pos < len(payload):
        if pos + 3 > len(payload):
            raise FrameError("record truncated", command="Read Attributes Response", offset=pos)
        attrid, status = struct.unpack_from("<HB", payload, pos)
        pos += 3
        value = None
        if status == Status.SUCCESS:
            if pos >= len(payload):
                raise FrameError("type truncated", command="Read Attributes Response", offset=pos)
            type_id = payload[pos]
            value, pos = decode_attribute_value(type_id, payload, pos + 1, "Read Attributes Response")
        out[attrid] = (status, value)
    return out


def parse_write_attributes(payload: bytes) -> list[tuple[int, int, object]]:
    out = []
    pos = 0
    while pos < len(payload):
        if pos + 3 > len(payload):
            raise FrameError("record truncated", command="Write Attributes", offset=pos)
        attrid, type_id = struct.unpack_from("<HB", payload, pos)
        value, pos = decode_attribute_value(type_id, payload, pos + 3, "Write Attributes")
        out.append((attrid, type_id, value))
    return out


def write_attributes_response(failures: list[tuple[int, int]]) -> bytes:
    """failures: (attribute id, status); all written -> the single SUCCESS byte."""
    if not failures:
        return bytes([Status.SUCCESS])
    return b"".join(struct.pack("<BH", status, attrid) for attrid, status in failures)


def default_response(command_id: int, status: int) -> bytes:
    return bytes([command_id & 0xFF, status & 0xFF])


def parse_default_response(payload: bytes) -> tuple[int, int]:
    if len(payload) < 2:
        raise FrameError("needs 2 bytes", command="Default Response", offset=len(payload))
    return payload[0], payload[1]
