"""The JSON view of a campaign (``GET /campaigns/{id}``), common to both kinds: identity,
status, image, options, per-node phase / outcome / progress and the counts; each kind adds
its own fields (``multicast`` for LoRaWAN, ``zigbee`` for Zigbee)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from proxyota.store import CampaignRecord

__all__ = ["SUCCESS_OUTCOMES", "campaign_view"]

#: node outcomes that mean "runs the image" (a Zigbee node may have been up to date already)
SUCCESS_OUTCOMES = frozenset({"successful", "up_to_date"})


def campaign_view(rec: CampaignRecord, summary: Mapping[str, Mapping[str, Any]], *,
                  stage: str | None, revision: int,
                  fields: Callable[[Mapping[str, Any]], dict[str, Any]],
                  **extra: Any) -> dict[str, Any]:
    """The view of ``rec`` from the per-node ``summary`` of its state document (see
    :func:`proxyota.service.sink.device_summary`); ``fields(summary entry)`` gives the
    kind's progress fields of a node; ``extra`` are the kind's own top-level fields."""
    cfg = rec.config
    devices: dict[str, Any] = {}
    counts = {"targets": len(cfg.get("targets", [])), "refused": len(cfg.get("refused", {})),
              "successful": 0, "failed": 0, "in_progress": 0}
    for node_id in cfg.get("targets", []):
        s = summary.get(node_id)
        if s is None:
            devices[node_id] = {"phase": "pending", "outcome": None}
            counts["in_progress"] += 1
            continue
        devices[node_id] = {"phase": s["phase"], "outcome": s["outcome"], **fields(s)}
        if s["outcome"] in SUCCESS_OUTCOMES:
            counts["successful"] += 1
        elif s["outcome"] is not None:
            counts["failed"] += 1
        else:
            counts["in_progress"] += 1
    return {
        "id": rec.id,
        "kind": rec.kind,
        "status": rec.status,
        "stage": stage,
        "image": cfg.get("image", {"digest": rec.image_digest}),
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "state_revision": revision,
        "options": cfg.get("options", {}),
        **extra,
        "counts": counts,
        "devices": devices,
        "refused": cfg.get("refused", {}),
    }
