"""Queues of the emulated ChirpStack in virtual time: the class A device queue (after an
uplink only, txack / ack / log events, flush), and the multicast queue (gateway set, DELAY
and GPS_TIME spacing, the gateway's duty cycle, class B ping slots, delivery to members)."""

from __future__ import annotations

import pytest

from chirpstack_api import api
from radio_emulators.lorawan import crypto, phy
from radio_emulators.lorawan.chirpstack_core import gps_timestamp
from radio_emulators.lorawan.phy import EU868

from . import frames as F
from .chirpstack_harness import Harness, T0

QUIET = dict(time_sync_at_boot=False, time_sync_period=None)


def enqueue(h, i, port, data, **kw):
    return h.call(h.dev.Enqueue, api.EnqueueDeviceQueueItemRequest(
        queue_item=api.DeviceQueueItem(dev_eui=h.eui(i), f_port=port, data=data, **kw)))


async def get_queue(h, i):
    return list((await h.call(h.dev.GetQueue,
                              api.GetDeviceQueueItemsRequest(dev_eui=h.eui(i)))).result)


async def mc_enqueue(h, gid, data, port=201):
    r = await h.call(h.mc.Enqueue, api.EnqueueMulticastGroupQueueItemRequest(
        queue_item=api.MulticastGroupQueueItem(multicast_group_id=gid, f_port=port,
                                               data=data)))
    return r.f_cnt


async def list_queue(h, gid):
    return [i.f_cnt for i in (await h.call(h.mc.ListQueue, api.ListMulticastGroupQueueRequest(
        multicast_group_id=gid))).items]


async def add_gateway(h, gid):
    await h.call(h.mc.AddGateway, api.AddGatewayToMulticastGroupRequest(
        multicast_group_id=gid, gateway_id=h.cs.core.gateway_id.hex()))


def mc_frames(h, gid):
    return [tx for tx in h.net.downlink_log if tx.kind == "multicast" and tx.target == gid]


# ------------------------------------------------------------------ class A device queue
async def test_unicast_leaves_only_after_an_uplink_with_txack():
    async with Harness(1, net_kw=dict(uplink_period=600.0, **QUIET)) as h:
        r = await enqueue(h, 0, 203, F.dev_version_req())
        items = await get_queue(h, 0)
        assert [(i.id, i.f_port, i.is_pending) for i in items] == [(r.id, 203, False)]
        while not h.net.uplink_log:
            assert not h.net.downlink_log          # nothing goes out before an uplink
            await h.sleep(30.0)
        up = h.net.uplink_log[0].uplink
        await h.sleep(30.0)
        tx = [x for x in h.net.downlink_log if x.kind == "unicast"]
        assert len(tx) == 1 and tx[0].t_start == pytest.approx(up.t_end + 1.0)   # RX1
        assert await get_queue(h, 0) == []
        (ack,) = h.sink.decoded("txack")
        assert ack.queue_item_id == r.id and ack.f_cnt_down == 0
        assert ack.device_info.dev_eui == h.eui(0)
        assert ack.tx_info.frequency == up.freq and ack.tx_info.timing.delay.delay.seconds == 1
        # the device answered DevVersionReq on fPort 203, as an `up` event
        answers = [e for e in h.sink.decoded("up") if e.f_port == 203]
        assert answers and answers[0].data == bytes.fromhex("01" "01000000" "01000000")
        # the next downlink uses the next FCntDown
        await enqueue(h, 0, 203, F.dev_version_req())
        await h.sleep(700.0)
        assert [a.f_cnt_down for a in h.sink.decoded("txack")] == [0, 1]


async def test_confirmed_downlink_pending_then_acked_or_nacked():
    net_kw = dict(uplink_period=300.0, losses=[0.0, 1.0], **QUIET)
    async with Harness(2, net_kw=net_kw) as h:
        ids = [(await enqueue(h, i, 10, b"\x01\x02", confirmed=True)).id for i in (0, 1)]
        while len(h.sink.of("txack")) < 2:
            await h.sleep(20.0)
        pend = [await get_queue(h, i) for i in (0, 1)]
        assert all(len(p) == 1 and p[0].is_pending and p[0].f_cnt_down == 0 for p in pend)
        while len(h.sink.of("ack")) < 2:
            await h.sleep(20.0)
        acks = {a.queue_item_id: a.acknowledged for a in h.sink.decoded("ack")}
        assert acks == {ids[0]: True, ids[1]: False}   # device 1 never heard it
        assert await get_queue(h, 0) == [] and await get_queue(h, 1) == []
        st = h.cs.core.stats()
        assert (st["acks"], st["nacks"]) == (1, 1)


