"""proxyota's own view of ChirpStack integration events, and their decoders.

The dataclasses here are transport-neutral: the HTTP integration receiver
(:mod:`proxyota.chirpstack.integration`) produces them today, an MQTT integration
(topics ``application/{app}/device/{dev_eui}/event/{type}``, same payloads) can produce the
same ones later by calling :func:`parse_event` with the topic's event type.

Wire formats (ChirpStack v4, ``chirpstack/src/integration/http.rs``): the body is either the
Protobuf encoding of the ``integration.*Event`` message (``Content-Type:
application/octet-stream``) or its JSON form (``application/json``) as produced by
``pbjson`` with ``emit_fields`` for the ``integration`` package: camelCase names, scalar /
enum / repeated / map fields of ``integration`` messages present even when default
(ChirpStack < 4.1 omitted them), unset sub-messages left out (``null`` is accepted too),
bytes as standard base64, enums by name, 64-bit integers as strings, timestamps as
RFC 3339 (``...+00:00``), durations as ``"1234.5s"``; nested ``gw``/``common`` messages
omit their default values. Both are decoded through the ``chirpstack_api.integration``
messages (JSON via ``google.protobuf.json_format``, ignoring unknown fields so newer
ChirpStack versions still parse) and then checked.

Times are GPS seconds (floats) like everywhere in proxyota; ``dev_eui`` is 16 lowercase
hex digits. Anything malformed raises :class:`~proxyota.errors.DecodeError` naming the
field.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Union

from chirpstack_api import integration as _pb
from google.protobuf import json_format
from google.protobuf.message import DecodeError as _PbDecodeError
from google.protobuf.message import Message

from proxyota.clock import unix_to_gps
from proxyota.errors import DecodeError

__all__ = [
    "AckEvent",
    "DELIVERED_EVENT_TYPES",
    "Event",
    "IGNORED_EVENT_TYPES",
    "JoinEvent",
    "LogEvent",
    "RxInfo",
    "StatusEvent",
    "TxAckEvent",
    "UplinkEvent",
    "encoding_of",
    "parse_event",
]

_EUI_RE = re.compile(r"^[0-9a-fA-F]{16}$")
_B64_RE = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")


# --------------------------------------------------------------------------------------
# Event dataclasses
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RxInfo:
    """One gateway's reception of an uplink.

    ``gps_time``: the gateway's GPS time of reception (``timeSinceGpsEpoch``), ``time``: the
    gateway's own reception timestamp (``gwTime``, converted to GPS seconds); either is
    ``None`` when the gateway did not report it.
    """

    gateway_id: str
    rssi: int
    snr: float
    gps_time: float | None = None
    time: float | None = None
    channel: int = 0
    uplink_id: int = 0


@dataclass(frozen=True, kw_only=True)
class _DeviceEvent:
    event_type: ClassVar[str] = ""

    dev_eui: str
    application_id: str = ""
    device_name: str = ""
    time: float | None = None  # GPS seconds (ChirpStack's event time)

    @property
    def dedup_key(self) -> str | None:
        """Identity of this event for duplicate suppression (``None``: never a duplicate)."""
        dedup = getattr(self, "deduplication_id", "")
        return f"{self.event_type}:{dedup}" if dedup else None


@dataclass(frozen=True, kw_only=True)
class UplinkEvent(_DeviceEvent):
    """``up``: an application uplink (fPort 200-203 feed the FUOTA session machine)."""

    event_type: ClassVar[str] = "up"

    deduplication_id: str
    f_port: int
    f_cnt: int
    data: bytes
    dr: int = 0
    frequency: int = 0
    rx: tuple[RxInfo, ...] = ()
    confirmed: bool = False
    adr: bool = False
    dev_addr: str = ""
    spreading_factor: int | None = None
    bandwidth: int | None = None

    def gps_time(self) -> float | None:
        """Best GPS time of reception: a gateway's ``timeSinceGpsEpoch``, else a gateway's
        ``gwTime``, else ChirpStack's event time (the order ChirpStack itself uses for TS003,
        ``uplink/helpers.rs``); ``None`` if none is known."""
        for rx in self.rx:
            if rx.gps_time is not None:
                return rx.gps_time
        for rx in self.rx:
            if rx.time is not None:
                return rx.time
        return self.time

    def best_rx(self) -> RxInfo | None:
        """The reception with the highest SNR (then RSSI), or ``None``."""
        return max(self.rx, key=lambda r: (r.snr, r.rssi), default=None)


@dataclass(frozen=True, kw_only=True)
class JoinEvent(_DeviceEvent):
    """``join``: the device (re)joined; its sessions with us are gone."""

    event_type: ClassVar[str] = "join"

    deduplication_id: str
    dev_addr: str = ""


@dataclass(frozen=True, kw_only=True)
class StatusEvent(_DeviceEvent):
    """``status``: DevStatusAns. ``battery_level`` is a percentage, ``None`` when the device
    runs on external power or cannot measure it (ChirpStack then sends 0)."""

    event_type: ClassVar[str] = "status"

    deduplication_id: str
    battery_level: float | None
    margin: int
    external_power_source: bool = False
    battery_level_unavailable: bool = False


@dataclass(frozen=True, kw_only=True)
class AckEvent(_DeviceEvent):
    """``ack``: a confirmed downlink was (n)acked by the device."""

    event_type: ClassVar[str] = "ack"

    deduplication_id: str
    queue_item_id: str
    acknowledged: bool
    f_cnt_down: int


@dataclass(frozen=True, kw_only=True)
class TxAckEvent(_DeviceEvent):
    """``txack``: a gateway transmitted a unicast downlink (multicast has none)."""

    event_type: ClassVar[str] = "txack"

    queue_item_id: str
    f_cnt_down: int
    downlink_id: int = 0
    gateway_id: str = ""
    frequency: int = 0

    @property
    def dedup_key(self) -> str | None:
        if self.downlink_id:
            return f"txack:{self.downlink_id}:{self.queue_item_id}"
        return f"txack:{self.queue_item_id}" if self.queue_item_id else None


@dataclass(frozen=True, kw_only=True)
class LogEvent(_DeviceEvent):
    """``log``: an error / warning / info ChirpStack reports about a device.

    ``level`` and ``code`` are the ``integration.LogLevel`` / ``LogCode`` names (a number as
    a string if this library does not know it); ``dev_eui`` is ``""`` when ChirpStack gave
    no device."""

    event_type: ClassVar[str] = "log"

    level: str
    code: str
    description: str
    context: Mapping[str, str] = field(default_factory=dict, hash=False)


Event = Union[UplinkEvent, JoinEvent, StatusEvent, AckEvent, TxAckEvent, LogEvent]

#: event types decoded into an :data:`Event` and handed to the handler
DELIVERED_EVENT_TYPES: dict[str, type[Message]] = {
    "up": _pb.UplinkEvent,
    "join": _pb.JoinEvent,
    "status": _pb.StatusEvent,
    "ack": _pb.AckEvent,
    "txack": _pb.TxAckEvent,
    "log": _pb.LogEvent,
}
#: event types ChirpStack sends that proxyota has no use for (checked, then ignored);
#: ``integration`` has no message in chirpstack-api 4.20's Python package.
IGNORED_EVENT_TYPES: dict[str, type[Message] | None] = {
    "location": _pb.LocationEvent,
    "integration": None,
}


# --------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------


def encoding_of(content_type: str | None) -> str:
    """``"json"`` or ``"protobuf"`` for a Content-Type header value; DecodeError otherwise."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime == "application/json":
        return "json"
    if mime in ("application/octet-stream", "application/protobuf", "application/x-protobuf"):
        return "protobuf"
    raise DecodeError(
        f"unsupported content type {content_type!r} (expected application/json or "
        "application/octet-stream)",
        command="content type",
    )


