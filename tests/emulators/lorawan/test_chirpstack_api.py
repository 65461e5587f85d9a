"""The emulated ChirpStack's gRPC API over loopback with chirpstack_api stubs: bearer-token
authentication, NOT_FOUND / INVALID_ARGUMENT / INTERNAL as ChirpStack answers them, keys,
device profiles and multicast-group management."""

from __future__ import annotations

import uuid

import grpc
import pytest

from chirpstack_api import api, common
from radio_emulators.lorawan import crypto
from radio_emulators.lorawan.campaign import build_campaign_network
from radio_emulators.lorawan.chirpstack_core import ApiError, ChirpStackCore, DeviceKeys

from .chirpstack_harness import APP_ID, TOKEN, Harness, T0

C = grpc.StatusCode
UNKNOWN_EUI = "ffffffffffffff00"
UNKNOWN_ID = str(uuid.UUID(int=99))


# ------------------------------------------------------------------ authentication
async def test_bearer_token_is_required_on_every_service():
    async with Harness() as h:
        req = api.GetDeviceRequest(dev_eui=h.eui(0))
        assert await h.error(h.dev.Get, req, metadata=()) == C.UNAUTHENTICATED
        assert await h.error(h.dev.Get, req, metadata=(("authorization", TOKEN),)) \
            == C.UNAUTHENTICATED                                      # no "Bearer "
        assert await h.error(h.dev.Get, req, metadata=(("authorization", "Bearer nope"),)) \
            == C.UNAUTHENTICATED
        assert await h.error(h.mc.List, api.ListMulticastGroupsRequest(limit=5),
                             metadata=()) == C.UNAUTHENTICATED
        assert await h.error(h.prof.Get, api.GetDeviceProfileRequest(id=UNKNOWN_ID),
                             metadata=(("authorization", "Bearer x"),)) == C.UNAUTHENTICATED
        ok = await h.call(h.dev.Get, req)
        assert ok.device.dev_eui == h.eui(0)
        assert h.cs.errors["UNAUTHENTICATED"] == 5


async def test_methods_not_emulated_answer_unimplemented():
    async with Harness() as h:
        code = await h.error(h.dev.Create, api.CreateDeviceRequest(
            device=api.Device(dev_eui="0102030405060708")))
        assert code == C.UNIMPLEMENTED


# ------------------------------------------------------------------ devices
async def test_device_get_keys_and_profile():
    async with Harness(net_kw=dict(profiles=("lbm",))) as h:
        dev = h.cn.devices[1]
        keys = h.cn.keys[dev.dev_eui]
        r = await h.call(h.dev.GetKeys, api.GetDeviceKeysRequest(dev_eui=dev.dev_eui.hex()))
        # ChirpStack v4, LoRaWAN 1.0.x: AppKey in nwk_key, GenAppKey for TS005, app_key unset
        assert r.device_keys.nwk_key == keys.nwk_key.hex()
        assert r.device_keys.gen_app_key == keys.gen_app_key.hex()
        assert r.device_keys.app_key == "00" * 16
        # the GenAppKey is the one the device derives its McKEKey from
        assert crypto.mc_ke_key(crypto.mc_root_key(gen_app_key=bytes.fromhex(
            r.device_keys.gen_app_key))) == dev._mc_ke
        g = await h.call(h.dev.Get, api.GetDeviceRequest(dev_eui=dev.dev_eui.hex()))
        assert g.device.application_id == APP_ID and g.class_enabled == common.CLASS_A
        p = await h.call(h.prof.Get, api.GetDeviceProfileRequest(id=g.device.device_profile_id))
        assert p.device_profile.region == common.EU868
        assert p.device_profile.mac_version == common.LORAWAN_1_0_4
        lst = await h.call(h.dev.List, api.ListDevicesRequest(application_id=APP_ID, limit=2))
        assert lst.total_count == 3 and len(lst.result) == 2


def test_lorawan_1_1_keys_put_the_app_key_in_app_key():
    cn = build_campaign_network(1, mac_version="1.1", seed=3, start=T0)
    core = ChirpStackCore(cn.network, application_id=APP_ID, device_keys=cn.keys)
    r = core.device_get_keys(api.GetDeviceKeysRequest(dev_eui=cn.dev_euis[0].hex()), T0)
    k = cn.keys[cn.dev_euis[0]]
    assert r.device_keys.app_key == k.app_key.hex() and r.device_keys.gen_app_key == "00" * 16
    assert cn.devices[0]._root == k.app_key


