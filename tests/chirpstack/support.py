"""Test doubles for the ChirpStack adapter tests.

* :class:`RecordingClock`: a Clock whose sleeps return at once (time jumps) and which
  records how deep ``busy()`` was nested at every sleep and every RPC.
* :class:`FakeChirpStack`: minimal in-test grpc.aio servicers for ``MulticastGroupService``
  and ``DeviceService`` that record each request (with its metadata and the clock's busy
  depth) and can be scripted to fail.
* :func:`to_pbjson`: protobuf message -> the JSON ChirpStack's HTTP integration sends. It
  mirrors what ``pbjson-build`` generates (influxdata/pbjson ``generator/message.rs``) with
  ``emit_fields()`` for the ``integration`` package only (chirpstack ``api/rust/build.rs``):
  scalar, enum, repeated and map fields of ``integration`` messages always present, message
  fields and oneof / optional fields only when set (pbjson treats proto3 message fields as
  ``Option``), nested ``gw`` / ``common`` messages without default-valued fields, 64-bit
  ints as strings, f32 as the shortest decimal that round-trips as f32, bytes as padded
  standard base64, enums by name, timestamps as
  chrono ``to_rfc3339()`` (``+00:00``, 0/3/6/9 fraction digits), durations as
  ``"<s>.<frac>s"``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterator

import grpc
import numpy as np
from chirpstack_api.api import (
    device_pb2,
    device_pb2_grpc,
    multicast_group_pb2,
    multicast_group_pb2_grpc,
)
from google.protobuf import empty_pb2, json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message


class RecordingClock:
    def __init__(self, start: float = 1_400_000_000.0) -> None:
        self.t = start
        self.depth = 0
        self.sleeps: list[tuple[float, int]] = []  # (seconds, busy depth while sleeping)

    def now(self) -> float:
        return self.t

    async def sleep(self, dt_: float) -> None:
        self.sleeps.append((dt_, self.depth))
        self.t += max(0.0, dt_)
        await asyncio.sleep(0)

    async def sleep_until(self, t: float) -> None:
        await self.sleep(t - self.t)

    @contextmanager
    def busy(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1


class Recorder:
    """Shared state of the fake servicers."""

    def __init__(self, busy_depth: Any) -> None:
        self.busy_depth = busy_depth  # callable -> int, sampled while handling
        self.calls: list[tuple[str, Message, dict[str, str], int]] = []
        self.failures: dict[str, list[grpc.StatusCode]] = defaultdict(list)
        self.responses: dict[str, Message] = {}
        self.delay: dict[str, list[float]] = defaultdict(list)

    def requests(self, method: str) -> list[Message]:
        return [req for name, req, _, _ in self.calls if name == method]

    async def handle(self, method: str, request: Message, context: Any, default: Message) -> Message:
        md = {k: v for k, v in (context.invocation_metadata() or ())}
        self.calls.append((method, request, md, self.busy_depth()))
        if self.delay[method]:
            await asyncio.sleep(self.delay[method].pop(0))
        if self.failures[method]:
            code = self.failures[method].pop(0)
            await context.abort(code, f"scripted {code.name} for {method}")
        return self.responses.get(method, default)


def _method(name: str, default: Any):
    async def handler(self, request, context):  # noqa: ANN001
        return await self.rec.handle(name, request, context, default())

    handler.__name__ = name
    return handler


class MulticastServicer(multicast_group_pb2_grpc.MulticastGroupServiceServicer):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    Create = _method("Create", lambda: multicast_group_pb2.CreateMulticastGroupResponse(
        id="6a3b7a1e-0000-4000-8000-000000000001"))
    AddDevice = _method("AddDevice", empty_pb2.Empty)
    RemoveDevice = _method("RemoveDevice", empty_pb2.Empty)
    AddGateway = _method("AddGateway", empty_pb2.Empty)
    Enqueue = _method("Enqueue", lambda: multicast_group_pb2.EnqueueMulticastGroupQueueItemResponse(f_cnt=7))
    ListQueue = _method("ListQueue", multicast_group_pb2.ListMulticastGroupQueueResponse)
    FlushQueue = _method("FlushQueue", empty_pb2.Empty)
    Delete = _method("Delete", empty_pb2.Empty)


class DeviceServicer(device_pb2_grpc.DeviceServiceServicer):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    Get = _method("Get", device_pb2.GetDeviceResponse)
    Enqueue = _method("DeviceEnqueue", lambda: device_pb2.EnqueueDeviceQueueItemResponse(
        id="11111111-2222-4333-8444-555555555555"))
    FlushQueue = _method("DeviceFlushQueue", empty_pb2.Empty)
    GetQueue = _method("GetQueue", device_pb2.GetDeviceQueueItemsResponse)
    GetKeys = _method("GetKeys", device_pb2.GetDeviceKeysResponse)


class FakeChirpStack:
    """Both servicers on 127.0.0.1:<ephemeral> (insecure, or TLS with ``credentials``)."""

    def __init__(self, busy_depth: Any, credentials: grpc.ServerCredentials | None = None) -> None:
        self.rec = Recorder(busy_depth)
        self._credentials = credentials
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> "FakeChirpStack":
        self.server = grpc.aio.server()
        multicast_group_pb2_grpc.add_MulticastGroupServiceServicer_to_server(
            MulticastServicer(self.rec), self.server)
        device_pb2_grpc.add_DeviceServiceServicer_to_server(DeviceServicer(self.rec), self.server)
        if self._credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", self._credentials)
        await self.server.start()
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)


# --------------------------------------------------------------------------------------
# pbjson emulation
# --------------------------------------------------------------------------------------

_INT64 = {
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
}


def rfc3339_chrono(seconds: int, nanos: int) -> str:
    """chrono ``DateTime<Utc>::to_rfc3339()`` (SecondsFormat::AutoSi, ``+00:00``)."""
    base = dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos == 0:
        frac = ""
    elif nanos % 1_000_000 == 0:
        frac = f".{nanos // 1_000_000:03d}"
    elif nanos % 1000 == 0:
        frac = f".{nanos // 1000:06d}"
    else:
        frac = f".{nanos:09d}"
    return f"{base}{frac}+00:00"


def duration_pbjson(seconds: int, nanos: int) -> str:
    s = str(seconds) if seconds else ("-0" if nanos < 0 else "0")
    if nanos:
        n = abs(nanos)
        if n % 1_000_000 == 0:
            s += f".{n // 1_000_000:03d}"
        elif n % 1000 == 0:
            s += f".{n // 1000:06d}"
        else:
            s += f".{n:09d}"
    return s + "s"


def _scalar(fd: FieldDescriptor, v: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_ENUM:
        ev = fd.enum_type.values_by_number.get(v)
        return ev.name if ev is not None else v
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(v).decode()
    if fd.type in _INT64:
        return str(v)
    if fd.type == FieldDescriptor.TYPE_FLOAT:
        return float(str(np.float32(v)))  # serde's shortest f32 representation
    return v


def _message(m: Message) -> Any:
    name = m.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        return rfc3339_chrono(m.seconds, m.nanos)
    if name == "google.protobuf.Duration":
        return duration_pbjson(m.seconds, m.nanos)
    if name in ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"):
        return json_format.MessageToDict(m)
    return to_pbjson(m)


def to_pbjson(msg: Message) -> dict[str, Any]:
    emit = msg.DESCRIPTOR.full_name.startswith("integration.")
    out: dict[str, Any] = {}
    for fd in msg.DESCRIPTOR.fields:
        name = fd.json_name
        value = getattr(msg, fd.name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            vfd = fd.message_type.fields_by_name["value"]
            if emit or len(value):
                out[name] = {
                    str(k): (_message(v) if vfd.message_type else _scalar(vfd, v))
                    for k, v in value.items()
                }
        elif fd.is_repeated:
            if emit or len(value):
                out[name] = [_message(v) if fd.message_type else _scalar(fd, v) for v in value]
        elif fd.containing_oneof is not None:
            if msg.HasField(fd.name):
                out[name] = _message(value) if fd.message_type else _scalar(fd, value)
        elif fd.message_type is not None:
            if msg.HasField(fd.name):
                out[name] = _message(value)
        elif emit or value != fd.default_value:
            out[name] = _scalar(fd, value)
    return out