def parse_event(event_type: str, body: bytes, content_type: str) -> Event | None:
    """Decode one integration event.

    Returns the event, or ``None`` for a known ChirpStack event type proxyota ignores
    (``location``, ``integration``; the body is still checked where a message exists).
    Raises :class:`DecodeError` for an unknown event type, an unsupported content type or a
    malformed body, naming the field at fault.
    """
    encoding = encoding_of(content_type)
    if event_type in DELIVERED_EVENT_TYPES:
        msg_cls: type[Message] | None = DELIVERED_EVENT_TYPES[event_type]
    elif event_type in IGNORED_EVENT_TYPES:
        msg_cls = IGNORED_EVENT_TYPES[event_type]
    else:
        raise DecodeError(f"unknown event type {event_type!r}", command="event")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise DecodeError("body is not bytes", command=event_type)
    body = bytes(body)
    if msg_cls is None:  # nothing to decode against; a JSON body must still be JSON
        if encoding == "json":
            _load_json_object(body, event_type)
        return None
    msg = _decode_message(msg_cls, body, encoding, event_type)
    if event_type in IGNORED_EVENT_TYPES:
        return None
    return _CONVERTERS[event_type](msg)


def _load_json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DecodeError(f"JSON body is not UTF-8 (byte {e.start})", command=what) from None
    except (ValueError, RecursionError) as e:
        raise DecodeError(f"invalid JSON: {e}", command=what) from None
    if not isinstance(obj, dict):
        raise DecodeError(f"JSON body is a {type(obj).__name__}, not an object", command=what)
    return obj


