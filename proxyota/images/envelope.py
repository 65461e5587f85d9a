"""The signed image envelope LoRaWAN nodes receive, and the same signature for Zigbee OTA files.

Envelope (format version 1, every integer little-endian, layout in docs/image-envelope.md)::

    header (108 bytes, fixed) | payload (payload_length bytes) | signature (64 bytes)

The signature covers header + payload. The header names the signature algorithm and the
key id, the hardware class (16-byte UUID), the firmware version and security counter
(u32 each), the payload kind (full image or delta; a delta names the SHA-256 of the base
image it applies to) and the payload's length and SHA-256. :func:`parse` checks the
structure only and raises :class:`DecodeError` naming the field and byte offset;
:func:`verify` also checks the payload digest and the signature with public keys.

Zigbee OTA files keep their own format. A vendor can add the same end-to-end signature as
a manufacturer-specific sub-element (tag :data:`ZIGBEE_SIGNATURE_TAG`), appended as the
last sub-element and covering every byte of the file before the signature itself:
:func:`sign_zigbee_ota`, :func:`verify_zigbee_ota`, :func:`parse_zigbee_signature_element`.
"""

from __future__ import annotations

import enum
import hashlib
import re
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from proxyota.errors import DecodeError, InvalidArgument
from proxyota.images.signing import (
    KEY_ID_SIZE,
    SIGNATURE_SIZE,
    PrivateKey,
    PublicKey,
    SignatureAlgorithm,
    VerificationError,
    algorithm_of,
    key_id,
    select_key,
    sign,
    verify_signature,
)

MAGIC = b"PXOE"  # "ProXyOta Envelope"
FORMAT_VERSION = 1
DIGEST_SIZE = 32
U32_MAX = 0xFFFF_FFFF

# name, offset, size -- the single source of the layout (docs/image-envelope.md repeats it)
HEADER_LAYOUT: tuple[tuple[str, int, int], ...] = (
    ("magic", 0, 4),
    ("format_version", 4, 1),
    ("payload_kind", 5, 1),
    ("signature_algorithm", 6, 1),
    ("reserved", 7, 1),
    ("key_id", 8, 8),
    ("hw_class", 16, 16),
    ("firmware_version", 32, 4),
    ("security_counter", 36, 4),
    ("payload_length", 40, 4),
    ("payload_digest", 44, 32),
    ("base_digest", 76, 32),
)
_HEADER = struct.Struct("<4sBBBB8s16sIII32s32s")
HEADER_SIZE = _HEADER.size  # 108
OFFSETS = {name: offset for name, offset, _ in HEADER_LAYOUT}
ZERO_DIGEST = bytes(DIGEST_SIZE)


class PayloadKind(enum.IntEnum):
    FULL = 0
    DELTA = 1


class PayloadDigestMismatch(VerificationError):
    """The payload does not hash to the header's payload_digest."""


def _err(field_name: str, offset: int, message: str) -> DecodeError:
    return DecodeError(message, command=f"envelope {field_name}", offset=offset)


@dataclass(frozen=True)
class Envelope:
    """A decoded envelope. ``parse`` is strict, so ``to_bytes()`` gives back the input."""

    payload_kind: PayloadKind
    algorithm: SignatureAlgorithm
    key_id: bytes
    hw_class: uuid.UUID
    firmware_version: int
    security_counter: int
    payload_digest: bytes
    base_digest: bytes | None
    payload: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    format_version: int = FORMAT_VERSION

    @property
    def payload_length(self) -> int:
        return len(self.payload)

    @property
    def is_delta(self) -> bool:
        return self.payload_kind == PayloadKind.DELTA

    def header(self) -> bytes:
        return _HEADER.pack(
            MAGIC,
            self.format_version,
            int(self.payload_kind),
            int(self.algorithm),
            0,
            self.key_id,
            self.hw_class.bytes,
            self.firmware_version,
            self.security_counter,
            len(self.payload),
            self.payload_digest,
            self.base_digest if self.base_digest is not None else ZERO_DIGEST,
        )

    def signed_bytes(self) -> bytes:
        """What the signature covers: header + payload."""
        return self.header() + self.payload

    def to_bytes(self) -> bytes:
        return self.signed_bytes() + self.signature

    def describe(self) -> dict[str, Any]:
        """Every header field (and derived facts), JSON-ready."""
        return {
            "magic": MAGIC.decode("ascii"),
            "format_version": self.format_version,
            "payload_kind": self.payload_kind.name.lower(),
            "signature_algorithm": self.algorithm.label,
            "reserved": 0,
            "key_id": self.key_id.hex(),
            "hw_class": str(self.hw_class),
            "firmware_version": self.firmware_version,
            "firmware_version_semver": version_to_semver(self.firmware_version),
            "security_counter": self.security_counter,
            "payload_length": self.payload_length,
            "payload_digest": self.payload_digest.hex(),
            "base_digest": self.base_digest.hex() if self.base_digest is not None else None,
            "header_size": HEADER_SIZE,
            "total_size": HEADER_SIZE + self.payload_length + SIGNATURE_SIZE,
            "signature": self.signature.hex(),
            "payload_digest_ok": hashlib.sha256(self.payload).digest() == self.payload_digest,
            "envelope_sha256": hashlib.sha256(self.to_bytes()).hexdigest(),
        }


