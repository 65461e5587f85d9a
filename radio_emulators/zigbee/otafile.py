"""The emulated node's view of a Zigbee OTA upgrade file: header parsing, sub-elements,
and the checks a node runs before it accepts a downloaded image; plus a builder that
plays the vendor (tests and benchmarks make their images with it).

Written from the format facts (ZCL OTA Upgrade cluster, file format; proxyota's
docs/image-envelope.md for the end-to-end signature sub-element 0xF519), independently of
the gateway's parser. All integers little-endian.

Header (56 bytes + optional fields): magic u32 0x0BEEF11E, header_version u16, header_length
u16, field_control u16, manufacturer_id u16, image_type u16, file_version u32, stack_version
u16, header_string 32 B, total_image_size u32 (includes the header); then, by field-control
bit: b0 security_credential_version u8, b1 upgrade_file_destination EUI64, b2 minimum and
maximum hardware version u16 each. Sub-elements follow: tag u16, length u32, value.

Checks (`verify_image`): the size is the header's total_image_size; the header names the
image the server offered; the node's hardware version is in the header's range; an image
integrity code (tag 0x0003, 16-byte AES-MMO) matches -- computed over the bytes before the
sub-element's value, or before its 6-byte tag/length header (files differ; both are
accepted); a provisioned SHA-256 of the whole image matches; a signature sub-element 0xF519
verifies with one of the node's trusted public keys (required when the node has keys).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature,
                                                             encode_dss_signature)

from radio_emulators.zigbee.aesmmo import aes_mmo

__all__ = [
    "MAGIC", "HEADER_MIN", "TAG_UPGRADE_IMAGE", "TAG_INTEGRITY_CODE", "TAG_SIGNATURE",
    "OtaFileError", "OtaHeader", "SubElement", "parse_header", "header_length_of",
    "sub_elements", "verify_image", "build_ota_image", "key_id", "raw_public_key",
]

MAGIC = 0x0BEEF11E
HEADER_MIN = 56
TAG_UPGRADE_IMAGE = 0x0000
TAG_INTEGRITY_CODE = 0x0003
TAG_SIGNATURE = 0xF519
_SIG_VALUE_LEN = 74           # format 1, algorithm 1, key id 8, signature 64
ALG_ED25519 = 1
ALG_ECDSA_P256 = 2


class OtaFileError(ValueError):
    """The bytes are not a well-formed OTA file (names the field and offset)."""


@dataclass(frozen=True)
class OtaHeader:
    header_version: int
    header_length: int
    field_control: int
    manufacturer_id: int
    image_type: int
    file_version: int
    stack_version: int
    header_string: bytes
    total_image_size: int
    security_credential_version: int | None = None
    upgrade_file_destination: bytes | None = None
    minimum_hardware_version: int | None = None
    maximum_hardware_version: int | None = None


@dataclass(frozen=True)
class SubElement:
    tag: int
    offset: int          # of the tag in the file
    value: bytes

    @property
    def value_offset(self) -> int:
        return self.offset + 6


def header_length_of(data: bytes) -> int | None:
    """The header length once the first 8 bytes are known (None before)."""
    if len(data) < 8:
        return None
    return struct.unpack_from("<H", data, 6)[0]


def parse_header(data: bytes) -> OtaHeader:
    if len(data) < HEADER_MIN:
        raise OtaFileError(f"OTA header: {len(data)} bytes, need {HEADER_MIN} (offset {len(data)})")
    magic, hver, hlen, fc, mfr, itype, ver, stack = struct.unpack_from("<IHHHHHIH", data, 0)
    if magic != MAGIC:
        raise OtaFileError(f"OTA header magic: 0x{magic:08X} is not 0x0BEEF11E (offset 0)")
    hstr = bytes(data[20:52])
    total = struct.unpack_from("<I", data, 52)[0]
    need = HEADER_MIN + (1 if fc & 1 else 0) + (8 if fc & 2 else 0) + (4 if fc & 4 else 0)
    if hlen < need:
        raise OtaFileError(f"OTA header_length: {hlen} < {need} required by field control (offset 6)")
    if len(data) < hlen:
        raise OtaFileError(f"OTA header: {len(data)} bytes, header_length {hlen} (offset {len(data)})")
    pos = HEADER_MIN
    cred = dest = hw_min = hw_max = None
    if fc & 1:
        cred = data[pos]
        pos += 1
    if fc & 2:
        dest = bytes(data[pos:pos + 8])
        pos += 8
    if fc & 4:
        hw_min, hw_max = struct.unpack_from("<HH", data, pos)
    if total < hlen:
        raise OtaFileError(f"OTA total_image_size {total} < header_length {hlen} (offset 52)")
    return OtaHeader(hver, hlen, fc, mfr, itype, ver, stack, hstr, total, cred, dest, hw_min, hw_max)


def sub_elements(data: bytes, header: OtaHeader | None = None) -> list[SubElement]:
    header = header or parse_header(data)
    end = min(len(data), header.total_image_size)
    pos = header.header_length
    out: list[SubElement] = []
    while pos < end:
        if pos + 6 > end:
            raise OtaFileError(f"OTA sub-element header truncated (offset {pos})")
        tag, length = struct.unpack_from("<HI", data, pos)
        if pos + 6 + length > end:
            raise OtaFileError(f"OTA sub-element 0x{tag:04X}: length {length} overruns the image (offset {pos + 2})")
        out.append(SubElement(tag, pos, bytes(data[pos + 6:pos + 6 + length])))
        pos += 6 + length
    return out


def key_id(raw_public_key_bytes: bytes) -> bytes:
    return hashlib.sha256(raw_public_key_bytes).digest()[:8]


def raw_public_key(public_key) -> bytes:
    """Raw bytes of an Ed25519 (32 B) or P-256 (65 B uncompressed point) public key."""
    from cryptography.hazmat.primitives import serialization as ser
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return public_key.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return public_key.public_bytes(ser.Encoding.X962, ser.PublicFormat.UncompressedPoint)
    raise TypeError("public key must be Ed25519 or EC P-256")


def _verify_signature(raw_key: bytes, algorithm: int, message: bytes, sig: bytes) -> bool:
    try:
        if algorithm == ALG_ED25519 and len(raw_key) == 32:
            ed25519.Ed25519PublicKey.from_public_bytes(raw_key).verify(sig, message)
            return True
        if algorithm == ALG_ECDSA_P256 and len(raw_key) == 65:
            pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw_key)
            r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
            if r == 0 or s == 0:
                return False
            pub.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def verify_image(data: bytes, *, manufacturer_id: int | None = None, image_type: int | None = None,
                 file_version: int | None = None, image_size: int | None = None,
                 hardware_version: int | None = None, sha256: bytes | None = None,
                 trusted_keys: list[bytes] | tuple[bytes, ...] = ()) -> str | None:
    """None when the node accepts `data`, else the reason it rejects it."""
    try:
        header = parse_header(data)
    except OtaFileError as exc:
        return f"header: {exc}"
    if image_size is not None and len(data) != image_size:
        return f"size {len(data)} != offered image size {image_size}"
    if header.total_image_size != len(data):
        return f"size {len(data)} != header total_image_size {header.total_image_size}"
    for name, want, got in (("manufacturer_id", manufacturer_id, header.manufacturer_id),
                            ("image_type", image_type, header.image_type),
                            ("file_version", file_version, header.file_version)):
        if want is not None and want != got:
            return f"header {name} 0x{got:X} != offered 0x{want:X}"
    if hardware_version is not None and header.minimum_hardware_version is not None:
        if not header.minimum_hardware_version <= hardware_version <= header.maximum_hardware_version:
            return (f"hardware version {hardware_version} outside {header.minimum_hardware_version}"
                    f"..{header.maximum_hardware_version}")
    try:
        elements = sub_elements(data, header)
    except OtaFileError as exc:
        return f"sub-elements: {exc}"
    if sha256 is not None and hashlib.sha256(data).digest() != sha256:
        return "SHA-256 differs from the provisioned digest"
    for el in elements:
        if el.tag == TAG_INTEGRITY_CODE:
            if len(el.value) != 16:
                return "integrity code sub-element is not 16 bytes"
            if el.value not in (aes_mmo(data[:el.offset]), aes_mmo(data[:el.value_offset])):
                return "image integrity code (AES-MMO) mismatch"
    sig = [el for el in elements if el.tag == TAG_SIGNATURE]
    if trusted_keys:
        if not sig:
            return "no signature sub-element 0xF519 but the node requires one"
        el = sig[-1]
        if len(el.value) != _SIG_VALUE_LEN or el.value[0] != 1 or el.value_offset + _SIG_VALUE_LEN != len(data):
            return "malformed or misplaced signature sub-element 0xF519"
        algorithm, kid, signature = el.value[1], el.value[2:10], el.value[10:]
        keys = [k for k in trusted_keys if key_id(k) == kid]
        if not keys:
            return f"signature key id {kid.hex()} is not trusted"
        if not any(_verify_signature(k, algorithm, bytes(data[:len(data) - 64]), signature) for k in keys):
            return "signature does not verify"
    return None


def build_ota_image(manufacturer_id: int, image_type: int, file_version: int, payload: bytes, *,
                    stack_version: int = 2, header_string: bytes = b"emulated vendor image",
                    hardware_versions: tuple[int, int] | None = None, integrity_code: bool = True,
                    integrity_covers_tag: bool = True, signing_key=None,
                    extra_sub_elements: tuple[tuple[int, bytes], ...] = ()) -> bytes:
    """A vendor's OTA file: header, upgrade image sub-element (0x0000) with `payload`, any
    extra sub-elements, then optionally the AES-MMO integrity code (0x0003) and last the
    0xF519 signature (Ed25519 or ECDSA P-256 private key from `cryptography`)."""
    fc = 0
    opt = b""
    if hardware_versions is not None:
        fc |= 4
        opt += struct.pack("<HH", *hardware_versions)
    hlen = HEADER_MIN + len(opt)
    body = struct.pack("<HI", TAG_UPGRADE_IMAGE, len(payload)) + bytes(payload)
    for tag, value in extra_sub_elements:
        body += struct.pack("<HI", tag, len(value)) + bytes(value)
    total = hlen + len(body) + (22 if integrity_code else 0) + (6 + _SIG_VALUE_LEN if signing_key else 0)
    header = struct.pack("<IHHHHHIH", MAGIC, 0x0100, hlen, fc, manufacturer_id, image_type,
                         file_version, stack_version)
    header += bytes(header_string[:32]).ljust(32, b"\x00") + struct.pack("<I", total) + opt
    data = header + body
    if integrity_code:
        tl = struct.pack("<HI", TAG_INTEGRITY_CODE, 16)
        digest = aes_mmo(data + tl) if integrity_covers_tag else aes_mmo(data)
        data += tl + digest
    if signing_key is not None:
        raw = raw_public_key(signing_key.public_key())
        alg = ALG_ED25519 if isinstance(signing_key, ed25519.Ed25519PrivateKey) else ALG_ECDSA_P256
        data += struct.pack("<HI", TAG_SIGNATURE, _SIG_VALUE_LEN) + bytes([1, alg]) + key_id(raw)
        if alg == ALG_ED25519:
            signature = signing_key.sign(data)
        else:
            r, s = decode_dss_signature(signing_key.sign(data, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        data += signature
    assert len(data) == total
    return data
