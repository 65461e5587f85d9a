"""Delivery tracking (``Timeouts.delivery``): a class A request's answer timer starts when the
network server reports it transmitted (ChirpStack ``txack``), a request still queued is never
resent, and a device that never fetches its downlinks is given up after bounded waits."""

from __future__ import annotations

from proxyota.lorawan.session import FuotaSession
from proxyota.lorawan.session_actions import SendUnicast
from proxyota.lorawan.session_config import DeviceConfig, SessionConfig, Timeouts

EUI = "70b3d57ed0000001"
T0 = 1_400_000_000.0


def _session(**timeouts) -> FuotaSession:
    config = SessionConfig(
        devices={EUI: DeviceConfig(gen_app_key=bytes(range(16)))},
        mc_addr=0x01020304, mc_key=bytes(16), region="EU868",
        timeouts=Timeouts(**timeouts),
    )
    return FuotaSession(config, bytes(range(256)) * 8)


def _unicasts(actions) -> list[SendUnicast]:
    return [a for a in actions if isinstance(a, SendUnicast)]


def _events(session: FuotaSession, name: str) -> list[dict]:
    return [h for h in session.state.devices[EUI].history if h["event"] == name]


def test_undelivered_request_is_never_resent_and_waits_bounded() -> None:
    s = _session(answer=100.0, delivery=1000.0, max_retries=2)
    probes = _unicasts(s.start(T0))
    assert len(probes) == 4  # PackageVersionReq on fPorts 200-203, all queued at once
    # the deadlines stack behind the queue: one delivery window per downlink ahead
    deadlines = sorted(r.deadline for r in s.state.devices[EUI].pending.values())
    assert deadlines == [T0 + 1000.0, T0 + 2000.0, T0 + 3000.0, T0 + 4000.0]
    resent = []
    t = T0
    while not s.finished and t < T0 + 100_000:
        t = s.next_deadline()
        resent += _unicasts(a for a in s.on_timer(t) if isinstance(a, SendUnicast)
                            and a.kind.startswith("probe"))
    assert resent == []  # nothing fetched, nothing resent
    assert len(_events(s, "waiting_delivery")) >= 2
    assert s.outcomes()[EUI].reason == "no_answer"


def test_answer_timer_starts_at_delivery_then_resends() -> None:
    s = _session(answer=100.0, delivery=1000.0, max_retries=2)
    s.start(T0)
    # the gateway transmits probe:200 late (the device uplinked only now)
    s.on_delivered(EUI, "probe:200", T0 + 900.0)
    req = s.state.devices[EUI].pending["probe:200"]
    assert req.delivered_at == T0 + 900.0 and req.deadline == T0 + 1000.0
    assert s.state.devices[EUI].unfetched == 3
    # a repeated report or one for an unknown device changes no request
    assert s.on_delivered(EUI, "probe:200", T0 + 950.0) == []
    assert s.on_delivered("ffffffffffffffff", "probe:200", T0 + 950.0) == []
    assert s.state.devices[EUI].pending["probe:200"].delivered_at == T0 + 900.0
    # no answer within `answer` after the delivery: resent (a delivered request was lost)
    actions = s.on_timer(T0 + 1000.0)
    again = [a for a in _unicasts(actions) if a.kind == "probe:200"]
    assert len(again) == 1 and again[0].payload == bytes([0x00])
    assert s.state.devices[EUI].pending["probe:200"].delivered_at is None


def test_without_tracking_the_old_timers_hold() -> None:
    s = _session(answer=100.0, max_retries=2)
    s.start(T0)
    deadlines = sorted(r.deadline for r in s.state.devices[EUI].pending.values())
    assert deadlines == [T0 + 100.0, T0 + 200.0, T0 + 300.0, T0 + 400.0]
    assert s.on_delivered(EUI, "probe:200", T0 + 1.0) == []
    assert s.state.devices[EUI].pending["probe:200"].delivered_at is None


def test_state_with_delivery_fields_round_trips() -> None:
    from proxyota.lorawan.session_state import SessionState

    s = _session(answer=100.0, delivery=1000.0)
    s.start(T0)
    s.on_delivered(EUI, "probe:201", T0 + 5.0)
    doc = s.state.to_dict()
    assert SessionState.from_dict(doc).to_dict() == doc


def test_unicast_repair_poll_ends_when_the_status_request_times_out() -> None:
    """The status request after k unicast fragments first gets k+1 delivery windows (it
    queues behind them); once delivered and unanswered it times out after ``answer``, and
    the poll closes then, not at the first, far deadline."""
    import pytest

    from tests.lorawan.test_session import C, D
    from tests.lorawan.test_session_harness import IMAGE, FakeDevice, FakeNetwork, make_config

    # C misses 12 fragments of round 1: the planner repairs it by unicast; its answer to
    # the status request that follows the repair is lost
    straggler = FakeDevice(C, "loramac", lost=set(range(5, 17)))
    devices = [straggler, FakeDevice(D, "lbm")]
    timeouts = Timeouts(answer=120.0, delivery=3_000.0, max_retries=2, setup_window=3_600.0)
    machine = FuotaSession(make_config(devices, timeouts=timeouts), IMAGE)
    armed = []

    def hook(net: FakeNetwork) -> None:
        if not armed and any(h["event"] == "unicast_fragments"
                             for h in machine.state.devices[C].history):
            armed.append(True)
            straggler.drop_status_answers = 1

    net = FakeNetwork(machine, devices, txack=True, hook=hook)
    net.route(machine.start(T0), T0)
    net.run()
    history = machine.state.devices[C].history
    repair = next(h for h in history if h["event"] == "unicast_fragments")
    timeout = next(h for h in history if h["event"] == "timeout" and h["request"] == "status"
                   and h["t"] > repair["t"])
    first_deadline = repair["t"] + timeouts.delivery * (repair["count"] + 1)
    assert timeout["t"] < first_deadline - timeouts.delivery
    # the poll closed right at the timeout: C was asked again at once
    again = [h for h in history if h["event"] == "sent" and h["request"] == "status"
             and h["t"] >= timeout["t"]]
    assert again and again[0]["t"] == pytest.approx(timeout["t"])
    assert machine.outcomes()[C].reason.value == "successful"
