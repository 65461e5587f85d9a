"""The campaign runner: creates, starts, pauses, resumes and aborts campaigns of both kinds
-- LoRaWAN FUOTA campaigns, each driven by a :class:`~proxyota.chirpstack.fuota.FuotaDriver`,
and Zigbee OTA campaigns, each driven by a :class:`~proxyota.service.zigbee.ZigbeeDriver`
(:mod:`proxyota.service.zigbee` says what differs) -- routes ChirpStack integration events,
and resumes running campaigns after a restart.

Kind: ``POST /campaigns`` takes ``kind`` (``lorawan`` / ``zigbee``); without it the kind
follows the image (a ``zigbee-ota`` image makes a Zigbee campaign). Targets are DevEUIs
(LoRaWAN) or IEEE addresses (Zigbee), as strings or objects with the node's facts.

Durability (principle 5): every lifecycle step is one store transaction holding the status
change and its audit record (``campaign.created``, ``campaign.started``,
``campaign.paused``, ``campaign.resumed``, ``campaign.aborted``, ``campaign.recovered``,
``campaign.finished``, ``campaign.failed``); device outcomes are audited by the
:class:`~proxyota.service.sink.StoreSink` in the transaction that saves the machine state
which produced them. A step is durable before anything is sent for it.

Create: the image must be accepted and cached; every target gets the policy checks of
:func:`proxyota.images.policy.check` (hardware class, anti-rollback counter, TUF metadata
expiry, vendor signature); a LoRaWAN target needs root keys (ChirpStack ``GetKeys`` or the
keys file), a Zigbee target must be known to zigpy (and its hardware class is checked
only when recorded: the OTA server matches manufacturer code and image type anyway);
a refused target is left out with its reasons, recorded in the campaign and the node's
history. The multicast key comes from ``os.urandom`` and is kept in the campaign's stored
configuration (the API never shows it, logs never print it). Start re-runs the policy
checks: nothing goes on air for an image that no longer passes them.

Pause (what it means on the air): the driver stops advancing: no timer fires, no action
is executed, uplinks are not fed to the session machine (node records are still
updated), and the multicast items still queued in ChirpStack are flushed. The class C/B
session window may close during a pause and unanswered unicast requests go stale. Resume
rebuilds the driver from the stored state: overdue timers fire at once (stale requests
are resent, counting as a retry; a window that closed is reopened by the machine with a
new session request to the devices still receiving; flushed fragments are recovered by
the repair rounds). Timers are not shifted by the length of the pause.

Abort: ``session.cancel(now)`` (every device without an outcome fails ``cancelled``) and
its cleanup actions (FragSessionDelete, McGroupDelete, the ChirpStack group) are executed;
a campaign aborted while the service was down gets the cleanup at the next start.

Zigbee pause / abort: the campaign stops between two steps and leaves zigpy's receive
path (zigpy then answers the nodes itself: no image, abort); resume rebuilds it from the
stored state and notifies the targets still pending, which continue from their offset.
Two running Zigbee campaigns never share a target.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tomllib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from proxyota.chirpstack.client import ChirpStackClient, ChirpStackError
from proxyota.chirpstack.events import Event, JoinEvent, StatusEvent, UplinkEvent
from proxyota.chirpstack.fuota import FuotaDriver
from proxyota.clock import Clock, gps_to_unix
from proxyota.errors import InvalidArgument, ProxyotaError
from proxyota.images.policy import Container, NodeFacts, Refusal, check
from proxyota.lorawan.repair import Stack
from proxyota.lorawan.session_config import DeviceConfig, SessionConfig, normalise_dev_eui
from proxyota.lorawan.session_state import Stage
from proxyota.service.errors import ApiError
from proxyota.service.images import ImageCatalog, ImageNotUsable, UsableImage
from proxyota.service.logging import SECRETS
from proxyota.service.options import CampaignOptions, OptionError, merge_options, parse_options
from proxyota.service.sink import StoreSink, device_summary
from proxyota.service.views import campaign_view
from proxyota.service.zigbee import ZigbeeCampaigns, cancel_stored, normalise_ieee, zigbee_view
from proxyota.store import (
    CampaignExists,
    CampaignRecord,
    InvalidTransition,
    NodeRecord,
    Store,
    UnknownCampaign,
    UnknownImage,
    UnknownNode,
)

__all__ = ["ApiError", "CampaignRunner", "ServiceDriver", "load_device_keys_file"]

log = logging.getLogger("proxyota.service.runner")

_CAMPAIGN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TARGET_FIELDS = {"dev_eui", "hw_class", "security_counter", "fw_version", "stack"}
_ZIGBEE_TARGET_FIELDS = {"ieee", "hw_class", "security_counter", "fw_version"}
_CREATE_FIELDS = {"id", "kind", "image", "targets", "options"}
KINDS = ("lorawan", "zigbee")
MAX_TARGETS = 10_000


class ServiceDriver(FuotaDriver):
    """The FUOTA driver as the service runs it (``step`` and ``halt`` come from
    :class:`FuotaDriver`: a stop that lets the step in flight finish, and executing a step
    such as an abort's cleanup outside the run loop), with the interface the runner uses
    for both kinds (``finished``, ``devices``, ``cancel``, ``close``, ``results``)."""

    kind = "lorawan"

    @property
    def finished(self) -> bool:
        return self.session.finished

    @property
    def devices(self) -> frozenset[str]:
        return frozenset(self.session.state.devices)

    async def cancel(self, now: float) -> None:
        """Every device without an outcome fails ``cancelled``; the cleanup is executed."""
        if not self.session.finished:
            await self.step(self.session.cancel(now))

    async def close(self) -> None:
        """Nothing to release (the ChirpStack client belongs to the service)."""

    def results(self, report: Mapping[str, Any],
                image: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, int | None]]:
        """The ``campaign.finished`` audit details and the firmware version of each device
        that runs the image now."""
        outcomes = self.session.outcomes()
        counts: dict[str, int] = {}
        for o in outcomes.values():
            counts[o.reason.value] = counts.get(o.reason.value, 0) + 1
        successes: dict[str, int | None] = {}
        for eui, outcome in outcomes.items():
            if outcome.reason.value == "successful":
                version = outcome.detail.get("fw_version", image.get("firmware_version"))
                successes[eui] = version if isinstance(version, int) else None
        details = {"outcomes": counts, "successful": sorted(successes),
                   "rounds": report.get("rounds"), "airtime_s": report.get("airtime_s")}
        return details, successes


@dataclass
class _Active:
    driver: Any  #: ServiceDriver or ZigbeeDriver
    task: asyncio.Task
    sink: StoreSink
    devices: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class _Target:
    node_id: str  #: DevEUI (16 hex digits) or IEEE address (aa:bb:...)
    hw_class: str | None = None
    security_counter: int | None = None
    fw_version: int | None = None
    stack: str | None = None


def load_device_keys_file(path: Path) -> dict[str, DeviceConfig]:
    """``{dev_eui = {gen_app_key = "hex"} | {app_key = "hex", lorawan_1_1 = true}}`` (TOML)."""
    try:
        doc = tomllib.loads(Path(path).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidArgument(f"{path}: cannot read the device keys file: {exc}") from None
    out: dict[str, DeviceConfig] = {}
    for eui, entry in doc.items():
        try:
            key = normalise_dev_eui(eui)
            if not isinstance(entry, dict):
                raise InvalidArgument("must be a table")
            for v in entry.values():
                if isinstance(v, str):
                    SECRETS.add(v)
                    with contextlib.suppress(ValueError):
                        SECRETS.add(bytes.fromhex(v))
            out[key] = DeviceConfig.from_dict(entry)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{path}: [{eui}]: {exc}") from None
    return out


def _gps_datetime(gps: float) -> datetime:
    return datetime.fromtimestamp(gps_to_unix(gps), tz=timezone.utc)


class CampaignRunner:
    """Campaign lifecycle and the running drivers (one per running campaign)."""

    def __init__(
        self,
        store: Store,
        catalog: ImageCatalog,
        clock: Clock,
        *,
        defaults: CampaignOptions,
        client: ChirpStackClient | None = None,
        application_id: str | None = None,
        gateway_ids: tuple[str, ...] = (),
        class_c_scheduling_type: str = "DELAY",
        device_keys: Mapping[str, DeviceConfig] | None = None,
        zigbee: ZigbeeCampaigns | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.defaults = defaults
        self.client = client
        self.application_id = application_id
        self.gateway_ids = gateway_ids
        self.class_c_scheduling_type = class_c_scheduling_type
        self.device_keys = dict(device_keys) if device_keys is not None else None
        self.zigbee = zigbee  #: the Zigbee side (None: Zigbee is not enabled)
        self.active: dict[str, _Active] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closing = False
        self.events_routed = 0

    # ------------------------------------------------------------------ helpers

    def _lock(self, campaign_id: str) -> asyncio.Lock:
        return self._locks.setdefault(campaign_id, asyncio.Lock())

    async def _record(self, campaign_id: str) -> CampaignRecord:
        if not isinstance(campaign_id, str) or not _CAMPAIGN_ID.match(campaign_id):
            raise ApiError(404, f"unknown campaign {campaign_id!r}", field="id")
        try:
            return await self.store.get_campaign(campaign_id)
        except UnknownCampaign:
            raise ApiError(404, f"unknown campaign {campaign_id!r}", field="id") from None

    async def _transition(self, rec: CampaignRecord, status: str, action: str,
                          details: Mapping[str, Any] | None = None, actor: str = "api") -> None:
        now = self.clock.now()
        try:
            async with self.store.transaction():
                await self.store.update_status(rec.id, status, now=now)
                await self.store.audit_append(actor, action, rec.id, dict(details or {}), now=now)
        except InvalidTransition as exc:
            raise ApiError(409, str(exc), field="status") from None
        log.info("campaign %s: %s", rec.id, action, extra={"campaign": rec.id, "status": status})

    # ------------------------------------------------------------------ create

    async def _parse_create(self, body: Any) -> tuple[str, str | None, str, list[_Target], dict[str, Any]]:
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        for key in body:
            if key not in _CREATE_FIELDS:
                raise ApiError(422, f"unknown field (known: {', '.join(sorted(_CREATE_FIELDS))})",
                               field=str(key))
        cid = body.get("id")
        if cid is not None and (not isinstance(cid, str) or not _CAMPAIGN_ID.match(cid)):
            raise ApiError(422, "must be 1-64 characters: letters, digits, '.', '_', '-' "
                                "(starting with a letter or digit)", field="id")
        kind = body.get("kind")
        if kind is not None and kind not in KINDS:
            raise ApiError(422, f"must be one of {', '.join(KINDS)}", field="kind")
        image = body.get("image")
        if not isinstance(image, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", image):
            raise ApiError(422, "must be the SHA-256 digest of an accepted image (64 hex digits)",
                           field="image")
        if kind is None:  # the image says: a Zigbee OTA file makes a Zigbee campaign
            kind = "lorawan"
            with contextlib.suppress(UnknownImage):
                if (await self.store.get_image(image.lower())).kind == Container.ZIGBEE_OTA.value:
                    kind = "zigbee"
        targets = self._parse_targets(kind, body.get("targets"))
        options = body.get("options", {})
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise ApiError(422, "must be an object", field="options")
        return kind, cid, image.lower(), targets, options

    @staticmethod
    def _parse_targets(kind: str, targets_doc: Any) -> list[_Target]:
        """DevEUIs (LoRaWAN) or IEEE addresses (Zigbee), as strings or target objects."""
        if kind == "zigbee":
            key, label, normalise, known = "ieee", "IEEE address", normalise_ieee, _ZIGBEE_TARGET_FIELDS
        else:
            key, label, normalise, known = "dev_eui", "DevEUI", normalise_dev_eui, _TARGET_FIELDS
        if not isinstance(targets_doc, list) or not targets_doc:
            raise ApiError(422, f"must be a non-empty list of {label}s or target objects",
                           field="targets")
        if len(targets_doc) > MAX_TARGETS:
            raise ApiError(422, f"at most {MAX_TARGETS} targets per campaign", field="targets")
        targets: list[_Target] = []
        seen: set[str] = set()
        for i, t in enumerate(targets_doc):
            where = f"targets[{i}]"
            if isinstance(t, str):
                t = {key: t}
            if not isinstance(t, dict):
                raise ApiError(422, f"must be a {label} string or an object", field=where)
            for name in t:
                if name not in known:
                    raise ApiError(422, f"unknown field (known: {', '.join(sorted(known))})",
                                   field=f"{where}.{name}")
            try:
                node_id = normalise(t.get(key))
            except InvalidArgument as exc:
                raise ApiError(422, str(exc), field=f"{where}.{key}") from None
            if node_id in seen:
                raise ApiError(422, f"{label} {node_id} is listed twice", field=f"{where}.{key}")
            seen.add(node_id)
            hw = t.get("hw_class")
            if hw is not None and (not isinstance(hw, str) or not hw):
                raise ApiError(422, "must be a hardware class string", field=f"{where}.hw_class")
            for name in ("security_counter", "fw_version"):
                v = t.get(name)
                if v is not None and (isinstance(v, bool) or not isinstance(v, int)
                                      or not 0 <= v <= 0xFFFFFFFF):
                    raise ApiError(422, "must be an integer 0..4294967295", field=f"{where}.{name}")
            stack = t.get("stack")
            if stack is not None and stack not in {s.value for s in Stack}:
                raise ApiError(422, f"must be one of {', '.join(s.value for s in Stack)}",
                               field=f"{where}.stack")
            targets.append(_Target(node_id, hw, t.get("security_counter"), t.get("fw_version"), stack))
        return targets

    async def _facts(self, target: _Target, kind: str = "lorawan",
                     default_hw: str = "") -> tuple[NodeFacts, NodeRecord | None]:
        """What the policy checks see of a node: the target's facts, else its record's
        (``default_hw``: the hardware class assumed when none is known)."""
        try:
            node = await self.store.get_node(target.node_id)
        except UnknownNode:
            node = None
        hw = target.hw_class or (node.hw_class if node else None) or default_hw
        version = target.fw_version if target.fw_version is not None else (
            node.fw_version if node else None)
        counter = target.security_counter
        if counter is None:
            counter = node.security_counter if node and node.security_counter is not None else 0
            if kind == "zigbee" and version is not None:
                counter = max(counter, version)  # a Zigbee node orders images by file version
        return NodeFacts(hw_class=hw, running_version=version, security_counter=counter,
                         transport="zigbee" if kind == "zigbee" else "lorawan"), node

    def _policy(self, image: UsableImage, facts: NodeFacts) -> list[Refusal]:
        return check(image.meta, facts, _gps_datetime(self.clock.now()),
                     metadata_expiry=image.metadata_expiry, image=image.data,
                     vendor_keys=self.catalog.vendor_keys)

    @staticmethod
    def _assumed_hw(kind: str, image: UsableImage) -> str:
        """Zigbee: a node whose hardware class is not recorded is checked as the image's (the
        OTA server matches its manufacturer code and image type anyway)."""
        return image.meta.hw_classes[0] if kind == "zigbee" else ""

    async def _device_config(self, target: _Target) -> DeviceConfig | dict[str, str]:
        """Root keys of the device, or a refusal ``{"reason", "detail"}``."""
        stack = target.stack or Stack.UNKNOWN.value
        if self.device_keys is not None:
            dc = self.device_keys.get(target.node_id)
            if dc is None:
                return {"reason": "no_keys", "detail": "the device keys file has no entry for it"}
            return DeviceConfig(gen_app_key=dc.gen_app_key, app_key=dc.app_key,
                                lorawan_1_1=dc.lorawan_1_1, stack=stack)
        assert self.client is not None
        try:
            keys = await self.client.get_device_keys(target.node_id)
        except ChirpStackError as exc:
            if exc.code in ("NOT_FOUND", "INVALID_ARGUMENT"):
                return {"reason": "not_in_chirpstack", "detail": exc.details or exc.code}
            raise ApiError(503, f"ChirpStack did not answer GetKeys: {exc.code}",
                           field="targets") from None
        for k in (keys.nwk_key, keys.app_key, keys.gen_app_key):
            SECRETS.add(k)
        if keys.gen_app_key is not None:
            return DeviceConfig(gen_app_key=keys.gen_app_key, stack=stack)
        if keys.app_key and any(keys.app_key):
            return DeviceConfig(app_key=keys.app_key, lorawan_1_1=True, stack=stack)
        return {"reason": "no_keys",
                "detail": "ChirpStack has no GenAppKey (LoRaWAN 1.0.x) or AppKey (1.1) for it"}

    def _zigbee_backend(self, field_name: str, status: int = 422) -> ZigbeeCampaigns:
        if self.zigbee is None:
            raise ApiError(status, "Zigbee is not enabled in this service (set [zigbee] enabled = "
                                   "true with a radio)", field=field_name)
        return self.zigbee

    async def _lorawan_config(self, digest: str, image: UsableImage, accepted: dict[str, Any],
                              refused: dict[str, Any], options: CampaignOptions) -> dict[str, Any]:
        values = dict(options.values)
        if values.get("expected_fw_version") is None:
            values["expected_fw_version"] = image.meta.firmware_version
        options = parse_options(values)
        mc_key = os.urandom(16)
        SECRETS.add(mc_key)
        mc_addr = int.from_bytes(os.urandom(4), "big")
        session_cnt = len(await self.store.list_campaigns(kind="lorawan")) & 0xFFFF
        try:
            session = SessionConfig(devices=accepted, mc_addr=mc_addr, mc_key=mc_key,
                                    descriptor=bytes.fromhex(digest[:8]), session_cnt=session_cnt,
                                    **options.session_kwargs())
        except InvalidArgument as exc:
            raise ApiError(422, str(exc), field="options") from None
        return {
            "image": {"digest": digest, "target": image.meta.name,
                      "firmware_version": image.meta.firmware_version,
                      "security_counter": image.meta.security_counter},
            "targets": sorted(accepted),
            "refused": refused,
            "options": dict(options.values),
            "application_id": self.application_id,
            "session": session.to_dict(),  # holds keys: never shown by the API
        }

    async def create(self, body: Any) -> dict[str, Any]:
        """Validate, check, store a new campaign (status draft); returns its view."""
        kind, cid, digest, targets, option_doc = await self._parse_create(body)
        zigbee = self._zigbee_backend("kind" if "kind" in body else "image") if kind == "zigbee" else None
        if zigbee is not None:
            zoptions = zigbee.options(option_doc)
        else:
            if self.client is None and self.device_keys is None:
                raise ApiError(422, "no LoRaWAN network server is configured ([chirpstack])",
                               field="targets")
            try:
                options = parse_options(merge_options(self.defaults.values, option_doc))
            except OptionError as exc:
                raise ApiError(422, str(exc)[len(exc.field) + 2:], field=exc.field) from None
        if cid is not None:
            with contextlib.suppress(UnknownCampaign):
                await self.store.get_campaign(cid)
                raise ApiError(409, f"campaign {cid!r} already exists", field="id")
        try:
            image = await self.catalog.usable(digest)
        except UnknownImage:
            raise ApiError(422, f"image {digest} is not an accepted image", field="image") from None
        except ImageNotUsable as exc:
            raise ApiError(422, str(exc), field="image") from None
        if zigbee is not None:
            zigbee.check_image(image)

        accepted: dict[str, Any] = {}
        refused: dict[str, list[dict[str, str]]] = {}
        facts_of: dict[str, NodeFacts] = {}
        for target in targets:
            facts, _ = await self._facts(target, kind, self._assumed_hw(kind, image))
            facts_of[target.node_id] = facts
            refusals = self._policy(image, facts)
            if refusals:
                refused[target.node_id] = [{"reason": r.reason.value, "detail": r.detail}
                                           for r in refusals]
                continue
            admitted = zigbee.admit(target.node_id) if zigbee is not None else (
                await self._device_config(target))
            if isinstance(admitted, dict):
                refused[target.node_id] = [admitted]
                continue
            accepted[target.node_id] = admitted
        if not accepted:
            raise ApiError(422, "no target passed the policy checks; nothing was created",
                           field="targets", details={"refused": refused})

        cid = cid or f"c-{uuid.uuid4().hex[:12]}"
        if zigbee is not None:
            config = zigbee.config(digest, image, list(accepted), refused, zoptions)
        else:
            config = await self._lorawan_config(digest, image, accepted, refused, options)
        now = self.clock.now()
        async with self.store.transaction():
            try:
                await self.store.create_campaign(cid, kind, digest, config, now=now)
            except CampaignExists as exc:
                raise ApiError(409, str(exc), field="id") from None
            for target in targets:
                node_id = target.node_id
                facts = facts_of[node_id]
                try:  # re-read inside the transaction: telemetry may have changed meanwhile
                    node = await self.store.get_node(node_id)
                except UnknownNode:
                    node = NodeRecord(node_id, kind)
                await self.store.upsert_node(NodeRecord(
                    node_id, kind, hw_class=target.hw_class or node.hw_class,
                    fw_version=facts.running_version, security_counter=facts.security_counter,
                    battery=node.battery, last_seen=node.last_seen, rx_meta=dict(node.rx_meta)))
                if node_id in refused:
                    await self.store.record_event(node_id, "refused", {"reasons": refused[node_id]},
                                                  campaign_id=cid, now=now)
                else:
                    await self.store.record_event(node_id, "targeted", {"image": digest},
                                                  campaign_id=cid, now=now)
            await self.store.audit_append("api", "campaign.created", cid, {
                "kind": kind, "image": digest, "targets": sorted(accepted),
                "refused": {n: [r["reason"] for r in rs] for n, rs in sorted(refused.items())},
            }, now=now)
        await asyncio.to_thread(self.catalog.cache.pin, digest, f"campaign-{cid}")
        log.info("campaign created", extra={"campaign": cid, "kind": kind, "image": digest,
                                            "targets": len(accepted), "refused": len(refused)})
        return await self.view(cid)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, campaign_id: str) -> dict[str, Any]:
        async with self._lock(campaign_id):
            rec = await self._record(campaign_id)
            if rec.status != "draft":
                raise ApiError(409, f"campaign {campaign_id!r} is {rec.status}; only a draft "
                                    "campaign can be started", field="status")
            await self._recheck(rec)
            self._check_launchable(rec)
            await self._transition(rec, "running", "campaign.started")
            await self._launch(await self._record(campaign_id))
        return await self.view(campaign_id)

    async def _recheck(self, rec: CampaignRecord) -> None:
        """The policy checks again, just before airtime."""
        try:
            image = await self.catalog.usable(rec.image_digest)
        except (UnknownImage, ImageNotUsable) as exc:
            raise ApiError(409, f"the campaign's image cannot be used: {exc}", field="image") from None
        refused: dict[str, list[dict[str, str]]] = {}
        for eui in rec.config.get("targets", []):
            facts, _ = await self._facts(_Target(eui), rec.kind, self._assumed_hw(rec.kind, image))
            refusals = self._policy(image, facts)
            if refusals:
                refused[eui] = [{"reason": r.reason.value, "detail": r.detail} for r in refusals]
        if refused:
            raise ApiError(409, "targets no longer pass the policy checks; create a new campaign",
                           field="targets", details={"refused": refused})

    def _check_launchable(self, rec: CampaignRecord) -> None:
        """Zigbee: the radio is there, and no other running campaign serves these nodes
        (one OTA server per node)."""
        if rec.kind != "zigbee":
            return
        self._zigbee_backend("status", 409)
        targets = set(rec.config.get("targets", []))
        busy = {}
        for other_id, active in self.active.items():
            if other_id != rec.id and getattr(active.driver, "kind", None) == "zigbee":
                for node_id in sorted(targets & active.devices):
                    busy[node_id] = other_id
        if busy:
            raise ApiError(409, "targets are served by another running Zigbee campaign",
                           field="targets", details={"busy": busy})

    async def pause(self, campaign_id: str) -> dict[str, Any]:
        async with self._lock(campaign_id):
            rec = await self._record(campaign_id)
            if rec.status != "running":
                raise ApiError(409, f"campaign {campaign_id!r} is {rec.status}; only a running "
                                    "campaign can be paused", field="status")
            await self._transition(rec, "paused", "campaign.paused")
            active = self.active.pop(campaign_id, None)
            if active is not None:
                await active.driver.halt(active.task)
                await self._flush_multicast(active.driver)
        return await self.view(campaign_id)

    async def _flush_multicast(self, driver: Any) -> None:
        if self.client is None or getattr(driver, "group_id", None) is None:
            return
        try:
            await self.client.flush_multicast_queue(driver.group_id)
        except ChirpStackError as exc:
            log.warning("campaign %s: could not flush the multicast queue: %s",
                        driver.campaign_id, exc)

    async def resume(self, campaign_id: str) -> dict[str, Any]:
        async with self._lock(campaign_id):
            rec = await self._record(campaign_id)
            if rec.status != "paused":
                raise ApiError(409, f"campaign {campaign_id!r} is {rec.status}; only a paused "
                                    "campaign can be resumed", field="status")
            self._check_launchable(rec)
            await self._transition(rec, "running", "campaign.resumed")
            await self._launch(await self._record(campaign_id))
        return await self.view(campaign_id)

    async def abort(self, campaign_id: str) -> dict[str, Any]:
        async with self._lock(campaign_id):
            rec = await self._record(campaign_id)
            if rec.status not in ("draft", "running", "paused"):
                raise ApiError(409, f"campaign {campaign_id!r} is {rec.status}; it cannot be "
                                    "aborted", field="status")
            was = rec.status
            await self._transition(rec, "aborted", "campaign.aborted", {"was": was})
            active = self.active.pop(campaign_id, None)
            if active is not None:
                await active.driver.halt(active.task)
                await self._cancel(active.driver)
            elif was != "draft":  # paused (or a Zigbee campaign left running without a radio)
                await self._cleanup_stored(await self._record(campaign_id))
            await self._unpin(rec)
        return await self.view(campaign_id)

    async def _cancel(self, driver: Any) -> None:
        if driver.finished:
            return
        await self._flush_multicast(driver)
        await driver.cancel(self.clock.now())

    async def _cleanup_stored(self, rec: CampaignRecord) -> None:
        """Cancel + cleanup of a campaign that has no driver (paused, or aborted while down)."""
        if rec.kind == "zigbee":  # nothing on the air to clean up: the nodes end cancelled
            await cancel_stored(self.store, rec, self.clock.now())
            return
        snap = await self.store.load_state(rec.id)
        if snap.state is None:
            return
        stage = (snap.state.get("machine") or {}).get("stage")
        if stage in (Stage.FINISHED.value, Stage.CREATED.value):
            return
        try:
            driver = await self._driver(rec)
            await self._cancel(driver)
        except (ProxyotaError, OSError) as exc:
            log.warning("campaign %s: cleanup after abort failed: %s", rec.id, exc)

    async def _unpin(self, rec: CampaignRecord) -> None:
        await asyncio.to_thread(self.catalog.cache.unpin, rec.image_digest, f"campaign-{rec.id}")

    # ------------------------------------------------------------------ drivers

    async def _driver(self, rec: CampaignRecord) -> Any:
        if rec.kind == "zigbee":
            return await self._zigbee_backend("status", 409).driver(rec)
        if self.client is None:
            raise ApiError(409, "no ChirpStack client configured", field="status")
        session = SessionConfig.from_dict(rec.config["session"])
        SECRETS.add(session.mc_key)
        for dev in session.devices.values():
            SECRETS.add(dev.gen_app_key)
            SECRETS.add(dev.app_key)
        image = await self.catalog.usable(rec.image_digest)
        sink = StoreSink(self.store, rec.id, clock=self.clock.now)
        driver = await ServiceDriver.resume(
            session, image.data, self.client, self.clock, campaign_id=rec.id,
            application_id=rec.config.get("application_id") or self.application_id or "",
            sink=sink, gateway_ids=self.gateway_ids,
            class_c_scheduling_type=self.class_c_scheduling_type)
        return driver

    async def _launch(self, rec: CampaignRecord) -> None:
        driver = await self._driver(rec)
        assert isinstance(driver.sink, StoreSink)
        task = asyncio.get_running_loop().create_task(self._drive(rec.id, driver),
                                                      name=f"campaign-{rec.id}")
        self.active[rec.id] = _Active(driver, task, driver.sink, driver.devices)

    async def _drive(self, campaign_id: str, driver: Any) -> None:
        try:
            report = await driver.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a store failure: the campaign cannot go on
            log.exception("campaign %s: driver failed", campaign_id)
            self.active.pop(campaign_id, None)
            with contextlib.suppress(Exception):
                await driver.close()
            with contextlib.suppress(Exception):
                rec = await self.store.get_campaign(campaign_id)
                await self._transition(rec, "failed", "campaign.failed",
                                       {"error": f"{type(exc).__name__}: {exc}"}, actor="service")
                await self._unpin(rec)
            return
        if not driver.finished:  # halted (pause, abort, shutdown)
            return
        await self._finish(campaign_id, driver, report)

    async def _finish(self, campaign_id: str, driver: Any, report: Mapping[str, Any]) -> None:
        rec = await self.store.get_campaign(campaign_id)
        image = rec.config.get("image", {})
        details, successes = driver.results(report, image)
        # unpinned first: once a campaign reads "completed", its image is evictable (a crash
        # in between resumes a finished machine, which finishes again at once)
        await self._unpin(rec)
        now = self.clock.now()
        async with self.store.transaction():
            if rec.status == "running":
                await self.store.update_status(campaign_id, "completed", now=now)
                await self.store.audit_append("service", "campaign.finished", campaign_id, details,
                                              now=now)
            for node_id, version in successes.items():
                with contextlib.suppress(UnknownNode):
                    node = await self.store.get_node(node_id)
                    counter = max(node.security_counter or 0, int(image.get("security_counter") or 0))
                    await self.store.upsert_node(NodeRecord(
                        node_id, node.kind, node.hw_class,
                        version if isinstance(version, int) else node.fw_version, counter,
                        node.battery, node.last_seen, dict(node.rx_meta)))
        self.active.pop(campaign_id, None)
        await driver.close()
        log.info("campaign finished", extra={"campaign": campaign_id, "outcomes": details["outcomes"]})

    async def recover(self) -> None:
        """At start: resume running campaigns, finish the cleanup of aborted ones."""
        for rec in await self.store.list_campaigns(status="running"):
            if rec.kind == "zigbee" and self.zigbee is None:
                log.error("campaign %s is a running Zigbee campaign but Zigbee is not enabled: "
                          "it resumes when the service runs with [zigbee] enabled", rec.id)
                continue
            try:
                snap = await self.store.load_state(rec.id)
                await self.store.audit_append("service", "campaign.recovered", rec.id,
                                              {"revision": snap.revision}, now=self.clock.now())
                await self._launch(rec)
                log.info("campaign resumed after restart",
                         extra={"campaign": rec.id, "revision": snap.revision})
            except (ProxyotaError, OSError, KeyError) as exc:
                log.error("campaign %s cannot be resumed: %s", rec.id, exc)
                with contextlib.suppress(Exception):
                    await self._transition(rec, "failed", "campaign.failed",
                                           {"error": f"resume failed: {exc}"}, actor="service")
        for rec in await self.store.list_campaigns(status="aborted"):
            await self._cleanup_stored(rec)

    async def shutdown(self) -> None:
        """Stop every driver between two steps (their state is already saved)."""
        self._closing = True
        actives = list(self.active.items())
        self.active.clear()
        for campaign_id, active in actives:
            if active.driver.finished and not active.task.done():
                # finishing: let it write its final records
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(active.task), timeout=10)
                continue
            await active.driver.halt(active.task)

    # ------------------------------------------------------------------ events

    async def on_event(self, event: Event) -> None:
        """The integration handler: node records, then the campaigns' drivers."""
        try:
            await self._update_node(event)
        except ProxyotaError as exc:
            log.warning("node record update failed for %s: %s", event.dev_eui, exc)
        if self._closing or not event.dev_eui:
            return
        for active in list(self.active.values()):
            if event.dev_eui in active.devices and not active.task.done():
                self.events_routed += 1
                await active.driver.handle_event(event)

    async def _update_node(self, event: Event) -> None:
        if not event.dev_eui or not isinstance(event, (UplinkEvent, StatusEvent, JoinEvent)):
            return
        now = self.clock.now()
        # read-modify-write in ONE transaction: a campaign created meanwhile (which writes
        # the node's hardware class) must not be overwritten by a stale copy
        async with self.store.transaction():
            try:
                node = await self.store.get_node(event.dev_eui)
            except UnknownNode:
                node = NodeRecord(event.dev_eui, "lorawan")
            if node.kind != "lorawan":
                return
            rx_meta = dict(node.rx_meta)
            battery = node.battery
            if isinstance(event, UplinkEvent):
                best = event.best_rx()
                if best is not None:
                    rx_meta.update(rssi=best.rssi, snr=best.snr, gateway_id=best.gateway_id)
                rx_meta.update(dr=event.dr, frequency=event.frequency, f_cnt=event.f_cnt)
            elif isinstance(event, StatusEvent):
                rx_meta.update(margin=event.margin, external_power=event.external_power_source)
                battery = event.battery_level
            last_seen = event.time if event.time is not None else now
            await self.store.upsert_node(NodeRecord(
                node.id, "lorawan", node.hw_class, node.fw_version, node.security_counter,
                battery, last_seen, rx_meta))
            if isinstance(event, JoinEvent):
                await self.store.record_event(node.id, "join", {"dev_addr": event.dev_addr}, now=now)
            elif isinstance(event, StatusEvent):
                await self.store.record_event(node.id, "status", {
                    "battery": battery, "margin": event.margin,
                    "external_power": event.external_power_source}, now=now)

    # ------------------------------------------------------------------ views

    def _live_state(self, campaign_id: str) -> dict[str, Any] | None:
        active = self.active.get(campaign_id)
        if active is None:
            return None
        return active.driver.document()

    async def view(self, campaign_id: str) -> dict[str, Any]:
        rec = await self._record(campaign_id)
        doc = self._live_state(campaign_id)
        revision = rec.revision
        if doc is None:
            snap = await self.store.load_state(campaign_id)
            doc, revision = snap.state, snap.revision
        if rec.kind == "zigbee":
            return zigbee_view(rec, doc, revision)
        return self._view(rec, doc, revision)

    @staticmethod
    def _view(rec: CampaignRecord, doc: Mapping[str, Any] | None, revision: int) -> dict[str, Any]:
        session = rec.config.get("session", {})
        machine = (doc or {}).get("machine") or {}
        lanes = machine.get("lanes") or {}

        def fields(s: Mapping[str, Any]) -> dict[str, Any]:
            return {"nb_frag_received": s["progress"]["nb_frag_received"],
                    "missing_frag": s["progress"]["missing_frag"]}

        return campaign_view(
            rec, device_summary(doc), stage=machine.get("stage", "created" if doc is None else None),
            revision=revision, fields=fields,
            multicast={"mc_addr": f"{session.get('mc_addr', 0):08x}", "dr": session.get("dr"),
                       "frequency": session.get("frequency"),
                       "device_class": session.get("device_class"),
                       "frag_size": session.get("frag_size"),
                       "session_time": machine.get("session_time"),
                       "highest_counter": max((lane.get("highest", 0) for lane in lanes.values()),
                                              default=0)})

    async def list(self) -> list[dict[str, Any]]:
        out = []
        for rec in await self.store.list_campaigns():
            out.append({"id": rec.id, "kind": rec.kind, "status": rec.status,
                        "image": rec.image_digest, "created_at": rec.created_at,
                        "updated_at": rec.updated_at, "targets": len(rec.config.get("targets", []))})
        return out

    async def _find_node(self, node_id: str) -> NodeRecord:
        """A node by DevEUI (16 hex digits) or IEEE address (``aa:bb:...``); either form of
        the 16 digits finds it."""
        forms: tuple[Callable[[Any], str], ...] = (normalise_dev_eui, normalise_ieee)
        if ":" in str(node_id):
            forms = forms[::-1]
        candidates = []
        for normalise in forms:
            with contextlib.suppress(InvalidArgument):
                candidates.append(normalise(node_id))
        if not candidates:
            raise ApiError(404, f"unknown node {node_id!r}", field="dev_eui")
        for candidate in candidates:
            with contextlib.suppress(UnknownNode):
                return await self.store.get_node(candidate)
        raise ApiError(404, f"unknown node {candidates[0]}", field="dev_eui")

    async def node(self, node_id: str) -> dict[str, Any]:
        node = await self._find_node(node_id)
        eui = node.id
        campaigns = []
        for rec in await self.store.list_campaigns(kind=node.kind):
            if eui not in rec.config.get("targets", []) and eui not in rec.config.get("refused", {}):
                continue
            progress = await self.store.list_progress(rec.id, eui)
            p = progress[0] if progress else None
            campaigns.append({"campaign": rec.id, "status": rec.status,
                              "refused": rec.config.get("refused", {}).get(eui),
                              "phase": p.phase if p else None, "outcome": p.outcome if p else None,
                              "progress": p.progress if p else None,
                              "updated_at": p.updated_at if p else None})
        return {"id": node.id, "kind": node.kind, "hw_class": node.hw_class,
                "fw_version": node.fw_version, "security_counter": node.security_counter,
                "battery": node.battery, "last_seen": node.last_seen, "rx_meta": node.rx_meta,
                "campaigns": campaigns}

    async def node_history(self, node_id: str, *, campaign_id: str | None = None,
                           limit: int | None = None) -> list[dict[str, Any]]:
        node = await self._find_node(node_id)
        try:
            events = await self.store.history(node.id, campaign_id=campaign_id, limit=limit)
        except UnknownNode:
            raise ApiError(404, f"unknown node {node.id}", field="dev_eui") from None
        return [{"id": e.id, "time": e.time, "event": e.event, "campaign": e.campaign_id,
                 "details": e.details} for e in events]

    async def nodes(self) -> list[dict[str, Any]]:
        return [{"id": n.id, "kind": n.kind, "hw_class": n.hw_class, "fw_version": n.fw_version,
                 "battery": n.battery, "last_seen": n.last_seen}
                for n in await self.store.list_nodes()]

    def stats(self) -> dict[str, Any]:
        return {"running": sorted(self.active), "events_routed": self.events_routed}

