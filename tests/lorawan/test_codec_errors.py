"""Validation, error reporting, leniency and multi-command behaviour of the application-layer codecs."""

from __future__ import annotations

import pytest

from proxyota.errors import DecodeError, InvalidArgument
from proxyota.lorawan import applayer as al
from proxyota.lorawan.applayer import (
    AppTimeAns,
    AppTimeReq,
    DataFragment,
    DevRebootCountdownReq,
    DevRebootTimeAns,
    DevRebootTimeReq,
    DevUpgradeImageAns,
    DeviceAppTimePeriodicityReq,
    FragSessionDeleteAns,
    FragSessionSetupAns,
    FragSessionSetupReq,
    FragSessionStatusAns,
    FragSessionStatusReq,
    McClassBSessionReq,
    McClassCSessionAns,
    McClassCSessionReq,
    McGroupSetupReq,
    McGroupStatusAns,
    McGroupStatusItem,
    PackageVersionAns,
    UpImageStatus,
    decode_downlink,
    decode_uplink,
    encode_commands,
    from_json,
    to_json,
)

FRAG, MC, CLK, FMP = 201, 200, 202, 203


def _setup_v2(**kw):
    base = dict(frag_index=0, nb_frag=10, frag_size=50, session_cnt=1, mic=bytes(4), version=2)
    base.update(kw)
    return FragSessionSetupReq(**base)


# ---------------------------------------------------------------- construction


@pytest.mark.parametrize(
    "build,field",
    [
        (lambda: AppTimeReq(2**32, 0), "device_time"),
        (lambda: AppTimeReq(0, 16), "token_req"),
        (lambda: AppTimeReq(0, 1, ans_required=1), "ans_required"),
        (lambda: AppTimeAns(2**31, 0), "time_correction"),
        (lambda: AppTimeAns(True, 0), "time_correction"),
        (lambda: DeviceAppTimePeriodicityReq(16), "period"),
        (lambda: FragSessionStatusReq(4), "frag_index"),
        (lambda: FragSessionStatusAns(0, 0x4000, 0), "nb_frag_received"),
        (lambda: FragSessionStatusAns(0, 1, 256), "missing_frag"),
        (lambda: FragSessionStatusAns(0, 1, None), "missing_frag"),
        (lambda: FragSessionStatusAns(0, 1, 1, mic_error=True), "mic_error"),
        (lambda: FragSessionStatusAns(0, 1, 1, session_does_not_exist=True, version=2), "frag_index"),
        (lambda: FragSessionStatusAns(0, 1, 1, version=3), "version"),
        (lambda: FragSessionSetupReq(frag_index=0, nb_frag=0, frag_size=10), "nb_frag"),
        (lambda: FragSessionSetupReq(frag_index=0, nb_frag=1, frag_size=0), "frag_size"),
        (lambda: FragSessionSetupReq(frag_index=0, nb_frag=1, frag_size=10, padding=10), "padding"),
        (lambda: FragSessionSetupReq(frag_index=0, nb_frag=1, frag_size=10, mc_group_bit_mask=16), "mc_group_bit_mask"),
        (lambda: FragSessionSetupReq(frag_index=0, nb_frag=1, frag_size=10, frag_algo=8), "frag_algo"),
        (lambda: FragSessionSetupReq(frag_index=0, nb_frag=1, frag_size=10, block_ack_delay=8), "block_ack_delay"),
        (lambda: FragSessionSetupReq(frag_index=0, nb_frag=1, frag_size=10, descriptor=b"123"), "descriptor"),
        (lambda: FragSessionSetupReq(frag_index=0, nb_frag=1, frag_size=10, session_cnt=1), "session_cnt"),
        (lambda: FragSessionSetupReq(frag_index=0, nb_frag=1, frag_size=10, ack_reception=True), "ack_reception"),
        (lambda: _setup_v2(mic=None), "mic"),
        (lambda: _setup_v2(session_cnt=0x10000), "session_cnt"),
        (lambda: _setup_v2(mic="00000000"), "mic"),
        (lambda: FragSessionSetupAns(0, session_cnt_replay=True), "session_cnt_replay"),
        (lambda: DataFragment(0, 0, b"x"), "n"),
        (lambda: DataFragment(0, 0x4000, b"x"), "n"),
        (lambda: DataFragment(0, 1, b""), "payload"),
        (lambda: McGroupSetupReq(4, 0, bytes(16), 0, 1), "mc_group_id"),
        (lambda: McGroupSetupReq(0, 2**32, bytes(16), 0, 1), "mc_addr"),
        (lambda: McGroupSetupReq(0, 0, bytes(15), 0, 1), "mc_key_encrypted"),
        (lambda: McGroupStatusAns(1, 0b0011, (McGroupStatusItem(0, 1),)), "groups"),
        (lambda: McGroupStatusAns(8, 0), "nb_total_groups"),
        (lambda: McClassCSessionReq(0, 0, 8, 868_100_050, 0), "dl_frequency"),
        (lambda: McClassCSessionReq(0, 0, 8, 100 * 2**24, 0), "dl_frequency"),
        (lambda: McClassCSessionReq(0, 0, 16, 868_100_000, 0), "time_out"),
        (lambda: McClassCSessionReq(0, 0, 8, 868_100_000, 16), "dr"),
        (lambda: McClassBSessionReq(0, 0, 8, 8, 868_100_000, 0), "periodicity"),
        (lambda: McClassCSessionAns(0, dr_error=True, time_to_start=5), "time_to_start"),
        (lambda: McClassCSessionAns(0), "time_to_start"),
        (lambda: McClassCSessionAns(0, time_to_start=2**24), "time_to_start"),
        (lambda: McClassCSessionAns(0, start_missed=True), "start_missed"),
        (lambda: DevUpgradeImageAns(UpImageStatus.VALID), "next_firmware_version"),
        (lambda: DevUpgradeImageAns(UpImageStatus.NO_IMAGE, 5), "next_firmware_version"),
        (lambda: DevUpgradeImageAns(4), "up_image_status"),
        (lambda: DevRebootCountdownReq(2**24), "countdown"),
        (lambda: PackageVersionAns(256, 1), "package_identifier"),
    ],
)
def test_out_of_range_field_raises_invalid_argument_naming_it(build, field):
    with pytest.raises(InvalidArgument) as info:
        build()
    assert info.value.field == field
    assert f".{field} " in str(info.value)


