"""parse_event: ChirpStack's JSON and Protobuf integration payloads -> proxyota events."""

from __future__ import annotations

import base64
import json

import pytest
from chirpstack_api import integration as I
from chirpstack_api.common import common_pb2
from chirpstack_api.gw import gw_pb2
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyota.chirpstack.events import (
    AckEvent,
    JoinEvent,
    LogEvent,
    RxInfo,
    StatusEvent,
    TxAckEvent,
    UplinkEvent,
    encoding_of,
    parse_event,
)
from proxyota.clock import unix_to_gps
from proxyota.errors import DecodeError

from .support import duration_pbjson, rfc3339_chrono, to_pbjson

JSON = "application/json"
PB = "application/octet-stream"

# ---------------------------------------------------------------------------------------
# External vectors: the JSON examples of ChirpStack's documentation,
# chirpstack/chirpstack-docs src/chirpstack/integrations/events.md (commit 5ab575f6), copied
# as data. They predate ChirpStack 4.1's "emit all fields", so defaults are omitted there.
# ---------------------------------------------------------------------------------------
_DEV_INFO = {
    "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242", "tenantName": "ChirpStack",
    "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97", "applicationName": "Test application",
    "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
    "deviceProfileName": "Test device-profile", "deviceName": "Test device",
    "devEui": "0101010101010101", "tags": {"key": "value"},
}
DOCS_UP = {
    "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
    "time": "2022-07-18T09:34:15.775023242+00:00", "deviceInfo": _DEV_INFO,
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
    "deviceInfo": {k: v for k, v in _DEV_INFO.items() if k != "tags"},
    "margin": 10, "batteryLevel": 88.3,
}
DOCS_JOIN = {
    "deduplicationId": "c9dbe358-2578-4fb7-b295-66b44edc45a6",
    "time": "2022-07-18T09:33:28.823500726+00:00", "deviceInfo": _DEV_INFO, "devAddr": "00189440",
}
DOCS_ACK = {
    "deduplicationId": "856a03e7-80f6-4c26-b971-9dcb34a59c2e",
    "time": "2022-07-18T09:38:49.235700766+00:00", "deviceInfo": _DEV_INFO,
    "queueItemId": "1bbcab1d-6ec6-4136-b3f5-d63be1dc08de", "acknowledged": True, "fCntDown": 3,
}
DOCS_TXACK = {
    "downlinkId": 3461958127, "time": "2022-07-18T09:37:48.929184085+00:00",
    "deviceInfo": _DEV_INFO, "queueItemId": "42cb6459-a640-46ec-9623-bdff39dc4736",
    "fCntDown": 2, "gatewayId": "0016c001f153a14c",
    "txInfo": {"frequency": 867900000, "power": 14,
               "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7,
                                       "codeRate": "CR_4_5", "polarizationInversion": True}},
               "timing": {"delay": {"delay": "1s"}}, "context": "ICYVGw=="},
}
DOCS_LOG = {
    "time": "2022-07-18T09:39:57.311414029+00:00", "deviceInfo": _DEV_INFO,
    "level": "ERROR", "code": "UPLINK_MIC",
    "description": "MIC of join-request is invalid, make sure keys are correct",
    "context": {"deduplication_id": "4e91db13-5ce3-4c8c-ab0f-dfc626cf0771"},
}
DOCS_LOCATION = {
    "deduplicationId": "63d870b9-b769-4d88-8b33-8e43f58851a7",
    "time": "2022-07-18T09:55:11.059481003+00:00", "deviceInfo": _DEV_INFO,
    "location": {"latitude": 37.344214, "longitude": -8.839375, "altitude": 2},
}


def _gps(seconds: int, nanos: int = 0) -> float:
    return unix_to_gps(seconds + nanos * 1e-9)