def _check_base64(value: Any, name: str, what: str) -> None:
    """json_format decodes base64 leniently (skipping junk); ChirpStack sends strict
    standard base64, so reject anything that is not (padding optional, URL-safe allowed
    as protobuf's JSON mapping does)."""
    if value is None:
        return
    if not isinstance(value, str):
        raise DecodeError(f"{name}: expected a base64 string, got {type(value).__name__}",
                          command=what)
    s = value.rstrip("=")
    if not _B64_RE.match(value) or len(s) % 4 == 1 or len(value) - len(s) > 2:
        raise DecodeError(f"{name}: invalid base64 {value[:40]!r}", command=what)
    if len(value) != len(s) and len(value) % 4:
        raise DecodeError(f"{name}: invalid base64 padding {value[:40]!r}", command=what)
    try:
        base64.urlsafe_b64decode(s.replace("+", "-").replace("/", "_") + "=" * (-len(s) % 4))
    except (binascii.Error, ValueError):
        raise DecodeError(f"{name}: invalid base64 {value[:40]!r}", command=what) from None


def _decode_message(msg_cls: type[Message], body: bytes, encoding: str, what: str) -> Message:
    msg = msg_cls()
    name = msg_cls.DESCRIPTOR.name
    if encoding == "json":
        obj = _load_json_object(body, what)
        if "data" in obj:
            _check_base64(obj["data"], "data", f"{name} JSON")
        try:
            json_format.ParseDict(obj, msg, ignore_unknown_fields=True)
        except json_format.ParseError as e:
            raise DecodeError(str(e), command=f"{name} JSON") from None
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
            raise DecodeError(f"{type(e).__name__}: {e}", command=f"{name} JSON") from None
    else:
        try:
            msg.ParseFromString(body)
        except (_PbDecodeError, ValueError, RecursionError) as e:
            raise DecodeError(f"invalid Protobuf: {e}", command=name) from None
    return msg


def _timestamp(msg: Message, field_name: str) -> float | None:
    if not msg.HasField(field_name):
        return None
    ts = getattr(msg, field_name)
    return unix_to_gps(ts.seconds + ts.nanos * 1e-9)


def _duration(msg: Message, field_name: str) -> float | None:
    if not msg.HasField(field_name):
        return None
    d = getattr(msg, field_name)
    return d.seconds + d.nanos * 1e-9


