"""An asyncio event loop whose clock is emulated, so that *every* timer in the process --
zigpy's request timeouts, its OTA stall timer, its `asyncio.sleep`s, the emulated mesh --
runs on one emulated timeline; plus `LoopClock`, the `VirtualClock` interface over it.

Why: `VirtualClock` moves only the emulated network's time. zigpy (and any other asyncio
code) keeps using the loop's real clock, so while zigpy waits 5 real seconds for a reply
that never comes, the emulated network races ahead by hours. Running everything on
`VirtualTimeEventLoop` removes that mismatch: e.g. zigpy's 30 s stall timeout then means
30 emulated seconds, as on a real network.

How: `loop.time()` returns the emulated time. When the loop has nothing ready to run and
would sleep until its next timer, it first polls real I/O `settle_rounds` times (waiting
`settle` real seconds each: threads or sockets may still deliver something), and if
nothing came and nothing is marked busy (`LoopClock.busy()`), it jumps its time to that
timer instead of sleeping. With only in-memory parties, `settle=0` is enough.

Use: `run_virtual(main(), start=1000.0)`, with `clock = LoopClock()` handed to the
emulated network inside `main`.
"""

from __future__ import annotations

import asyncio
import selectors
from contextlib import contextmanager
from typing import Any, Coroutine, Iterator, TypeVar

__all__ = ["VirtualTimeEventLoop", "LoopClock", "run_virtual"]

T = TypeVar("T")


class _JumpingSelector(selectors.BaseSelector):
    def __init__(self, loop: "VirtualTimeEventLoop", real: selectors.BaseSelector) -> None:
        self._loop = loop
        self._real = real

    def register(self, fileobj, events, data=None):
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj):
        return self._real.unregister(fileobj)

    def modify(self, fileobj, events, data=None):
        return self._real.modify(fileobj, events, data)

    def get_key(self, fileobj):
        return self._real.get_key(fileobj)

    def get_map(self):
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None):
        loop = self._loop
        if timeout is None or timeout <= 0:
            return self._real.select(timeout)
        for _ in range(max(1, loop.settle_rounds)):
            events = self._real.select(loop.settle)
            if events:
                return events
        if loop.busy:
            return self._real.select(min(timeout, max(loop.settle, 0.0005)))
        scheduled = loop._scheduled                      # the loop's timer heap (CPython)
        target = scheduled[0]._when if scheduled else loop._vtime + timeout
        if target > loop._vtime:
            loop._vtime = target
            loop.jumps += 1
        return []


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 0.0, *, settle: float = 0.0, settle_rounds: int = 1) -> None:
        self._vtime = float(start)
        self.settle = settle
        self.settle_rounds = settle_rounds
        self.busy = 0
        self.jumps = 0
        super().__init__(selector=_JumpingSelector(self, selectors.DefaultSelector()))

    def time(self) -> float:
        return self._vtime


class LoopClock:
    """`now()`, `sleep_until()`, `sleep()`, `busy()` over the running event loop's clock
    (emulated on `VirtualTimeEventLoop`, real on any other loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop or asyncio.get_running_loop()

    def now(self) -> float:
        return self.loop.time()

    async def sleep_until(self, t: float) -> None:
        await asyncio.sleep(max(0.0, t - self.now()))

    async def sleep(self, dt: float) -> None:
        await asyncio.sleep(max(0.0, dt))

    @contextmanager
    def busy(self) -> Iterator[None]:
        loop = self.loop
        if not isinstance(loop, VirtualTimeEventLoop):
            yield
            return
        loop.busy += 1
        try:
            yield
        finally:
            loop.busy -= 1

    @property
    def jumps(self) -> int:
        return getattr(self.loop, "jumps", 0)


def run_virtual(main: Coroutine[Any, Any, T], *, start: float = 0.0, settle: float = 0.0,
                settle_rounds: int = 1) -> T:
    """Run `main` to completion on a fresh `VirtualTimeEventLoop` (like `asyncio.run`)."""
    loop = VirtualTimeEventLoop(start, settle=settle, settle_rounds=settle_rounds)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
