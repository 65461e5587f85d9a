"""Adaptive repair planning for a TS004 fragmentation session (sans-IO, no FEC dependency).

A FUOTA session multicasts the M = NbFrag uncoded fragments (counters N = 1..M) and then
coded fragments with fresh counters N = M+1, M+2, ... (never repeated). After each round
the gateway polls FragSessionStatusReq and every device answers (NbFragReceived,
MissingFrag) -- or does not. :func:`plan_round` turns those answers, the rounds already
sent and a :class:`RepairPolicy` into a :class:`RepairDecision`: multicast ``k`` more coded
fragments, unicast a few to the last stragglers, re-poll silent devices, or stop; and which
devices to give up on, with the reason.

How a device is modelled
------------------------
Every answering device becomes a :class:`DeviceEstimate`: a *deficit* distribution (how
many more fragments it must receive; 0 = complete) and a Beta posterior on its delivery
probability, learnt from received / sent (prior ``prior_loss``, counts capped at
``evidence_cap`` so that bursty or drifting channels are not over-trusted). The probability
that ``k`` more fragments complete the device is then exact::

    P_d(k) = sum_D pmf(D) * P[BetaBinomial(k, a, b) >= D]

-- the Beta-binomial is the Bayesian predictive of the number received out of ``k``, so a
device with few samples gets a wide one. Binomial and Beta-binomial tails are computed
exactly in the log domain with numpy (no scipy).

Decoding overhead. A device that lost ``u`` uncoded fragments decodes once its coded
fragments reach full rank on those ``u`` columns; what it needs beyond ``u`` is the
overhead ``O``. Taking TS004 coded rows restricted to the missing columns as independent
bits of density ``rho`` (v1 ~0.39, v2 0.5), the union bound over non-zero dual vectors of
weight ``w`` gives::

    P(O > j) <= sum_w C(u, w) * ((1 + (1 - 2 rho)^w) / 2)^(u + j)

exact for ``u = 1`` ((1-rho)^(j+1)), ~2^-j for large ``u``: mean ~2, p95 5-6, P(O <= 7)
~99 % (the spec appendix: "M+7 gives 99 %"; proxyota's TS004 v1 decoder measures mean
1.5-2.0, p95 5-6). ``overhead_margin`` adds fragments on top.

What the stacks report (read in LoRaMac-node, LoRa Basics Modem and Zephyr sources)
----------------------------------------------------------------------------------
* ``ZEPHYR`` (v1): NbFragReceived = every DataFragment heard, also after completion;
  MissingFrag = clamp(M - that, 0, 255). Completion is invisible, so a device counts as
  done once P(O > received - M) <= ``done_risk``, and rounds are sized to get it there.
* ``LBM``: NbFragReceived = last counter processed - uncoded lost (coded losses not
  subtracted: it over-counts); MissingFrag = rank deficit, 0 once decoded, sent mod 256.
  Processing stops at completion.
* ``LORAMAC_NODE``: NbFragReceived = last counter processed (frozen at completion);
  MissingFrag = uncoded lost mod 256, never lowered after recovery. A device still
  listening at the last counter sent is incomplete (unless that very fragment completed
  it); one that stopped before decoded there -- or lost every later fragment, whose
  probability is burst-aware (``burst_length``); ``min_send`` fragments more make it
  conclusive. Status b0 (MatrixError) means it gave up.
* ``UNKNOWN``: the stack is inferred per answer: MissingFrag = clamp(M - NbFragReceived)
  reads as Zephyr; NbFragReceived = last counter sent only comes from LoRaMac-node;
  otherwise the LoRaMac-node and LBM readings are compared by likelihood. With
  ``DeviceStatus.previous``, an answer frozen while fragments were sent means "decoded".

8-bit MissingFrag values are unwrapped among ``m + 256 j`` by the likelihood of the
observed progress; of the plausible readings the smallest is kept: a too-small reading
costs one more round (the next poll rules it out), a too-large one hundreds of fragments.

Decision rule (:func:`plan_round`)
----------------------------------
1. No round sent yet: multicast counters 1..n1, n1 = M + initial redundancy
   (``initial_redundancy``, else the smallest n for which a device with loss
   ``prior_loss`` completes with probability ``target``).
2. Else give up devices with a memory error, silent for ``max_unanswered_polls`` polls,
   or whose loss exceeds ``max_loss``; devices with P(incomplete) <= ``done_risk`` are
   done. Nothing pending: DONE (POLL while a silent device may still answer). After
   ``max_rounds`` rounds the pending devices are given up ("missing_frag").
3. At most ``unicast_max_devices`` pending, each needing at most
   ``unicast_max_fragments``: unicast; device d gets the smallest k_d with
   P_d(k_d) >= target^(1/n).
4. Else multicast the smallest k with prod_d P_d(k) >= target (binary search, P_d grows
   with k), on fresh counters after the highest counter ever used.

Use (the session state machine)::

    history = []
    while True:
        d = plan_round(nb_frag, statuses, history, policy)   # pure
        if d.action is Action.DONE: break                     # d.give_up: failed + reason
        if d.send: transmit(d.send); history.append(d.send)   # multicast and/or unicast
        statuses = poll()   # DeviceStatus per device; pass devices in d.done with
                            # complete=True (or drop them), keep the previous answer
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import lru_cache

import numpy as np

from proxyota.errors import InvalidArgument

__all__ = [
    "MAX_COUNTER",
    "Action",
    "CounterRange",
    "DeviceEstimate",
    "DeviceStatus",
    "GiveUp",
    "Hypothesis",
    "RepairDecision",
    "RepairPolicy",
    "SentRound",
    "Stack",
    "StatusReport",
    "beta_binomial_logpmf",
    "beta_binomial_sf",
    "binomial_logpmf",
    "binomial_sf",
    "estimate_device",
    "first_round_size",
    "multicast_size",
    "overhead_pmf",
    "plan_round",
    "unicast_size",
]

MAX_COUNTER = 0x3FFF  # N is 14 bits
MAX_NB_FRAG_RECEIVED = 0x3FFF
MAX_MISSING_FRAG = 0xFF
_TINY = 1e-300


# -- public data types --------------------------------------------------------------------


class Stack(StrEnum):
    """Which end-device stack answers, i.e. what NbFragReceived / MissingFrag mean."""

    UNKNOWN = "unknown"
    LORAMAC_NODE = "loramac_node"
    LBM = "lbm"
    ZEPHYR = "zephyr"


class Action(StrEnum):
    MULTICAST = "multicast"  # send ``decision.send.multicast`` to the group, then poll
    UNICAST = "unicast"  # send ``decision.send.unicast[dev]`` to each device, then poll
    POLL = "poll"  # send nothing; poll again (silent devices may still answer)
    DONE = "done"  # every device is complete or given up


class GiveUp(StrEnum):
    """Why a device is marked failed."""

    MISSING_FRAG = "missing_frag"  # still incomplete after max_rounds
    NO_ANSWER = "no_answer"  # never answered max_unanswered_polls consecutive polls
    MEMORY_ERROR = "memory_error"  # Status MatrixError / NotEnoughMatrixMemory / MemoryError
    LOSS_TOO_HIGH = "loss_too_high"  # estimated loss above policy.max_loss
    COUNTERS_EXHAUSTED = "counters_exhausted"  # the 14-bit counter space is used up


@dataclass(frozen=True)
class StatusReport:
    """One FragSessionStatusAns (v1 or v2, already decoded)."""

    nb_frag_received: int
    missing_frag: int
    memory_error: bool = False

    def __post_init__(self) -> None:
        limits = (("nb_frag_received", MAX_NB_FRAG_RECEIVED), ("missing_frag", MAX_MISSING_FRAG))
        for name, top in limits:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= top:
                raise InvalidArgument(f"StatusReport.{name} must be 0..{top}, got {v!r}")


@dataclass(frozen=True)
class DeviceStatus:
    """What the session knows about one device after the last poll.

    ``report`` is the answer to the poll that followed the last round (None: no answer).
    ``complete`` is completion learnt elsewhere (v2 FragDataBlockReceivedReq, TS006), or
    None. ``unanswered_polls`` counts consecutive polls without an answer, the last included.
    ``previous`` is the answer to the poll before the last round, if any: with an UNKNOWN
    stack, an answer that did not change while fragments were sent means the device stopped
    processing them, i.e. decoded (Zephyr keeps counting, the others freeze).
    """

    dev: str
    report: StatusReport | None = None
    stack: Stack = Stack.UNKNOWN
    complete: bool | None = None
    unanswered_polls: int = 0
    previous: StatusReport | None = None


@dataclass(frozen=True)
class CounterRange:
    """Fragment counters ``first .. first + count - 1``."""

    first: int
    count: int

    def __post_init__(self) -> None:
        if not isinstance(self.first, int) or not isinstance(self.count, int):
            raise InvalidArgument("CounterRange first/count must be integers")
        if self.count < 1 or self.first < 1 or self.last > MAX_COUNTER:
            raise InvalidArgument(
                f"counter range {self.first}+{self.count} outside 1..{MAX_COUNTER}"
            )

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def count_in(self, lo: int, hi: int) -> int:
        """How many counters of this range lie in ``lo..hi``."""
        return max(0, min(hi, self.last) - max(lo, self.first) + 1)


@dataclass(frozen=True)
class SentRound:
    """One transmission round: a multicast range and/or per-device unicast ranges."""

    multicast: CounterRange | None = None
    unicast: Mapping[str, CounterRange] = field(default_factory=dict)

    def ranges(self) -> list[CounterRange]:
        out = [self.multicast] if self.multicast is not None else []
        return out + list(self.unicast.values())

    @property
    def multicast_count(self) -> int:
        return self.multicast.count if self.multicast is not None else 0

    @property
    def unicast_count(self) -> int:
        return sum(r.count for r in self.unicast.values())


@dataclass(frozen=True)
class RepairPolicy:
    """Knobs of the repair rule (defaults suit 100..2000 fragments, loss up to ~40 %).

    target: joint probability, per round, that every pending device completes.
    overhead_margin: fragments added to the modelled decoding overhead.
    row_density: fraction of ones in a parity line (v1 ~0.39, v2 0.5); shapes the overhead.
    prior_loss: prior mean loss (Beta prior) and, unless ``initial_redundancy`` is given,
        the loss the first round is sized for. Pass the expected worst device's loss if known.
    prior_strength: pseudo-observations behind ``prior_loss``.
    initial_redundancy: first-round redundancy as a fraction of M (overrides prior sizing).
    unicast_max_devices / unicast_max_fragments: unicast when at most this many devices
        remain and none needs more than this many fragments.
    max_rounds: transmission rounds in all (the first one included).
    max_unanswered_polls: consecutive silent polls before a device is given up (no_answer).
    done_risk: a device is treated as complete when P(incomplete) is at most this.
    max_loss: devices whose estimated loss exceeds this are given up (loss_too_high).
    max_round_fraction: a round sends at most this fraction of M (and at least 16).
    burst_length: mean loss burst assumed when a device stopped processing before the last
        counter sent: was that completion, or a run of losses? (LoRaMac-node readings)
    evidence_cap: a loss estimate counts at most this many fragments (losses scaled down
        to match), so a drifting or bursty channel is not over-trusted.
    """

    target: float = 0.95
    overhead_margin: int = 0
    row_density: float = 0.39
    prior_loss: float = 0.10
    prior_strength: float = 4.0
    initial_redundancy: float | None = None
    unicast_max_devices: int = 3
    unicast_max_fragments: int = 32
    max_rounds: int = 6
    max_unanswered_polls: int = 3
    done_risk: float = 1e-3
    max_loss: float = 0.8
    max_round_fraction: float = 2.0
    burst_length: float = 4.0
    evidence_cap: float = 400.0

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> InvalidArgument:
            return InvalidArgument(f"RepairPolicy.{name} {why}, got {getattr(self, name)!r}")

        if not 0.0 < self.target < 1.0:
            raise bad("target", "must be in (0, 1)")
        if not 0.0 < self.row_density <= 0.5:
            raise bad("row_density", "must be in (0, 0.5]")
        if not 0.0 <= self.prior_loss < 1.0:
            raise bad("prior_loss", "must be in [0, 1)")
        if not self.prior_strength > 0:
            raise bad("prior_strength", "must be > 0")
        if self.initial_redundancy is not None and not self.initial_redundancy >= 0:
            raise bad("initial_redundancy", "must be >= 0")
        for name in ("overhead_margin", "unicast_max_devices", "unicast_max_fragments"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise bad(name, "must be an integer >= 0")
        for name in ("max_rounds", "max_unanswered_polls"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "must be an integer >= 1")
        if not 0.0 <= self.done_risk < 1.0:
            raise bad("done_risk", "must be in [0, 1)")
        if not 0.0 < self.max_loss <= 1.0:
            raise bad("max_loss", "must be in (0, 1]")
        if not self.max_round_fraction > 0:
            raise bad("max_round_fraction", "must be > 0")
        if not self.burst_length >= 1.0:
            raise bad("burst_length", "must be >= 1")
        if not self.evidence_cap >= 1.0:
            raise bad("evidence_cap", "must be >= 1")


@dataclass(frozen=True, eq=False)
class Hypothesis:
    """One reading of a device's report: weight, deficit pmf (index = fragments still to
    receive; 0 = complete) and the Beta posterior (a, b) of its delivery probability."""

    weight: float
    deficit: np.ndarray
    a: float
    b: float


@dataclass(frozen=True, eq=False)
class DeviceEstimate:
    dev: str
    stack: Stack
    received: int  # point estimate of fragments received (conservative side)
    loss: float  # posterior mean loss rate
    p_complete: float
    hypotheses: tuple[Hypothesis, ...]
    min_send: int = 0  # fragments to send before its next answer can show it complete

    @property
    def mean_deficit(self) -> float:
        return float(
            sum(h.weight * np.dot(np.arange(h.deficit.size), h.deficit) for h in self.hypotheses)
        )

    def failure(self, k: int) -> float:
        """P(still incomplete after receiving from ``k`` more fragments sent)."""
        return _failure(self.hypotheses, k)

    def success(self, k: int) -> float:
        return 1.0 - self.failure(k)


@dataclass(frozen=True, eq=False)
class RepairDecision:
    action: Action
    send: SentRound | None  # what to transmit now (fresh counters); None for POLL / DONE
    give_up: Mapping[str, GiveUp]
    done: frozenset[str]  # devices considered complete
    pending: frozenset[str]  # devices this round is sized for
    silent: frozenset[str]  # devices without an answer, still waited for
    success_probability: float  # model's P(every pending device completes this round)
    estimates: Mapping[str, DeviceEstimate]

    @property
    def multicast_count(self) -> int:
        return self.send.multicast_count if self.send else 0

    @property
    def unicast_count(self) -> int:
        return self.send.unicast_count if self.send else 0


# -- exact tails (log domain, numpy, no scipy) ----------------------------------------------


def binomial_logpmf(n: int, q: float) -> np.ndarray:
    """log P[Binomial(n, q) = x] for x = 0..n (exact, stable; -inf where impossible)."""
    if n < 0:
        raise InvalidArgument(f"n must be >= 0, got {n}")
    if not 0.0 <= q <= 1.0:
        raise InvalidArgument(f"q must be in [0, 1], got {q}")
    out = np.full(n + 1, -np.inf)
    if q == 0.0 or q == 1.0:
        out[0 if q == 0.0 else n] = 0.0
        return out
    x = np.arange(n + 1, dtype=float)
    lchoose = np.concatenate(([0.0], np.cumsum(np.log(n - x[:-1]) - np.log(x[1:]))))
    return lchoose + x * math.log(q) + (n - x) * math.log1p(-q)


def beta_binomial_logpmf(n: int, a: float, b: float, upto: int | None = None) -> np.ndarray:
    """log P[X = x], X ~ BetaBinomial(n, a, b) (success probability ~ Beta(a, b)), for
    x = 0..min(n, upto). Built from the pmf ratio recurrence, so it never forms a huge
    binomial coefficient."""
    if n < 0:
        raise InvalidArgument(f"n must be >= 0, got {n}")
    if not (a > 0 and b > 0):
        raise InvalidArgument(f"Beta parameters must be > 0, got a={a}, b={b}")
    top = n if upto is None else max(0, min(n, upto))
    lp0 = math.lgamma(n + b) + math.lgamma(a + b) - math.lgamma(b) - math.lgamma(n + a + b)
    if top == 0:
        return np.array([lp0])
    x = np.arange(top, dtype=float)
    steps = np.log(n - x) - np.log(x + 1.0) + np.log(x + a) - np.log(n - x - 1.0 + b)
    return np.concatenate(([lp0], lp0 + np.cumsum(steps)))


def _sf_from_logpmf(lp: np.ndarray, r: int) -> float:
    n = lp.size - 1
    if r <= 0:
        return 1.0
    if r > n:
        return 0.0
    mx = lp.max()
    w = np.exp(lp - mx)
    lower, upper = w[:r].sum(), w[r:].sum()
    total = lower + upper
    # use the smaller side for accuracy
    return float(upper / total) if upper <= lower else float(1.0 - lower / total)


def binomial_sf(r: int, n: int, q: float) -> float:
    """P[Binomial(n, q) >= r], exact."""
    return _sf_from_logpmf(binomial_logpmf(n, q), r)


def beta_binomial_sf(r: int, n: int, a: float, b: float) -> float:
    """P[BetaBinomial(n, a, b) >= r], exact."""
    return _sf_from_logpmf(beta_binomial_logpmf(n, a, b), r)


def _bb_cdf_prefix(n: int, a: float, b: float, upto: int) -> np.ndarray:
    """P[X <= x] for x = 0..upto (x >= n gives 1)."""
    lp = beta_binomial_logpmf(n, a, b, upto)
    cdf = np.minimum(np.cumsum(np.exp(lp)), 1.0)
    if cdf.size < upto + 1:
        cdf = np.concatenate((cdf, np.ones(upto + 1 - cdf.size)))
    if n <= upto:
        cdf[n:] = 1.0
    return cdf


# -- decoding overhead model ----------------------------------------------------------------

_OVERHEAD_EPS = 1e-12
_OVERHEAD_JMAX = 400


@lru_cache(maxsize=4096)
def _overhead_pmf_cached(u: int, density: float, margin: int) -> np.ndarray:
    if u <= 0:
        pmf = np.zeros(margin + 1)
        pmf[margin] = 1.0
        return pmf
    w = np.arange(1, u + 1, dtype=float)
    lchoose = (
        math.lgamma(u + 1)
        - np.array([math.lgamma(v + 1) for v in w])
        - np.array([math.lgamma(u - v + 1) for v in w])
    )
    lh = np.log((1.0 + (1.0 - 2.0 * density) ** w) / 2.0)
    tails = []
    for j in range(_OVERHEAD_JMAX):
        t = lchoose + (u + j) * lh
        mx = t.max()
        tail = min(1.0, math.exp(mx) * float(np.exp(t - mx).sum()))
        tails.append(tail)
        if tail < _OVERHEAD_EPS:
            break
    tail = np.array(tails)
    tail = np.minimum.accumulate(tail)
    pmf = -np.diff(np.concatenate(([1.0], tail)))
    pmf = np.clip(pmf, 0.0, None)
    pmf = pmf / pmf.sum()
    return np.concatenate((np.zeros(margin), pmf))


def overhead_pmf(lost_uncoded: int, density: float = 0.39, margin: int = 0) -> np.ndarray:
    """P(O = j), j = 0.. : fragments needed beyond ``lost_uncoded`` coded ones (see module
    docstring), shifted by ``margin``. ``lost_uncoded = 0`` gives O = margin."""
    if not 0.0 < density <= 0.5:
        raise InvalidArgument(f"row density must be in (0, 0.5], got {density}")
    # Above ~64 lost fragments the distribution no longer changes (it is ~2^-j).
    u = min(max(0, int(lost_uncoded)), 64)
    pmf = _overhead_pmf_cached(u, round(float(density), 6), int(margin))
    pmf.flags.writeable = False
    return pmf


# -- device estimation ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Sent:
    """The counters sent to one device."""

    ranges: tuple[CounterRange, ...]

    @property
    def total(self) -> int:
        return sum(r.count for r in self.ranges)

    @property
    def highest(self) -> int:
        return max((r.last for r in self.ranges), default=0)

    def count_in(self, lo: int, hi: int) -> int:
        return sum(r.count_in(lo, hi) for r in self.ranges)


def _sent_to(history: Sequence[SentRound], dev: str) -> _Sent:
    out: list[CounterRange] = []
    for rnd in history:
        if rnd.multicast is not None:
            out.append(rnd.multicast)
        r = rnd.unicast.get(dev)
        if r is not None:
            out.append(r)
    return _Sent(tuple(out))


def _prior(policy: RepairPolicy) -> tuple[float, float]:
    """(a0, b0) of the Beta prior on the *loss* rate."""
    p = min(max(policy.prior_loss, 1e-3), 1 - 1e-3)
    return p * policy.prior_strength, (1 - p) * policy.prior_strength


def _delivery_posterior(lost: float, trials: float, policy: RepairPolicy) -> tuple[float, float]:
    """Beta(a, b) on the delivery probability after ``lost`` losses out of ``trials``."""
    a0, b0 = _prior(policy)
    lost = min(max(lost, 0.0), trials)
    if trials > policy.evidence_cap:  # channels drift and burst: do not over-trust counts
        lost, trials = lost * policy.evidence_cap / trials, policy.evidence_cap
    return b0 + trials - lost, a0 + lost


def _shift_pmf(pmf: np.ndarray, shift: int) -> np.ndarray:
    """Distribution of max(0, X + shift) for X ~ pmf over 0.. (index 0 collects X + shift <= 0)."""
    if shift >= 0:
        return np.concatenate((np.zeros(shift), pmf))
    s = -shift
    if s >= pmf.size:
        return np.array([pmf.sum()])
    out = pmf[s:].copy()
    out[0] += pmf[:s].sum()
    return out


def _condition_incomplete(pmf: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """pmf given the device is known to be incomplete (deficit >= 1)."""
    rest = pmf.copy()
    rest[0] = 0.0
    s = rest.sum()
    if s <= 1e-12:
        # the model thought it done; assume it needs one fragment plus fresh overhead
        return _shift_pmf(fallback, 1)
    return rest / s


def _unwrap_candidates(m: int, lo: int, hi: int) -> list[int]:
    """Values ``m + 256 j`` within ``lo..hi`` (at least ``m`` itself if none fit)."""
    cands = [v for v in range(m, max(hi, m) + 1, 256) if lo <= v <= hi]
    return cands or [m]


def _deficit_count(m_total: int, received: int, u: int, policy: RepairPolicy) -> np.ndarray:
    """Deficit pmf when completion needs ``M + O`` fragments received and ``received`` are."""
    return _shift_pmf(_overhead(u, policy), m_total - received)


def _overhead(u: int, policy: RepairPolicy) -> np.ndarray:
    return overhead_pmf(u, policy.row_density, policy.overhead_margin)


def _estimate_zephyr(
    m: int, rep: StatusReport, sent: _Sent, policy: RepairPolicy
) -> DeviceEstimate:
    received = min(rep.nb_frag_received, sent.total)
    a, b = _delivery_posterior(sent.total - received, sent.total, policy)
    loss = b / (a + b)
    u = max(1, round(loss * m))
    pmf = _deficit_count(m, received, u, policy)
    return _invisible_completion(Stack.ZEPHYR, received, pmf, a, b, policy)


def _run_lost(p_loss: float, n: int, policy: RepairPolicy) -> float:
    """P(n consecutive fragments all lost), burst-aware: once one is lost, the next is lost
    with probability at least 1 - 1/burst_length (Gilbert-Elliott-like persistence)."""
    if n <= 0:
        return 1.0
    return p_loss * max(p_loss, 1.0 - 1.0 / policy.burst_length) ** (n - 1)


def _conclusive_run(p_loss: float, policy: RepairPolicy) -> int:
    """Fragments after which "none of them was processed" means "decoded" (P <= done_risk)."""
    for n in range(1, _VERIFY_CAP):
        if _run_lost(p_loss, n, policy) <= policy.done_risk:
            return n
    return _VERIFY_CAP


def _estimate_lbm(m: int, rep: StatusReport, sent: _Sent, policy: RepairPolicy) -> DeviceEstimate:
    # NbFragReceived = L - lost_uncoded, L <= highest counter sent; assume L = highest (the
    # device heard the end of the round): over-estimates the loss, never under-estimates it.
    if rep.missing_frag == 0 and rep.nb_frag_received >= m:
        # decoded (NbFragReceived >= M is necessary for it; a deficit of exactly 256 is not
        # credible then). Processing stopped at completion, so the counters say nothing more.
        a, b = _delivery_posterior(0, 0, policy)
        return _make("", Stack.LBM, m, [(1.0, np.array([1.0]), a, b)])
    s_hi = sent.highest
    lost_u = min(max(0, s_hi - rep.nb_frag_received), m)
    uncoded_trials = max(1, sent.count_in(1, m))
    a, b = _delivery_posterior(lost_u, uncoded_trials, policy)
    q = a / (a + b)
    coded_sent = sent.count_in(m + 1, MAX_COUNTER)
    if s_hi > m:
        expected_deficit = max(0.0, lost_u - q * coded_sent)
    else:
        expected_deficit = float(m - rep.nb_frag_received)
    cands = _unwrap_candidates(rep.missing_frag, 0, max(lost_u, m - min(rep.nb_frag_received, m)))
    d = min(cands, key=lambda v: (abs(v - expected_deficit), -v))
    received = max(0, m - d)
    if d == 0:
        pmf = np.array([1.0])
    else:
        pmf = _shift_pmf(_overhead(d, policy), d)
    return _make("", Stack.LBM, received, [(1.0, pmf, a, b)])


def _estimate_loramac(
    m: int, rep: StatusReport, sent: _Sent, policy: RepairPolicy
) -> DeviceEstimate:
    return _loramac(m, rep, sent, policy)[0]


def _loramac(
    m: int, rep: StatusReport, sent: _Sent, policy: RepairPolicy
) -> tuple[DeviceEstimate, float]:
    """LoRaMac-node reading and the log-probability (prior x likelihood) of the report
    under it."""
    s_hi = sent.highest
    last = min(rep.nb_frag_received, s_hi)
    after = sent.count_in(last + 1, MAX_COUNTER)  # sent after the last counter processed
    a0, b0 = _prior(policy)
    # candidates: (log prior x likelihood, deficit pmf, a, b, received, min_send, log likelihood)
    cands: list[tuple] = []
    if last <= m:
        # never processed a coded fragment: incomplete; every later fragment was lost
        trials_u = max(1, sent.count_in(1, last))
        for c in _unwrap_candidates(rep.missing_frag, 0, max(0, last - 1)):
            rec = max(0, trials_u - c)
            a, b = _delivery_posterior(c + after, trials_u + after, policy)
            prior = _log_bb_point(c, trials_u, a0, b0)
            u = max(1, c + (m - last))
            pmf = _deficit_count(m, rec, u, policy)
            pmf = _condition_incomplete(pmf, _overhead(u, policy))
            log_tail = math.log(max(_run_lost(b / (a + b), after, policy), _TINY))
            cands.append((prior + log_tail, pmf, a, b, rec, 0, log_tail))
        return _smallest_plausible(Stack.LORAMAC_NODE, cands)

    uncoded_trials = max(1, sent.count_in(1, m))
    coded_before = sent.count_in(m + 1, last - 1)  # coded counters sent before the last one
    for c in _unwrap_candidates(rep.missing_frag, 0, uncoded_trials - 1):
        a, b = _delivery_posterior(c, uncoded_trials, policy)
        q = a / (a + b)
        ov = _overhead(c, policy)
        # V = c + O - 1 - C' is the deficit left after processing counter `last`, C' the
        # coded fragments received before it ~ BetaBinomial(coded_before, a, b) (q is learnt
        # from the uncoded phase only). Processing `last` means V >= 0 (it was still
        # incomplete); V = 0 means `last` completed the block.
        cpmf = np.exp(beta_binomial_logpmf(coded_before, a, b))
        zero_at = cpmf.size - 1
        conv = np.convolve(_shift_pmf(ov, c - 1), cpmf[::-1])  # conv[zero_at + v] = P(V = v)
        p_done = float(conv[zero_at]) if conv.size > zero_at else 0.0
        inc = conv[zero_at + 1 :]
        p_inc = float(inc.sum())
        prior = _log_bb_point(c, uncoded_trials, a0, b0)
        rec = (m - c) + 1 + round(q * coded_before)
        # still listening at the last counter sent, or stopped before it: then decoded
        # there, unless every later fragment was lost
        p_loss = b / (a + b)
        tail = _run_lost(p_loss, after, policy)
        like = p_done + p_inc * tail
        if like <= 0.0:
            cands.append((-math.inf, _shift_pmf(ov, 1), a, b, rec, 0, -math.inf))
            continue
        r_inc = p_inc * tail / like
        pmf = np.zeros(max(1, inc.size + 1))
        pmf[0] = 1.0 - r_inc
        if p_inc > 0:
            pmf[1:] += r_inc * inc / p_inc
        # If it did decode at `last`, its answer will not change: how many more fragments
        # must be sent before "stopped" is conclusive (P(incomplete) <= done_risk)?
        verify = 0
        if r_inc > policy.done_risk and p_done > 0:
            verify = _VERIFY_CAP
            for extra in range(1, _VERIFY_CAP):
                t = _run_lost(p_loss, after + extra, policy)
                if p_inc * t <= policy.done_risk * (p_done + p_inc * t):
                    verify = extra
                    break
        cands.append((prior + math.log(like), pmf, a, b, rec, verify, math.log(like)))
    return _smallest_plausible(Stack.LORAMAC_NODE, cands)


def _lbm_loglike(m: int, rep: StatusReport, sent: _Sent, policy: RepairPolicy) -> float:
    """Log-probability (prior x likelihood) of an incomplete LBM reading: lost uncoded =
    highest - NbFragReceived, rank deficit = MissingFrag, so about (lost - deficit) coded
    fragments were received."""
    lost_u = sent.highest - rep.nb_frag_received
    if not 0 < lost_u <= m or rep.missing_frag == 0:
        return -math.inf
    a, b = _delivery_posterior(lost_u, max(1, sent.count_in(1, m)), policy)
    coded_sent = sent.count_in(m + 1, MAX_COUNTER)
    d = rep.missing_frag
    while d + 256 <= lost_u and lost_u - d > coded_sent:
        d += 256
    got = lost_u - d  # coded rows of full rank; a few more may have been redundant
    if not 0 <= got <= coded_sent:
        return -math.inf
    lp = beta_binomial_logpmf(coded_sent, a, b)
    window = lp[got : min(coded_sent, got + 8) + 1]
    mx = window.max()
    a0, b0 = _prior(policy)
    prior = _log_bb_point(lost_u, max(1, sent.count_in(1, m)), a0, b0)
    return float(prior + mx + math.log(np.exp(window - mx).sum()))


def _frozen(
    m: int, rep: StatusReport, sent: _Sent, last_round: _Sent, policy: RepairPolicy
) -> DeviceEstimate | None:
    """UNKNOWN stack, same answer before and after the last round: decoded, unless every
    fragment of that round was lost (burst-aware). None when that is not conclusive."""
    n = last_round.total
    if n == 0 or rep.nb_frag_received < m:
        return None
    before = max(1, sent.total - n)
    a, b = _delivery_posterior(max(0, before - rep.nb_frag_received), before, policy)
    if _run_lost(b / (a + b), n, policy) > policy.done_risk:
        return None
    return _make("", Stack.UNKNOWN, m, [(1.0, np.array([1.0]), a, b)])


def _estimate_unknown(
    m: int, rep: StatusReport, sent: _Sent, policy: RepairPolicy
) -> DeviceEstimate:
    """Which stack answered? Zephyr's answer satisfies MissingFrag = clamp(M - NbFragReceived);
    only LoRaMac-node reports the last counter sent itself; otherwise the LoRaMac-node and
    LBM readings are compared by likelihood. Ties go to the reading that needs more."""
    a_rep, m_rep = rep.nb_frag_received, rep.missing_frag
    zephyr_like = m_rep == min(max(m - a_rep, 0), MAX_MISSING_FRAG)
    if zephyr_like and a_rep < sent.highest:
        est = _estimate_zephyr(m, rep, sent, policy)
    else:
        est, ll = _loramac(m, rep, sent, policy)
        if ll == -math.inf and zephyr_like:
            est = _estimate_zephyr(m, rep, sent, policy)
        elif a_rep < sent.highest and _lbm_loglike(m, rep, sent, policy) >= ll:
            est = _estimate_lbm(m, rep, sent, policy)
    return DeviceEstimate(
        est.dev, Stack.UNKNOWN, est.received, est.loss, est.p_complete, est.hypotheses, est.min_send
    )


def _log_bb_point(x: int, n: int, a_loss: float, b_loss: float) -> float:
    """log P[x losses out of n] under the Beta(a_loss, b_loss) prior predictive."""
    if not 0 <= x <= n:
        return -math.inf
    lp = beta_binomial_logpmf(n, a_loss, b_loss)
    return float(lp[x])


_VERIFY_CAP = 64
_PLAUSIBLE = 1e-3  # a reading this much less likely than the best one is ruled out


def _smallest_plausible(stack: Stack, cands: list) -> tuple[DeviceEstimate, float]:
    """Keep the smallest plausible reading of a wrapped (mod 256) MissingFrag.

    Readings differ by 256 lost fragments. Sizing a round for a reading that is too large
    wastes hundreds of fragments; one that is too small costs one more round at most, and
    the next poll rules it out (a device that should have decoded but still listens). So
    among readings whose likelihood is within a factor 1000 of the best, take the smallest.
    ``cands`` is in increasing order of the reading."""
    top = max(c[0] for c in cands)
    best = next(c for c in cands if c[0] >= top + math.log(_PLAUSIBLE))
    logw, pmf, a, b, rec, verify, _ = best
    return _make("", stack, rec, [(1.0, pmf, a, b)], min_send=verify), logw


def _invisible_completion(
    stack: Stack, received: int, pmf: np.ndarray, a: float, b: float, policy: RepairPolicy
) -> DeviceEstimate:
    """For a device whose answers never show completion (Zephyr): it counts as done once
    P(incomplete) <= done_risk, so a round must bring it to that point: plan for the
    (1 - done_risk) quantile of its deficit. ``p_complete`` stays the model's."""
    tail = np.cumsum(pmf[::-1])[::-1]  # tail[x] = P(D >= x)
    above = np.flatnonzero(np.concatenate((tail[1:], [0.0])) <= policy.done_risk)
    verify = int(above[0])  # smallest x with P(D > x) <= done_risk
    plan = np.zeros(verify + 1)
    plan[verify] = 1.0
    return _make("", stack, received, [(1.0, plan, a, b)], p_complete=float(pmf[0]))


