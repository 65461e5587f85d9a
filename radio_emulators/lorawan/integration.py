"""The HTTP integration of the emulated ChirpStack v4: event encoding exactly as ChirpStack's
HTTP integration writes it, and the client that POSTs the events in virtual time.

Facts (chirpstack/chirpstack, chirpstack/src/integration/http.rs and api/rust/build.rs):

- one POST per event to every configured endpoint (comma-separated URLs), query parameter
  ``event=up|join|ack|txack|log|status|location``, Content-Type ``application/json`` or
  ``application/octet-stream``; no retry (a failed POST is only logged), 5 s timeout;
- Protobuf: ``encode_to_vec`` of the ``integration.*`` message;
- JSON: ``serde_json::to_vec`` of the pbjson-generated serializers, i.e. the proto3 JSON
  mapping (lowerCamelCase names, bytes as padded base64, enums by name, 64-bit integers as
  strings) with these pbjson specifics: messages of the ``integration`` package are built
  with ``emit_fields()`` (scalars, enums, repeated and map fields are written even when
  default; unset message fields are left out), nested ``gw``/``common`` messages leave
  default values out; Timestamps are chrono ``to_rfc3339()`` (``+00:00``, 0/3/6/9 fraction
  digits); Durations ``"<s>.<frac>s"``; f32 fields print the shortest decimal that
  round-trips as f32; compact output, non-ASCII not escaped.

`HttpIntegration` holds events until their due (virtual) time, then POSTs them one at a
time, each inside ``clock.busy()`` until the response is read. A seeded fault hook
(`IntegrationFaults`) duplicates events (same body, hence same deduplicationId), sends
malformed bodies now and then (never decodable) and can lose events.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import itertools
import json
import logging
import math
import random
import struct
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from chirpstack_api import integration as ipb

__all__ = ["EVENT_MESSAGES", "event_type_of", "marshal_json", "to_pbjson", "encode_event",
           "decode_event", "content_type", "IntegrationFaults", "malformed_body",
           "HttpIntegration", "PostRecord", "Waker"]

log = logging.getLogger(__name__)

EVENT_MESSAGES: dict[str, type] = {
    "up": ipb.UplinkEvent, "join": ipb.JoinEvent, "ack": ipb.AckEvent,
    "txack": ipb.TxAckEvent, "log": ipb.LogEvent, "status": ipb.StatusEvent,
    "location": ipb.LocationEvent,
}
_EVENT_OF = {cls.DESCRIPTOR.full_name: name for name, cls in EVENT_MESSAGES.items()}


def event_type_of(msg: Any) -> str:
    try:
        return _EVENT_OF[msg.DESCRIPTOR.full_name]
    except (KeyError, AttributeError):
        raise ValueError(f"not an integration event: {type(msg).__name__}") from None


# ---------------------------------------------------------------------------- JSON (pbjson)
_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}


def _f32_shortest(v: float) -> float:
    """The f64 whose repr is the shortest decimal that round-trips as f32 (what ryu / serde
    print for an f32)."""
    if not math.isfinite(v):
        return v
    target = struct.pack("<f", v)
    for p in range(1, 10):
        cand = float(f"{v:.{p}g}")
        if struct.pack("<f", cand) == target:
            return cand
    return struct.unpack("<f", target)[0]


def _non_finite(v: float) -> str | None:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return None


def _rfc3339(seconds: int, nanos: int) -> str:
    """chrono's DateTime<Utc>::to_rfc3339(): SecondsFormat::AutoSi, '+00:00'."""
    dt = datetime.fromtimestamp(seconds, tz=timezone.utc)
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos == 0:
        frac = ""
    elif nanos % 1_000_000 == 0:
        frac = f".{nanos // 1_000_000:03d}"
    elif nanos % 1_000 == 0:
        frac = f".{nanos // 1_000:06d}"
    else:
        frac = f".{nanos:09d}"
    return base + frac + "+00:00"


