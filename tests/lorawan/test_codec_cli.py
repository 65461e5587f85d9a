"""``proxyota lorawan decode`` / ``proxyota lorawan encode``."""

from __future__ import annotations

import io
import json

import pytest

from proxyota.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_decode_prints_json_list_of_all_commands(capsys):
    # v2 FragSessionStatusAns (status first) followed by FragDataBlockReceivedReq
    code, out, _ = _run(capsys, "lorawan", "decode", "--fport", "201", "--uplink", "--version", "2",
                        "01 00 a0 44 7f 04 06")
    assert code == 0
    assert json.loads(out) == [
        {"command": "FragSessionStatusAns", "frag_index": 1, "nb_frag_received": 1184, "missing_frag": 127,
         "memory_error": False, "mic_error": False, "session_does_not_exist": False},
        {"command": "FragDataBlockReceivedReq", "frag_index": 2, "mic_error": True},
    ]


def test_decode_multicast_fields_are_named_as_in_the_spec(capsys):
    # ChirpStack lrwn multicastsetup/v1.rs McClassCSessionReq vector
    code, out, _ = _run(capsys, "lorawan", "decode", "--fport", "200", "--downlink", "0402000400000f28768405")
    assert code == 0
    assert json.loads(out) == [{"command": "McClassCSessionReq", "mc_group_id": 2, "session_time": 1024,
                                "time_out": 15, "dl_frequency": 868100000, "dr": 5}]
    code, out, _ = _run(capsys, "lorawan", "decode", "--fport", "200", "--uplink",
                        "0x01:23:00:04:03:02:01:01:04:03:02:02")
    assert json.loads(out)[0]["groups"] == [{"mc_group_id": 0, "mc_addr": "01020304"},
                                            {"mc_group_id": 1, "mc_addr": "02020304"}]


def test_decode_clock_sync_and_firmware_management(capsys):
    code, out, _ = _run(capsys, "lorawan", "decode", "--fport", "202", "--downlink", "01fffdfbf705")
    assert json.loads(out) == [{"command": "AppTimeAns", "time_correction": -134480385, "token_ans": 5}]
    code, out, _ = _run(capsys, "lorawan", "decode", "--fport", "203", "--uplink", "0101020000f0040000040301020400")
    assert json.loads(out) == [
        {"command": "DevVersionAns", "fw_version": 513, "hw_version": 1264},
        {"command": "DevUpgradeImageAns", "up_image_status": "VALID", "next_firmware_version": 262657},
    ]


def test_encode_takes_the_decoded_json_back(capsys):
    hexstr = "02310004800d400102030480000102030f"
    _, out, _ = _run(capsys, "lorawan", "decode", "--fport", "201", "--downlink", "--version", "2", hexstr)
    code, out2, _ = _run(capsys, "lorawan", "encode", "--fport", "201", "--downlink", "--version", "2", out)
    assert code == 0 and out2.strip() == hexstr


def test_encode_reads_stdin_when_argument_is_dash(capsys, monkeypatch):
    doc = json.dumps([{"command": "ForceDeviceResyncCmd", "nb_transmissions": 3},
                      {"command": "DeviceAppTimePeriodicityReq", "period": 2}])
    monkeypatch.setattr("sys.stdin", io.StringIO(doc))
    code, out, _ = _run(capsys, "lorawan", "encode", "--fport", "202", "--downlink", "--version", "2", "-")
    assert code == 0 and out.strip() == "03030202"


def test_encode_accepts_a_single_object(capsys):
    code, out, _ = _run(capsys, "lorawan", "encode", "--fport", "201", "--downlink",
                        '{"command": "DataFragment", "frag_index": 2, "n": 1024, "payload": "01020304"}')
    assert code == 0 and out.strip() == "08008401020304"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["decode", "--fport", "201", "--uplink", "0100c480"], "FragSessionStatusAns, byte 4: truncated"),
        (["decode", "--fport", "201", "--downlink", "01fd"], "FragSessionStatusReq, byte 1: RFU bits"),
        (["decode", "--fport", "201", "--uplink", "zz"], "not a hex string"),
        (["decode", "--fport", "42", "--uplink", "00"], "no application-layer package on fPort 42"),
        (["decode", "--fport", "203", "--uplink", "--version", "2", "00"], "versions (1,)"),
        (["encode", "--fport", "201", "--downlink", "[{"], "invalid JSON"),
        (["encode", "--fport", "201", "--downlink", "5"], "expected a JSON list"),
        (["encode", "--fport", "201", "--downlink", '[{"command": "FragSessionDeleteReq", "frag_index": 7}]'],
         "FragSessionDeleteReq.frag_index must be in 0..3"),
        (["encode", "--fport", "201", "--uplink", '[{"command": "FragSessionDeleteReq", "frag_index": 1}]'],
         "not a uplink command"),
    ],
)
def test_errors_exit_1_with_a_message(capsys, argv, message):
    code, out, err = _run(capsys, "lorawan", *argv)
    assert code == 1 and out == ""
    assert message in err


def test_lenient_flag_ignores_rfu_bits(capsys):
    code, out, _ = _run(capsys, "lorawan", "decode", "--fport", "201", "--downlink", "--lenient", "01fd")
    assert code == 0
    assert json.loads(out) == [{"command": "FragSessionStatusReq", "frag_index": 2, "participants": True}]


def test_direction_is_required(capsys):
    with pytest.raises(SystemExit) as info:
        main(["lorawan", "decode", "--fport", "201", "00"])
    assert info.value.code == 2