def test_bytes_fields_are_stored_as_bytes():
    frag = DataFragment(1, 2, bytearray(b"ab"))
    assert type(frag.payload) is bytes and frag == DataFragment(1, 2, b"ab")


# ---------------------------------------------------------------- decode errors


def test_truncated_command_names_command_and_offset():
    with pytest.raises(DecodeError) as info:
        decode_uplink(FRAG, bytes.fromhex("0307" "0100c480"))  # 2nd command lacks its Status byte
    assert info.value.command == "FragSessionStatusAns"
    assert info.value.offset == 6
    assert "FragSessionStatusAns, byte 6: truncated: Status" in str(info.value)


def test_unknown_cid_names_cid_and_offset():
    with pytest.raises(DecodeError) as info:
        decode_uplink(FRAG, bytes.fromhex("0307" "09"))
    assert info.value.command == "CID 0x09" and info.value.offset == 2
    # CID 0x04 exists only in v2
    with pytest.raises(DecodeError, match="unknown uplink CID 0x04"):
        decode_uplink(FRAG, bytes.fromhex("0406"), version=1)
    assert decode_uplink(FRAG, bytes.fromhex("0406"), version=2) == [al.FragDataBlockReceivedReq(2, True)]
    # an uplink CID of the downlink table
    with pytest.raises(DecodeError, match="CID 0x08"):
        decode_uplink(FRAG, bytes.fromhex("0800840102"))


