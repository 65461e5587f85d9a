"""The emulated mesh as a zigpy radio library: the ControllerApplication starts, zigpy sees
the devices (preloaded or interviewed over the mesh), packets go both ways with the real
stack's errors, network settings persist, a restarted gateway reconnects, and zigpy's own
OTA (`Device.update_firmware`) updates an emulated node."""

from __future__ import annotations

import asyncio

import pytest
import zigpy.device
import zigpy.exceptions
import zigpy.types as t
import zigpy.zdo.types as zdo_t
from zigpy.ota import OtaImageWithMetadata
from zigpy.ota.image import parse_ota_image
from zigpy.ota.providers import BaseOtaImageMetadata
from zigpy.zcl import foundation

from radio_emulators.clock import VirtualClock
from radio_emulators.zigbee import ZigbeeNetwork, register_network
from radio_emulators.zigbee.looptime import LoopClock, run_virtual
from radio_emulators.zigbee.radio import EmulatedControllerApplication, emulated_config

from .conftest import make_image


@pytest.fixture
async def app_on(networks):
    apps: list[EmulatedControllerApplication] = []

    async def start(net, name="test"):
        app = EmulatedControllerApplication(emulated_config(name), network=net)
        if net.started_at is None:
            net.start()
        await app.startup()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.shutdown()


def packet(dst_nwk: int, payload: bytes, *, ack: bool) -> t.ZigbeePacket:
    return t.ZigbeePacket(
        src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0)), src_ep=1,
        dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(dst_nwk)), dst_ep=1, tsn=1,
        profile_id=0x0104, cluster_id=0x0003, data=t.SerializableBytes(payload),
        tx_options=t.TransmitOptions.ACK if ack else t.TransmitOptions.NONE)


async def test_startup_and_preloaded_devices(clock, networks, app_on):
    net = networks(clock, routers=3, end_devices=1, sleepy=1, max_hops=3, seed=1)
    app = await app_on(net)
    assert app._device.nwk == 0 and app._device.is_initialized
    assert app.state.network_info.pan_id == net.settings.pan_id
    assert app.state.network_info.channel == net.settings.channel
    assert app.state.node_info.logical_type == zdo_t.LogicalType.Coordinator
    devices = app.add_emulated_devices()
    assert len(devices) == 5 and len(app.devices) == 6
    for node in net.nodes.values():
        dev = app.get_device(ieee=t.EUI64(node.ieee))
        assert dev.nwk == node.nwk and dev.is_initialized
        assert (dev.manufacturer, dev.model) == (node.profile.manufacturer, node.profile.model)
        ep = dev.endpoints[1]
        assert 0x0019 in ep.out_clusters and 0x0000 in ep.in_clusters
        assert ep.out_clusters[0x0019].get("current_file_version") == 1
        assert dev.node_desc.is_end_device == (not node.is_router)
        assert dev.node_desc.is_receiver_on_when_idle == (not node.sleepy)


async def test_interview_over_the_mesh(clock, networks, app_on):
    net = networks(clock, routers=2, end_devices=1, sleepy=1, max_hops=2, seed=2)
    app = await app_on(net)
    assert await app.interview_emulated_devices(timeout_s=600)
    for node in net.nodes.values():
        dev = app.get_device(ieee=t.EUI64(node.ieee))
        assert dev.model == node.profile.model and dev.manufacturer == node.profile.manufacturer
        assert list(dev.endpoints[1].out_clusters) == [0x0019]
        assert dev.endpoints[1].out_clusters[0x0019].get("current_file_version") == 1
        # zigpy sent ImageNotify during the interview; the node queried and, with no OTA
        # running, zigpy answered NO_IMAGE_AVAILABLE
        assert node.stats.ota.queries >= 1 and node.stats.ota.no_image >= 1
    sed = next(n for n in net.nodes.values() if n.sleepy)
    assert net.mesh.stats.polls > 0 and sed.stats.frames_in > 0


