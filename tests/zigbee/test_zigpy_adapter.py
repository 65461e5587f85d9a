"""The zigpy adapter on a real zigpy ControllerApplication (the emulated mesh as its radio):
what it takes out of zigpy's receive path and what it leaves, the frames it sends (read
back with zigpy's own ZCL parser), zigpy's own OTA kept out, the campaign driver on the
emulators' VirtualClock, the radio configuration and `proxyota radios list`. No test runs
against a real radio."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import struct

import pytest
import zigpy.config as zc
import zigpy.types as t
from zigpy.ota import OtaImageWithMetadata
from zigpy.ota.image import parse_ota_image
from zigpy.ota.providers import BaseOtaImageMetadata
from zigpy.zcl import foundation

from proxyota.cli import main
from proxyota.cli.radios import describe_port, guess, list_radios
from proxyota.errors import InvalidArgument
from proxyota.simulation.zigbee import LOOP_START, GpsClock, build_image
from proxyota.zigbee.campaign import ZigbeeCampaign, on_radio
from proxyota.zigbee.ota_server import CampaignPolicy, Notify, OtaServer, Reply
from proxyota.zigbee.otafile import parse
from proxyota.zigbee.zigpy_adapter import (
    RADIO_TYPES,
    OtaRequest,
    RadioConfig,
    ZigpyOtaAdapter,
    device_class_of,
    open_radio,
    probe_aps_max_payload,
    radio_application_class,
    zigpy_config,
)
from radio_emulators.zigbee import ROUTER, SLEEPY, ZigbeeNetwork
from radio_emulators.zigbee.looptime import LoopClock, run_virtual
from radio_emulators.zigbee.radio import EmulatedControllerApplication, emulated_config

OTA = 0x0019
T0 = 1_420_000_000.0


class MemorySink:
    def __init__(self) -> None:
        self.docs: dict[str, dict] = {}

    async def save(self, campaign_id, doc):
        self.docs[campaign_id] = json.loads(json.dumps(doc))

    async def load(self, campaign_id):
        return self.docs.get(campaign_id)


def on_mesh(body, *, quiet: bool = True) -> None:
    """Run ``await body(clock, net, app)`` on a fresh emulated-time event loop (zigpy's timers
    and the mesh on one timeline): a started emulated mesh (2 routers, 1 sleepy) with a
    zigpy application on it; ``quiet``: the nodes query only when notified (no traffic of
    their own, not even after an upgrade). ``clock`` reads GPS time (the gateway's view)."""

    async def main():
        loop_clock = LoopClock()
        net = ZigbeeNetwork.generate(
            loop_clock, routers=2, sleepy=1, max_hops=2, seed=4,
            profiles=lambda mn: (SLEEPY if mn.sleepy else ROUTER).with_(first_query_delay_s=1e6 if quiet else 5.0))
        app = EmulatedControllerApplication(emulated_config("adapter-test"), network=net)
        net.start()
        await app.startup()
        app.add_emulated_devices()
        net.trace = []
        try:
            await body(GpsClock(loop_clock, T0 - loop_clock.now()), net, app)
        finally:
            await app.shutdown()
            await net.close()

    run_virtual(main(), start=LOOP_START)


def nodes(net):
    routers = [n for n in net.nodes.values() if n.is_router]
    sleepy = [n for n in net.nodes.values() if n.sleepy]
    return routers[0], routers[1], sleepy[0]


def packet(node, data: bytes, *, aps: int = 1, cluster: int = OTA, profile: int = 0x0104) -> t.ZigbeePacket:
    return t.ZigbeePacket(
        src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(node.nwk)), src_ep=1,
        dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0)), dst_ep=1, tsn=aps,
        profile_id=profile, cluster_id=cluster, data=t.SerializableBytes(data), lqi=200, rssi=-50)


#: QueryNextImageRequest payload: field control 1 (hardware version), mfr 0x1234, type 1, version 1, hw 1
QUERY = struct.pack("<BHHIH", 1, 0x1234, 1, 1, 1)