async def test_unknown_device_is_not_found_everywhere():
    async with Harness() as h:
        for method, req in [
                (h.dev.Get, api.GetDeviceRequest(dev_eui=UNKNOWN_EUI)),
                (h.dev.GetKeys, api.GetDeviceKeysRequest(dev_eui=UNKNOWN_EUI)),
                (h.dev.GetQueue, api.GetDeviceQueueItemsRequest(dev_eui=UNKNOWN_EUI)),
                (h.dev.FlushQueue, api.FlushDeviceQueueRequest(dev_eui=UNKNOWN_EUI)),
                (h.dev.GetNextFCntDown, api.GetDeviceNextFCntDownRequest(dev_eui=UNKNOWN_EUI)),
                (h.dev.Enqueue, api.EnqueueDeviceQueueItemRequest(queue_item=api.DeviceQueueItem(
                    dev_eui=UNKNOWN_EUI, f_port=200, data=b"\x00"))),
                (h.prof.Get, api.GetDeviceProfileRequest(id=UNKNOWN_ID))]:
            assert await h.error(method, req) == C.NOT_FOUND, method


async def test_bad_device_arguments_are_invalid():
    async with Harness() as h:
        for bad in ("0102", "zz" * 8, "01020304050607080a"):
            assert await h.error(h.dev.Get, api.GetDeviceRequest(dev_eui=bad)) \
                == C.INVALID_ARGUMENT, bad
        enq = h.dev.Enqueue
        assert await h.error(enq, api.EnqueueDeviceQueueItemRequest()) == C.INVALID_ARGUMENT
        for port in (0, 224, 300):
            assert await h.error(enq, api.EnqueueDeviceQueueItemRequest(
                queue_item=api.DeviceQueueItem(dev_eui=h.eui(0), f_port=port, data=b"x"))) \
                == C.INVALID_ARGUMENT, port
        assert await h.error(h.dev.List, api.ListDevicesRequest(limit=5)) == C.INVALID_ARGUMENT
        # nothing was queued by the refused calls
        q = await h.call(h.dev.GetQueue, api.GetDeviceQueueItemsRequest(dev_eui=h.eui(0)))
        assert q.total_count == 0


async def test_hex_errors_can_be_internal_like_chirpstack():
    async with Harness(cs_kw=dict(parse_errors_as_internal=True)) as h:
        assert await h.error(h.dev.Get, api.GetDeviceRequest(dev_eui="xyz")) == C.INTERNAL


# ------------------------------------------------------------------ multicast groups
async def test_multicast_group_crud_round_trip():
    async with Harness() as h:
        gid = await h.create_group(f_cnt=20, dr=3, class_c_scheduling_type=api.GPS_TIME)
        g = (await h.call(h.mc.Get, api.GetMulticastGroupRequest(id=gid))).multicast_group
        assert (g.mc_addr, g.f_cnt, g.dr, g.frequency) == ("01ab23cd", 20, 3, 869_525_000)
        assert g.class_c_scheduling_type == api.GPS_TIME and g.group_type == api.CLASS_C
        g.name, g.dr, g.group_type, g.class_b_ping_slot_periodicity = "renamed", 4, api.CLASS_B, 2
        await h.call(h.mc.Update, api.UpdateMulticastGroupRequest(multicast_group=g))
        g2 = (await h.call(h.mc.Get, api.GetMulticastGroupRequest(id=gid))).multicast_group
        assert (g2.name, g2.dr, g2.group_type, g2.class_b_ping_slot_periodicity) == (
            "renamed", 4, api.CLASS_B, 2)
        assert h.net.groups[gid].group_type == "B" and h.net.groups[gid].dr == 4
        await h.call(h.mc.AddDevice, api.AddDeviceToMulticastGroupRequest(
            multicast_group_id=gid, dev_eui=h.eui(1)))
        lst = await h.call(h.mc.List, api.ListMulticastGroupsRequest(
            application_id=APP_ID, dev_eui=h.eui(1), limit=10))
        assert [x.id for x in lst.result] == [gid]
        devs = await h.call(h.dev.List, api.ListDevicesRequest(
            application_id=APP_ID, multicast_group_id=gid, limit=10))
        assert [d.dev_eui for d in devs.result] == [h.eui(1)]
        await h.call(h.mc.RemoveDevice, api.RemoveDeviceFromMulticastGroupRequest(
            multicast_group_id=gid, dev_eui=h.eui(1)))
        assert h.net.groups[gid].members == set()
        await h.call(h.mc.Delete, api.DeleteMulticastGroupRequest(id=gid))
        assert await h.error(h.mc.Get, api.GetMulticastGroupRequest(id=gid)) == C.NOT_FOUND
        assert gid not in h.net.groups