def _make(
    dev: str,
    stack: Stack,
    received: int,
    hyps: list,
    p_complete: float | None = None,
    min_send: int = 0,
) -> DeviceEstimate:
    total = sum(h[0] for h in hyps)
    hs = tuple(
        Hypothesis(weight=h[0] / total, deficit=np.asarray(h[1], dtype=float), a=h[2], b=h[3])
        for h in hyps
    )
    if p_complete is None:
        p_complete = float(sum(h.weight * h.deficit[0] for h in hs))
    loss = float(sum(h.weight * h.b / (h.a + h.b) for h in hs))
    return DeviceEstimate(dev, stack, int(received), loss, min(1.0, p_complete), hs, min_send)


_ESTIMATORS = {
    Stack.ZEPHYR: _estimate_zephyr,
    Stack.LBM: _estimate_lbm,
    Stack.LORAMAC_NODE: _estimate_loramac,
    Stack.UNKNOWN: _estimate_unknown,
}


def estimate_device(
    nb_frag: int,
    status: DeviceStatus,
    history: Sequence[SentRound],
    policy: RepairPolicy | None = None,
) -> DeviceEstimate:
    """Turn one device's last report into a :class:`DeviceEstimate` (needs ``status.report``)."""
    policy = policy or RepairPolicy()
    _check_nb_frag(nb_frag)
    if status.report is None:
        raise InvalidArgument(f"device {status.dev!r} has no report to estimate from")
    sent = _sent_to(history, status.dev)
    if sent.total == 0:
        raise InvalidArgument(f"no fragment was sent to device {status.dev!r} yet")
    if status.stack == Stack.UNKNOWN and status.previous == status.report and history:
        est = _frozen(nb_frag, status.report, sent, _sent_to(history[-1:], status.dev), policy)
    else:
        est = None
    if est is None:
        est = _ESTIMATORS[Stack(status.stack)](nb_frag, status.report, sent, policy)
        rep = status.report
        maybe_frozen = rep.missing_frag == 0 and rep.nb_frag_received >= nb_frag
        if status.stack == Stack.UNKNOWN and maybe_frozen:
            # maybe an LBM / LoRaMac-node device that decoded and froze: make the next round
            # long enough for an unchanged answer to be conclusive
            est = replace(est, min_send=max(est.min_send, _conclusive_run(est.loss, policy)))
    hyps = est.hypotheses
    if status.complete is True:
        hyps = (Hypothesis(1.0, np.array([1.0]), hyps[0].a, hyps[0].b),)
    elif status.complete is False:
        fb = _overhead(1, policy)
        hyps = tuple(
            Hypothesis(h.weight, _condition_incomplete(h.deficit, fb), h.a, h.b) for h in hyps
        )
    p_complete = {True: 1.0, False: 0.0, None: est.p_complete}[status.complete]
    return _make(
        status.dev,
        est.stack,
        est.received,
        [(h.weight, h.deficit, h.a, h.b) for h in hyps],
        p_complete=p_complete,
        min_send=est.min_send if status.complete is None else 0,
    )