def _j(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_docs_up_example() -> None:
    ev = parse_event("up", _j(DOCS_UP), JSON)
    assert isinstance(ev, UplinkEvent)
    assert (ev.dev_eui, ev.application_id, ev.device_name) == (
        "0101010101010101", "17c82e96-be03-4f38-aef3-f83d48582d97", "Test device")
    assert (ev.f_port, ev.f_cnt, ev.data, ev.dr, ev.frequency, ev.confirmed) == (
        1, 0, b"\xaa", 1, 867100000, False)
    assert (ev.dev_addr, ev.spreading_factor, ev.bandwidth) == ("00189440", 11, 125000)
    assert ev.rx == (RxInfo(gateway_id="0016c001f153a14c", rssi=-36, snr=10.5,
                            uplink_id=4217106255),)
    # 2022-07-18T09:34:15.775023242Z = Unix 1658136855.775023242
    assert ev.time == pytest.approx(_gps(1658136855, 775023242))
    assert ev.gps_time() == ev.time  # no gateway timing: falls back to the event time
    assert ev.dedup_key == "up:3ac7e3c4-4401-4b8d-9386-a5c902f9202d"


def test_docs_other_examples() -> None:
    st_ = parse_event("status", _j(DOCS_STATUS), JSON)
    assert st_ == StatusEvent(
        dev_eui="0101010101010101", application_id=_DEV_INFO["applicationId"],
        device_name="Test device", time=st_.time,
        deduplication_id="bf2a9746-1c8b-49be-a92e-f0b89c8534e4", battery_level=pytest.approx(88.3),
        margin=10)
    join = parse_event("join", _j(DOCS_JOIN), JSON)
    assert isinstance(join, JoinEvent) and join.dev_addr == "00189440"
    ack = parse_event("ack", _j(DOCS_ACK), JSON)
    assert isinstance(ack, AckEvent)
    assert (ack.queue_item_id, ack.acknowledged, ack.f_cnt_down) == (
        "1bbcab1d-6ec6-4136-b3f5-d63be1dc08de", True, 3)
    tx = parse_event("txack", _j(DOCS_TXACK), JSON)
    assert isinstance(tx, TxAckEvent)
    assert (tx.downlink_id, tx.queue_item_id, tx.f_cnt_down, tx.gateway_id, tx.frequency) == (
        3461958127, "42cb6459-a640-46ec-9623-bdff39dc4736", 2, "0016c001f153a14c", 867900000)
    log = parse_event("log", _j(DOCS_LOG), JSON)
    assert isinstance(log, LogEvent)
    assert (log.level, log.code, log.dev_eui) == ("ERROR", "UPLINK_MIC", "0101010101010101")
    assert log.context == {"deduplication_id": "4e91db13-5ce3-4c8c-ab0f-dfc626cf0771"}
    assert log.dedup_key is None
    assert parse_event("location", _j(DOCS_LOCATION), JSON) is None
    assert parse_event("integration", _j({"integrationName": "x"}), JSON) is None


# ---------------------------------------------------------------------------------------
# The current (>= 4.1) layout: all integration-level scalars emitted, unset messages left out
# ---------------------------------------------------------------------------------------


def _full_uplink() -> I.UplinkEvent:
    return I.UplinkEvent(
        deduplication_id="5e1a2b3c-0000-4000-8000-00000000abcd",
        time=Timestamp(seconds=1_700_000_000, nanos=123_000_000),
        device_info=I.DeviceInfo(
            tenant_id="t", application_id="app-1", device_name="node-1",
            dev_eui="70B3D57ED0001234", device_class_enabled=common_pb2.CLASS_C,
            tags={"k": "v"}),
        dev_addr="01ABCDEF", adr=True, dr=5, f_cnt=4_000_000_000, f_port=202, confirmed=True,
        data=bytes([0x01, 0x10, 0x20, 0x30, 0x40, 0x10]),
        rx_info=[
            gw_pb2.UplinkRxInfo(
                gateway_id="0016c001f153a14c", uplink_id=1, rssi=-110, snr=-7.25, channel=2,
                gw_time=Timestamp(seconds=1_700_000_000, nanos=120_500_000),
                time_since_gps_epoch=Duration(seconds=1_384_035_218, nanos=120_500_000),
                crc_status=gw_pb2.CRC_OK, metadata={"region_config_id": "eu868"},
                context=b"\x01\x02\x03\x04"),
            gw_pb2.UplinkRxInfo(gateway_id="0016c001f153a14d", rssi=-90, snr=8.0,
                                gw_time=Timestamp(seconds=1_700_000_000, nanos=121_000_000)),
        ],
        tx_info=gw_pb2.UplinkTxInfo(
            frequency=868_100_000,
            modulation=gw_pb2.Modulation(lora=gw_pb2.LoraModulationInfo(
                bandwidth=125000, spreading_factor=7, code_rate=gw_pb2.CR_4_5))),
        region_config_id="eu868",
    )


def _full_messages() -> dict[str, object]:
    dev = I.DeviceInfo(application_id="app-1", device_name="node-1", dev_eui="70b3d57ed0001234")
    t = Timestamp(seconds=1_700_000_100, nanos=5_000)
    return {
        "up": _full_uplink(),
        "join": I.JoinEvent(deduplication_id="j-1", time=t, device_info=dev, dev_addr="01abcdef"),
        "status": I.StatusEvent(deduplication_id="s-1", time=t, device_info=dev, margin=-5,
                                battery_level=42.5),
        "ack": I.AckEvent(deduplication_id="a-1", time=t, device_info=dev, queue_item_id="q-1",
                          acknowledged=False, f_cnt_down=17),
        "txack": I.TxAckEvent(downlink_id=3_000_000_000, time=t, device_info=dev,
                              queue_item_id="q-2", f_cnt_down=18, gateway_id="0016C001F153A14C",
                              tx_info=gw_pb2.DownlinkTxInfo(frequency=869_525_000, power=14)),
        "log": I.LogEvent(time=t, device_info=dev, level=I.WARNING, code=I.UPLINK_F_CNT_RESET,
                          description="fcnt reset", context={"a": "b"}),
    }


def test_pbjson_layout_matches_chirpstack_conventions() -> None:
    """Sanity of the test's pbjson emulation against the documented form."""
    doc = to_pbjson(_full_uplink())
    assert doc["time"] == "2023-11-14T22:13:20.123+00:00"
    assert "object" not in doc and "relayRxInfo" not in doc and "joinServerContext" not in doc
    assert doc["regionConfigId"] == "eu868" and doc["deviceInfo"]["tenantName"] == ""
    assert doc["fCnt"] == 4_000_000_000 and doc["data"] == "ARAgMEAQ"
    rx0, rx1 = doc["rxInfo"]
    assert rx0["timeSinceGpsEpoch"] == "1384035218.120500s"
    assert rx0["crcStatus"] == "CRC_OK" and rx0["context"] == "AQIDBA=="
    assert "channel" not in rx1 and "timeSinceGpsEpoch" not in rx1  # nested: defaults omitted
    assert doc["txInfo"]["modulation"]["lora"]["codeRate"] == "CR_4_5"
    assert doc["deviceInfo"]["deviceClassEnabled"] == "CLASS_C"
    assert duration_pbjson(1, 0) == "1s" and rfc3339_chrono(0, 5) == "1970-01-01T00:00:00.000000005+00:00"


def test_null_sub_messages_accepted() -> None:
    doc = {**to_pbjson(_full_uplink()), "object": None, "relayRxInfo": None,
           "joinServerContext": None, "unknownFutureField": {"x": 1}}
    assert parse_event("up", _j(doc), JSON) == parse_event("up", _full_uplink().SerializeToString(), PB)


@pytest.mark.parametrize("event_type", ["up", "join", "status", "ack", "txack", "log"])
def test_json_and_protobuf_give_the_same_event(event_type: str) -> None:
    msg = _full_messages()[event_type]
    from_pb = parse_event(event_type, msg.SerializeToString(), PB)
    from_json = parse_event(event_type, _j(to_pbjson(msg)), JSON)
    # google's own JSON mapping (Z timestamps, defaults omitted) decodes the same too
    from_gjson = parse_event(event_type, json_format.MessageToJson(msg).encode(), JSON)
    assert from_pb == from_json == from_gjson
    assert from_pb is not None and from_pb.event_type == event_type


def test_full_uplink_values() -> None:
    ev = parse_event("up", _j(to_pbjson(_full_uplink())), "application/json; charset=utf-8")
    assert isinstance(ev, UplinkEvent)
    assert (ev.dev_eui, ev.dev_addr, ev.f_cnt, ev.f_port, ev.confirmed, ev.adr) == (
        "70b3d57ed0001234", "01abcdef", 4_000_000_000, 202, True, True)
    assert ev.rx[0].gps_time == pytest.approx(1_384_035_218.1205)
    assert ev.rx[0].time == pytest.approx(_gps(1_700_000_000, 120_500_000))
    assert ev.rx[1].gps_time is None
    assert ev.gps_time() == pytest.approx(1_384_035_218.1205)  # timeSinceGpsEpoch wins
    assert ev.best_rx().gateway_id == "0016c001f153a14d"


def test_gps_time_preference() -> None:
    msg = _full_uplink()
    for r in msg.rx_info:
        r.ClearField("time_since_gps_epoch")
    ev = parse_event("up", msg.SerializeToString(), PB)
    assert ev.gps_time() == pytest.approx(_gps(1_700_000_000, 120_500_000))  # first gwTime
    for r in msg.rx_info:
        r.ClearField("gw_time")
    ev = parse_event("up", msg.SerializeToString(), PB)
    assert ev.gps_time() == pytest.approx(_gps(1_700_000_000, 123_000_000))  # event time
    msg.ClearField("time")
    assert parse_event("up", msg.SerializeToString(), PB).gps_time() is None


def test_status_battery_level() -> None:
    dev = I.DeviceInfo(dev_eui="0101010101010101")
    ext = I.StatusEvent(deduplication_id="x", device_info=dev, margin=3, external_power_source=True)
    ev = parse_event("status", ext.SerializeToString(), PB)
    assert (ev.battery_level, ev.external_power_source, ev.margin) == (None, True, 3)
    na = I.StatusEvent(deduplication_id="x", device_info=dev, battery_level_unavailable=True)
    assert parse_event("status", _j(to_pbjson(na)), JSON).battery_level is None
    low = I.StatusEvent(deduplication_id="x", device_info=dev, battery_level=0.0)
    assert parse_event("status", low.SerializeToString(), PB).battery_level == 0.0


def test_dedup_keys_separate_event_types() -> None:
    msgs = _full_messages()
    up = parse_event("up", msgs["up"].SerializeToString(), PB)
    st_ = I.StatusEvent(deduplication_id=msgs["up"].deduplication_id,
                        device_info=msgs["up"].device_info)
    status = parse_event("status", st_.SerializeToString(), PB)
    assert up.dedup_key != status.dedup_key  # same uplink set id, different events
    tx = parse_event("txack", msgs["txack"].SerializeToString(), PB)
    assert tx.dedup_key == "txack:3000000000:q-2"


# ---------------------------------------------------------------------------------------
# Malformed input
# ---------------------------------------------------------------------------------------

_UP = to_pbjson(_full_uplink())
MALFORMED_JSON = [
    (b"{not json", "invalid JSON"),
    (b"[1, 2]", "not an object"),
    (b"\xff\xfe", "UTF-8"),
    (_j({**_UP, "fCnt": "x"}), "fCnt"),
    (_j({**_UP, "fCnt": -1}), "fCnt"),
    (_j({**_UP, "fPort": 1.5}), "fPort"),
    (_j({**_UP, "fPort": 300}), "fPort"),
    (_j({**_UP, "data": "!!not base64!!"}), "data"),
    (_j({**_UP, "data": "qg="}), "data"),
    (_j({**_UP, "data": 5}), "data"),
    (_j({**_UP, "time": "yesterday"}), "time"),
    (_j({**_UP, "rxInfo": {}}), "rxInfo"),
    (_j({**_UP, "deviceInfo": {**_UP["deviceInfo"], "devEui": "0101"}}), "deviceInfo.devEui"),
    (_j({**_UP, "deviceInfo": None}), "deviceInfo.devEui"),
    (_j({k: v for k, v in _UP.items() if k != "deviceInfo"}), "deviceInfo.devEui"),
    (b"[" * 100_000, "JSON"),
]


@pytest.mark.parametrize("body,field", MALFORMED_JSON, ids=lambda x: str(x)[:30])
def test_malformed_json_names_the_field(body: bytes, field: str) -> None:
    with pytest.raises(DecodeError) as ei:
        parse_event("up", body, JSON)
    assert field in str(ei.value)


def test_malformed_protobuf() -> None:
    with pytest.raises(DecodeError, match="Protobuf"):
        parse_event("up", b"\x0a\xff\xff\xff\xff\x0f", PB)  # length beyond the body
    with pytest.raises(DecodeError, match="deviceInfo.devEui"):
        parse_event("up", b"", PB)
    bad_port = _full_uplink()
    bad_port.f_port = 256
    with pytest.raises(DecodeError, match="fPort"):
        parse_event("up", bad_port.SerializeToString(), PB)


def test_unknown_type_and_content_type() -> None:
    with pytest.raises(DecodeError, match="unknown event type"):
        parse_event("upp", _j(DOCS_UP), JSON)
    with pytest.raises(DecodeError, match="content type"):
        parse_event("up", _j(DOCS_UP), "text/plain")
    with pytest.raises(DecodeError, match="invalid JSON"):
        parse_event("integration", b"{", JSON)
    assert encoding_of("Application/JSON; charset=utf-8") == "json"
    assert encoding_of("application/x-protobuf") == "protobuf"


@settings(max_examples=300, derandomize=True, deadline=None)
@given(body=st.binary(max_size=200),
       event_type=st.sampled_from(["up", "join", "status", "ack", "txack", "log", "location"]),
       content_type=st.sampled_from([JSON, PB]))
def test_random_bodies_only_raise_decode_error(body: bytes, event_type: str, content_type: str) -> None:
    try:
        parse_event(event_type, body, content_type)
    except DecodeError:
        pass


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    f_port=st.integers(0, 255), f_cnt=st.integers(0, 2**32 - 1), data=st.binary(max_size=64),
    dr=st.integers(0, 15), rssi=st.integers(-140, 0), snr=st.floats(-20, 15, width=32),
    secs=st.integers(0, 2**33), nanos=st.integers(0, 999_999_999),
    with_gps=st.booleans(), confirmed=st.booleans(),
)
def test_uplink_roundtrip_property(f_port, f_cnt, data, dr, rssi, snr, secs, nanos, with_gps,
                                   confirmed) -> None:
    msg = I.UplinkEvent(
        deduplication_id="d", device_info=I.DeviceInfo(dev_eui="0011223344556677"),
        f_port=f_port, f_cnt=f_cnt, data=data, dr=dr, confirmed=confirmed,
        time=Timestamp(seconds=secs, nanos=nanos),
        rx_info=[gw_pb2.UplinkRxInfo(gateway_id="aa", rssi=rssi, snr=snr)],
    )
    if with_gps:
        msg.rx_info[0].time_since_gps_epoch.CopyFrom(Duration(seconds=secs, nanos=nanos))
    a = parse_event("up", msg.SerializeToString(), PB)
    b = parse_event("up", _j(to_pbjson(msg)), JSON)
    assert a == b
    assert (a.f_port, a.f_cnt, a.data, a.dr, a.confirmed) == (f_port, f_cnt, data, dr, confirmed)
    assert a.rx[0].snr == pytest.approx(snr)
    if with_gps:
        assert a.gps_time() == pytest.approx(secs + nanos * 1e-9)
    assert base64.b64encode(data).decode() == to_pbjson(msg)["data"]
