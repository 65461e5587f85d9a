"""Cross-check against zigpy 2.4's parser, ``zigpy.ota.image.parse_ota_image``: on the
shared real files and on generated plain, Telink, Hue SBL and containered files, both
must agree on every header field, the sub-elements (tag, data, Telink tag_info) or opaque
body, and the bytes after total_image_size."""

from __future__ import annotations

import pytest
import zigpy.ota.image as zigpy_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxyota.zigbee.containers import (
    Container,
    ContainerKind,
    parse_any,
    wrap_ikea,
    wrap_legrand,
    wrap_third_reality,
)
from proxyota.zigbee.otafile import OTAFile, build

from .strategies import ota_files, u16, u32

HYPO = settings(
    derandomize=True, deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow]
)


def zigpy_view(image, rest: bytes) -> dict:
    header = image.header
    destination = header.upgrade_file_destination
    view = {
        "manufacturer_code": int(header.manufacturer_id),
        "image_type": int(header.image_type),
        "file_version": int(header.file_version),
        "stack_version": int(header.stack_version),
        "header_version": int(header.header_version),
        "header_length": int(header.header_length),
        "field_control": int(header.field_control),
        "header_string": bytes(header.header_string),
        "total_size": int(header.image_size),
        "security_credential_version": header.security_credential_version,
        "upgrade_file_destination": (
            None if destination is None else int.from_bytes(destination.serialize(), "little")
        ),
        "minimum_hardware_version": header.minimum_hardware_version,
        "maximum_hardware_version": header.maximum_hardware_version,
        "rest": bytes(rest),
    }
    if isinstance(image, zigpy_image.HueSBLOTAImage):
        view["body"] = bytes(image.data)
    else:
        view["subelements"] = [
            (int(e.tag_id), bytes(e.data), None if getattr(e, "tag_info", None) is None else int(e.tag_info))
            for e in image.subelements
        ]
    return view


def our_view(container: Container) -> dict:
    ota = container.ota
    view = {
        "manufacturer_code": ota.manufacturer_code,
        "image_type": ota.image_type,
        "file_version": ota.file_version,
        "stack_version": ota.stack_version,
        "header_version": ota.header_version,
        "header_length": ota.header_length,
        "field_control": ota.field_control,
        "header_string": ota.header_string,
        "total_size": ota.total_size,
        "security_credential_version": ota.security_credential_version,
        "upgrade_file_destination": ota.upgrade_file_destination,
        "minimum_hardware_version": ota.minimum_hardware_version,
        "maximum_hardware_version": ota.maximum_hardware_version,
        "rest": ota.trailing,
    }
    if ota.body is not None:
        view["body"] = ota.body
    else:
        view["subelements"] = [(e.tag, e.data, e.tag_info) for e in ota.subelements]
    return view


def assert_agree(data: bytes) -> Container:
    ours = parse_any(data)
    theirs = zigpy_view(*zigpy_image.parse_ota_image(data))
    assert our_view(ours) == theirs
    expected_class = {
        ContainerKind.HUE_SBL: zigpy_image.HueSBLOTAImage,
        ContainerKind.TELINK: zigpy_image.TelinkOTAImage,
    }.get(ours.kind, zigpy_image.OTAImage)
    image, _ = zigpy_image.parse_ota_image(data)
    assert type(image) is expected_class
    return ours


def test_real_files_agree_with_zigpy(real_file):
    _, data = real_file
    assert_agree(data)
    image, rest = zigpy_image.parse_ota_image(data)
    assert image.serialize() + rest == data


def test_view_detects_a_difference(nodon):
    # The comparison itself must be able to fail.
    ours = our_view(parse_any(nodon))
    ours["subelements"][0] = (0, b"other", None)
    assert ours != zigpy_view(*zigpy_image.parse_ota_image(nodon))


@HYPO
@given(ota_files())
def test_generated_plain_and_telink_files_agree(ota):
    assert_agree(ota.to_bytes())


@HYPO
@given(ota_files(telink=False, trailing=False), st.sampled_from(["ikea", "legrand", "third-reality"]))
def test_generated_containers_agree(ota, kind):
    wrap = {"ikea": wrap_ikea, "legrand": wrap_legrand, "third-reality": wrap_third_reality}[kind]
    container = assert_agree(wrap(ota))
    assert container.kind.value.startswith(kind)


@HYPO
@given(u16, u32, st.binary(max_size=64), st.binary(max_size=6))
def test_generated_hue_sbl_files_agree(image_type, version, payload, rest):
    ota = OTAFile(0x100B, image_type, version, body=b"\x2a\x00\x01" + payload)
    container = assert_agree(ota.to_bytes() + rest)
    assert container.kind is ContainerKind.HUE_SBL


@pytest.mark.parametrize("variant", ["with-header", "without-header"])
def test_built_files_with_integrity_agree(variant):
    ota = build(
        0x1037,
        0xABCD,
        7,
        b"\x5a" * 20000,
        integrity=variant,
        header_string="built",
        security_credential_version=1,
        upgrade_file_destination=0x0102030405060708,
        minimum_hardware_version=1,
        maximum_hardware_version=9,
    )
    assert_agree(ota.to_bytes())
