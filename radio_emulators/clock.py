"""Virtual (emulated) time shared by the emulated networks and, in simulations, the gateway.

A discrete-event clock for asyncio programs whose parts talk over real loopback sockets:
``await clock.sleep_until(t)`` parks a task; when nothing is in flight the clock jumps to the
earliest parked deadline and wakes the tasks due then. "In flight" is declared with
``with clock.busy():`` around every RPC, HTTP request or handler, so time never moves while a
frame is on its way; a settle before each jump catches the hand-over gaps between one
party's busy section and the next. By default the settle is ``settle_rounds`` (8) turns of
the event loop without a real sleep (each turn polls the sockets), enough for the longest
hand-over chain here (an integration POST answered, queued, picked up by the driver); a
real-time ``settle`` (seconds per turn) is only needed when a party works outside the loop
without holding ``busy()``. The old 2 x 1 ms real settle cost ~40 % of a simulation's wall
time in idle epoll waits.

Airtime, duty cycle and latencies are therefore accounted exactly while a campaign of hours
runs in seconds. Times are GPS seconds (floats).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from contextlib import contextmanager
from typing import Iterator


class VirtualClock:
    def __init__(self, start: float, *, settle: float = 0.0, settle_rounds: int = 8) -> None:
        self._now = float(start)
        self._busy = 0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._advancer: asyncio.Task[None] | None = None
        self._settle = settle
        self._settle_rounds = settle_rounds
        self.jumps = 0  # how many times time advanced (for reports)
        self._entries = 0  # busy() sections entered so far (a settle restarts after one)

    # -- the Clock interface ------------------------------------------------------------
    def now(self) -> float:
        return self._now

    async def sleep_until(self, t: float) -> None:
        if t <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (float(t), next(self._seq), fut))
        self._kick()
        try:
            await fut
        finally:
            if not fut.done():
                fut.cancel()  # cancelled sleeper: dropped lazily when it reaches the top

    async def sleep(self, dt: float) -> None:
        await self.sleep_until(self._now + max(0.0, dt))

    @contextmanager
    def busy(self) -> Iterator[None]:
        self._busy += 1
        self._entries += 1
        try:
            yield
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._kick()

    @property
    def in_flight(self) -> int:
        return self._busy

    # -- advancing ----------------------------------------------------------------------
    def _kick(self) -> None:
        if self._advancer is None or self._advancer.done():
            self._advancer = asyncio.get_running_loop().create_task(self._advance())

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    async def _advance(self) -> None:
        quiet = 0
        seen = self._entries
        while True:
            await asyncio.sleep(self._settle)
            if self._busy:
                return  # the busy() section's exit starts a new advancer (no spinning)
            if self._entries != seen:  # somebody worked meanwhile: settle again
                seen, quiet = self._entries, 0
                continue
            quiet += 1
            if quiet < self._settle_rounds:
                continue
            self._drop_cancelled()
            if not self._sleepers:
                return
            t = self._sleepers[0][0]
            if t > self._now:
                self._now = t
                self.jumps += 1
            while self._sleepers and self._sleepers[0][0] <= self._now:
                _, _, fut = heapq.heappop(self._sleepers)
                if not fut.done():
                    fut.set_result(None)
            quiet = 0
