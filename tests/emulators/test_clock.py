"""The virtual clock: jumps to the earliest deadline only when nothing is in flight."""

from __future__ import annotations

import asyncio

from proxyota.clock import GPS_EPOCH_UNIX, RealClock, gps_to_unix, unix_to_gps
from radio_emulators.clock import VirtualClock


async def test_sleepers_wake_in_deadline_order_and_time_jumps() -> None:
    clock = VirtualClock(1000.0)
    order: list[tuple[str, float]] = []

    async def sleeper(name: str, t: float) -> None:
        await clock.sleep_until(t)
        order.append((name, clock.now()))

    await asyncio.gather(sleeper("late", 5000.0), sleeper("early", 1500.0), sleeper("mid", 3600.0))
    assert order == [("early", 1500.0), ("mid", 3600.0), ("late", 5000.0)]
    assert clock.jumps == 3


async def test_time_does_not_move_while_busy() -> None:
    clock = VirtualClock(0.0)
    seen: list[float] = []

    async def worker() -> None:
        with clock.busy():
            for _ in range(20):  # real time passes, virtual time must not
                await asyncio.sleep(0.001)
                seen.append(clock.now())

    async def sleeper() -> None:
        await clock.sleep(100.0)

    await asyncio.gather(worker(), sleeper())
    assert seen == [0.0] * 20
    assert clock.now() == 100.0


async def test_cancelled_sleeper_does_not_hold_time() -> None:
    clock = VirtualClock(0.0)
    task = asyncio.create_task(clock.sleep_until(50.0))
    await asyncio.sleep(0)
    task.cancel()
    await clock.sleep_until(80.0)
    assert clock.now() == 80.0


async def test_sleep_in_the_past_returns_at_once() -> None:
    clock = VirtualClock(10.0)
    await clock.sleep_until(5.0)
    assert clock.now() == 10.0 and clock.jumps == 0


def test_gps_conversion() -> None:
    assert unix_to_gps(GPS_EPOCH_UNIX) == 18
    assert gps_to_unix(unix_to_gps(1_700_000_000.5)) == 1_700_000_000.5
    assert abs(RealClock().now() - unix_to_gps(__import__("time").time())) < 5