def host_frames(net, dst=None):
    return [(d, p) for _, who, _, d, c, p in net.trace if who == "host" and c == OTA and (dst is None or d == dst)]


async def settle(clock, seconds=2.0):
    await clock.sleep(seconds)


# -- receiving --------------------------------------------------------------------------


def test_takes_only_client_to_server_commands_of_campaign_nodes():
    async def body(clock, net, app):
        a, b, _ = nodes(net)
        got: list[OtaRequest] = []
        adapter = ZigpyOtaAdapter(app, targets=[a.mesh_node.ieee_str], on_request=got.append, now=clock.now)
        adapter.attach()
        with clock.busy():
            app.packet_received(packet(a, b"\x01\x21\x01" + QUERY, aps=10))  # QueryNextImageRequest, TSN 0x21
        assert len(got) == 1
        req = got[0]
        assert (req.ieee, req.nwk, req.command_id, req.tsn) == (a.mesh_node.ieee_str, a.nwk, 1, 0x21)
        assert req.payload == QUERY
        assert (req.src_ep, req.dst_ep, req.profile_id, req.manufacturer_code, req.aps_max_payload) == (1, 1, 0x0104,
                                                                                                         None, 82)
        # manufacturer-specific header: fc 0x05, code 0x117C, then TSN and command
        with clock.busy():
            app.packet_received(packet(a, b"\x05\x7c\x11\x22\x03" + b"\x00" * 14, aps=11))
        assert (got[1].manufacturer_code, got[1].tsn, got[1].command_id, len(got[1].payload)) == (0x117C, 0x22, 3, 14)
        # malformed payloads reach the server (zigpy would drop them without an answer)
        with clock.busy():
            app.packet_received(packet(a, b"\x01\x23\x01\x00", aps=12))
        assert got[2].payload == b"\x00"
        await settle(clock)
        assert host_frames(net, a.nwk) == []  # zigpy said nothing to node a
        # what zigpy keeps: another node, server-to-client frames, general commands, bad headers
        passed = adapter.stats.passed_to_zigpy
        with clock.busy():
            app.packet_received(packet(b, b"\x01\x31\x01" + QUERY, aps=20))  # not a campaign node
            app.packet_received(packet(a, b"\x09\x32\x05\x95", aps=21))  # server -> client direction
            app.packet_received(packet(a, b"\x18\x33\x0b\x02\x00", aps=22))  # a Default Response (general)
            app.packet_received(packet(a, b"\x01\x35\x01" + QUERY, aps=24, profile=0x0000))
            with pytest.raises(ValueError):  # zigpy's own parser raises on a truncated ZCL header
                app.packet_received(packet(a, b"\x01\x34", aps=23))
        assert len(got) == 3 and adapter.stats.passed_to_zigpy == passed + 5
        await settle(clock)
        # zigpy answered node b's query itself: NO_IMAGE_AVAILABLE, TSN 0x31
        assert bytes([0x19, 0x31, 0x02, 0x98]) in [p[:4] for _, p in host_frames(net, b.nwk)]
        assert host_frames(net, a.nwk) == []
        assert adapter.stats.requests == 3
        adapter.detach()

    on_mesh(body)


def test_duplicate_frames_are_taken_once_retries_are_not():
    async def body(clock, net, app):
        a, _, _ = nodes(net)
        got: list[OtaRequest] = []
        adapter = ZigpyOtaAdapter(app, targets=[a.mesh_node.ieee_str], on_request=got.append, now=clock.now,
                                  duplicate_window_s=5.0)
        adapter.attach()
        frame = b"\x01\x40\x01" + QUERY
        with clock.busy():
            app.packet_received(packet(a, frame, aps=7))
            app.packet_received(packet(a, frame, aps=7))  # the same APS frame twice
            app.packet_received(packet(a, frame, aps=8))  # the client's retry: a new APS frame
        assert len(got) == 2 and adapter.stats.duplicates == 1
        await clock.sleep(6.0)
        with clock.busy():
            app.packet_received(packet(a, frame, aps=7))  # outside the window
        assert len(got) == 3

    on_mesh(body)


