"""Zigbee campaigns in the service: the campaign runner's Zigbee side.

A Zigbee campaign serves one ``zigbee-ota`` image from the catalogue to a set of nodes
(IEEE addresses) with a :class:`~proxyota.zigbee.campaign.ZigbeeCampaign` (the sans-IO OTA
server behind the zigpy adapter) on the service's coordinator
(:mod:`proxyota.service.zigbee_radio`), on the service's clock. The runner
(:mod:`proxyota.service.runner`) drives its lifecycle exactly as a LoRaWAN campaign's:
this module gives it what differs.

* :func:`zigbee_summary`: per target, what the store keeps as progress: the server's phase
  (``pending`` before the node was notified), the outcome (``successful``: verified on the
  new file version; ``up_to_date``; ``failed``; ``refused``: the server answered
  NO_IMAGE_AVAILABLE for a reason that will not change; ``cancelled``: the campaign was
  aborted first) and the progress: ``offset`` (end of the last block served),
  ``image_size``, ``blocks_served``, ``bytes_served``, the file version the node reported,
  its device class, where it resumed, restarts and retries.
* :class:`ZigbeeStoreSink`: the store sink of the LoRaWAN driver
  (:class:`~proxyota.service.sink.StoreSink`: state document, progress, history events and
  ``device.outcome`` audit records in ONE transaction per save) reading that summary, which
  also keeps the nodes' records current in the same transaction: ``fw_version`` = the file
  version the node reported, the hardware class ``zigbee:<mfr>:<type>`` it queried with,
  ``last_seen`` = its last request, ``rx_meta`` = what zigpy knows (NWK address, LQI,
  RSSI, hops, model, device class).
* :class:`ZigbeeDriver`: a ZigbeeCampaign with the driver interface the runner uses
  (``run``, ``halt``: stop between two steps and detach from zigpy, ``cancel``: outcome
  ``cancelled`` for every node still pending, saved and audited; ``results``).
* :class:`ZigbeeCampaigns`: create-time checks (the image is a Zigbee OTA file the server
  can serve, zigpy knows the node) and building a driver from the stored campaign, which
  is also how a restart resumes it: the server state comes back from the store, nodes are
  served from the offset they ask for (their partial download kept), pending targets get
  an ImageNotify at once.

Pause detaches the campaign from zigpy: meanwhile zigpy's own OTA handler answers the
nodes (QueryNextImage: NO_IMAGE_AVAILABLE, ImageBlockRequest: ABORT), so they stop and
keep what they have; resume notifies them and they continue from their offset. Abort
does the same and ends every pending node with ``cancelled``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any, Callable, Mapping

from proxyota.errors import DecodeError, InvalidArgument
from proxyota.images.policy import Container, zigbee_hw_class
from proxyota.service.errors import ApiError
from proxyota.service.images import ImageCatalog, UsableImage
from proxyota.service.options import OptionError
from proxyota.service.sink import StoreSink, Summary
from proxyota.service.views import SUCCESS_OUTCOMES, campaign_view
from proxyota.service.zigbee_options import ZigbeeOptions, merge_zigbee_options, parse_zigbee_options
from proxyota.store import CampaignRecord, NodeRecord, Store, UnknownNode
from proxyota.zigbee.campaign import ZigbeeCampaign, status_of
from proxyota.zigbee.ota_server import OtaServer

__all__ = ["ZigbeeCampaigns", "ZigbeeDriver", "ZigbeeStoreSink", "cancel_stored", "mark_cancelled",
           "normalise_ieee", "zigbee_summary", "zigbee_view"]

log = logging.getLogger("proxyota.service.zigbee")

#: campaign status of a target (``status_of``) -> the outcome the store and the API show
_OUTCOMES = {"updated": "successful", "up_to_date": "up_to_date", "failed": "failed",
             "refused": "refused"}
#: progress field -> NodeState field
_PROGRESS = {"offset": "position", "image_size": "image_size", "blocks_served": "blocks_served",
             "bytes_served": "bytes_served", "file_version": "file_version",
             "current_file_version": "current_file_version", "device_class": "device_class",
             "manufacturer_code": "manufacturer_code", "image_type": "image_type",
             "resumed_from": "resumed_from", "restarts": "restarts", "retries": "retries",
             "last_request": "last_request", "completed_at": "completed_at"}


def normalise_ieee(value: object) -> str:
    """An IEEE address in zigpy's text form ``00:0d:6f:00:0a:bc:de:f0`` (InvalidArgument
    otherwise); separators ``:`` / ``-`` or none are accepted."""
    if not isinstance(value, str):
        raise InvalidArgument(f"ieee must be a string of 16 hex digits, got {value!r}")
    text = value.strip().lower().replace(":", "").replace("-", "")
    if len(text) != 16 or any(c not in "0123456789abcdef" for c in text):
        raise InvalidArgument(f"ieee must be an IEEE address (16 hex digits, e.g. "
                              f"00:0d:6f:00:0a:bc:de:f0), got {value!r}")
    return ":".join(text[i:i + 2] for i in range(0, 16, 2))


# ----------------------------------------------------------------------------- documents


def zigbee_summary(doc: Mapping[str, Any] | None) -> Summary:
    """Per target of a ZigbeeCampaign state document: phase, outcome, progress, detail."""
    if not doc:
        return {}
    nodes = (doc.get("server") or {}).get("nodes") or {}
    driver = doc.get("driver") or {}
    refused = driver.get("refused") or {}
    cancelled = driver.get("cancelled_at") is not None
    out: Summary = {}
    for ieee in driver.get("targets") or sorted(nodes):
        node = nodes.get(ieee) or {}
        phase = node.get("phase")
        status, reason = status_of(phase, node.get("outcome"), node.get("reason"), refused.get(ieee))
        outcome = _OUTCOMES.get(status)
        if outcome is None and cancelled:
            outcome, reason = "cancelled", "the campaign was aborted"
        out[ieee] = {
            "phase": phase or "pending",
            "outcome": outcome,
            "progress": {key: node.get(name) for key, name in _PROGRESS.items()},
            "detail": {"reason": reason} if outcome is not None and reason else {},
        }
    return out


def mark_cancelled(doc: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The document of an aborted campaign: its pending targets end ``cancelled``."""
    out = dict(doc)
    driver = dict(out.get("driver") or {})
    driver["cancelled_at"] = now
    out["driver"] = driver
    return out


