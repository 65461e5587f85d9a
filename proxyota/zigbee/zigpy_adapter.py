"""zigpy adapter of the Zigbee OTA server: the OTA Upgrade cluster (0x0019) of a campaign's
nodes on a zigpy ``ControllerApplication``, answered by proxyota instead of zigpy.

Interception point. Every radio library (bellows, zigpy-znp, zigpy-deconz, ..., and the
emulated mesh of ``radio_emulators``) hands each inbound frame to
``ControllerApplication.packet_received(packet)``. :meth:`ZigpyOtaAdapter.attach` puts a
filter in front of it (an attribute of that one application object, removed by
:meth:`~ZigpyOtaAdapter.detach`): a *cluster-specific, client-to-server* OTA cluster command
(profile HA 0x0104 or ZLL 0xC05E) from a node of the campaign is taken out of zigpy's path
and handed, raw (ZCL header split off, payload untouched), to the ``on_request`` callback;
every other frame goes on to zigpy unchanged. zigpy therefore never sees those requests:
its ``Ota`` cluster handler (which answers QueryNextImage with NO_IMAGE_AVAILABLE and
ImageBlock with ABORT when no zigpy OTA runs), its ``OTAManager`` listeners and its
default-response logic stay silent for them, so each request gets exactly the one answer
the server gives. As a second guard the adapter sets zigpy's own ``device.ota_in_progress``
on the campaign's devices while attached: a ``Device.update_firmware`` started on one of
them returns at once ("OTA already in progress") instead of racing the campaign, and zigpy
does not re-interview them mid-download. Requests that zigpy itself would drop are dropped
too (unknown source address, truncated ZCL header), except that malformed *payloads* now
reach the server, which answers MALFORMED_COMMAND (zigpy drops them silently).

What zigpy still does for these frames: the adapter updates the device's ``last_seen``,
LQI and RSSI as zigpy's own packet path would, so availability tracking keeps working.
Duplicates (the same APS frame delivered twice: same APS counter and bytes within
``duplicate_window_s``) are answered once; a client's retry is a new APS frame and gets
its own answer.

Sending. :meth:`ZigpyOtaAdapter.send` executes the server's actions through zigpy's request
API: a :class:`~proxyota.zigbee.ota_server.Reply` becomes one ``app.request(...)`` (unicast,
NWK addressing, APS ACK unless asked otherwise, e.g. for page-train blocks; no retries of
ours: the OTA client drives retries) from the
endpoint the request was sent to, to the endpoint it came from, with the request's TSN, the
server-to-client direction and Disable Default Response set (cluster-specific command, or a
global Default Response); ImageBlockResponses go at zigpy's LOW priority like zigpy's own
OTA, so interactive traffic overtakes them. A :class:`~proxyota.zigbee.ota_server.Notify`
is a unicast ImageNotify to the node's OTA client endpoint, or an ``app.broadcast`` to
0xFFFF (all devices, so sleepy ones get it from their parent), endpoint 0xFF.

APS payload: the most a node's unsolicited frames may carry comes from the radio when it
says (EZSP ``maximumPayloadLength`` on bellows, :func:`probe_aps_max_payload`), else from
the configuration (default 82 bytes: 127-byte PSDU minus MAC, NWK + security and APS
headers), minus the NWK source-route subframe (2 + 2 x relays bytes) when zigpy source
routing is on and the device has relays.

Real radios. :class:`RadioConfig` names the radio type (``ezsp`` by default: bellows;
``znp``, ``deconz``, ``zigate``, ``xbee`` when their zigpy radio library is installed),
serial port, baudrate and flow control; :func:`zigpy_config` turns it into the zigpy
configuration (validated by the radio library's own schema) and :func:`open_radio` starts
the radio the way zigpy's users do (``await AppClass.new(config, auto_form=False,
start_radio=True)``). No test here runs against real hardware; the configuration and its
validation are tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from proxyota.errors import InvalidArgument
from proxyota.zigbee.ota_server import Notify, Reply
from proxyota.zigbee.zcl_ota import CLUSTER_ID, CommandId

__all__ = [
    "DEFAULT_APS_MAX_PAYLOAD",
    "HA_PROFILE",
    "RADIO_TYPES",
    "AdapterStats",
    "OtaRequest",
    "RadioConfig",
    "RadioType",
    "ZigpyOtaAdapter",
    "device_class_of",
    "open_radio",
    "probe_aps_max_payload",
    "radio_application_class",
    "zigpy_config",
]

log = logging.getLogger("proxyota.zigbee.zigpy")

HA_PROFILE = 0x0104
ZLL_PROFILE = 0xC05E
#: 127-byte PSDU - MAC 11 - NWK 8 - NWK security 18 - APS 8 (no APS encryption, no source route)
DEFAULT_APS_MAX_PAYLOAD = 82
BROADCAST_ALL_DEVICES = 0xFFFF
BROADCAST_ENDPOINT = 0xFF
BROADCAST_RADIUS = 30

# ZCL frame control bits
_FC_FRAME_TYPE = 0x03
_FC_CLUSTER_SPECIFIC = 0x01
_FC_MANUFACTURER = 0x04
_FC_SERVER_TO_CLIENT = 0x08
_FC_DISABLE_DEFAULT_RESPONSE = 0x10


# -- inbound -------------------------------------------------------------------------


@dataclass(frozen=True)
class OtaRequest:
    """One OTA cluster command a campaign node sent, as the server wants it."""

    ieee: str  # zigpy's text form, "00:0d:6f:..."
    nwk: int
    command_id: int
    payload: bytes  # after the ZCL header
    tsn: int
    manufacturer_code: int | None  # the ZCL header's, when manufacturer specific
    src_ep: int  # the node's endpoint
    dst_ep: int  # ours
    profile_id: int
    aps_max_payload: int
    aps_counter: int | None = None


@dataclass
class AdapterStats:
    requests: int = 0  # OTA requests taken from zigpy's path
    duplicates: int = 0
    passed_to_zigpy: int = 0  # OTA cluster frames left to zigpy (other nodes, other commands)
    replies: int = 0
    notifies: int = 0
    broadcasts: int = 0
    send_errors: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "duplicates": self.duplicates,
            "passed_to_zigpy": self.passed_to_zigpy,
            "replies": self.replies,
            "notifies": self.notifies,
            "broadcasts": self.broadcasts,
            "send_errors": self.send_errors,
        }


def device_class_of(device: Any) -> str | None:
    """The server's device class of a zigpy device from its node descriptor: ``router``,
    ``end_device`` (receiver on when idle) or ``sleepy``; None when unknown."""
    desc = getattr(device, "node_desc", None)
    if desc is None:
        return None
    try:
        if not desc.is_end_device:
            return "router"
        return "end_device" if desc.is_receiver_on_when_idle else "sleepy"
    except AttributeError:
        return None


class ZigpyOtaAdapter:
    """Serve the OTA cluster of ``targets`` on ``app`` (see the module docstring).

    ``on_request(OtaRequest)`` is called synchronously from zigpy's receive path (inside
    whatever the radio library runs it in); it must not block: schedule the work.
    ``aps_max_payload``: bytes, or a callable ``(device) -> bytes``; the default also
    subtracts the source-route subframe when zigpy source routing is on.
    ``now``: the clock used for duplicate detection (seconds).
    """

    def __init__(
        self,
        app: Any,
        *,
        targets: Iterable[str],
        on_request: Callable[[OtaRequest], None],
        aps_max_payload: int | Callable[[Any], int] = DEFAULT_APS_MAX_PAYLOAD,
        now: Callable[[], float] = time.monotonic,
        duplicate_window_s: float = 10.0,
        block_priority: int | None = None,
    ) -> None:
        if not callable(on_request):
            raise InvalidArgument("on_request must be callable")
        if isinstance(aps_max_payload, int) and not isinstance(aps_max_payload, bool):
            if not 20 <= aps_max_payload <= 127:
                raise InvalidArgument(f"aps_max_payload must be 20..127 bytes, got {aps_max_payload}")
        elif not callable(aps_max_payload):
            raise InvalidArgument("aps_max_payload must be an int or a callable")
        self.app = app
        self.on_request = on_request
        self._aps = aps_max_payload
        self._now = now
        self.duplicate_window_s = float(duplicate_window_s)
        self.targets: set[str] = {_ieee_text(t) for t in targets}
        self.stats = AdapterStats()
        self._attached = False
        self._zigpy_receive: Callable[[Any], None] | None = None
        self._endpoints: dict[str, tuple[int, int, int]] = {}  # ieee -> (node ep, our ep, profile)
        self._recent: dict[tuple[str, int | None, bytes], float] = {}
        self._flagged: dict[str, Any] = {}  # ieee -> device whose ota_in_progress we set
        if block_priority is None:
            import zigpy.types as zt

            block_priority = int(zt.PacketPriority.LOW)
        self._block_priority = block_priority

    # -- attachment ----------------------------------------------------------------------
    @property
    def attached(self) -> bool:
        return self._attached

    def attach(self) -> None:
        """Take the campaign nodes' OTA requests out of zigpy's receive path."""
        if self._attached:
            return
        current = self.app.__dict__.get("packet_received")
        if getattr(current, "__self__", None) is self:
            self._attached = True  # re-attached after a detach that could not unhook
            self._flag_devices()
            return
        self._zigpy_receive = self.app.packet_received  # bound method (or someone's wrapper)
        self.app.packet_received = self._packet_received
        self._attached = True
        self._flag_devices()

    def detach(self) -> None:
        """Give everything back to zigpy."""
        if not self._attached:
            return
        self._attached = False
        if self.app.__dict__.get("packet_received") == self._packet_received:
            if self._zigpy_receive is not None and getattr(self._zigpy_receive, "__self__", None) is self.app \
                    and getattr(self._zigpy_receive, "__func__", None) is getattr(type(self.app), "packet_received"):
                del self.app.packet_received  # the class's method again
            else:
                self.app.packet_received = self._zigpy_receive
        # else: someone wrapped us since; we stay in the chain as a pass-through
        for device in self._flagged.values():
            device.ota_in_progress = False
        self._flagged.clear()

    def add_targets(self, ieees: Iterable[str]) -> None:
        for ieee in ieees:
            self.targets.add(_ieee_text(ieee))
        if self._attached:
            self._flag_devices()

    def _flag_devices(self) -> None:
        for ieee in self.targets:
            device = self.device(ieee)
            if device is None or ieee in self._flagged:
                continue
            if not getattr(device, "ota_in_progress", False):
                device.ota_in_progress = True
                self._flagged[ieee] = device

    # -- look-ups ------------------------------------------------------------------------
    def device(self, ieee: str) -> Any | None:
        import zigpy.types as zt

        try:
            return self.app.get_device(ieee=zt.EUI64.convert(ieee))
        except (KeyError, ValueError):
            return None

    def aps_max_payload(self, device: Any) -> int:
        if callable(self._aps):
            return int(self._aps(device))
        value = int(self._aps)
        import zigpy.config as zc

        relays = getattr(device, "relays", None)
        try:
            source_routing = bool(self.app.config.get(zc.CONF_SOURCE_ROUTING, False))
        except AttributeError:
            source_routing = False
        if source_routing and relays:
            value -= 2 + 2 * len(relays)  # NWK source route subframe: count, index, relay list
        return value

    # -- receiving -----------------------------------------------------------------------
    def _packet_received(self, packet: Any) -> None:
        taken = False
        if self._attached:
            try:
                taken = self._maybe_take(packet)
            except Exception as exc:  # never break zigpy's receive path
                self.stats.errors.append(f"receive: {exc!r}")
                log.exception("OTA request handling failed")
                taken = True
        if not taken:
            if int(getattr(packet, "cluster_id", -1)) == CLUSTER_ID:
                self.stats.passed_to_zigpy += 1
            assert self._zigpy_receive is not None
            self._zigpy_receive(packet)

    def _maybe_take(self, packet: Any) -> bool:
        if int(packet.cluster_id) != CLUSTER_ID or int(packet.profile_id) not in (HA_PROFILE, ZLL_PROFILE):
            return False
        data = packet.data.serialize()
        if len(data) < 3:
            return False
        fc = data[0]
        if fc & _FC_FRAME_TYPE != _FC_CLUSTER_SPECIFIC or fc & _FC_SERVER_TO_CLIENT:
            return False
        try:
            device = self.app.get_device_with_address(packet.src)
        except (KeyError, ValueError):
            return False
        ieee = str(device.ieee)
        if ieee not in self.targets:
            return False
        if fc & _FC_MANUFACTURER:
            if len(data) < 5:
                return False
            manufacturer: int | None = int.from_bytes(data[1:3], "little")
            tsn, command_id, payload = data[3], data[4], data[5:]
        else:
            manufacturer = None
            tsn, command_id, payload = data[1], data[2], data[3:]
        self._touch(device, packet)
        now = self._now()
        key = (ieee, getattr(packet, "tsn", None), bytes(data))
        seen = self._recent.get(key)
        if seen is not None and now - seen < self.duplicate_window_s:
            self.stats.duplicates += 1
            return True
        self._recent[key] = now
        if len(self._recent) > 4096:
            self._recent = {k: v for k, v in self._recent.items() if now - v < self.duplicate_window_s}
        src_ep = int(packet.src_ep or 0)
        dst_ep = int(packet.dst_ep or 0)
        self._endpoints[ieee] = (src_ep, dst_ep, int(packet.profile_id))
        self.stats.requests += 1
        self.on_request(OtaRequest(
            ieee=ieee, nwk=int(device.nwk), command_id=command_id, payload=bytes(payload), tsn=tsn,
            manufacturer_code=manufacturer, src_ep=src_ep, dst_ep=dst_ep, profile_id=int(packet.profile_id),
            aps_max_payload=self.aps_max_payload(device), aps_counter=getattr(packet, "tsn", None),
        ))
        return True

    @staticmethod
    def _touch(device: Any, packet: Any) -> None:
        """What zigpy's own packet path records for any frame."""
        stamp = getattr(packet, "timestamp", None)
        if stamp is not None:
            device.last_seen = stamp
        if getattr(packet, "lqi", None) is not None:
            device.lqi = packet.lqi
        if getattr(packet, "rssi", None) is not None:
            device.rssi = packet.rssi

    # -- sending -------------------------------------------------------------------------
    def _endpoints_for(self, ieee: str, device: Any) -> tuple[int, int, int]:
        known = self._endpoints.get(ieee)
        if known is not None:
            return known
        for ep_id, ep in getattr(device, "endpoints", {}).items():
            if ep_id == 0:
                continue
            if CLUSTER_ID in getattr(ep, "out_clusters", {}):
                profile = getattr(ep, "profile_id", None) or HA_PROFILE
                return int(ep_id), 1, int(profile)
        return 1, 1, HA_PROFILE

    @staticmethod
    def frame(reply: Reply | Notify, tsn: int, manufacturer_code: int | None = None) -> bytes:
        """The ZCL frame of a server action: header (server to client, no default
        response) + payload."""
        general = isinstance(reply, Reply) and reply.general
        command_id = reply.command_id if isinstance(reply, Reply) else int(CommandId.IMAGE_NOTIFY)
        fc = (0 if general else _FC_CLUSTER_SPECIFIC) | _FC_SERVER_TO_CLIENT | _FC_DISABLE_DEFAULT_RESPONSE
        header = bytearray([fc])
        if manufacturer_code is not None:
            header[0] |= _FC_MANUFACTURER
            header += manufacturer_code.to_bytes(2, "little")
        header += bytes([tsn & 0xFF, command_id & 0xFF])
        return bytes(header) + bytes(reply.payload)

    async def send(self, action: Reply | Notify, *, manufacturer_code: int | None = None, ack: bool = True) -> bool:
        """Transmit one server action; False (counted, logged) when the radio could not.
        ``ack``: ask for an APS ACK (the send then completes when the node's stack
        acknowledged it); without, it completes at the first hop."""
        try:
            if isinstance(action, Reply):
                await self._send_reply(action, manufacturer_code, ack)
                self.stats.replies += 1
            elif isinstance(action, Notify):
                await self._send_notify(action)
            else:
                raise InvalidArgument(f"cannot send {type(action).__name__}")
            return True
        except InvalidArgument:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # DeliveryError, ControllerException, radio gone...
            self.stats.send_errors += 1
            if len(self.stats.errors) < 100:
                self.stats.errors.append(f"{type(action).__name__} to {getattr(action, 'ieee', None)}: {exc}")
            log.debug("send failed: %s", exc)
            return False

    async def _send_reply(self, reply: Reply, manufacturer_code: int | None, ack: bool = True) -> None:
        device = self.device(reply.ieee)
        if device is None:
            raise LookupError(f"zigpy does not know device {reply.ieee}")
        node_ep, our_ep, profile = self._endpoints_for(reply.ieee, device)
        tsn = reply.tsn if reply.tsn is not None else self.app.get_sequence()
        data = self.frame(reply, tsn, manufacturer_code)
        import zigpy.types as zt

        block = not reply.general and reply.command_id == CommandId.IMAGE_BLOCK_RESPONSE
        priority = self._block_priority if block else int(zt.PacketPriority.NORMAL)
        await self.app.request(device, profile, CLUSTER_ID, our_ep, node_ep, tsn, data,
                               expect_reply=False, ask_for_ack=ack, priority=priority)

    async def _send_notify(self, notify: Notify) -> None:
        tsn = self.app.get_sequence()
        data = self.frame(notify, tsn)
        if notify.ieee is None:
            import zigpy.types as zt

            await self.app.broadcast(HA_PROFILE, CLUSTER_ID, 1, BROADCAST_ENDPOINT, 0, BROADCAST_RADIUS, tsn, data,
                                     broadcast_address=zt.BroadcastAddress.ALL_DEVICES)
            self.stats.broadcasts += 1
            return
        device = self.device(notify.ieee)
        if device is None:
            raise LookupError(f"zigpy does not know device {notify.ieee}")
        node_ep, our_ep, profile = self._endpoints_for(notify.ieee, device)
        await self.app.request(device, profile, CLUSTER_ID, our_ep, node_ep, tsn, data, expect_reply=False)
        self.stats.notifies += 1