def _duration(seconds: int, nanos: int) -> str:
    """pbjson_types::Duration serialisation."""
    s = str(seconds) if seconds != 0 else ("-0" if nanos < 0 else "0")
    if nanos:
        n = abs(nanos)
        millis, rest = divmod(n, 1_000_000)
        micros, ns = divmod(rest, 1_000)
        if micros == 0 and ns == 0:
            s += f".{millis:03d}"
        elif ns == 0:
            s += f".{millis:03d}{micros:03d}"
        else:
            s += f".{millis:03d}{micros:03d}{ns:03d}"
    return s + "s"


def _scalar(fd: FieldDescriptor, v: Any) -> Any:
    t = fd.type
    if t in _INT64:
        return str(v)
    if t == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(bytes(v)).decode("ascii")
    if t == FieldDescriptor.TYPE_ENUM:
        ev = fd.enum_type.values_by_number.get(v)
        return ev.name if ev is not None else v
    if t == FieldDescriptor.TYPE_FLOAT:
        return _non_finite(v) or _f32_shortest(v)
    if t == FieldDescriptor.TYPE_DOUBLE:
        return _non_finite(v) or float(v)
    return v


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def _in_real_oneof(fd: FieldDescriptor) -> bool:
    """In a declared oneof (not the synthetic one protoc makes for a proto3 `optional`)."""
    o = fd.containing_oneof
    return o is not None and not (len(o.fields) == 1 and o.name == "_" + fd.name)


def _value(fd: FieldDescriptor, v: Any) -> Any:
    return to_pbjson(v) if fd.message_type is not None else _scalar(fd, v)


def to_pbjson(msg: Any) -> Any:
    """The JSON value pbjson (as ChirpStack v4 builds it) writes for a message."""
    d = msg.DESCRIPTOR
    name = d.full_name
    if name == "google.protobuf.Timestamp":
        return _rfc3339(msg.seconds, msg.nanos)
    if name == "google.protobuf.Duration":
        return _duration(msg.seconds, msg.nanos)
    if name in ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"):
        return json_format.MessageToDict(msg)
    emit = d.file.package == "integration"
    out: dict[str, Any] = {}
    real_oneofs = []
    for fd in d.fields:
        if _in_real_oneof(fd):
            if fd.containing_oneof not in real_oneofs:
                real_oneofs.append(fd.containing_oneof)
            continue
        key = fd.json_name
        v = getattr(msg, fd.name)
        if _is_map(fd):
            if emit or len(v):
                vfd = fd.message_type.fields_by_name["value"]
                out[key] = {str(k): _value(vfd, v[k]) for k in sorted(v)}
        elif fd.is_repeated:
            if emit or len(v):
                out[key] = [_value(fd, x) for x in v]
        elif fd.message_type is not None or fd.containing_oneof is not None:
            if msg.HasField(fd.name):  # message fields and proto3 `optional` scalars
                out[key] = _value(fd, v)
        elif emit or v != fd.default_value:
            out[key] = _scalar(fd, v)
    for oneof in real_oneofs:  # pbjson writes oneofs after the plain fields
        which = msg.WhichOneof(oneof.name)
        if which is not None:
            fd = d.fields_by_name[which]
            out[fd.json_name] = _value(fd, getattr(msg, which))
    return out


