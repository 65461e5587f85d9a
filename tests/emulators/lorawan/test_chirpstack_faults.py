"""Faults of the emulated ChirpStack: a restart mid-campaign (UNAVAILABLE for a while, in
virtual time, queues kept like ChirpStack's database) and a faulty integration (duplicated,
malformed and lost events, seeded)."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from google.protobuf import json_format

from chirpstack_api import api
from radio_emulators.lorawan.integration import EVENT_MESSAGES, IntegrationFaults

from .chirpstack_harness import AUTH, Harness, T0

QUIET = dict(time_sync_at_boot=False, time_sync_period=None)
C = grpc.StatusCode


async def mc_enqueue(h, gid, data):
    r = await h.call(h.mc.Enqueue, api.EnqueueMulticastGroupQueueItemRequest(
        queue_item=api.MulticastGroupQueueItem(multicast_group_id=gid, f_port=201,
                                               data=data)))
    return r.f_cnt


async def list_queue(h, gid):
    return [i.f_cnt for i in (await h.call(h.mc.ListQueue, api.ListMulticastGroupQueueRequest(
        multicast_group_id=gid))).items]


async def group_with_gateway(h, **kw):
    gid = await h.create_group(**kw)
    await h.call(h.mc.AddGateway, api.AddGatewayToMulticastGroupRequest(
        multicast_group_id=gid, gateway_id=h.cs.core.gateway_id.hex()))
    return gid


def sent(h, gid):
    return [tx.f_cnt for tx in h.net.downlink_log if tx.kind == "multicast"
            and tx.target == gid]


async def test_restart_is_unavailable_in_virtual_time_and_keeps_the_queues():
    async with Harness(1, net_kw=dict(uplink_period=100.0, **QUIET),
                       cs_kw=dict(multicast_class_c_margin=50.0)) as h:
        delay = await group_with_gateway(h, name="delay")
        gps = await group_with_gateway(h, name="gps", mc_addr="01ab23ce",
                                       class_c_scheduling_type=api.GPS_TIME)
        assert [await mc_enqueue(h, delay, bytes([n])) for n in range(4)] == [0, 1, 2, 3]
        assert [await mc_enqueue(h, gps, bytes([n])) for n in range(2)] == [0, 1]
        # gps items: at T0 + 50 and T0 + 150; delay items: T0 + 1, 51, 101, 151 (scheduler)
        item = await h.call(h.dev.Enqueue, api.EnqueueDeviceQueueItemRequest(
            queue_item=api.DeviceQueueItem(dev_eui=h.eui(0), f_port=10, data=b"u")))
        await h.sleep(10.0)
        assert sent(h, delay) == [0]
        ups_before = len(h.sink.of("up"))
        restart = asyncio.create_task(h.cs.restart(down_for=120.0))    # T0+10 .. T0+130
        await asyncio.sleep(0)
        assert not h.cs.up
        get = api.GetDeviceRequest(dev_eui=h.eui(0))
        assert await h.error(h.dev.Get, get) == C.UNAVAILABLE
        assert await h.error(h.mc.ListQueue, api.ListMulticastGroupQueueRequest(
            multicast_group_id=delay)) == C.UNAVAILABLE
        await h.sleep(100.0)                                           # T0+110: still down
        assert await h.error(h.dev.Get, get) == C.UNAVAILABLE
        assert h.clock.now() == pytest.approx(T0 + 110.0)
        assert len(h.sink.of("up")) == ups_before                      # nothing processed
        assert h.cs.core.stats()["uplinks_while_down"] >= 1
        assert sent(h, delay) == [0] and sent(h, gps) == []
        assert not [tx for tx in h.net.downlink_log if tx.kind == "unicast"]
        await restart
        assert h.cs.up and h.clock.now() == pytest.approx(T0 + 130.0)
        await h.sleep(0.5)
        # overdue DELAY items go at once: the first; the gateway refuses the second (its
        # sub-band is still paying for the first); the GPS-timed one (T0 + 50) is far too
        # late; what is not due yet stays queued
        assert sent(h, delay) == [0, 1]
        st = h.cs.core.stats()
        assert st["mc_dropped_duty_cycle"] + st["mc_dropped_busy"] == 1
        assert st["mc_dropped_too_late"] == 1
        assert await list_queue(h, delay) == [3]
        assert await mc_enqueue(h, delay, b"n") == 4                   # f_cnt persisted
        q = await h.call(h.dev.GetQueue, api.GetDeviceQueueItemsRequest(dev_eui=h.eui(0)))
        assert [i.id for i in q.result] == [item.id]
        await h.sleep(200.0)
        assert [a.queue_item_id for a in h.sink.decoded("txack")] == [item.id]
        assert sent(h, delay) == [0, 1, 3, 4]
        assert (await h.call(h.dev.Get, get)).device.dev_eui == h.eui(0)


async def test_restart_refusing_connections_rebinds_the_same_port():
    async with Harness(1, net_kw=dict(uplink_period=None, **QUIET),
                       cs_kw=dict(restart_mode="refuse")) as h:
        port = h.cs.port
        gid = await group_with_gateway(h)
        get = api.GetMulticastGroupRequest(id=gid)
        with h.clock.busy():             # hold virtual time while we look at the outage
            restart = asyncio.create_task(h.cs.restart(down_for=30.0))
            while h.cs._server is not None:
                await asyncio.sleep(0.01)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await h.mc.Get(get, metadata=AUTH)
            assert e.value.code() == C.UNAVAILABLE
            assert not restart.done()
        await restart
        assert h.cs.port == port and h.clock.now() == pytest.approx(T0 + 30.0)
        for _ in range(100):                  # the channel reconnects (real-time backoff)
            try:
                r = await h.call(h.mc.Get, get)
                break
            except grpc.aio.AioRpcError as e:
                assert e.code() == C.UNAVAILABLE
                await asyncio.sleep(0.02)
        else:
            raise AssertionError("never reconnected")
        assert r.multicast_group.id == gid


# ------------------------------------------------------------------ integration faults
def decodes(event: str, body: bytes, encoding: str) -> bool:
    msg = EVENT_MESSAGES[event]()
    try:
        if encoding == "json":
            json_format.Parse(body.decode("utf-8"), msg)
        else:
            msg.ParseFromString(body)
    except Exception:  # noqa: BLE001
        return False
    return True


async def faulty_run(encoding: str, faults: IntegrationFaults) -> Harness:
    h = Harness(2, encoding=encoding, net_kw=dict(uplink_period=60.0, **QUIET),
                cs_kw=dict(faults=faults))
    async with h:
        await h.sleep(1200.0)
    return h


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
async def test_duplicated_events_reuse_the_deduplication_id(encoding):
    h = await faulty_run(encoding, IntegrationFaults(duplicate_p=1.0, seed=1))
    got = h.sink.got
    assert len(got) % 2 == 0 and len(got) > 10
    for a, b in zip(got[::2], got[1::2]):
        assert (a.event, a.body) == (b.event, b.body)
    ups = h.sink.decoded("up", encoding)
    ids = [u.deduplication_id for u in ups]
    assert ids[::2] == ids[1::2] and len(set(ids)) == len(ids) // 2
    assert h.cs.integration.counts["duplicate"] == len(got) // 2


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
async def test_malformed_and_lost_events(encoding):
    faults = IntegrationFaults(malformed_p=0.3, lose_p=0.1, seed=4)
    h = await faulty_run(encoding, faults)
    counts = h.cs.integration.counts
    bad = [r for r in h.sink.got if not decodes(r.event, r.body, encoding)]
    assert len(bad) == counts["malformed"] > 0
    assert counts["lost"] > 0
    good_ups = [r for r in h.sink.of("up") if decodes("up", r.body, encoding)]
    received = sum(1 for e in h.net.uplink_log if e.received)
    lost_ups = received - len(good_ups)
    assert 0 < lost_ups <= counts["lost"]
    if encoding == "json":                # a malformed JSON body is never a valid object
        for r in bad:
            try:
                doc = json.loads(r.body)
            except (ValueError, UnicodeDecodeError):
                continue
            assert not isinstance(doc.get("time"), str)
    # the same seed gives the same faults
    again = await faulty_run(encoding, faults)
    assert [(r.event, r.body) for r in again.sink.got] == [(r.event, r.body)
                                                           for r in h.sink.got]
