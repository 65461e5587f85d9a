"""The emulated ChirpStack's HTTP integration: events POSTed to a small aiohttp server in
both encodings, decodable by chirpstack_api.integration, JSON written the way ChirpStack v4
(pbjson, emit_fields) writes it, checked against the examples of ChirpStack's documentation
(chirpstack/chirpstack-docs, src/chirpstack/integrations/events.md) and pbjson's own test
vectors (influxdata/pbjson, pbjson-types/src/{duration,timestamp}.rs)."""

from __future__ import annotations

import base64
import json

import pytest
from google.protobuf import json_format

from chirpstack_api import api
from chirpstack_api import integration as ipb
from radio_emulators.lorawan.chirpstack_core import gps_timestamp
from radio_emulators.lorawan.integration import _duration, _rfc3339, marshal_json, to_pbjson

from .chirpstack_harness import APP_ID, Harness, T0

RUN = dict(uplink_period=200.0, time_sync_period=None)


async def scenario(encoding: str) -> Harness:
    """Two devices for 900 virtual seconds: uplinks, a join each, status, a txack, an ack,
    a log event."""
    h = Harness(2, encoding=encoding, net_kw=RUN, cs_kw=dict(status_interval=300.0))
    async with h:
        eui = h.eui(0)
        q = api.EnqueueDeviceQueueItemRequest
        await h.call(h.dev.Enqueue, q(queue_item=api.DeviceQueueItem(
            dev_eui=eui, f_port=203, data=b"\x01", confirmed=True)))
        await h.call(h.dev.Enqueue, q(queue_item=api.DeviceQueueItem(
            dev_eui=h.eui(1), f_port=10, data=b"late", expires_at=gps_timestamp(T0))))
        await h.sleep(900.0)
    return h


@pytest.fixture(scope="module")
def runs():
    import asyncio
    return {enc: asyncio.run(scenario(enc)) for enc in ("json", "protobuf")}


def test_every_event_type_arrives_with_its_content_type(runs):
    for enc, ctype in (("json", "application/json"),
                       ("protobuf", "application/octet-stream")):
        got = runs[enc].sink.got
        assert {r.event for r in got} == {"join", "up", "status", "txack", "ack", "log"}
        assert {r.content_type for r in got} == {ctype}


def test_json_and_protobuf_carry_the_same_events(runs):
    a, b = runs["json"].sink, runs["protobuf"].sink
    assert [r.event for r in a.got] == [r.event for r in b.got]
    for event in ("join", "up", "status", "txack", "ack", "log"):
        assert a.decoded(event, "json") == b.decoded(event, "protobuf"), event


def test_uplink_events_match_the_radio(runs):
    h = runs["json"]
    ups = h.sink.decoded("up")
    received = [e for e in h.net.uplink_log if e.received]
    assert len(ups) == len(received) > 4
    by_dedup = {u.deduplication_id for u in ups}
    assert len(by_dedup) == len(ups)                          # unique per uplink
    for u, ev, rec in zip(ups, received, h.sink.of("up")):
        up = ev.uplink
        assert u.device_info.dev_eui == ev.dev_eui.hex()
        assert u.device_info.application_id == APP_ID
        assert (u.f_port, u.f_cnt, u.data, u.dr) == (up.fport, up.f_cnt, up.payload, up.dr)
        rx = u.rx_info[0]
        assert rx.gateway_id == h.cs.core.gateway_id.hex()
        assert rx.time_since_gps_epoch.ToMicroseconds() == round(up.t_end * 1e6)
        assert u.time == rx.gw_time == gps_timestamp(up.t_end)
        assert -130 < rx.rssi < -60 and -10 < rx.snr < 15
        assert u.tx_info.frequency == up.freq
        assert u.tx_info.modulation.lora.spreading_factor == 7
        assert u.tx_info.modulation.lora.bandwidth == 125_000
        assert rec.t == pytest.approx(up.t_end + 0.2)         # deduplication delay, virtual
    joins = h.sink.decoded("join")
    assert {j.device_info.dev_eui for j in joins} == {h.eui(0), h.eui(1)}
    first_up = {}
    for u in ups:
        first_up.setdefault(u.device_info.dev_eui, u.deduplication_id)
    assert {j.device_info.dev_eui: j.deduplication_id for j in joins} == first_up


def test_json_body_is_pbjson_with_emitted_defaults(runs):
    h = runs["json"]
    body = json.loads(h.sink.of("up")[0].body)
    assert list(body)[:4] == ["deduplicationId", "time", "deviceInfo", "devAddr"]
    assert body["time"].endswith("+00:00")
    # integration messages: defaults written; unset messages (object, relayRxInfo) left out
    assert body["confirmed"] is False and "adr" in body and "fCnt" in body
    assert "object" not in body and "relayRxInfo" not in body
    assert body["deviceInfo"]["tags"] == {} and body["deviceInfo"]["deviceClassEnabled"] == \
        "CLASS_A"
    rx = body["rxInfo"][0]
    assert rx["crcStatus"] == "CRC_OK" and rx["timeSinceGpsEpoch"].endswith("s")
    assert "board" not in rx                                  # gw.*: defaults left out
    assert base64.b64decode(body["data"]) == h.net.uplink_log[0].uplink.payload
    assert body["txInfo"]["modulation"]["lora"]["codeRate"] == "CR_4_5"