def marshal_json(msg: Any) -> bytes:
    return json.dumps(to_pbjson(msg), separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def encode_event(msg: Any, encoding: str) -> bytes:
    if encoding == "json":
        return marshal_json(msg)
    if encoding == "protobuf":
        return msg.SerializeToString()
    raise ValueError(f"encoding must be 'json' or 'protobuf', not {encoding!r}")


def content_type(encoding: str) -> str:
    return "application/json" if encoding == "json" else "application/octet-stream"


# ---------------------------------------------------------------------------- virtual time
class Waker:
    """Lets a task sleep on the virtual clock until a deadline *or* until poked.

    `poke()` (from a request handler, an uplink handler...) sets the event and holds the
    clock busy until the woken task has planned again (its next `wait`), so time cannot jump
    past something that was just enqueued."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.event = asyncio.Event()
        self._held = None
        self._alarm: asyncio.Task | None = None
        self._alarm_t: float | None = None

    def poke(self) -> None:
        if self._held is None:
            cm = self.clock.busy()
            cm.__enter__()
            self._held = cm
        self.event.set()

    def _release(self) -> None:
        cm, self._held = self._held, None
        if cm is not None:
            cm.__exit__(None, None, None)

    async def _ring_at(self, t: float) -> None:
        await self.clock.sleep_until(t)
        self.poke()

    async def wait(self, deadline: float | None) -> None:
        """Sleep until `deadline` (virtual; None = only a poke wakes us) or a poke. Call
        `begin()` before planning, then this."""
        alarm = self._alarm
        if alarm is not None and (alarm.done() or self._alarm_t != deadline):
            alarm.cancel()
            alarm = self._alarm = None
        if deadline is not None and alarm is None:
            self._alarm_t = deadline
            self._alarm = asyncio.get_running_loop().create_task(self._ring_at(deadline))
            await asyncio.sleep(0)  # the alarm registers its sleeper before we release
        if not self.event.is_set():
            self._release()
        await self.event.wait()

    def begin(self) -> None:
        """Start of a planning round: forget the poke being answered (the busy hold stays
        until the next `wait` has armed its alarm)."""
        self.event.clear()

    def close(self) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        self._release()


# ---------------------------------------------------------------------------- fault hook
@dataclass
class IntegrationFaults:
    """Seeded faults on the integration: every event is duplicated with probability
    `duplicate_p` (the same body again, so the same deduplicationId), preceded by a malformed
    body of the same event type with probability `malformed_p`, and lost with probability
    `lose_p`."""

    duplicate_p: float = 0.0
    malformed_p: float = 0.0
    lose_p: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("duplicate_p", "malformed_p", "lose_p"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name}={v} outside [0, 1]")


def malformed_body(event: str, body: bytes, encoding: str, rng: random.Random) -> bytes:
    """A body of `event` no integration decoder accepts (JSON: truncated, not UTF-8, or
    fields of the wrong type; Protobuf: a length or varint running past the end, or an
    invalid wire type)."""
    kind = rng.randrange(3)
    if encoding == "json":
        if kind == 0 and len(body) > 2:
            return body[: rng.randrange(1, len(body) // 2 + 1)]
        if kind == 1:
            return b"\xff\xfe" + body[:8]
        return b'{"deduplicationId":12345,"time":false}'
    candidates = [body + b"\x0f",                    # field 1, wire type 7: invalid
                  body[:1] + b"\xff\xff\xff\x7f",      # first field's length/value overrun
                  b"\x0a\xff\x01"]                    # field 1 claims 255 bytes, has none
    cls = EVENT_MESSAGES[event]
    for cand in candidates[kind:] + candidates[:kind]:
        try:
            cls().ParseFromString(cand)
        except Exception:  # noqa: BLE001 - DecodeError under every protobuf backend
            return cand
    return b"\x0a\xff\x01"


# ---------------------------------------------------------------------------- the client
@dataclass
class PostRecord:
    """One POST the integration made (kept for tests and reports)."""

    t: float
    event: str
    body: bytes
    kind: str            # "event", "duplicate" or "malformed"
    status: int | None   # HTTP status, None when the request failed


@dataclass(order=True)
class _Pending:
    due: float
    seq: int
    event: str = field(compare=False)
    body: bytes = field(compare=False)


class HttpIntegration:
    """POSTs events to the configured endpoint(s) at their due virtual time, in order."""

    def __init__(self, url: str, clock, *, encoding: str = "json",
                 headers: dict[str, str] | None = None,
                 faults: IntegrationFaults | None = None, timeout: float = 5.0,
                 history: int = 10_000) -> None:
        if encoding not in ("json", "protobuf"):
            raise ValueError(f"encoding must be 'json' or 'protobuf', not {encoding!r}")
        self.endpoints = [u.strip() for u in url.split(",") if u.strip()]
        if not self.endpoints:
            raise ValueError("integration_url is empty")
        self.clock = clock
        self.encoding = encoding
        self.headers = dict(headers or {})
        self.faults = faults or IntegrationFaults()
        self._rng = random.Random(self.faults.seed)
        self.timeout = timeout
        self.posts: deque[PostRecord] = deque(maxlen=history)
        self.counts = {"event": 0, "duplicate": 0, "malformed": 0, "lost": 0, "failed": 0,
                       "dropped": 0}
        self._heap: list[_Pending] = []
        self._seq = itertools.count()
        self._task: asyncio.Task | None = None
        self._session = None
        self._waker: Waker | None = None
        self.error: BaseException | None = None

    # -- feeding
    def submit(self, msg: Any, due: float) -> None:
        """Queue an integration event (a chirpstack_api.integration message) for `due`."""
        event = event_type_of(msg)
        heapq.heappush(self._heap, _Pending(due, next(self._seq), event,
                                            encode_event(msg, self.encoding)))
        if self._waker is not None:
            self._waker.poke()

    def drop_pending(self) -> int:
        """Forget the events not posted yet (the process died); returns how many."""
        n = len(self._heap)
        self._heap.clear()
        self.counts["dropped"] += n
        return n

    @property
    def pending(self) -> int:
        return len(self._heap)

    # -- lifecycle
    async def start(self) -> None:
        import aiohttp

        if self._task is not None:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout))
        self._waker = Waker(self.clock)
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.error = task.exception()
            log.error("integration task failed", exc_info=self.error)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._waker is not None:
            self._waker.close()
            self._waker = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        waker = self._waker
        assert waker is not None
        while True:
            waker.begin()
            due = self._heap[0].due if self._heap else None
            if due is not None and due <= self.clock.now():
                item = heapq.heappop(self._heap)
                with self.clock.busy():
                    await self._deliver(item)
                continue
            await waker.wait(due)

    async def _deliver(self, item: _Pending) -> None:
        f = self.faults
        rng = self._rng
        if f.lose_p and rng.random() < f.lose_p:
            self.counts["lost"] += 1
            return
        if f.malformed_p and rng.random() < f.malformed_p:
            await self._post(item.event, malformed_body(item.event, item.body, self.encoding, rng),
                             "malformed")
        await self._post(item.event, item.body, "event")
        if f.duplicate_p and rng.random() < f.duplicate_p:
            await self._post(item.event, item.body, "duplicate")

    async def _post(self, event: str, body: bytes, kind: str) -> None:
        headers = dict(self.headers)
        headers["Content-Type"] = content_type(self.encoding)
        self.counts[kind] += 1
        for url in self.endpoints:
            status: int | None = None
            try:
                async with self._session.post(url, data=body, params={"event": event},
                                              headers=headers) as resp:
                    await resp.read()
                    status = resp.status
                if status >= 400:
                    self.counts["failed"] += 1
                    log.warning("posting %s event to %s: HTTP %s", event, url, status)
            except Exception as e:  # noqa: BLE001 - ChirpStack only logs these
                self.counts["failed"] += 1
                log.warning("posting %s event to %s failed: %s", event, url, e)
            self.posts.append(PostRecord(self.clock.now(), event, body, kind, status))


def decode_event(event: str, body: bytes, encoding: str) -> Any:
    """Parse a posted body back into its chirpstack_api.integration message (for tests)."""
    cls = EVENT_MESSAGES[event]
    msg = cls()
    if encoding == "protobuf":
        msg.ParseFromString(body)
    else:
        json_format.Parse(body.decode("utf-8"), msg, ignore_unknown_fields=False)
    return msg

