"""Image envelope: round trips, strict decoding, tampering, versions/classes, Zigbee sub-element."""

from __future__ import annotations

import hashlib
import struct
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxyota.errors import DecodeError, InvalidArgument
from proxyota.images import envelope as E
from proxyota.images import signing
from proxyota.images.signing import (
    BadSignatureError,
    SignatureAlgorithm,
    UnknownKeyError,
    VerificationError,
)

ED_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
EC_KEY = ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1())
KEYS = {SignatureAlgorithm.ED25519: ED_KEY, SignatureAlgorithm.ECDSA_P256_SHA256: EC_KEY}
HW = uuid.UUID("669d8e58-f8b1-5858-826a-2ee7071abf7b")
PROFILE = settings(derandomize=True, max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])


def make(payload=b"firmware", key=ED_KEY, **kw):
    args = dict(hw_class=HW, firmware_version=0x01020003, security_counter=7, private_key=key)
    args.update(kw)
    return E.build(payload, **args)


# --------------------------------------------------------------------------- round trips


def test_layout_constants():
    assert E.HEADER_SIZE == 108
    end = 0
    for name, offset, size in E.HEADER_LAYOUT:
        assert offset == end, name
        end = offset + size
    assert end == E.HEADER_SIZE
    assert E.OFFSETS["firmware_version"] % 4 == 0 and E.OFFSETS["payload_length"] % 4 == 0


@pytest.mark.parametrize("alg", list(SignatureAlgorithm))
@pytest.mark.parametrize("delta", [False, True])
def test_round_trip_and_verify(alg, delta):
    key = KEYS[alg]
    base = hashlib.sha256(b"old firmware").digest() if delta else None
    data = make(b"\x00\x01payload\xff" * 10, key=key, base_digest=base, security_counter=9)
    assert len(data) == 108 + 100 + 64
    env = E.verify(data, key.public_key())
    assert env.algorithm == alg
    assert env.key_id == signing.key_id(key)
    assert env.hw_class == HW
    assert env.firmware_version == 0x01020003 and env.security_counter == 9
    assert env.payload == b"\x00\x01payload\xff" * 10
    assert env.payload_digest == hashlib.sha256(env.payload).digest()
    assert env.payload_kind == (E.PayloadKind.DELTA if delta else E.PayloadKind.FULL)
    assert env.base_digest == base
    assert env.to_bytes() == data
    assert data[:4] == b"PXOE"
    assert struct.unpack_from("<III", data, 32) == (0x01020003, 9, 100)


def test_empty_payload_is_allowed():
    env = E.verify(make(b""), ED_KEY.public_key())
    assert env.payload == b"" and env.payload_length == 0


def test_verify_picks_key_among_several():
    others = [signing.generate_key().public_key() for _ in range(3)]
    data = make(key=EC_KEY)
    env = E.verify(data, [*others, EC_KEY.public_key(), ED_KEY.public_key()])
    assert env.algorithm == SignatureAlgorithm.ECDSA_P256_SHA256
    with pytest.raises(UnknownKeyError):
        E.verify(data, others)


def test_verify_refuses_private_key():
    with pytest.raises(InvalidArgument, match="private key"):
        E.verify(make(), ED_KEY)  # type: ignore[arg-type]


@PROFILE
@given(
    payload=st.binary(max_size=300),
    hw=st.binary(min_size=16, max_size=16).filter(any),
    version=st.integers(0, E.U32_MAX),
    counter=st.integers(0, E.U32_MAX),
    base=st.none() | st.binary(min_size=32, max_size=32).filter(any),
    alg=st.sampled_from(list(SignatureAlgorithm)),
)
def test_parse_build_property(payload, hw, version, counter, base, alg):
    key = KEYS[alg]
    data = E.build(payload, hw_class=hw, firmware_version=version, security_counter=counter,
                   private_key=key, base_digest=base)
    env = E.parse(data)
    assert (env.payload, env.hw_class.bytes, env.firmware_version, env.security_counter,
            env.base_digest, env.algorithm, env.key_id) == (
        payload, hw, version, counter, base, alg, signing.key_id(key))
    assert env.is_delta == (base is not None)
    assert env.to_bytes() == data
    assert E.verify(data, key.public_key()) == env


# --------------------------------------------------------------------------- strict decoding

VALID = make(b"0123456789")


@PROFILE
@given(st.binary(max_size=400))
def test_parse_arbitrary_bytes_raises_only_decode_error(data):
    try:
        env = E.parse(data)
    except DecodeError:
        return
    assert env.to_bytes() == data


@PROFILE
@given(
    prefix=st.integers(0, len(VALID)),
    junk=st.binary(max_size=80),
    edits=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=4),
)
def test_mutated_envelopes_raise_only_defined_errors(prefix, junk, edits):
    data = bytearray(VALID)
    for i, v in edits:
        data[i] = v
    data = bytes(data[:prefix]) + junk
    try:
        env = E.verify(data, ED_KEY.public_key())
    except (DecodeError, VerificationError):
        return
    assert data == VALID and env.payload == b"0123456789"


