"""The state and rules of the emulated ChirpStack v4 network server, sans-IO.

`ChirpStackCore` holds what ChirpStack keeps in its database (devices, device profiles,
keys, multicast groups, device and multicast queues, gateways) and applies ChirpStack's
rules to the emulated radio `Network`; it answers API requests given as chirpstack_api
``api.*`` messages (`handle(method, request, now)`), raising `ApiError(code, message)`
where ChirpStack returns a gRPC error, and emits ``integration.*`` events through a
callback ``emit(message, due_time)``. No sockets, no clock: the caller passes `now`
(GPS seconds, virtual) and drives `dispatch_due(now)` / `network.run_until(now)`.

Facts from chirpstack/chirpstack (chirpstack/src/api/{device,multicast}.rs,
storage/{multicast,device_queue}.rs, downlink/{multicast,data,tx_ack}.rs, uplink/data.rs,
maccommand/dev_status.rs):

- multicast class C enqueue: ``scheduler_run_after`` = (latest run_after among the group's
  queued items + multicast_class_c_margin) or now when the queue is empty; GPS_TIME adds one
  more margin and sends at that GPS time (so consecutive items are 2 margins apart), DELAY
  sends "immediately" when the scheduler reaches run_after (1 margin apart, plus one margin
  per extra gateway). Class B: the first ping slot strictly after (latest emit time, or
  now + multicast_class_b_margin), run_after = emit - 2 scheduler intervals. Default
  margins 5 s. The scheduler loop runs every ``interval`` (1 s) and picks the items whose
  run_after has passed (emulated: the first run strictly after run_after, runs counted from
  the core's creation) - so a GPS_TIME item (run_after == emit time) reaches the gateway up
  to one interval late; the emulated gateway still sends it then if no later than
  ``gps_time_tolerance`` (default 1 s), else refuses it (TOO_LATE). The group f_cnt is taken
  at enqueue and returned. Items leave the queue on the gateway's TX ack, OK or error (a
  frame the gateway refuses - duty cycle, collision, too late - is lost); an item too long
  for the group's DR is deleted silently at scheduling; an expired one too. No txack event
  for multicast. Gateway duty cycle: with ``gateway_duty_cycle_policy="drop"`` (default)
  a frame the sub-band's duty cycle or a frame still on air does not allow at its time is
  refused, as a gateway enforcing the duty cycle does; "delay" lets the radio send it at
  the first allowed time instead.
- gateways of a multicast item: those added to the group, else a covering set taken from
  the members' receive history; none (no gateway added, no member heard yet) -> nothing is
  queued but the f_cnt is still consumed.
- device queue: delivered after an uplink (class A here); an expired item is deleted with a
  ``log`` event (EXPIRED), an item too long for the RX window with a ``log`` event
  (DOWNLINK_PAYLOAD_SIZE); a transmitted unconfirmed item is deleted on TX ack and a
  ``txack`` event carries its fCntDown; a confirmed one stays ``is_pending`` until the next
  uplink, which gives an ``ack`` event (acknowledged true/false) and deletes it.
- ``status`` events: margin, externalPowerSource (battery 0), batteryLevelUnavailable (255),
  batteryLevel = battery / 254 x 100.

Simplifications: DevStatusReq/Ans cost no airtime (a ``status`` event rides on the first
uplink after each ``status_interval``, margin from the uplink SNR); the ``txack`` event
comes at the transmission (a real gateway acks when it queues the frame, < 1 s earlier);
ChirpStack's own TS003 handling is not emulated (as with a device profile whose TS00x
versions are unset: fPort 200-203 uplinks all reach the integration); events not yet POSTed
when the process restarts are lost.

Deliberate differences (stricter, clearer errors for the gateway under test): unknown
device or group -> NOT_FOUND on every call (ChirpStack answers UNAUTHENTICATED to a tenant
key, INTERNAL or an empty list to an admin key on some calls); an empty or malformed
mc_addr / key, a DR or frequency the region has not, a region other than the network's,
fPort 0 or >= 224 -> INVALID_ARGUMENT at the call (ChirpStack parses '' as zeros, accepts
any DR / frequency / fPort 1..255 and returns INTERNAL for bad hex; set
``parse_errors_as_internal`` to get INTERNAL for bad hex). Duplicate AddDevice/AddGateway
answer INTERNAL as ChirpStack does (unique-key violation).
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from google.protobuf import empty_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from chirpstack_api import api, common, gw
from chirpstack_api import integration as ipb
from radio_emulators.lorawan.device import EndDevice
from radio_emulators.lorawan.network import DownlinkTx, Network, UplinkEvent
from radio_emulators.lorawan.phy import (DataRate, Modulation, PhyError, Region, next_ping_slot,
                                         phy_payload_len, time_on_air)

__all__ = ["ApiError", "DeviceKeys", "ChirpStackConfig", "ChirpStackCore", "gps_to_unix",
           "unix_to_gps", "gps_timestamp", "METHODS"]

# ------------------------------------------------------------------------------ GPS time
GPS_EPOCH_UNIX = 315_964_800
# (Unix time from which it applies, GPS - UTC in seconds): IERS leap seconds since 1999
_LEAPS = ((915_148_800, 13), (1_136_073_600, 14), (1_230_768_000, 15), (1_341_100_800, 16),
          (1_435_708_800, 17), (1_483_228_800, 18))


def _leap_at_unix(unix: float) -> int:
    off = 13
    for start, v in _LEAPS:
        if unix >= start:
            off = v
    return off


def gps_to_unix(gps: float) -> float:
    u = gps + GPS_EPOCH_UNIX
    return u - _leap_at_unix(u - 18)


def unix_to_gps(unix: float) -> float:
    return unix - GPS_EPOCH_UNIX + _leap_at_unix(unix)


def _split(t: float) -> tuple[int, int]:
    us = round(t * 1e6)
    s, frac = divmod(us, 1_000_000)
    return int(s), int(frac) * 1000


def gps_timestamp(gps: float) -> Timestamp:
    """A protobuf Timestamp (UTC) of a GPS time, to the microsecond."""
    s, n = _split(gps_to_unix(gps))
    return Timestamp(seconds=s, nanos=n)


def _gps_duration(gps: float) -> Duration:
    s, n = _split(gps)
    return Duration(seconds=s, nanos=n)


def _ts_to_gps(ts: Timestamp) -> float:
    return unix_to_gps(ts.seconds + ts.nanos / 1e9)


# ------------------------------------------------------------------------------ errors
class ApiError(Exception):
    """A gRPC error ChirpStack would return: `code` is a grpc.StatusCode name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _invalid(msg: str) -> ApiError:
    return ApiError("INVALID_ARGUMENT", msg)


