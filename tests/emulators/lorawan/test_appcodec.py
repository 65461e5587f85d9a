"""The device's codec (and the test-side frame builders) against the byte vectors of
ChirpStack v4 `lrwn/src/applayer/{clocksync,multicastsetup,fragmentation}/{v1,v2}.rs`
tests (chirpstack/chirpstack commit d77207cd)."""

from __future__ import annotations

import pytest

from radio_emulators.lorawan import appcodec as ac

from . import frames as F

H = bytes.fromhex


# --------------------------------------------------------------- requests (decode)
def one(port, payload, version=1):
    cmds, err = ac.decode_downlink(port, payload, version)
    assert err is None and len(cmds) == 1
    return cmds[0]


def test_clock_sync_requests():
    assert one(202, H("0100040000" "0f")) == ac.AppTimeAns(1024, 15)
    assert F.app_time_ans(1024, 15) == H("01000400000f")
    assert one(202, H("020f")) == ac.DeviceAppTimePeriodicityReq(15)
    assert F.periodicity_req(15) == H("020f")
    assert one(202, H("0307"), 2) == ac.ForceDeviceResyncReq(7)
    assert F.force_resync(7) == H("0307")
    assert one(202, H("00")) == ac.PackageVersionReq()


MC_SETUP = bytes([0x02, 0x02, 0x04, 0x03, 0x02, 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
                  0x08, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x00, 0x04, 0x00, 0x00,
                  0x00, 0x08, 0x00, 0x00])


def test_multicast_requests():
    assert one(200, H("0103")) == ac.McGroupStatusReq(0b0011)
    key = bytes([1, 2, 3, 4, 5, 6, 7, 8] * 2)
    assert one(200, MC_SETUP) == ac.McGroupSetupReq(2, 0x01020304, key, 1024, 2048)
    assert F.mc_group_setup_req(2, 0x01020304, key, 1024, 2048) == MC_SETUP
    assert one(200, H("0303")) == ac.McGroupDeleteReq(3)
    c = H("0402000400000f28768405")
    assert one(200, c) == ac.McClassCSessionReq(2, 1024, 15, 868_100_000, 5)
    assert F.mc_class_c_req(2, 1024, 15, 868_100_000, 5) == c
    b = H("0503000400004f28768405")
    assert one(200, b, 2) == ac.McClassBSessionReq(3, 1024, 15, 4, 868_100_000, 5)
    assert F.mc_class_b_req(3, 1024, 15, 4, 868_100_000, 5) == b


SETUP_V1 = H("0231000480" "0d40" "01020304")
SETUP_V2 = H("0231000480" "0d40" "01020304" "8000" "01020304")


def test_fragmentation_requests():
    assert one(201, H("0105")) == ac.FragSessionStatusReq(2, True)
    assert F.frag_status_req(2, True) == H("0105")
    r1 = one(201, SETUP_V1, 1)
    assert (r1.frag_index, r1.mc_group_bit_mask, r1.nb_frag, r1.frag_size, r1.frag_algo,
            r1.block_ack_delay, r1.padding, r1.descriptor) == (3, 1, 1024, 128, 1, 5, 64,
                                                               H("01020304"))
    assert r1.session_cnt is None
    r2 = one(201, SETUP_V2, 2)
    assert (r2.frag_algo, r2.ack_reception, r2.session_cnt, r2.mic) == (1, False, 128,
                                                                         H("01020304"))
    kw = dict(mask=1, algo=1, block_ack_delay=5, padding=64, descriptor=H("01020304"))
    assert F.frag_setup_req(3, 1024, 128, **kw) == SETUP_V1
    assert F.frag_setup_req(3, 1024, 128, **kw, version=2, session_cnt=128,
                            mic=H("01020304")) == SETUP_V2
    assert one(201, H("0303")) == ac.FragSessionDeleteReq(3)
    assert one(201, H("0402"), 2) == ac.FragDataBlockReceivedAns(2)
    frag = H("08008401020304")
    assert one(201, frag) == ac.DataFragment(2, 1024, H("01020304"))
    assert F.data_fragment(2, 1024, H("01020304")) == frag


def test_firmware_requests():
    assert one(203, H("01")) == ac.DevVersionReq()
    assert one(203, H("02") + (5000).to_bytes(4, "little")) == ac.DevRebootTimeReq(5000)
    assert one(203, H("03102700")) == ac.DevRebootCountdownReq(10000)
    assert one(203, H("04")) == ac.DevUpgradeImageReq()
    assert one(203, H("0507000000")) == ac.DevDeleteImageReq(7)