def _ieee_text(value: Any) -> str:
    text = str(value).lower()
    digits = text.replace(":", "")
    if len(digits) != 16 or any(c not in "0123456789abcdef" for c in digits):
        raise InvalidArgument(f"not an IEEE address: {value!r}")
    return ":".join(digits[i:i + 2] for i in range(0, 16, 2))


async def probe_aps_max_payload(app: Any) -> int | None:
    """The radio's maximum APS payload, when the radio library can tell (bellows: EZSP
    ``maximumPayloadLength``, which accounts for the security level in use); else None."""
    ezsp = getattr(app, "_ezsp", None)
    if ezsp is None:
        return None
    try:
        result = await ezsp.maximumPayloadLength()
    except Exception as exc:  # not connected, command unknown to this firmware...
        log.debug("maximumPayloadLength failed: %s", exc)
        return None
    value = result[0] if isinstance(result, (list, tuple)) else result
    try:
        value = int(value)
    except (TypeError, ValueError):
        return None
    return value if 20 <= value <= 127 else None


# -- real radios -----------------------------------------------------------------------


@dataclass(frozen=True)
class RadioType:
    name: str
    module: str  # the zigpy radio library's ControllerApplication module
    package: str  # what to pip install
    description: str
    default_baudrate: int


#: zigpy radio libraries (the ones ZHA lists), by the name zigpy's users give them.
RADIO_TYPES: Mapping[str, RadioType] = {
    "ezsp": RadioType("ezsp", "bellows.zigbee.application", "bellows",
                      "Silicon Labs EmberZNet (EZSP) NCP: SkyConnect/ZBT-1, Sonoff ZBDongle-E ...", 115200),
    "znp": RadioType("znp", "zigpy_znp.zigbee.application", "zigpy-znp",
                     "Texas Instruments Z-Stack (ZNP): CC2652/CC1352, Sonoff ZBDongle-P ...", 115200),
    "deconz": RadioType("deconz", "zigpy_deconz.zigbee.application", "zigpy-deconz",
                        "dresden elektronik deCONZ: ConBee, RaspBee", 38400),
    "zigate": RadioType("zigate", "zigpy_zigate.zigbee.application", "zigpy-zigate", "ZiGate", 115200),
    "xbee": RadioType("xbee", "zigpy_xbee.zigbee.application", "zigpy-xbee", "Digi XBee", 57600),
}

