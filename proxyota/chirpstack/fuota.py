"""Runs a LoRaWAN FUOTA session machine against ChirpStack: the driver of principle 1.

:class:`~proxyota.lorawan.session.FuotaSession` is sans-IO; this driver gives it time (a
:class:`~proxyota.clock.Clock`), feeds it the fPort 200-203 uplinks that ChirpStack's
integration delivers (:class:`~proxyota.chirpstack.events.UplinkEvent`), and executes the
actions it returns through :class:`~proxyota.chirpstack.client.ChirpStackClient`.

Delivery: ChirpStack's ``txack`` event names the queue item a gateway transmitted; the driver
remembers which request each queue item carries (``queue_items``, saved with the state) and
reports the transmission to the machine (:meth:`FuotaSession.on_delivered`), whose answer timers
then start at the real delivery instead of at enqueue time (class A devices fetch a downlink
only at their next uplink).

Durability: after every step the machine's state (plus the driver's own, the multicast group
id) is saved through a :class:`StateSink` *before* the step's actions are executed, so a crash
can lose an action but never a state change; the machine's request retries and the repair
rounds recover lost actions. :meth:`FuotaDriver.resume` rebuilds the machine from the saved
document.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

from proxyota.chirpstack.client import ChirpStackClient, ChirpStackError
from proxyota.chirpstack.events import Event, TxAckEvent, UplinkEvent
from proxyota.clock import Clock
from proxyota.errors import DecodeError
from proxyota.fsutil import atomic_write
from proxyota.lorawan.session import FuotaSession
from proxyota.lorawan.session_actions import (
    Action,
    CreateMulticastGroup,
    DeleteMulticastGroup,
    Log,
    SendMulticast,
    SendUnicast,
)
from proxyota.lorawan.session_config import SessionConfig
from proxyota.lorawan.session_state import SessionState, Stage

log = logging.getLogger("proxyota.fuota")

FUOTA_PORTS = frozenset({200, 201, 202, 203})


class StateSink(Protocol):
    """Where the driver keeps a campaign's state document (the store implements it)."""

    async def save(self, campaign_id: str, doc: dict[str, Any]) -> None: ...

    async def load(self, campaign_id: str) -> dict[str, Any] | None: ...


