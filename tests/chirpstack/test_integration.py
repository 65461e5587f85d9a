"""IntegrationReceiver: real HTTP POSTs of ChirpStack integration events (JSON and Protobuf)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from chirpstack_api import integration as I

from proxyota.chirpstack import (
    AckEvent,
    EventDispatcher,
    IntegrationReceiver,
    JoinEvent,
    LogEvent,
    StatusEvent,
    TxAckEvent,
    UplinkEvent,
)
from proxyota.errors import InvalidArgument
from radio_emulators.clock import VirtualClock

from .support import RecordingClock, to_pbjson
from .test_events import DOCS_UP, _full_messages

JSON = "application/json"
PB = "application/octet-stream"
TYPES = {"up": UplinkEvent, "join": JoinEvent, "status": StatusEvent, "ack": AckEvent,
         "txack": TxAckEvent, "log": LogEvent}


class Sink:
    def __init__(self, clock) -> None:
        self.clock = clock
        self.events: list = []
        self.depths: list[int] = []
        self.fail = 0

    async def __call__(self, event) -> None:
        self.depths.append(self.clock.depth)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("boom")
        self.events.append(event)


@pytest.fixture
async def rx():
    clock = RecordingClock()
    sink = Sink(clock)
    receiver = IntegrationReceiver(sink, clock=clock, path="/cs")
    url = await receiver.start()
    async with aiohttp.ClientSession() as http:
        yield receiver, sink, url, http, clock
    await receiver.stop()


def _body(msg, encoding: str) -> bytes:
    return json.dumps(to_pbjson(msg)).encode() if encoding == JSON else msg.SerializeToString()


async def _post(http, url, event, body, content_type=JSON, **extra):
    params = {"event": event} if event is not None else {}
    async with http.post(url, params=params, data=body,
                         headers={"Content-Type": content_type, **extra}) as r:
        return r.status, await r.text()


@pytest.mark.parametrize("encoding", [JSON, PB])
async def test_each_event_type_is_delivered(rx, encoding) -> None:
    receiver, sink, url, http, clock = rx
    assert url.startswith("http://127.0.0.1:") and url.endswith("/cs")
    for event_type, msg in _full_messages().items():
        status, text = await _post(http, url, event_type, _body(msg, encoding), encoding)
        assert (status, text.strip()) == (200, "delivered"), event_type
    assert [type(e) for e in sink.events] == list(TYPES.values())
    assert sink.events[0].data == bytes([0x01, 0x10, 0x20, 0x30, 0x40, 0x10])
    assert len(sink.depths) == 6 and min(sink.depths) >= 1  # busy() held in the handler
    assert clock.depth == 0


async def test_docs_json_example_over_http(rx) -> None:
    _, sink, url, http, _ = rx
    status, _ = await _post(http, url, "up", json.dumps(DOCS_UP).encode())
    assert status == 200 and sink.events[0].dev_eui == "0101010101010101"


async def test_ignored_types_answer_200_without_delivery(rx) -> None:
    receiver, sink, url, http, _ = rx
    loc = I.LocationEvent(deduplication_id="l", device_info=I.DeviceInfo(dev_eui="0101010101010101"))
    assert await _post(http, url, "location", loc.SerializeToString(), PB) == (200, "ignored\n")
    assert (await _post(http, url, "integration", b'{"integrationName": "x"}'))[0] == 200
    assert sink.events == [] and sink.depths == []


MALFORMED = [
    ("up", b"{broken", JSON, "invalid JSON"),
    ("up", b'{"deviceInfo": {"devEui": "xyz"}}', JSON, "deviceInfo.devEui"),
    ("up", json.dumps({**DOCS_UP, "fCnt": "many"}).encode(), JSON, "fCnt"),
    ("up", json.dumps({**DOCS_UP, "data": "??"}).encode(), JSON, "data"),
    ("up", b"\x0a\xff\xff\xff\xff\x0f", PB, "Protobuf"),
    ("status", b"", PB, "deviceInfo.devEui"),
    ("bogus", json.dumps(DOCS_UP).encode(), JSON, "unknown event type"),
    (None, json.dumps(DOCS_UP).encode(), JSON, "?event="),
    ("up", json.dumps(DOCS_UP).encode(), "text/plain", "content type"),
]


@pytest.mark.parametrize("event,body,ctype,reason", MALFORMED, ids=lambda x: str(x)[:20])
async def test_malformed_gets_400_and_handler_not_called(rx, event, body, ctype, reason) -> None:
    receiver, sink, url, http, _ = rx
    status, text = await _post(http, url, event, body, ctype)
    assert status == 400 and reason in text
    assert sink.depths == []
    # nothing changed: the well-formed event is still new afterwards
    assert (await _post(http, url, "up", json.dumps(DOCS_UP).encode()))[1] == "delivered\n"


async def test_duplicates_are_acknowledged_but_not_redelivered(rx) -> None:
    receiver, sink, url, http, _ = rx
    up = _full_messages()["up"]
    assert (await _post(http, url, "up", _body(up, JSON)))[1] == "delivered\n"
    # the same uplink again, in the other encoding: 200, not delivered
    assert await _post(http, url, "up", _body(up, PB), PB) == (200, "duplicate\n")
    # a status event from the same uplink set shares the deduplicationId: still delivered
    st = I.StatusEvent(deduplication_id=up.deduplication_id, device_info=up.device_info, margin=1)
    assert (await _post(http, url, "status", _body(st, PB), PB))[1] == "delivered\n"
    assert [type(e) for e in sink.events] == [UplinkEvent, StatusEvent]
    # log events carry no id: never treated as duplicates
    log = _full_messages()["log"]
    for _ in range(2):
        assert (await _post(http, url, "log", _body(log, PB), PB))[1] == "delivered\n"
    assert receiver.dispatcher.counts == {"delivered": 4, "duplicate": 1}


async def test_dedup_window_is_bounded() -> None:
    clock = RecordingClock()
    sink = Sink(clock)
    disp = EventDispatcher(sink, clock=clock, dedup_size=2)
    base = _full_messages()["up"]

    def up(i: int) -> bytes:
        m = I.UplinkEvent()
        m.CopyFrom(base)
        m.deduplication_id = f"id-{i}"
        return m.SerializeToString()

    statuses = [(await disp.dispatch("up", up(i), PB)).status for i in (1, 2, 1, 3, 1)]
    # 1 is still remembered after 2; 3 pushes out 2 (1 was refreshed by its duplicate)
    assert statuses == ["delivered", "delivered", "duplicate", "delivered", "duplicate"]
    assert (await disp.dispatch("up", up(2), PB)).status == "delivered"
    with pytest.raises(InvalidArgument):
        EventDispatcher(sink, clock=clock, dedup_size=0)


async def test_handler_error_gives_500_and_event_can_be_resent(rx) -> None:
    receiver, sink, url, http, _ = rx
    sink.fail = 1
    body = _body(_full_messages()["ack"], JSON)
    assert await _post(http, url, "ack", body) == (500, "handler failed\n")
    assert await _post(http, url, "ack", body) == (200, "delivered\n")
    assert len(sink.events) == 1 and receiver.dispatcher.counts["failed"] == 1


async def test_required_headers() -> None:
    clock = RecordingClock()
    sink = Sink(clock)
    async with IntegrationReceiver(sink, clock=clock,
                                   required_headers={"Authorization": "Bearer k"}) as receiver:
        async with aiohttp.ClientSession() as http:
            body = _body(_full_messages()["join"], JSON)
            assert (await _post(http, receiver.url, "join", body))[0] == 401
            assert (await _post(http, receiver.url, "join", body,
                                Authorization="Bearer x"))[0] == 401
            assert (await _post(http, receiver.url, "join", body,
                                Authorization="Bearer k"))[0] == 200
    assert len(sink.events) == 1


async def test_virtual_time_frozen_while_event_is_handled() -> None:
    """With the emulators' VirtualClock: while the handler runs (even awaiting real time),
    virtual time cannot advance; once it returned, it does."""
    clock = VirtualClock(5_000.0)
    seen: list[tuple[float, float, int]] = []
    wakers: list[asyncio.Task] = []

    async def handler(event) -> None:
        wakers.append(asyncio.create_task(clock.sleep(60.0)))  # someone waits 60 s virtual
        before = clock.now()
        await asyncio.sleep(0.05)  # real time, many settle rounds of the virtual clock
        seen.append((before, clock.now(), clock.in_flight))

    receiver = IntegrationReceiver(handler, clock=clock)
    url = await receiver.start()
    try:
        async with aiohttp.ClientSession() as http:
            body = _body(_full_messages()["up"], PB)
            assert (await _post(http, url, "up", body, PB))[0] == 200
        await asyncio.wait_for(wakers[0], 5)
    finally:
        await receiver.stop()
    assert len(seen) == 1 and seen[0][:2] == (5_000.0, 5_000.0) and seen[0][2] >= 1
    assert clock.now() == 5_060.0


async def test_events_are_handed_over_one_at_a_time(rx) -> None:
    receiver, sink, url, http, _ = rx
    active = 0
    peak = 0

    async def slow(event) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1

    receiver.dispatcher._handler = slow
    base = _full_messages()["up"]
    bodies = []
    for i in range(5):
        m = I.UplinkEvent()
        m.CopyFrom(base)
        m.deduplication_id = f"c-{i}"
        bodies.append(m.SerializeToString())
    results = await asyncio.gather(*(_post(http, url, "up", b, PB) for b in bodies))
    assert [r[0] for r in results] == [200] * 5 and peak == 1
