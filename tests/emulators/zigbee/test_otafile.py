"""The node's OTA file checks: images built by the emulated vendor parse with zigpy's
parser (an external reference), and every check a node runs catches what it should."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from zigpy.ota.image import parse_ota_image

from radio_emulators.zigbee import otafile
from radio_emulators.zigbee.aesmmo import aes_mmo

PAYLOAD = bytes(range(256)) * 4


def build(**kw) -> bytes:
    return otafile.build_ota_image(0x1234, 0x0001, 0x00000002, PAYLOAD, **kw)


def test_image_parses_with_zigpy():
    data = build(hardware_versions=(1, 3))
    image, rest = parse_ota_image(data)
    h = image.header
    assert (h.manufacturer_id, h.image_type, h.file_version, h.image_size) == (0x1234, 1, 2, len(data))
    assert (h.minimum_hardware_version, h.maximum_hardware_version) == (1, 3) and rest == b""
    assert [e.tag_id for e in image.subelements] == [0x0000, 0x0003]
    assert image.serialize() == data
    mine = otafile.parse_header(data)
    assert (mine.header_length, mine.total_image_size) == (h.header_length, len(data))


def test_valid_image_passes_all_checks():
    data = build(hardware_versions=(1, 3))
    assert otafile.verify_image(data, manufacturer_id=0x1234, image_type=1, file_version=2, image_size=len(data),
                                hardware_version=2, sha256=hashlib.sha256(data).digest()) is None


@pytest.mark.parametrize("covers_tag", [True, False])
def test_both_integrity_code_conventions_accepted(covers_tag):
    data = build(integrity_covers_tag=covers_tag)
    assert otafile.verify_image(data) is None
    el = otafile.sub_elements(data)[-1]
    covered = data[:el.value_offset] if covers_tag else data[:el.offset]
    assert el.tag == 0x0003 and el.value == aes_mmo(covered)


def test_any_flipped_byte_is_rejected():
    data = build()
    for pos in range(0, len(data), 7):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        assert otafile.verify_image(bytes(bad)) is not None, pos
    for pos in (100, 300, len(data) - 30):           # payload and integrity code bytes
        bad = bytearray(data)
        bad[pos] ^= 0x01
        assert "integrity" in otafile.verify_image(bytes(bad))


def test_size_identity_hardware_and_digest_checks():
    data = build(hardware_versions=(1, 3))
    assert "size" in otafile.verify_image(data[:-1])
    assert "file_version" in otafile.verify_image(data, file_version=3)
    assert "hardware version 9" in otafile.verify_image(data, hardware_version=9)
    assert "SHA-256" in otafile.verify_image(data, sha256=bytes(32))
    assert "magic" in otafile.verify_image(b"\x00" * 64)


@pytest.mark.parametrize("make_key", [ed25519.Ed25519PrivateKey.generate,
                                      lambda: ec.generate_private_key(ec.SECP256R1())])
def test_signature_sub_element(make_key):
    key = make_key()
    raw = otafile.raw_public_key(key.public_key())
    data = build(signing_key=key)
    assert otafile.sub_elements(data)[-1].tag == 0xF519
    assert otafile.verify_image(data, trusted_keys=[raw]) is None
    other = otafile.raw_public_key(ed25519.Ed25519PrivateKey.generate().public_key())
    assert "not trusted" in otafile.verify_image(data, trusted_keys=[other])
    unsigned = build()
    assert "no signature" in otafile.verify_image(unsigned, trusted_keys=[raw])
    tampered = bytearray(data)
    tampered[-1] ^= 0x80                                   # the signature itself
    assert "signature does not verify" in otafile.verify_image(bytes(tampered), trusted_keys=[raw])


def test_signature_example_key_id():
    # proxyota docs/image-envelope.md: RFC 8032 section 7.1 TEST 1 public key has key id 21fe31dfa154a261
    pub = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    assert otafile.key_id(pub).hex() == "21fe31dfa154a261"


def test_malformed_headers_raise_ota_file_error():
    data = build()
    with pytest.raises(otafile.OtaFileError):
        otafile.parse_header(data[:40])
    bad = bytearray(data)
    bad[6:8] = (20).to_bytes(2, "little")
    with pytest.raises(otafile.OtaFileError):
        otafile.parse_header(bytes(bad))
    overrun = bytearray(data)
    overrun[58:62] = (10_000).to_bytes(4, "little")
    with pytest.raises(otafile.OtaFileError):
        otafile.sub_elements(bytes(overrun))
