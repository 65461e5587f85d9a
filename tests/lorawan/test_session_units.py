"""Unit tests of the FUOTA session pieces: config, state (de)serialisation, fragment source,
API misuse, and a few scripted device behaviours not covered in test_session."""

from __future__ import annotations

import json

import pytest

from proxyota.errors import InvalidArgument
from proxyota.fec.ts004 import encode
from proxyota.lorawan import keys
from proxyota.lorawan.applayer import (
    AppTimeReq,
    McClassCSessionReq,
    McGroupSetupReq,
    PackageVersionAns,
    decode_downlink,
    encode_commands,
)
from proxyota.lorawan.repair import RepairPolicy
from proxyota.lorawan.session import FuotaSession
from proxyota.lorawan.session_actions import CreateMulticastGroup, SendUnicast
from proxyota.lorawan.session_config import DeviceConfig, RebootPolicy, SessionConfig, Timeouts
from proxyota.lorawan.session_fragments import FragmentSource
from proxyota.lorawan.session_outcomes import Outcome, Reason
from proxyota.lorawan.session_state import DeviceState, Phase, SessionState, Stage

from .test_session_harness import IMAGE, MC_ADDR, MC_KEY, T0, FakeDevice, FakeNetwork, make_config, run_campaign

A = "00000000000000a1"
C = "00000000000000c3"
D = "00000000000000d4"


# --------------------------------------------------------------------------- config


