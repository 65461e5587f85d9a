"""Receiver of ChirpStack's HTTP integration (an aiohttp endpoint) feeding proxyota.

ChirpStack v4 POSTs every device event to the configured URL with ``?event=<type>`` and a
JSON or Protobuf body (``chirpstack/src/integration/http.rs``); it does not retry and only
logs a non-2xx answer. :class:`IntegrationReceiver` is the HTTP edge; the transport-neutral
part (decode, drop duplicates, hand over under the clock's ``busy()``) is
:class:`EventDispatcher`, which an MQTT integration can reuse as is (event type from the
topic ``application/{app}/device/{dev_eui}/event/{type}``, same payloads).

HTTP answers: 200 delivered, duplicate (not re-delivered) or ignored type (``location``,
``integration``); 400 malformed body, unknown event type or unsupported content type (the
handler is not called, nothing changes); 401 a required header is missing or wrong; 500 the
handler raised (logged). The clock is held ``busy()`` from the request's arrival until the
handler returned, so a virtual clock cannot advance while an event is in flight.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping

from aiohttp import web

from proxyota.chirpstack.events import Event, parse_event
from proxyota.clock import Clock
from proxyota.errors import DecodeError, InvalidArgument

__all__ = ["DispatchResult", "EventDispatcher", "IntegrationReceiver"]

log = logging.getLogger(__name__)

Handler = Callable[[Event], Awaitable[None]]


@dataclass(frozen=True)
class DispatchResult:
    """What became of one event: ``status`` is ``"delivered"``, ``"duplicate"``,
    ``"ignored"``, ``"malformed"`` or ``"failed"`` (the handler raised); ``reason`` says
    why for the last two."""

    status: str
    event: Event | None = None
    reason: str = ""


class EventDispatcher:
    """Decode events, drop duplicates, deliver to ``handler`` one at a time in arrival order.

    Duplicates: an event whose deduplication key (event type + ChirpStack's
    ``deduplicationId``; ``downlinkId`` for ``txack``) was delivered among the last
    ``dedup_size`` keys is answered but not re-delivered. A key counts as seen only once
    the handler returned, so an event whose handling failed is delivered again if resent;
    a copy arriving while the first is still being handled is dropped.
    """

    def __init__(self, handler: Handler, *, clock: Clock, dedup_size: int = 4096) -> None:
        if not callable(handler):
            raise InvalidArgument("handler must be an async callable")
        if not isinstance(dedup_size, int) or dedup_size < 1:
            raise InvalidArgument(f"dedup_size must be a positive int, got {dedup_size!r}")
        self._handler = handler
        self._clock = clock
        self._dedup_size = dedup_size
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._in_flight: set[str] = set()
        self._lock = asyncio.Lock()
        self.counts: dict[str, int] = {}

    def _count(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1

    def seen(self, key: str) -> bool:
        return key in self._seen or key in self._in_flight

    async def dispatch(self, event_type: str, body: bytes, content_type: str) -> DispatchResult:
        """Decode and deliver one event. Callers should already hold ``clock.busy()`` from
        the moment the event arrived (this holds it too, for the whole call)."""
        with self._clock.busy():
            try:
                event = parse_event(event_type, body, content_type)
            except DecodeError as e:
                self._count("malformed")
                return DispatchResult("malformed", reason=str(e))
            if event is None:
                self._count("ignored")
                return DispatchResult("ignored")
            return await self.deliver(event)

    async def deliver(self, event: Event) -> DispatchResult:
        """Deliver an already decoded event (duplicate check, handler, bookkeeping)."""
        with self._clock.busy():
            key = event.dedup_key
            if key is not None:
                if self.seen(key):
                    if key in self._seen:
                        self._seen.move_to_end(key)
                    self._count("duplicate")
                    return DispatchResult("duplicate", event)
                self._in_flight.add(key)
            try:
                async with self._lock:
                    await self._handler(event)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the handler's failure is reported, never fatal here
                log.exception("handler failed for %s event of %s", event.event_type, event.dev_eui)
                self._count("failed")
                return DispatchResult("failed", event, f"{type(e).__name__}: {e}")
            finally:
                if key is not None:
                    self._in_flight.discard(key)
            if key is not None:
                self._seen[key] = None
                while len(self._seen) > self._dedup_size:
                    self._seen.popitem(last=False)
            self._count("delivered")
            return DispatchResult("delivered", event)


class IntegrationReceiver:
    """aiohttp endpoint for ChirpStack's HTTP integration.

    Configure ChirpStack's HTTP integration with the URL returned by :meth:`start` (its
    ``path``); JSON or Protobuf encoding both work. ``required_headers`` (e.g.
    ``{"Authorization": "Bearer s3cret"}``, set as "headers" in ChirpStack's integration
    form) are checked on every request. ``app`` can also be mounted in a larger aiohttp
    application.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        clock: Clock,
        path: str = "/integration",
        dedup_size: int = 4096,
        required_headers: Mapping[str, str] | None = None,
        client_max_size: int = 1 << 20,
    ) -> None:
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidArgument(f"path must start with '/', got {path!r}")
        self._clock = clock
        self.path = path
        self.dispatcher = EventDispatcher(handler, clock=clock, dedup_size=dedup_size)
        self._required = dict(required_headers or {})
        self.app = web.Application(client_max_size=client_max_size)
        self.app.router.add_post(path, self._handle)
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0: an ephemeral port); returns the endpoint URL."""
        if self._runner is not None:
            raise InvalidArgument("receiver already started")
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        self.url = f"http://{shown}:{bound_port}{self.path}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> "IntegrationReceiver":
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _authorized(self, request: web.Request) -> bool:
        for name, expected in self._required.items():
            got = request.headers.get(name)
            if got is None or not hmac.compare_digest(got.encode(), expected.encode()):
                return False
        return True

    async def _handle(self, request: web.Request) -> web.Response:
        with self._clock.busy():
            if not self._authorized(request):
                return web.Response(status=401, text="missing or wrong authorization header\n")
            event_type = request.query.get("event")
            if not event_type:
                return web.Response(status=400, text="missing ?event= query parameter\n")
            body = await request.read()
            result = await self.dispatcher.dispatch(
                event_type, body, request.headers.get("Content-Type", "")
            )
            if result.status == "malformed":
                log.warning("rejected %s event: %s", event_type, result.reason)
                return web.Response(status=400, text=result.reason + "\n")
            if result.status == "failed":
                return web.Response(status=500, text="handler failed\n")
            return web.Response(status=200, text=result.status + "\n")
