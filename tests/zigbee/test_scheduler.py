"""Fleet scheduler: bounded concurrency, FIFO admission, realistic request times, slot
reclaiming on stalls, persistence; hypothesis properties for the bound and no starvation."""

from __future__ import annotations

import heapq
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyota.errors import InvalidArgument
from proxyota.zigbee.scheduler import Admit, FleetScheduler, SchedulerState, Wait

HYPO = settings(derandomize=True, deadline=None, max_examples=120)
T0 = 1_400_000_000.0


def sched(n=2, **kw) -> FleetScheduler:
    kw.setdefault("min_wait", 10.0)
    kw.setdefault("max_wait", 600.0)
    return FleetScheduler(n, **kw)


def test_admits_up_to_the_bound_then_queues_in_order():
    s = sched(2)
    assert isinstance(s.request("a", T0, stall_timeout=60), Admit)
    assert s.request("b", T0, stall_timeout=60) == Admit("b", newly=True)
    c = s.request("c", T0 + 1, stall_timeout=60)
    d = s.request("d", T0 + 2, stall_timeout=60)
    assert isinstance(c, Wait) and c.position == 0
    assert isinstance(d, Wait) and d.position == 1
    assert s.active == ("a", "b") and s.waiting == ("c", "d")
    # an active node asking again keeps its slot
    assert s.request("a", T0 + 3, stall_timeout=60) == Admit("a", newly=False)


def test_request_time_follows_etas_and_is_bounded():
    s = sched(2, min_wait=5.0, max_wait=10_000.0, default_duration=1000.0)
    s.request("a", T0, stall_timeout=60, eta=T0 + 300)
    s.request("b", T0, stall_timeout=60, eta=T0 + 500)
    w0 = s.request("c", T0, stall_timeout=60, expected_duration=1000)
    w1 = s.request("d", T0, stall_timeout=60, expected_duration=1000)
    w2 = s.request("e", T0, stall_timeout=60, expected_duration=1000)
    assert (w0.request_time, w1.request_time, w2.request_time) == (T0 + 300, T0 + 500, T0 + 1300)
    bounded = sched(2, min_wait=5.0, max_wait=120.0)
    bounded.request("a", T0, stall_timeout=60, eta=T0 + 300)
    bounded.request("b", T0, stall_timeout=60, eta=T0 + 1)
    assert bounded.request("c", T0, stall_timeout=60).request_time == T0 + 5  # min_wait
    assert bounded.request("d", T0, stall_timeout=60).request_time == T0 + 120  # max_wait


def test_freed_slot_is_reserved_for_the_head_of_the_queue():
    s = sched(1)
    s.request("a", T0, stall_timeout=60)
    s.request("b", T0 + 1, stall_timeout=60)  # queued first
    assert s.release("a")
    late = s.request("c", T0 + 2, stall_timeout=60)  # newcomer: behind b
    assert isinstance(late, Wait) and late.position == 1
    assert s.request("b", T0 + 3, stall_timeout=60) == Admit("b", newly=True)
    assert s.waiting == ("c",)


def test_silent_active_node_frees_its_slot_and_late_waiter_loses_its_place():
    s = sched(1)
    s.request("a", T0, stall_timeout=60)
    w = s.request("b", T0, stall_timeout=30)
    assert isinstance(w, Wait)
    assert s.next_deadline() == T0 + 60
    assert s.expire(T0 + 59.9).stalled == ()
    s.request("c", T0 + 1, stall_timeout=30)
    expired = s.expire(T0 + 60)
    assert expired.stalled == ("a",)
    assert "b" in s.waiting
    # b never returns: dropped at request_time + grace; c is now the head
    expired = s.expire(w.request_time + 30)
    assert expired.dropped == ("b",)
    assert isinstance(s.request("c", w.request_time + 30.5, stall_timeout=30), Admit)
    assert s.state.stalled == 1 and s.state.dropped == 1
    # a comes back later: it queues like anyone else
    assert isinstance(s.request("a", w.request_time + 32, stall_timeout=30), Wait)


def test_state_round_trips_and_resumes():
    s = sched(1)
    s.request("a", T0, stall_timeout=60, eta=T0 + 100)
    s.request("b", T0 + 1, stall_timeout=60)
    s.request("c", T0 + 2, stall_timeout=60)
    saved = json.loads(json.dumps(s.state.to_dict()))
    again = FleetScheduler(1, min_wait=10.0, max_wait=600.0, state=SchedulerState.from_dict(saved))
    assert again.state == s.state
    assert again.waiting == ("b", "c")
    again.release("a")
    assert isinstance(again.request("c", T0 + 3, stall_timeout=60), Wait)
    assert isinstance(again.request("b", T0 + 3, stall_timeout=60), Admit)