def test_attach_keeps_zigpys_own_ota_away_and_detach_restores():
    async def body(clock, net, app):
        a, b, _ = nodes(net)
        adapter = ZigpyOtaAdapter(app, targets=[a.mesh_node.ieee_str], on_request=lambda r: None, now=clock.now)
        dev_a = app.get_device(ieee=t.EUI64(a.ieee))
        dev_b = app.get_device(ieee=t.EUI64(b.ieee))
        adapter.attach()
        assert "packet_received" in app.__dict__ and dev_a.ota_in_progress and not dev_b.ota_in_progress
        firmware, _ = parse_ota_image(build_image(100, file_version=2))
        image = OtaImageWithMetadata(metadata=BaseOtaImageMetadata(file_version=2, manufacturer_id=0x1234,
                                                                   image_type=1), firmware=firmware)
        assert await dev_a.update_firmware(image) is None  # "OTA already in progress": no second server
        assert host_frames(net, a.nwk) == []
        adapter.detach()
        assert "packet_received" not in app.__dict__ and not dev_a.ota_in_progress
        with clock.busy():
            app.packet_received(packet(a, b"\x01\x50\x01" + QUERY, aps=30))
        await settle(clock)
        assert bytes([0x19, 0x50, 0x02, 0x98]) in [p[:4] for _, p in host_frames(net, a.nwk)]  # zigpy again
        adapter.detach()  # idempotent

    on_mesh(body)