async def test_attribute_reads_through_zigpy(clock, networks, app_on):
    net = networks(clock, routers=2, max_hops=2, seed=3)
    app = await app_on(net)
    app.add_emulated_devices()
    node = max(net.nodes.values(), key=lambda n: n.mesh_node.depth)
    dev = app.get_device(ieee=t.EUI64(node.ieee))
    ok, failed = await dev.endpoints[1].basic.read_attributes(["sw_build_id", "power_source"], allow_cache=False)
    assert ok == {"sw_build_id": "0x00000001", "power_source": 1} and not failed
    ok, failed = await dev.endpoints[1].out_clusters[0x0019].read_attributes(
        ["current_file_version", "image_upgrade_status", "manufacturer_id"], allow_cache=False)
    assert ok == {"current_file_version": 1, "image_upgrade_status": 0, "manufacturer_id": 0x1234}


async def test_send_packet_limits_and_delivery_errors(clock, networks, app_on):
    net = networks(clock, routers=2, max_hops=2, seed=4)
    app = await app_on(net)
    near, far = sorted(net.nodes.values(), key=lambda n: n.mesh_node.depth)
    await app.send_packet(packet(far.nwk, b"\x11" + bytes(81), ack=True))          # 82 bytes: fits
    with pytest.raises(zigpy.exceptions.DeliveryError) as err:
        await app.send_packet(packet(far.nwk, bytes(83), ack=True))
    assert err.value.status == 0x74 and "MESSAGE_TOO_LONG" in str(err.value)
    with clock.busy():
        far.power_off()
    t0 = clock.now()
    with pytest.raises(zigpy.exceptions.DeliveryError) as err:
        await app.send_packet(packet(far.nwk, b"\x11\x01\x00", ack=True))
    assert err.value.status == 0x66 and clock.now() - t0 >= 4 * net.mesh.aps_ack_timeout(2, False) * 0.9
    await app.send_packet(packet(far.nwk, b"\x11\x01\x00", ack=False))             # first hop confirms
    with pytest.raises(zigpy.exceptions.DeliveryError):
        await app.send_packet(packet(0x7777, b"\x11\x01\x00", ack=True))          # unknown NWK


async def test_network_settings_persist_and_reset(clock, networks, app_on):
    net = networks(clock, routers=1, seed=5)
    app = await app_on(net)
    info = app.state.network_info.replace(pan_id=t.PanId(0x4242), channel=20)
    await app.write_network_info(network_info=info, node_info=app.state.node_info)
    await app.load_network_info(load_devices=True)
    assert app.state.network_info.pan_id == 0x4242 and app.state.network_info.channel == 20
    assert set(app.state.network_info.nwk_addresses.values()) == set(net.nodes)
    await app.reset_network_info()
    with pytest.raises(zigpy.exceptions.NetworkNotFormed):
        await app.load_network_info()


async def test_device_path_registry_and_single_host(clock, networks, app_on):
    net = networks(clock, routers=1, seed=6)
    register_network("reg-test", net)
    app = EmulatedControllerApplication(emulated_config("reg-test"))
    net.start()
    await app.connect()
    assert app.network is net and net.host_attached
    second = EmulatedControllerApplication(emulated_config("reg-test"))
    with pytest.raises(zigpy.exceptions.ControllerException):
        await second.connect()
    await app.disconnect()
    assert not net.host_attached
    with pytest.raises(zigpy.exceptions.ControllerException):
        await EmulatedControllerApplication(emulated_config("nowhere")).connect()


async def test_gateway_restart_reconnects(clock, networks, app_on):
    net = networks(clock, routers=2, seed=7)
    app = await app_on(net)
    app.add_emulated_devices()
    await app.shutdown()
    assert not net.host_attached
    app2 = await app_on(net)
    devices = app2.add_emulated_devices()
    assert len(devices) == 2
    node = next(iter(net.nodes.values()))
    ok, _ = await app2.get_device(ieee=t.EUI64(node.ieee)).endpoints[1].basic.read_attributes(
        ["model"], allow_cache=False)
    assert ok["model"] == node.profile.model


