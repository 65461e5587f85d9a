"""The store-backed :class:`~proxyota.chirpstack.fuota.StateSink` of one campaign.

The FUOTA driver (and the Zigbee campaign, through
:class:`~proxyota.service.zigbee.ZigbeeStoreSink`) saves its state document before it
executes a step's actions. Here one save is ONE store transaction holding:

* the document itself (``save_state`` with the expected revision: a lost update is refused);
* per node whose phase, fragment report or outcome changed: its progress record and, on a
  phase change or an outcome, a node event (the node's history);
* per node that got its outcome in this step: an audit record ``device.outcome``.

So an outcome is audited exactly once (a crash before the commit loses the step and its
audit record together, and the machine redoes the step; after the commit both are there).
Nothing secret is in the document: the machine state holds no keys (they are recomputed
from the campaign's configuration).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from proxyota.store import ProgressUpdate, Store

__all__ = ["StoreSink", "Summary", "device_summary", "DEVICE_OUTCOME"]

log = logging.getLogger("proxyota.service.sink")

#: audit action of a device's outcome in a campaign
DEVICE_OUTCOME = "device.outcome"


def device_summary(doc: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per device: what the store keeps as progress (phase, report, outcome)."""
    if not doc:
        return {}
    machine = doc.get("machine") or {}
    lanes = machine.get("lanes") or {}
    out: dict[str, dict[str, Any]] = {}
    for eui, dev in (machine.get("devices") or {}).items():
        report = dev.get("report") or {}
        lane = lanes.get(dev.get("lane") or "") or {}
        out[eui] = {
            "phase": dev.get("phase"),
            "outcome": dev.get("reason"),
            "progress": {
                "nb_frag_received": report.get("nb_frag_received"),
                "missing_frag": report.get("missing_frag"),
                "round": report.get("round"),
                "lane": dev.get("lane"),
                "highest_counter": lane.get("highest"),
                "versions": dict(dev.get("versions") or {}),
                "fw_version": dev.get("fw_version"),
                "completion": dev.get("completion"),
            },
            "detail": dict(dev.get("detail") or {}),
        }
    return out


#: a node's summary in a state document (see :func:`device_summary`)
Summary = dict[str, dict[str, Any]]


class StoreSink:
    """``StateSink`` for ``campaign_id`` on ``store`` (one instance per driver).

    ``summarize`` reads the per-node summary out of a state document (phase, outcome,
    progress, detail; :func:`device_summary` for the LoRaWAN machine); ``node_key`` names
    the node in ``device.outcome`` audit records. Subclasses add their own writes to the
    save's transaction in :meth:`_also`."""

    def __init__(self, store: Store, campaign_id: str, *, clock: Callable[[], float],
                 actor: str = "service",
                 summarize: Callable[[Mapping[str, Any] | None], Summary] = device_summary,
                 node_key: str = "dev_eui") -> None:
        self.store = store
        self.clock = clock
        self.campaign_id = campaign_id
        self.actor = actor
        self.summarize = summarize
        self.node_key = node_key
        self.revision = 0
        self.saves = 0
        self._last: Summary = {}

    def _check(self, campaign_id: str) -> None:
        if campaign_id != self.campaign_id:
            raise ValueError(f"this sink belongs to campaign {self.campaign_id!r}, "
                             f"not {campaign_id!r}")

    async def load(self, campaign_id: str) -> dict[str, Any] | None:
        self._check(campaign_id)
        snap = await self.store.load_state(campaign_id)
        self.revision = snap.revision
        self._last = self.summarize(snap.state)
        return snap.state

    async def save(self, campaign_id: str, doc: dict[str, Any]) -> None:
        self._check(campaign_id)
        summary = self.summarize(doc)
        now = self.clock()
        async with self.store.transaction():
            revision = await self.store.save_state(campaign_id, doc, self.revision, now=now)
            updates: list[ProgressUpdate] = []
            changed: list[tuple[str, dict[str, Any] | None, dict[str, Any]]] = []
            for eui, cur in summary.items():
                prev = self._last.get(eui)
                if prev == cur:
                    continue
                changed.append((eui, prev, cur))
                updates.append(ProgressUpdate(campaign_id, eui, cur["phase"] or "unknown",
                                              cur["progress"], now, cur["outcome"]))
                if prev is None or prev["phase"] != cur["phase"]:
                    await self.store.record_event(
                        eui, "phase", {"from": prev["phase"] if prev else None, "to": cur["phase"]},
                        campaign_id=campaign_id, now=now)
                if cur["outcome"] is not None and (prev is None or prev["outcome"] is None):
                    details = {self.node_key: eui, "reason": cur["outcome"], "detail": cur["detail"]}
                    await self.store.record_event(eui, "outcome", details, campaign_id=campaign_id,
                                                  now=now)
                    await self.store.audit_append(self.actor, DEVICE_OUTCOME, campaign_id, details,
                                                  now=now)
            if updates:
                await self.store.record_progress(updates)
            await self._also(changed, now)
        self.revision = revision
        self._last = summary
        self.saves += 1
        log.debug("campaign state saved", extra={"campaign": campaign_id, "revision": revision,
                                                  "stage": (doc.get("machine") or {}).get("stage")})

    async def _also(self, changed: list[tuple[str, dict[str, Any] | None, dict[str, Any]]],
                    now: float) -> None:
        """More writes in the save's transaction, given the nodes whose summary changed
        (id, previous summary or None, current summary)."""
