"""The emulated-time event loop: every asyncio timer runs on the emulated timeline, time
jumps only when the loop is idle and nothing is marked busy."""

from __future__ import annotations

import asyncio
import time

import pytest

from radio_emulators.clock import VirtualClock
from radio_emulators.zigbee import MeshConfig, ZigbeeNetwork
from radio_emulators.zigbee.looptime import LoopClock, VirtualTimeEventLoop, run_virtual

from .conftest import make_image
from .responder import TinyOtaResponder


def test_hours_of_timers_take_no_real_time():
    async def main():
        loop = asyncio.get_running_loop()
        order = []

        async def sleeper(name, dt):
            await asyncio.sleep(dt)
            order.append((name, loop.time()))

        await asyncio.gather(sleeper("late", 7200), sleeper("early", 60), sleeper("mid", 3600))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.sleep(31)
        return order, loop.time()

    t0 = time.perf_counter()
    order, end = run_virtual(main(), start=100.0)
    assert order == [("early", 160.0), ("mid", 3700.0), ("late", 7300.0)]
    assert end == pytest.approx(7330.0)
    assert time.perf_counter() - t0 < 2.0


def test_time_does_not_jump_while_busy():
    async def main():
        clock = LoopClock()
        loop = asyncio.get_running_loop()
        seen = []

        async def worker():
            with clock.busy():
                await loop.run_in_executor(None, time.sleep, 0.05)     # real work in a thread
                seen.append(clock.now())

        sleeper = asyncio.ensure_future(clock.sleep(100.0))
        await worker()
        await sleeper
        return seen, clock.now()

    seen, end = run_virtual(main(), start=0.0)
    assert seen == [0.0] and end == 100.0


def test_loop_clock_on_a_real_loop_is_real_time():
    async def main():
        clock = LoopClock()
        t0 = clock.now()
        await clock.sleep_until(t0 + 0.01)
        with clock.busy():
            pass
        return clock.now() - t0

    assert 0.01 <= asyncio.run(main()) < 1.0


def test_campaign_on_either_clock():
    """The mesh only needs the clock interface: a seeded run on the emulated-time loop is
    reproducible, and on a VirtualClock it completes too (same-time events may be ordered
    differently by the two schedulers, so the figures differ slightly)."""
    image = make_image(1200)

    async def campaign(clock):
        net = ZigbeeNetwork.generate(clock, routers=4, end_devices=2, sleepy=2, max_hops=3, seed=3,
                                     config=MeshConfig(loss=0.1))
        resp = TinyOtaResponder(net, image)
        resp.attach()
        net.start()
        try:
            assert await net.wait_until(lambda: net.all_on_version(2), timeout_s=10_000)
            return net.report().summary()
        finally:
            await resp.close()
            await net.close()

    on_loop = run_virtual(campaign(LoopClock()), start=1000.0)
    assert run_virtual(campaign(LoopClock()), start=1000.0) == on_loop
    on_virtual_clock = asyncio.run(campaign(VirtualClock(1000.0, settle=0.0, settle_rounds=8)))
    assert on_loop["nodes"] == on_virtual_clock["nodes"] == 8
    assert abs(on_loop["blocks"] - on_virtual_clock["blocks"]) <= 0.1 * on_loop["blocks"]


def test_loop_is_a_selector_loop():
    loop = VirtualTimeEventLoop(5.0)
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop) and loop.time() == 5.0
    finally:
        loop.close()