_FLOW_CONTROLS = (None, "hardware", "software")


@dataclass(frozen=True)
class RadioConfig:
    """How to reach the coordinator radio.

    ``radio``: a :data:`RADIO_TYPES` name (``ezsp`` default). ``port``: serial device
    (``/dev/serial/by-id/...`` is stable across reboots; ``socket://host:port`` for network
    coordinators). ``baudrate``: None = the radio type's usual one. ``flow_control``: None,
    ``"hardware"`` (RTS/CTS) or ``"software"`` (XON/XOFF), as the stick's firmware was built.
    ``database``: zigpy's device database (it must persist: zigpy learns IEEE <-> NWK and
    endpoints from it after a restart). ``aps_max_payload``: fallback when the radio does
    not say. ``zigpy_ota``: leave zigpy's own OTA providers on (off by default: proxyota
    serves OTA). ``extra``: further zigpy / radio library configuration, merged last.
    """

    port: str
    radio: str = "ezsp"
    baudrate: int | None = None
    flow_control: str | None = None
    database: str | None = None
    aps_max_payload: int = DEFAULT_APS_MAX_PAYLOAD
    zigpy_ota: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.radio not in RADIO_TYPES:
            raise InvalidArgument(f"unknown radio type {self.radio!r}; known: {', '.join(RADIO_TYPES)}")
        if not isinstance(self.port, str) or not self.port.strip():
            raise InvalidArgument("radio port must be a non-empty path, e.g. /dev/ttyUSB0")
        if self.baudrate is not None and (isinstance(self.baudrate, bool) or not isinstance(self.baudrate, int)
                                          or not 1200 <= self.baudrate <= 4_000_000):
            raise InvalidArgument(f"baudrate must be an integer 1200..4000000, got {self.baudrate!r}")
        if self.flow_control not in _FLOW_CONTROLS:
            raise InvalidArgument(f"flow_control must be hardware, software or none, got {self.flow_control!r}")
        if isinstance(self.aps_max_payload, bool) or not isinstance(self.aps_max_payload, int) \
                or not 20 <= self.aps_max_payload <= 127:
            raise InvalidArgument(f"aps_max_payload must be 20..127 bytes, got {self.aps_max_payload!r}")
        if self.database is not None and (not isinstance(self.database, str) or not self.database):
            raise InvalidArgument("database must be a file path")
        if not isinstance(self.extra, Mapping):
            raise InvalidArgument("extra must be a mapping")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RadioConfig:
        """From a config file section (``[zigbee.radio]``): keys as the fields; ``flow_control =
        "none"`` is accepted for None."""
        if not isinstance(data, Mapping):
            raise InvalidArgument("radio config must be a table")
        known = {"port", "radio", "baudrate", "flow_control", "database", "aps_max_payload", "zigpy_ota", "extra"}
        unknown = set(data) - known
        if unknown:
            raise InvalidArgument(f"unknown radio config key(s): {', '.join(sorted(unknown))}")
        if "port" not in data:
            raise InvalidArgument("radio config needs 'port'")
        values = dict(data)
        if values.get("flow_control") in ("none", ""):
            values["flow_control"] = None
        return cls(**values)

    @property
    def radio_type(self) -> RadioType:
        return RADIO_TYPES[self.radio]

    @property
    def effective_baudrate(self) -> int:
        return self.baudrate if self.baudrate is not None else self.radio_type.default_baudrate