def test_config_defaults_from_the_region():
    cfg = SessionConfig(devices={"01-02-03-04-05-06-07-08": DeviceConfig(gen_app_key=bytes(16))},
                        mc_addr=1, mc_key=bytes(16))
    assert list(cfg.devices) == ["0102030405060708"]
    # EU868 class C default: RX2 869.525 MHz DR0, the largest fragment of DR0 (51 - 3)
    assert (cfg.frequency, cfg.dr, cfg.frag_size) == (869_525_000, 0, 48)
    b = SessionConfig(devices={"0102030405060708": DeviceConfig(gen_app_key=bytes(16))}, mc_addr=1,
                      mc_key=bytes(16), device_class="B", region="US915")
    assert b.frequency == 0  # US915 ping slots hop
    assert b.dr == 8


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mc_key": bytes(15)}, "mc_key"),
        ({"mc_addr": -1}, "mc_addr"),
        ({"mc_group_id": 4}, "mc_group_id"),
        ({"frag_index": 4}, "frag_index"),
        ({"frag_size": 200, "dr": 0}, "frag_size"),
        ({"descriptor": b"\x00"}, "descriptor"),
        ({"device_class": "A"}, "device_class"),
        ({"frag_versions": (3,)}, "frag_versions"),
        ({"dr": 14}, "data rate"),
        ({"devices": {}}, "devices"),
        ({"devices": {"xyz": DeviceConfig(gen_app_key=bytes(16))}}, "dev_eui"),
        ({"session_time_out": 16}, "session_time_out"),
        ({"block_ack_delay": 8}, "block_ack_delay"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    base = dict(devices={"0102030405060708": DeviceConfig(gen_app_key=bytes(16))}, mc_addr=1, mc_key=bytes(16))
    base.update(kwargs)
    with pytest.raises(InvalidArgument, match=match):
        SessionConfig(**base)


def test_device_config_needs_the_right_root_key():
    with pytest.raises(InvalidArgument, match="gen_app_key"):
        DeviceConfig(app_key=bytes(16))
    with pytest.raises(InvalidArgument, match="app_key"):
        DeviceConfig(gen_app_key=bytes(16), lorawan_1_1=True)
    with pytest.raises(InvalidArgument, match="stack"):
        DeviceConfig(gen_app_key=bytes(16), stack="contiki")
    assert DeviceConfig(app_key="00" * 16, lorawan_1_1=True).root_key == bytes(16)


def test_timeouts_and_reboot_policy_validation():
    with pytest.raises(InvalidArgument):
        Timeouts(answer=0)
    with pytest.raises(InvalidArgument):
        Timeouts(max_retries=-1)
    with pytest.raises(InvalidArgument, match="at"):
        RebootPolicy(mode="time")
    with pytest.raises(InvalidArgument, match="mode"):
        RebootPolicy(mode="later")


def test_config_json_round_trip():
    devices = [FakeDevice(A, "loramac"), FakeDevice(C, "lbm")]
    cfg = make_config(devices, repair_policy=RepairPolicy(target=0.9), reboot=RebootPolicy(mode="time", at=5),
                      max_rounds=4, timeouts=Timeouts(answer=30.0, reopen_window=100.0))
    data = json.loads(json.dumps(cfg.to_dict()))
    assert SessionConfig.from_dict(data) == cfg
    assert cfg.policy.max_rounds == 4 and cfg.policy.target == 0.9
    with pytest.raises(InvalidArgument, match="no field"):
        SessionConfig.from_dict({**data, "colour": "red"})


# --------------------------------------------------------------------------- fragments


@pytest.mark.parametrize("version", [1, 2])
def test_fragment_source_matches_the_encoder(version):
    data = bytes(range(256)) * 7 + b"tail"  # padding needed
    src = FragmentSource(data, 33)
    expected = encode(data, 33, 150, version=version)
    assert src.nb_frag + 150 == len(expected) and src.padding == (33 - len(data) % 33) % 33
    # out of order, across chunk boundaries, twice
    for n in [1, src.nb_frag, src.nb_frag + 1, src.nb_frag + 150, src.nb_frag + 64, src.nb_frag + 65, 5,
              src.nb_frag + 2]:
        assert src.fragment(n, version) == expected[n - 1]
    with pytest.raises(InvalidArgument):
        src.fragment(0, version)


# --------------------------------------------------------------------------- state


def test_state_round_trips_through_json_and_rejects_garbage():
    devices = [FakeDevice(A, "loramac"), FakeDevice(C, "lbm", lost={2})]
    machine = FuotaSession(make_config(devices), IMAGE)
    net = FakeNetwork(machine, devices)
    net.route(machine.start(T0), T0)
    net.run(until=T0 + 3700)
    data = machine.state.to_dict()
    text = json.dumps(data)
    again = SessionState.from_dict(json.loads(text))
    assert again == machine.state
    assert isinstance(again.devices[A].phase, Phase) and isinstance(again.stage, Stage)
    for bad in (
        {**data, "stage": "flying"},
        {**data, "format": 99},
        {**data, "extra": 1},
        {**data, "devices": []},
        {**data, "devices": {A: {**data["devices"][A], "phase": "nowhere"}}},
        {**data, "tx_queue": [{"kind": "fragment", "lane": "1", "bogus": 1}]},
        "not a dict",
    ):
        with pytest.raises(InvalidArgument):
            SessionState.from_dict(bad)
    with pytest.raises(InvalidArgument):
        DeviceState.from_dict({"dev_eui": A, "pending": {"x": {"kind": "x"}}})


def test_outcome_to_dict():
    assert Outcome(Reason.MISSING_FRAG, {"rounds": 3}).to_dict() == {"reason": "missing_frag", "detail": {"rounds": 3}}
    assert Outcome(Reason.SUCCESSFUL).successful


# --------------------------------------------------------------------------- API misuse and first actions


def test_api_misuse_is_reported_and_changes_nothing():
    machine = FuotaSession(make_config([FakeDevice(A, "loramac")]), IMAGE)
    with pytest.raises(InvalidArgument, match="start"):
        machine.on_uplink(A, 201, b"\x00\x03\x01", T0)
    assert machine.on_timer(T0) == [] and machine.next_deadline() is None
    machine.start(T0)
    with pytest.raises(InvalidArgument, match="already started"):
        machine.start(T0)
    before = machine.state.to_dict()
    with pytest.raises(InvalidArgument, match="dev_eui"):
        machine.on_uplink("nope", 201, b"", T0)
    with pytest.raises(InvalidArgument, match="now"):
        machine.on_uplink(A, 201, b"", float("nan"))
    with pytest.raises(InvalidArgument, match="fport"):
        machine.on_uplink(A, "201", b"", T0)
    with pytest.raises(InvalidArgument, match="payload"):
        machine.on_uplink(A, 201, "00", T0)
    assert machine.state.to_dict() == before
    with pytest.raises(InvalidArgument, match="config"):
        FuotaSession({}, IMAGE)
    with pytest.raises(InvalidArgument, match="image"):
        FuotaSession(make_config([FakeDevice(A, "loramac")]), b"")
    with pytest.raises(InvalidArgument, match="14-bit"):
        FuotaSession(make_config([FakeDevice(A, "loramac")], frag_size=1), bytes(20000))


def test_start_creates_the_group_and_probes_every_package():
    devices = [FakeDevice(A, "loramac"), FakeDevice(C, "lbm")]
    cfg = make_config(devices)
    machine = FuotaSession(cfg, IMAGE)
    actions = machine.start(T0)
    group = actions[0]
    assert isinstance(group, CreateMulticastGroup)
    assert group.mc_app_s_key == keys.mc_app_s_key(MC_KEY, MC_ADDR)
    assert group.mc_nwk_s_key == keys.mc_nwk_s_key(MC_KEY, MC_ADDR)
    assert (group.group_type, group.dr, group.frequency, group.dev_euis) == ("C", 5, 869_525_000, (A, C))
    probes = [(a.dev_eui, a.fport, a.payload) for a in actions[1:]]
    assert probes == [(e, p, b"\x00") for e in (A, C) for p in (200, 201, 202, 203)]
    assert machine.state.session_time == T0 + 3600
    # deadlines grow with the requests queued ahead (class A: one downlink per uplink)
    assert sorted(r.deadline - T0 for r in machine.state.devices[A].pending.values()) == [120, 240, 360, 480]
    assert machine.next_deadline() == T0 + 120


def test_mc_group_setup_carries_the_device_specific_encrypted_key():
    devices = [FakeDevice(A, "loramac"), FakeDevice(C, "lbm")]
    machine, net = run_campaign(devices)
    for d in devices:
        (req,) = [c for p, pl in net.sent_to(d.eui) if p == 200 for c in decode_downlink(200, pl)
                  if isinstance(c, McGroupSetupReq)]
        ke = keys.mc_ke_key(keys.mc_root_key(d.key))
        assert keys.decrypt_mc_key(ke, req.mc_key_encrypted) == MC_KEY
        assert (req.mc_group_id, req.mc_addr) == (0, MC_ADDR)
        (sess,) = [c for p, pl in net.sent_to(d.eui) if p == 200 for c in decode_downlink(200, pl)
                   if isinstance(c, McClassCSessionReq)]
        assert (sess.session_time, sess.dl_frequency, sess.dr) == (T0 + 3600, 869_525_000, 5)
        assert sess.time_out == machine.state.time_out


# --------------------------------------------------------------------------- more device behaviours


def test_several_commands_in_one_uplink():
    machine = FuotaSession(make_config([FakeDevice(A, "loramac")]), IMAGE)
    machine.start(T0)
    payload = encode_commands([PackageVersionAns(1, 1), AppTimeReq(int(T0) - 3, 2)])
    actions = machine.on_uplink(A, 202, payload, T0 + 10, gps_time=T0 + 10)
    dev = machine.state.devices[A]
    assert dev.versions == {"202": 1} and dev.synced_at == T0 + 10
    (ans,) = [a for a in actions if isinstance(a, SendUnicast) and a.kind == "app_time_ans"]
    assert decode_downlink(202, ans.payload)[0].time_correction == 13


def test_optional_probe_unanswered_is_not_supported_not_failed():
    dev = FakeDevice(A, "loramac", packages={200: 1, 201: 1, 202: 1})
    machine, net = run_campaign([dev])
    assert machine.outcomes()[A].reason is Reason.SUCCESSFUL
    history = machine.state.devices[A].history
    assert [e["attempts"] for e in history if e["event"] == "timeout"] == [3]


def test_loss_too_high_after_asking_ts006():
    # a device that hears almost nothing: the planner gives up on the link
    dev = FakeDevice(A, "lbm", lost=set(range(1, 5000)) - {1, 2}, lost_unicast=set(range(1, 5000)))
    machine, _ = run_campaign([dev, FakeDevice(D, "lbm")])
    out = machine.outcomes()[A]
    assert out.reason is Reason.LOSS_TOO_HIGH and out.detail["image_status"] == "NO_IMAGE"
    assert machine.outcomes()[D].reason is Reason.SUCCESSFUL


def test_device_that_lost_its_session():
    dev = FakeDevice(A, "lbm", lost=set(range(1, 15)))
    forgot = []

    def hook(net: FakeNetwork) -> None:
        if not forgot and net.machine.state.multicast_status:
            dev.setup = None  # e.g. a reboot: the fragmentation session is gone
            forgot.append(True)

    devices = [dev, FakeDevice(D, "lbm")]
    machine = FuotaSession(make_config(devices), IMAGE)
    net = FakeNetwork(machine, devices, hook=hook)
    net.route(machine.start(T0), T0)
    net.run()
    out = machine.outcomes()[A]
    assert out.reason is Reason.SESSION_DOES_NOT_EXIST and out.detail["image_status"] == "NO_IMAGE"


def test_corrupt_image_reported_by_ts006():
    dev = FakeDevice(A, "loramac", lost={3, 4, 5, 6})
    original = dev.on_command

    def on_command(port, cmd, t, net):
        if type(cmd).__name__ == "DevUpgradeImageReq":
            from proxyota.lorawan.applayer import DevUpgradeImageAns, UpImageStatus

            dev.say(203, DevUpgradeImageAns(UpImageStatus.CORRUPT_OR_BAD_SIGNATURE))
            return
        original(port, cmd, t, net)

    dev.on_command = on_command
    machine, _ = run_campaign([dev], repair_policy=RepairPolicy(max_rounds=2, max_loss=1.0))
    out = machine.outcomes()[A]
    assert out.reason is Reason.IMAGE_CORRUPT and out.detail["image_status"] == "CORRUPT_OR_BAD_SIGNATURE"


def test_planner_done_but_no_image_goes_back_to_repair():
    # white box: the planner judged the device done, TS006 says there is no image yet
    dev = FakeDevice(A, "loramac", lost=set(range(3, 15)))
    devices = [dev]
    machine = FuotaSession(make_config(devices), IMAGE)
    net = FakeNetwork(machine, devices)
    net.route(machine.start(T0), T0)
    while machine.state.stage is not Stage.POLLING:
        assert net.step()
    ds = machine.state.devices[A]
    actions = []
    machine._confirm_done(ds, net.now, actions)  # what _plan does for a "done" device
    assert ds.confirming and "upgrade_image" in ds.pending
    rounds = len(machine.state.lanes["1"].rounds)
    machine.on_uplink(A, 203, b"\x04\x00", net.now + 1)  # DevUpgradeImageAns: no image
    assert not ds.confirming and ds.image_absent_round == rounds and ds.phase is Phase.RECEIVING
    net.run()
    assert machine.outcomes()[A].reason is Reason.SUCCESSFUL
    assert len(machine.state.lanes["1"].rounds) > rounds


def test_cancel_before_start():
    machine = FuotaSession(make_config([FakeDevice(A, "loramac")]), IMAGE)
    assert machine.cancel(T0) == []
    assert machine.finished and machine.outcomes() == {}


@pytest.mark.parametrize("stacks, time_out", [(("loramac", "loramac"), 10), (("loramac", "lbm"), 11)])
def test_window_sized_for_every_fragmentation_session(stacks, time_out):
    # DR0, 40-byte fragments: one every ~23 s at 10 % duty cycle; round 1 = 36 fragments per
    # session: ~830 s -> TimeOut 10; two sessions (v1 + v2 devices) -> 11
    devices = [FakeDevice(A, stacks[0]), FakeDevice(C, stacks[1])]
    machine, net = run_campaign(devices, dr=0, max_rounds=1)
    assert machine.state.time_out == time_out
    for d in devices:
        sessions = [c for p, pl in net.sent_to(d.eui) if p == 200
                    for c in decode_downlink(200, pl, 1 if d.stack == "loramac" else 2)
                    if isinstance(c, McClassCSessionReq)]
        assert [s.time_out for s in sessions] == [time_out]
    assert set(o.reason for o in machine.outcomes().values()) == {Reason.SUCCESSFUL}
