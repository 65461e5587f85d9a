"""Vendor containers that real Zigbee OTA files come in, and their own integrity data.

Recognised, in the order zigpy's ``parse_ota_image`` tries them:

* **Legrand**: ``u32 size`` prefix, the OTA file, a 17-byte suffix (1 byte + 16 bytes
  whose meaning is not published, so it is kept but not checked).
* **Third Reality**: a 152-byte header starting with SHA-512 of everything after the
  first 64 bytes; u32 at 68 = file length - 64; the OTA file follows at 152. The SHA-512
  is checked.
* **IKEA "NGIS"** (``.ota.signed``): u32 fields at 16 (OTA offset), 20 (OTA size),
  24 (offset of the signature that follows the OTA), 32 (hash block size) and 36
  (number of block hashes); the SHA-256 of every block of the OTA region follows at 40
  (32 bytes each). The block hashes are checked; the RSA signature is kept but not
  verified (neither IKEA's keys nor the signed range are published facts).
* **Hue SBL**: a plain header from manufacturer 0x100B whose body starts ``2a 00 01`` and
  is not made of sub-elements (an opaque body; no integrity data known).
* **plain** OTA file, then **Telink** (the 0xF000 sub-element layout; its image is
  AES-encrypted, so its CRC cannot be checked here).

:func:`parse_any` returns a :class:`Container` whose ``to_bytes()`` reproduces the input.
:func:`wrap_ikea`, :func:`wrap_legrand` and :func:`wrap_third_reality` build containers
(used by tests; the IKEA and Third Reality layouts are rebuilt from the public facts).
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass, field
from typing import Literal

from proxyota.errors import DecodeError, InvalidArgument
from proxyota.zigbee.otafile import MAGIC_BYTES, OTAFile, parse

HUE_MANUFACTURER_CODE = 0x100B
HUE_SBL_MAGIC = b"\x2a\x00\x01"
IKEA_MAGIC = b"NGIS"
IKEA_HASH_TABLE_OFFSET = 40
IKEA_HASH_SIZE = 32
LEGRAND_PREFIX_LENGTH = 4
LEGRAND_SUFFIX_LENGTH = 17
THIRD_REALITY_HEADER_LENGTH = 152
THIRD_REALITY_HASH_LENGTH = 64


class ContainerKind(enum.StrEnum):
    PLAIN = "plain"
    TELINK = "telink"
    HUE_SBL = "hue-sbl"
    IKEA_NGIS = "ikea-ngis"
    LEGRAND = "legrand"
    THIRD_REALITY = "third-reality"


CheckStatus = Literal["ok", "failed", "absent", "unchecked"]


@dataclass(frozen=True)
class ContainerCheck:
    """One piece of a container's own integrity data and what checking it gave."""

    name: str
    status: CheckStatus
    detail: str = ""


@dataclass
class Container:
    """An OTA file and the vendor wrapping around it: ``prefix + ota + suffix``."""

    kind: ContainerKind
    ota: OTAFile
    prefix: bytes = b""
    suffix: bytes = b""
    checks: list[ContainerCheck] = field(default_factory=list)
    fields: dict[str, int] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return self.prefix + self.ota.to_bytes() + self.suffix

    @property
    def ok(self) -> bool:
        """No check of the container's own integrity data failed."""
        return all(check.status != "failed" for check in self.checks)

    @property
    def ota_offset(self) -> int:
        return len(self.prefix)


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def _parse_inner(data: bytes, start: int, end: int, kind: ContainerKind) -> OTAFile:
    try:
        return parse(data[start:end])
    except DecodeError as error:
        where = start + (error.offset or 0)
        raise DecodeError(
            f"OTA file inside the {kind.value} container at byte {start}: {error}",
            command=f"{kind.value} container",
            offset=where,
        ) from None


# -- Legrand -------------------------------------------------------------------------


def _is_legrand(data: bytes) -> bool:
    return (
        len(data) > LEGRAND_PREFIX_LENGTH + LEGRAND_SUFFIX_LENGTH
        and _u32(data, 0) + LEGRAND_PREFIX_LENGTH + LEGRAND_SUFFIX_LENGTH == len(data)
        and data[4:8] == MAGIC_BYTES
    )


