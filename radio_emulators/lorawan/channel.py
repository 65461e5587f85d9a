"""Per-device radio channel models for the emulated LoRaWAN network: which frames reach a
device (downlinks) or the network (uplinks).

Each model answers `deliver(t)` for one frame at emulated time t, and `present(t)` (is the
device on the air at all). Loss models draw from a seeded `random.Random`, once per frame,
so a run is reproducible. Models:

- `Perfect`, `IndependentLoss(p, rng)` (Bernoulli loss),
- `GilbertElliott(p_good_to_bad, p_bad_to_good, loss_good, loss_bad, rng)`: a two-state
  Markov chain stepped once per frame; `GilbertElliott.from_mean(mean_loss, mean_burst, rng)`
  builds one from the long-run loss rate and the mean length of a loss burst,
- `Offline(intervals)`: out of reach during [start, end) intervals,
- `Dead(at)`: silent from `at` on, `JoinLate(t)`: absent before t,
- `Combined(*models)`: a frame gets through only if every model lets it (every model is
  asked every time, so each random stream stays independent of the others).
"""

from __future__ import annotations

import math
import random
from typing import Iterable, Protocol, Sequence

__all__ = ["ChannelModel", "Perfect", "IndependentLoss", "GilbertElliott", "Offline", "Dead",
           "JoinLate", "Combined"]


class ChannelModel(Protocol):
    def deliver(self, t: float) -> bool: ...

    def present(self, t: float) -> bool: ...


class Perfect:
    def deliver(self, t: float) -> bool:
        return True

    def present(self, t: float) -> bool:
        return True

    def __repr__(self) -> str:
        return "Perfect()"


class IndependentLoss:
    """Each frame is lost with probability p, independently."""

    def __init__(self, p: float, rng: random.Random) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"loss probability {p} outside [0, 1]")
        self.p = p
        self.rng = rng

    def deliver(self, t: float) -> bool:
        return self.rng.random() >= self.p

    def present(self, t: float) -> bool:
        return True

    def __repr__(self) -> str:
        return f"IndependentLoss({self.p})"


class GilbertElliott:
    """Two-state (good / bad) Markov loss channel, one step per frame."""

    def __init__(self, p_good_to_bad: float, p_bad_to_good: float, loss_good: float,
                 loss_bad: float, rng: random.Random, *, start_bad: bool | None = None) -> None:
        for name, v in (("p_good_to_bad", p_good_to_bad), ("p_bad_to_good", p_bad_to_good),
                        ("loss_good", loss_good), ("loss_bad", loss_bad)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name}={v} outside [0, 1]")
        if p_good_to_bad + p_bad_to_good == 0.0:
            raise ValueError("the chain never changes state: give a non-zero transition")
        self.p_gb = p_good_to_bad
        self.p_bg = p_bad_to_good
        self.loss_good = loss_good
        self.loss_bad = loss_bad
        self.rng = rng
        if start_bad is None:  # start in the stationary distribution
            start_bad = rng.random() < self.stationary_bad
        self.bad = start_bad

    @property
    def stationary_bad(self) -> float:
        return self.p_gb / (self.p_gb + self.p_bg)

    @property
    def mean_loss(self) -> float:
        pb = self.stationary_bad
        return pb * self.loss_bad + (1.0 - pb) * self.loss_good

    @classmethod
    def from_mean(cls, mean_loss: float, mean_burst: float, rng: random.Random, *,
                  loss_good: float = 0.0, loss_bad: float = 1.0) -> "GilbertElliott":
        """A chain whose long-run loss rate is `mean_loss` and whose bad state lasts
        `mean_burst` frames on average (with the defaults, a loss burst)."""
        if not loss_good <= mean_loss <= loss_bad or loss_bad <= loss_good:
            raise ValueError("need loss_good <= mean_loss <= loss_bad and loss_good < loss_bad")
        if mean_burst < 1.0:
            raise ValueError("mean burst length must be >= 1 frame")
        pb = (mean_loss - loss_good) / (loss_bad - loss_good)
        p_bg = 1.0 / mean_burst
        if pb >= 1.0:
            return cls(1.0, 0.0, loss_good, loss_bad, rng, start_bad=True)
        p_gb = pb * p_bg / (1.0 - pb)
        if p_gb > 1.0:
            raise ValueError("mean loss too high for that burst length")
        return cls(p_gb, p_bg, loss_good, loss_bad, rng)

    def deliver(self, t: float) -> bool:
        r = self.rng.random()
        if self.bad:
            if r < self.p_bg:
                self.bad = False
        elif r < self.p_gb:
            self.bad = True
        loss = self.loss_bad if self.bad else self.loss_good
        return self.rng.random() >= loss

    def present(self, t: float) -> bool:
        return True

    def __repr__(self) -> str:
        return (f"GilbertElliott(p_gb={self.p_gb:.4g}, p_bg={self.p_bg:.4g}, "
                f"loss_good={self.loss_good}, loss_bad={self.loss_bad})")


class Offline:
    """Out of reach (no frame either way) during the half-open [start, end) intervals."""

    def __init__(self, intervals: Iterable[tuple[float, float]]) -> None:
        ivs = sorted((float(a), float(b)) for a, b in intervals)
        for a, b in ivs:
            if b < a:
                raise ValueError(f"interval ({a}, {b}) ends before it starts")
        self.intervals: Sequence[tuple[float, float]] = tuple(ivs)

    def present(self, t: float) -> bool:
        return not any(a <= t < b for a, b in self.intervals)

    def deliver(self, t: float) -> bool:
        return self.present(t)

    def __repr__(self) -> str:
        return f"Offline({list(self.intervals)})"


class Dead:
    """A device that stops for good at `at` (default: has always been dead)."""

    def __init__(self, at: float = -math.inf) -> None:
        self.at = at

    def present(self, t: float) -> bool:
        return t < self.at

    def deliver(self, t: float) -> bool:
        return self.present(t)

    def __repr__(self) -> str:
        return f"Dead(at={self.at})"


class JoinLate:
    """A device that joins the network only at `t_join`."""

    def __init__(self, t_join: float) -> None:
        self.t_join = t_join

    def present(self, t: float) -> bool:
        return t >= self.t_join

    def deliver(self, t: float) -> bool:
        return self.present(t)

    def __repr__(self) -> str:
        return f"JoinLate({self.t_join})"


class Combined:
    def __init__(self, *models: ChannelModel) -> None:
        self.models = models

    def deliver(self, t: float) -> bool:
        ok = True
        for m in self.models:
            ok = m.deliver(t) and ok  # ask every model: independent random streams
        return ok

    def present(self, t: float) -> bool:
        return all(m.present(t) for m in self.models)

    def __repr__(self) -> str:
        return "Combined(" + ", ".join(map(repr, self.models)) + ")"
