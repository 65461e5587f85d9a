"""Clocks for the gateway's adapters (the sans-IO cores take ``now`` explicitly).

Everything speaks GPS time in seconds (what TS003/TS005 put on the air). ``RealClock`` is the
field clock. In simulations the gateway is given the emulator's virtual clock instead (any
object with the same four members, see :class:`Clock`), so a campaign that would take hours on
air completes in seconds while every gRPC call and HTTP event still crosses a real socket.

``busy()`` marks work in flight (an RPC awaiting its answer, an event being handled): a
virtual clock never advances while anything is busy. The real clock ignores it.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractContextManager, contextmanager
from typing import Iterator, Protocol

#: seconds between the Unix epoch and the GPS epoch (1980-01-06T00:00:00Z)
GPS_EPOCH_UNIX = 315_964_800
#: GPS - UTC leap seconds since 2017-01-01 (no leap second announced since)
GPS_LEAP_SECONDS = 18


def unix_to_gps(unix: float) -> float:
    return unix - GPS_EPOCH_UNIX + GPS_LEAP_SECONDS


def gps_to_unix(gps: float) -> float:
    return gps + GPS_EPOCH_UNIX - GPS_LEAP_SECONDS


class Clock(Protocol):
    def now(self) -> float:
        """GPS seconds."""

    async def sleep_until(self, t: float) -> None: ...

    async def sleep(self, dt: float) -> None: ...

    def busy(self) -> AbstractContextManager[None]: ...


class RealClock:
    """Wall-clock GPS time; sleeps really sleep."""

    def now(self) -> float:
        return unix_to_gps(time.time())

    async def sleep_until(self, t: float) -> None:
        await asyncio.sleep(max(0.0, t - self.now()))

    async def sleep(self, dt: float) -> None:
        await asyncio.sleep(max(0.0, dt))

    @contextmanager
    def busy(self) -> Iterator[None]:
        yield