# --------------------------------------------------------------------------- versions, classes

_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")


def version_from_semver(text: str) -> int:
    """``MAJOR.MINOR.PATCH`` -> ``major << 24 | minor << 16 | patch`` (u8, u8, u16)."""
    m = _SEMVER.match(text.strip())
    if not m:
        raise InvalidArgument(f"version {text!r} is not MAJOR.MINOR.PATCH")
    major, minor, patch = (int(g) for g in m.groups())
    if major > 0xFF or minor > 0xFF or patch > 0xFFFF:
        raise InvalidArgument(
            f"version {text!r}: major and minor must be <= 255, patch <= 65535"
        )
    return major << 24 | minor << 16 | patch


def version_to_semver(value: int) -> str:
    return f"{value >> 24 & 0xFF}.{value >> 16 & 0xFF}.{value & 0xFFFF}"


def parse_version(text: str) -> int:
    """A firmware version from the command line: an integer (``42``, ``0x01020003``) or semver."""
    text = text.strip()
    if "." in text:
        return version_from_semver(text)
    try:
        value = int(text, 0)
    except ValueError:
        raise InvalidArgument(
            f"version {text!r} is neither an integer nor MAJOR.MINOR.PATCH"
        ) from None
    _check_u32("firmware_version", value)
    return value


def parse_hw_class(text: str) -> uuid.UUID:
    """A hardware class id: a UUID (``8-4-4-4-12``, 32 hex digits, or ``urn:uuid:...``)."""
    try:
        value = uuid.UUID(text.strip())
    except ValueError:
        raise InvalidArgument(f"hardware class {text!r} is not a UUID") from None
    if value.int == 0:
        raise InvalidArgument("the nil UUID is not a hardware class id")
    return value


def vendor_id(vendor_domain: str) -> uuid.UUID:
    """SUIT vendor id: UUIDv5 of the vendor's domain name in the DNS namespace."""
    return uuid.uuid5(uuid.NAMESPACE_DNS, vendor_domain)


def class_id(vendor_domain: str, model: str) -> uuid.UUID:
    """SUIT-style class id: UUIDv5 of ``model`` in the namespace :func:`vendor_id`."""
    return uuid.uuid5(vendor_id(vendor_domain), model)


