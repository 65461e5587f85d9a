"""OTA file format: the shared real files, building, integrity variants, error reports,
and round-trip / robustness properties."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zigpy.util import aes_mmo_hash as zigpy_aes_mmo_hash

from proxyota.errors import DecodeError, InvalidArgument
from proxyota.zigbee.aes_mmo import aes_mmo_hash
from proxyota.zigbee.otafile import (
    TELINK_ENCRYPTED_TAG,
    OTAFile,
    SubElement,
    Tag,
    build,
    parse,
    tag_name,
)

from .strategies import ota_files

HYPO = settings(
    derandomize=True, deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow]
)


def sample(**overrides) -> OTAFile:
    fields = dict(
        manufacturer_code=0x1234,
        image_type=0x5678,
        file_version=0x01020304,
        header_string="proxyota test",
        subelements=[SubElement(Tag.UPGRADE_IMAGE, b"firmware bytes")],
    )
    fields.update(overrides)
    return OTAFile(**fields)


# -- the shared real files ---------------------------------------------------------------


def test_real_files_parse_and_round_trip(real_file):
    name, data = real_file
    ota = parse(data)
    assert ota.to_bytes() == data
    assert ota.total_size == len(data)
    assert ota.trailing == b""
    assert ota.problems() == []


def test_nodon_fields(nodon):
    ota = parse(nodon)
    assert (ota.manufacturer_code, ota.image_type, ota.file_version) == (0x128B, 0x0109, 0x00010300)
    assert ota.header_version == 0x0100
    assert ota.header_length == 56 and ota.field_control == 0
    assert ota.stack_version == 0x0002
    assert ota.header_text == "nodon_sin_stm32_ota"
    assert len(ota.header_string) == 32
    assert ota.total_size == 30932
    assert ota.minimum_hardware_version is None and ota.maximum_hardware_version is None
    assert [e.tag for e in ota.subelements] == [Tag.UPGRADE_IMAGE, Tag.IMAGE_INTEGRITY_CODE]
    assert [len(e.data) for e in ota.subelements] == [30848, 16]
    assert ota.subelement_offsets() == [56, 30910]
    assert ota.upgrade_image == nodon[62:30910]


def test_ubisys_fields(ubisys):
    ota = parse(ubisys)
    assert (ota.manufacturer_code, ota.image_type, ota.file_version) == (0x10F2, 0x7B2A, 0x02010230)
    assert ota.field_control == 0x0004 and ota.header_length == 60
    assert (ota.minimum_hardware_version, ota.maximum_hardware_version) == (0x0000, 0x0005)
    assert ota.security_credential_version is None and ota.upgrade_file_destination is None
    assert ota.header_text == "ubisys R0 2.0.1"
    assert ota.total_size == 114174
    assert [e.tag for e in ota.subelements] == [0xF7BD, Tag.UPGRADE_IMAGE, Tag.IMAGE_INTEGRITY_CODE]
    assert ota.subelements[0].name == "manufacturer specific"


def test_nodon_integrity_hashes_the_subelement_header(nodon):
    result = parse(nodon).verify_integrity()
    assert result.ok and result.matched == "with-header"
    assert result.stored == nodon[-16:]
    assert result.with_header == aes_mmo_hash(nodon[: len(nodon) - 16])
    assert result.without_header != result.stored


def test_ubisys_integrity_excludes_the_subelement_header(ubisys):
    result = parse(ubisys).verify_integrity()
    assert result.ok and result.matched == "without-header"
    assert result.offset == len(ubisys) - 22
    assert result.without_header == aes_mmo_hash(ubisys[: len(ubisys) - 22])
    # Both real files are >= 8 KiB: zigpy's short-padding hash cannot verify them.
    assert bytes(zigpy_aes_mmo_hash(ubisys[: len(ubisys) - 22])) != result.stored


@pytest.mark.parametrize("where", [100, -30])
def test_real_file_tampering_breaks_integrity(real_file, where):
    _, data = real_file
    tampered = bytearray(data)
    tampered[where] ^= 0x01
    result = parse(bytes(tampered)).verify_integrity()
    assert result.status == "mismatch" and not result.ok and result.matched is None


def test_real_file_rebuilt_from_fields_is_identical(real_file):
    _, data = real_file
    ota = parse(data)
    rebuilt = OTAFile(**{f.name: getattr(ota, f.name) for f in dataclasses.fields(OTAFile)})
    assert rebuilt.to_bytes() == data
    variant = ota.verify_integrity().matched
    assert ota.with_integrity_code(variant).to_bytes() == data


# -- building ------------------------------------------------------------------------------


def test_build_computes_lengths_and_field_control():
    ota = build(
        0x1234,
        0x5678,
        0x01020304,
        b"\xaa" * 100,
        header_string="hello",
        security_credential_version=7,
        upgrade_file_destination=0x0011223344556677,
        minimum_hardware_version=1,
        maximum_hardware_version=3,
    )
    data = ota.to_bytes()
    assert ota.field_control == 0x0007
    assert ota.header_length == 56 + 1 + 8 + 4 == struct.unpack_from("<H", data, 6)[0]
    assert ota.total_size == len(data) == struct.unpack_from("<I", data, 52)[0] == 69 + 6 + 100
    assert data[:4] == bytes.fromhex("1ef1ee0b")
    assert data[20:52] == b"hello".ljust(32, b"\x00")
    assert data[56] == 7
    assert data[57:65] == bytes.fromhex("7766554433221100")
    assert data[65:69] == bytes.fromhex("01000300")
    assert data[69:75] == bytes.fromhex("0000 64000000")
    assert parse(data) == ota


@pytest.mark.parametrize("variant", ["with-header", "without-header"])
def test_build_with_integrity_code(variant):
    ota = build(0x1037, 0x0001, 5, b"x" * 9000, integrity=variant)
    assert ota.subelements[-1].tag == Tag.IMAGE_INTEGRITY_CODE
    data = ota.to_bytes()
    result = parse(data).verify_integrity()
    assert result.ok and result.matched == variant
    expected_end = len(data) - 16 if variant == "with-header" else len(data) - 22
    assert result.stored == aes_mmo_hash(data[:expected_end])


def test_with_integrity_code_replaces_an_existing_one():
    ota = build(1, 2, 3, b"abc", integrity="with-header")
    again = ota.with_integrity_code("without-header")
    assert [e.tag for e in again.subelements] == [Tag.UPGRADE_IMAGE, Tag.IMAGE_INTEGRITY_CODE]
    assert again.verify_integrity().matched == "without-header"
    with pytest.raises(InvalidArgument):
        ota.with_integrity_code("both")  # type: ignore[arg-type]


def test_integrity_absent_and_malformed():
    assert sample().verify_integrity().status == "absent"
    bad = sample(
        subelements=[SubElement(Tag.UPGRADE_IMAGE, b"x"), SubElement(Tag.IMAGE_INTEGRITY_CODE, b"short")]
    )
    result = bad.verify_integrity()
    assert result.status == "malformed" and not result.ok
    assert any("image integrity code" in p for p in bad.problems())


def test_signature_subelements_decode_and_length_problems():
    signature = SubElement(Tag.ECDSA_SIGNATURE_SUITE_1, bytes.fromhex("0102030405060708") + bytes(42))
    decoded = signature.ecdsa_signature()
    assert decoded.suite == 1 and decoded.signer_ieee == 0x0807060504030201 and len(decoded.signature) == 42
    suite2 = SubElement(Tag.ECDSA_SIGNATURE_SUITE_2, bytes(80)).ecdsa_signature()
    assert suite2.suite == 2 and len(suite2.signature) == 72
    assert SubElement(Tag.ECDSA_CERTIFICATE_SUITE_1, bytes(48)).problems() == []
    assert SubElement(Tag.ECDSA_CERTIFICATE_SUITE_2, bytes(74)).problems() == []
    assert SubElement(Tag.ECDSA_CERTIFICATE_SUITE_2, bytes(73)).problems()
    with pytest.raises(DecodeError):
        SubElement(Tag.ECDSA_SIGNATURE_SUITE_2, bytes(79)).ecdsa_signature()
    with pytest.raises(InvalidArgument):
        SubElement(Tag.UPGRADE_IMAGE, b"").ecdsa_signature()


def test_tag_names():
    assert tag_name(0x0000) == "upgrade image"
    assert tag_name(0x0003) == "image integrity code"
    assert tag_name(0x0006) == "ECDSA signing certificate (crypto suite 2)"
    assert tag_name(0x0007) == "reserved"
    assert tag_name(0xFFBE) == "manufacturer specific"
    assert SubElement(TELINK_ENCRYPTED_TAG, b"", tag_info=0).name.endswith("(Telink encrypted image)")


@pytest.mark.parametrize(
    "overrides",
    [
        {"manufacturer_code": 0x10000},
        {"file_version": -1},
        {"header_string": b"x" * 33},
        {"minimum_hardware_version": 1},
        {"security_credential_version": 256},
        {"upgrade_file_destination": 2**64},
        {"field_control_reserved": 0x0001},
        {"body": b"opaque"},
    ],
)
def test_invalid_fields_rejected(overrides):
    with pytest.raises(InvalidArgument):
        sample(**overrides)


def test_subelement_rejects_bad_values():
    with pytest.raises(InvalidArgument):
        SubElement(0x10000, b"")
    with pytest.raises(InvalidArgument):
        SubElement(0, "text")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        SubElement(0, b"", tag_info=0x10000)


# -- lenient parsing: trailing bytes, Telink layout, opaque body, reserved bits ------------


def test_trailing_bytes_are_kept():
    data = sample().to_bytes() + b"\x00\x11\x22\x33"
    ota = parse(data)
    assert ota.trailing == b"\x00\x11\x22\x33"
    assert ota.to_bytes() == data
    assert ota.image_bytes() == data[:-4]
    assert "4 bytes follow total_size" in ota.problems()


def test_telink_layout():
    telink = SubElement(TELINK_ENCRYPTED_TAG, b"0123456789abcdef" * 2, tag_info=0x0301)
    ota = sample(subelements=[telink, SubElement(0xF7BD, b"tail")])
    data = ota.to_bytes()
    # The 2 tag_info bytes follow the length and are not counted by it.
    assert data[56:64] == bytes.fromhex("00f0 20000000 0103")
    parsed = parse(data)
    assert parsed == ota and parsed.layout == "telink"
    assert parsed.total_size == len(data) == 56 + 8 + 32 + 6 + 4


def test_opaque_body():
    ota = sample(subelements=[], body=b"\x2a\x00\x01 opaque")
    assert ota.layout == "opaque"
    data = ota.to_bytes()
    assert parse(data, opaque_body=True) == ota
    with pytest.raises(DecodeError):
        parse(data)


def test_reserved_field_control_bits_round_trip():
    ota = sample(field_control_reserved=0x8000, minimum_hardware_version=2, maximum_hardware_version=4)
    assert ota.field_control == 0x8004
    data = ota.to_bytes()
    assert parse(data) == ota
    assert any("reserved bits" in p for p in ota.problems())


# -- error reports ---------------------------------------------------------------------------


def _error(data: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        parse(data)
    return info.value


def test_bad_magic():
    data = bytearray(sample().to_bytes())
    data[0] = 0x1F
    error = _error(bytes(data))
    assert error.offset == 0 and "bad magic" in str(error)


def test_truncated_header_names_the_field():
    error = _error(sample().to_bytes()[:30])
    assert error.offset == 20 and "header_string" in str(error)
    error = _error(sample(minimum_hardware_version=1, maximum_hardware_version=2).to_bytes()[:57])
    assert "minimum_hardware_version" in str(error)


def test_header_length_inconsistent_with_field_control():
    data = bytearray(sample().to_bytes())
    data[8] = 0x04  # claims hardware versions, header_length still says 56
    error = _error(bytes(data))
    assert error.offset == 6 and "header_length is 56" in str(error) and "implies 60" in str(error)


def test_total_size_mismatch():
    data = sample().to_bytes()
    error = _error(data[:-1])
    assert error.offset == 52 and "total_image_size mismatch" in str(error)
    shrunk = bytearray(data)
    struct.pack_into("<I", shrunk, 52, 40)
    assert "smaller than header_length" in str(_error(bytes(shrunk)))


def test_truncated_subelement():
    data = bytearray(sample().to_bytes())
    struct.pack_into("<I", data, 58, 1000)  # upgrade image claims 1000 bytes
    error = _error(bytes(data))
    assert "truncated sub-element" in str(error) and error.offset == 58
    assert "upgrade image" in str(error)
    short = sample(subelements=[]).to_bytes() + b"\x00\x00\x00"
    short = short[:52] + struct.pack("<I", len(short)) + short[56:]
    error = _error(short)
    assert "3 bytes left" in str(error) and error.offset == 56


def test_parse_rejects_non_bytes():
    with pytest.raises(InvalidArgument):
        parse("not bytes")  # type: ignore[arg-type]


# -- properties ------------------------------------------------------------------------------


@HYPO
@given(ota_files())
def test_generated_files_round_trip(ota):
    data = ota.to_bytes()
    parsed = parse(data)
    assert parsed.to_bytes() == data
    if ota.layout == "zigbee":
        assert parsed == ota


@HYPO
@given(ota_files(telink=False, trailing=False), st.sampled_from(["with-header", "without-header"]))
def test_generated_integrity_codes_verify(ota, variant):
    signed = parse(ota.with_integrity_code(variant).to_bytes())
    assert signed.verify_integrity().matched == variant


@HYPO
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_error(data):
    try:
        ota = parse(data)
    except DecodeError:
        return
    assert ota.to_bytes() == data


@HYPO
@given(ota_files(), st.data())
def test_mutated_files_raise_only_decode_error(ota, data):
    raw = bytearray(ota.to_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(0, len(raw)))]
    try:
        parsed = parse(bytes(raw))
    except DecodeError:
        return
    assert parsed.to_bytes() == bytes(raw)