def _stage(doc: Mapping[str, Any] | None) -> str:
    if doc is None:
        return "created"
    driver = doc.get("driver") or {}
    if driver.get("finished_at") is not None or driver.get("cancelled_at") is not None:
        return "finished"
    return "serving"


def zigbee_view(rec: CampaignRecord, doc: Mapping[str, Any] | None, revision: int) -> dict[str, Any]:
    """``GET /campaigns/{id}`` of a Zigbee campaign."""
    summary = zigbee_summary(doc)
    driver = (doc or {}).get("driver") or {}
    totals = {"blocks_served": 0, "bytes_served": 0}
    phases: collections.Counter[str] = collections.Counter()
    for s in summary.values():
        phases[s["phase"]] += 1
        for key in totals:
            totals[key] += s["progress"][key] or 0

    def fields(s: Mapping[str, Any]) -> dict[str, Any]:
        p = s["progress"]
        size = p["image_size"]
        return {"offset": p["offset"], "image_size": size,
                "progress": round(min(1.0, (p["offset"] or 0) / size), 4) if size else 0.0,
                "blocks_served": p["blocks_served"], "current_file_version": p["current_file_version"],
                "device_class": p["device_class"], "reason": s["detail"].get("reason")}

    return campaign_view(rec, summary, stage=_stage(doc), revision=revision, fields=fields, zigbee={
        "notify": driver.get("notify", (rec.config.get("options") or {}).get("notify", "unicast")),
        "started_at": driver.get("started_at"), "finished_at": driver.get("finished_at"),
        "cancelled_at": driver.get("cancelled_at"), "restarts": driver.get("restarts", 0),
        "phases": dict(sorted(phases.items())), **totals})


# ----------------------------------------------------------------------------- the sink


