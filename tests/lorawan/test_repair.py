"""Adaptive repair planner (proxyota.lorawan.repair) and its seeded campaign simulation.

External facts used: the TS004 spec appendix (exactly M coded fragments are non-invertible
~70 % of the time, M + 7 gives ~99 %) and the reference decoders' measured overhead (mean
~1.5-2, p95 ~5), from /work/shared/notes/lorawan-fuota.md; what each stack puts in
FragSessionStatusAns is read from LoRaMac-node (LmhpFragmentation.c / FragDecoder.c),
LoRa Basics Modem (SWL2001 lorawan_fragmentation_package_v1.0.0.c, fragmentation_helper)
and Zephyr (subsys/lorawan/services/frag_transport.c).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxyota.errors import InvalidArgument
from proxyota.lorawan.repair import (
    MAX_COUNTER,
    Action,
    CounterRange,
    DeviceStatus,
    GiveUp,
    RepairPolicy,
    SentRound,
    Stack,
    StatusReport,
    beta_binomial_logpmf,
    beta_binomial_sf,
    binomial_logpmf,
    binomial_sf,
    estimate_device,
    first_round_size,
    overhead_pmf,
    plan_round,
)
from proxyota.lorawan.repair_sim import (
    fixed_round_incomplete,
    simulate_campaign,
    smallest_fixed_redundancy,
    uniform_losses,
)

FAST = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


# -- exact tails --------------------------------------------------------------------------


def _binom_sf_exact(r: int, n: int, q: Fraction) -> Fraction:
    return sum((math.comb(n, x) * q**x * (1 - q) ** (n - x) for x in range(max(r, 0), n + 1)),
               Fraction(0))


@FAST
@given(n=st.integers(0, 40), r=st.integers(-2, 42), num=st.integers(0, 20))
def test_binomial_sf_matches_exact_rational(n: int, r: int, num: int) -> None:
    q = Fraction(num, 20)
    assert binomial_sf(r, n, float(q)) == pytest.approx(float(_binom_sf_exact(r, n, q)),
                                                        rel=1e-9, abs=1e-300)


def _bb_pmf_exact(x: int, n: int, a: float, b: float) -> float:
    lbeta = lambda u, v: math.lgamma(u) + math.lgamma(v) - math.lgamma(u + v)  # noqa: E731
    return math.comb(n, x) * math.exp(lbeta(x + a, n - x + b) - lbeta(a, b))


@FAST
@given(n=st.integers(0, 30), a=st.floats(0.2, 50), b=st.floats(0.2, 50))
def test_beta_binomial_pmf_matches_closed_form(n: int, a: float, b: float) -> None:
    got = np.exp(beta_binomial_logpmf(n, a, b))
    want = [_bb_pmf_exact(x, n, a, b) for x in range(n + 1)]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-300)
    assert got.sum() == pytest.approx(1.0, rel=1e-9)


def test_beta_binomial_tends_to_binomial_and_is_wider() -> None:
    # a, b -> infinity with a/(a+b) = q gives Binomial(n, q)
    assert beta_binomial_sf(70, 100, 7e6, 3e6) == pytest.approx(binomial_sf(70, 100, 0.7), rel=1e-4)
    # an uncertain q puts more mass in the tails
    assert 1 - beta_binomial_sf(60, 100, 70, 30) > 1 - binomial_sf(60, 100, 0.7)


def test_tails_are_stable_at_the_14_bit_limit() -> None:
    lp = binomial_logpmf(MAX_COUNTER, 0.7)
    assert np.isfinite(lp).all()
    assert np.exp(lp).sum() == pytest.approx(1.0, rel=1e-9)
    # far tails: tiny but not NaN, not negative
    assert 0.0 <= binomial_sf(MAX_COUNTER, MAX_COUNTER, 0.7) < 1e-300
    assert binomial_sf(1, MAX_COUNTER, 0.7) == 1.0
    lb = beta_binomial_logpmf(MAX_COUNTER, 7000.5, 3000.5)
    assert np.exp(lb).sum() == pytest.approx(1.0, rel=1e-9)


def test_tail_argument_errors() -> None:
    with pytest.raises(InvalidArgument):
        binomial_logpmf(-1, 0.5)
    with pytest.raises(InvalidArgument):
        binomial_logpmf(3, 1.5)
    with pytest.raises(InvalidArgument):
        beta_binomial_logpmf(3, 0.0, 1.0)


# -- decoding overhead model ---------------------------------------------------------------


def test_overhead_model_matches_the_published_figures() -> None:
    for u in (64, 300):
        pmf = overhead_pmf(u)
        cdf = np.cumsum(pmf)
        assert pmf.sum() == pytest.approx(1.0)
        mean = float(np.dot(np.arange(pmf.size), pmf))
        assert 1.5 <= mean <= 2.2  # reference decoder: ~1.5-2
        assert int(np.searchsorted(cdf, 0.95)) in (5, 6)  # p95 ~5
        assert cdf[7] >= 0.985  # spec appendix: M + 7 coded gives ~99 %
        assert cdf[0] <= 0.30  # exactly M: non-invertible ~70 % of the time
    # one lost fragment: a coded row helps iff it covers that column (probability rho)
    rho = 0.39
    assert overhead_pmf(1, rho)[:5] == pytest.approx([rho * (1 - rho) ** j for j in range(5)])
    assert overhead_pmf(0, margin=2).tolist() == [0.0, 0.0, 1.0]


def test_overhead_model_is_conservative_against_the_real_decoder() -> None:
    ts004 = pytest.importorskip("proxyota.fec.ts004")
    rng = np.random.default_rng(7)
    m, p, trials = 120, 0.15, 60
    data = rng.integers(0, 256, m, dtype=np.uint8).tobytes()
    frags = ts004.encode(data, 1, 120, version=1)
    overheads = []
    for _ in range(trials):
        dec = ts004.Decoder(m, 1, version=1)
        got = 0
        for n in np.flatnonzero(rng.random(len(frags)) >= p) + 1:
            got += 1
            if dec.push(int(n), frags[n - 1]):
                break
        assert dec.complete
        overheads.append(got - m)
    model = overhead_pmf(round(p * m))
    model_mean = float(np.dot(np.arange(model.size), model))
    assert np.mean(overheads) <= model_mean + 0.3
    # the model's tail P(O > 4) is not smaller than what the decoder shows (with slack)
    assert np.mean(np.array(overheads) > 4) <= model[5:].sum() + 0.08


# -- reading the stacks' answers ---------------------------------------------------------------

M = 1000
ROUND1 = [SentRound(multicast=CounterRange(1, 1132))]


def _est(report: StatusReport, stack: Stack, history=ROUND1, **kw):
    return estimate_device(M, DeviceStatus("d", report, stack, **kw), history)


def test_zephyr_true_count() -> None:
    e = _est(StatusReport(900, 100), Stack.ZEPHYR)
    assert e.received == 900
    assert e.loss == pytest.approx(232 / 1132, abs=0.01)
    assert e.p_complete == 0.0
    assert e.mean_deficit >= 100
    # completion is invisible: the more beyond M, the surer
    p = [_est(StatusReport(M + j, 0), Stack.ZEPHYR).p_complete for j in (0, 2, 5, 12)]
    assert p == sorted(p) and p[0] < 0.5 and p[-1] > 0.999


def test_loramac_node_stopped_device_is_complete_although_missingfrag_stays() -> None:
    # LoRaMac-node: NbFragReceived = last counter processed (frozen at completion),
    # MissingFrag = uncoded lost (mod 256) and never lowered after recovery.
    e = _est(StatusReport(1060, 50), Stack.LORAMAC_NODE)  # 72 fragments after 1060 unheard
    assert e.p_complete > 0.999
    assert e.loss == pytest.approx(0.05, abs=0.01)


def test_loramac_node_wrapped_missingfrag_is_unwrapped() -> None:
    # 300 lost uncoded fragments are reported as 44; still listening at the last counter:
    # 44 would have decoded long ago, so the reading is 300 (loss ~0.3).
    e = _est(StatusReport(1132, 300 & 0xFF), Stack.LORAMAC_NODE)
    assert e.p_complete < 0.01
    assert e.loss == pytest.approx(0.30, abs=0.02)
    assert 150 <= e.mean_deficit <= 260  # 300 lost - ~0.7 * 132 coded received


def test_lbm_rank_deficit_and_completion() -> None:
    # LBM: NbFragReceived = last counter - uncoded lost, MissingFrag = rank deficit
    e = _est(StatusReport(1132 - 200, 80), Stack.LBM)
    assert e.p_complete == 0.0
    assert e.loss == pytest.approx(0.2, abs=0.01)
    assert 80 <= e.mean_deficit <= 90
    assert _est(StatusReport(1040, 0), Stack.LBM).p_complete == 1.0


def test_unknown_stack_is_inferred_from_the_answer() -> None:
    zephyr = _est(StatusReport(900, 100), Stack.UNKNOWN)
    assert zephyr.received == 900 and zephyr.p_complete == 0.0
    listening = _est(StatusReport(1132, 44), Stack.UNKNOWN)  # only LoRaMac-node says 1132
    assert listening.p_complete < 0.01 and listening.loss == pytest.approx(0.30, abs=0.02)
    stopped = _est(StatusReport(1060, 50), Stack.UNKNOWN)
    assert stopped.p_complete > 0.999
    # LBM decoded earlier: same answer before and after a 300-fragment round = frozen
    two = ROUND1 + [SentRound(multicast=CounterRange(1133, 300))]
    frozen = _est(StatusReport(1010, 0), Stack.UNKNOWN, two, previous=StatusReport(1010, 0))
    assert frozen.p_complete == 1.0
    moving = _est(StatusReport(1003, 0), Stack.UNKNOWN, two, previous=StatusReport(990, 10))
    assert moving.p_complete < 0.999


def test_caller_knowledge_overrides_the_model() -> None:
    assert _est(StatusReport(900, 100), Stack.ZEPHYR, complete=True).p_complete == 1.0
    e = _est(StatusReport(M + 40, 0), Stack.ZEPHYR, complete=False)
    assert e.p_complete == 0.0 and e.mean_deficit >= 1


def test_bad_input_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="missing_frag"):
        StatusReport(10, 256)
    with pytest.raises(InvalidArgument, match="nb_frag_received"):
        StatusReport(-1, 0)
    with pytest.raises(InvalidArgument):
        CounterRange(MAX_COUNTER, 2)
    with pytest.raises(InvalidArgument, match="target"):
        RepairPolicy(target=1.0)
    with pytest.raises(InvalidArgument, match="NbFrag"):
        plan_round(0, [])
    with pytest.raises(InvalidArgument, match="unique"):
        plan_round(M, [DeviceStatus("a"), DeviceStatus("a")])
    with pytest.raises(InvalidArgument, match="twice"):
        plan_round(M, [], ROUND1 + [SentRound(multicast=CounterRange(1100, 10))])
    with pytest.raises(InvalidArgument, match="first round"):
        plan_round(M, [], [SentRound(multicast=CounterRange(1, 10))])
    with pytest.raises(InvalidArgument):
        estimate_device(M, DeviceStatus("d"), ROUND1)


# -- the planner ---------------------------------------------------------------------------


def _zephyr(dev: str, heard: int) -> DeviceStatus:
    return DeviceStatus(dev, StatusReport(heard, min(max(M - heard, 0), 255)), Stack.ZEPHYR)


def test_first_round() -> None:
    d = plan_round(M, [DeviceStatus("a")])
    assert d.action == Action.MULTICAST
    assert d.send.multicast.first == 1 and d.send.multicast.count == first_round_size(M)
    sizes = [first_round_size(M, RepairPolicy(prior_loss=p)) for p in (0.0, 0.1, 0.2, 0.3)]
    assert sizes == sorted(sizes) and sizes[0] >= M
    assert M / 0.7 < sizes[-1] < 1.1 * M / 0.7
    assert first_round_size(M, RepairPolicy(initial_redundancy=0.1)) == 1100


def test_repair_round_is_sized_for_the_worst_device() -> None:
    devices = [_zephyr("good", 1050), _zephyr("bad", 800)]
    d = plan_round(M, devices, ROUND1)
    assert d.action == Action.MULTICAST
    assert d.send.multicast.first == 1133
    assert "good" in d.done and d.pending == {"bad"}
    k = d.send.multicast.count
    # bad lost ~29 %: it needs ~200 + overhead more, i.e. about 290 sent
    assert 260 < k < 400
    assert d.success_probability >= RepairPolicy().target


def test_unicast_for_a_few_stragglers() -> None:
    devices = [_zephyr(f"ok{i}", 1060) for i in range(20)]
    devices += [_zephyr("s1", 990), _zephyr("s2", 995)]
    d = plan_round(M, devices, ROUND1)
    assert d.action == Action.UNICAST
    assert set(d.send.unicast) == {"s1", "s2"}
    r1, r2 = d.send.unicast["s1"], d.send.unicast["s2"]
    assert r1.first == 1133 and r2.first == r1.last + 1
    assert 10 < r1.count <= 32 and r2.count < r1.count
    # with unicast disabled, the same stragglers get a multicast round
    d2 = plan_round(M, devices, ROUND1, RepairPolicy(unicast_max_devices=0))
    assert d2.action == Action.MULTICAST


def test_silent_devices_are_polled_then_given_up() -> None:
    limit = RepairPolicy().max_unanswered_polls
    devices = [_zephyr("ok", 1060), DeviceStatus("mute", None, Stack.ZEPHYR, unanswered_polls=1)]
    d = plan_round(M, devices, ROUND1)
    assert d.action == Action.POLL and d.silent == {"mute"} and d.send is None
    devices[1] = DeviceStatus("mute", None, Stack.ZEPHYR, unanswered_polls=limit - 1)
    assert plan_round(M, devices, ROUND1).action == Action.POLL
    devices[1] = DeviceStatus("mute", None, Stack.ZEPHYR, unanswered_polls=limit)
    d = plan_round(M, devices, ROUND1)
    assert d.action == Action.DONE and d.give_up == {"mute": GiveUp.NO_ANSWER}


def test_give_up_reasons() -> None:
    mem = DeviceStatus("mem", StatusReport(1132, 10, memory_error=True), Stack.LORAMAC_NODE)
    hopeless = _zephyr("hopeless", 100)  # 91 % loss
    d = plan_round(M, [mem, hopeless], ROUND1)
    assert d.give_up == {"mem": GiveUp.MEMORY_ERROR, "hopeless": GiveUp.LOSS_TOO_HIGH}
    assert d.action == Action.DONE
    rounds = [SentRound(multicast=CounterRange(1, 1100))] + [
        SentRound(multicast=CounterRange(1101 + 10 * i, 10)) for i in range(5)
    ]
    d = plan_round(M, [_zephyr("late", 900)], rounds)  # max_rounds = 6 reached
    assert d.action == Action.DONE and d.give_up == {"late": GiveUp.MISSING_FRAG}
    full = [SentRound(multicast=CounterRange(1, MAX_COUNTER))]
    late = DeviceStatus("late", StatusReport(15000, 255), Stack.ZEPHYR)  # 8 % loss, M = 16000
    d = plan_round(16000, [late], full)
    assert d.give_up == {"late": GiveUp.COUNTERS_EXHAUSTED}


report_st = st.builds(
    StatusReport, nb_frag_received=st.integers(0, 1400), missing_frag=st.integers(0, 255)
)
stack_st = st.sampled_from(list(Stack))


@FAST
@given(
    extra=st.lists(st.integers(1, 200), max_size=3),
    devs=st.lists(st.tuples(report_st | st.none(), stack_st, st.booleans()),
                  min_size=1, max_size=6),
    unicast_first=st.booleans(),
)
def test_never_plans_a_repeat(extra, devs, unicast_first) -> None:
    history = [SentRound(multicast=CounterRange(1, 1100))]
    nxt = 1101
    for i, k in enumerate(extra):
        if unicast_first and i == 0:
            history.append(SentRound(unicast={"d0": CounterRange(nxt, k)}))
        else:
            history.append(SentRound(multicast=CounterRange(nxt, k)))
        nxt += k
    statuses = [DeviceStatus(f"d{i}", r, s, unanswered_polls=0 if r else 1,
                             complete=True if c and r is None else None)
                for i, (r, s, c) in enumerate(devs)]
    d = plan_round(M, statuses, history)
    used = {n for rnd in history for r in rnd.ranges() for n in range(r.first, r.last + 1)}
    if d.send is not None:
        new = [n for r in d.send.ranges() for n in range(r.first, r.last + 1)]
        assert len(new) == len(set(new)) > 0
        assert min(new) == max(used) + 1 and not used & set(new)
        assert max(new) <= MAX_COUNTER


@FAST
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 1400)), min_size=1, max_size=8))
def test_done_iff_no_device_needs_anything(devs) -> None:
    statuses = [DeviceStatus(f"d{i}", None if known else _zephyr("x", h).report, Stack.ZEPHYR,
                             complete=True if known else None)
                for i, (known, h) in enumerate(devs)]
    d = plan_round(M, statuses, ROUND1)
    needs = [e.dev for e in d.estimates.values()
             if 1 - e.p_complete > RepairPolicy().done_risk and e.loss <= RepairPolicy().max_loss]
    assert (d.action == Action.DONE) == (not needs)
    assert (d.send is None) == (d.action == Action.DONE)
    if d.action == Action.DONE:
        assert d.done | set(d.give_up) == {s.dev for s in statuses}


@FAST
@given(
    heard=st.lists(st.integers(760, 1000), min_size=1, max_size=4),
    worse=st.integers(1, 60),
    t1=st.floats(0.5, 0.99),
    t2=st.floats(0.5, 0.99),
)
def test_k_is_monotone_in_target_and_in_loss(heard, worse, t1, t2) -> None:
    def k(hs, target):
        d = plan_round(M, [_zephyr(f"d{i}", h) for i, h in enumerate(hs)], ROUND1,
                       RepairPolicy(target=target, unicast_max_devices=0))
        return d.send.multicast.count

    lo, hi = sorted((t1, t2))
    assert k(heard, lo) <= k(heard, hi)
    lossier = [heard[0] - worse] + heard[1:]
    assert k(heard, lo) <= k(lossier, lo)


# -- seeded campaigns -------------------------------------------------------------------------

N_DEV, NB_FRAG = 200, 1000
LOSSES = uniform_losses(N_DEV, 0.01, 0.30, seed=1)


def _check_truth(r) -> None:
    # the planner never calls a device done that did not really decode
    assert r.believed_done <= r.complete


@pytest.mark.parametrize("policy", [RepairPolicy(), RepairPolicy(prior_loss=0.3)],
                         ids=["default-prior", "prior-pmax"])
def test_campaign_reaches_everyone_within_the_bound(policy) -> None:
    r = simulate_campaign(NB_FRAG, LOSSES, policy, seed=1)
    assert r.incomplete == 0 and not r.given_up
    _check_truth(r)
    assert r.multicast_sent <= 1.10 * r.bound + 10
    assert r.rounds <= 3
    # one fixed-redundancy round at 10 % (ChirpStack FUOTA) leaves devices behind
    assert fixed_round_incomplete(NB_FRAG, LOSSES, 0.10, seed=1) > 20
    assert smallest_fixed_redundancy(NB_FRAG, LOSSES, seed=1, step=0.05) >= 0.45


def test_campaign_with_unknown_stacks() -> None:
    r = simulate_campaign(NB_FRAG, LOSSES, RepairPolicy(), seed=2, tell_stack=False)
    assert r.incomplete == 0 and not r.given_up
    _check_truth(r)
    assert r.multicast_sent <= 1.10 * r.bound + 10


def test_campaign_with_gilbert_elliott_bursts() -> None:
    r = simulate_campaign(NB_FRAG, LOSSES, RepairPolicy(), seed=3, channel="ge", burst=4.0)
    assert r.incomplete == 0 and not r.given_up
    _check_truth(r)
    assert r.rounds <= 4
    assert r.multicast_sent <= 1.25 * r.bound  # bursts: realised losses spread wider


def test_campaign_marks_mute_devices_no_answer() -> None:
    mute = {"dev0005", "dev0017", "dev0050"}
    r = simulate_campaign(300, LOSSES[:60], RepairPolicy(), seed=4, mute=[5, 17, 50],
                          answer_loss=0.05)
    assert r.given_up == {dev: GiveUp.NO_ANSWER for dev in mute}
    assert {f"dev{i:04d}" for i in range(60)} - mute <= r.complete
    assert r.polls <= 2 + RepairPolicy().max_rounds + RepairPolicy().max_unanswered_polls
    _check_truth(r)


def test_unicast_finishes_the_stragglers() -> None:
    losses = uniform_losses(60, 0.01, 0.15, seed=1) + [0.20, 0.22]
    policy = RepairPolicy(prior_loss=0.15, unicast_max_fragments=80)
    r = simulate_campaign(500, losses, policy, seed=1)
    actions = [log.action for log in r.log]
    assert actions == [Action.MULTICAST, Action.UNICAST, Action.DONE]
    assert 1 <= r.log[1].pending <= 3 and r.unicast_sent > 0
    assert r.incomplete == 0 and not r.given_up
    _check_truth(r)


def test_campaign_with_the_real_ts004_decoder() -> None:
    pytest.importorskip("proxyota.fec.ts004")
    losses = uniform_losses(40, 0.01, 0.30, seed=5)
    r = simulate_campaign(300, losses, RepairPolicy(), seed=5, decoder="ts004", frag_size=1)
    assert r.incomplete == 0 and not r.given_up
    _check_truth(r)
    assert r.multicast_sent <= 1.10 * r.bound + 10


def test_campaigns_are_deterministic() -> None:
    a = simulate_campaign(200, LOSSES[:30], RepairPolicy(), seed=9)
    b = simulate_campaign(200, LOSSES[:30], RepairPolicy(), seed=9)
    assert a == b
