"""Loss models: statistics with fixed seeds, presence models."""

from __future__ import annotations

import random

import pytest

from radio_emulators.lorawan.channel import (Combined, Dead, GilbertElliott, IndependentLoss,
                                             JoinLate, Offline, Perfect)

N = 100_000


def losses(model, n=N):
    return [not model.deliver(float(i)) for i in range(n)]


def bursts(lost):
    out, run = [], 0
    for x in lost:
        if x:
            run += 1
        elif run:
            out.append(run)
            run = 0
    if run:
        out.append(run)
    return out


def test_independent_loss_rate_and_no_memory():
    lost = losses(IndependentLoss(0.1, random.Random(1)))
    rate = sum(lost) / N
    assert rate == pytest.approx(0.1, abs=0.005)
    # geometric burst lengths: mean 1 / (1 - p)
    assert sum(bursts(lost)) / len(bursts(lost)) == pytest.approx(1 / 0.9, rel=0.03)
    assert sum(losses(IndependentLoss(0.0, random.Random(2)), 1000)) == 0
    assert sum(losses(IndependentLoss(1.0, random.Random(2)), 1000)) == 1000


def test_gilbert_elliott_from_mean():
    ge = GilbertElliott.from_mean(0.2, 5.0, random.Random(3))
    assert ge.mean_loss == pytest.approx(0.2)
    lost = losses(ge)
    assert sum(lost) / N == pytest.approx(0.2, abs=0.015)
    b = bursts(lost)
    assert sum(b) / len(b) == pytest.approx(5.0, rel=0.08)
    # much burstier than independent loss at the same rate
    ind = bursts(losses(IndependentLoss(0.2, random.Random(3))))
    assert max(b) > 3 * max(ind)


def test_gilbert_elliott_general_states():
    ge = GilbertElliott(0.05, 0.25, 0.01, 0.6, random.Random(4))
    lost = losses(ge)
    assert sum(lost) / N == pytest.approx(ge.mean_loss, abs=0.01)
    assert ge.mean_loss == pytest.approx((0.05 / 0.3) * 0.6 + (0.25 / 0.3) * 0.01)


def test_seeded_models_are_reproducible():
    a = losses(GilbertElliott.from_mean(0.3, 4.0, random.Random(9)), 1000)
    b = losses(GilbertElliott.from_mean(0.3, 4.0, random.Random(9)), 1000)
    assert a == b


@pytest.mark.parametrize("args", [(-0.1,), (1.5,)])
def test_bad_parameters(args):
    with pytest.raises(ValueError):
        IndependentLoss(*args, random.Random(0))


def test_bad_gilbert_elliott_parameters():
    with pytest.raises(ValueError):
        GilbertElliott(0.0, 0.0, 0.0, 1.0, random.Random(0))
    with pytest.raises(ValueError):
        GilbertElliott.from_mean(0.5, 0.5, random.Random(0))
    with pytest.raises(ValueError):
        GilbertElliott.from_mean(0.95, 1.0, random.Random(0))   # p_gb would exceed 1
    with pytest.raises(ValueError):
        Offline([(10, 5)])


def test_presence_models():
    off = Offline([(10, 20), (30, 31)])
    assert off.deliver(9.99) and not off.deliver(10) and not off.deliver(19.9)
    assert off.deliver(20) and not off.present(30.5)
    dead = Dead(at=100)
    assert dead.deliver(99) and not dead.deliver(100) and not dead.present(1e9)
    assert not Dead().present(0)
    late = JoinLate(50)
    assert not late.deliver(49) and late.deliver(50)
    assert Perfect().deliver(0) and Perfect().present(0)


def test_combined_asks_every_model():
    r1, r2 = random.Random(5), random.Random(5)
    loss = IndependentLoss(0.5, r1)
    comb = Combined(Offline([(0, 1000)]), loss)
    for t in range(100):
        assert not comb.deliver(float(t))
    # the loss model was consulted 100 times even though Offline already said no
    for _ in range(100):
        r2.random()
    assert r1.random() == r2.random()
    assert not comb.present(5) and comb.present(2000)