@pytest.mark.parametrize(
    "fport,direction,version,hexstr,offset",
    [
        (FRAG, "downlink", 1, "0109", 1),  # FragStatusReqParam b3 RFU
        (FRAG, "uplink", 1, "0100c48003", 4),  # v1 Status b1 RFU
        (FRAG, "uplink", 2, "010c", 1),  # v2 Status b3 RFU
        (FRAG, "downlink", 1, "02" "71000480" "4d" "4001020304", 1),  # FragSession b6 RFU
        (FRAG, "downlink", 1, "02" "31000480" "4d" "4001020304", 5),  # v1 Control b6 RFU (AckReception in v2)
        (FRAG, "uplink", 1, "0218", 1),  # v1 SetupAns b4 RFU (SessionCntReplay in v2)
        (MC, "uplink", 1, "04220a0000", 1),  # v1 Status&McGroupID b5 RFU (StartMissed in v2)
        (MC, "downlink", 1, "0304", 1),
        (MC, "uplink", 1, "01" "81" "0401020304", 1),  # McGroupStatusAns Status b7 RFU
        (MC, "uplink", 1, "01" "01" "0401020304", 2),  # McGroupID b2 RFU
        (CLK, "uplink", 1, "0100040000" "3f", 5),  # AppTimeReq Param b5 RFU
        (FMP, "uplink", 1, "0404", 1),  # Status b2 RFU
        (FMP, "uplink", 1, "0504", 1),
    ],
)
def test_rfu_bits_raise_when_strict_and_are_ignored_when_lenient(fport, direction, version, hexstr, offset):
    payload = bytes.fromhex(hexstr)
    with pytest.raises(DecodeError, match="RFU bits") as info:
        al.decode(fport, direction, payload, version)
    assert info.value.offset == offset
    lenient = al.decode(fport, direction, payload, version, strict=False)
    assert len(lenient) == 1


def test_lenient_decode_drops_the_rfu_bits():
    [cmd] = decode_downlink(FRAG, bytes.fromhex("01fd"), strict=False)
    assert cmd == FragSessionStatusReq(2, True)
    # v1 Status&McGroupID RFU bit 5 does not change the TimeToStart rule of v1
    [ans] = decode_uplink(MC, bytes.fromhex("04220a0000"), strict=False)
    assert ans == McClassCSessionAns(2, time_to_start=10)


def test_v2_reserved_error_bits_are_rejected_even_when_lenient():
    for strict in (True, False):
        with pytest.raises(DecodeError, match="reserved error bits") as info:
            decode_uplink(MC, bytes.fromhex("0442"), version=2, strict=strict)
        assert info.value.offset == 1


def test_field_value_errors_become_decode_errors_at_the_field_offset():
    with pytest.raises(DecodeError) as info:  # N = 0 (N is 1-based)
        decode_downlink(FRAG, bytes.fromhex("0300" "080000aa"))
    assert info.value.command == "DataFragment" and info.value.offset == 3
    assert "n must be in 1..16383" in str(info.value)
    with pytest.raises(DecodeError) as info:  # padding >= frag_size
        decode_downlink(FRAG, bytes.fromhex("02" "31000410" "0d" "1001020304"))
    assert info.value.command == "FragSessionSetupReq" and info.value.offset == 6
    with pytest.raises(DecodeError, match="dr must be in 0..15") as info:  # DR 0x10
        decode_downlink(MC, bytes.fromhex("0402" "00040000" "0f" "287684" "10"))
    assert info.value.offset == 10


def test_package_version_ans_must_match_the_port():
    assert decode_uplink(FRAG, bytes.fromhex("000302")) == [PackageVersionAns(3, 2)]
    with pytest.raises(DecodeError, match="PackageIdentifier 1 is not the Fragmentation package"):
        decode_uplink(FRAG, bytes.fromhex("000101"))


def test_empty_payload_decodes_to_nothing():
    assert decode_uplink(FRAG, b"") == [] and decode_downlink(MC, b"", version=2) == []