def test_several_commands_in_one_frame():
    cmds, err = ac.decode_downlink(200, H("00") + H("0103") + H("0303"))
    assert err is None
    assert cmds == [ac.PackageVersionReq(), ac.McGroupStatusReq(3), ac.McGroupDeleteReq(3)]


@pytest.mark.parametrize("port,payload,version,ok,what", [
    (201, H("0231000480"), 1, 0, "FragSessionSetupReq"),    # truncated
    (201, SETUP_V1, 2, 0, "FragSessionSetupReq"),           # v1 layout to a v2 device
    (200, H("0103") + H("04020004"), 1, 1, "McClassCSessionReq"),
    (202, H("01000400"), 1, 0, "AppTimeAns"),
    (203, H("0201"), 1, 0, "DevRebootTimeReq"),
    (201, H("08"), 1, 0, "DataFragment"),
    (201, H("0105") + H("0800840102"), 1, 1, "DataFragment"),  # not alone
])
def test_malformed_frames_name_the_command(port, payload, version, ok, what):
    cmds, err = ac.decode_downlink(port, payload, version)
    assert len(cmds) == ok
    assert isinstance(err, ac.AppCodecError) and err.command == what
    assert err.offset is not None


def test_unknown_commands_and_ports():
    cmds, err = ac.decode_downlink(200, H("0103") + H("7f"))
    assert cmds == [ac.McGroupStatusReq(3)] and err.offset == 2
    _, err = ac.decode_downlink(201, H("0402"), 1)   # v2-only command on v1
    assert err is not None
    _, err = ac.decode_downlink(10, H("00"))
    assert err is not None


# --------------------------------------------------------------- answers (encode)
def test_answer_vectors():
    assert ac.PackageVersionAns(3, 2).encode() == H("000302")
    assert ac.AppTimeReq(1024, 15, True).encode() == H("01000400001f")
    assert ac.DeviceAppTimePeriodicityAns(True, 1024).encode() == H("020100040000")
    assert ac.McGroupStatusAns(2, ((0, 0x01020304), (1, 0x02020304))).encode() == H(
        "012300040302010104030202")
    assert ac.McGroupSetupAns(2, True).encode() == H("0206")
    assert ac.McGroupDeleteAns(3, True).encode() == H("0307")
    assert ac.McSessionAns(0x04, 2, time_to_start=1024).encode() == H("0402000400")
    assert ac.McSessionAns(0x04, 2, dr_error=True, freq_error=True,
                           mc_group_undefined=True).encode() == H("041e")
    assert ac.McSessionAns(0x05, 3, time_to_start=1024).encode() == H("0503000400")
    assert ac.McSessionAns(0x05, 3, True, True, True).encode() == H("051f")
    assert ac.McSessionAns(0x04, 1, start_missed=True).encode() == H("0421")
    assert ac.FragSessionStatusAns(1, 3, 1024, 128, True).encode() == H("0100c48001")
    assert ac.FragSessionStatusAns(2, 3, 1024, 128, True, False, True).encode() == H(
        "0105" "00c480")
    assert ac.FragSessionSetupAns(2, True, True, False, True).encode() == H("028b")
    assert ac.FragSessionSetupAns(0, session_cnt_replay=True).encode() == H("0210")
    assert ac.FragSessionDeleteAns(3, True).encode() == H("0307")
    assert ac.FragDataBlockReceivedReq(2, True).encode() == H("0406")
    assert ac.DevVersionAns(0x01020304, 7).encode() == H("01" "04030201" "07000000")
    assert ac.DevRebootTimeAns(0xFFFFFFFF).encode() == H("02ffffffff")
    assert ac.DevRebootCountdownAns(0xFFFFFF).encode() == H("03ffffff")
    assert ac.DevUpgradeImageAns(3, 9).encode() == H("0403" "09000000")
    assert ac.DevUpgradeImageAns(1).encode() == H("0401")
    assert ac.DevDeleteImageAns(True, False).encode() == H("0501")
    assert ac.DevDeleteImageAns(False, True).encode() == H("0502")


def test_status_answer_parser_matches_vectors():
    assert F.status_ans(H("0100c48001"), 1) == {"index": 3, "received": 1024, "missing": 128,
                                                  "memory_error": True, "len": 5}
    d = F.status_ans(H("010500c480"), 2)
    assert d["memory_error"] and d["no_session"] and not d["mic_error"]