def _not_found(what: str) -> ApiError:
    return ApiError("NOT_FOUND", f"Object does not exist (id: {what})")


# ------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class DeviceKeys:
    """ChirpStack v4 DeviceKeys: for LoRaWAN 1.0.x `nwk_key` holds the AppKey and
    `gen_app_key` the GenAppKey (TS005); for 1.1 `nwk_key` / `app_key` are NwkKey / AppKey.
    Unset keys read as 32 zeros, as in ChirpStack."""

    nwk_key: bytes
    app_key: bytes | None = None
    gen_app_key: bytes | None = None

    def __post_init__(self) -> None:
        for name in ("nwk_key", "app_key", "gen_app_key"):
            v = getattr(self, name)
            if v is not None and len(v) != 16:
                raise ValueError(f"{name} must be 16 bytes")

    @property
    def multicast_root(self) -> bytes | None:
        """The key TS005 / TS004 v2 derive from: GenAppKey (1.0.x) else AppKey (1.1)."""
        return self.gen_app_key if self.gen_app_key is not None else self.app_key


@dataclass
class DeviceProfileRecord:
    id: str
    name: str
    region: Region
    mac_version: str
    supports_class_b: bool = True
    supports_class_c: bool = True
    device_status_req_interval: int = 1   # per day


@dataclass
class DeviceRecord:
    dev_eui: bytes
    name: str
    profile_id: str
    dev_addr: int
    keys: DeviceKeys
    created_at: float
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""
    last_seen_at: float | None = None
    heard: bool = False
    joined: bool = False
    f_cnt_down: int = 0
    rssi: float = -90.0
    snr: float = 7.0
    next_status_at: float | None = None
    margin: int | None = None
    external_power: bool = False
    battery_level: float | None = None
    queue: list["DeviceQueueItemRecord"] = field(default_factory=list)


@dataclass
class DeviceQueueItemRecord:
    id: str
    dev_eui: bytes
    f_port: int
    data: bytes
    confirmed: bool
    expires_at: float | None
    is_encrypted: bool = False
    f_cnt_down: int | None = None
    is_pending: bool = False
    net: Any = None                 # the network's own queue entry
    tx: DownlinkTx | None = None    # the transmission, for confirmed items


@dataclass
class McGroupRecord:
    id: str
    name: str
    application_id: str
    region: Region
    mc_addr: int
    mc_nwk_s_key: bytes
    mc_app_s_key: bytes
    f_cnt: int
    group_type: str            # "B" / "C"
    dr: int
    frequency: int
    ping_slot_periodicity: int
    scheduling: str            # "DELAY" / "GPS_TIME"
    created_at: float
    updated_at: float
    devices: list[bytes] = field(default_factory=list)
    gateways: list[bytes] = field(default_factory=list)


@dataclass
class McQueueItemRecord:
    id: str
    group_id: str
    gateway_id: bytes
    f_cnt: int
    f_port: int
    data: bytes
    expires_at: float | None
    run_after: float
    emit_at: float | None
    seq: int


@dataclass
class ChirpStackConfig:
    """Network-server settings (ChirpStack's defaults where it has one)."""

    multicast_class_c_margin: float = 5.0
    multicast_class_b_margin: float = 5.0
    scheduler_interval: float = 1.0         # multicast scheduler runs (0: continuous)
    deduplication_delay: float = 0.2        # uplink end -> integration event
    gps_time_tolerance: float = 1.0         # a GPS-timed item handed over later: TOO_LATE
    status_interval: float | None = 86_400.0  # DevStatusReq period (None: no status events)
    join_events: bool = True                # `join` before a device's first `up`
    gateway_duty_cycle_policy: str = "drop"  # "drop": refused like a gateway enforcing it
    parse_errors_as_internal: bool = False
    tenant_name: str = "ChirpStack"
    application_name: str = "proxyota-emulated"
    gateway_location: tuple[float, float, float] = (52.3740364, 4.9144401, 10.0)

    def __post_init__(self) -> None:
        if self.gateway_duty_cycle_policy not in ("drop", "delay"):
            raise ValueError("gateway_duty_cycle_policy must be 'drop' or 'delay'")
        for name in ("multicast_class_c_margin", "multicast_class_b_margin",
                     "deduplication_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


_MAC_VERSIONS = {"1.0.0": "LORAWAN_1_0_0", "1.0.1": "LORAWAN_1_0_1", "1.0.2": "LORAWAN_1_0_2",
                 "1.0.3": "LORAWAN_1_0_3", "1.0.4": "LORAWAN_1_0_4", "1.1": "LORAWAN_1_1_0",
                 "1.1.0": "LORAWAN_1_1_0"}
_REQUIRED_SNR = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}

# gRPC method -> core method, per service (what the emulated server exposes)
METHODS: dict[str, dict[str, str]] = {
    "DeviceService": {"Get": "device_get", "List": "device_list", "GetKeys": "device_get_keys",
                      "Enqueue": "device_enqueue", "FlushQueue": "device_flush_queue",
                      "GetQueue": "device_get_queue",
                      "GetNextFCntDown": "device_get_next_f_cnt_down"},
    "DeviceProfileService": {"Get": "device_profile_get"},
    "MulticastGroupService": {"Create": "mc_create", "Get": "mc_get", "Update": "mc_update",
                              "Delete": "mc_delete", "List": "mc_list",
                              "AddDevice": "mc_add_device", "RemoveDevice": "mc_remove_device",
                              "AddGateway": "mc_add_gateway",
                              "RemoveGateway": "mc_remove_gateway", "Enqueue": "mc_enqueue",
                              "FlushQueue": "mc_flush_queue", "ListQueue": "mc_list_queue"},
}