async def test_multicast_create_validation():
    async with Harness() as h:
        good = dict(name="g", application_id=APP_ID, region=common.EU868, mc_addr="01ab23cd",
                    mc_nwk_s_key="00" * 16, mc_app_s_key="11" * 16, group_type=api.CLASS_C,
                    dr=0, frequency=869_525_000)
        bad_cases = {
            "short mc_addr": dict(mc_addr="01ab23"),
            "empty mc_addr": dict(mc_addr=""),
            "non-hex mc_addr": dict(mc_addr="01ab23zz"),
            "short nwk key": dict(mc_nwk_s_key="00" * 15),
            "long app key": dict(mc_app_s_key="11" * 17),
            "empty app key": dict(mc_app_s_key=""),
            "DR out of range": dict(dr=8),
            "LR-FHSS DR": dict(dr=9),
            "frequency not in EU868": dict(frequency=915_000_000),
            "frequency zero": dict(frequency=0),
            "frequency in no sub-band": dict(frequency=869_300_000),
            "other region": dict(region=common.US915),
            "no name": dict(name=""),
            "bad application id": dict(application_id="app"),
            "class B periodicity": dict(group_type=api.CLASS_B, class_b_ping_slot_periodicity=8),
        }
        for what, change in bad_cases.items():
            req = api.CreateMulticastGroupRequest(multicast_group=api.MulticastGroup(
                **{**good, **change}))
            assert await h.error(h.mc.Create, req) == C.INVALID_ARGUMENT, what
        assert await h.error(h.mc.Create, api.CreateMulticastGroupRequest()) \
            == C.INVALID_ARGUMENT
        assert await h.error(h.mc.Create, api.CreateMulticastGroupRequest(
            multicast_group=api.MulticastGroup(**{**good, "application_id": UNKNOWN_ID}))) \
            == C.NOT_FOUND
        assert h.cs.core.groups == {} and h.net.groups == {}  # no state from refused calls
        resp = await h.call(h.mc.Create, api.CreateMulticastGroupRequest(
            multicast_group=api.MulticastGroup(**good)))
        assert resp.id in h.net.groups


async def test_multicast_not_found_and_invalid_ids():
    async with Harness() as h:
        gid = await h.create_group()
        for method, req in [
                (h.mc.Get, api.GetMulticastGroupRequest(id=UNKNOWN_ID)),
                (h.mc.Delete, api.DeleteMulticastGroupRequest(id=UNKNOWN_ID)),
                (h.mc.ListQueue, api.ListMulticastGroupQueueRequest(
                    multicast_group_id=UNKNOWN_ID)),
                (h.mc.FlushQueue, api.FlushMulticastGroupQueueRequest(
                    multicast_group_id=UNKNOWN_ID)),
                (h.mc.Enqueue, api.EnqueueMulticastGroupQueueItemRequest(
                    queue_item=api.MulticastGroupQueueItem(multicast_group_id=UNKNOWN_ID,
                                                           f_port=201, data=b"x"))),
                (h.mc.AddDevice, api.AddDeviceToMulticastGroupRequest(
                    multicast_group_id=UNKNOWN_ID, dev_eui=h.eui(0))),
                (h.mc.AddDevice, api.AddDeviceToMulticastGroupRequest(
                    multicast_group_id=gid, dev_eui=UNKNOWN_EUI)),
                (h.mc.RemoveDevice, api.RemoveDeviceFromMulticastGroupRequest(
                    multicast_group_id=gid, dev_eui=h.eui(0))),
                (h.mc.AddGateway, api.AddGatewayToMulticastGroupRequest(
                    multicast_group_id=gid, gateway_id="0102030405060708")),
                (h.mc.RemoveGateway, api.RemoveGatewayFromMulticastGroupRequest(
                    multicast_group_id=gid, gateway_id=h.cs.core.gateway_id.hex()))]:
            assert await h.error(method, req) == C.NOT_FOUND, method
        for method, req in [
                (h.mc.Get, api.GetMulticastGroupRequest(id="not-a-uuid")),
                (h.mc.Enqueue, api.EnqueueMulticastGroupQueueItemRequest()),
                (h.mc.Enqueue, api.EnqueueMulticastGroupQueueItemRequest(
                    queue_item=api.MulticastGroupQueueItem(multicast_group_id=gid, f_port=0))),
                (h.mc.Enqueue, api.EnqueueMulticastGroupQueueItemRequest(
                    queue_item=api.MulticastGroupQueueItem(multicast_group_id=gid,
                                                           f_port=225))),
                (h.mc.AddGateway, api.AddGatewayToMulticastGroupRequest(
                    multicast_group_id=gid, gateway_id="0102"))]:
            assert await h.error(method, req) == C.INVALID_ARGUMENT, method
        # refused enqueues did not consume the frame counter
        g = (await h.call(h.mc.Get, api.GetMulticastGroupRequest(id=gid))).multicast_group
        assert g.f_cnt == 0


