"""Shared fixtures. The async tests here run on `VirtualTimeEventLoop` (emulated time for
every asyncio timer, jumps only when the loop has nothing ready to run, so no hand-over
races and no real-time settling), with `LoopClock` as the network's clock; a few tests run
the project's `VirtualClock` explicitly."""

from __future__ import annotations

import pytest

from radio_emulators.zigbee import ZigbeeNetwork, build_ota_image
from radio_emulators.zigbee.looptime import LoopClock, VirtualTimeEventLoop

T0 = 1000.0


def pytest_asyncio_loop_factories(config, item):
    return {"virtual-time": lambda: VirtualTimeEventLoop(T0)}


@pytest.fixture
def clock() -> LoopClock:
    return LoopClock()


def make_image(size: int = 1000, version: int = 2, **kw) -> bytes:
    payload = bytes((i * 7 + 3) & 0xFF for i in range(size))
    kw.setdefault("hardware_versions", (1, 3))
    return build_ota_image(0x1234, 0x0001, version, payload, **kw)


@pytest.fixture
async def networks():
    """Factory for networks, closed at the end of the test."""
    made: list[ZigbeeNetwork] = []

    def make(clock, **kwargs) -> ZigbeeNetwork:
        net = ZigbeeNetwork.generate(clock, **kwargs)
        made.append(net)
        return net

    yield make
    for net in made:
        await net.close()