class FileStateSink:
    """One JSON file per campaign in ``root``: temporary file, fsync, rename, fsync dir."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.saves = 0

    def _path(self, campaign_id: str) -> Path:
        if not campaign_id or "/" in campaign_id or campaign_id.startswith("."):
            raise ValueError(f"bad campaign id {campaign_id!r}")
        return self.root / f"{campaign_id}.json"

    async def save(self, campaign_id: str, doc: dict[str, Any]) -> None:
        data = json.dumps(doc, separators=(",", ":")).encode()
        await asyncio.to_thread(atomic_write, self._path(campaign_id), data)
        self.saves += 1

    async def load(self, campaign_id: str) -> dict[str, Any] | None:
        path = self._path(campaign_id)
        if not path.exists():
            return None
        return json.loads(await asyncio.to_thread(path.read_bytes))


@dataclass
class DriverStats:
    uplinks: int = 0
    uplinks_ignored: int = 0
    malformed: int = 0
    actions: int = 0
    action_errors: int = 0
    unicast_enqueued: int = 0
    multicast_enqueued: int = 0
    errors: list[str] = field(default_factory=list)


class FuotaDriver:
    """Drive one campaign's :class:`FuotaSession` through ChirpStack."""

    def __init__(
        self,
        session: FuotaSession,
        client: ChirpStackClient,
        clock: Clock,
        *,
        campaign_id: str,
        application_id: str,
        sink: StateSink,
        gateway_ids: tuple[str, ...] = (),
        class_c_scheduling_type: str = "DELAY",
        group_id: str | None = None,
        on_node_event: Callable[[Event], Awaitable[None]] | None = None,
    ) -> None:
        self.session = session
        self.client = client
        self.clock = clock
        self.campaign_id = campaign_id
        self.application_id = application_id
        self.sink = sink
        self.gateway_ids = gateway_ids
        self.class_c_scheduling_type = class_c_scheduling_type
        self.group_id = group_id
        self.on_node_event = on_node_event
        self.stats = DriverStats()
        #: ChirpStack queue item id -> (dev_eui, request kind), for txack events
        self.queue_items: dict[str, tuple[str, str]] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._events: deque[tuple[Event, float]] = deque()

    # -- construction / resume ----------------------------------------------------------
    @classmethod
    async def resume(
        cls,
        config: SessionConfig,
        image: bytes,
        client: ChirpStackClient,
        clock: Clock,
        *,
        campaign_id: str,
        application_id: str,
        sink: StateSink,
        **kwargs: Any,
    ) -> "FuotaDriver":
        """A driver for ``campaign_id``: resumed from the sink when it holds a state, else new."""
        doc = await sink.load(campaign_id)
        if doc is None:
            session = FuotaSession(config, image)
            return cls(session, client, clock, campaign_id=campaign_id,
                       application_id=application_id, sink=sink, **kwargs)
        state = SessionState.from_dict(doc["machine"])
        session = FuotaSession(config, image, state)
        driver = cls(session, client, clock, campaign_id=campaign_id,
                     application_id=application_id, sink=sink,
                     group_id=doc.get("driver", {}).get("group_id"), **kwargs)
        driver.queue_items = {k: (v[0], v[1]) for k, v in
                              doc.get("driver", {}).get("queue_items", {}).items()}
        log.info("campaign %s resumed at stage %s", campaign_id, doc["machine"].get("stage"))
        return driver

    def document(self) -> dict[str, Any]:
        return {
            "machine": self.session.state.to_dict(),
            "driver": {"group_id": self.group_id,
                       "queue_items": {k: list(v) for k, v in self.queue_items.items()}},
        }

    # -- running --------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        """Run until the session is finished; returns the machine's report.

        Integration events are queued by :meth:`handle_event` and processed here, in order,
        one step at a time, like the timers."""
        if self.session.state.stage == Stage.CREATED:
            async with self._lock:
                with self.clock.busy():
                    actions = self.session.start(self.clock.now())
                await self._step(actions)
        while not self.session.finished:
            if self._events:
                await self._process(self._events.popleft())
                continue
            deadline = self.session.next_deadline()
            self._wake.clear()
            waiters = [asyncio.ensure_future(self._wake.wait())]
            if deadline is not None:
                waiters.append(asyncio.ensure_future(self.clock.sleep_until(deadline)))
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
            async with self._lock:
                with self.clock.busy():
                    due = self.session.next_deadline()
                    actions = (self.session.on_timer(self.clock.now())
                               if due is not None and due <= self.clock.now() else None)
                if actions is not None:
                    await self._step(actions)
        return self.session.report()

    async def handle_event(self, event: Event) -> None:
        """The integration's callback. fPort 200-203 uplinks of the campaign's devices and
        ``txack`` events are queued for :meth:`run` (never processed inside the HTTP request,
        so a ChirpStack call retrying with backoff cannot stall the integration); everything
        goes to ``on_node_event`` too."""
        if self.on_node_event is not None:
            await self.on_node_event(event)
        if isinstance(event, TxAckEvent):
            if event.queue_item_id not in self.queue_items:
                return
        elif isinstance(event, UplinkEvent):
            if event.f_port not in FUOTA_PORTS or event.dev_eui not in self.session.state.devices:
                self.stats.uplinks_ignored += 1
                return
            self.stats.uplinks += 1
        else:
            return
        self._events.append((event, self.clock.now()))
        self._wake.set()

    async def _process(self, item: tuple[Event, float]) -> None:
        event, received_at = item
        async with self._lock:
            with self.clock.busy():
                if isinstance(event, TxAckEvent):
                    dev_eui, kind = self.queue_items.pop(event.queue_item_id)
                    actions = self.session.on_delivered(dev_eui, kind, received_at)
                else:
                    assert isinstance(event, UplinkEvent)
                    try:
                        actions = self.session.on_uplink(event.dev_eui, event.f_port, event.data,
                                                         received_at, gps_time=event.gps_time())
                    except DecodeError:  # the machine records it; defensive only
                        self.stats.malformed += 1
                        return
            await self._step(actions)

    async def step(self, actions: list[Action]) -> None:
        """Persist the state and execute ``actions`` outside the run loop (e.g. an abort's
        cleanup from :meth:`FuotaSession.cancel`), serialised with the loop's steps."""
        async with self._lock:
            await self._step(actions)

    async def halt(self, task: "asyncio.Task[Any]") -> None:
        """Cancel ``task`` (running :meth:`run`) between steps, never inside one."""
        if task.done():
            return
        async with self._lock:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    # -- executing actions ----------------------------------------------------------------
    async def _step(self, actions: list[Action]) -> None:
        """Save the state, then execute the actions. Emulated time stands still while the
        state is saved; the ChirpStack calls hold ``busy()`` per attempt themselves, so
        time can move while one backs off."""
        with self.clock.busy():
            await self.sink.save(self.campaign_id, self.document())
        for action in actions:
            self.stats.actions += 1
            try:
                await self._execute(action)
            except ChirpStackError as exc:
                self.stats.action_errors += 1
                self.stats.errors.append(str(exc))
                log.warning("campaign %s: %s", self.campaign_id, exc)

    async def _execute(self, action: Action) -> None:
        if isinstance(action, SendMulticast):
            if self.group_id is None:
                log.warning("campaign %s: multicast before the group exists; dropped",
                            self.campaign_id)
                return
            await self.client.enqueue_multicast(self.group_id, action.fport, action.payload)
            self.stats.multicast_enqueued += 1
        elif isinstance(action, SendUnicast):
            item_id = await self.client.enqueue_device(action.dev_eui, action.fport,
                                                       action.payload)
            self.stats.unicast_enqueued += 1
            if item_id:
                self.queue_items[item_id] = (action.dev_eui, action.kind)
        elif isinstance(action, CreateMulticastGroup):
            await self._create_group(action)
        elif isinstance(action, DeleteMulticastGroup):
            if self.group_id is not None:
                await self.client.delete_multicast_group(self.group_id)
                self.group_id = None
                await self.sink.save(self.campaign_id, self.document())
        elif isinstance(action, Log):
            log.info("campaign %s: %s %s %s", self.campaign_id, action.event,
                     action.dev_eui or "", dict(action.detail))

    async def _create_group(self, action: CreateMulticastGroup) -> None:
        if self.group_id is not None:  # resumed after the group was made
            return
        group_id = await self.client.create_multicast_group(
            application_id=self.application_id,
            name=f"proxyota-{self.campaign_id}",
            mc_addr=action.mc_addr,
            mc_nwk_s_key=action.mc_nwk_s_key,
            mc_app_s_key=action.mc_app_s_key,
            group_type=action.group_type,
            dr=action.dr,
            frequency=action.frequency,
            class_b_ping_slot_periodicity=action.ping_slot_periodicity or 0,
            class_c_scheduling_type=self.class_c_scheduling_type,
        )
        self.group_id = group_id
        await self.sink.save(self.campaign_id, self.document())
        for dev_eui in action.dev_euis:
            await self.client.add_device_to_multicast_group(group_id, dev_eui)
        for gateway_id in self.gateway_ids:
            await self.client.add_gateway_to_multicast_group(group_id, gateway_id)