async def test_expired_and_oversized_items_are_discarded_with_log_events():
    async with Harness(1, net_kw=dict(uplink_period=600.0, **QUIET)) as h:
        await enqueue(h, 0, 10, b"old", expires_at=gps_timestamp(T0 + 1.0))
        big = await enqueue(h, 0, 10, bytes(243))       # > 242 (RX1 DR5) and > 51 (RX2 DR0)
        ok = await enqueue(h, 0, 10, b"fits")
        while not h.sink.of("txack"):
            await h.sleep(30.0)
        logs = h.sink.decoded("log")
        assert [api_code(x) for x in logs] == ["EXPIRED", "DOWNLINK_PAYLOAD_SIZE"]
        assert logs[1].context["queue_item_id"] == big.id
        assert logs[1].context["item_size"] == "243"
        assert h.sink.decoded("txack")[0].queue_item_id == ok.id
        assert [x.payload for x in h.net.downlink_log] == [b"fits"]


def api_code(log_event) -> str:
    from chirpstack_api import integration
    return integration.LogCode.Name(log_event.code)


async def test_flush_removes_queued_items_before_they_leave():
    async with Harness(1, net_kw=dict(uplink_period=600.0, **QUIET)) as h:
        await enqueue(h, 0, 10, b"a")
        await enqueue(h, 0, 10, b"b")
        await h.call(h.dev.FlushQueue, api.FlushDeviceQueueRequest(dev_eui=h.eui(0)))
        await enqueue(h, 0, 10, b"c")
        await h.call(h.dev.Enqueue, api.EnqueueDeviceQueueItemRequest(
            queue_item=api.DeviceQueueItem(dev_eui=h.eui(0), f_port=10, data=b"d"),
            flush_queue=True))
        assert [i.data for i in await get_queue(h, 0)] == [b"d"]
        await h.sleep(1300.0)
        assert [x.payload for x in h.net.downlink_log] == [b"d"]


# ------------------------------------------------------------------ multicast queue
async def test_no_gateway_no_history_queues_nothing_but_uses_the_f_cnt():
    async with Harness(2, net_kw=dict(uplink_period=None, **QUIET)) as h:
        gid = await h.create_group(f_cnt=7)
        await h.call(h.mc.AddDevice, api.AddDeviceToMulticastGroupRequest(
            multicast_group_id=gid, dev_eui=h.eui(0)))
        assert await mc_enqueue(h, gid, b"x") == 7
        assert await list_queue(h, gid) == []
        await h.sleep(60.0)
        assert mc_frames(h, gid) == [] and h.cs.core.stats()["mc_no_gateway"] == 1
        await add_gateway(h, gid)
        assert await mc_enqueue(h, gid, b"y") == 8
        assert await list_queue(h, gid) == [8]


async def test_group_members_heard_before_select_the_gateway():
    async with Harness(1, net_kw=dict(uplink_period=100.0, **QUIET)) as h:
        gid = await h.create_group()
        await h.call(h.mc.AddDevice, api.AddDeviceToMulticastGroupRequest(
            multicast_group_id=gid, dev_eui=h.eui(0)))
        while not h.sink.of("up"):
            await h.sleep(20.0)
        await mc_enqueue(h, gid, b"x")
        await h.sleep(1.5)                      # the next scheduler run is 1 s later
        assert len(mc_frames(h, gid)) == 1


async def test_class_c_delay_and_gps_time_spacing_and_list_queue():
    async with Harness(1, net_kw=dict(uplink_period=None, **QUIET)) as h:
        delay = await h.create_group(name="d", dr=5)
        gps = await h.create_group(name="g", dr=5, frequency=869_500_000,
                                   class_c_scheduling_type=api.GPS_TIME, mc_addr="01ab23ce")
        for gid in (delay, gps):
            await add_gateway(h, gid)
        t0 = h.clock.now()
        assert t0 == T0
        assert [await mc_enqueue(h, delay, bytes([n])) for n in range(3)] == [0, 1, 2]
        assert await list_queue(h, delay) == [0, 1, 2]
        await h.sleep(2.5)
        assert [await mc_enqueue(h, gps, bytes([n])) for n in range(3)] == [0, 1, 2]
        await h.sleep(4.0)                               # T0 + 6.5
        assert await list_queue(h, delay) == [2]         # gone once handed to the gateway
        assert await list_queue(h, gps) == [0, 1, 2]
        await h.sleep(2.0)                               # T0 + 8.5
        assert await list_queue(h, gps) == [1, 2]
        await h.sleep(30.0)
        assert await list_queue(h, delay) == [] and await list_queue(h, gps) == []
        # DELAY: now, +margin, +2 margins; GPS_TIME: +margin, then 2 margins apart; each
        # picked by the next run of the 1 s scheduler (runs at T0 + k s)
        assert [tx.t_start - t0 for tx in mc_frames(h, delay)] == pytest.approx([1, 6, 11])
        assert [tx.t_start - t0 for tx in mc_frames(h, gps)] == pytest.approx([8, 18, 28])
        assert h.cs.core.stats()["mc_dropped_busy"] == 0
        assert [tx.f_cnt for tx in mc_frames(h, gps)] == [0, 1, 2]
        assert not h.sink.of("txack")                    # no txack for multicast