def test_bad_port_version_direction_and_payload_are_invalid_arguments():
    with pytest.raises(InvalidArgument, match="fPort 42"):
        decode_uplink(42, b"\x00")
    with pytest.raises(InvalidArgument, match="versions"):
        decode_uplink(FMP, b"\x00", version=2)
    with pytest.raises(InvalidArgument, match="versions"):
        decode_uplink(FRAG, b"\x00", version=True)
    with pytest.raises(InvalidArgument, match="direction"):
        al.decode(FRAG, "sideways", b"\x00")
    with pytest.raises(InvalidArgument, match="bytes"):
        decode_uplink(FRAG, "0100")


# ---------------------------------------------------------------- several commands


def test_multi_command_uplink_is_decoded_in_order():
    payload = bytes.fromhex("000302" "02c0" "0100c48001" "0307")
    assert decode_uplink(FRAG, payload) == [
        PackageVersionAns(3, 2),
        FragSessionSetupAns(3),
        FragSessionStatusAns(3, 1024, 128, memory_error=True),
        FragSessionDeleteAns(3, True),
    ]


def test_multi_command_downlink_is_decoded_in_order():
    cmds = [al.PackageVersionReq(), al.McGroupSetupReq(0, 0x01020304, bytes(range(16)), 0, 1000),
            al.McClassCSessionReq(0, 1_400_000_000, 10, 869_525_000, 0)]
    assert decode_downlink(MC, encode_commands(cmds), version=2) == cmds


def test_v2_status_ans_spec_form_and_four_byte_form_both_decode():
    absent = FragSessionStatusAns(session_does_not_exist=True, version=2)
    delete = FragSessionDeleteAns(1)
    # spec: status byte only, then the next command
    assert decode_uplink(FRAG, bytes.fromhex("0104" "0301"), version=2) == [absent, delete]
    # LoRa Basics Modem: zero Received&Index / MissingFrag follow anyway
    assert decode_uplink(FRAG, bytes.fromhex("0104" "000000" "0301"), version=2) == [absent, delete]
    assert decode_uplink(FRAG, bytes.fromhex("0104000000"), version=2) == [absent]
    # when both readings decode, the spec's one wins
    assert decode_uplink(FRAG, bytes.fromhex("0104" "000302"), version=2) == [absent, PackageVersionAns(3, 2)]
    # neither: the error of the spec reading is reported
    with pytest.raises(DecodeError) as info:
        decode_uplink(FRAG, bytes.fromhex("0104" "0000"), version=2)
    assert info.value.offset == 4 and info.value.command == "PackageVersionAns"


def test_many_ambiguous_status_answers_decode_quickly():
    payload = bytes.fromhex("0104") * 120 + bytes.fromhex("0104000000")
    cmds = decode_uplink(FRAG, payload, version=2)
    assert len(cmds) == 121


def test_data_fragment_must_be_alone_when_encoding():
    frag = DataFragment(0, 1, b"abc")
    assert encode_commands([frag]) == bytes.fromhex("080100616263")
    with pytest.raises(InvalidArgument, match="only command"):
        encode_commands([FragSessionStatusReq(0), frag])
    with pytest.raises(InvalidArgument, match="not a command"):
        encode_commands([b"\x00"])


def test_data_fragment_after_other_commands_takes_the_rest_when_decoding():
    payload = bytes.fromhex("0101" "08" "0100" "0301")
    assert decode_downlink(FRAG, payload) == [FragSessionStatusReq(0, True), DataFragment(0, 1, b"\x03\x01")]


# ---------------------------------------------------------------- quantities and conventions


def test_quantity_helpers():
    assert DeviceAppTimePeriodicityReq(5).periodicity_seconds == 4096
    assert McClassCSessionReq(0, 0, 8, 869_525_000, 0).time_out_seconds == 256
    b = McClassBSessionReq(0, 128 * 1000, 8, 4, 0, 3)
    assert b.time_out_seconds == 128 * 256 and b.ping_slot_period_seconds == 16 and b.frequency_hopping
    setup = FragSessionSetupReq(frag_index=1, nb_frag=10, frag_size=50, block_ack_delay=2, mc_group_bit_mask=0b1010)
    assert setup.block_ack_delay_max_seconds == 64 and setup.mc_group_ids == (1, 3)
    assert FragSessionSetupAns(0).accepted and not FragSessionSetupAns(0, wrong_descriptor=True).accepted
    assert FragSessionStatusAns(1, 2, 3, True, True, version=2).status == 3


