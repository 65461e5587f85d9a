"""A wall-clock-driven emulated GPS clock that runs ``rate`` times faster than real time.

Two processes that cannot share an in-process virtual clock (the service under test in a
subprocess, the emulated LoRaWAN network in the test process) still agree on emulated time
when both compute it from the wall clock and the same origin::

    emulated GPS time = origin_gps + max(0, time.time() - origin_unix) * rate

Emulated time starts at ``origin_unix``: before it, time stands at ``origin_gps`` (so a
process given an origin in the near future waits there, in step with others given the
same origin). Sleeps last ``1 / rate`` of the emulated duration; ``busy()`` is a no-op
(time never waits for anyone: the emulation is "real time, fast forward"). Choose ``rate``
so the protocol timeouts of a campaign still hold with the real-time jitter of the
processes involved: at 100x, 10 ms of scheduling jitter is one emulated second.

The service selects it with ``[service] clock = {scaled = RATE, origin_unix = ..., origin_gps
= ...}`` (see :mod:`proxyota.service.config`); the field uses :class:`proxyota.clock.RealClock`.
"""

from __future__ import annotations

import asyncio
import math
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from proxyota.errors import InvalidArgument

__all__ = ["ScaledClock"]


class ScaledClock:
    """Emulated GPS seconds advancing ``rate`` times faster than ``wall()`` (``time.time``)."""

    def __init__(
        self,
        origin_unix: float,
        origin_gps: float,
        rate: float,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (("origin_unix", origin_unix), ("origin_gps", origin_gps), ("rate", rate)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidArgument(f"ScaledClock.{name} must be a finite number, got {value!r}")
        if rate <= 0:
            raise InvalidArgument(f"ScaledClock.rate must be > 0, got {rate!r}")
        self.origin_unix = float(origin_unix)
        self.origin_gps = float(origin_gps)
        self.rate = float(rate)
        self._wall = wall

    def __repr__(self) -> str:
        return (f"ScaledClock(origin_unix={self.origin_unix}, origin_gps={self.origin_gps}, "
                f"rate={self.rate})")

    def now(self) -> float:
        """Emulated GPS seconds."""
        return self.origin_gps + max(0.0, self._wall() - self.origin_unix) * self.rate

    def real_seconds(self, emulated: float) -> float:
        """How long ``emulated`` seconds last in real time."""
        return max(0.0, emulated) / self.rate

    async def sleep_until(self, t: float) -> None:
        # loop: asyncio may wake us a hair early; never return before t
        while True:
            left = t - self.now()
            if left <= 0:
                await asyncio.sleep(0)
                return
            before_origin = self.origin_unix - self._wall()
            await asyncio.sleep(left / self.rate + max(0.0, before_origin))

    async def sleep(self, dt: float) -> None:
        await self.sleep_until(self.now() + max(0.0, dt))

    @contextmanager
    def busy(self) -> Iterator[None]:
        yield
