"""gRPC client for the ChirpStack v4 API calls proxyota needs (``grpc.aio``).

Multicast groups (``MulticastGroupService``: Create, AddDevice, RemoveDevice, AddGateway,
Enqueue, ListQueue, FlushQueue, Delete), unicast downlinks (``DeviceService``: Get,
Enqueue, FlushQueue, GetQueue) and root keys (``DeviceService.GetKeys``). Requests carry
``authorization: Bearer <api token>`` metadata; TLS is optional.

Conventions: keys are ``bytes`` (ChirpStack's API wants hex strings, converted here),
``dev_eui`` / gateway ids are 16 hex digits (returned lowercase), ``mc_addr`` is the u32
DevAddr (sent as 8 hex digits, big-endian, as ``lrwn::DevAddr`` prints it), times are GPS
seconds. Arguments are checked before any RPC (:class:`~proxyota.errors.InvalidArgument`).

Failures raise :class:`ChirpStackError` naming the call, the device or group and the gRPC
status. UNAVAILABLE and DEADLINE_EXCEEDED are retried with exponential backoff (see
:class:`RetryPolicy`); RESOURCE_EXHAUSTED is not by default: ChirpStack never returns it
(``chirpstack/src/api/error.rs``), so it comes from the gRPC stack itself (message too
large) or a proxy, where retrying rarely helps. Retrying DEADLINE_EXCEEDED on a
non-idempotent call (Create, Enqueue) can duplicate it if the first attempt did land: a
repeated fragment or command costs airtime but is harmless to the FUOTA protocols.

Clock rule: every attempt runs inside ``with clock.busy():``; the backoff wait between
attempts is ``await clock.sleep(...)`` outside it, so a virtual clock moves on meanwhile.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import grpc
from chirpstack_api.api import (
    device_pb2,
    device_pb2_grpc,
    multicast_group_pb2,
    multicast_group_pb2_grpc,
)
from chirpstack_api.common import common_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from proxyota.clock import Clock, gps_to_unix, unix_to_gps
from proxyota.errors import InvalidArgument, ProxyotaError

__all__ = [
    "ChirpStackClient",
    "ChirpStackError",
    "DeviceInfo",
    "DeviceKeys",
    "DeviceQueueItem",
    "MulticastQueueItem",
    "RetryPolicy",
]

log = logging.getLogger(__name__)

_EUI_RE = re.compile(r"^[0-9a-fA-F]{16}$")
_U32 = 0xFFFF_FFFF
#: largest FRMPayload any RP002 region allows (N at the fastest data rates)
MAX_PAYLOAD = 242


# --------------------------------------------------------------------------------------
# Errors, retry policy, results
# --------------------------------------------------------------------------------------


class ChirpStackError(ProxyotaError):
    """A ChirpStack API call failed.

    ``call`` is ``"Service.Method"``, ``dev_eui`` / ``group_id`` the object concerned (or
    ``None``), ``code`` the gRPC status name (``"NOT_FOUND"``, ``"UNAVAILABLE"``...; two
    codes are proxyota's own: ``"BAD_RESPONSE"`` for an answer that cannot be understood
    and ``"CLOSED"`` for a call on a closed client), ``details`` the server's message and
    ``attempts`` how many attempts were made.
    """

    def __init__(
        self,
        call: str,
        code: str,
        details: str = "",
        *,
        dev_eui: str | None = None,
        group_id: str | None = None,
        application_id: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.call = call
        self.code = code
        self.details = details
        self.dev_eui = dev_eui
        self.group_id = group_id
        self.application_id = application_id
        self.attempts = attempts
        if dev_eui is not None:
            subject = f" for device {dev_eui}"
        elif group_id is not None:
            subject = f" for group {group_id}"
        elif application_id is not None:
            subject = f" for application {application_id}"
        else:
            subject = ""
        tail = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{call}{subject}: {code}: {details}{tail}")


_DEFAULT_RETRY_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient gRPC failures.

    Attempt ``n`` (1-based) failing with a code in ``retry_codes`` is followed, unless it
    was attempt ``max_attempts``, by a wait of ``min(max_backoff, initial *
    multiplier**(n-1))`` scaled by a random factor in ``[1 - jitter, 1 + jitter]`` drawn
    from ``random.Random(seed)`` (deterministic for a given seed).
    """

    max_attempts: int = 5
    initial: float = 0.5
    max_backoff: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.1
    seed: int | None = 0
    retry_codes: frozenset[str] = field(default=_DEFAULT_RETRY_CODES)

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise InvalidArgument(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        for name in ("initial", "max_backoff", "multiplier", "jitter"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
                raise InvalidArgument(f"{name} must be a number >= 0, got {v!r}")
        if self.multiplier < 1:
            raise InvalidArgument(f"multiplier must be >= 1, got {self.multiplier!r}")
        if self.jitter > 1:
            raise InvalidArgument(f"jitter must be in [0, 1], got {self.jitter!r}")
        codes = frozenset(self.retry_codes)
        unknown = sorted(c for c in codes if c not in grpc.StatusCode.__members__)
        if unknown:
            raise InvalidArgument(f"unknown gRPC status names in retry_codes: {unknown}")
        object.__setattr__(self, "retry_codes", codes)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        base = min(self.max_backoff, self.initial * self.multiplier ** (attempt - 1))
        if self.jitter:
            base *= 1.0 + rng.uniform(-self.jitter, self.jitter)
        return max(0.0, base)


@dataclass(frozen=True)
class MulticastQueueItem:
    group_id: str
    f_cnt: int
    f_port: int
    data: bytes
    expires_at: float | None = None  # GPS seconds


@dataclass(frozen=True)
class DeviceQueueItem:
    id: str
    dev_eui: str
    f_port: int
    data: bytes
    confirmed: bool = False
    is_pending: bool = False
    f_cnt_down: int = 0
    is_encrypted: bool = False
    expires_at: float | None = None  # GPS seconds


@dataclass(frozen=True)
class DeviceInfo:
    """A device as ChirpStack knows it. ``class_enabled`` is ``"CLASS_A"`` / ``"CLASS_B"``
    / ``"CLASS_C"``; ``margin`` / ``battery_level`` / ``external_power_source`` come from the
    last DevStatusAns (``None`` if none; ``battery_level`` ``None`` when unavailable)."""

    dev_eui: str
    name: str
    application_id: str
    device_profile_id: str
    description: str = ""
    join_eui: str = ""
    is_disabled: bool = False
    skip_fcnt_check: bool = False
    class_enabled: str = "CLASS_A"
    last_seen_at: float | None = None  # GPS seconds
    margin: int | None = None
    battery_level: float | None = None
    external_power_source: bool | None = None
    tags: Mapping[str, str] = field(default_factory=dict, hash=False)
    variables: Mapping[str, str] = field(default_factory=dict, hash=False, repr=False)


@dataclass(frozen=True)
class DeviceKeys:
    """Root keys. LoRaWAN 1.0.x: the AppKey is ``nwk_key`` (ChirpStack's convention) and
    ``gen_app_key`` is set for TS005; 1.1: ``app_key``. Unset keys are all-zero in
    ChirpStack; ``gen_app_key`` is ``None`` then."""

    nwk_key: bytes = field(repr=False)
    app_key: bytes = field(repr=False)
    gen_app_key: bytes | None = field(default=None, repr=False)


# --------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _eui(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _EUI_RE.match(value):
        raise InvalidArgument(f"{name} must be 16 hex digits, got {value!r}")
    return value.lower()


def _id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{name} must be a non-empty string, got {value!r}")
    return value


def _key(value: Any, name: str) -> str:
    if not isinstance(value, (bytes, bytearray)) or len(value) != 16:
        raise InvalidArgument(f"{name} must be 16 bytes, got {value!r:.60}")
    return bytes(value).hex()


def _int_range(value: Any, name: str, lo: int, hi: int) -> int:
    if not _is_int(value) or not lo <= value <= hi:
        raise InvalidArgument(f"{name} must be an int in {lo}..{hi}, got {value!r}")
    return int(value)


def _f_port(value: Any) -> int:
    return _int_range(value, "f_port", 1, 223)


def _data(value: Any) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidArgument(f"data must be bytes, got {type(value).__name__}")
    data = bytes(value)
    if len(data) > MAX_PAYLOAD:
        raise InvalidArgument(f"data is {len(data)} bytes, more than {MAX_PAYLOAD}")
    return data


def _gps_timestamp(value: Any, name: str) -> Timestamp:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        raise InvalidArgument(f"{name} must be GPS seconds (a number), got {value!r}")
    unix = gps_to_unix(float(value))
    if not 0 <= unix < 253402300800:  # 1970 .. 9999, what a Timestamp can hold
        raise InvalidArgument(f"{name} out of range: {value!r}")
    seconds = int(unix // 1)
    return Timestamp(seconds=seconds, nanos=min(999_999_999, int(round((unix - seconds) * 1e9))))


def _ts_gps(msg: Any, field_name: str) -> float | None:
    if not msg.HasField(field_name):
        return None
    ts = getattr(msg, field_name)
    return unix_to_gps(ts.seconds + ts.nanos * 1e-9)


# --------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------


class ChirpStackClient:
    """Async ChirpStack v4 API client (one channel, created on first use)."""

    def __init__(
        self,
        target: str,
        api_token: str,
        *,
        clock: Clock,
        tls: bool = False,
        root_certificates: bytes | None = None,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 10.0,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if not isinstance(target, str) or not target:
            raise InvalidArgument(f"target must be 'host:port', got {target!r}")
        if not isinstance(api_token, str) or not api_token or "\n" in api_token:
            raise InvalidArgument("api_token must be a non-empty single-line string")
        if root_certificates is not None and not isinstance(root_certificates, bytes):
            raise InvalidArgument("root_certificates must be PEM bytes")
        if root_certificates is not None and not tls:
            raise InvalidArgument("root_certificates given but tls is False")
        if not isinstance(retry, RetryPolicy):
            raise InvalidArgument("retry must be a RetryPolicy")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise InvalidArgument(f"timeout must be > 0 s, got {timeout!r}")
        self.target = target
        self._clock = clock
        self._tls = tls
        self._root_certificates = root_certificates
        self._retry = retry
        self._rng = random.Random(retry.seed)
        self._timeout = float(timeout)
        self._options = list(channel_options)
        self._metadata = (("authorization", f"Bearer {api_token}"),)
        self._channel: grpc.aio.Channel | None = None
        self._stubs: dict[str, Any] = {}
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------
    def _ensure_channel(self, call: str) -> None:
        if self._closed:
            raise ChirpStackError(call, "CLOSED", "the client is closed")
        if self._channel is not None:
            return
        if self._tls:
            creds = grpc.ssl_channel_credentials(root_certificates=self._root_certificates)
            channel = grpc.aio.secure_channel(self.target, creds, options=self._options)
        else:
            channel = grpc.aio.insecure_channel(self.target, options=self._options)
        self._channel = channel
        self._stubs = {
            "MulticastGroupService": multicast_group_pb2_grpc.MulticastGroupServiceStub(channel),
            "DeviceService": device_pb2_grpc.DeviceServiceStub(channel),
        }

    async def close(self) -> None:
        self._closed = True
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    async def __aenter__(self) -> "ChirpStackClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the one place RPCs happen --------------------------------------------------------
    async def _call(
        self,
        service: str,
        method: str,
        request: Any,
        *,
        dev_eui: str | None = None,
        group_id: str | None = None,
        application_id: str | None = None,
    ) -> Any:
        call = f"{service}.{method}"
        subject = {"dev_eui": dev_eui, "group_id": group_id, "application_id": application_id}
        self._ensure_channel(call)
        rpc = getattr(self._stubs[service], method)
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._clock.busy():
                    return await rpc(request, metadata=self._metadata, timeout=self._timeout)
            except grpc.RpcError as e:
                code_obj = e.code() if callable(getattr(e, "code", None)) else None
                code = code_obj.name if code_obj is not None else "UNKNOWN"
                details = (e.details() if callable(getattr(e, "details", None)) else "") or ""
                if code in self._retry.retry_codes and attempt < self._retry.max_attempts:
                    delay = self._retry.backoff(attempt, self._rng)
                    log.warning(
                        "%s (%s) failed with %s, attempt %d/%d, retrying in %.2f s",
                        call, dev_eui or group_id or application_id or "-", code, attempt,
                        self._retry.max_attempts, delay,
                    )
                    await self._clock.sleep(delay)
                    continue
                raise ChirpStackError(call, code, details, attempts=attempt, **subject) from e
            except grpc.aio.UsageError as e:  # channel closed underneath us
                raise ChirpStackError(call, "CLOSED", str(e), **subject) from e

    # -- MulticastGroupService ------------------------------------------------------------
    async def create_multicast_group(
        self,
        *,
        application_id: str,
        name: str,
        mc_addr: int,
        mc_nwk_s_key: bytes,
        mc_app_s_key: bytes,
        group_type: str,
        dr: int,
        frequency: int,
        class_b_ping_slot_periodicity: int = 0,
        class_c_scheduling_type: str = "DELAY",
        region: str | None = None,
        f_cnt: int = 0,
    ) -> str:
        """Create a multicast group; returns its id. ``frequency`` in Hz (0 only for class
        B: ping-slot frequency hopping); ``region`` a ``common.Region`` name (``"EU868"``,
        ``"US915"``...; ``None`` leaves ChirpStack's default, EU868)."""
        application_id = _id(application_id, "application_id")
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"name must be a non-empty string, got {name!r}")
        if group_type not in ("B", "C"):
            raise InvalidArgument(f"group_type must be 'B' or 'C', got {group_type!r}")
        mc_addr = _int_range(mc_addr, "mc_addr", 0, _U32)
        nwk = _key(mc_nwk_s_key, "mc_nwk_s_key")
        app = _key(mc_app_s_key, "mc_app_s_key")
        dr = _int_range(dr, "dr", 0, 15)
        if not _is_int(frequency) or not (
            100_000_000 <= frequency <= 3_000_000_000 or (frequency == 0 and group_type == "B")
        ):
            raise InvalidArgument(
                f"frequency must be in Hz (100 MHz..3 GHz, or 0 for class B hopping), "
                f"got {frequency!r}"
            )
        periodicity = _int_range(
            class_b_ping_slot_periodicity, "class_b_ping_slot_periodicity", 0, 7
        )
        if class_c_scheduling_type not in ("DELAY", "GPS_TIME"):
            raise InvalidArgument(
                f"class_c_scheduling_type must be 'DELAY' or 'GPS_TIME', "
                f"got {class_c_scheduling_type!r}"
            )
        f_cnt = _int_range(f_cnt, "f_cnt", 0, _U32)
        group = multicast_group_pb2.MulticastGroup(
            name=name,
            application_id=application_id,
            mc_addr=f"{mc_addr:08x}",
            mc_nwk_s_key=nwk,
            mc_app_s_key=app,
            f_cnt=f_cnt,
            group_type=(
                multicast_group_pb2.CLASS_B if group_type == "B" else multicast_group_pb2.CLASS_C
            ),
            dr=dr,
            frequency=frequency,
            class_b_ping_slot_periodicity=periodicity,
            class_c_scheduling_type=multicast_group_pb2.MulticastGroupSchedulingType.Value(
                class_c_scheduling_type
            ),
        )
        if region is not None:
            if not isinstance(region, str) or region.upper() not in common_pb2.Region.keys():
                raise InvalidArgument(
                    f"region must be one of {list(common_pb2.Region.keys())}, got {region!r}"
                )
            group.region = common_pb2.Region.Value(region.upper())
        resp = await self._call(
            "MulticastGroupService", "Create",
            multicast_group_pb2.CreateMulticastGroupRequest(multicast_group=group),
            application_id=application_id,
        )
        if not resp.id:
            raise ChirpStackError(
                "MulticastGroupService.Create", "BAD_RESPONSE", "empty group id",
                application_id=application_id,
            )
        return str(resp.id)

    async def add_device_to_multicast_group(self, group_id: str, dev_eui: str) -> None:
        group_id = _id(group_id, "group_id")
        dev_eui = _eui(dev_eui, "dev_eui")
        await self._call(
            "MulticastGroupService", "AddDevice",
            multicast_group_pb2.AddDeviceToMulticastGroupRequest(
                multicast_group_id=group_id, dev_eui=dev_eui
            ),
            dev_eui=dev_eui, group_id=group_id,
        )

    async def remove_device_from_multicast_group(self, group_id: str, dev_eui: str) -> None:
        group_id = _id(group_id, "group_id")
        dev_eui = _eui(dev_eui, "dev_eui")
        await self._call(
            "MulticastGroupService", "RemoveDevice",
            multicast_group_pb2.RemoveDeviceFromMulticastGroupRequest(
                multicast_group_id=group_id, dev_eui=dev_eui
            ),
            dev_eui=dev_eui, group_id=group_id,
        )

    async def add_gateway_to_multicast_group(self, group_id: str, gateway_id: str) -> None:
        group_id = _id(group_id, "group_id")
        gateway_id = _eui(gateway_id, "gateway_id")
        await self._call(
            "MulticastGroupService", "AddGateway",
            multicast_group_pb2.AddGatewayToMulticastGroupRequest(
                multicast_group_id=group_id, gateway_id=gateway_id
            ),
            group_id=group_id,
        )

    async def enqueue_multicast(
        self, group_id: str, f_port: int, data: bytes, f_cnt: int | None = None
    ) -> int:
        """Enqueue one multicast downlink; returns the frame counter ChirpStack assigned
        (ChirpStack ignores a requested ``f_cnt``; it is sent for servers that honour it)."""
        group_id = _id(group_id, "group_id")
        item = multicast_group_pb2.MulticastGroupQueueItem(
            multicast_group_id=group_id, f_port=_f_port(f_port), data=_data(data)
        )
        if f_cnt is not None:
            item.f_cnt = _int_range(f_cnt, "f_cnt", 0, _U32)
        resp = await self._call(
            "MulticastGroupService", "Enqueue",
            multicast_group_pb2.EnqueueMulticastGroupQueueItemRequest(queue_item=item),
            group_id=group_id,
        )
        return int(resp.f_cnt)

    async def list_multicast_queue(self, group_id: str) -> list[MulticastQueueItem]:
        group_id = _id(group_id, "group_id")
        resp = await self._call(
            "MulticastGroupService", "ListQueue",
            multicast_group_pb2.ListMulticastGroupQueueRequest(multicast_group_id=group_id),
            group_id=group_id,
        )
        return [
            MulticastQueueItem(
                group_id=it.multicast_group_id or group_id,
                f_cnt=it.f_cnt,
                f_port=it.f_port,
                data=bytes(it.data),
                expires_at=_ts_gps(it, "expires_at"),
            )
            for it in resp.items
        ]

    async def flush_multicast_queue(self, group_id: str) -> None:
        group_id = _id(group_id, "group_id")
        await self._call(
            "MulticastGroupService", "FlushQueue",
            multicast_group_pb2.FlushMulticastGroupQueueRequest(multicast_group_id=group_id),
            group_id=group_id,
        )

    async def delete_multicast_group(self, group_id: str) -> None:
        group_id = _id(group_id, "group_id")
        await self._call(
            "MulticastGroupService", "Delete",
            multicast_group_pb2.DeleteMulticastGroupRequest(id=group_id),
            group_id=group_id,
        )

    # -- DeviceService --------------------------------------------------------------------
    async def get_device(self, dev_eui: str) -> DeviceInfo:
        dev_eui = _eui(dev_eui, "dev_eui")
        resp = await self._call(
            "DeviceService", "Get", device_pb2.GetDeviceRequest(dev_eui=dev_eui), dev_eui=dev_eui
        )
        d = resp.device
        margin = battery = external = None
        if resp.HasField("device_status"):
            st = resp.device_status
            margin = st.margin
            external = st.external_power_source
            battery = None if st.battery_level < 0 or external else float(st.battery_level)
        return DeviceInfo(
            dev_eui=(d.dev_eui or dev_eui).lower(),
            name=d.name,
            application_id=d.application_id,
            device_profile_id=d.device_profile_id,
            description=d.description,
            join_eui=d.join_eui.lower(),
            is_disabled=d.is_disabled,
            skip_fcnt_check=d.skip_fcnt_check,
            class_enabled=common_pb2.DeviceClass.Name(resp.class_enabled)
            if resp.class_enabled in common_pb2.DeviceClass.values()
            else str(resp.class_enabled),
            last_seen_at=_ts_gps(resp, "last_seen_at"),
            margin=margin,
            battery_level=battery,
            external_power_source=external,
            tags=dict(d.tags),
            variables=dict(d.variables),
        )

    async def enqueue_device(
        self,
        dev_eui: str,
        f_port: int,
        data: bytes,
        *,
        confirmed: bool = False,
        expires_at: float | None = None,
        flush_queue: bool = False,
    ) -> str:
        """Enqueue one unicast downlink; returns the queue item id. ``expires_at`` in GPS
        seconds; ``flush_queue`` empties the device queue first (atomically in ChirpStack)."""
        dev_eui = _eui(dev_eui, "dev_eui")
        item = device_pb2.DeviceQueueItem(
            dev_eui=dev_eui, f_port=_f_port(f_port), data=_data(data), confirmed=bool(confirmed)
        )
        if expires_at is not None:
            item.expires_at.CopyFrom(_gps_timestamp(expires_at, "expires_at"))
        resp = await self._call(
            "DeviceService", "Enqueue",
            device_pb2.EnqueueDeviceQueueItemRequest(
                queue_item=item, flush_queue=bool(flush_queue)
            ),
            dev_eui=dev_eui,
        )
        return str(resp.id)

    async def flush_device_queue(self, dev_eui: str) -> None:
        dev_eui = _eui(dev_eui, "dev_eui")
        await self._call(
            "DeviceService", "FlushQueue",
            device_pb2.FlushDeviceQueueRequest(dev_eui=dev_eui), dev_eui=dev_eui,
        )

    async def get_device_queue(self, dev_eui: str) -> list[DeviceQueueItem]:
        dev_eui = _eui(dev_eui, "dev_eui")
        resp = await self._call(
            "DeviceService", "GetQueue",
            device_pb2.GetDeviceQueueItemsRequest(dev_eui=dev_eui), dev_eui=dev_eui,
        )
        return [
            DeviceQueueItem(
                id=it.id,
                dev_eui=(it.dev_eui or dev_eui).lower(),
                f_port=it.f_port,
                data=bytes(it.data),
                confirmed=it.confirmed,
                is_pending=it.is_pending,
                f_cnt_down=it.f_cnt_down,
                is_encrypted=it.is_encrypted,
                expires_at=_ts_gps(it, "expires_at"),
            )
            for it in resp.result
        ]

    async def get_device_keys(self, dev_eui: str) -> DeviceKeys:
        dev_eui = _eui(dev_eui, "dev_eui")
        call = "DeviceService.GetKeys"
        resp = await self._call(
            "DeviceService", "GetKeys", device_pb2.GetDeviceKeysRequest(dev_eui=dev_eui),
            dev_eui=dev_eui,
        )
        keys = resp.device_keys

        def parse(value: str, name: str, optional: bool) -> bytes | None:
            if optional and value.strip("0") == "":
                return None
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raw = b""
            if len(raw) != 16:
                raise ChirpStackError(
                    call, "BAD_RESPONSE", f"{name} is not 32 hex digits", dev_eui=dev_eui
                )
            return raw

        return DeviceKeys(
            nwk_key=parse(keys.nwk_key, "nwk_key", False) or b"",
            app_key=parse(keys.app_key or "0" * 32, "app_key", False) or b"",
            gen_app_key=parse(keys.gen_app_key, "gen_app_key", True),
        )