@pytest.mark.parametrize("policy", ["drop", "delay"])
async def test_gateway_duty_cycle_in_virtual_time(policy):
    async with Harness(1, net_kw=dict(uplink_period=None, **QUIET),
                       cs_kw=dict(gateway_duty_cycle_policy=policy)) as h:
        gid = await h.create_group(dr=0)                 # SF12: 2.3 s for 40 bytes
        await add_gateway(h, gid)
        t0 = h.clock.now()
        for n in range(3):
            await mc_enqueue(h, gid, bytes([n]) * 40)
        await h.sleep(200.0)
        frames = mc_frames(h, gid)
        airtime = phy.time_on_air(EU868.downlink_dr(0), phy.phy_payload_len(40), uplink=False)
        st = h.cs.core.stats()
        if policy == "drop":
            # 5 s margin < airtime / 10 %: the gateway refuses the next two (items deleted)
            assert len(frames) == 1 and frames[0].t_start == pytest.approx(t0 + 1.0)
            assert st["mc_dropped_duty_cycle"] == 2
        else:
            assert len(frames) == 3
            for a, b in zip(frames, frames[1:]):
                assert b.t_start >= a.t_start + airtime / 0.10 - 1e-6
        assert await list_queue(h, gid) == []


async def test_class_b_items_go_at_successive_ping_slots():
    async with Harness(1, net_kw=dict(uplink_period=None, **QUIET)) as h:
        gid = await h.create_group(group_type=api.CLASS_B, dr=3,
                                   class_b_ping_slot_periodicity=4)
        await add_gateway(h, gid)
        t0 = h.clock.now()
        for n in range(2):
            await mc_enqueue(h, gid, bytes([n]) * 8)
        await h.sleep(300.0)
        frames = mc_frames(h, gid)
        mc_addr = 0x01AB23CD
        first = phy.next_ping_slot(t0 + 5.0 + 1e-6, mc_addr, 4)
        second = phy.next_ping_slot(first + 1e-6, mc_addr, 4)
        assert [f.t_start for f in frames] == pytest.approx([first, second])
        slots = phy.ping_slot_times(phy.gps_beacon_time(first), mc_addr, 4)
        assert any(abs(s - first) < 1e-6 for s in slots)


async def test_multicast_reaches_members_that_set_up_the_session():
    mc_key = F.MC_KEY
    addr = F.MC_ADDR
    async with Harness(3, net_kw=dict(uplink_period=120.0, **QUIET)) as h:
        session = int(T0) + 1500
        for i in (0, 1):
            k = await h.call(h.dev.GetKeys, api.GetDeviceKeysRequest(dev_eui=h.eui(i)))
            enc = F.encrypted_mc_key(mc_key, gen_app_key=bytes.fromhex(
                k.device_keys.gen_app_key))
            await enqueue(h, i, 200, F.mc_group_setup_req(0, addr, enc))
            await enqueue(h, i, 200, F.mc_class_c_req(0, session, 10, 869_525_000, 5))
        await h.sleep(session - T0 - 100 - (h.clock.now() - T0))
        answers = {(e.device_info.dev_eui, e.data[0], e.data[1])
                   for e in h.sink.decoded("up") if e.f_port == 200}
        assert answers == {(h.eui(i), cid, 0) for i in (0, 1) for cid in (2, 4)}
        gid = await h.create_group(mc_addr=f"{addr:08x}",
                                   mc_nwk_s_key=crypto.mc_nwk_s_key(mc_key, addr).hex(),
                                   mc_app_s_key=crypto.mc_app_s_key(mc_key, addr).hex(),
                                   dr=5)
        for i in (0, 2):                                  # 2 has no such group on board
            await h.call(h.mc.AddDevice, api.AddDeviceToMulticastGroupRequest(
                multicast_group_id=gid, dev_eui=h.eui(i)))
        await h.sleep(session + 10 - h.clock.now())
        await mc_enqueue(h, gid, b"hello", port=10)
        await h.sleep(5.0)
        d = h.cn.devices
        assert d[0].counters["downlink.multicast"] == 1
        assert d[1].counters["downlink.multicast"] == 0    # not a member: not sent to it
        assert d[2].counters["drop.unknown-mcaddr"] == 1
        (tx,) = mc_frames(h, gid)
        assert (tx.reached, tx.accepted) == (2, 1)
