"""The emulated node's own codecs against external references: AES-MMO against the Zigbee
specification's test vectors, and the OTA cluster, ZCL header and ZDO layouts against
zigpy 2.4's schemas (an independent implementation)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import Ota
import zigpy.types as t
import zigpy.zdo
import zigpy.zdo.types as zdo_t

from radio_emulators.zigbee import ota_codec as oc
from radio_emulators.zigbee import zdo
from radio_emulators.zigbee.aesmmo import AesMmo, aes_mmo, mmo_padding
from radio_emulators.zigbee.zcl import (DataType, FrameError, ZclFrame, parse_read_attributes_response,
                                        read_attributes_response)

HYPO = settings(derandomize=True, deadline=None, max_examples=200)


def counting(n: int) -> bytes:
    return bytes(i & 0xFF for i in range(n))


# Zigbee specification 05-3474-21, C.5 "Cryptographic Hash Function" test vectors (as
# transcribed in andrebdo/c-crumbs tests/aes-mmo.c); the long ones (>= 8192 bytes) need
# the long-message padding.
SPEC_VECTORS = [
    (b"\xc0", "ae3a102a28d43ee0d4a09e22788b206c"),
    (bytes(range(0xC0, 0xD0)), "a7977e88bc0b61e8210827109a228f2d"),
    (counting(8191), "24ec2fe75bbffcb34789bc0610e7f165"),
    (counting(8192), "dc6b0687f09f8607131c170b3bd31591"),
    (counting(8201), "72c9b15e178aa843e4a16c58e33643a3"),
    (counting(8202), "bc9828d59b2aa323daf20be5f2e66511"),
]
# Install code -> link key, from zigpy's tests/test_util.py (test_zigbee_security_hash).
INSTALL_CODES = [
    ("11223344556677884AF7", "41618FC0C83B0E14A589954B16E31466"),
    ("83FED3407A939723A5C639B269161802AEBB", "333C23686079468EB27BA24BD9C7E564"),
]


@pytest.mark.parametrize("message,digest", SPEC_VECTORS, ids=[str(len(m)) for m, _ in SPEC_VECTORS])
def test_aes_mmo_spec_vectors(message, digest):
    assert aes_mmo(message).hex() == digest


@pytest.mark.parametrize("code,key", INSTALL_CODES)
def test_aes_mmo_install_codes(code, key):
    assert aes_mmo(bytes.fromhex(code)) == bytes.fromhex(key)


def test_aes_mmo_incremental_equals_one_shot():
    data = counting(8300)
    h = AesMmo()
    for i in range(0, len(data), 37):
        h.update(data[i:i + 37])
    assert h.digest() == aes_mmo(data)
    assert all((n + len(mmo_padding(n))) % 16 == 0 for n in (0, 13, 14, 15, 8191, 8192, 8202))


# -- OTA cluster payloads against zigpy's schemas --------------------------------------------
def zigpy_bytes(schema, **kwargs) -> bytes:
    return schema(**kwargs).serialize()


def test_query_next_image_request_matches_zigpy():
    mine = oc.QueryNextImageRequest(0x1234, 0x0001, 0x01020304, 7).encode()
    theirs = zigpy_bytes(Ota.ServerCommandDefs.query_next_image.schema, field_control=1,
                         manufacturer_code=0x1234, image_type=1, current_file_version=0x01020304,
                         hardware_version=7)
    assert mine == theirs == bytes.fromhex("01 3412 0100 04030201 0700")
    no_hw = oc.QueryNextImageRequest(0x1234, 1, 5).encode()
    assert no_hw == zigpy_bytes(Ota.ServerCommandDefs.query_next_image.schema, field_control=0,
                                manufacturer_code=0x1234, image_type=1, current_file_version=5)
    assert oc.QueryNextImageRequest.decode(mine) == oc.QueryNextImageRequest(0x1234, 1, 0x01020304, 7)


def test_block_and_page_requests_match_zigpy():
    mine = oc.ImageBlockRequest(0x1234, 1, 2, 300, 48, None, 3).encode()
    theirs = zigpy_bytes(Ota.ServerCommandDefs.image_block.schema, field_control=2, manufacturer_code=0x1234,
                         image_type=1, file_version=2, file_offset=300, maximum_data_size=48,
                         minimum_block_period=3)
    assert mine == theirs
    page = oc.ImagePageRequest(0x1234, 1, 2, 256, 48, 512, 200).encode()
    assert page == zigpy_bytes(Ota.ServerCommandDefs.image_page.schema, field_control=0,
                               manufacturer_code=0x1234, image_type=1, file_version=2, file_offset=256,
                               maximum_data_size=48, page_size=512, response_spacing=200)
    cmd, rest = Ota.ServerCommandDefs.image_block.schema.deserialize(mine)
    assert (cmd.file_offset, cmd.maximum_data_size, cmd.minimum_block_period, rest) == (300, 48, 3, b"")


def test_upgrade_end_request_matches_zigpy():
    mine = oc.UpgradeEndRequest(0x96, 0x1234, 1, 2).encode()
    assert mine == zigpy_bytes(Ota.ServerCommandDefs.upgrade_end.schema, status=foundation.Status.INVALID_IMAGE,
                               manufacturer_code=0x1234, image_type=1, file_version=2)


def test_server_commands_from_zigpy_decode():
    rsp = Ota.ClientCommandDefs.query_next_image_response.schema(
        status=foundation.Status.SUCCESS, manufacturer_code=0x1234, image_type=1, file_version=2,
        image_size=1000).serialize()
    assert oc.QueryNextImageResponse.decode(rsp) == oc.QueryNextImageResponse(0, 0x1234, 1, 2, 1000)
    none = Ota.ClientCommandDefs.query_next_image_response.schema(
        status=foundation.Status.NO_IMAGE_AVAILABLE).serialize()
    assert oc.QueryNextImageResponse.decode(none).status == 0x98
    block = Ota.ClientCommandDefs.image_block_response.schema(
        status=foundation.Status.SUCCESS, manufacturer_code=0x1234, image_type=1, file_version=2,
        file_offset=64, image_data=b"abc").serialize()
    assert oc.ImageBlockResponse.decode(block) == oc.ImageBlockResponse(0, 0x1234, 1, 2, 64, b"abc")
    assert oc.ImageBlockResponse(0, 0x1234, 1, 2, 64, b"abc").encode() == block
    end = Ota.ClientCommandDefs.upgrade_end_response.schema(
        manufacturer_code=0x1234, image_type=1, file_version=2, current_time=100, upgrade_time=160).serialize()
    decoded = oc.UpgradeEndResponse.decode(end)
    assert decoded.delay_s() == 60.0 and decoded.encode() == end
    notify = Ota.ClientCommandDefs.image_notify.schema(
        payload_type=Ota.ImageNotifyCommand.PayloadType.QueryJitter_ManufacturerCode_ImageType_NewFileVersion,
        query_jitter=50, manufacturer_code=0x1234, image_type=1, new_file_version=9).serialize()
    assert oc.ImageNotify.decode(notify) == oc.ImageNotify(3, 50, 0x1234, 1, 9)


def test_wait_for_data_both_layouts():
    zigpy_layout = Ota.ClientCommandDefs.image_block_response.schema(
        status=foundation.Status.WAIT_FOR_DATA, current_time=10, request_time=15,
        minimum_block_period=2).serialize()
    with_period = oc.ImageBlockResponse.decode(zigpy_layout)
    assert (with_period.current_time, with_period.request_time, with_period.minimum_block_period) == (10, 15, 2)
    short = oc.ImageBlockResponse.decode(zigpy_layout[:-2])          # Silicon Labs without the period
    assert (short.request_time, short.minimum_block_period) == (15, None)


def test_upgrade_time_policies():
    assert oc.UpgradeEndResponse(1, 1, 1, 0, 0).delay_s() == 0.0
    assert oc.UpgradeEndResponse(1, 1, 1, 0, 30).delay_s() == 30.0         # offset without a time source
    assert oc.UpgradeEndResponse(1, 1, 1, 500, 400).delay_s() == 0.0
    assert oc.UpgradeEndResponse(1, 1, 1, 0, 0xFFFFFFFF).delay_s() is None


@HYPO
@given(cmd=st.integers(0, 0x0A), direction=st.booleans(), data=st.binary(max_size=40))
def test_decoders_raise_only_frame_errors(cmd, direction, data):
    try:
        oc.decode_ota(cmd, data, server_to_client=direction)
    except FrameError as exc:
        assert exc.command
    try:
        ZclFrame.decode(data)
    except FrameError:
        pass


def test_truncated_command_names_field_offset():
    with pytest.raises(FrameError) as err:
        oc.ImageBlockRequest.decode(bytes.fromhex("00 3412 0100 02000000"))
    assert err.value.command == "ImageBlockRequest" and err.value.offset == 9


# -- ZCL header and attributes against zigpy ---------------------------------------------------
def test_zcl_header_matches_zigpy():
    frame = ZclFrame(0x05, 0x42, b"\x00", cluster_specific=True, server_to_client=True,
                     disable_default_response=True, manufacturer=0x1037)
    hdr, rest = foundation.ZCLHeader.deserialize(frame.encode())
    assert hdr.frame_control.is_cluster and hdr.direction == foundation.Direction.Server_to_Client
    assert hdr.frame_control.disable_default_response and hdr.manufacturer == 0x1037
    assert (hdr.tsn, hdr.command_id, rest) == (0x42, 0x05, b"\x00")
    assert ZclFrame.decode(frame.encode()) == frame


def test_read_attributes_response_parsed_by_zigpy():
    payload = read_attributes_response([(0x0005, 0, DataType.CHAR_STRING, "EMU-R1"),
                                        (0x0002, 0, DataType.UINT32, 0x01020304), (0x0010, 0x86, None, None)])
    rsp, rest = foundation.GENERAL_COMMANDS[foundation.GeneralCommand.Read_Attributes_rsp].schema.deserialize(payload)
    values = {r.attrid: (r.status, r.value.value if r.value is not None else None) for r in rsp.status_records}
    assert values[5] == (foundation.Status.SUCCESS, "EMU-R1")
    assert values[2] == (foundation.Status.SUCCESS, 0x01020304)
    assert values[0x10][0] == foundation.Status.UNSUPPORTED_ATTRIBUTE and rest == b""
    assert parse_read_attributes_response(payload)[5] == (0, "EMU-R1")


# -- ZDO against zigpy -----------------------------------------------------------------------------
def test_node_and_simple_descriptors_parsed_by_zigpy():
    nd = zdo.NodeDescriptor(zdo.LogicalType.END_DEVICE, 0x80, 0x1234)
    parsed, rest = zdo_t.NodeDescriptor.deserialize(nd.encode())
    assert parsed.is_end_device and not parsed.is_receiver_on_when_idle and parsed.manufacturer_code == 0x1234
    assert parsed.frequency_band == zdo_t.NodeDescriptor.FrequencyBand.Freq2400MHz and rest == b""
    router, _ = zdo_t.NodeDescriptor.deserialize(zdo.NodeDescriptor(zdo.LogicalType.ROUTER, 0x8E, 1).encode())
    assert router.is_router and router.is_mains_powered and router.is_receiver_on_when_idle
    sd = zdo.SimpleDescriptor(1, 0x0104, 0x0302, 1, (0x0000, 0x0003), (0x0019,))
    psd, rest = zdo_t.SimpleDescriptor.deserialize(sd.encode())
    assert (psd.endpoint, psd.profile, psd.device_type) == (1, 0x0104, 0x0302)
    assert list(psd.input_clusters) == [0, 3] and list(psd.output_clusters) == [0x19] and rest == b""


def test_device_annce_parsed_by_zigpy():
    ieee = bytes.fromhex("1122334455667788")
    payload = zdo.device_annce(7, 0xBEEF, ieee, 0x8E)
    hdr, args = zigpy.zdo.ZDO(None).deserialize(zdo.ZDO.DEVICE_ANNCE, payload)
    assert hdr.tsn == 7 and args[0] == 0xBEEF and args[1] == t.EUI64(ieee)