class ZigbeeStoreSink(StoreSink):
    """The store sink of a Zigbee campaign (see the module docstring). ``node_meta(ieee)``:
    what zigpy knows of the node, merged into its ``rx_meta``."""

    def __init__(self, store: Store, campaign_id: str, *, clock: Callable[[], float],
                 node_meta: Callable[[str], Mapping[str, Any]] | None = None) -> None:
        super().__init__(store, campaign_id, clock=clock, summarize=zigbee_summary, node_key="ieee")
        self.node_meta = node_meta

    async def _also(self, changed: list[tuple[str, dict[str, Any] | None, dict[str, Any]]],
                    now: float) -> None:
        for ieee, prev, cur in changed:
            p = cur["progress"]
            if prev is not None and prev["phase"] == cur["phase"] and prev["outcome"] == cur["outcome"] \
                    and prev["progress"]["current_file_version"] == p["current_file_version"]:
                continue  # a block more: the progress record has it, the node record stays
            node = await zigbee_node(self.store, ieee)
            if node is None:
                continue
            version = p["current_file_version"] if p["current_file_version"] is not None else node.fw_version
            counter = node.security_counter
            if version is not None:
                counter = max(counter or 0, version)
            hw_class = node.hw_class
            if hw_class is None and p["manufacturer_code"] is not None and p["image_type"] is not None:
                hw_class = zigbee_hw_class(p["manufacturer_code"], p["image_type"])
            rx_meta = dict(node.rx_meta)
            if self.node_meta is not None:
                rx_meta.update(self.node_meta(ieee))
            last_seen = p["last_request"] if p["last_request"] is not None else node.last_seen
            await self.store.upsert_node(NodeRecord(ieee, "zigbee", hw_class, version, counter,
                                                    node.battery, last_seen, rx_meta))


async def zigbee_node(store: Store, ieee: str) -> NodeRecord | None:
    """The node record of ``ieee`` (a new one when unknown); None when the id belongs to a
    node of another kind."""
    try:
        node = await store.get_node(ieee)
    except UnknownNode:
        return NodeRecord(ieee, "zigbee")
    return node if node.kind == "zigbee" else None


async def cancel_stored(store: Store, rec: CampaignRecord, now: float) -> None:
    """Abort of a Zigbee campaign that has no driver (paused, or aborted while the service
    was down): its pending targets end ``cancelled`` (saved and audited)."""
    sink = ZigbeeStoreSink(store, rec.id, clock=lambda: now)
    doc = await sink.load(rec.id)
    if doc is None or _stage(doc) == "finished":
        return
    await sink.save(rec.id, mark_cancelled(doc, now))


# ----------------------------------------------------------------------------- the driver


class ZigbeeDriver:
    """A :class:`ZigbeeCampaign` as the runner drives it."""

    kind = "zigbee"

    def __init__(self, campaign: ZigbeeCampaign, sink: ZigbeeStoreSink) -> None:
        self.campaign = campaign
        self.sink = sink
        self.campaign_id = campaign.campaign_id

    @property
    def finished(self) -> bool:
        return self.campaign.finished

    @property
    def devices(self) -> frozenset[str]:
        return frozenset(self.campaign.targets)

    def document(self) -> dict[str, Any]:
        return self.campaign.document()

    async def run(self) -> dict[str, Any]:
        """Serve until every target is done, or :meth:`halt`."""
        return await self.campaign.run()

    async def halt(self, task: asyncio.Task[Any]) -> None:
        """Stop between two steps (the step in flight is saved), leave zigpy's receive path,
        drop the sends not yet out (the nodes ask again), and let ``task`` (running
        :meth:`run`) return. Never waits for the radio: the API may hold an emulated
        clock busy meanwhile."""
        await self.campaign.halt()
        if not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def cancel(self, now: float) -> None:
        """Abort (after :meth:`halt`): every target without an outcome ends ``cancelled``."""
        if self.finished:
            return
        await self.sink.save(self.campaign_id, mark_cancelled(self.document(), now))

    async def close(self) -> None:
        await self.campaign.close(wait=True)

    def results(self, report: Mapping[str, Any],
                image: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, int | None]]:
        """The ``campaign.finished`` audit details and the file version of each node that
        runs the image now."""
        summary = zigbee_summary(self.document())
        counts = collections.Counter(s["outcome"] for s in summary.values() if s["outcome"])
        successes = {ieee: s["progress"]["current_file_version"] or image.get("file_version")
                     for ieee, s in summary.items() if s["outcome"] in SUCCESS_OUTCOMES}
        details = {"outcomes": dict(sorted(counts.items())), "successful": sorted(successes),
                   "blocks_served": report.get("blocks_served"), "bytes_served": report.get("bytes_served"),
                   "elapsed_s": report.get("elapsed_s"), "restarts": report.get("restarts")}
        return details, successes