def _parse_legrand(data: bytes) -> Container:
    end = len(data) - LEGRAND_SUFFIX_LENGTH
    ota = _parse_inner(data, LEGRAND_PREFIX_LENGTH, end, ContainerKind.LEGRAND)
    checks = [
        ContainerCheck(
            "size prefix",
            "ok" if len(ota.to_bytes()) == _u32(data, 0) else "failed",
            f"prefix {_u32(data, 0)} = OTA file length (total_image_size {ota.total_size})",
        ),
        ContainerCheck(
            "suffix",
            "unchecked",
            f"17-byte suffix {data[end:].hex()} kept; its meaning is not published",
        ),
    ]
    return Container(
        ContainerKind.LEGRAND,
        ota,
        prefix=data[:LEGRAND_PREFIX_LENGTH],
        suffix=data[end:],
        checks=checks,
        fields={"size": _u32(data, 0), "suffix_flag": data[end]},
    )


def wrap_legrand(ota: OTAFile, suffix: bytes = b"\x01" + bytes(16)) -> bytes:
    """Wrap an OTA file the way Legrand ships it."""
    if len(suffix) != LEGRAND_SUFFIX_LENGTH:
        raise InvalidArgument(f"Legrand suffix must be {LEGRAND_SUFFIX_LENGTH} bytes")
    image = ota.to_bytes()
    return struct.pack("<I", len(image)) + image + suffix


# -- Third Reality ---------------------------------------------------------------------


def _is_third_reality(data: bytes) -> bool:
    return (
        len(data) > THIRD_REALITY_HEADER_LENGTH
        and _u32(data, 68) + THIRD_REALITY_HASH_LENGTH == len(data)
        and data[THIRD_REALITY_HEADER_LENGTH : THIRD_REALITY_HEADER_LENGTH + 4] == MAGIC_BYTES
    )


def _parse_third_reality(data: bytes) -> Container:
    ota = _parse_inner(data, THIRD_REALITY_HEADER_LENGTH, len(data), ContainerKind.THIRD_REALITY)
    digest = hashlib.sha512(data[THIRD_REALITY_HASH_LENGTH:]).digest()
    good = digest == data[:THIRD_REALITY_HASH_LENGTH]
    checks = [
        ContainerCheck(
            "sha512",
            "ok" if good else "failed",
            "SHA-512 of bytes 64..end " + ("matches" if good else f"is {digest.hex()[:16]}…, stored differs"),
        )
    ]
    return Container(
        ContainerKind.THIRD_REALITY,
        ota,
        prefix=data[:THIRD_REALITY_HEADER_LENGTH],
        checks=checks,
        fields={"field_64": _u32(data, 64), "length": _u32(data, 68), "field_72": _u32(data, 72)},
    )


def wrap_third_reality(ota: OTAFile, middle: bytes = bytes(76)) -> bytes:
    """Wrap an OTA file in a Third Reality header (built from the public facts only:
    SHA-512 at 0, u32 16 at 64, length at 68, 152 at 72, then ``middle`` up to 152)."""
    if len(middle) != THIRD_REALITY_HEADER_LENGTH - 76:
        raise InvalidArgument("Third Reality header filler must be 76 bytes")
    image = ota.to_bytes()
    body = (
        struct.pack("<III", 16, THIRD_REALITY_HEADER_LENGTH - THIRD_REALITY_HASH_LENGTH + len(image), 152)
        + middle
        + image
    )
    return hashlib.sha512(body).digest() + body


# -- IKEA NGIS -------------------------------------------------------------------------


def _parse_ikea(data: bytes) -> Container:
    kind = ContainerKind.IKEA_NGIS
    if len(data) < IKEA_HASH_TABLE_OFFSET:
        raise DecodeError(
            f"truncated: {len(data)} bytes, the NGIS header needs {IKEA_HASH_TABLE_OFFSET}",
            command="ikea-ngis container",
            offset=len(data),
        )
    offset, size, signature_offset = _u32(data, 16), _u32(data, 20), _u32(data, 24)
    block_size, block_count = _u32(data, 32), _u32(data, 36)
    if offset < IKEA_HASH_TABLE_OFFSET or offset + size > len(data):
        raise DecodeError(
            f"OTA region {offset}..{offset + size} does not fit the {len(data)}-byte file",
            command="ikea-ngis container",
            offset=16,
        )
    ota = _parse_inner(data, offset, offset + size, kind)
    checks = [_ikea_block_check(data, offset, size, block_size, block_count)]
    signature = data[offset + size :]
    if signature_offset == offset + size and signature:
        checks.append(
            ContainerCheck(
                "rsa signature",
                "unchecked",
                f"{len(signature)}-byte signature at {signature_offset} kept, not verified",
            )
        )
    else:
        checks.append(
            ContainerCheck(
                "rsa signature",
                "absent",
                f"signature offset field {signature_offset}, {len(signature)} bytes after the OTA",
            )
        )
    return Container(
        kind,
        ota,
        prefix=data[:offset],
        suffix=signature,
        checks=checks,
        fields={
            "ota_offset": offset,
            "ota_size": size,
            "signature_offset": signature_offset,
            "block_size": block_size,
            "block_count": block_count,
        },
    )