def ota_image(data: bytes) -> OtaImageWithMetadata:
    firmware, _ = parse_ota_image(data)
    return OtaImageWithMetadata(
        metadata=BaseOtaImageMetadata(file_version=2, manufacturer_id=0x1234, image_type=1), firmware=firmware)


def test_zigpy_builtin_ota_updates_an_emulated_node():
    """zigpy's own OTA (Device.update_firmware: ImageNotify, its OTAManager serving 50-byte
    blocks, UpgradeEndResponse, then its 10 s wait, attribute read and re-interview), with
    every zigpy timer on the emulated timeline (VirtualTimeEventLoop)."""
    data = make_image(1500)

    async def main():
        clock = LoopClock()
        net = ZigbeeNetwork.generate(clock, routers=2, max_hops=2, seed=8)
        app = EmulatedControllerApplication(emulated_config("zigpy-ota"), network=net)
        net.start()
        await app.startup()
        try:
            app.add_emulated_devices()
            node = max(net.nodes.values(), key=lambda n: n.mesh_node.depth)
            progress = []
            t0 = clock.now()
            status = await app.get_device(ieee=t.EUI64(node.ieee)).update_firmware(
                ota_image(data), progress_callback=lambda cur, tot, pct: progress.append(cur))
            elapsed = clock.now() - t0
            dev = app.get_device(ieee=t.EUI64(node.ieee))            # re-interviewed object
            return status, node, progress, elapsed, dev.endpoints[1].out_clusters[0x0019].get("current_file_version")
        finally:
            await app.shutdown()
            await net.close()

    status, node, progress, elapsed, cached = run_virtual(main(), start=1000.0)
    assert status == foundation.Status.SUCCESS
    assert node.current_file_version == 2 and node.stats.ota.integrity_failures == 0
    assert progress[-1] == len(data) and node.stats.ota.blocks == -(-len(data) // 50)   # zigpy caps at 50 B
    assert cached == 2                                         # zigpy read the new version back
    # notify + download (~2 s) + zigpy's AFTER_OTA_ATTR_READ_DELAY (10 emulated s) + re-interview
    assert 10.0 < elapsed < 30.0


def test_zigpy_builtin_ota_on_the_project_virtual_clock(monkeypatch):
    """The same on the project's VirtualClock (real event loop): zigpy's own timers then
    run in real time, so its post-OTA 10 s wait (before it reads the version back from the
    rebooting node) is shortened to 0.2 real s, which is ample emulated time for the boot."""
    monkeypatch.setattr(zigpy.device, "AFTER_OTA_ATTR_READ_DELAY", 0.2)

    async def main():
        clock = VirtualClock(1000.0)                          # default real-time settle
        net = ZigbeeNetwork.generate(clock, routers=1, seed=9)
        app = EmulatedControllerApplication(emulated_config("vc"), network=net)
        net.start()
        await app.startup()
        try:
            app.add_emulated_devices()
            node = next(iter(net.nodes.values()))
            status = await app.get_device(ieee=t.EUI64(node.ieee)).update_firmware(ota_image(make_image(800)))
            return status, node.current_file_version
        finally:
            await app.shutdown()
            await net.close()

    assert asyncio.run(main()) == (foundation.Status.SUCCESS, 2)


async def test_send_packet_gives_up_waiting_like_bellows(clock, networks, app_on):
    net = networks(clock, routers=1, sleepy=1, max_hops=2, seed=10)
    app = await app_on(net)
    sed = next(n for n in net.nodes.values() if n.sleepy)
    with clock.busy():
        sed.power_off()                          # APS retries towards it take 4 x (0.2 s + 7.68 s)
    pkt = packet(sed.nwk, b"\x11\x01\x00", ack=True).replace(extended_timeout=True)
    t0 = clock.now()
    with pytest.raises(TimeoutError):
        await app.send_packet(pkt)
    assert clock.now() - t0 == pytest.approx(EmulatedControllerApplication.SEND_TIMEOUT_EXTENDED_S, abs=0.01)