def _check_u32(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U32_MAX:
        raise InvalidArgument(f"{name} must be an integer 0..{U32_MAX}, got {value!r}")


def _as_uuid(hw_class: uuid.UUID | str | bytes) -> uuid.UUID:
    if isinstance(hw_class, uuid.UUID):
        value = hw_class
    elif isinstance(hw_class, (bytes, bytearray)):
        if len(hw_class) != 16:
            raise InvalidArgument(f"hw_class must be 16 bytes, got {len(hw_class)}")
        value = uuid.UUID(bytes=bytes(hw_class))
    elif isinstance(hw_class, str):
        return parse_hw_class(hw_class)
    else:
        raise InvalidArgument(f"hw_class must be a UUID, got {type(hw_class).__name__}")
    if value.int == 0:
        raise InvalidArgument("the nil UUID is not a hardware class id")
    return value


# --------------------------------------------------------------------------- build / parse / verify


def build(
    payload: bytes,
    *,
    hw_class: uuid.UUID | str | bytes,
    firmware_version: int,
    security_counter: int,
    private_key: PrivateKey,
    base_digest: bytes | None = None,
) -> bytes:
    """Build and sign an envelope; a ``base_digest`` (SHA-256 of the base image) makes a delta."""
    payload = bytes(payload)
    cls = _as_uuid(hw_class)
    _check_u32("firmware_version", firmware_version)
    _check_u32("security_counter", security_counter)
    if len(payload) > U32_MAX - HEADER_SIZE - SIGNATURE_SIZE:
        raise InvalidArgument(f"payload of {len(payload)} bytes does not fit a u32 length")
    if base_digest is not None:
        base_digest = bytes(base_digest)
        if len(base_digest) != DIGEST_SIZE:
            raise InvalidArgument(
                f"base_digest must be {DIGEST_SIZE} bytes, got {len(base_digest)}"
            )
        if base_digest == ZERO_DIGEST:
            raise InvalidArgument("base_digest must not be all zeros")
    algorithm = algorithm_of(private_key)
    unsigned = Envelope(
        payload_kind=PayloadKind.DELTA if base_digest is not None else PayloadKind.FULL,
        algorithm=algorithm,
        key_id=key_id(private_key),
        hw_class=cls,
        firmware_version=firmware_version,
        security_counter=security_counter,
        payload_digest=hashlib.sha256(payload).digest(),
        base_digest=base_digest,
        payload=payload,
        signature=b"",
    )
    signed = unsigned.signed_bytes()
    return signed + sign(private_key, signed)


def parse(data: bytes) -> Envelope:
    """Decode an envelope's structure (no signature check). Raises only :class:`DecodeError`."""
    data = bytes(data)
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise _err("magic", 0,
                   f"expected {MAGIC!r}, got {data[:4]!r}: not a proxyota image envelope")
    if len(data) <= OFFSETS["format_version"]:
        raise _err("format_version", len(data), "truncated before the format version")
    version = data[OFFSETS["format_version"]]
    if version != FORMAT_VERSION:
        raise _err("format_version", OFFSETS["format_version"],
                   f"unsupported format version {version} (this reader knows {FORMAT_VERSION})")
    if len(data) < HEADER_SIZE:
        raise _err("header", len(data),
                   f"truncated: {len(data)} bytes, the header alone is {HEADER_SIZE}")
    (_magic, _ver, kind, alg, reserved, kid, hw, fw, sc, length, pdigest, bdigest) = (
        _HEADER.unpack_from(data, 0)
    )
    try:
        payload_kind = PayloadKind(kind)
    except ValueError:
        raise _err("payload_kind", OFFSETS["payload_kind"],
                   f"unknown payload kind {kind} (0 full, 1 delta)") from None
    try:
        algorithm = SignatureAlgorithm(alg)
    except ValueError:
        raise _err("signature_algorithm", OFFSETS["signature_algorithm"],
                   f"unknown signature algorithm {alg} (1 Ed25519, 2 ECDSA P-256)") from None
    if reserved != 0:
        raise _err("reserved", OFFSETS["reserved"], f"must be 0, got {reserved}")
    if payload_kind == PayloadKind.FULL and bdigest != ZERO_DIGEST:
        raise _err("base_digest", OFFSETS["base_digest"], "must be all zeros for a full image")
    if payload_kind == PayloadKind.DELTA and bdigest == ZERO_DIGEST:
        raise _err("base_digest", OFFSETS["base_digest"], "a delta must name its base image")
    payload_end = HEADER_SIZE + length
    total = payload_end + SIGNATURE_SIZE
    if len(data) < payload_end:
        raise _err("payload", len(data),
                   f"truncated: payload_length {length} needs bytes {HEADER_SIZE}..{payload_end}, "
                   f"the data ends at {len(data)}")
    if len(data) < total:
        raise _err("signature", len(data),
                   f"truncated: the signature needs bytes {payload_end}..{total}, "
                   f"the data ends at {len(data)}")
    if len(data) > total:
        raise _err("signature", total,
                   f"{len(data) - total} unexpected bytes after the signature "
                   f"(payload_length {length} makes the envelope {total} bytes)")
    return Envelope(
        payload_kind=payload_kind,
        algorithm=algorithm,
        key_id=kid,
        hw_class=uuid.UUID(bytes=hw),
        firmware_version=fw,
        security_counter=sc,
        payload_digest=pdigest,
        base_digest=bdigest if payload_kind == PayloadKind.DELTA else None,
        payload=data[HEADER_SIZE:payload_end],
        signature=data[payload_end:total],
    )


def verify(data: bytes, public_keys: PublicKey | Iterable[PublicKey]) -> Envelope:
    """Parse and authenticate an envelope with one public key or several (picked by key id).

    Raises :class:`DecodeError` (malformed), :class:`UnknownKeyError` (no key with the
    envelope's key id / algorithm), :class:`PayloadDigestMismatch` or
    :class:`BadSignatureError`. Returns the envelope when everything holds.
    """
    env = parse(data)
    key = select_key(public_keys, env.key_id, env.algorithm)
    if hashlib.sha256(env.payload).digest() != env.payload_digest:
        raise PayloadDigestMismatch(
            "payload does not hash to payload_digest (byte 44): payload or digest altered"
        )
    verify_signature(key, bytes(data)[: HEADER_SIZE + env.payload_length], env.signature)
    return env


# --------------------------------------------------------------------------- Zigbee OTA sub-element

ZIGBEE_OTA_MAGIC = b"\x1e\xf1\xee\x0b"  # 0x0BEEF11E little-endian
ZIGBEE_HEADER_LENGTH_OFFSET = 6  # u16
ZIGBEE_TOTAL_SIZE_OFFSET = 52  # u32, includes the OTA header
ZIGBEE_MIN_HEADER = 56
ZIGBEE_SIGNATURE_TAG = 0xF519  # manufacturer-specific range 0xF000-0xFFFF
ZIGBEE_SIGNATURE_FORMAT = 1
ZIGBEE_SIGNATURE_VALUE_SIZE = 1 + 1 + KEY_ID_SIZE + SIGNATURE_SIZE  # 74
ZIGBEE_SIGNATURE_ELEMENT_SIZE = 6 + ZIGBEE_SIGNATURE_VALUE_SIZE  # 80
_ZB_PREFIX = struct.Struct("<HIBB8s")  # tag, length, format, algorithm, key id (16 bytes)


@dataclass(frozen=True)
class ZigbeeSignature:
    algorithm: SignatureAlgorithm
    key_id: bytes
    signature: bytes = field(repr=False)


def parse_zigbee_signature_element(value: bytes) -> ZigbeeSignature:
    """Decode the *value* of a 0xF519 sub-element (the bytes after its tag and length)."""
    value = bytes(value)
    cmd = "zigbee signature sub-element"
    if len(value) != ZIGBEE_SIGNATURE_VALUE_SIZE:
        raise DecodeError(f"value is {len(value)} bytes, expected {ZIGBEE_SIGNATURE_VALUE_SIZE}",
                          command=cmd, offset=0)
    if value[0] != ZIGBEE_SIGNATURE_FORMAT:
        raise DecodeError(f"unknown format {value[0]} (expected {ZIGBEE_SIGNATURE_FORMAT})",
                          command=cmd, offset=0)
    try:
        algorithm = SignatureAlgorithm(value[1])
    except ValueError:
        raise DecodeError(
            f"unknown signature algorithm {value[1]}", command=cmd, offset=1
        ) from None
    return ZigbeeSignature(algorithm, value[2:10], value[10:])


def _zigbee_total_size(ota: bytes, what: str) -> tuple[int, int]:
    cmd = f"zigbee OTA {what}"
    if len(ota) < ZIGBEE_MIN_HEADER:
        raise DecodeError(f"{len(ota)} bytes is shorter than an OTA header ({ZIGBEE_MIN_HEADER})",
                          command=cmd, offset=len(ota))
    if ota[:4] != ZIGBEE_OTA_MAGIC:
        raise DecodeError(f"not a Zigbee OTA file (magic {ota[:4].hex()})", command=cmd, offset=0)
    (header_length,) = struct.unpack_from("<H", ota, ZIGBEE_HEADER_LENGTH_OFFSET)
    (total,) = struct.unpack_from("<I", ota, ZIGBEE_TOTAL_SIZE_OFFSET)
    if header_length < ZIGBEE_MIN_HEADER:
        raise DecodeError(f"header length {header_length} < {ZIGBEE_MIN_HEADER}",
                          command=cmd, offset=ZIGBEE_HEADER_LENGTH_OFFSET)
    return header_length, total


def _zigbee_signed_prefix_tail(algorithm: SignatureAlgorithm, kid: bytes) -> bytes:
    return _ZB_PREFIX.pack(ZIGBEE_SIGNATURE_TAG, ZIGBEE_SIGNATURE_VALUE_SIZE,
                           ZIGBEE_SIGNATURE_FORMAT, int(algorithm), kid)


def build_zigbee_signature_element(ota_prefix: bytes, private_key: PrivateKey) -> bytes:
    """The 80-byte sub-element to append to ``ota_prefix``.

    ``ota_prefix`` is the OTA file as it will precede the element; its header's
    total_image_size must already count the element (``len(ota_prefix) + 80``).
    """
    ota_prefix = bytes(ota_prefix)
    header_length, total = _zigbee_total_size(ota_prefix, "file")
    expected = len(ota_prefix) + ZIGBEE_SIGNATURE_ELEMENT_SIZE
    if total != expected:
        raise InvalidArgument(
            f"total_image_size is {total}; with the signature sub-element it must be {expected}"
        )
    if header_length > len(ota_prefix):
        raise InvalidArgument(f"header length {header_length} exceeds the file ({len(ota_prefix)})")
    tail = _zigbee_signed_prefix_tail(algorithm_of(private_key), key_id(private_key))
    return tail + sign(private_key, ota_prefix + tail)


def sign_zigbee_ota(ota_file: bytes, private_key: PrivateKey) -> bytes:
    """Append the signature sub-element to a Zigbee OTA file, updating total_image_size."""
    ota = bytearray(ota_file)
    header_length, total = _zigbee_total_size(bytes(ota), "file")
    if total != len(ota):
        raise InvalidArgument(
            f"total_image_size {total} differs from the file length {len(ota)}; "
            "sign a file without trailing bytes"
        )
    if header_length > len(ota):
        raise InvalidArgument(f"header length {header_length} exceeds the file ({len(ota)})")
    if _has_signature_element(bytes(ota), header_length):
        raise InvalidArgument("the file already ends with a proxyota signature sub-element")
    struct.pack_into("<I", ota, ZIGBEE_TOTAL_SIZE_OFFSET, len(ota) + ZIGBEE_SIGNATURE_ELEMENT_SIZE)
    return bytes(ota) + build_zigbee_signature_element(bytes(ota), private_key)


def _has_signature_element(ota: bytes, header_length: int) -> bool:
    start = len(ota) - ZIGBEE_SIGNATURE_ELEMENT_SIZE
    if start < header_length:
        return False
    tag, length = struct.unpack_from("<HI", ota, start)
    return tag == ZIGBEE_SIGNATURE_TAG and length == ZIGBEE_SIGNATURE_VALUE_SIZE


def verify_zigbee_ota(
    ota_file: bytes, public_keys: PublicKey | Iterable[PublicKey]
) -> ZigbeeSignature:
    """Check the signature sub-element that ends a Zigbee OTA image.

    The image is the first total_image_size bytes (what an OTA server sends; bytes after
    it are not part of the image). Its last sub-element must be tag 0xF519; the signature
    covers every byte of the image before the signature itself.
    """
    ota = bytes(ota_file)
    header_length, total = _zigbee_total_size(ota, "file")
    cmd = "zigbee OTA signature"
    if total > len(ota):
        raise DecodeError(f"total_image_size {total} exceeds the file ({len(ota)} bytes)",
                          command=cmd, offset=ZIGBEE_TOTAL_SIZE_OFFSET)
    image = ota[:total]
    if not _has_signature_element(image, header_length):
        raise DecodeError(
            f"the image does not end with a 0x{ZIGBEE_SIGNATURE_TAG:04X} signature sub-element",
            command=cmd, offset=max(0, total - ZIGBEE_SIGNATURE_ELEMENT_SIZE))
    start = total - ZIGBEE_SIGNATURE_ELEMENT_SIZE
    sig = parse_zigbee_signature_element(image[start + 6:])
    key = select_key(public_keys, sig.key_id, sig.algorithm)
    verify_signature(key, image[: total - SIGNATURE_SIZE], sig.signature)
    return sig
