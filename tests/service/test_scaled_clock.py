"""ScaledClock: emulated GPS time from the wall clock, sleeps scaled down, busy() a no-op;
and the emulator-side copy in the harness computes the same time."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxyota.errors import InvalidArgument
from proxyota.service.scaled_clock import ScaledClock
from tests.service.harness import ScaledClock as EmulatorClock


class FakeWall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_now_follows_the_wall_clock_scaled() -> None:
    wall = FakeWall(1000.0)
    clock = ScaledClock(1000.0, 1_400_000_000.0, 200.0, wall=wall)
    assert clock.now() == 1_400_000_000.0
    wall.t = 1000.5
    assert clock.now() == 1_400_000_100.0
    assert clock.real_seconds(100.0) == 0.5
    with clock.busy():
        wall.t = 1001.0
    assert clock.now() == 1_400_000_200.0


def test_time_stands_at_the_origin_before_it() -> None:
    wall = FakeWall(990.0)
    clock = ScaledClock(1000.0, 5000.0, 100.0, wall=wall)
    assert clock.now() == 5000.0
    wall.t = 999.99
    assert clock.now() == 5000.0
    wall.t = 1000.01
    assert clock.now() == pytest.approx(5001.0)


async def test_sleep_before_the_origin_waits_for_it() -> None:
    origin = time.time() + 0.03
    clock = ScaledClock(origin, 0.0, 1000.0)
    await clock.sleep_until(5.0)  # 5 ms of emulated progress after a 30 ms wait
    assert time.time() >= origin and clock.now() >= 5.0


def test_service_and_emulator_clocks_agree() -> None:
    origin = time.time()
    a = ScaledClock(origin, 1_400_000_000.0, 150.0)
    b = EmulatorClock(origin, 1_400_000_000.0, 150.0)
    t1 = a.now()
    t2 = b.now()
    t3 = a.now()
    assert t1 <= t2 <= t3


async def test_sleep_until_never_returns_early() -> None:
    clock = ScaledClock(time.time(), 0.0, 1000.0)
    target = clock.now() + 20.0  # 20 ms of real time
    await clock.sleep_until(target)
    assert clock.now() >= target
    before = clock.now()
    await clock.sleep(-5)  # negative: returns at once
    await clock.sleep_until(before - 100)
    assert clock.now() >= before


def test_bad_arguments() -> None:
    for args in ((0.0, 0.0, 0.0), (0.0, 0.0, -1.0), (float("nan"), 0.0, 1.0), (0.0, True, 1.0)):
        with pytest.raises(InvalidArgument):
            ScaledClock(*args)


async def test_concurrent_sleepers_wake_in_order() -> None:
    clock = ScaledClock(time.time(), 0.0, 500.0)
    order: list[int] = []
    base = clock.now()

    async def sleeper(i: int) -> None:
        await clock.sleep_until(base + i * 5.0)
        order.append(i)

    await asyncio.gather(*(sleeper(i) for i in (3, 1, 2)))
    assert order == [1, 2, 3]