def test_status_ack_txack_and_log_events(runs):
    h = runs["json"]
    st = h.sink.decoded("status")
    assert st and {s.device_info.dev_eui for s in st} <= {h.eui(0), h.eui(1)}
    for s in st:
        dev = h.net.devices[bytes.fromhex(s.device_info.dev_eui)]
        assert s.battery_level == pytest.approx(dev.battery.status_byte() / 254 * 100,
                                                abs=0.5)
        assert -32 <= s.margin <= 31 and not s.external_power_source
    (txack,) = h.sink.decoded("txack")
    (ack,) = h.sink.decoded("ack")
    assert ack.queue_item_id == txack.queue_item_id and ack.acknowledged
    assert ack.f_cnt_down == txack.f_cnt_down == 0
    (log,) = h.sink.decoded("log")
    assert log.code == ipb.EXPIRED and log.level == ipb.ERROR
    assert log.device_info.dev_eui == h.eui(1)


async def test_http_errors_are_not_retried():
    h = Harness(1, net_kw=RUN)
    h.sink.status = 500
    async with h:
        await h.sleep(450.0)
        n = len(h.sink.got)
        assert n >= 2
        assert h.cs.integration.counts["failed"] == n == h.cs.integration.counts["event"]


# ------------------------------------------------------------------ pbjson vectors
def test_pbjson_duration_and_timestamp_vectors():
    # influxdata/pbjson, pbjson-types/src/duration.rs test_duration
    assert _duration(0, 0) == "0s"
    assert _duration(0, 123) == "0.000000123s"
    assert _duration(0, 123456) == "0.000123456s"
    assert _duration(0, 123456789) == "0.123456789s"
    assert _duration(0, -67088) == "-0.000067088s"
    assert _duration(121, 3454) == "121.000003454s"
    assert _duration(-90, -2456301) == "-90.002456301s"
    # pbjson-types/src/timestamp.rs test_date; chrono AutoSi fractions
    assert _rfc3339(1478621229, 0) == "2016-11-08T16:07:09+00:00"
    assert _rfc3339(1658136855, 775023242) == "2022-07-18T09:34:15.775023242+00:00"
    assert _rfc3339(1658136855, 775023000) == "2022-07-18T09:34:15.775023+00:00"
    assert _rfc3339(1658136855, 775000000) == "2022-07-18T09:34:15.775+00:00"


DOCS_UP = {
    "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
    "time": "2022-07-18T09:34:15.775023242+00:00",
    "deviceInfo": {
        "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242", "tenantName": "ChirpStack",
        "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97",
        "applicationName": "Test application",
        "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
        "deviceProfileName": "Test device-profile", "deviceName": "Test device",
        "devEui": "0101010101010101", "tags": {"key": "value"}},
    "devAddr": "00189440", "dr": 1, "fPort": 1, "data": "qg==",
    "rxInfo": [{"gatewayId": "0016c001f153a14c", "uplinkId": 4217106255, "rssi": -36,
                "snr": 10.5, "context": "E3OWOQ==",
                "metadata": {"region_name": "eu868", "region_common_name": "EU868"}}],
    "txInfo": {"frequency": 867100000, "modulation": {"lora": {
        "bandwidth": 125000, "spreadingFactor": 11, "codeRate": "CR_4_5"}}},
}

DOCS_STATUS = {
    "deduplicationId": "bf2a9746-1c8b-49be-a92e-f0b89c8534e4",
    "time": "2022-07-18T09:35:06.927172638+00:00",
    "deviceInfo": {
        "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242", "tenantName": "ChirpStack",
        "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97",
        "applicationName": "Test application",
        "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
        "deviceProfileName": "Test device-profile", "deviceName": "Test device",
        "devEui": "0101010101010101"},
    "margin": 10, "batteryLevel": 88.3,
}

DOCS_TXACK_TX_INFO = {
    "frequency": 867900000, "power": 14,
    "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5",
                            "polarizationInversion": True}},
    "timing": {"delay": {"delay": "1s"}}, "context": "ICYVGw==",
}


def _with_defaults(doc: dict, defaults: dict) -> dict:
    out = json.loads(json.dumps(doc))
    for k, v in defaults.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k].update({kk: vv for kk, vv in v.items() if kk not in out[k]})
        else:
            out.setdefault(k, v)
    return out


def test_docs_examples_round_trip_to_the_same_json():
    # The docs examples predate `emit_fields` (4.1): the same JSON plus the defaults.
    up = json_format.Parse(json.dumps(DOCS_UP), ipb.UplinkEvent())
    assert to_pbjson(up) == _with_defaults(DOCS_UP, {
        "deviceInfo": {"deviceClassEnabled": "CLASS_A"}, "adr": False, "fCnt": 0,
        "confirmed": False, "regionConfigId": ""})
    st = json_format.Parse(json.dumps(DOCS_STATUS), ipb.StatusEvent())
    out = to_pbjson(st)
    assert out == _with_defaults(DOCS_STATUS, {
        "deviceInfo": {"deviceClassEnabled": "CLASS_A", "tags": {}},
        "externalPowerSource": False, "batteryLevelUnavailable": False})
    assert b'"batteryLevel":88.3' in marshal_json(st)          # f32 printed shortest
    tx = json_format.Parse(json.dumps({"txInfo": DOCS_TXACK_TX_INFO}), ipb.TxAckEvent())
    assert to_pbjson(tx)["txInfo"] == DOCS_TXACK_TX_INFO