# -- success probabilities --------------------------------------------------------------------


def _failure(hyps: Sequence[Hypothesis], k: int) -> float:
    """P(deficit > received out of k) for one device."""
    fail = 0.0
    for h in hyps:
        d = h.deficit
        if d.size <= 1:
            continue
        nz = np.flatnonzero(d[1:]) + 1
        if nz.size == 0:
            continue
        top = int(nz[-1]) - 1
        cdf = _bb_cdf_prefix(k, h.a, h.b, top)  # P[X <= x], x = 0..top
        fail += h.weight * float(np.dot(d[nz], cdf[nz - 1]))
    return min(1.0, max(0.0, fail))


def _joint_log_success(ests: Sequence[DeviceEstimate], k: int) -> float:
    total = 0.0
    for e in ests:
        f = e.failure(k)
        if f >= 1.0:
            return -math.inf
        total += math.log1p(-f)
    return total


def _smallest_k(ok, hi: int) -> int:
    """Smallest k in 1..hi with ok(k) (ok monotone); hi if none."""
    if hi <= 1 or ok(1):
        return max(1, min(hi, 1))
    if not ok(hi):
        return hi
    lo = 1  # ok(lo) is False, ok(hi) is True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def multicast_size(ests: Sequence[DeviceEstimate], target: float, cap: int) -> int:
    """Smallest k <= cap with prod_d P_d(k) >= target (cap if even that is not enough)."""
    if not ests:
        return 0
    log_t = math.log(target)
    return _smallest_k(lambda k: _joint_log_success(ests, k) >= log_t, cap)