def _region_enum(region: Region) -> int:
    return common.Region.Value(region.name)


def _modulation(drd: DataRate, *, downlink: bool) -> gw.Modulation:
    if drd.modulation is Modulation.LORA:
        return gw.Modulation(lora=gw.LoraModulationInfo(
            bandwidth=drd.bw_hz, spreading_factor=drd.sf, code_rate=gw.CR_4_5,
            polarization_inversion=downlink))
    if drd.modulation is Modulation.FSK:
        return gw.Modulation(fsk=gw.FskModulationInfo(frequency_deviation=drd.bitrate // 2,
                                                      datarate=drd.bitrate))
    return gw.Modulation()


class ChirpStackCore:
    """ChirpStack's database and rules over an emulated `Network` (see module docstring)."""

    def __init__(self, network: Network, *, application_id: str, tenant_id: str | None = None,
                 emit: Callable[[Any, float], None] | None = None,
                 config: ChirpStackConfig | None = None, seed: int = 0,
                 gateway_id: str = "0016c001f153a14c",
                 device_keys: Mapping[bytes, DeviceKeys] | None = None) -> None:
        self.network = network
        self.region = network.region
        self.config = config or ChirpStackConfig()
        self.rng = random.Random(seed)
        self.application_id = self._uuid_arg(application_id, "application_id")
        self.tenant_id = (self._uuid_arg(tenant_id, "tenant_id") if tenant_id
                          else self._new_id())
        self.emit = emit or (lambda msg, due: None)
        self.on_change: Callable[[], None] = lambda: None
        self.gateway_id = bytes.fromhex(gateway_id)
        if len(self.gateway_id) != 8:
            raise ValueError("gateway_id must be 16 hex characters")
        self.gateways: dict[bytes, str] = {self.gateway_id: self.tenant_id}
        self.profiles: dict[str, DeviceProfileRecord] = {}
        self.devices: dict[bytes, DeviceRecord] = {}
        self.groups: dict[str, McGroupRecord] = {}
        self.mc_queue: list[McQueueItemRecord] = []   # all groups, in creation order
        self._mc_seq = 0
        self._anchor = network.now
        self.up = True
        self._stash: dict[bytes, list] = {}
        self.counters: dict[str, int] = {
            "uplinks": 0, "uplinks_while_down": 0, "uplinks_unknown_device": 0,
            "mc_enqueued": 0, "mc_no_gateway": 0, "mc_sent": 0, "mc_dropped_duty_cycle": 0,
            "mc_dropped_busy": 0, "mc_dropped_too_late": 0, "mc_discarded_size": 0,
            "mc_expired": 0, "dl_enqueued": 0, "dl_sent": 0, "dl_expired": 0,
            "dl_discarded_size": 0, "acks": 0, "nacks": 0, "status_events": 0}
        keys = dict(device_keys or {})
        for eui, dev in network.devices.items():
            self.add_device(dev, keys.get(eui))
        network.uplink_handlers.append(self._on_uplink)
        network.tx_handlers.append(self._on_tx)

    # ------------------------------------------------------------------ registry
    def _new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _profile_for(self, dev: EndDevice) -> DeviceProfileRecord:
        name = f"{dev.region.name} LoRaWAN {dev.mac_version} {dev.profile.name}"
        for p in self.profiles.values():
            if p.name == name:
                return p
        p = DeviceProfileRecord(self._new_id(), name, dev.region, dev.mac_version)
        self.profiles[p.id] = p
        return p

    def add_device(self, dev: EndDevice, keys: DeviceKeys | None = None, *,
                   name: str | None = None, tags: Mapping[str, str] | None = None,
                   now: float | None = None) -> DeviceRecord:
        """Register an emulated device (ChirpStack's Device + DeviceKeys + profile)."""
        if dev.region is not self.region:
            raise ValueError(f"device {dev.dev_eui.hex()} is {dev.region.name}, the network "
                             f"{self.region.name}")
        if keys is None:
            root = getattr(dev, "_root", None)  # the device's own TS005 root key
            one_one = dev.mac_version.startswith("1.1")
            keys = DeviceKeys(nwk_key=bytes(self.rng.getrandbits(8) for _ in range(16)),
                              app_key=root if one_one else None,
                              gen_app_key=None if one_one else root)
        rec = DeviceRecord(
            dev_eui=dev.dev_eui, name=name or f"device-{dev.dev_eui.hex()}",
            profile_id=self._profile_for(dev).id,
            dev_addr=self.rng.randrange(0, 1 << 25),  # NetID 000000: 7-bit prefix 0
            keys=keys, created_at=self.network.now if now is None else now,
            tags=dict(tags or {}), rssi=self.rng.uniform(-118.0, -70.0),
            snr=self.rng.uniform(-4.0, 10.0))
        if self.config.status_interval:
            rec.next_status_at = rec.created_at + self.rng.uniform(
                0.0, self.config.status_interval)
        self.devices[dev.dev_eui] = rec
        return rec

    def device_info(self, rec: DeviceRecord) -> ipb.DeviceInfo:
        p = self.profiles[rec.profile_id]
        return ipb.DeviceInfo(
            tenant_id=self.tenant_id, tenant_name=self.config.tenant_name,
            application_id=self.application_id,
            application_name=self.config.application_name, device_profile_id=p.id,
            device_profile_name=p.name, device_name=rec.name, dev_eui=rec.dev_eui.hex(),
            device_class_enabled=common.CLASS_A, tags=rec.tags)

    # ------------------------------------------------------------------ argument parsing
    def _hex(self, s: str, n: int, what: str) -> bytes:
        code = "INTERNAL" if self.config.parse_errors_as_internal else "INVALID_ARGUMENT"
        if len(s) != 2 * n:
            raise ApiError(code, f"{what}: Invalid string length (expected {2 * n} hex "
                                 f"characters, got {len(s)})")
        try:
            return bytes.fromhex(s)
        except ValueError:
            bad = next((i for i, c in enumerate(s) if c not in "0123456789abcdefABCDEF"), 0)
            raise ApiError(code, f"{what}: Invalid character {s[bad]!r} at position "
                                 f"{bad}") from None

    @staticmethod
    def _uuid_arg(s: str, what: str = "id") -> str:
        try:
            return str(uuid.UUID(s))
        except (ValueError, TypeError, AttributeError):
            raise _invalid(f"{what}: invalid UUID {s!r}") from None

    def _device(self, dev_eui_hex: str) -> DeviceRecord:
        eui = self._hex(dev_eui_hex, 8, "dev_eui")
        rec = self.devices.get(eui)
        if rec is None:
            raise _not_found(dev_eui_hex)
        return rec

    def _group(self, gid: str) -> McGroupRecord:
        gid = self._uuid_arg(gid, "multicast_group_id")
        g = self.groups.get(gid)
        if g is None:
            raise _not_found(gid)
        return g

    @staticmethod
    def _check_f_port(f_port: int) -> None:
        if not 1 <= f_port <= 223:
            raise ApiError("INVALID_ARGUMENT", "Validation error: FPort must be between "
                                               "1 - 223 (0 is MAC only, 224+ reserved)")

    def handle(self, method: str, request: Any, now: float) -> Any:
        """Run one API call (`method` is a value of METHODS)."""
        return getattr(self, method)(request, now)

    # ------------------------------------------------------------------ DeviceService
    def device_get(self, req: api.GetDeviceRequest, now: float) -> api.GetDeviceResponse:
        rec = self._device(req.dev_eui)
        resp = api.GetDeviceResponse(
            device=api.Device(dev_eui=rec.dev_eui.hex(), name=rec.name,
                              description=rec.description,
                              application_id=self.application_id,
                              device_profile_id=rec.profile_id, tags=rec.tags),
            created_at=gps_timestamp(rec.created_at), updated_at=gps_timestamp(rec.created_at),
            class_enabled=common.CLASS_A)
        if rec.last_seen_at is not None:
            resp.last_seen_at.CopyFrom(gps_timestamp(rec.last_seen_at))
        if rec.margin is not None:
            resp.device_status.CopyFrom(api.DeviceStatus(
                margin=rec.margin, external_power_source=rec.external_power,
                battery_level=rec.battery_level if rec.battery_level is not None else -1.0))
        return resp

    def device_list(self, req: api.ListDevicesRequest, now: float) -> api.ListDevicesResponse:
        app = self._uuid_arg(req.application_id, "application_id")
        recs = list(self.devices.values()) if app == self.application_id else []
        if req.multicast_group_id:
            g = self._group(req.multicast_group_id)
            recs = [r for r in recs if r.dev_eui in g.devices]
        if req.search:
            recs = [r for r in recs if req.search.lower() in r.name.lower()]
        recs.sort(key=lambda r: r.name)
        page = recs[req.offset:req.offset + req.limit] if req.limit else []
        out = api.ListDevicesResponse(total_count=len(recs))
        for r in page:
            item = out.result.add(dev_eui=r.dev_eui.hex(), name=r.name,
                                  description=r.description, device_profile_id=r.profile_id,
                                  device_profile_name=self.profiles[r.profile_id].name,
                                  tags=r.tags)
            item.created_at.CopyFrom(gps_timestamp(r.created_at))
            item.updated_at.CopyFrom(gps_timestamp(r.created_at))
            if r.last_seen_at is not None:
                item.last_seen_at.CopyFrom(gps_timestamp(r.last_seen_at))
        return out

    def device_get_keys(self, req: api.GetDeviceKeysRequest,
                        now: float) -> api.GetDeviceKeysResponse:
        rec = self._device(req.dev_eui)
        k = rec.keys
        zero = bytes(16)
        return api.GetDeviceKeysResponse(
            device_keys=api.DeviceKeys(dev_eui=rec.dev_eui.hex(), nwk_key=k.nwk_key.hex(),
                                       app_key=(k.app_key or zero).hex(),
                                       gen_app_key=(k.gen_app_key or zero).hex()),
            created_at=gps_timestamp(rec.created_at), updated_at=gps_timestamp(rec.created_at))

    def device_enqueue(self, req: api.EnqueueDeviceQueueItemRequest,
                       now: float) -> api.EnqueueDeviceQueueItemResponse:
        if not req.HasField("queue_item"):
            raise _invalid("queue_item is missing")
        qi = req.queue_item
        rec = self._device(qi.dev_eui)
        if qi.HasField("object"):
            raise _invalid("no payload codec configured in the device profile")
        self._check_f_port(qi.f_port)
        if req.flush_queue:
            self._flush_device(rec, pending_too=False)
        item = DeviceQueueItemRecord(
            id=self._new_id(), dev_eui=rec.dev_eui, f_port=qi.f_port, data=bytes(qi.data),
            confirmed=qi.confirmed,
            expires_at=_ts_to_gps(qi.expires_at) if qi.HasField("expires_at") else None,
            is_encrypted=qi.is_encrypted,
            f_cnt_down=qi.f_cnt_down if qi.is_encrypted else None)
        rec.queue.append(item)
        self.network.enqueue_unicast(rec.dev_eui, item.f_port, item.data)
        q = self._netq(rec.dev_eui)
        item.net = q[-1]
        if not self.up:  # down: kept out of the radio's reach with the rest
            self._stash.setdefault(rec.dev_eui, []).append(q.pop())
        self.counters["dl_enqueued"] += 1
        self.on_change()
        return api.EnqueueDeviceQueueItemResponse(id=item.id)

    def _netq(self, eui: bytes) -> list:
        # the network's class A queue of this device (same package: we keep it in step)
        return self.network._queues[eui]

    def _drop_net(self, item: DeviceQueueItemRecord) -> None:
        for q in (self._netq(item.dev_eui), self._stash.get(item.dev_eui, [])):
            if item.net in q:
                q.remove(item.net)

    def _flush_device(self, rec: DeviceRecord, *, pending_too: bool) -> None:
        keep = []
        for item in rec.queue:
            if item.is_pending and not pending_too:
                keep.append(item)
            else:
                self._drop_net(item)
        rec.queue = keep

    def device_flush_queue(self, req: api.FlushDeviceQueueRequest, now: float):
        rec = self._device(req.dev_eui)
        self._flush_device(rec, pending_too=True)
        self.on_change()
        return empty_pb2.Empty()

    def device_get_queue(self, req: api.GetDeviceQueueItemsRequest,
                         now: float) -> api.GetDeviceQueueItemsResponse:
        rec = self._device(req.dev_eui)
        out = api.GetDeviceQueueItemsResponse(total_count=len(rec.queue))
        if req.count_only:
            return out
        for it in rec.queue:
            r = out.result.add(id=it.id, dev_eui=rec.dev_eui.hex(), confirmed=it.confirmed,
                               f_port=it.f_port, data=it.data, is_pending=it.is_pending,
                               f_cnt_down=it.f_cnt_down or 0, is_encrypted=it.is_encrypted)
            if it.expires_at is not None:
                r.expires_at.CopyFrom(gps_timestamp(it.expires_at))
        return out

    def device_get_next_f_cnt_down(self, req: api.GetDeviceNextFCntDownRequest,
                                   now: float) -> api.GetDeviceNextFCntDownResponse:
        rec = self._device(req.dev_eui)
        return api.GetDeviceNextFCntDownResponse(f_cnt_down=rec.f_cnt_down)

    # ------------------------------------------------------------------ DeviceProfileService
    def device_profile_get(self, req: api.GetDeviceProfileRequest,
                           now: float) -> api.GetDeviceProfileResponse:
        pid = self._uuid_arg(req.id)
        p = self.profiles.get(pid)
        if p is None:
            raise _not_found(pid)
        return api.GetDeviceProfileResponse(device_profile=api.DeviceProfile(
            id=p.id, tenant_id=self.tenant_id, name=p.name, region=_region_enum(p.region),
            mac_version=common.MacVersion.Value(_MAC_VERSIONS.get(p.mac_version,
                                                                  "LORAWAN_1_0_4")),
            reg_params_revision=common.RP002_1_0_3, supports_otaa=True,
            supports_class_b=p.supports_class_b, supports_class_c=p.supports_class_c,
            device_status_req_interval=p.device_status_req_interval,
            region_config_id=p.region.name.lower()))

    # ------------------------------------------------------------------ MulticastGroupService
    def _group_fields(self, m: api.MulticastGroup) -> dict:
        app = self._uuid_arg(m.application_id, "application_id")
        if app != self.application_id:
            raise _not_found(app)
        if not m.name:
            raise _invalid("Validation error: name is not set")
        if m.region != _region_enum(self.region):
            raise _invalid(f"region {common.Region.Name(m.region)} is not the network's "
                           f"{self.region.name}")
        mc_addr = int.from_bytes(self._hex(m.mc_addr, 4, "mc_addr"), "big")
        nwk = self._hex(m.mc_nwk_s_key, 16, "mc_nwk_s_key")
        app_key = self._hex(m.mc_app_s_key, 16, "mc_app_s_key")
        group_type = "B" if m.group_type == api.CLASS_B else "C"
        if not self.region.is_valid_downlink_dr(m.dr):
            raise _invalid(f"dr {m.dr} is not a downlink data rate of {self.region.name}")
        if not self.region.is_valid_downlink_freq(m.frequency):
            raise _invalid(f"frequency {m.frequency} Hz is outside the {self.region.name} "
                           f"downlink band")
        try:
            self.region.sub_band(m.frequency)
        except PhyError as e:
            raise _invalid(str(e)) from None
        if group_type == "B" and not 0 <= m.class_b_ping_slot_periodicity <= 7:
            raise _invalid("class_b_ping_slot_periodicity must be 0..7")
        return dict(name=m.name, application_id=app, region=self.region, mc_addr=mc_addr,
                    mc_nwk_s_key=nwk, mc_app_s_key=app_key, f_cnt=m.f_cnt,
                    group_type=group_type, dr=m.dr, frequency=m.frequency,
                    ping_slot_periodicity=m.class_b_ping_slot_periodicity,
                    scheduling=api.MulticastGroupSchedulingType.Name(
                        m.class_c_scheduling_type))

    def _net_group(self, g: McGroupRecord) -> None:
        if g.id in self.network.groups:
            self.network.remove_group(g.id)
        ng = self.network.add_group(g.id, g.mc_addr, g.mc_nwk_s_key, g.mc_app_s_key,
                                    group_type=g.group_type, dr=g.dr, frequency=g.frequency,
                                    ping_slot_periodicity=g.ping_slot_periodicity)
        ng.members.update(g.devices)

    def mc_create(self, req: api.CreateMulticastGroupRequest,
                  now: float) -> api.CreateMulticastGroupResponse:
        if not req.HasField("multicast_group"):
            raise _invalid("multicast_group is missing")
        f = self._group_fields(req.multicast_group)
        g = McGroupRecord(id=self._new_id(), created_at=now, updated_at=now, **f)
        self.groups[g.id] = g
        self._net_group(g)
        return api.CreateMulticastGroupResponse(id=g.id)

    def _group_proto(self, g: McGroupRecord) -> api.MulticastGroup:
        return api.MulticastGroup(
            id=g.id, name=g.name, application_id=g.application_id,
            region=_region_enum(g.region), mc_addr=f"{g.mc_addr:08x}",
            mc_nwk_s_key=g.mc_nwk_s_key.hex(), mc_app_s_key=g.mc_app_s_key.hex(),
            f_cnt=g.f_cnt, group_type=api.CLASS_B if g.group_type == "B" else api.CLASS_C,
            dr=g.dr, frequency=g.frequency,
            class_b_ping_slot_periodicity=g.ping_slot_periodicity,
            class_c_scheduling_type=api.MulticastGroupSchedulingType.Value(g.scheduling))

    def mc_get(self, req: api.GetMulticastGroupRequest,
               now: float) -> api.GetMulticastGroupResponse:
        g = self._group(req.id)
        return api.GetMulticastGroupResponse(multicast_group=self._group_proto(g),
                                             created_at=gps_timestamp(g.created_at),
                                             updated_at=gps_timestamp(g.updated_at))

    def mc_update(self, req: api.UpdateMulticastGroupRequest, now: float):
        if not req.HasField("multicast_group"):
            raise _invalid("multicast_group is missing")
        g = self._group(req.multicast_group.id)
        f = self._group_fields(req.multicast_group)
        for k, v in f.items():
            setattr(g, k, v)
        g.updated_at = now
        self._net_group(g)
        self.on_change()
        return empty_pb2.Empty()

    def mc_delete(self, req: api.DeleteMulticastGroupRequest, now: float):
        g = self._group(req.id)
        del self.groups[g.id]
        self.mc_queue = [q for q in self.mc_queue if q.group_id != g.id]
        if g.id in self.network.groups:
            self.network.remove_group(g.id)
        self.on_change()
        return empty_pb2.Empty()

    def mc_list(self, req: api.ListMulticastGroupsRequest,
                now: float) -> api.ListMulticastGroupsResponse:
        groups = list(self.groups.values())
        if req.application_id:
            app = self._uuid_arg(req.application_id, "application_id")
            groups = [g for g in groups if g.application_id == app]
        if req.dev_eui:
            eui = self._hex(req.dev_eui, 8, "dev_eui")
            groups = [g for g in groups if eui in g.devices]
        if req.search:
            groups = [g for g in groups if req.search.lower() in g.name.lower()]
        groups.sort(key=lambda g: g.name)
        out = api.ListMulticastGroupsResponse(total_count=len(groups))
        for g in groups[req.offset:req.offset + req.limit] if req.limit else []:
            it = out.result.add(id=g.id, name=g.name, region=_region_enum(g.region),
                                group_type=api.CLASS_B if g.group_type == "B" else api.CLASS_C,
                                application_id=g.application_id,
                                application_name=self.config.application_name)
            it.created_at.CopyFrom(gps_timestamp(g.created_at))
            it.updated_at.CopyFrom(gps_timestamp(g.updated_at))
        return out

    def mc_add_device(self, req: api.AddDeviceToMulticastGroupRequest, now: float):
        g = self._group(req.multicast_group_id)
        rec = self._device(req.dev_eui)
        if rec.dev_eui in g.devices:
            raise ApiError("INTERNAL", "duplicate key value violates unique constraint "
                                       "\"multicast_group_device_pkey\"")
        g.devices.append(rec.dev_eui)
        self.network.add_to_group(g.id, rec.dev_eui)
        return empty_pb2.Empty()

    def mc_remove_device(self, req: api.RemoveDeviceFromMulticastGroupRequest, now: float):
        g = self._group(req.multicast_group_id)
        eui = self._hex(req.dev_eui, 8, "dev_eui")
        if eui not in g.devices:
            raise _not_found(f"multicast-group: {g.id}, device: {req.dev_eui}")
        g.devices.remove(eui)
        self.network.groups[g.id].members.discard(eui)
        return empty_pb2.Empty()

    def mc_add_gateway(self, req: api.AddGatewayToMulticastGroupRequest, now: float):
        g = self._group(req.multicast_group_id)
        gw_id = self._hex(req.gateway_id, 8, "gateway_id")
        if gw_id not in self.gateways:
            raise _not_found(req.gateway_id)
        if gw_id in g.gateways:
            raise ApiError("INTERNAL", "duplicate key value violates unique constraint "
                                       "\"multicast_group_gateway_pkey\"")
        g.gateways.append(gw_id)
        return empty_pb2.Empty()

    def mc_remove_gateway(self, req: api.RemoveGatewayFromMulticastGroupRequest, now: float):
        g = self._group(req.multicast_group_id)
        gw_id = self._hex(req.gateway_id, 8, "gateway_id")
        if gw_id not in g.gateways:
            raise _not_found(f"multicast-group: {g.id}, gateway: {req.gateway_id}")
        g.gateways.remove(gw_id)
        return empty_pb2.Empty()

    def _gateway_set(self, g: McGroupRecord) -> list[bytes]:
        if g.gateways:
            return list(g.gateways)
        heard = any(self.devices[e].heard for e in g.devices if e in self.devices)
        return [self.gateway_id] if heard else []

    def mc_enqueue(self, req: api.EnqueueMulticastGroupQueueItemRequest,
                   now: float) -> api.EnqueueMulticastGroupQueueItemResponse:
        if not req.HasField("queue_item"):
            raise _invalid("queue_item is missing")
        qi = req.queue_item
        self._uuid_arg(qi.multicast_group_id, "multicast_group_id")
        self._check_f_port(qi.f_port)
        g = self._group(qi.multicast_group_id)
        expires = _ts_to_gps(qi.expires_at) if qi.HasField("expires_at") else None
        gateways = self._gateway_set(g)
        mine = [q for q in self.mc_queue if q.group_id == g.id]
        cfg = self.config
        f_cnt = g.f_cnt
        if not gateways:
            self.counters["mc_no_gateway"] += 1
        if g.group_type == "B":
            last = max((q.emit_at for q in mine if q.emit_at is not None), default=None)
            after = last if last is not None else now + cfg.multicast_class_b_margin
            # the first ping slot strictly after `after`
            emit = next_ping_slot(after + 1e-6, g.mc_addr, g.ping_slot_periodicity)
            for gw_id in gateways:
                self._add_mc_item(g, gw_id, f_cnt, qi, expires,
                                  emit - 2 * cfg.scheduler_interval, emit)
        else:
            last = max((q.run_after for q in mine), default=None)
            run_after = last + cfg.multicast_class_c_margin if last is not None else now
            emit = None
            if g.scheduling == "GPS_TIME":
                run_after += cfg.multicast_class_c_margin
                emit = run_after
            for gw_id in gateways:
                self._add_mc_item(g, gw_id, f_cnt, qi, expires, run_after, emit)
                if g.scheduling == "DELAY":
                    run_after += cfg.multicast_class_c_margin
        g.f_cnt = (g.f_cnt + 1) & 0xFFFFFFFF
        self.counters["mc_enqueued"] += 1
        self.on_change()
        return api.EnqueueMulticastGroupQueueItemResponse(f_cnt=f_cnt)

    def _add_mc_item(self, g, gw_id, f_cnt, qi, expires, run_after, emit) -> None:
        self._mc_seq += 1
        self.mc_queue.append(McQueueItemRecord(
            id=self._new_id(), group_id=g.id, gateway_id=gw_id, f_cnt=f_cnt, f_port=qi.f_port,
            data=bytes(qi.data), expires_at=expires, run_after=run_after, emit_at=emit,
            seq=self._mc_seq))

    def mc_flush_queue(self, req: api.FlushMulticastGroupQueueRequest, now: float):
        g = self._group(req.multicast_group_id)
        self.mc_queue = [q for q in self.mc_queue if q.group_id != g.id]
        self.on_change()
        return empty_pb2.Empty()

    def mc_list_queue(self, req: api.ListMulticastGroupQueueRequest,
                      now: float) -> api.ListMulticastGroupQueueResponse:
        g = self._group(req.multicast_group_id)
        out = api.ListMulticastGroupQueueResponse()
        seen: set[int] = set()
        for q in self.mc_queue:
            if q.group_id != g.id or q.f_cnt in seen:
                continue
            seen.add(q.f_cnt)
            it = out.items.add(multicast_group_id=g.id, f_cnt=q.f_cnt, f_port=q.f_port,
                               data=q.data)
            if q.expires_at is not None:
                it.expires_at.CopyFrom(gps_timestamp(q.expires_at))
        return out

    # ------------------------------------------------------------------ multicast scheduler
    def _tick_after(self, t: float) -> float:
        """ChirpStack's multicast scheduler runs every `scheduler_interval`: an item whose
        run_after is t is picked at the first run strictly after t (runs are counted from
        the core's creation)."""
        iv = self.config.scheduler_interval
        if iv <= 0:
            return t
        return self._anchor + (math.floor((t - self._anchor) / iv) + 1) * iv

    def next_due(self) -> float | None:
        """When the multicast scheduler next has something to do (None: nothing queued)."""
        if not self.up or not self.mc_queue:
            return None
        return self._tick_after(min(q.run_after for q in self.mc_queue))

    def dispatch_due(self, now: float) -> None:
        """Hand every multicast item whose scheduler run has come to the gateway."""
        if not self.up:
            return
        due = sorted((q for q in self.mc_queue if self._tick_after(q.run_after) <= now + 1e-9),
                     key=lambda q: (q.run_after, q.seq))
        for q in due:
            self.mc_queue.remove(q)
            self._dispatch(q, now)

    def _dispatch(self, q: McQueueItemRecord, now: float) -> None:
        g = self.groups.get(q.group_id)
        if g is None:
            return
        if q.expires_at is not None and now > q.expires_at:
            self.counters["mc_expired"] += 1
            return
        drd = self.region.downlink_dr(g.dr)
        if len(q.data) > drd.max_frm_payload():
            self.counters["mc_discarded_size"] += 1
            return
        if q.emit_at is not None:
            if now - q.emit_at > self.config.gps_time_tolerance + 1e-6:
                self.counters["mc_dropped_too_late"] += 1  # the gateway: TOO_LATE
                return
            t = max(q.emit_at, now)
        else:
            t = now
        airtime = time_on_air(drd, phy_payload_len(len(q.data)), uplink=False)
        net = self.network
        if self.config.gateway_duty_cycle_policy == "drop":
            if not net.gw_duty.allowed(t, g.frequency, airtime):
                self.counters["mc_dropped_duty_cycle"] += 1
                return
            if net._gw_next_free(t, airtime) != t:
                self.counters["mc_dropped_busy"] += 1
                return
        net.groups[g.id].f_cnt = q.f_cnt
        net.schedule_multicast(g.id, q.f_port, q.data, not_before=t)
        self.counters["mc_sent"] += 1

    # ------------------------------------------------------------------ uplinks / downlinks
    def _rx_info(self, rec: DeviceRecord, ev: UplinkEvent) -> gw.UplinkRxInfo:
        up = ev.uplink
        region = self.region
        try:
            channel = region.default_uplink_channels.index(up.freq)
        except ValueError:
            channel = 0
        snr = round(rec.snr + self.rng.gauss(0.0, 1.0), 1)
        rssi = int(round(rec.rssi + self.rng.gauss(0.0, 2.0)))
        lat, lon, alt = self.config.gateway_location
        t = up.t_end
        return gw.UplinkRxInfo(
            gateway_id=self.gateway_id.hex(), uplink_id=self.rng.getrandbits(32),
            gw_time=gps_timestamp(t), ns_time=gps_timestamp(t + 0.05),
            time_since_gps_epoch=_gps_duration(t), rssi=rssi, snr=snr, channel=channel,
            rf_chain=1 if region.name == "EU868" else 0,
            location=common.Location(latitude=lat, longitude=lon, altitude=alt),
            context=(int(t * 1e6) & 0xFFFFFFFF).to_bytes(4, "big"),
            metadata={"region_config_id": region.name.lower(),
                      "region_common_name": region.name},
            crc_status=gw.CRC_OK)

    def _on_uplink(self, ev: UplinkEvent) -> None:
        if not self.up:
            self.counters["uplinks_while_down"] += 1
            return
        rec = self.devices.get(ev.dev_eui)
        if rec is None:
            self.counters["uplinks_unknown_device"] += 1
            return
        self.counters["uplinks"] += 1
        up = ev.uplink
        t = up.t_end
        due = t + self.config.deduplication_delay
        rec.heard = True
        rec.last_seen_at = t
        dedup = self._new_id()
        info = self.device_info(rec)
        rx = self._rx_info(rec, ev)
        drd = self.region.uplink_dr(up.dr)
        if self.config.join_events and not rec.joined:
            self.emit(ipb.JoinEvent(deduplication_id=dedup, time=gps_timestamp(t),
                                    device_info=info, dev_addr=f"{rec.dev_addr:08x}",
                                    region_config_id=self.region.name.lower()), due)
        rec.joined = True
        self.emit(ipb.UplinkEvent(
            deduplication_id=dedup, time=gps_timestamp(t), device_info=info,
            dev_addr=f"{rec.dev_addr:08x}", adr=True, dr=up.dr, f_cnt=up.f_cnt,
            f_port=up.fport, confirmed=False, data=up.payload, rx_info=[rx],
            tx_info=gw.UplinkTxInfo(frequency=up.freq,
                                    modulation=_modulation(drd, downlink=False)),
            region_config_id=self.region.name.lower()), due)
        for item in [q for q in rec.queue if q.is_pending]:
            ok = item.tx is not None and item.tx.accepted > 0
            rec.queue.remove(item)
            self.counters["acks" if ok else "nacks"] += 1
            self.emit(ipb.AckEvent(deduplication_id=dedup, time=gps_timestamp(t),
                                   device_info=info, queue_item_id=item.id, acknowledged=ok,
                                   f_cnt_down=item.f_cnt_down or 0), due)
        if rec.next_status_at is not None and t >= rec.next_status_at:
            self._status(rec, ev, rx, dedup, info, due)
        self._prefilter(rec, up, info, t)

    def _status(self, rec, ev, rx, dedup, info, due) -> None:
        dev = self.network.devices[rec.dev_eui]
        battery = dev.battery.status_byte()
        sf = self.region.uplink_dr(ev.uplink.dr).sf or 7
        margin = max(-32, min(31, int(round(rx.snr - _REQUIRED_SNR.get(sf, -7.5)))))
        level = battery / 254.0 * 100.0 if 0 < battery < 255 else 0.0
        rec.margin, rec.external_power = margin, battery == 0
        rec.battery_level = level if 0 < battery < 255 else None
        rec.next_status_at = ev.uplink.t_end + self.config.status_interval
        self.counters["status_events"] += 1
        self.emit(ipb.StatusEvent(deduplication_id=dedup, time=gps_timestamp(ev.uplink.t_end),
                                  device_info=info, margin=margin,
                                  external_power_source=battery == 0,
                                  battery_level_unavailable=battery == 255,
                                  battery_level=level), due)

    def _prefilter(self, rec: DeviceRecord, up, info, t: float) -> None:
        """ChirpStack's checks before a class A downlink: expired and oversized queue items
        are deleted with a log event; the radio then sends the first one left."""
        rx1_freq, rx1_dr = self.region.rx1(up.freq, up.dr)
        limit = max(self.region.downlink_dr(rx1_dr).max_frm_payload(),
                    self.region.downlink_dr(self.region.rx2[1]).max_frm_payload())
        for item in list(rec.queue):
            if item.is_pending:
                continue
            if item.expires_at is not None and item.expires_at < t:
                self._discard(rec, item, info, t, "EXPIRED",
                              "Device queue-item discarded because it has expired",
                              {"queue_item_id": item.id})
                self.counters["dl_expired"] += 1
                continue
            if len(item.data) > limit:
                self._discard(rec, item, info, t, "DOWNLINK_PAYLOAD_SIZE",
                              "Device queue-item discarded because it exceeds the max. "
                              "payload size",
                              {"max_payload_size": str(limit), "item_size": str(len(item.data)),
                               "queue_item_id": item.id})
                self.counters["dl_discarded_size"] += 1
                continue
            break

    def _discard(self, rec, item, info, t, code, description, context) -> None:
        rec.queue.remove(item)
        self._drop_net(item)
        self.emit(ipb.LogEvent(time=gps_timestamp(t), device_info=info, level=ipb.ERROR,
                               code=ipb.LogCode.Value(code), description=description,
                               context=context), t + self.config.deduplication_delay)

    def _on_tx(self, tx: DownlinkTx) -> None:
        if tx.kind != "unicast":
            return
        rec = self.devices.get(tx.target)
        if rec is None:
            return
        netq = self._netq(rec.dev_eui)
        stash = self._stash.get(rec.dev_eui, [])
        item = next((q for q in rec.queue if not q.is_pending and q.net not in netq
                     and q.net not in stash), None)
        if item is None:
            return
        if not self.up:
            # the gateway sends it, but the TX ack reaches no one: the item stays queued
            # and goes out again after the next uplink once ChirpStack is back
            stash.insert(0, item.net)
            return
        item.f_cnt_down = rec.f_cnt_down
        rec.f_cnt_down = (rec.f_cnt_down + 1) & 0xFFFFFFFF
        if item.confirmed:
            item.is_pending = True
            item.tx = tx
        else:
            rec.queue.remove(item)
        self.counters["dl_sent"] += 1
        drd = self.region.downlink_dr(tx.dr)
        rx_delay = max(1, int(round(tx.t_start - tx.requested)))
        power = 27 if 869_400_000 <= tx.freq <= 869_650_000 else (
            14 if self.region.name == "EU868" else 20)
        txi = gw.DownlinkTxInfo(
            frequency=tx.freq, power=power, modulation=_modulation(drd, downlink=True),
            timing=gw.Timing(delay=gw.DelayTimingInfo(delay=Duration(seconds=rx_delay))),
            context=(int(tx.requested * 1e6) & 0xFFFFFFFF).to_bytes(4, "big"))
        self.emit(ipb.TxAckEvent(downlink_id=self.rng.getrandbits(32),
                                 time=gps_timestamp(tx.t_start), device_info=self.device_info(rec),
                                 queue_item_id=item.id, f_cnt_down=item.f_cnt_down,
                                 gateway_id=self.gateway_id.hex(), tx_info=txi), tx.t_start)

    # ------------------------------------------------------------------ restarts
    def go_down(self) -> None:
        """The process stops: nothing is processed; class A queue entries are kept away
        from the radio (the database keeps them)."""
        if not self.up:
            return
        self.up = False
        for eui in self.network.devices:
            q = self._netq(eui)
            self._stash[eui] = list(q)
            q.clear()

    def come_up(self) -> None:
        if self.up:
            return
        self.up = True
        for eui, items in self._stash.items():
            self._netq(eui)[0:0] = items
        self._stash.clear()
        self.on_change()

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict[str, int]:
        out = dict(self.counters)
        out["mc_queued"] = len(self.mc_queue)
        out["dl_queued"] = sum(len(r.queue) for r in self.devices.values())
        return out