# ----------------------------------------------------------------------------- the backend


class ZigbeeCampaigns:
    """What the runner asks about Zigbee campaigns: option and image checks, target
    admission, the stored configuration, and drivers (on ``radio``'s zigpy application)."""

    def __init__(self, radio: Any, store: Store, catalog: ImageCatalog, clock: Any, *,
                 defaults: Mapping[str, Any]) -> None:
        self.radio = radio
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.defaults = dict(defaults)

    def options(self, option_doc: Mapping[str, Any]) -> ZigbeeOptions:
        """The service defaults with the request's ``options`` on top (ApiError 422)."""
        try:
            return parse_zigbee_options(merge_zigbee_options(self.defaults, option_doc))
        except OptionError as exc:
            raise ApiError(422, str(exc)[len(exc.field) + 2:], field=exc.field) from None

    @staticmethod
    def check_image(image: UsableImage) -> None:
        """The image must be a Zigbee OTA file the OTA server can serve (ApiError 422)."""
        meta = image.meta
        if meta.container != Container.ZIGBEE_OTA:
            raise ApiError(422, f"image {meta.digest} is a {meta.container.value} file; a Zigbee "
                                "campaign serves a Zigbee OTA file (kind zigbee-ota)", field="image")
        try:
            OtaServer([image.data])
        except (InvalidArgument, DecodeError) as exc:
            raise ApiError(422, f"the OTA server cannot serve image {meta.digest}: {exc}",
                           field="image") from None

    def admit(self, ieee: str) -> dict[str, str] | None:
        """None, or a refusal when zigpy does not know the node."""
        if self.radio.knows(ieee):
            return None
        return {"reason": "not_in_network",
                "detail": "zigpy knows no device with this IEEE address (not joined, or not in "
                          "its database)"}

    @staticmethod
    def config(digest: str, image: UsableImage, targets: list[str],
               refused: Mapping[str, Any], options: ZigbeeOptions) -> dict[str, Any]:
        meta = image.meta
        return {
            "image": {"digest": digest, "target": meta.name,
                      "firmware_version": meta.firmware_version,
                      "security_counter": meta.security_counter,
                      "manufacturer_code": meta.manufacturer_code, "image_type": meta.image_type,
                      "file_version": meta.file_version},
            "targets": sorted(targets),
            "refused": dict(refused),
            "options": dict(options.values),
        }

    async def driver(self, rec: CampaignRecord) -> ZigbeeDriver:
        """The campaign's driver, resumed from its stored state when it has one."""
        options = parse_zigbee_options(rec.config.get("options") or {})
        image = await self.catalog.usable(rec.image_digest)
        sink = ZigbeeStoreSink(self.store, rec.id, clock=self.clock.now, node_meta=self.radio.node_meta)
        campaign = await ZigbeeCampaign.resume(
            [image.data], options.policy, self.radio.app, self.clock, campaign_id=rec.id, sink=sink,
            targets=list(rec.config.get("targets", [])), notify=options.notify,
            aps_max_payload=self.radio.aps_max_payload)
        return ZigbeeDriver(campaign, sink)

    async def sync_inventory(self) -> int:
        """Node records for the nodes zigpy knows (kind ``zigbee``): rx_meta from zigpy, the
        file version zigpy has cached when the record has none. Returns how many."""
        inventory = self.radio.inventory()
        for ieee, (version, meta) in inventory.items():
            async with self.store.transaction():
                node = await zigbee_node(self.store, ieee)
                if node is None:
                    continue
                fw = node.fw_version if node.fw_version is not None else version
                counter = node.security_counter if node.security_counter is not None else fw
                await self.store.upsert_node(NodeRecord(ieee, "zigbee", node.hw_class, fw, counter,
                                                        node.battery, node.last_seen,
                                                        {**node.rx_meta, **meta}))
        return len(inventory)
