"""The emulated ChirpStack v4 network server: the chirpstack_api gRPC services over real
sockets (grpc.aio), the HTTP integration, and the task that runs the emulated radio network
in virtual time.

    cs = EmulatedChirpStack(network, clock, api_token="secret",
                            integration_url="http://127.0.0.1:8090/events",
                            encoding="json", application_id=APP_ID, device_keys=keys)
    port = await cs.start()            # 127.0.0.1:<port>, Bearer token "secret"
    ...
    await cs.restart(down_for=120.0)   # UNAVAILABLE for 120 virtual seconds, queues kept
    await cs.stop()

Served: DeviceService (Get, List, GetKeys, Enqueue, FlushQueue, GetQueue, GetNextFCntDown),
DeviceProfileService.Get, MulticastGroupService (Create, Get, Update, Delete, List,
AddDevice, RemoveDevice, AddGateway, RemoveGateway, Enqueue, FlushQueue, ListQueue); any
other method answers UNIMPLEMENTED. Rules and events: see `chirpstack_core`; encoding of
the events: see `integration`.

Virtual time discipline (radio_emulators.clock.VirtualClock): every request is handled
inside ``clock.busy()``; every POST holds it until its response is read; the network task
loops "sleep until the next radio or scheduler event, run the network up to now" and is
woken (with the clock held) whenever a request changes what comes next. Virtual time
therefore moves only when the whole system is idle.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

import grpc

from chirpstack_api import api
from radio_emulators.lorawan.chirpstack_core import (METHODS, ApiError, ChirpStackConfig,
                                                     ChirpStackCore, DeviceKeys)
from radio_emulators.lorawan.integration import HttpIntegration, IntegrationFaults, Waker
from radio_emulators.lorawan.network import Network

__all__ = ["EmulatedChirpStack", "DeviceKeys", "ChirpStackConfig", "IntegrationFaults"]

log = logging.getLogger(__name__)

_SERVICES = {
    "DeviceService": (api.DeviceServiceServicer, api.add_DeviceServiceServicer_to_server),
    "DeviceProfileService": (api.DeviceProfileServiceServicer,
                             api.add_DeviceProfileServiceServicer_to_server),
    "MulticastGroupService": (api.MulticastGroupServiceServicer,
                              api.add_MulticastGroupServiceServicer_to_server),
}


def _servicer(service: str, cs: "EmulatedChirpStack") -> Any:
    base, _ = _SERVICES[service]
    ns: dict[str, Any] = {}
    for rpc, method in METHODS[service].items():
        async def handler(self, request, context, _m=method, _name=f"{service}.{rpc}"):
            return await cs._call(_name, _m, request, context)
        handler.__name__ = rpc
        ns[rpc] = handler
    return type(f"Emulated{service}", (base,), ns)()


class EmulatedChirpStack:
    """ChirpStack v4 as the gateway sees it: gRPC API + HTTP integration over loopback.

    Args:
        network: the emulated radio network (its devices become ChirpStack devices).
        clock: the VirtualClock shared with the gateway.
        api_token: the only accepted ``authorization: Bearer <token>``.
        integration_url: event endpoint(s), comma-separated; ``?event=<type>`` is added.
        encoding: "json" or "protobuf" (the HTTP integration's "JSON" checkbox).
        application_id: UUID of the application holding every device.
        tenant_id: UUID of the tenant (random from `seed` if None).
        device_keys: DevEUI -> DeviceKeys (GetKeys answers these; defaults: the device's
            own GenAppKey / AppKey and a random nwk_key).
        seed: seeds ids, uplink metadata and the per-device link quality.
        faults: IntegrationFaults (duplicates, malformed bodies, losses; seeded).
        restart_mode: "unavailable" (restart keeps the socket and answers UNAVAILABLE) or
            "refuse" (the server really stops: connection refused, then rebinds the port).
        gateway_id: the emulated gateway's EUI (hex).
        headers: extra HTTP headers on every POST.
        config / **settings: ChirpStackConfig fields (margins, deduplication delay,
            status interval, duty-cycle policy, ...).
    """

    def __init__(self, network: Network, clock, *, api_token: str, integration_url: str,
                 encoding: str = "json", application_id: str, tenant_id: str | None = None,
                 device_keys: Mapping[bytes, DeviceKeys] | None = None, seed: int = 0,
                 faults: IntegrationFaults | None = None, restart_mode: str = "unavailable",
                 gateway_id: str = "0016c001f153a14c", headers: dict[str, str] | None = None,
                 config: ChirpStackConfig | None = None, **settings: Any) -> None:
        if not api_token:
            raise ValueError("api_token must not be empty")
        if restart_mode not in ("unavailable", "refuse"):
            raise ValueError("restart_mode must be 'unavailable' or 'refuse'")
        if config is not None and settings:
            raise ValueError("give either config or keyword settings, not both")
        self.network = network
        self.clock = clock
        self.api_token = api_token
        self.restart_mode = restart_mode
        self.integration = HttpIntegration(integration_url, clock, encoding=encoding,
                                           headers=headers, faults=faults)
        self.core = ChirpStackCore(network, application_id=application_id,
                                   tenant_id=tenant_id, emit=self.integration.submit,
                                   config=config or ChirpStackConfig(**settings), seed=seed,
                                   gateway_id=gateway_id, device_keys=device_keys)
        self.core.on_change = self._poke
        self.calls: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.error: BaseException | None = None
        self._server: grpc.aio.Server | None = None
        self._runner: asyncio.Task | None = None
        self._waker: Waker | None = None
        self._restarting = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def up(self) -> bool:
        return self.core.up

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start the gRPC server, the integration and the network task; return the port."""
        if self._runner is not None:
            raise RuntimeError("already started")
        now = self.clock.now()
        if self.network.now > now + 1e-9:
            raise ValueError(f"the network is at {self.network.now}, ahead of the clock {now}")
        self.host = host
        await self._serve(port)
        await self.integration.start()
        self._waker = Waker(self.clock)
        self._runner = asyncio.get_running_loop().create_task(self._run())
        self._runner.add_done_callback(self._runner_done)
        return self.port

    async def _serve(self, port: int) -> None:
        server = grpc.aio.server()
        for name, (_, add) in _SERVICES.items():
            add(_servicer(name, self), server)
        bound = server.add_insecure_port(f"{self.host}:{port}")
        if not bound:
            raise OSError(f"cannot bind {self.host}:{port}")
        await server.start()
        self._server, self.port = server, bound

    async def stop(self) -> None:
        """Stop everything; re-raises an error that ended the network task."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            try:
                await runner
            except (asyncio.CancelledError, Exception):
                pass
        if self._waker is not None:
            self._waker.close()
            self._waker = None
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
        await self.integration.stop()
        if self.error is not None:
            raise self.error
        if self.integration.error is not None:
            raise self.integration.error

    async def __aenter__(self) -> "EmulatedChirpStack":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def restart(self, down_for: float) -> None:
        """Crash and restart: gRPC answers UNAVAILABLE (or refuses connections) and nothing
        is processed for `down_for` virtual seconds; queues, groups, counters survive (the
        database), events not yet posted are lost."""
        if down_for < 0:
            raise ValueError("down_for must be >= 0")
        if self._restarting:
            raise RuntimeError("already restarting")
        self._restarting = True
        try:
            with self.clock.busy():        # the outage starts now, whatever the sockets do
                self.core.go_down()
                self.integration.drop_pending()
                if self.restart_mode == "refuse" and self._server is not None:
                    await self._server.stop(grace=None)
                    self._server = None
            await self.clock.sleep(down_for)
            with self.clock.busy():
                if self.restart_mode == "refuse":
                    await self._serve(self.port)
                self.core.come_up()
        finally:
            self._restarting = False

    def add_device(self, device, keys: DeviceKeys | None = None, *, downlink=None,
                   uplink=None) -> None:
        """Add an end device to the radio network and to ChirpStack's registry."""
        self.network.add_device(device, downlink=downlink, uplink=uplink)
        self.core.add_device(device, keys, now=self.clock.now())
        self._poke()

    # ------------------------------------------------------------------ the network task
    def _poke(self) -> None:
        if self._waker is not None:
            self._waker.poke()

    def _runner_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.error = task.exception()
            log.error("emulated ChirpStack network task failed", exc_info=self.error)

    async def _run(self) -> None:
        waker = self._waker
        assert waker is not None
        while True:
            waker.begin()
            now = self.clock.now()
            self.core.dispatch_due(now)
            self.network.run_until(now)
            times = [t for t in (self.network.next_event_time(), self.core.next_due())
                     if t is not None]
            await waker.wait(min(times) if times else None)

    # ------------------------------------------------------------------ requests
    async def _call(self, name: str, method: str, request: Any, context) -> Any:
        with self.clock.busy():
            self.calls[name] = self.calls.get(name, 0) + 1
            code, message = self._refuse(context)
            if code is None:
                try:
                    return self.core.handle(method, request, self.clock.now())
                except ApiError as e:
                    code, message = getattr(grpc.StatusCode, e.code), e.message
            self.errors[code.name] = self.errors.get(code.name, 0) + 1
            await context.abort(code, message)

    def _refuse(self, context) -> tuple[grpc.StatusCode | None, str]:
        if not self.core.up:
            return grpc.StatusCode.UNAVAILABLE, "ChirpStack is restarting (emulated outage)"
        md = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        auth = md.get("authorization")
        if auth is None:
            return grpc.StatusCode.UNAUTHENTICATED, "no authorization provided"
        if not auth.startswith("Bearer "):
            return (grpc.StatusCode.UNAUTHENTICATED,
                    "authorization metadata must be in format 'Bearer <TOKEN>")
        if auth[len("Bearer "):] != self.api_token:
            return grpc.StatusCode.UNAUTHENTICATED, "InvalidSignature"
        return None, ""

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict[str, Any]:
        return {"core": self.core.stats(), "integration": dict(self.integration.counts),
                "calls": dict(self.calls), "errors": dict(self.errors),
                "network": self.network.stats()}
