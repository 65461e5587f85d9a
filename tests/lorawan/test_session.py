"""FuotaSession driven end to end by scripted fake devices (see test_session_harness)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from proxyota.fec.ts004 import encode
from proxyota.lorawan.applayer import (
    DataFragment,
    DevRebootTimeReq,
    FragSessionDeleteReq,
    FragSessionStatusReq,
    McClassBSessionReq,
    McGroupDeleteReq,
    decode_downlink,
)
from proxyota.lorawan.repair import RepairPolicy
from proxyota.lorawan.session import FuotaSession
from proxyota.lorawan.session_actions import SendMulticast, SendUnicast
from proxyota.errors import InvalidArgument
from proxyota.lorawan.session_config import RebootPolicy, Timeouts
from proxyota.lorawan.session_outcomes import Reason
from proxyota.lorawan.session_state import Phase, SessionState, Stage

from .test_session_harness import (
    FRAG_SIZE,
    IMAGE,
    NEW_FW,
    OLD_FW,
    T0,
    FakeDevice,
    FakeNetwork,
    make_config,
    run_campaign,
)

A = "00000000000000a1"
B = "00000000000000b2"
C = "00000000000000c3"
D = "00000000000000d4"
E = "00000000000000e5"
F = "00000000000000f6"


def reasons(machine: FuotaSession) -> dict[str, str]:
    return {eui: o.reason.value for eui, o in machine.outcomes().items()}


def multicast_fragments(net: FakeNetwork) -> list[DataFragment]:
    out = []
    for a in net.multicast:
        if a.kind == "fragment":
            (cmd,) = decode_downlink(201, a.payload)
            out.append(cmd)
    return out


def unicast_commands(net: FakeNetwork, eui: str, port: int, version: int = 1) -> list:
    cmds = []
    for p, payload in net.sent_to(eui):
        if p == port:
            cmds += decode_downlink(p, payload, version)
    return cmds


# --------------------------------------------------------------------------- happy path


def test_happy_path_mixed_stacks_all_successful():
    devices = [
        FakeDevice(A, "loramac", lost={2, 9}),
        FakeDevice(B, "loramac"),
        FakeDevice(C, "lbm", lost={1, 5, 6}),
        FakeDevice(D, "lbm"),
    ]
    machine, net = run_campaign(devices)
    assert machine.finished
    assert reasons(machine) == {A: "successful", B: "successful", C: "successful", D: "successful"}
    for eui in (A, B, C, D):
        detail = machine.outcomes()[eui].detail
        assert detail["verified"] is True and detail["fw_version"] == NEW_FW
    for d in devices:
        assert d.fw == NEW_FW and d.complete_data == IMAGE
    report = machine.report()
    # one fragmentation session per TS004 version, distinct FragIndex
    assert {k: (v["version"], v["frag_index"]) for k, v in report["lanes"].items()} == {"1": (1, 0), "2": (2, 1)}
    assert report["nb_frag"] == 25 and report["multicast_fragments"] >= 2 * 25
    assert report["airtime_s"] > 0
    assert net.groups_created == 1 and net.groups_deleted == 1
    # best-effort cleanup after the outcome
    for d in devices:
        v = 1 if d.stack == "loramac" else 2
        assert any(isinstance(c, FragSessionDeleteReq) for c in unicast_commands(net, d.eui, 201, v))
        assert any(isinstance(c, McGroupDeleteReq) for c in unicast_commands(net, d.eui, 200, v))
    json.dumps(machine.state.to_dict())
    assert machine.next_deadline() is None


def test_multicast_fragments_are_the_ts004_encoder_output():
    devices = [FakeDevice(A, "loramac", lost={4}), FakeDevice(C, "lbm", lost={3, 8})]
    machine, net = run_campaign(devices)
    assert set(reasons(machine).values()) == {"successful"}
    lanes = machine.state.lanes
    by_index: dict[int, list[DataFragment]] = {}
    for frag in multicast_fragments(net):
        by_index.setdefault(frag.frag_index, []).append(frag)
    for lane in lanes.values():
        frags = by_index[lane.frag_index]
        counters = [f.n for f in frags]
        assert len(counters) == len(set(counters)), "a fragment counter was sent twice"
        expected = encode(IMAGE, FRAG_SIZE, max(counters) - 25, version=lane.version)
        for f in frags:
            assert f.payload == expected[f.n - 1]


def test_device_without_ts003_and_ts006_is_successful_unverified():
    dev = FakeDevice(A, "loramac", packages={200: 1, 201: 1})
    machine, net = run_campaign([dev], timeouts=Timeouts(answer=60.0, max_retries=1, setup_window=3600.0))
    out = machine.outcomes()[A]
    assert out.reason is Reason.SUCCESSFUL and out.detail["verified"] is False
    assert machine.state.devices[A].versions == {"200": 1, "201": 1, "202": 0, "203": 0}
    assert dev.fw == OLD_FW  # nobody asked it to reboot


def test_class_b_session():
    dev = FakeDevice(C, "lbm")
    machine, net = run_campaign([dev], device_class="B", ping_slot_periodicity=2)
    assert reasons(machine) == {C: "successful"}
    assert machine.state.session_time % 128 == 0
    reqs = [c for c in unicast_commands(net, C, 200, 2) if isinstance(c, McClassBSessionReq)]
    assert reqs and reqs[0].periodicity == 2 and reqs[0].session_time == machine.state.session_time
    # fragments no closer than the ping-slot period
    times = [t for t, a in net.actions if isinstance(a, SendMulticast)]
    assert min(b - a for a, b in zip(times, times[1:])) >= 4.0


# --------------------------------------------------------------------------- probe and setup errors


def test_device_that_never_answers_fails_no_answer_after_retries():
    silent = FakeDevice(B, "loramac", silent=True)
    good = FakeDevice(C, "lbm")
    machine, net = run_campaign([silent, good])
    assert reasons(machine) == {B: "no_answer", C: "successful"}
    assert machine.outcomes()[B].detail["phase"] == "probe"
    # each of the 4 probes sent 1 + max_retries times, then nothing more
    kinds = [a.kind for _t, a in net.actions if isinstance(a, SendUnicast) and a.dev_eui == B]
    assert sorted(kinds) == sorted([f"probe:{p}" for p in (200, 201, 202, 203)] * 3)


@pytest.mark.parametrize(
    "packages, frag_versions, detail_version",
    [
        ({200: 1, 202: 1, 203: 1}, (1, 2), None),  # no TS004 at all: the port is ignored
        ({200: 1, 201: 3, 202: 1}, (1, 2), 3),  # a TS004 version proxyota does not speak
        ({200: 2, 201: 2, 202: 2}, (1,), 2),  # v2 device, campaign restricted to v1
        ({201: 1, 202: 1}, (1, 2), None),  # no TS005
    ],
)
def test_package_not_supported(packages, frag_versions, detail_version):
    dev = FakeDevice(A, "loramac", packages=packages)
    machine, net = run_campaign([dev], frag_versions=frag_versions)
    out = machine.outcomes()[A]
    assert out.reason is Reason.PACKAGE_NOT_SUPPORTED
    assert out.detail.get("version") == detail_version
    assert machine.state.devices[A].mc_setup_sent is False
    assert net.groups_deleted == 1


@pytest.mark.parametrize(
    "stack, bit, reason",
    [
        ("loramac", "frag_algo_unsupported", Reason.FRAG_ALGO_UNSUPPORTED),
        ("loramac", "not_enough_memory", Reason.NOT_ENOUGH_MEMORY),
        ("loramac", "frag_index_unsupported", Reason.FRAG_INDEX_UNSUPPORTED),
        ("loramac", "wrong_descriptor", Reason.WRONG_DESCRIPTOR),
        ("lbm", "frag_algo_unsupported", Reason.FRAG_ALGO_UNSUPPORTED),
        ("lbm", "not_enough_memory", Reason.NOT_ENOUGH_MEMORY),
        ("lbm", "frag_index_unsupported", Reason.FRAG_INDEX_UNSUPPORTED),
        ("lbm", "wrong_descriptor", Reason.WRONG_DESCRIPTOR),
        ("lbm", "session_cnt_replay", Reason.SESSION_CNT_REPLAY),
    ],
)
def test_frag_session_setup_error_bits(stack, bit, reason):
    bad = FakeDevice(A, stack, setup_bits={bit: True})
    good = FakeDevice(D, "lbm")
    machine, net = run_campaign([bad, good])
    out = machine.outcomes()[A]
    assert out.reason is reason
    assert out.detail["errors"] == [bit] and out.detail["phase"] == "frag_setup"
    assert machine.outcomes()[D].reason is Reason.SUCCESSFUL
    # the failed device is told to drop what was set up
    v = 1 if stack == "loramac" else 2
    assert any(isinstance(c, McGroupDeleteReq) for c in unicast_commands(net, A, 200, v))


def test_frag_setup_several_error_bits_all_reported():
    bad = FakeDevice(A, "lbm", setup_bits={"wrong_descriptor": True, "not_enough_memory": True})
    machine, _ = run_campaign([bad])
    out = machine.outcomes()[A]
    assert out.reason is Reason.NOT_ENOUGH_MEMORY
    assert out.detail["errors"] == ["not_enough_memory", "wrong_descriptor"]


@pytest.mark.parametrize(
    "stack, bit, reason",
    [
        ("loramac", "mc_group_undefined", Reason.MC_GROUP_UNDEFINED),
        ("loramac", "freq_error", Reason.FREQ_ERROR),
        ("loramac", "dr_error", Reason.DR_ERROR),
        ("lbm", "dr_error", Reason.DR_ERROR),
        ("lbm", "start_missed", Reason.START_MISSED),
    ],
)
def test_mc_class_c_session_error_bits(stack, bit, reason):
    bad = FakeDevice(A, stack, session_bits={bit: True})
    machine, net = run_campaign([bad, FakeDevice(D, "lbm")])
    out = machine.outcomes()[A]
    assert out.reason is reason
    assert out.detail["errors"] == [bit]
    assert machine.outcomes()[D].reason is Reason.SUCCESSFUL
    if bit == "start_missed":
        # StartMissed first triggers clock resyncs (bounded), then the device is failed
        assert out.detail["resyncs"] == 3
        assert [e for e in machine.state.devices[A].history if e["event"] == "clock_resync"]


def test_mc_group_setup_id_error():
    machine, _ = run_campaign([FakeDevice(A, "loramac", mc_id_error=True)])
    assert reasons(machine) == {A: "mc_group_id_error"}


def test_time_to_start_disagreement_forces_resync_then_succeeds():
    # no initial clock sync: the device clock is 500 s off when the session request arrives
    dev = FakeDevice(A, "lbm", clock_offset=500.0)
    machine, net = run_campaign([dev], clock_sync_required=False)
    assert reasons(machine) == {A: "successful"}
    history = machine.state.devices[A].history
    resync = [e for e in history if e["event"] == "clock_resync"]
    assert len(resync) == 1 and abs(resync[0]["time_to_start"] - resync[0]["expected"]) > 400
    sessions = [c for c in unicast_commands(net, A, 200, 2) if type(c).__name__ == "McClassCSessionReq"]
    assert len(sessions) == 2  # asked again after the resync
    assert abs(dev.clock_offset) < 2


def test_device_not_ready_at_session_start_fails():
    slow = FakeDevice(A, "loramac", period=1800.0, busy_period=1800.0)
    machine, _ = run_campaign([slow, FakeDevice(D, "lbm")],
                              timeouts=Timeouts(answer=2000.0, max_retries=1, setup_window=3000.0))
    out = machine.outcomes()[A]
    assert out.reason is Reason.NO_ANSWER and out.detail["why"] == "not ready at the session start"
    assert machine.outcomes()[D].reason is Reason.SUCCESSFUL


# --------------------------------------------------------------------------- rounds and repair


def test_unicast_repair_of_a_straggler():
    # a v2 device that misses a long burst: few devices remain, so the planner unicasts
    straggler = FakeDevice(C, "lbm", lost=set(range(5, 17)))
    machine, net = run_campaign([straggler, FakeDevice(D, "lbm")])
    assert reasons(machine) == {C: "successful", D: "successful"}
    report = machine.report()
    assert report["unicast_fragments"] > 0
    frags = [c for c in unicast_commands(net, C, 201, 2) if isinstance(c, DataFragment)]
    assert len(frags) == report["unicast_fragments"]
    multicast_ns = {f.n for f in multicast_fragments(net) if f.frag_index == 1}
    assert all(f.n > 25 and f.n not in multicast_ns for f in frags), "unicast repair must use fresh counters"
    expected = encode(IMAGE, FRAG_SIZE, max(f.n for f in frags) - 25, version=2)
    assert all(f.payload == expected[f.n - 1] for f in frags)
    assert not any(isinstance(c, DataFragment) for c in unicast_commands(net, D, 201, 2))


def test_partial_completion_needing_two_repair_rounds():
    # five v2 devices; four lose a lot in round 1 and everything of the first repair round
    policy = RepairPolicy(unicast_max_devices=1, max_loss=1.0)
    heavy = set(range(3, 14)) | set(range(37, 400))
    devices = [
        FakeDevice(A, "lbm", lost=heavy),
        FakeDevice(B, "lbm", lost=set(range(10, 22)) | set(range(37, 400))),
        FakeDevice(C, "lbm", lost=set(range(1, 12))),
        FakeDevice(D, "lbm", lost=set(range(15, 26))),
        FakeDevice(E, "lbm"),
    ]
    # devices A and B lose every counter >= 37 until they have missed the first repair
    first_repair_end = {}

    def hook(net: FakeNetwork) -> None:
        lane = net.machine.state.lanes.get("2")
        if lane and len(lane.rounds) >= 3 and not first_repair_end:
            first_repair_end["n"] = lane.rounds[1]["multicast"][0] + lane.rounds[1]["multicast"][1] - 1
            for d in devices[:2]:
                d.lost = {n for n in d.lost if n <= first_repair_end["n"]}

    machine = FuotaSession(make_config(devices, repair_policy=policy), IMAGE)
    net = FakeNetwork(machine, devices, hook=hook)
    net.route(machine.start(T0), T0)
    net.run()
    assert set(reasons(machine).values()) == {"successful"}
    lane = machine.state.lanes["2"]
    assert len(lane.rounds) >= 3  # round 1 + at least two repair rounds
    assert lane.rounds[1]["multicast"] and lane.rounds[2]["multicast"]
    # counters are fresh in every round
    spans = [(r["multicast"][0], r["multicast"][0] + r["multicast"][1] - 1) for r in lane.rounds if r["multicast"]]
    assert all(b[0] > a[1] for a, b in zip(spans, spans[1:]))
    # later rounds poll with participants = 0
    statuses = [decode_downlink(201, a.payload)[0] for a in net.multicast if a.kind == "status"]
    assert statuses[0].participants is True and all(s.participants is False for s in statuses[1:])


def test_rounds_cap_fails_missing_frag():
    # loses every coded fragment: cannot complete; after max_rounds it is failed
    hopeless = FakeDevice(A, "lbm", lost={2, 3} | set(range(26, 5000)), lost_unicast=set(range(26, 5000)),
                          packages={200: 2, 201: 2, 202: 2})
    machine, net = run_campaign([hopeless, FakeDevice(D, "lbm")], max_rounds=3,
                                repair_policy=RepairPolicy(max_loss=1.0))
    out = machine.outcomes()[A]
    assert out.reason is Reason.MISSING_FRAG and out.detail["rounds"] == 3
    assert machine.outcomes()[D].reason is Reason.SUCCESSFUL
    assert len(machine.state.lanes["2"].rounds) == 3


def test_loramac_node_missing_frag_above_zero_judged_complete_by_upgrade_image():
    dev = FakeDevice(A, "loramac", lost={2, 5, 11})
    machine, net = run_campaign([dev])
    out = machine.outcomes()[A]
    assert out.reason is Reason.SUCCESSFUL and out.detail["completion"] == "upgrade_image_valid"
    statuses = [e for e in machine.state.devices[A].history if e["event"] == "status"]
    assert statuses and all(e["missing_frag"] > 0 for e in statuses)  # never lowered
    assert machine.report()["unicast_fragments"] == 0


def test_loramac_node_without_ts006_is_not_failed_on_missing_frag_alone():
    # MissingFrag stays > 0; the planner (told the stack) infers completion
    dev = FakeDevice(A, "loramac", lost={2, 5}, packages={200: 1, 201: 1, 202: 1})
    machine, net = run_campaign([dev], timeouts=Timeouts(answer=60.0, max_retries=1, setup_window=3600.0))
    out = machine.outcomes()[A]
    assert out.reason is Reason.SUCCESSFUL and out.detail["verified"] is False
    assert dev.complete_data == IMAGE


def test_mic_error_on_data_block_received():
    machine, _ = run_campaign([FakeDevice(C, "lbm", mic_error=True)])
    out = machine.outcomes()[C]
    assert out.reason is Reason.MIC_ERROR and out.detail["signal"] == "FragDataBlockReceivedReq"


@pytest.mark.parametrize("stack, reason", [("loramac", "not_enough_memory"), ("lbm", "memory_error")])
def test_status_memory_error(stack, reason):
    dev = FakeDevice(A, stack, lost=set(range(1, 15)), memory_error_status=True)
    machine, _ = run_campaign([dev])
    assert reasons(machine) == {A: reason}


def test_silent_during_polls_fails_no_answer_after_asking_ts006():
    dev = FakeDevice(A, "lbm", lost=set(range(1, 20)) | set(range(26, 5000)), drop_status_answers=1000,
                     lost_unicast=set(range(1, 5000)))
    machine, net = run_campaign([dev, FakeDevice(D, "lbm")])
    out = machine.outcomes()[A]
    assert out.reason is Reason.NO_ANSWER and out.detail["image_status"] == "NO_IMAGE"
    assert out.detail["planner"] == "no_answer"


def test_session_window_reopened_when_too_short():
    # TimeOut 5 = 32 s: round 1 (36 fragments, ~1 s apart) does not fit; the devices need
    # fragments of the reopened session
    devices = [FakeDevice(C, "lbm", lost=set(range(1, 11))), FakeDevice(D, "lbm", lost=set(range(11, 19)))]
    machine, net = run_campaign(devices, session_time_out=5)
    assert set(reasons(machine).values()) == {"successful"}
    st = machine.state
    assert st.reopenings >= 1
    reopen_time = [e for e in st.log if e["event"] == "reopen"][0]["session_time"]
    assert [t for t, a in net.actions if isinstance(a, SendMulticast) and t >= reopen_time]
    sessions = [c for c in unicast_commands(net, C, 200, 2) if type(c).__name__ == "McClassCSessionReq"]
    assert len(sessions) == 1 + st.reopenings
    assert all(b.session_time >= a.session_time + 32 for a, b in zip(sessions, sessions[1:]))
    # every multicast frame went out inside an open window
    windows = [(s.session_time, s.session_time + 32) for s in sessions]
    for t, a in net.actions:
        if isinstance(a, SendMulticast):
            assert any(lo <= t < hi for lo, hi in windows)


# --------------------------------------------------------------------------- TS006


def test_wrong_version_after_reboot():
    machine, _ = run_campaign([FakeDevice(A, "loramac", fw_after=OLD_FW), FakeDevice(C, "lbm")])
    out = machine.outcomes()[A]
    assert out.reason is Reason.WRONG_VERSION_AFTER_REBOOT
    assert out.detail["fw_version"] == OLD_FW and out.detail["expected"] == NEW_FW
    assert machine.outcomes()[C].reason is Reason.SUCCESSFUL


def test_reboot_error_is_retried_then_fails():
    machine, _ = run_campaign([FakeDevice(A, "lbm", reboot_errors=1), FakeDevice(B, "lbm", reboot_errors=10)])
    assert reasons(machine) == {A: "successful", B: "reboot_error"}
    assert machine.outcomes()[B].detail["attempts"] == 3


def test_reboot_at_campaign_gps_time():
    at = int(T0) + 20_000
    dev = FakeDevice(C, "lbm")
    machine, net = run_campaign([dev], reboot=RebootPolicy(mode="time", at=at))
    assert reasons(machine) == {C: "successful"}
    reqs = [c for c in unicast_commands(net, C, 203) if isinstance(c, DevRebootTimeReq)]
    assert [r.reboot_time for r in reqs] == [at]
    assert machine.state.devices[C].finished_at >= at


# --------------------------------------------------------------------------- robustness


def test_duplicate_answers_change_nothing():
    plain, _ = run_campaign([FakeDevice(A, "loramac", lost={3}), FakeDevice(C, "lbm", lost={4})])
    dup, _ = run_campaign([FakeDevice(A, "loramac", lost={3}, duplicate_answers=True),
                           FakeDevice(C, "lbm", lost={4}, duplicate_answers=True)])
    assert reasons(dup) == reasons(plain) == {A: "successful", C: "successful"}
    for eui in (A, C):
        history = dup.state.devices[eui].history
        assert [e for e in history if e["event"] == "ignored"]
        assert not [e for e in history if e["event"] == "retry"]
    p, d = plain.report(), dup.report()
    for key in ("multicast_fragments", "unicast_fragments", "rounds"):
        assert p[key] == d[key]


def _started_machine(devices, **overrides):
    machine = FuotaSession(make_config(devices, **overrides), IMAGE)
    net = FakeNetwork(machine, devices)
    net.route(machine.start(T0), T0)
    return machine, net


def test_out_of_order_answers_do_not_regress():
    dev = FakeDevice(A, "loramac")
    machine, net = _started_machine([dev])
    net.run(until=T0 + 3000)
    ds = machine.state.devices[A]
    assert ds.phase is Phase.READY
    before = ds.to_dict()
    # answers for phases already passed (and a stray PackageVersionAns)
    for port, payload in [(200, b"\x02\x00"), (201, b"\x02\x00"), (201, b"\x00\x03\x01"),
                          (200, b"\x04\x00\x10\x00\x00")]:
        assert machine.on_uplink(A, port, payload, T0 + 3001) == []
    after = ds.to_dict()
    ignored = after.pop("history")[len(before["history"]):]
    before.pop("history")
    assert after == before
    assert [e["event"] for e in ignored] == ["ignored"] * 4


def test_stale_status_report_is_dropped():
    dev = FakeDevice(A, "loramac", lost=set(range(3, 12)))
    machine, net = _started_machine([dev])

    def at_poll(net: FakeNetwork) -> bool:
        return machine.state.devices[A].report is not None

    for _ in range(100_000):
        net.step()
        if at_poll(net):
            break
    ds = machine.state.devices[A]
    rep = dict(ds.report)
    older = b"\x01" + bytes([(rep["nb_frag_received"] - 5) & 0xFF, (rep["nb_frag_received"] - 5) >> 8, 20, 0])
    machine.on_uplink(A, 201, older, net.now + 1)
    assert ds.report == rep
    assert ds.history[-1]["event"] == "ignored"


def test_malformed_uplink_changes_nothing():
    dev = FakeDevice(A, "loramac")
    machine, net = _started_machine([dev])
    net.run(until=T0 + 400)
    before = machine.state.to_dict()
    deadline = machine.next_deadline()
    for port, payload in [(201, b"\x02"), (200, b"\x7f\x00"), (202, b"\x01\x00\x00"), (203, b"\x04\x03\x00")]:
        actions = machine.on_uplink(A, port, payload, T0 + 401)
        assert [type(a).__name__ for a in actions] == ["Log"]
    after = machine.state.to_dict()
    events = after["devices"][A].pop("history")[len(before["devices"][A]["history"]):]
    before["devices"][A].pop("history")
    assert after == before
    assert [e["event"] for e in events] == ["decode_error"] * 4
    assert machine.next_deadline() == deadline
    # unknown devices and other fPorts are ignored, not errors
    assert machine.on_uplink("ffffffffffffffff", 201, b"\x02", T0 + 402) == []
    assert machine.on_uplink(A, 10, b"\x00", T0 + 402) == []


def test_app_time_req_answered_in_any_phase():
    dev = FakeDevice(C, "lbm")
    machine, net = run_campaign([dev])
    assert machine.finished
    # device DONE: still answered, correction = GPS time of reception - DeviceTime, token echoed
    t = float(int(net.now) + 100)
    payload = b"\x01" + (int(t) - 42).to_bytes(4, "little") + bytes([0x05])
    (ans,) = machine.on_uplink(C, 202, payload, t + 0.3, gps_time=t)
    (cmd,) = decode_downlink(202, ans.payload, 2)
    assert (cmd.time_correction, cmd.token_ans) == (42, 5)
    # no answer needed: correct clock and AnsRequired clear
    assert machine.on_uplink(C, 202, b"\x01" + int(t).to_bytes(4, "little") + b"\x03", t, gps_time=t) == []
    # AnsRequired: answered even with a zero correction
    (ans,) = machine.on_uplink(C, 202, b"\x01" + int(t).to_bytes(4, "little") + b"\x13", t, gps_time=t)
    assert decode_downlink(202, ans.payload, 2)[0].time_correction == 0


def test_app_time_correction_saturates():
    machine, _ = _started_machine([FakeDevice(C, "lbm")])
    (ans,) = machine.on_uplink(C, 202, b"\x01" + (0).to_bytes(4, "little") + b"\x10", T0 + 10, gps_time=3_000_000_000.0)
    assert decode_downlink(202, ans.payload, 2)[0].time_correction == 0x7FFFFFFF
    assert machine.state.devices[C].synced_at is None  # saturated: the device will ask again


def test_cancel():
    machine, net = _started_machine([FakeDevice(A, "loramac"), FakeDevice(C, "lbm")])
    net.run(until=T0 + 600)
    actions = machine.cancel(T0 + 601)
    assert reasons(machine) == {A: "cancelled", C: "cancelled"}
    assert machine.finished and machine.next_deadline() is None
    assert any(type(a).__name__ == "DeleteMulticastGroup" for a in actions)


# --------------------------------------------------------------------------- persistence


def _fleet():
    return [
        FakeDevice(A, "loramac", lost={2, 9, 10}),
        FakeDevice(C, "lbm", lost=set(range(5, 17))),
        FakeDevice(D, "lbm", lost={1}),
        FakeDevice(E, "loramac", fw_after=OLD_FW),
        FakeDevice(F, "loramac", packages={200: 1, 201: 1, 202: 1}),
    ]


def _repairing(m: FuotaSession) -> bool:
    return any(len(lane.rounds) >= 2 for lane in m.state.lanes.values())


RESTART_POINTS = {
    "probing": lambda m: any(d.versions for d in m.state.devices.values()),
    "frag_setup": lambda m: any(d.phase is Phase.FRAG_SETUP for d in m.state.devices.values()),
    "ready": lambda m: any(d.phase is Phase.READY for d in m.state.devices.values()),
    "transmitting": lambda m: m.state.stage is Stage.TRANSMITTING and m.state.multicast_fragments >= 10,
    "polling": lambda m: m.state.stage is Stage.POLLING,
    "repairing": _repairing,
    "rebooting": lambda m: any(d.phase is Phase.REBOOTING for d in m.state.devices.values()),
    "wrapup": lambda m: m.state.stage is Stage.WRAPUP,
}


@pytest.mark.parametrize("point", sorted(RESTART_POINTS))
def test_resume_from_json_finishes_identically(point):
    reference, _ = run_campaign(_fleet())
    assert reference.report()["unicast_fragments"] > 0  # the fleet exercises unicast repair
    devices = _fleet()
    config = make_config(devices)
    machine = FuotaSession(config, IMAGE)
    net = FakeNetwork(machine, devices)
    net.route(machine.start(T0), T0)
    while not RESTART_POINTS[point](machine):
        assert net.step(), f"the campaign never reached {point}"
    saved = json.dumps(machine.state.to_dict(), sort_keys=True)
    resumed = FuotaSession(config, IMAGE, SessionState.from_dict(json.loads(saved)))
    assert json.dumps(resumed.state.to_dict(), sort_keys=True) == saved
    assert resumed._duty.state() == machine._duty.state()  # the duty-cycle account is restored
    assert resumed.next_deadline() == machine.next_deadline()
    net.machine = resumed
    net.run()
    assert resumed.outcomes() == reference.outcomes()
    assert resumed.report() == reference.report()
    assert resumed.state.to_dict() == reference.state.to_dict()
    assert set(reasons(resumed).values()) == {"successful", "wrong_version_after_reboot"}


def test_resume_rejects_another_image_or_device_set():
    devices = [FakeDevice(A, "loramac")]
    config = make_config(devices)
    machine = FuotaSession(config, IMAGE)
    machine.start(T0)
    saved = machine.state.to_dict()
    with pytest.raises(Exception, match="another image"):
        FuotaSession(config, IMAGE[:-1] + b"\x00", saved)
    other = make_config([FakeDevice(B, "loramac")])
    with pytest.raises(Exception, match="device set"):
        FuotaSession(other, IMAGE, saved)
    assert dataclasses.asdict(machine.state) == dataclasses.asdict(SessionState.from_dict(saved))


def test_status_request_after_the_window_closed_goes_by_unicast():
    devices = [FakeDevice(C, "lbm", lost=set(range(1, 15))), FakeDevice(A, "loramac", lost={4})]
    closed = []

    def hook(net: FakeNetwork) -> None:
        st = net.machine.state
        if not closed and st.tx_queue and all(item.kind == "status" for item in st.tx_queue):
            st.session_end = net.now  # the window closes before the status requests
            closed.append(net.now)

    machine = FuotaSession(make_config(devices), IMAGE)
    net = FakeNetwork(machine, devices, hook=hook)
    net.route(machine.start(T0), T0)
    net.run()
    assert closed and set(reasons(machine).values()) == {"successful"}
    assert [e for e in machine.state.log if e["event"] == "status_by_unicast"]
    polls = [c for c in unicast_commands(net, C, 201, 2) if isinstance(c, FragSessionStatusReq)]
    assert polls and polls[0].participants is True
    assert machine.state.multicast_status == 0


def test_tail_lost_missing_frag_zero_is_not_completion():
    # LoRaMac-node counts losses from counter gaps: losing the tail of round 1 gives
    # MissingFrag = 0 with NbFragReceived < NbFrag, which is not a complete block
    dev = FakeDevice(A, "loramac", lost=set(range(20, 37)))
    machine, net = run_campaign([dev])
    statuses = [e for e in machine.state.devices[A].history if e["event"] == "status"]
    assert statuses[0]["missing_frag"] == 0 and statuses[0]["nb_frag_received"] == 19
    out = machine.outcomes()[A]
    assert out.reason is Reason.SUCCESSFUL and dev.complete_data == IMAGE
    assert machine.report()["rounds"] >= 2  # it was repaired, not declared complete


def test_data_block_received_answer_not_flooded():
    # the device repeats FragDataBlockReceivedReq while our answer is queued behind its
    # unicast repair fragments: one answer per answer timeout, not one per request
    straggler = FakeDevice(C, "lbm", lost=set(range(5, 17)))
    machine, net = run_campaign([straggler, FakeDevice(D, "lbm")])
    assert machine.report()["unicast_fragments"] > 0
    history = machine.state.devices[C].history
    requests = [e for e in history if e["event"] == "data_block_received"]
    answers = [e for e in history if e["event"] == "sent" and e["request"] == "data_block_received_ans"]
    assert len(requests) > 3 and 1 <= len(answers) <= 2


def test_multicast_respects_the_duty_cycle():
    from proxyota.lorawan.regions import get_region

    devices = [FakeDevice(A, "loramac", lost={2, 9}), FakeDevice(C, "lbm", lost=set(range(5, 17))),
               FakeDevice(D, "lbm")]
    machine, net = run_campaign(devices, session_time_out=5)  # reopenings included
    dc = get_region("EU868").duty_cycle_for(869_525_000)
    frames = [(t, a.airtime) for t, a in net.actions if isinstance(a, SendMulticast)]
    assert len(frames) > 36
    for (t1, air1), (t2, _air2) in zip(frames, frames[1:]):
        assert t2 - t1 >= air1 / dc - 1e-9
    assert machine.report()["airtime_s"] == pytest.approx(sum(air for _t, air in frames))


@pytest.mark.parametrize("spacing", [0.0, 5.0, 12.0])
def test_multicast_frames_keep_the_network_servers_spacing(spacing):
    """ChirpStack spaces class C multicast items by multicast_class_c_margin: the machine
    hands them over no faster (at DR5 the duty cycle alone would allow ~1.2 s)."""
    from proxyota.lorawan.regions import get_region

    devices = [FakeDevice(A, "loramac", lost={2, 9}), FakeDevice(D, "lbm")]
    machine, net = run_campaign(devices, min_frame_spacing=spacing)
    frames = [(t, a.airtime) for t, a in net.actions if isinstance(a, SendMulticast)]
    assert len(frames) > 10
    dc = get_region("EU868").duty_cycle_for(869_525_000)
    gaps = [t2 - t1 for (t1, _), (t2, _) in zip(frames, frames[1:])]
    assert min(gaps) >= max(spacing, frames[0][1] / dc) - 1e-9
    if spacing:
        assert min(gaps) < spacing + 1.0  # paced, not stalled


def test_state_document_of_every_step_equals_a_fresh_conversion():
    """to_dict converts the append-only journals incrementally: at every step of a whole
    campaign its output equals a full conversion, and earlier documents are not changed
    by later steps."""
    from proxyota.lorawan.session_state import _plain

    devices = [FakeDevice(A, "loramac", lost={2, 9}), FakeDevice(C, "lbm", lost=set(range(5, 17))),
               FakeDevice(D, "lbm")]
    machine = FuotaSession(make_config(devices), IMAGE)
    net = FakeNetwork(machine, devices)
    docs = []
    original_route = net.route

    def route(actions, now):
        doc = machine.state.to_dict()
        assert doc == _plain(machine.state)
        docs.append((doc, json.dumps(doc)))
        return original_route(actions, now)

    net.route = route
    net.route(machine.start(T0), T0)
    net.run()
    assert len(docs) > 50
    assert all(json.dumps(doc) == frozen for doc, frozen in docs)
    assert machine.state.to_dict() == _plain(machine.state)


def _session_requests(net):
    return [(t, a.dev_eui) for t, a in net.actions
            if isinstance(a, SendUnicast) and a.kind == "session_setup"]


def test_session_lead_starts_the_session_once_the_fleet_is_set_up():
    devices = [FakeDevice(A, "loramac", lost={2, 9}), FakeDevice(C, "lbm"), FakeDevice(D, "lbm")]
    lead = 600.0
    machine, net = run_campaign(devices, timeouts=Timeouts(answer=120.0, max_retries=2,
                                                           setup_window=20_000.0,
                                                           session_lead=lead))
    log = {e["event"]: e for e in machine.state.log}
    fixed = log["session_time"]
    assert fixed["early"] is True
    # fixed `lead` after the moment the last device finished its setup, long before the
    # planned start + setup_window; no session request went out before that moment
    requests = _session_requests(net)
    assert requests and min(t for t, _ in requests) == pytest.approx(fixed["t"])
    assert fixed["session_time"] == math.ceil(fixed["t"] + lead) < T0 + 20_000.0
    assert log["session_start"]["session_time"] == fixed["session_time"]
    assert {e for e, o in machine.outcomes().items() if o.reason.value == "successful"} == {A, C, D}


def test_session_lead_does_not_wait_past_the_setup_window_for_a_silent_device():
    devices = [FakeDevice(A, "loramac"), FakeDevice(C, "lbm", silent=True)]
    machine, net = run_campaign(devices, timeouts=Timeouts(answer=5_000.0, max_retries=5,
                                                           setup_window=3_000.0,
                                                           session_lead=500.0))
    fixed = next(e for e in machine.state.log if e["event"] == "session_time")
    # the silent device never finishes its probes: the planned time stands, committed
    # `lead` ahead of it, and the ready device is told then
    assert fixed["early"] is False
    assert fixed["session_time"] == T0 + 3_000 and fixed["t"] == pytest.approx(T0 + 2_500.0)
    assert [e for _, e in _session_requests(net)][:1] == [A]
    assert machine.outcomes()[A].reason.value == "successful"
    assert machine.outcomes()[C].reason.value == "no_answer"


@pytest.mark.parametrize("lead", [0.0, -1.0, 3_601.0, float("nan")])
def test_session_lead_is_validated(lead):
    with pytest.raises(InvalidArgument, match="session_lead"):
        Timeouts(setup_window=3_600.0, session_lead=lead)