def test_dl_frequency_is_in_hz_on_a_100_hz_wire():
    req = McClassCSessionReq(0, 0, 0, 869_525_000, 0)
    assert req.encode()[7:10] == (8_695_250).to_bytes(3, "little")
    assert McClassCSessionReq(0, 0, 0, 100 * (2**24 - 1), 0).encode()[7:10] == b"\xff\xff\xff"


def test_time_conventions():
    assert AppTimeAns(0x7FFFFFFF, 0).saturated and AppTimeAns(-0x80000000, 0).saturated
    assert not AppTimeAns(5, 0).saturated
    assert al.clamp_time_correction(2_208_643_200) == 0x7FFFFFFF
    assert al.clamp_time_correction(-2**40) == -0x80000000 and al.clamp_time_correction(-7) == -7
    assert DevRebootTimeReq(0).reboot_now and DevRebootTimeReq(0xFFFFFFFF).cancel
    assert DevRebootTimeAns(0).error and DevRebootTimeAns(0xFFFFFFFF).cancelled
    assert DevRebootCountdownReq(0xFFFFFF).cancel and not DevRebootCountdownReq(5).reboot_now


def test_time_to_start_absent_on_error_and_v2_unknown_marker():
    assert decode_uplink(MC, bytes.fromhex("0422"), version=2) == [
        McClassCSessionAns(2, start_missed=True, version=2)
    ]
    [ans] = decode_uplink(MC, bytes.fromhex("0401ffffff"), version=2)
    assert ans.time_to_start == 0xFFFFFF and ans.time_to_start_unknown
    [ans1] = decode_uplink(MC, bytes.fromhex("0401ffffff"), version=1)
    assert ans1.time_to_start == 0xFFFFFF and not ans1.time_to_start_unknown


def test_up_image_status_enum_and_next_version():
    [ans] = decode_uplink(FMP, bytes.fromhex("0402"))
    assert ans.up_image_status is UpImageStatus.WRONG_HARDWARE and ans.next_firmware_version is None
    assert DevUpgradeImageAns(3, 7).up_image_status is UpImageStatus.VALID


# ---------------------------------------------------------------- JSON


def test_json_shapes():
    j = to_json(al.McGroupStatusAns(1, 0b0100, (McGroupStatusItem(2, 0x01020304),)))
    assert j == {"command": "McGroupStatusAns", "nb_total_groups": 1, "ans_group_mask": 4,
                 "groups": [{"mc_group_id": 2, "mc_addr": "01020304"}]}
    assert to_json(DevUpgradeImageAns(UpImageStatus.VALID, 5)) == {
        "command": "DevUpgradeImageAns", "up_image_status": "VALID", "next_firmware_version": 5}
    # v2-only fields and None fields are left out
    assert to_json(FragSessionSetupReq(frag_index=0, nb_frag=1, frag_size=1)) == {
        "command": "FragSessionSetupReq", "frag_index": 0, "nb_frag": 1, "frag_size": 1, "padding": 0,
        "mc_group_bit_mask": 0, "frag_algo": 0, "block_ack_delay": 0, "descriptor": "00000000"}
    assert to_json(McClassCSessionAns(0, dr_error=True)) == {
        "command": "McClassCSessionAns", "mc_group_id": 0, "mc_group_undefined": False, "freq_error": False,
        "dr_error": True}