async def test_duplicate_membership_is_internal_like_chirpstack():
    async with Harness() as h:
        gid = await h.create_group()
        add = api.AddDeviceToMulticastGroupRequest(multicast_group_id=gid, dev_eui=h.eui(0))
        await h.call(h.mc.AddDevice, add)
        assert await h.error(h.mc.AddDevice, add) == C.INTERNAL
        gw = api.AddGatewayToMulticastGroupRequest(multicast_group_id=gid,
                                                   gateway_id=h.cs.core.gateway_id.hex())
        await h.call(h.mc.AddGateway, gw)
        assert await h.error(h.mc.AddGateway, gw) == C.INTERNAL
        assert h.cs.core.groups[gid].devices == [h.cn.devices[0].dev_eui]


def test_device_keys_validate_lengths():
    with pytest.raises(ValueError):
        DeviceKeys(nwk_key=bytes(15))
    assert DeviceKeys(bytes(16), gen_app_key=b"\x01" * 16).multicast_root == b"\x01" * 16


def test_campaign_network_builder():
    cn = build_campaign_network(12, losses=0.2, burst=3.0, dead=3, seed=5, start=T0,
                                profiles=("loramac-node", "lbm", "ideal"), dr=3)
    assert len(cn.devices) == 12 and len(cn.dead) == 3 and len(set(cn.dev_euis)) == 12
    assert [d.profile.name for d in cn.devices[:4]] == ["loramac-node", "lbm", "ideal",
                                                        "loramac-node"]
    assert all(d.uplink_dr == 3 for d in cn.devices)
    for d in cn.devices:
        assert d._root == cn.keys[d.dev_eui].gen_app_key
        present = cn.network.downlink_models[d.dev_eui].present(T0 + 1)
        assert present == (d.dev_eui not in cn.dead)
    again = build_campaign_network(12, losses=0.2, burst=3.0, dead=3, seed=5, start=T0)
    assert again.keys == cn.keys and again.dead == cn.dead
    with pytest.raises(ValueError):
        build_campaign_network(2, dead=3)


def test_core_used_without_sockets_changes_no_state_on_bad_input():
    cn = build_campaign_network(1, seed=1, start=T0)
    core = ChirpStackCore(cn.network, application_id=APP_ID)
    before = core.stats()
    with pytest.raises(ApiError) as e:
        core.handle("mc_enqueue", api.EnqueueMulticastGroupQueueItemRequest(), T0)
    assert e.value.code == "INVALID_ARGUMENT"
    assert core.stats() == before and core.mc_queue == []


async def test_devices_added_after_start_are_served():
    from radio_emulators.lorawan.device import IDEAL, EndDevice
    async with Harness(1) as h:
        dev = EndDevice(IDEAL, bytes.fromhex("0102030405060708"), gen_app_key=bytes(16),
                        now=h.clock.now(), uplink_period=None)
        h.cs.add_device(dev, DeviceKeys(nwk_key=b"\x05" * 16, gen_app_key=bytes(16)))
        r = await h.call(h.dev.GetKeys, api.GetDeviceKeysRequest(dev_eui="0102030405060708"))
        assert r.device_keys.nwk_key == "05" * 16
        lst = await h.call(h.dev.List, api.ListDevicesRequest(application_id=APP_ID, limit=9))
        assert lst.total_count == 2