def test_bad_arguments():
    with pytest.raises(InvalidArgument):
        FleetScheduler(0)
    with pytest.raises(InvalidArgument):
        FleetScheduler(1, min_wait=100, max_wait=10)
    with pytest.raises(InvalidArgument):
        sched().request("a", float("nan"), stall_timeout=1)
    with pytest.raises(InvalidArgument):
        sched().request("a", T0, stall_timeout=0)
    with pytest.raises(InvalidArgument):
        SchedulerState.from_dict({"active": {"a": {"since": 1}}})


# -- properties ------------------------------------------------------------------------

ops = st.lists(
    st.tuples(
        st.sampled_from(["request", "release", "expire"]),
        st.integers(0, 7),  # node
        st.floats(0, 200),  # time step
        st.floats(1, 300),  # stall timeout
    ),
    max_size=60,
)


@HYPO
@given(st.integers(1, 4), ops)
def test_never_more_than_max_concurrent(limit, steps):
    s = sched(limit, min_wait=1.0, max_wait=500.0)
    now = T0
    for op, node, step, stall in steps:
        now += step
        name = f"n{node}"
        if op == "request":
            decision = s.request(name, now, stall_timeout=stall)
            if isinstance(decision, Wait):
                assert now + 1.0 <= decision.request_time <= now + 500.0
        elif op == "release":
            s.release(name)
        else:
            s.expire(now)
        assert len(s.active) <= limit
        assert not set(s.active) & set(s.waiting)


@st.composite
def fleets(draw):
    count = draw(st.integers(1, 12))
    nodes = []
    for i in range(count):
        nodes.append({
            "name": f"n{i}",
            "arrive": draw(st.floats(0, 500)),
            "duration": draw(st.floats(10, 2000)),
            # some nodes go silent for good after this long (a stall), others finish
            "silent_after": draw(st.none() | st.floats(0, 1500)),
            "lateness": draw(st.floats(0, 20)),  # how late it comes back when told to wait
        })
    return draw(st.integers(1, 4)), nodes


@HYPO
@given(fleets())
def test_every_waiting_node_is_admitted_fairly(fleet):
    """Nodes obey the request time (a little late, within grace); active ones finish or go
    silent. Every node is admitted (no starvation), never ahead of `limit` or more nodes
    that asked before it, and the bound holds."""
    limit, nodes = fleet
    stall = 60.0
    s = sched(limit, min_wait=5.0, max_wait=300.0, default_duration=500.0)
    by_name = {n["name"]: n for n in nodes}
    events = [(T0 + n["arrive"], i, n["name"]) for i, n in enumerate(nodes)]
    heapq.heapify(events)
    seq = len(events)
    admitted_at: dict[str, float] = {}
    first_ask: dict[str, int] = {}  # order of first asking
    finished: set[str] = set()
    horizon = T0 + 200_000  # far beyond any fair schedule of these fleets (<= 12 x 2000 s)
    while events:
        now, _, name = heapq.heappop(events)
        assert now < horizon, "simulation did not terminate"
        node = by_name[name]
        s.expire(now)
        if name in admitted_at:
            elapsed = now - admitted_at[name]
            if node["silent_after"] is not None and elapsed >= node["silent_after"]:
                continue  # went silent: stops asking; its slot must be reclaimed
            if elapsed >= node["duration"]:
                s.release(name)
                finished.add(name)
                continue
            assert isinstance(s.request(name, now, stall_timeout=stall), Admit)
            seq += 1
            heapq.heappush(events, (now + 10.0, seq, name))  # next block request
            continue
        first_ask.setdefault(name, len(first_ask))
        decision = s.request(name, now, stall_timeout=stall, expected_duration=node["duration"])
        assert len(s.active) <= limit
        seq += 1
        if isinstance(decision, Admit):
            # FIFO up to the concurrency window: fewer than `limit` earlier askers still wait
            ahead = [n for n, k in first_ask.items() if n not in admitted_at and k < first_ask[name]]
            assert len(ahead) < limit
            admitted_at[name] = now
            heapq.heappush(events, (now + 10.0, seq, name))
        else:
            heapq.heappush(events, (decision.request_time + node["lateness"], seq, name))
    assert set(admitted_at) == set(by_name)
