"""The emulated node's own codec for the OTA Upgrade cluster (0x0019) command payloads
(the bytes after the ZCL header). Independent of proxyota's and zigpy's codecs; the tests
cross-check the byte layouts against zigpy's schemas.

Client -> server: 0x01 QueryNextImageRequest, 0x03 ImageBlockRequest, 0x04
ImagePageRequest, 0x06 UpgradeEndRequest, 0x08 QuerySpecificFileRequest. Server -> client:
0x00 ImageNotify, 0x02 QueryNextImageResponse, 0x05 ImageBlockResponse, 0x07
UpgradeEndResponse, 0x09 QuerySpecificFileResponse. All integers little-endian.

Leniency: trailing bytes after a complete command are ignored; an ImageBlockResponse with
WAIT_FOR_DATA is accepted with or without the trailing minimum_block_period (Silicon Labs
sends it only when built with the feature; zigpy's schema always has it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from radio_emulators.zigbee.zcl import FrameError, Status

__all__ = [
    "OTA_CLUSTER", "CMD", "ImageNotify", "QueryNextImageRequest", "QueryNextImageResponse",
    "ImageBlockRequest", "ImagePageRequest", "ImageBlockResponse", "UpgradeEndRequest",
    "UpgradeEndResponse", "QuerySpecificFileRequest", "QuerySpecificFileResponse",
    "decode_ota", "UPGRADE_TIME_WAIT",
]

OTA_CLUSTER = 0x0019
UPGRADE_TIME_WAIT = 0xFFFFFFFF


class CMD:
    IMAGE_NOTIFY = 0x00
    QUERY_NEXT_IMAGE = 0x01
    QUERY_NEXT_IMAGE_RSP = 0x02
    IMAGE_BLOCK = 0x03
    IMAGE_PAGE = 0x04
    IMAGE_BLOCK_RSP = 0x05
    UPGRADE_END = 0x06
    UPGRADE_END_RSP = 0x07
    QUERY_SPECIFIC_FILE = 0x08
    QUERY_SPECIFIC_FILE_RSP = 0x09


class _Reader:
    def __init__(self, data: bytes, command: str) -> None:
        self.data, self.pos, self.command = bytes(data), 0, command

    def take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise FrameError(f"truncated ({len(self.data)} bytes)", command=self.command, offset=self.pos)
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise FrameError(f"truncated ({len(self.data)} bytes)", command=self.command, offset=self.pos)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


@dataclass(frozen=True)
class ImageNotify:
    payload_type: int
    query_jitter: int
    manufacturer_code: int | None = None
    image_type: int | None = None
    new_file_version: int | None = None
    command_id = CMD.IMAGE_NOTIFY

    def encode(self) -> bytes:
        out = struct.pack("<BB", self.payload_type, self.query_jitter)
        if self.payload_type >= 1:
            out += struct.pack("<H", self.manufacturer_code)
        if self.payload_type >= 2:
            out += struct.pack("<H", self.image_type)
        if self.payload_type >= 3:
            out += struct.pack("<I", self.new_file_version)
        return out

    @classmethod
    def decode(cls, data: bytes) -> "ImageNotify":
        r = _Reader(data, "ImageNotify")
        ptype, jitter = r.take("<B"), r.take("<B")
        if ptype > 3:
            raise FrameError(f"payload type {ptype} > 3", command="ImageNotify", offset=0)
        mfr = r.take("<H") if ptype >= 1 else None
        itype = r.take("<H") if ptype >= 2 else None
        ver = r.take("<I") if ptype >= 3 else None
        return cls(ptype, jitter, mfr, itype, ver)


@dataclass(frozen=True)
class QueryNextImageRequest:
    manufacturer_code: int
    image_type: int
    current_file_version: int
    hardware_version: int | None = None
    command_id = CMD.QUERY_NEXT_IMAGE

    def encode(self) -> bytes:
        fc = 1 if self.hardware_version is not None else 0
        out = struct.pack("<BHHI", fc, self.manufacturer_code, self.image_type, self.current_file_version)
        return out + (struct.pack("<H", self.hardware_version) if fc else b"")

    @classmethod
    def decode(cls, data: bytes) -> "QueryNextImageRequest":
        r = _Reader(data, "QueryNextImageRequest")
        fc, mfr, itype, ver = r.take("<B"), r.take("<H"), r.take("<H"), r.take("<I")
        hw = r.take("<H") if fc & 1 else None
        return cls(mfr, itype, ver, hw)


@dataclass(frozen=True)
class QueryNextImageResponse:
    status: int
    manufacturer_code: int | None = None
    image_type: int | None = None
    file_version: int | None = None
    image_size: int | None = None
    command_id = CMD.QUERY_NEXT_IMAGE_RSP
    _name = "QueryNextImageResponse"

    def encode(self) -> bytes:
        out = bytes([self.status])
        if self.status == Status.SUCCESS:
            out += struct.pack("<HHII", self.manufacturer_code, self.image_type, self.file_version,
                               self.image_size)
        return out

    @classmethod
    def decode(cls, data: bytes):
        r = _Reader(data, cls._name)
        status = r.take("<B")
        if status != Status.SUCCESS:
            return cls(status)
        return cls(status, r.take("<H"), r.take("<H"), r.take("<I"), r.take("<I"))


@dataclass(frozen=True)
class QuerySpecificFileResponse(QueryNextImageResponse):
    command_id = CMD.QUERY_SPECIFIC_FILE_RSP
    _name = "QuerySpecificFileResponse"


@dataclass(frozen=True)
class ImageBlockRequest:
    manufacturer_code: int
    image_type: int
    file_version: int
    file_offset: int
    maximum_data_size: int
    request_node_addr: bytes | None = None
    minimum_block_period: int | None = None
    command_id = CMD.IMAGE_BLOCK

    def encode(self) -> bytes:
        fc = (1 if self.request_node_addr is not None else 0) | (2 if self.minimum_block_period is not None else 0)
        out = struct.pack("<BHHIIB", fc, self.manufacturer_code, self.image_type, self.file_version,
                          self.file_offset, self.maximum_data_size)
        if self.request_node_addr is not None:
            out += bytes(self.request_node_addr)
        if self.minimum_block_period is not None:
            out += struct.pack("<H", self.minimum_block_period)
        return out

    @classmethod
    def decode(cls, data: bytes) -> "ImageBlockRequest":
        r = _Reader(data, "ImageBlockRequest")
        fc = r.take("<B")
        vals = [r.take("<H"), r.take("<H"), r.take("<I"), r.take("<I"), r.take("<B")]
        addr = r.raw(8) if fc & 1 else None
        period = r.take("<H") if fc & 2 else None
        return cls(*vals, addr, period)


@dataclass(frozen=True)
class ImagePageRequest:
    manufacturer_code: int
    image_type: int
    file_version: int
    file_offset: int
    maximum_data_size: int
    page_size: int
    response_spacing: int          # milliseconds
    request_node_addr: bytes | None = None
    command_id = CMD.IMAGE_PAGE

    def encode(self) -> bytes:
        fc = 1 if self.request_node_addr is not None else 0
        out = struct.pack("<BHHIIBHH", fc, self.manufacturer_code, self.image_type, self.file_version,
                          self.file_offset, self.maximum_data_size, self.page_size, self.response_spacing)
        return out + (bytes(self.request_node_addr) if fc else b"")

    @classmethod
    def decode(cls, data: bytes) -> "ImagePageRequest":
        r = _Reader(data, "ImagePageRequest")
        fc = r.take("<B")
        vals = [r.take("<H"), r.take("<H"), r.take("<I"), r.take("<I"), r.take("<B"), r.take("<H"),
                r.take("<H")]
        return cls(*vals, r.raw(8) if fc & 1 else None)


@dataclass(frozen=True)
class ImageBlockResponse:
    status: int
    manufacturer_code: int | None = None
    image_type: int | None = None
    file_version: int | None = None
    file_offset: int | None = None
    image_data: bytes | None = None
    current_time: int | None = None
    request_time: int | None = None
    minimum_block_period: int | None = None
    command_id = CMD.IMAGE_BLOCK_RSP

    def encode(self) -> bytes:
        out = bytes([self.status])
        if self.status == Status.SUCCESS:
            if len(self.image_data) > 255:
                raise ValueError("image block data longer than 255 bytes")
            out += struct.pack("<HHIIB", self.manufacturer_code, self.image_type, self.file_version,
                               self.file_offset, len(self.image_data)) + bytes(self.image_data)
        elif self.status == Status.WAIT_FOR_DATA:
            out += struct.pack("<II", self.current_time, self.request_time)
            if self.minimum_block_period is not None:
                out += struct.pack("<H", self.minimum_block_period)
        return out

    @classmethod
    def decode(cls, data: bytes) -> "ImageBlockResponse":
        r = _Reader(data, "ImageBlockResponse")
        status = r.take("<B")
        if status == Status.SUCCESS:
            vals = [r.take("<H"), r.take("<H"), r.take("<I"), r.take("<I")]
            n = r.take("<B")
            return cls(status, *vals, r.raw(n))
        if status == Status.WAIT_FOR_DATA:
            cur, req = r.take("<I"), r.take("<I")
            period = r.take("<H") if r.left >= 2 else None
            return cls(status, current_time=cur, request_time=req, minimum_block_period=period)
        return cls(status)


@dataclass(frozen=True)
class UpgradeEndRequest:
    status: int
    manufacturer_code: int
    image_type: int
    file_version: int
    command_id = CMD.UPGRADE_END

    def encode(self) -> bytes:
        return struct.pack("<BHHI", self.status, self.manufacturer_code, self.image_type, self.file_version)

    @classmethod
    def decode(cls, data: bytes) -> "UpgradeEndRequest":
        r = _Reader(data, "UpgradeEndRequest")
        return cls(r.take("<B"), r.take("<H"), r.take("<H"), r.take("<I"))


@dataclass(frozen=True)
class UpgradeEndResponse:
    manufacturer_code: int
    image_type: int
    file_version: int
    current_time: int
    upgrade_time: int
    command_id = CMD.UPGRADE_END_RSP

    def encode(self) -> bytes:
        return struct.pack("<HHIII", self.manufacturer_code, self.image_type, self.file_version,
                           self.current_time, self.upgrade_time)

    @classmethod
    def decode(cls, data: bytes) -> "UpgradeEndResponse":
        r = _Reader(data, "UpgradeEndResponse")
        return cls(r.take("<H"), r.take("<H"), r.take("<I"), r.take("<I"), r.take("<I"))

    def delay_s(self) -> float | None:
        """Seconds until activation; None = wait for a later UpgradeEndResponse. With
        current_time 0 the upgrade time is an offset (servers without a time source)."""
        if self.upgrade_time == UPGRADE_TIME_WAIT:
            return None
        if self.current_time == 0:
            return float(self.upgrade_time)
        return float(max(0, self.upgrade_time - self.current_time))


@dataclass(frozen=True)
class QuerySpecificFileRequest:
    request_node_addr: bytes
    manufacturer_code: int
    image_type: int
    file_version: int
    current_zigbee_stack_version: int
    command_id = CMD.QUERY_SPECIFIC_FILE

    def encode(self) -> bytes:
        return bytes(self.request_node_addr) + struct.pack(
            "<HHIH", self.manufacturer_code, self.image_type, self.file_version,
            self.current_zigbee_stack_version)

    @classmethod
    def decode(cls, data: bytes) -> "QuerySpecificFileRequest":
        r = _Reader(data, "QuerySpecificFileRequest")
        return cls(r.raw(8), r.take("<H"), r.take("<H"), r.take("<I"), r.take("<H"))


_CLIENT_TO_SERVER = {c.command_id: c for c in (QueryNextImageRequest, ImageBlockRequest, ImagePageRequest,
                                              UpgradeEndRequest, QuerySpecificFileRequest)}
_SERVER_TO_CLIENT = {c.command_id: c for c in (ImageNotify, QueryNextImageResponse, ImageBlockResponse,
                                              UpgradeEndResponse, QuerySpecificFileResponse)}


def decode_ota(command_id: int, payload: bytes, *, server_to_client: bool):
    table = _SERVER_TO_CLIENT if server_to_client else _CLIENT_TO_SERVER
    cls = table.get(command_id)
    if cls is None:
        direction = "server-to-client" if server_to_client else "client-to-server"
        raise FrameError(f"unknown {direction} OTA command 0x{command_id:02X}", command="OTA", offset=0)
    return cls.decode(payload)