def test_from_json_accepts_v1_spec_names_and_alternative_forms():
    cmd = from_json({"command": "FragSessionSetupReq", "frag_index": 1, "nb_frag": 3, "frag_size": 8,
                     "fragmentation_matrix": 0, "descriptor": "0A0B0C0D"}, fport=FRAG, direction="downlink")
    assert cmd.descriptor == b"\x0a\x0b\x0c\x0d" and cmd.version == 1
    assert from_json({"command": "DevUpgradeImageAns", "up_image_status": 3, "next_firmware_version": 1},
                     fport=FMP, direction="uplink") == DevUpgradeImageAns(UpImageStatus.VALID, 1)
    rest = {"mc_key_encrypted": "00" * 16, "min_mc_fcount": 0, "max_mc_fcount": 10}
    assert from_json({"command": "McGroupSetupReq", "mc_group_id": 0, "mc_addr": 16909060, **rest},
                     fport=MC, direction="downlink").mc_addr == 0x01020304
    assert from_json({"command": "McGroupSetupReq", "mc_group_id": 0, "mc_addr": "0x01020304", **rest},
                     fport=MC, direction="downlink").mc_addr == 0x01020304
    assert from_json({"command": "FragSessionStatusAns", "memory_error": True, "session_does_not_exist": True,
                      "version": 2}, fport=FRAG, direction="uplink", version=2).status == 5


@pytest.mark.parametrize(
    "obj,kwargs,match",
    [
        ({"command": "Nope"}, {}, "not a downlink command"),
        ({"command": "ForceDeviceResyncCmd", "nb_transmissions": 1}, dict(fport=CLK), "not a downlink command"),
        ({"nb_transmissions": 1}, dict(fport=CLK), "needs a \"command\""),
        ({"command": "FragSessionDeleteReq", "frag_index": 1, "extra": 2}, {}, "no field 'extra'"),
        ({"command": "FragSessionDeleteReq"}, {}, "missing field"),
        ({"command": "FragSessionDeleteReq", "frag_index": 9}, {}, "frag_index must be in 0..3"),
        ({"command": "FragSessionDeleteReq", "frag_index": "1"}, {}, "must be an int"),
        ({"command": "DataFragment", "frag_index": 0, "n": 1, "payload": "zz"}, {}, "not valid hex"),
        ({"command": "DataFragment", "frag_index": 0, "n": 1, "payload": 5}, {}, "hex string"),
        ({"command": "FragSessionDeleteReq", "frag_index": 1, "version": 2}, {}, "differs"),
        ({"command": "McGroupSetupReq", "mc_group_id": 0, "mc_addr": "0102"}, dict(fport=MC), "8 hex digits"),
        ({"command": "McGroupSetupReq", "mc_group_id": 0, "mc_addr": "01020304"}, dict(fport=MC),
         "missing field\\(s\\): mc_key_encrypted, min_mc_fcount, max_mc_fcount"),
        ({"command": "McGroupDeleteReq", "mc_group_id": 0}, dict(fport=MC, direction="up"), "direction"),
        ("[]", {}, "JSON object"),
    ],
)
def test_from_json_errors_are_invalid_arguments(obj, kwargs, match):
    args = dict(fport=FRAG, direction="downlink", version=1)
    args.update(kwargs)
    with pytest.raises(InvalidArgument, match=match):
        from_json(obj, **args)


def test_to_json_rejects_non_commands():
    with pytest.raises(InvalidArgument):
        to_json({"command": "x"})


def test_public_names_are_reachable_from_codec_too():
    from proxyota.lorawan import codec

    assert codec.decode_uplink is decode_uplink and codec.FragSessionSetupReq is FragSessionSetupReq
    with pytest.raises(AttributeError):
        codec.no_such_name  # noqa: B018


def test_each_package_module_imports_on_its_own() -> None:
    # the lazy re-exports of proxyota.lorawan.codec must not pull in applayer while a
    # package module is half-initialised (the import system probes codec.__path__)
    import subprocess
    import sys

    for module in ("clocksync", "fragmentation", "multicast", "firmware"):
        subprocess.run([sys.executable, "-c", f"import proxyota.lorawan.{module}"], check=True)