def unicast_size(est: DeviceEstimate, target: float, cap: int) -> int:
    """Smallest k <= cap with P_d(k) >= target."""
    return _smallest_k(lambda k: est.failure(k) <= 1.0 - target, cap)


def _first_round_success(n: int, m: int, policy: RepairPolicy) -> float:
    """P(a device with loss ``prior_loss`` decodes from the first ``n`` fragments)."""
    p = policy.prior_loss
    ov = _overhead(max(1, round(p * m)) if p > 0 else 0, policy)
    js = np.flatnonzero(ov)
    cdf = np.minimum(np.cumsum(np.exp(binomial_logpmf(n, 1.0 - p))), 1.0)
    need = m + js  # fail = P[received < need]
    fail = np.where(need - 1 <= n, cdf[np.minimum(need - 1, n)], 1.0)
    return max(0.0, 1.0 - float(np.dot(ov[js], fail)))


def first_round_size(nb_frag: int, policy: RepairPolicy | None = None) -> int:
    """Fragments in the first round: M plus ``initial_redundancy`` x M if given, else the
    smallest count with which a device of loss ``prior_loss`` decodes with probability
    ``target``. Sizing for the expected worst device makes one round enough when the prior
    is right; when it is optimistic, the repair rounds are sized from measured losses, so
    the total stays close to the bound either way (over-sending is the only waste)."""
    policy = policy or RepairPolicy()
    _check_nb_frag(nb_frag)
    m = nb_frag
    if policy.initial_redundancy is not None:
        return min(m + math.ceil(policy.initial_redundancy * m - 1e-9), MAX_COUNTER)
    return _smallest_k(
        lambda n: _first_round_success(m + n - 1, m, policy) >= policy.target, MAX_COUNTER - m + 1
    ) + m - 1