def test_rejects_bad_arguments():
    with pytest.raises(InvalidArgument):
        ZigpyOtaAdapter(object(), targets=["not-an-address"], on_request=lambda r: None)
    with pytest.raises(InvalidArgument):
        ZigpyOtaAdapter(object(), targets=[], on_request=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        ZigpyOtaAdapter(object(), targets=[], on_request=lambda r: None, aps_max_payload=200)


# -- sending ----------------------------------------------------------------------------


class RequestSpy:
    def __init__(self, app) -> None:
        self.calls: list[dict] = []
        self._request = app.request
        app.request = self

    async def __call__(self, device, profile, cluster, src_ep, dst_ep, sequence, data, **kwargs):
        self.calls.append(dict(profile=profile, cluster=cluster, src_ep=src_ep, dst_ep=dst_ep, tsn=sequence,
                               **kwargs))
        return await self._request(device, profile, cluster, src_ep, dst_ep, sequence, data, **kwargs)


def test_replies_are_the_frames_zigpy_itself_would_parse():
    async def body(clock, net, app):
        a, _, _ = nodes(net)
        ieee = a.mesh_node.ieee_str
        adapter = ZigpyOtaAdapter(app, targets=[ieee], on_request=lambda r: None, now=clock.now)
        spy = RequestSpy(app)
        cluster = app.get_device(ieee=t.EUI64(a.ieee)).endpoints[1].out_clusters[OTA]
        server = OtaServer([build_image(64, file_version=2)])
        [reply] = [x for x in server.handle(ieee, 1, QUERY, 0x42, T0, aps_max_payload=82) if isinstance(x, Reply)]
        assert await adapter.send(reply)
        [block] = [x for x in server.handle(ieee, 3, bytes.fromhex("00341201000200000000000000" "40"), 0x43, T0,
                                            aps_max_payload=82) if isinstance(x, Reply)]
        assert await adapter.send(block, ack=False)
        default = Reply(ieee, 0x0B, bytes([0x06, 0x00]), 0x44, general=True)
        assert await adapter.send(default, manufacturer_code=0x117C)
        frames = [p for _, p in host_frames(net, a.nwk)]
        assert len(frames) == 3
        hdr, rsp = cluster.deserialize(frames[0])
        assert hdr.direction == foundation.Direction.Server_to_Client and hdr.frame_control.disable_default_response
        assert (hdr.tsn, hdr.command_id) == (0x42, 0x02)
        assert (rsp.status, rsp.manufacturer_code, rsp.image_type, rsp.file_version) == (0, 0x1234, 1, 2)
        hdr, rsp = cluster.deserialize(frames[1])
        assert (hdr.tsn, hdr.command_id, rsp.status, rsp.file_offset, len(rsp.image_data)) == (0x43, 5, 0, 0, 64)
        hdr, rsp = cluster.deserialize(frames[2])
        assert hdr.frame_control.frame_type == foundation.FrameType.GLOBAL_COMMAND and hdr.manufacturer == 0x117C
        assert (hdr.tsn, hdr.command_id, rsp.command_id, rsp.status) == (0x44, 0x0B, 0x06, 0)
        assert [(c["src_ep"], c["dst_ep"], c["profile"], c["cluster"], c["expect_reply"]) for c in spy.calls] == \
            [(1, 1, 0x0104, OTA, False)] * 3
        assert [c["ask_for_ack"] for c in spy.calls] == [True, False, True]
        assert [c["priority"] for c in spy.calls] == [t.PacketPriority.NORMAL, t.PacketPriority.LOW,
                                                      t.PacketPriority.NORMAL]
        assert adapter.stats.replies == 3

    on_mesh(body)


def test_image_notify_unicast_and_broadcast():
    async def body(clock, net, app):
        a, _, sleepy = nodes(net)
        adapter = ZigpyOtaAdapter(app, targets=[a.mesh_node.ieee_str], on_request=lambda r: None, now=clock.now)
        server = OtaServer([build_image(64, file_version=2)])
        for action in server.notify(T0, a.mesh_node.ieee_str) + server.notify(T0):
            if isinstance(action, Notify):
                assert await adapter.send(action)
        frames = host_frames(net)
        assert frames[0][0] == a.nwk and frames[0][1][0] == 0x19 and frames[0][1][2] == 0x00
        assert frames[0][1][3:5] == bytes([0x00, 100])  # payload type 0, jitter 100
        assert frames[1][0] == 0xFFFF and frames[1][1][3] == 3  # to all devices, with mfr / type / version
        assert adapter.stats.notifies == 1 and adapter.stats.broadcasts == 1
        await settle(clock, 12.0)
        assert sleepy.stats.frames_in >= 1  # its parent held the broadcast for its poll

    on_mesh(body)


def test_send_failures_are_counted_not_raised():
    async def body(clock, net, app):
        a, _, _ = nodes(net)
        ieee = a.mesh_node.ieee_str
        adapter = ZigpyOtaAdapter(app, targets=[ieee], on_request=lambda r: None, now=clock.now)
        with clock.busy():
            a.power_off()
        assert not await adapter.send(Reply(ieee, 0x02, b"\x98", 1))
        assert not await adapter.send(Reply("00:11:22:33:44:55:66:77", 0x02, b"\x98", 1))  # unknown to zigpy
        assert adapter.stats.send_errors == 2 and adapter.stats.replies == 0
        with pytest.raises(InvalidArgument):
            await adapter.send("nonsense")  # type: ignore[arg-type]

    on_mesh(body)


def test_aps_payload_from_config_and_source_routes():
    async def body(clock, net, app):
        a, _, sleepy = nodes(net)
        dev = app.get_device(ieee=t.EUI64(a.ieee))
        adapter = ZigpyOtaAdapter(app, targets=[a.mesh_node.ieee_str], on_request=lambda r: None)
        assert adapter.aps_max_payload(dev) == 82
        app._config[zc.CONF_SOURCE_ROUTING] = True
        dev.relays = [t.NWK(0x1234), t.NWK(0x5678)]
        assert adapter.aps_max_payload(dev) == 82 - (2 + 2 * 2)  # NWK source-route subframe
        fixed = ZigpyOtaAdapter(app, targets=[], on_request=lambda r: None, aps_max_payload=lambda d: 70)
        assert fixed.aps_max_payload(dev) == 70
        assert device_class_of(dev) == "router"
        assert device_class_of(app.get_device(ieee=t.EUI64(sleepy.ieee))) == "sleepy"
        assert device_class_of(object()) is None

    on_mesh(body)


# -- the campaign driver ------------------------------------------------------------------------


def test_campaign_persists_before_sending_and_resumes_after_a_restart():
    async def body(clock, net, app):
        image = build_image(700, file_version=2)
        targets = [n.mesh_node.ieee_str for n in net.nodes.values()]
        sink = MemorySink()
        save = sink.save
        checked = []

        async def slow_save(campaign_id, doc):
            await asyncio.sleep(0)  # a real sink yields: a send issued before the save would get out first
            await save(campaign_id, doc)

        sink.save = slow_save
        campaign = ZigbeeCampaign(OtaServer([image], CampaignPolicy(max_concurrent=8)), app, clock,
                                  campaign_id="c1", sink=sink, targets=targets, aps_max_payload=82)
        campaign.check_documents = True  # every incremental document == ServerState.to_dict()
        send = campaign.adapter.send

        async def checking_send(action, **kw):
            if isinstance(action, Reply) and action.command_id == 0x05 and action.payload[0] == 0:
                offset, size = int.from_bytes(action.payload[9:13], "little"), action.payload[13]
                served = sink.docs["c1"]["server"]["nodes"][action.ieee]["served"]
                assert any(a <= offset and offset + size <= b for a, b in served)  # saved before sent
                checked.append(offset)
            return await send(action, **kw)

        campaign.adapter.send = checking_send
        task = asyncio.ensure_future(campaign.run(timeout_s=3600))
        await clock.sleep(4.0)
        await campaign.close()  # the gateway goes away mid-campaign
        await task
        assert len(checked) > 3
        assert sink.docs["c1"]["driver"]["notified"] is True
        resumed = await ZigbeeCampaign.resume([image], CampaignPolicy(max_concurrent=8), app, clock,
                                              campaign_id="c1", sink=sink, aps_max_payload=82)
        assert resumed.restarts == 1 and resumed.targets == set(targets)
        report = await resumed.run(timeout_s=3600)
        await resumed.close()
        assert report["finished"] and report["updated"] == 3 and report["failed"] == {}
        assert all(n.current_file_version == 2 for n in net.nodes.values())
        assert "packet_received" not in app.__dict__

    on_mesh(body, quiet=False)


def test_campaign_argument_errors():
    async def body(clock, net, app):
        image = build_image(64, file_version=2)
        with pytest.raises(InvalidArgument):
            await ZigbeeCampaign.resume([image], None, app, clock, campaign_id="none", sink=MemorySink())
        sink = MemorySink()
        sink.docs["bad"] = {"format": 99}
        sink.docs["bad2"] = {"format": 1, "server": {"format": 1}, "driver": {"refused": [1]}}
        sink.docs["bad3"] = {"format": 1, "server": {"format": 1}, "driver": {"started_at": "soon"}}
        sink.docs["bad4"] = {"format": 1, "server": {"format": 1, "nodes": []}}
        for name in ("bad", "bad2", "bad3", "bad4"):
            with pytest.raises(InvalidArgument):
                await ZigbeeCampaign.resume([image], None, app, clock, campaign_id=name, sink=sink,
                                            targets=["00:11:22:33:44:55:66:77"])
        with pytest.raises(InvalidArgument):
            ZigbeeCampaign(OtaServer([image]), app, clock, campaign_id="x", sink=sink, targets=[], notify="unicast")
        with pytest.raises(InvalidArgument):
            ZigbeeCampaign(OtaServer([image]), app, clock, campaign_id="x", sink=sink,
                           targets=["00:11:22:33:44:55:66:77"], notify="shout")

    on_mesh(body)


# -- real radios: configuration only ------------------------------------------------------------


def test_radio_config_validation():
    cfg = RadioConfig(port="/dev/ttyUSB0")
    assert (cfg.radio, cfg.effective_baudrate, cfg.flow_control, cfg.aps_max_payload) == ("ezsp", 115200, None, 82)
    assert RadioConfig(port="/dev/ttyACM0", radio="deconz").effective_baudrate == 38400
    for bad in (dict(port=""), dict(port="/dev/x", radio="cc2531"), dict(port="/dev/x", baudrate=0),
                dict(port="/dev/x", baudrate=True), dict(port="/dev/x", flow_control="rts"),
                dict(port="/dev/x", aps_max_payload=300), dict(port="/dev/x", database="")):
        with pytest.raises(InvalidArgument):
            RadioConfig(**bad)
    assert RadioConfig.from_dict({"port": "/dev/x", "flow_control": "none"}).flow_control is None
    for bad in ({"radio": "ezsp"}, {"port": "/dev/x", "speed": 1}, ["port"]):
        with pytest.raises(InvalidArgument):
            RadioConfig.from_dict(bad)  # type: ignore[arg-type]


def test_zigpy_config_is_validated_by_bellows():
    cfg = RadioConfig(port="/dev/serial/by-id/usb-Nabu_Casa_SkyConnect", baudrate=460800, flow_control="hardware",
                      database="/var/lib/proxyota/zigbee.db")
    config = zigpy_config(cfg)
    assert config[zc.CONF_DEVICE] == {zc.CONF_DEVICE_PATH: "/dev/serial/by-id/usb-Nabu_Casa_SkyConnect",
                                      zc.CONF_DEVICE_BAUDRATE: 460800, zc.CONF_DEVICE_FLOW_CONTROL: "hardware"}
    assert config[zc.CONF_DATABASE] == "/var/lib/proxyota/zigbee.db"
    assert config[zc.CONF_OTA][zc.CONF_OTA_ENABLED] is False  # proxyota serves OTA
    assert "ezsp_config" in config  # bellows' schema filled its defaults in
    bad = RadioConfig(port="/dev/ttyUSB0", extra={zc.CONF_NWK: {zc.CONF_NWK_CHANNEL: 99}})
    with pytest.raises(InvalidArgument, match="zigpy rejects"):
        zigpy_config(bad)


def test_radio_types_not_installed_are_named():
    assert radio_application_class("ezsp").__module__ == "bellows.zigbee.application"
    missing = [name for name, rt in RADIO_TYPES.items()
               if importlib.util.find_spec(rt.module.split(".")[0]) is None]
    if not missing:
        pytest.skip("every radio library is installed")
    with pytest.raises(InvalidArgument, match=RADIO_TYPES[missing[0]].package):
        radio_application_class(missing[0])
    with pytest.raises(InvalidArgument):
        radio_application_class("bogus")


async def test_open_radio_constructs_the_app_as_zigpy_does():
    calls = []

    class FakeEzsp:
        async def maximumPayloadLength(self):
            return [80]

    class FakeApp:
        SCHEMA = radio_application_class("ezsp").SCHEMA

        @classmethod
        async def new(cls, config, auto_form=False, start_radio=True, **kw):
            # zigpy validates the configuration here itself: it must get a raw one (a
            # validated one does not validate twice with zigpy 2.4)
            cls.SCHEMA(config)
            calls.append((config, auto_form, start_radio))
            app = cls()
            app._ezsp = FakeEzsp()
            return app

        async def startup(self, auto_form=False):
            calls.append(("startup", auto_form))

    app, aps = await open_radio(RadioConfig(port="/dev/ttyUSB1"), app_class=FakeApp)
    assert aps == 80 and calls[0][1:] == (False, False) and calls[1] == ("startup", False)
    assert calls[0][0][zc.CONF_DEVICE][zc.CONF_DEVICE_PATH] == "/dev/ttyUSB1"

    class SilentApp(FakeApp):
        shut = False

        async def startup(self, auto_form=False):
            await asyncio.Event().wait()  # a radio that never answers

        async def shutdown(self):
            SilentApp.shut = True

    with pytest.raises(asyncio.TimeoutError):
        await open_radio(RadioConfig(port="/dev/ttyUSB1"), app_class=SilentApp, timeout=0.01)
    assert SilentApp.shut  # shut down again: no radio / database thread left behind

    class Broken:
        async def maximumPayloadLength(self):
            raise RuntimeError("not connected")

    class NoEzsp:
        pass

    holder = NoEzsp()
    assert await probe_aps_max_payload(holder) is None
    holder._ezsp = Broken()
    assert await probe_aps_max_payload(holder) is None

    # the field set-up: radio, then the campaign (new here: no saved state)
    sink = MemorySink()
    campaign = await on_radio(RadioConfig(port="/dev/ttyUSB1"), [build_image(64, file_version=2)], None,
                              campaign_id="field", sink=sink, targets=["00:11:22:33:44:55:66:77"], app_class=FakeApp)
    assert isinstance(campaign.app, FakeApp) and campaign.adapter.aps_max_payload(None) == 80
    assert campaign.targets == {"00:11:22:33:44:55:66:77"}


# -- proxyota radios list --------------------------------------------------------------------


class Port:
    def __init__(self, device, vid=None, pid=None, manufacturer=None, product=None, description="n/a"):
        self.device, self.vid, self.pid = device, vid, pid
        self.manufacturer, self.product, self.description = manufacturer, product, description
        self.serial_number, self.hwid = "123", "USB"


PORTS = [
    Port("/dev/ttyUSB0", 0x10C4, 0xEA60, "Nabu Casa", "SkyConnect v1.0"),
    Port("/dev/ttyUSB1", 0x10C4, 0xEA60, "ITead", "Sonoff Zigbee 3.0 USB Dongle Plus"),
    Port("/dev/ttyACM0", 0x1A86, 0x55D4, "ITEAD", "SONOFF Zigbee 3.0 USB Dongle Plus V2"),
    Port("/dev/ttyACM1", 0x1CF1, 0x0030, "dresden elektronik ingenieurtechnik GmbH", "ConBee II"),
    Port("/dev/ttyUSB2", 0x10C4, 0xEA60, "Silicon Labs", "CP2102N USB to UART Bridge Controller"),
    Port("/dev/ttyS0"),
]


def test_radios_are_guessed_from_usb_fingerprints():
    radios = list_radios(ports=PORTS, links={})
    got = {r["port"]: (r["radio"], r["vid_pid"]) for r in radios}
    assert got == {"/dev/ttyUSB0": ("ezsp", "10c4:ea60"), "/dev/ttyUSB1": ("znp", "10c4:ea60"),
                   "/dev/ttyACM0": ("ezsp", "1a86:55d4"), "/dev/ttyACM1": ("deconz", "1cf1:0030"),
                   "/dev/ttyUSB2": (None, "10c4:ea60")}
    unknown = next(r for r in radios if r["port"] == "/dev/ttyUSB2")
    assert "several sticks" in unknown["note"]
    assert len(list_radios(ports=PORTS, links={}, include_all=True)) == 6
    # the ZBDongle-E CP2102N variant is told from the -P by its by-id name
    by_id = "/dev/serial/by-id/usb-Itead_Sonoff_Zigbee_3.0_USB_Dongle_Plus_V2_a6ee897e-if00-port0"
    port = Port("/dev/ttyUSB3", 0x10C4, 0xEA60, None, None)
    desc = describe_port(port, {"/dev/ttyUSB3": [by_id]})
    assert desc["radio"] == "ezsp" and desc["by_id"] == [by_id]
    assert guess(0x0451, 0x16A8, "").radio == "znp" and guess(None, None, "conbee") is None


def test_radios_list_cli(monkeypatch, capsys):
    from serial.tools import list_ports

    monkeypatch.setattr(list_ports, "comports", lambda: PORTS)
    assert main(["radios", "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["port"] for r in data] == sorted(p.device for p in PORTS if p.vid is not None)
    assert main(["radios", "list"]) == 0
    out = capsys.readouterr().out
    assert 'radio = "deconz"' in out and "Home Assistant SkyConnect" in out


def test_built_image_is_a_valid_ota_file():
    ota = parse(build_image(1000, file_version=5, seed=3))
    assert ota.file_version == 5 and ota.verify_integrity().ok
    assert (ota.minimum_hardware_version, ota.maximum_hardware_version) == (1, 3)