def radio_application_class(radio: str) -> type:
    """The radio library's ControllerApplication class; a clear error when the library is
    not installed."""
    if radio not in RADIO_TYPES:
        raise InvalidArgument(f"unknown radio type {radio!r}; known: {', '.join(RADIO_TYPES)}")
    rtype = RADIO_TYPES[radio]
    try:
        module = importlib.import_module(rtype.module)
    except ImportError as exc:
        raise InvalidArgument(
            f"radio type {radio!r} needs the {rtype.package} package (pip install {rtype.package}): {exc}"
        ) from None
    return module.ControllerApplication


def _raw_config(cfg: RadioConfig) -> dict[str, Any]:
    import zigpy.config as zc

    config: dict[str, Any] = {
        zc.CONF_DEVICE: {
            zc.CONF_DEVICE_PATH: cfg.port,
            zc.CONF_DEVICE_BAUDRATE: cfg.effective_baudrate,
            zc.CONF_DEVICE_FLOW_CONTROL: cfg.flow_control,
        },
        zc.CONF_DATABASE: cfg.database,
        zc.CONF_OTA: {zc.CONF_OTA_ENABLED: bool(cfg.zigpy_ota),
                      zc.CONF_OTA_BROADCAST_ENABLED: bool(cfg.zigpy_ota)},
    }
    for key, value in cfg.extra.items():
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def zigpy_config(cfg: RadioConfig, *, app_class: type | None = None) -> dict[str, Any]:
    """zigpy's configuration for ``cfg``, validated by the radio library's schema."""
    import zigpy.config as zc

    config = _raw_config(cfg)
    cls = app_class if app_class is not None else radio_application_class(cfg.radio)
    schema = getattr(cls, "SCHEMA", zc.CONFIG_SCHEMA)
    try:
        import voluptuous as vol
    except ImportError:  # pragma: no cover - zigpy depends on it
        vol = None  # type: ignore[assignment]
    try:
        return schema(config)
    except Exception as exc:
        if vol is not None and isinstance(exc, vol.Invalid):
            raise InvalidArgument(f"zigpy rejects the radio configuration: {exc}") from None
        raise


async def open_radio(cfg: RadioConfig, *, app_class: type | None = None,
                     timeout: float | None = None) -> tuple[Any, int]:
    """Start the coordinator radio (network formed already: ``auto_form=False``) within
    ``timeout`` s and return ``(app, aps_max_payload)`` (the radio's own figure when it
    gives one). On failure the application is shut down again (its database and radio
    threads would otherwise keep the process alive)."""
    cls = app_class if app_class is not None else radio_application_class(cfg.radio)
    zigpy_config(cfg, app_class=cls)  # InvalidArgument when the radio library refuses it
    # zigpy validates in new() itself: a validated configuration would be validated twice,
    # which zigpy 2.4 rejects (its OTA provider objects are not mappings)
    app = await cls.new(_raw_config(cfg), auto_form=False, start_radio=False)
    try:
        await asyncio.wait_for(app.startup(auto_form=False), timeout=timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            await app.shutdown()
        raise
    aps = await probe_aps_max_payload(app)
    return app, aps if aps is not None else cfg.aps_max_payload