def _ikea_block_check(data: bytes, offset: int, size: int, block_size: int, count: int) -> ContainerCheck:
    name = "sha256 block hashes"
    if count == 0:
        return ContainerCheck(name, "absent", "no block hashes (count 0)")
    if (
        IKEA_HASH_TABLE_OFFSET + IKEA_HASH_SIZE * count != offset
        or block_size * count < size
        or block_size == 0
    ):
        return ContainerCheck(
            name,
            "failed",
            f"hash table of {count} x {block_size}-byte blocks does not match "
            f"OTA offset {offset} / size {size}",
        )
    end = offset + size
    bad = []
    for index in range(count):
        start = offset + index * block_size
        block = data[start : min(start + block_size, end)]
        stored = data[
            IKEA_HASH_TABLE_OFFSET + IKEA_HASH_SIZE * index : IKEA_HASH_TABLE_OFFSET
            + IKEA_HASH_SIZE * (index + 1)
        ]
        if hashlib.sha256(block).digest() != stored:
            bad.append(index)
    if bad:
        return ContainerCheck(name, "failed", f"blocks {bad} of {count} do not match their SHA-256")
    return ContainerCheck(name, "ok", f"{count} blocks of {block_size} bytes match")


def wrap_ikea(
    ota: OTAFile, *, block_size: int = 0x4000, signature: bytes = bytes(512), header: bytes = bytes(16)
) -> bytes:
    """Wrap an OTA file in an IKEA NGIS container with SHA-256 block hashes.

    Built from the public facts only: ``header`` fills bytes 0..16 (starting with
    ``NGIS`` is forced) and 28..32 is zero; the signature is a placeholder.
    """
    if len(header) != 16:
        raise InvalidArgument("NGIS header filler must be 16 bytes")
    if block_size <= 0:
        raise InvalidArgument("block_size must be positive")
    image = ota.to_bytes()
    count = max(1, -(-len(image) // block_size))
    offset = IKEA_HASH_TABLE_OFFSET + IKEA_HASH_SIZE * count
    hashes = b"".join(
        hashlib.sha256(image[i * block_size : (i + 1) * block_size]).digest() for i in range(count)
    )
    head = (
        IKEA_MAGIC
        + header[4:16]
        + struct.pack("<IIIIII", offset, len(image), offset + len(image), 0, block_size, count)
    )
    return head + hashes + image + signature


# -- dispatch --------------------------------------------------------------------------


def parse_any(data: bytes) -> Container:
    """Recognise the container (or plain file) and parse the OTA file inside."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidArgument(f"OTA file data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if _is_legrand(data):
        return _parse_legrand(data)
    if _is_third_reality(data):
        return _parse_third_reality(data)
    if data.startswith(IKEA_MAGIC):
        return _parse_ikea(data)
    if data[:4] == MAGIC_BYTES:
        header_length = int.from_bytes(data[6:8], "little")
        manufacturer = int.from_bytes(data[10:12], "little")
        if manufacturer == HUE_MANUFACTURER_CODE and data[header_length : header_length + 3] == HUE_SBL_MAGIC:
            try:
                ota = parse(data, opaque_body=True)
            except DecodeError:
                pass
            else:
                return Container(
                    ContainerKind.HUE_SBL,
                    ota,
                    checks=[ContainerCheck("sbl body", "unchecked", "opaque body; no integrity data known")],
                )
    ota = parse(data)
    kind = ContainerKind.TELINK if ota.layout == "telink" else ContainerKind.PLAIN
    return Container(kind, ota)