# -- the planner -------------------------------------------------------------------------------


def _check_nb_frag(nb_frag: int) -> None:
    if isinstance(nb_frag, bool) or not isinstance(nb_frag, int) or not 1 <= nb_frag <= MAX_COUNTER:
        raise InvalidArgument(f"NbFrag must be 1..{MAX_COUNTER}, got {nb_frag!r}")


def _check_history(nb_frag: int, history: Sequence[SentRound]) -> int:
    """Validate the rounds sent; return the highest counter used."""
    spans: list[tuple[int, int]] = []
    for i, rnd in enumerate(history):
        if not isinstance(rnd, SentRound):
            raise InvalidArgument(f"history[{i}] is not a SentRound")
        spans += [(r.first, r.last) for r in rnd.ranges()]
    if history:
        first = history[0].multicast
        if first is None or first.first != 1 or first.last < nb_frag:
            raise InvalidArgument(
                f"the first round must multicast counters 1..NbFrag ({nb_frag}) at least"
            )
    spans.sort()
    for (a1, b1), (a2, _b2) in zip(spans, spans[1:]):
        if a2 <= b1:
            raise InvalidArgument(f"fragment counter {a2} was sent twice (counters never repeat)")
    return spans[-1][1] if spans else 0


def plan_round(
    nb_frag: int,
    devices: Sequence[DeviceStatus],
    history: Sequence[SentRound] = (),
    policy: RepairPolicy | None = None,
) -> RepairDecision:
    """Decide the next step of the session. Pure: same inputs, same decision."""
    policy = policy or RepairPolicy()
    _check_nb_frag(nb_frag)
    ids = [d.dev for d in devices]
    if len(set(ids)) != len(ids):
        raise InvalidArgument("device ids must be unique")
    for d in devices:
        if not isinstance(d, DeviceStatus):
            raise InvalidArgument(f"expected DeviceStatus, got {type(d).__name__}")
    highest = _check_history(nb_frag, history)
    m = nb_frag

    if not history:
        n1 = first_round_size(m, policy)
        return RepairDecision(
            Action.MULTICAST,
            SentRound(multicast=CounterRange(1, n1)),
            {},
            frozenset(),
            frozenset(ids),
            frozenset(),
            _first_round_success(n1, m, policy),
            {},
        )

    give_up: dict[str, GiveUp] = {}
    done: set[str] = set()
    silent: set[str] = set()
    pending: list[DeviceEstimate] = []
    estimates: dict[str, DeviceEstimate] = {}
    for d in devices:
        if d.complete is True:
            done.add(d.dev)
            continue
        if d.report is None:
            if d.unanswered_polls >= policy.max_unanswered_polls:
                give_up[d.dev] = GiveUp.NO_ANSWER
            else:
                silent.add(d.dev)
            continue
        if d.report.memory_error:
            give_up[d.dev] = GiveUp.MEMORY_ERROR
            continue
        est = estimate_device(m, d, history, policy)
        estimates[d.dev] = est
        if 1.0 - est.p_complete <= policy.done_risk:
            done.add(d.dev)
        elif est.loss > policy.max_loss:
            give_up[d.dev] = GiveUp.LOSS_TOO_HIGH
        else:
            pending.append(est)

    def decision(action: Action, send: SentRound | None, p: float = 1.0) -> RepairDecision:
        return RepairDecision(
            action,
            send,
            dict(give_up),
            frozenset(done),
            frozenset(e.dev for e in pending),
            frozenset(silent),
            p,
            estimates,
        )

    if not pending and not silent:
        return decision(Action.DONE, None)
    if len(history) >= policy.max_rounds:
        for e in pending:
            give_up[e.dev] = GiveUp.MISSING_FRAG
        for dev in silent:
            give_up[dev] = GiveUp.NO_ANSWER
        pending, silent = [], set()
        return decision(Action.DONE, None)
    if not pending:
        return decision(Action.POLL, None)
    available = MAX_COUNTER - highest
    if available <= 0:
        for e in pending:
            give_up[e.dev] = GiveUp.COUNTERS_EXHAUSTED
        pending = []
        return decision(Action.POLL if silent else Action.DONE, None)

    cap = min(available, max(16, math.ceil(policy.max_round_fraction * m)))
    n = len(pending)
    if n <= policy.unicast_max_devices:
        per_dev = policy.target ** (1.0 / n)
        ucap = min(cap, policy.unicast_max_fragments)
        sizes = {e.dev: max(e.min_send, unicast_size(e, per_dev, ucap)) for e in pending}
        reached = all(e.failure(sizes[e.dev]) <= 1.0 - per_dev for e in pending)
        if reached and sum(sizes.values()) <= available:
            ranges: dict[str, CounterRange] = {}
            nxt = highest + 1
            for e in sorted(pending, key=lambda e: e.dev):
                ranges[e.dev] = CounterRange(nxt, sizes[e.dev])
                nxt += sizes[e.dev]
            p = math.prod(1.0 - e.failure(sizes[e.dev]) for e in pending)
            return decision(Action.UNICAST, SentRound(unicast=ranges), p)

    k = max(multicast_size(pending, policy.target, cap), min(cap, max(e.min_send for e in pending)))
    p = math.exp(_joint_log_success(pending, k))
    return decision(Action.MULTICAST, SentRound(multicast=CounterRange(highest + 1, k)), p)
