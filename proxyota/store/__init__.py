"""Durable state: images, campaigns, nodes, per-node progress and the audit log.

``Store`` (:mod:`.base`) is the interface; :class:`SqliteStore` (:mod:`.sqlite`) the default
backend; :mod:`.migrations` its schema; :mod:`.audit` the hash chain. Typical use::

    async with SqliteStore("/var/lib/proxyota/state.db", clock=clock.now) as store:
        rev = await store.save_state(campaign_id, session.state.to_dict(), rev)
        await store.buffer_progress(ProgressUpdate(campaign_id, node_id, "blocks", ranges, now))
        await store.flush()          # before acknowledging: anything acknowledged was flushed
"""

from __future__ import annotations

import os

from proxyota.errors import InvalidArgument
from proxyota.store.base import (
    CAMPAIGN_KINDS,
    CAMPAIGN_STATUSES,
    STATUS_TRANSITIONS,
    TERMINAL_STATUSES,
    AuditAnchor,
    AuditRecord,
    AuditVerification,
    CampaignExists,
    CampaignRecord,
    ImageConflict,
    ImageRecord,
    InvalidRecord,
    InvalidTransition,
    NodeEvent,
    NodeRecord,
    NotFound,
    ProgressBuffer,
    ProgressRecord,
    ProgressUpdate,
    RevisionConflict,
    SchemaError,
    SchemaTooNew,
    StateSnapshot,
    Store,
    StoreClosed,
    StoreError,
    UnknownCampaign,
    UnknownImage,
    UnknownNode,
)
from proxyota.store.sqlite import SqliteStore

__all__ = [
    "CAMPAIGN_KINDS",
    "CAMPAIGN_STATUSES",
    "STATUS_TRANSITIONS",
    "TERMINAL_STATUSES",
    "AuditAnchor",
    "AuditRecord",
    "AuditVerification",
    "CampaignExists",
    "CampaignRecord",
    "ImageConflict",
    "ImageRecord",
    "InvalidRecord",
    "InvalidTransition",
    "NodeEvent",
    "NodeRecord",
    "NotFound",
    "ProgressBuffer",
    "ProgressRecord",
    "ProgressUpdate",
    "RevisionConflict",
    "SchemaError",
    "SchemaTooNew",
    "StateSnapshot",
    "Store",
    "StoreClosed",
    "StoreError",
    "UnknownCampaign",
    "UnknownImage",
    "UnknownNode",
    "SqliteStore",
    "store_for",
]


def store_for(location: str | os.PathLike[str], **options) -> Store:
    """A (not yet opened) store for ``location``: a file path or ``sqlite:PATH``.

    ``postgresql://`` URLs are reserved for the future PostgreSQL backend.
    """
    text = os.fspath(location)
    if text.startswith(("postgres://", "postgresql://")):
        raise InvalidArgument("the PostgreSQL store backend is not implemented yet; use a SQLite path")
    if text.startswith("sqlite:"):
        text = text[len("sqlite:"):]
        if text.startswith("//"):
            text = text[2:]
    if not text:
        raise InvalidArgument("store location is empty")
    return SqliteStore(text, **options)
