"""Test harness for the emulated ChirpStack: a VirtualClock, a campaign network, the
emulated server on a loopback port, a small aiohttp event sink standing in for the
gateway's integration endpoint, and grpc.aio stubs from chirpstack_api whose calls are made
inside ``clock.busy()`` as the gateway will make them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc
from aiohttp import web

from chirpstack_api import api
from radio_emulators.clock import VirtualClock
from radio_emulators.lorawan.campaign import build_campaign_network
from radio_emulators.lorawan.chirpstack import EmulatedChirpStack
from radio_emulators.lorawan.integration import decode_event

T0 = 1_400_000_000.0
APP_ID = str(uuid.UUID(int=0x1234))
TOKEN = "test-api-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
# reconnect quickly after the emulated server really went away (restart_mode="refuse")
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 50),
                   ("grpc.min_reconnect_backoff_ms", 50),
                   ("grpc.max_reconnect_backoff_ms", 100)]


@dataclass
class Received:
    event: str
    body: bytes
    content_type: str
    t: float            # virtual time of reception


class EventSink:
    """The integration endpoint: records every POST (virtual time included)."""

    def __init__(self, clock: VirtualClock, status: int = 200) -> None:
        self.clock = clock
        self.status = status
        self.got: list[Received] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        with self.clock.busy():
            body = await request.read()
            self.got.append(Received(request.query.get("event", ""), body,
                                     request.headers.get("Content-Type", ""),
                                     self.clock.now()))
            return web.Response(status=self.status)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/events", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/events"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def of(self, event: str) -> list[Received]:
        return [r for r in self.got if r.event == event]

    def decoded(self, event: str, encoding: str = "json") -> list:
        return [decode_event(event, r.body, encoding) for r in self.of(event)]


class Harness:
    def __init__(self, n_devices: int = 3, *, encoding: str = "json", seed: int = 1,
                 net_kw: dict | None = None, cs_kw: dict | None = None) -> None:
        self.clock = VirtualClock(T0)
        kw = dict(seed=seed, start=T0, uplink_period=300.0)
        kw.update(net_kw or {})
        self.cn = build_campaign_network(n_devices, **kw)
        self.net = self.cn.network
        self.encoding = encoding
        self.sink = EventSink(self.clock)
        self.cs_kw = dict(cs_kw or {})
        self.cs: EmulatedChirpStack | None = None
        self.channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> "Harness":
        url = await self.sink.start()
        self.cs = EmulatedChirpStack(self.net, self.clock, api_token=TOKEN,
                                     integration_url=url, encoding=self.encoding,
                                     application_id=APP_ID, device_keys=self.cn.keys,
                                     seed=7, **self.cs_kw)
        port = await self.cs.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
        self.dev = api.DeviceServiceStub(self.channel)
        self.mc = api.MulticastGroupServiceStub(self.channel)
        self.prof = api.DeviceProfileServiceStub(self.channel)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.channel.close()
        await self.cs.stop()
        await self.sink.stop()

    # -- calls as the gateway makes them: inside clock.busy()
    async def call(self, method, request, metadata=AUTH):
        with self.clock.busy():
            return await method(request, metadata=metadata)

    async def error(self, method, request, metadata=AUTH) -> grpc.StatusCode:
        with self.clock.busy():
            try:
                await method(request, metadata=metadata)
            except grpc.aio.AioRpcError as e:
                return e.code()
        raise AssertionError(f"{method} succeeded")

    async def sleep(self, seconds: float) -> None:
        await self.clock.sleep(seconds)

    def eui(self, i: int) -> str:
        return self.cn.devices[i].dev_eui.hex()

    async def create_group(self, **fields) -> str:
        g = dict(name="fuota", application_id=APP_ID, mc_addr="01ab23cd",
                 mc_nwk_s_key="00" * 16, mc_app_s_key="11" * 16, group_type=api.CLASS_C,
                 dr=5, frequency=869_525_000,
                 class_c_scheduling_type=api.DELAY)
        g.update(fields)
        resp = await self.call(self.mc.Create, api.CreateMulticastGroupRequest(
            multicast_group=api.MulticastGroup(**g)))
        return resp.id