def _with(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


@pytest.mark.parametrize(
    "mutate, field, offset",
    [
        (lambda d: b"", "magic", 0),
        (lambda d: b"PXO", "magic", 0),
        (lambda d: _with(d, 0, b"PXOF"), "magic", 0),
        (lambda d: d[:4], "format_version", 4),
        (lambda d: _with(d, 4, b"\x02"), "format_version", 4),
        (lambda d: d[:50], "header", 50),
        (lambda d: _with(d, 5, b"\x02"), "payload_kind", 5),
        (lambda d: _with(d, 6, b"\x00"), "signature_algorithm", 6),
        (lambda d: _with(d, 6, b"\x03"), "signature_algorithm", 6),
        (lambda d: _with(d, 7, b"\x01"), "reserved", 7),
        (lambda d: _with(d, 76 + 31, b"\x01"), "base_digest", 76),
        (lambda d: _with(d, 5, b"\x01"), "base_digest", 76),  # delta with a zero base
        (lambda d: d[:112], "payload", 112),
        (lambda d: d[:130], "signature", 130),
        (lambda d: d + b"\x00", "signature", 108 + 10 + 64),
        (lambda d: _with(d, 40, struct.pack("<I", 0xFFFFFFFF)), "payload", 182),
    ],
)
def test_decode_errors_name_field_and_offset(mutate, field, offset):
    with pytest.raises(DecodeError) as exc:
        E.parse(mutate(VALID))
    assert exc.value.command == f"envelope {field}"
    assert exc.value.offset == offset
    assert f"envelope {field}, byte {offset}:" in str(exc.value)


@pytest.mark.parametrize("alg", list(SignatureAlgorithm))
def test_every_bit_flip_is_rejected(alg):
    key = KEYS[alg]
    data = make(b"tiny fw!", key=key, base_digest=hashlib.sha256(b"base").digest())
    pub = key.public_key()
    E.verify(data, pub)
    for i in range(len(data)):
        for bit in range(8):
            tampered = bytearray(data)
            tampered[i] ^= 1 << bit
            with pytest.raises((DecodeError, VerificationError)):
                E.verify(bytes(tampered), pub)


def test_every_truncation_and_extension_is_rejected():
    pub = ED_KEY.public_key()
    for n in range(len(VALID)):
        with pytest.raises(DecodeError):
            E.verify(VALID[:n], pub)
    with pytest.raises(DecodeError, match="unexpected bytes"):
        E.verify(VALID + b"\x00", pub)


def test_specific_verification_errors():
    pub = ED_KEY.public_key()
    with pytest.raises(E.PayloadDigestMismatch):
        E.verify(_with(VALID, 108, b"X"), pub)
    with pytest.raises(BadSignatureError):
        E.verify(_with(VALID, 36, b"\x08"), pub)  # security counter raised by the gateway
    with pytest.raises(BadSignatureError):
        E.verify(VALID[:-1] + bytes([VALID[-1] ^ 0x80]), pub)
    with pytest.raises(UnknownKeyError):
        E.verify(VALID, signing.generate_key().public_key())
    # same key id, different algorithm id in the header -> refused before any crypto
    swapped = _with(VALID, 6, b"\x02")
    with pytest.raises(UnknownKeyError, match="is ed25519"):
        E.verify(swapped, pub)


def test_build_rejects_bad_arguments():
    with pytest.raises(InvalidArgument):
        make(firmware_version=-1)
    with pytest.raises(InvalidArgument):
        make(security_counter=1 << 32)
    with pytest.raises(InvalidArgument):
        make(hw_class=uuid.UUID(int=0))
    with pytest.raises(InvalidArgument):
        make(hw_class=b"short")
    with pytest.raises(InvalidArgument):
        make(base_digest=bytes(32))
    with pytest.raises(InvalidArgument):
        make(base_digest=b"\x01" * 31)
    with pytest.raises(InvalidArgument):
        make(private_key=ED_KEY.public_key())


# --------------------------------------------------------------------------- versions, classes


def test_semver_mapping():
    assert E.version_from_semver("1.2.3") == 0x01020003
    assert E.version_from_semver("v255.255.65535") == E.U32_MAX
    assert E.version_to_semver(0x01020003) == "1.2.3"
    assert E.parse_version("42") == 42 and E.parse_version("0x01020003") == 0x01020003
    assert E.parse_version("1.2.3") == 0x01020003
    assert E.version_from_semver("1.10.0") > E.version_from_semver("1.9.65535")
    for bad in ("1.2", "1.2.3-rc1", "256.0.0", "0.256.0", "0.0.65536", "x"):
        with pytest.raises(InvalidArgument):
            E.parse_version(bad)
    with pytest.raises(InvalidArgument):
        E.parse_version(str(1 << 32))


def test_class_id_follows_suit_uuid5_derivation():
    # vendor-id of "arm.com" as printed in the SUIT manifest examples (RFC 9124 /
    # draft-ietf-suit-manifest): fa6b4a53-d5ad-5fdf-be9d-e663e4d41ffe
    assert str(E.vendor_id("arm.com")) == "fa6b4a53-d5ad-5fdf-be9d-e663e4d41ffe"
    assert E.class_id("arm.com", "m") == uuid.uuid5(E.vendor_id("arm.com"), "m")
    assert E.parse_hw_class(HW.hex) == HW == E.parse_hw_class(f"urn:uuid:{HW}")
    with pytest.raises(InvalidArgument):
        E.parse_hw_class("not-a-uuid")
    with pytest.raises(InvalidArgument):
        E.parse_hw_class(str(uuid.UUID(int=0)))


# --------------------------------------------------------------------------- Zigbee sub-element


def ota_file(body: bytes = b"Hello, Zigbee!!\n", header_length: int = 56) -> bytes:
    sub = struct.pack("<HI", 0x0000, len(body)) + body
    extra = bytes(header_length - 56)
    header = struct.pack("<IHHHHHIH32sI", 0x0BEEF11E, 0x0100, header_length, 0, 0x1234, 1,
                         0x01020003, 2, b"proxyota".ljust(32, b"\0"),
                         header_length + len(sub)) + extra
    return header + sub


@pytest.mark.parametrize("alg", list(SignatureAlgorithm))
def test_zigbee_sign_and_verify(alg):
    key = KEYS[alg]
    ota = ota_file()
    signed = E.sign_zigbee_ota(ota, key)
    assert len(signed) == len(ota) + 80
    assert struct.unpack_from("<I", signed, 52)[0] == len(signed)
    assert signed[len(ota):len(ota) + 6] == struct.pack("<HI", 0xF519, 74)
    sig = E.verify_zigbee_ota(signed, [signing.generate_key().public_key(), key.public_key()])
    assert sig.algorithm == alg and sig.key_id == signing.key_id(key)
    # the signed bytes are everything before the signature
    signing.verify_signature(key.public_key(), signed[:-64], signed[-64:])
    # the element value parses for a sub-element parser
    assert E.parse_zigbee_signature_element(signed[len(ota) + 6:]) == sig
    # trailing bytes after total_image_size are not part of the image
    E.verify_zigbee_ota(signed + b"trailer", key.public_key())


def test_zigbee_every_byte_flip_is_rejected():
    signed = E.sign_zigbee_ota(ota_file(b"abc"), ED_KEY)
    pub = ED_KEY.public_key()
    for i in range(len(signed)):
        tampered = bytearray(signed)
        tampered[i] ^= 0x01
        with pytest.raises((DecodeError, VerificationError)):
            E.verify_zigbee_ota(bytes(tampered), pub)


def test_zigbee_builder_and_errors():
    ota = ota_file()
    prefix = bytearray(ota)
    struct.pack_into("<I", prefix, 52, len(ota) + 80)
    element = E.build_zigbee_signature_element(bytes(prefix), ED_KEY)
    assert bytes(prefix) + element == E.sign_zigbee_ota(ota, ED_KEY)
    with pytest.raises(InvalidArgument, match="must be"):
        E.build_zigbee_signature_element(ota, ED_KEY)  # total size not yet counting it
    with pytest.raises(InvalidArgument, match="already ends"):
        E.sign_zigbee_ota(E.sign_zigbee_ota(ota, ED_KEY), ED_KEY)
    with pytest.raises(InvalidArgument, match="trailing"):
        E.sign_zigbee_ota(ota + b"x", ED_KEY)
    with pytest.raises(DecodeError, match="not a Zigbee OTA file"):
        E.sign_zigbee_ota(b"\x00" * 60, ED_KEY)
    with pytest.raises(DecodeError, match="does not end with"):
        E.verify_zigbee_ota(ota, ED_KEY.public_key())
    with pytest.raises(DecodeError, match="shorter than an OTA header"):
        E.verify_zigbee_ota(ota[:20], ED_KEY.public_key())
    with pytest.raises(DecodeError, match="unknown format"):
        E.parse_zigbee_signature_element(b"\x02" + bytes(73))
    with pytest.raises(DecodeError, match="expected 74"):
        E.parse_zigbee_signature_element(bytes(10))
    # cross-use: an envelope signature never verifies as a Zigbee one (different magic)
    with pytest.raises(DecodeError):
        E.verify_zigbee_ota(make(), ED_KEY.public_key())


@PROFILE
@given(st.binary(max_size=200))
def test_zigbee_verify_arbitrary_bytes_only_defined_errors(data):
    with pytest.raises((DecodeError, VerificationError)):
        E.verify_zigbee_ota(b"\x1e\xf1\xee\x0b" + data, ED_KEY.public_key())
