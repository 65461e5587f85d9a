"""Driver of one Zigbee OTA campaign: the sans-IO :class:`~proxyota.zigbee.ota_server.OtaServer`
run against a zigpy ``ControllerApplication`` through the
:class:`~proxyota.zigbee.zigpy_adapter.ZigpyOtaAdapter`, on a clock, with its state kept
in a :class:`~proxyota.chirpstack.fuota.StateSink`.

Steps: a request of a campaign node (:meth:`ZigbeeCampaign._on_request`), a timer due
(``server.next_deadline()``: page-train blocks, stalls, ImageNotify repeats) or the start
(ImageNotify to every target, unicast by default). Each step runs under one lock: the
server computes its actions, the state document is saved through the sink, and only then
are the replies and notifies handed to the radio. So a crash can lose a reply (the node
asks again) but never a state change, and :meth:`ZigbeeCampaign.resume` rebuilds the
campaign from the last document (nodes resume from the offset they ask for; unfinished
targets get an ImageNotify so they come back at once).

Sends run per destination in order (a page train's blocks must arrive in order), each after
the previous one's radio confirmation, and concurrently across nodes (zigpy's request limiter
bounds how many are in flight). Page-train blocks (the image blocks answering an
ImagePageRequest, released by the server's timer ``response_spacing`` apart) go without APS
ACK, so a train to a sleepy node is paced by the spacing and its parent's polls rather than
by one end-to-end APS round trip per block; the client re-requests what it missed, as the
page protocol intends. Train blocks still queued when the node sends its next request are
dropped (stale: the client has moved on); every other request gets exactly one reply. The
clock's ``busy()`` is held from a frame's arrival until its replies are with the radio (plus
``handover_yields`` loop turns), so an emulated clock never jumps while the gateway is
working.

A campaign is finished when every target is verified on the new file, was already up to
date, failed (the server gave up), or was refused an image (NO_IMAGE_AVAILABLE for a
reason that will not change by itself: hardware version out of range, no file for its
manufacturer code / image type, device-specific file for another node, downgrade).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from typing import Any, Callable, Iterable, Mapping

from proxyota.chirpstack.fuota import StateSink
from proxyota.clock import Clock, RealClock
from proxyota.errors import InvalidArgument, ProxyotaError
from proxyota.zigbee.ota_server import (
    CampaignPolicy,
    Log,
    Notify,
    OtaServer,
    Outcome,
    Phase,
    Reply,
    ServerState,
)
from proxyota.zigbee.otafile import OTAFile
from proxyota.zigbee.zcl_ota import CommandId
from proxyota.zigbee.zigpy_adapter import (
    DEFAULT_APS_MAX_PAYLOAD,
    OtaRequest,
    RadioConfig,
    ZigpyOtaAdapter,
    device_class_of,
    open_radio,
)

__all__ = ["DOCUMENT_FORMAT", "NOTIFY_MODES", "REFUSAL_CODES", "CampaignStats", "ZigbeeCampaign", "on_radio",
           "status_of"]

log = logging.getLogger("proxyota.zigbee.campaign")

DOCUMENT_FORMAT = 1
NOTIFY_MODES = ("unicast", "broadcast", "none")
#: NO_IMAGE_AVAILABLE reasons (OtaServer ``no_image`` log codes) that end a node's campaign.
REFUSAL_CODES = frozenset({"hardware", "no_image", "destination", "downgrade"})


def status_of(phase: str | None, outcome: str | None, reason: str | None,
              refused: str | None) -> tuple[str, str | None]:
    """A target's campaign status from its server session (``phase`` / ``outcome`` /
    ``reason`` of its :class:`~proxyota.zigbee.ota_server.NodeState`, or their saved
    values; None without a session) and the refusal recorded for it:
    (``updated`` | ``up_to_date`` | ``failed`` | ``refused`` | ``pending``, reason)."""
    if phase is not None:
        if phase == Phase.FAILED or outcome == Outcome.FAILED:
            return "failed", reason
        if outcome == Outcome.VERIFIED:
            return "updated", None
        if outcome == Outcome.UP_TO_DATE and phase == Phase.DONE:
            return "up_to_date", None
    if refused is not None:
        return "refused", refused
    return "pending", None if phase is None else f"phase {Phase(phase).value}"


class CampaignStats:
    """Counters of the driver (the adapter keeps the radio-side ones)."""

    def __init__(self) -> None:
        self.steps = 0
        self.saves = 0
        self.superseded = 0  # page-train blocks dropped: the node asked again before they went out
        self.events: collections.Counter[str] = collections.Counter()
        self.handler_errors: list[str] = []

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "saves": self.saves, "superseded": self.superseded,
                "events": dict(sorted(self.events.items())),
                "handler_errors": list(self.handler_errors)}


class ZigbeeCampaign:
    """One campaign: ``server`` serving ``targets`` (zigpy IEEE text) on ``app``."""

    def __init__(
        self,
        server: OtaServer,
        app: Any,
        clock: Clock,
        *,
        campaign_id: str,
        sink: StateSink,
        targets: Iterable[str],
        notify: str = "unicast",
        aps_max_payload: int | Callable[[Any], int] = DEFAULT_APS_MAX_PAYLOAD,
        handover_yields: int = 4,
        on_log: Callable[[Log], None] | None = None,
        _driver_state: Mapping[str, Any] | None = None,
    ) -> None:
        if notify not in NOTIFY_MODES:
            raise InvalidArgument(f"notify must be one of {', '.join(NOTIFY_MODES)}, got {notify!r}")
        if not campaign_id or not isinstance(campaign_id, str):
            raise InvalidArgument("campaign_id must be a non-empty string")
        self.server = server
        self.app = app
        self.clock = clock
        self.campaign_id = campaign_id
        self.sink = sink
        self.notify_mode = notify
        self.handover_yields = max(0, int(handover_yields))
        self.on_log = on_log
        self.stats = CampaignStats()
        self.adapter = ZigpyOtaAdapter(app, targets=targets, on_request=self._on_request,
                                       aps_max_payload=aps_max_payload, now=clock.now)
        if not self.adapter.targets:
            raise InvalidArgument("a campaign needs at least one target node")
        driver = dict(_driver_state or {})
        try:
            self.started_at: float | None = None if driver.get("started_at") is None else float(driver["started_at"])
            self.finished_at: float | None = (None if driver.get("finished_at") is None
                                              else float(driver["finished_at"]))
            self.notified: bool = bool(driver.get("notified", False))
            self.refused: dict[str, str] = {str(k): str(v) for k, v in dict(driver.get("refused", {})).items()}
            self.restarts: int = int(driver.get("restarts", 0))
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"malformed driver state: {exc}") from None
        self._resumed = _driver_state is not None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._sleeping_until: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queues: dict[str, collections.deque[tuple[Reply | Notify, int | None, bool]]] = {}
        self._workers: dict[str, asyncio.Task[Any]] = {}
        self._node_docs: dict[str, dict[str, Any]] = {}  # NodeState.to_dict() cache
        self._dirty: set[str] | None = None  # None: every node may have changed
        #: tests: compare every saved document with a full ``server.state.to_dict()``
        self.check_documents = False
        self._started = False
        self._stopping = False
        self._closed = False
        self.timed_out = False

    # -- construction / resume -------------------------------------------------------------
    @classmethod
    async def resume(
        cls,
        images: Iterable[OTAFile | bytes],
        policy: CampaignPolicy | None,
        app: Any,
        clock: Clock,
        *,
        campaign_id: str,
        sink: StateSink,
        targets: Iterable[str] | None = None,
        **kwargs: Any,
    ) -> ZigbeeCampaign:
        """The campaign ``campaign_id``: rebuilt from the sink's document when there is one,
        else new (then ``targets`` is required)."""
        doc = await sink.load(campaign_id)
        if doc is None:
            if targets is None:
                raise InvalidArgument(f"campaign {campaign_id!r} has no saved state; give its targets")
            return cls(OtaServer(images, policy), app, clock, campaign_id=campaign_id, sink=sink,
                       targets=targets, **kwargs)
        if not isinstance(doc, Mapping) or doc.get("format") != DOCUMENT_FORMAT or "server" not in doc:
            raise InvalidArgument(f"campaign {campaign_id!r}: unsupported saved document")
        driver = doc.get("driver") or {}
        if not isinstance(driver, Mapping) or not isinstance(driver.get("refused", {}), Mapping) \
                or not isinstance(driver.get("targets", []), list):
            raise InvalidArgument(f"campaign {campaign_id!r}: malformed driver state in the saved document")
        state = ServerState.from_dict(doc["server"])
        saved_targets = driver.get("targets") or []
        kwargs.setdefault("notify", driver.get("notify", "unicast"))
        server = OtaServer(images, policy, state)
        campaign = cls(server, app, clock, campaign_id=campaign_id, sink=sink,
                       targets=targets if targets is not None else saved_targets,
                       _driver_state=driver, **kwargs)
        campaign.restarts += 1
        log.info("campaign %s resumed (%d nodes known, restart %d)", campaign_id, len(state.nodes),
                 campaign.restarts)
        return campaign

    def document(self) -> dict[str, Any]:
        """The saved document: the server's state (``ServerState.to_dict``) and the driver's."""
        return {
            "format": DOCUMENT_FORMAT,
            "kind": "zigbee-ota",
            "server": self._server_state_dict(),
            "driver": {
                "targets": sorted(self.adapter.targets),
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "notified": self.notified,
                "refused": dict(self.refused),
                "restarts": self.restarts,
                "notify": self.notify_mode,
            },
        }

    def _server_state_dict(self) -> dict[str, Any]:
        """``server.state.to_dict()``, re-serialising only the nodes a step touched (a
        request changes its own node only; timers and notifies may change any)."""
        state = self.server.state
        doc = dataclasses.replace(state, nodes={}).to_dict()
        dirty = self._dirty
        nodes: dict[str, Any] = {}
        for ieee, node in state.nodes.items():
            cached = self._node_docs.get(ieee)
            if cached is None or dirty is None or ieee in dirty:
                cached = self._node_docs[ieee] = node.to_dict()
            nodes[ieee] = cached
        doc["nodes"] = nodes
        self._dirty = set()
        return doc

    # -- status ----------------------------------------------------------------------------
    @property
    def targets(self) -> set[str]:
        return self.adapter.targets

    def node_status(self, ieee: str) -> tuple[str, str | None]:
        """(``updated`` | ``up_to_date`` | ``failed`` | ``refused`` | ``pending``, reason)."""
        node = self.server.node(ieee)
        if node is None:
            return status_of(None, None, None, self.refused.get(ieee))
        return status_of(node.phase, node.outcome, node.reason, self.refused.get(ieee))

    @property
    def finished(self) -> bool:
        return all(self.node_status(ieee)[0] != "pending" for ieee in self.adapter.targets)

    # -- running ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Attach to zigpy and send the first ImageNotify (or, resumed, prompt the
        unfinished targets)."""
        if self._started:
            return
        if self._closed:
            raise ProxyotaError("campaign was closed")
        self._started = True
        self.adapter.attach()
        async with self._lock:
            with self.clock.busy():
                now = self.clock.now()
                if self.started_at is None:
                    self.started_at = now
                self._classify()
                actions: list[Any] = []
                if not self.notified:
                    if self.notify_mode == "broadcast":
                        actions += self.server.notify(now)
                    elif self.notify_mode == "unicast":
                        for ieee in sorted(self.adapter.targets):
                            actions += self.server.notify(now, ieee)
                    self.notified = True
                elif self._resumed and self.notify_mode != "none":
                    for ieee in sorted(self.adapter.targets):
                        if self.node_status(ieee)[0] == "pending":
                            actions += self.server.notify(now, ieee)
                self._dirty = None
                await self._commit(actions)

    async def run(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        """Run until finished, :meth:`stop` or ``timeout_s`` (clock seconds from now);
        returns :meth:`report`. In-flight sends are awaited before returning."""
        await self.start()
        end = None if timeout_s is None else self.clock.now() + float(timeout_s)
        while not self._stopping and not self.finished:
            due = self.server.next_deadline()
            if end is not None:
                due = end if due is None else min(due, end)
            self._wake.clear()
            self._sleeping_until = due
            waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
            if due is not None:
                waiters.append(asyncio.ensure_future(self.clock.sleep_until(due)))
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            self._sleeping_until = None
            if self._stopping:
                break
            now = self.clock.now()
            if end is not None and now >= end and not self.finished:
                self.timed_out = True
                break
            async with self._lock:
                with self.clock.busy():
                    now = self.clock.now()
                    due = self.server.next_deadline()
                    if due is not None and due <= now:
                        actions = self.server.on_timer(now)
                        self._touched_by(actions)
                        await self._commit(actions, page=True)
        if self.finished and self.finished_at is None:
            async with self._lock:
                with self.clock.busy():
                    self.finished_at = self.clock.now()
                    await self._save()
        await self.drain()
        return self.report()

    def stop(self) -> None:
        """Make :meth:`run` return (the adapter stays attached until :meth:`close`)."""
        self._stopping = True
        self._wake.set()

    async def halt(self) -> None:
        """Stop between two steps: the step in flight finishes (its state saved, its
        replies queued), later requests are left to zigpy, sends not yet transmitted are
        dropped (the nodes ask again) and the campaign leaves zigpy's receive path. Unlike
        ``close(wait=True)`` this never waits for the radio, so it may run while an
        emulated clock is held busy."""
        self.stop()
        async with self._lock:
            self._closed = True
        await self.close()

    async def drain(self) -> None:
        """Wait until every queued send has been transmitted (or failed)."""
        while self._workers:
            await asyncio.wait(list(self._workers.values()))

    async def close(self, *, wait: bool = False) -> None:
        """Detach from zigpy and drop work in flight (``wait``: let sends finish first).
        What was saved stays saved: :meth:`resume` continues from it."""
        self._stopping = True
        self._wake.set()
        self._closed = True
        self.adapter.detach()
        if wait:
            await self.drain()
        pending = [t for t in (*self._tasks, *self._workers.values()) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._workers.clear()
        self._queues.clear()

    # -- steps -----------------------------------------------------------------------------
    def _on_request(self, request: OtaRequest) -> None:
        """From zigpy's receive path: handle it in a task, the clock held busy meanwhile."""
        if self._closed:
            return
        busy = self.clock.busy()
        busy.__enter__()
        try:
            task = asyncio.get_running_loop().create_task(self._handle(request))
        except BaseException:
            busy.__exit__(None, None, None)
            raise
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # released when the task ends, even if it is cancelled before it ever ran
        task.add_done_callback(lambda _task: busy.__exit__(None, None, None))

    async def _handle(self, request: OtaRequest) -> None:
        async with self._lock:
            if self._closed:
                return
            now = self.clock.now()
            try:
                actions = self.server.handle(
                    request.ieee, request.command_id, request.payload, request.tsn, now,
                    aps_max_payload=request.aps_max_payload,
                    manufacturer_specific=request.manufacturer_code is not None,
                )
            except ProxyotaError as exc:  # arguments the server refuses: a bug of ours
                self.stats.handler_errors.append(f"{request.ieee}: {exc}")
                log.error("campaign %s: request of %s not handled: %s", self.campaign_id, request.ieee, exc)
                return
            if self._dirty is not None:
                self._dirty.add(request.ieee)
            self._supersede(request.ieee)
            await self._commit(actions, manufacturer_code=request.manufacturer_code,
                               page=request.command_id == CommandId.IMAGE_PAGE_REQUEST)

    def _touched_by(self, actions: list[Any]) -> None:
        """Nodes a timer step changed: the server acts on (or logs) every node it changes."""
        if self._dirty is None:
            return
        for action in actions:
            ieee = getattr(action, "ieee", None)
            if ieee is None:
                self._dirty = None
                return
            self._dirty.add(ieee)

    def _note(self, actions: list[Any]) -> None:
        for action in actions:
            if not isinstance(action, Log):
                continue
            self.stats.events[action.event] += 1
            if action.event == "no_image" and action.ieee is not None:
                code = action.detail.get("reason")
                if code in REFUSAL_CODES:
                    self.refused[action.ieee] = str(action.detail.get("detail") or code)
            elif action.event in ("offered", "offered_specific_file") and action.ieee is not None:
                self.refused.pop(action.ieee, None)
            if self.on_log is not None:
                self.on_log(action)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("campaign %s: %s %s %s", self.campaign_id, action.event, action.ieee or "",
                          dict(action.detail))

    async def _save(self) -> None:
        doc = self.document()
        if self.check_documents and doc["server"] != self.server.state.to_dict():
            raise AssertionError("incremental state document differs from ServerState.to_dict()")
        await self.sink.save(self.campaign_id, doc)
        self.stats.saves += 1

    async def _commit(self, actions: list[Any], *, manufacturer_code: int | None = None, page: bool = False) -> None:
        """Record, persist, then transmit one step's actions (called under the lock).
        ``page``: ImageBlockResponses of this step belong to a page train (the step answers
        an ImagePageRequest, or is a timer step, where the server sends train blocks)."""
        self.stats.steps += 1
        self._note(actions)
        await self._save()
        sent = False
        for action in actions:
            if isinstance(action, Reply):
                train = (page and not action.general and action.command_id == CommandId.IMAGE_BLOCK_RESPONSE
                         and action.payload[:1] == b"\x00")  # SUCCESS: image data, not WAIT_FOR_DATA
                self._dispatch(action, manufacturer_code, train=train)
                sent = True
            elif isinstance(action, Notify):
                self._dispatch(action, None)
                sent = True
        if sent:
            for _ in range(self.handover_yields):
                await asyncio.sleep(0)
        self._maybe_wake()

    def _dispatch(self, action: Reply | Notify, manufacturer_code: int | None, *, train: bool = False) -> None:
        """Queue a send for its destination; ``train``: a page-train block (no APS ACK,
        dropped if the node asks anything else before it went out)."""
        key = action.ieee if action.ieee is not None else "*broadcast*"
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = collections.deque()
        queue.append((action, manufacturer_code, train))
        if key not in self._workers:
            self._workers[key] = asyncio.get_running_loop().create_task(self._worker(key))

    async def _worker(self, key: str) -> None:
        """Sends of one destination, in order, each after the previous one's confirmation."""
        queue = self._queues[key]
        try:
            while queue:
                action, manufacturer_code, train = queue.popleft()
                await self.adapter.send(action, manufacturer_code=manufacturer_code, ack=not train)
        finally:
            if self._workers.get(key) is asyncio.current_task():
                del self._workers[key]
            if not queue:
                self._queues.pop(key, None)

    def _supersede(self, ieee: str) -> None:
        """A new request from ``ieee``: page-train blocks not yet sent are stale."""
        queue = self._queues.get(ieee)
        if not queue:
            return
        keep = [item for item in queue if not item[2]]
        dropped = len(queue) - len(keep)
        if dropped:
            queue.clear()
            queue.extend(keep)
            self.stats.superseded += dropped

    def _maybe_wake(self) -> None:
        if self.finished:
            self._wake.set()
            return
        due = self.server.next_deadline()
        if due is not None and (self._sleeping_until is None or due < self._sleeping_until):
            self._wake.set()

    def _classify(self) -> None:
        """Device classes (stall timeouts, ImageNotify repeats) from zigpy's node descriptors."""
        classes = self.server.policy.device_classes
        for ieee in self.adapter.targets:
            node = self.server.node(ieee)
            if node is not None and node.device_class is not None:
                continue
            cls = device_class_of(self.adapter.device(ieee))
            if cls is not None and cls in classes:
                self.server.set_device_class(ieee, cls)

    # -- figures ---------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """Per target: status, reason and the server's figures; totals."""
        per_node: dict[str, Any] = {}
        counts: collections.Counter[str] = collections.Counter()
        failed: dict[str, str] = {}
        blocks = bytes_served = 0
        for ieee in sorted(self.adapter.targets):
            status, reason = self.node_status(ieee)
            counts[status] += 1
            node = self.server.node(ieee)
            entry: dict[str, Any] = {"status": status, "reason": reason}
            if node is not None:
                blocks += node.blocks_served
                bytes_served += node.bytes_served
                entry.update(
                    phase=node.phase.value, outcome=None if node.outcome is None else node.outcome.value,
                    device_class=node.device_class, file_version=node.file_version,
                    current_file_version=node.current_file_version, blocks_served=node.blocks_served,
                    bytes_served=node.bytes_served, repeats=node.repeats, resumed_from=node.resumed_from,
                    restarts=node.restarts, retries=node.retries, waits=node.waits,
                    first_time=node.first_time, completed_at=node.completed_at,
                )
            if status in ("failed", "refused"):
                failed[ieee] = reason or status
            per_node[ieee] = entry
        end = self.finished_at if self.finished_at is not None else self.clock.now()
        return {
            "campaign_id": self.campaign_id,
            "nodes": len(self.adapter.targets),
            "updated": counts["updated"],
            "up_to_date": counts["up_to_date"],
            "failed": failed,
            "pending": sorted(k for k, v in per_node.items() if v["status"] == "pending"),
            "finished": self.finished,
            "timed_out": self.timed_out,
            "blocks_served": blocks,
            "bytes_served": bytes_served,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "elapsed_s": None if self.started_at is None else round(end - self.started_at, 3),
            "restarts": self.restarts,
            "driver": self.stats.to_dict(),
            "adapter": self.adapter.stats.to_dict(),
            "per_node": per_node,
        }


async def on_radio(
    radio: RadioConfig,
    images: Iterable[OTAFile | bytes],
    policy: CampaignPolicy | None,
    *,
    campaign_id: str,
    sink: StateSink,
    targets: Iterable[str] | None = None,
    clock: Clock | None = None,
    app_class: type | None = None,
    **kwargs: Any,
) -> ZigbeeCampaign:
    """The field set-up: start the coordinator radio (:func:`~proxyota.zigbee.zigpy_adapter.open_radio`),
    then the campaign ``campaign_id``, resumed from ``sink`` when it was saved before. Run it
    with ``await campaign.run()``; ``campaign.app`` is the zigpy application (shut it down
    after ``campaign.close()``)."""
    app, aps = await open_radio(radio, app_class=app_class)
    try:
        return await ZigbeeCampaign.resume(images, policy, app, clock if clock is not None else RealClock(),
                                           campaign_id=campaign_id, sink=sink, targets=targets,
                                           aps_max_payload=aps, **kwargs)
    except BaseException:
        await app.shutdown()
        raise