def _device(msg: Message, what: str, *, required: bool = True) -> dict[str, Any]:
    info = msg.device_info  # type: ignore[attr-defined]
    dev_eui = info.dev_eui
    if not dev_eui and not required:
        return {"dev_eui": "", "application_id": info.application_id,
                "device_name": info.device_name}
    if not _EUI_RE.match(dev_eui):
        raise DecodeError(
            f"deviceInfo.devEui: expected 16 hex digits, got {dev_eui!r}", command=what
        )
    return {
        "dev_eui": dev_eui.lower(),
        "application_id": info.application_id,
        "device_name": info.device_name,
        "time": _timestamp(msg, "time"),
    }


def _u8(value: int, name: str, what: str) -> int:
    if not 0 <= value <= 255:
        raise DecodeError(f"{name}: {value} out of range 0..255", command=what)
    return value


def _enum_name(enum: Any, value: int) -> str:
    try:
        return str(enum.Name(value))
    except ValueError:
        return str(value)


def _uplink(msg: Any) -> UplinkEvent:
    what = "UplinkEvent"
    rx = []
    for i, r in enumerate(msg.rx_info):
        rx.append(
            RxInfo(
                gateway_id=r.gateway_id.lower(),
                rssi=r.rssi,
                snr=r.snr,
                gps_time=_duration(r, "time_since_gps_epoch"),
                time=_timestamp(r, "gw_time"),
                channel=r.channel,
                uplink_id=r.uplink_id,
            )
        )
    sf = bw = None
    tx = msg.tx_info
    if msg.HasField("tx_info") and tx.HasField("modulation") and tx.modulation.HasField("lora"):
        sf = tx.modulation.lora.spreading_factor
        bw = tx.modulation.lora.bandwidth
    return UplinkEvent(
        **_device(msg, what),
        deduplication_id=msg.deduplication_id,
        f_port=_u8(msg.f_port, "fPort", what),
        f_cnt=msg.f_cnt,
        data=bytes(msg.data),
        dr=_u8(msg.dr, "dr", what),
        frequency=tx.frequency,
        rx=tuple(rx),
        confirmed=msg.confirmed,
        adr=msg.adr,
        dev_addr=msg.dev_addr.lower(),
        spreading_factor=sf,
        bandwidth=bw,
    )


def _join(msg: Any) -> JoinEvent:
    return JoinEvent(
        **_device(msg, "JoinEvent"),
        deduplication_id=msg.deduplication_id,
        dev_addr=msg.dev_addr.lower(),
    )


def _status(msg: Any) -> StatusEvent:
    no_level = msg.battery_level_unavailable or msg.external_power_source
    return StatusEvent(
        **_device(msg, "StatusEvent"),
        deduplication_id=msg.deduplication_id,
        battery_level=None if no_level else float(msg.battery_level),
        margin=msg.margin,
        external_power_source=msg.external_power_source,
        battery_level_unavailable=msg.battery_level_unavailable,
    )


def _ack(msg: Any) -> AckEvent:
    return AckEvent(
        **_device(msg, "AckEvent"),
        deduplication_id=msg.deduplication_id,
        queue_item_id=msg.queue_item_id,
        acknowledged=msg.acknowledged,
        f_cnt_down=msg.f_cnt_down,
    )


def _txack(msg: Any) -> TxAckEvent:
    return TxAckEvent(
        **_device(msg, "TxAckEvent"),
        queue_item_id=msg.queue_item_id,
        f_cnt_down=msg.f_cnt_down,
        downlink_id=msg.downlink_id,
        gateway_id=msg.gateway_id.lower(),
        frequency=msg.tx_info.frequency,
    )


def _log(msg: Any) -> LogEvent:
    dev = _device(msg, "LogEvent", required=False)
    dev["time"] = _timestamp(msg, "time")
    return LogEvent(
        **dev,
        level=_enum_name(_pb.LogLevel, msg.level),
        code=_enum_name(_pb.LogCode, msg.code),
        description=msg.description,
        context=dict(msg.context),
    )


_CONVERTERS = {
    "up": _uplink,
    "join": _join,
    "status": _status,
    "ack": _ack,
    "txack": _txack,
    "log": _log,
}
