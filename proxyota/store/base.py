"""The durable state store's interface: records, errors, the progress buffer, ``Store``.

Everything the gateway must not forget lives behind :class:`Store`: accepted images,
campaigns (status, configuration and the session machine's state), nodes, per-node
per-campaign progress, node histories and the hash-chained audit log. The SQLite backend
(:mod:`proxyota.store.sqlite`) implements it; a PostgreSQL backend implements the same
abstract methods (plus :meth:`Store.transaction` and :meth:`Store.on_rollback`) and
inherits the progress batching defined here.

Durability contract
-------------------
Every write method is atomic and, outside :meth:`Store.transaction`, durable when it
returns. Inside ``transaction()`` the writes become durable together when the outermost
block exits without an exception, or not at all.

Per-frame progress is batched: :meth:`Store.buffer_progress` only remembers the update in
memory (a :class:`ProgressBuffer`, newest update per (campaign, node) wins) and writes the
whole buffer in ONE transaction every ``max_updates`` updates or once the oldest pending
update is ``max_age`` seconds old, judged on the ``now`` the caller passes (no hidden
timers: call :meth:`Store.tick` from the event loop). :meth:`Store.flush` is the
durability point: call it before acknowledging a node or acting on its progress.
**Anything acknowledged was flushed**, so a crash loses at most updates that were neither
flushed nor acknowledged, which the protocol recovers (the node asks again for what it
still misses).

Bad input (unknown ids, a stale state revision, a state that is not JSON) raises a
:class:`StoreError` subclass naming what is wrong, and nothing is written.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from proxyota.errors import InvalidArgument, ProxyotaError

__all__ = [
    "CAMPAIGN_KINDS",
    "CAMPAIGN_STATUSES",
    "STATUS_TRANSITIONS",
    "TERMINAL_STATUSES",
    "GENESIS_HASH",
    "StoreError",
    "StoreClosed",
    "SchemaError",
    "SchemaTooNew",
    "NotFound",
    "UnknownImage",
    "UnknownCampaign",
    "UnknownNode",
    "ImageConflict",
    "CampaignExists",
    "InvalidTransition",
    "RevisionConflict",
    "InvalidRecord",
    "canonical_json",
    "check_json",
    "ImageRecord",
    "CampaignRecord",
    "StateSnapshot",
    "NodeRecord",
    "NodeEvent",
    "ProgressUpdate",
    "ProgressRecord",
    "AuditRecord",
    "AuditAnchor",
    "AuditVerification",
    "ProgressBuffer",
    "Store",
]

#: what a campaign (and a node) can be
CAMPAIGN_KINDS = ("lorawan", "zigbee")
#: every campaign status
CAMPAIGN_STATUSES = ("draft", "running", "paused", "aborted", "completed", "failed")
#: statuses a campaign never leaves
TERMINAL_STATUSES = frozenset({"aborted", "completed", "failed"})
#: allowed ``update_status`` moves (setting the current status again is a no-op)
STATUS_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "draft": frozenset({"running", "aborted"}),
    "running": frozenset({"paused", "aborted", "completed", "failed"}),
    "paused": frozenset({"running", "aborted", "failed"}),
    "aborted": frozenset(),
    "completed": frozenset(),
    "failed": frozenset(),
}
#: ``prev_hash`` of the first audit record
GENESIS_HASH = "0" * 64

_HEX64 = re.compile(r"[0-9a-f]{64}")


# --------------------------------------------------------------------------- errors


class StoreError(ProxyotaError):
    """Base of the state store's errors."""


class StoreClosed(StoreError):
    """The store is not open (or was opened read-only and a write was attempted)."""


class SchemaError(StoreError):
    """The database is not a proxyota store, or a migration failed."""


class SchemaTooNew(SchemaError):
    """The database was written by a newer proxyota (a schema version we do not know)."""

    def __init__(self, path: str, found: int, supported: int):
        self.found = found
        self.supported = supported
        super().__init__(
            f"{path}: database schema version {found} is newer than this proxyota supports "
            f"(up to {supported}); upgrade proxyota, or restore a backup made by this version"
        )


class NotFound(StoreError):
    """No record with that id."""


class UnknownImage(NotFound):
    def __init__(self, digest: str):
        self.digest = digest
        super().__init__(f"unknown image {digest!r}")


class UnknownCampaign(NotFound):
    def __init__(self, campaign_id: str):
        self.campaign_id = campaign_id
        super().__init__(f"unknown campaign {campaign_id!r}")


class UnknownNode(NotFound):
    def __init__(self, node_id: str):
        self.node_id = node_id
        super().__init__(f"unknown node {node_id!r}")


class ImageConflict(StoreError):
    """An image with that digest is already stored with another length or kind."""


class CampaignExists(StoreError):
    def __init__(self, campaign_id: str):
        self.campaign_id = campaign_id
        super().__init__(f"campaign {campaign_id!r} already exists")


class InvalidTransition(StoreError):
    def __init__(self, campaign_id: str, current: str, wanted: str):
        self.campaign_id = campaign_id
        self.current = current
        self.wanted = wanted
        allowed = ", ".join(sorted(STATUS_TRANSITIONS[current])) or "none, it is final"
        super().__init__(
            f"campaign {campaign_id!r} is {current}; cannot become {wanted} (allowed: {allowed})"
        )


class RevisionConflict(StoreError):
    """``save_state`` was given a revision that is not the stored one (a lost update)."""

    def __init__(self, campaign_id: str, expected: int, actual: int):
        self.campaign_id = campaign_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"campaign {campaign_id!r}: state revision conflict, expected revision {expected} "
            f"but the stored revision is {actual}; reload the state and retry"
        )


class InvalidRecord(StoreError, InvalidArgument):
    """A value to store has the wrong shape (not JSON, bad id, unknown status...)."""


# --------------------------------------------------------------------------- JSON


def check_json(value: Any, what: str = "value") -> None:
    """Raise :class:`InvalidRecord` unless ``value`` round-trips through JSON unchanged.

    Allowed: None, bool, int, finite float, str, list/tuple of those, dicts with str keys.
    (``json.dumps`` would silently turn int keys into str and accept NaN; a state that
    comes back different from what was saved is a bug, so it is refused here.)
    """
    stack: list[tuple[Any, str]] = [(value, what)]
    while stack:
        item, path = stack.pop()
        if item is None or isinstance(item, (bool, int, str)):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidRecord(f"{path} is {item!r}, which JSON cannot represent")
            continue
        if isinstance(item, (list, tuple)):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
            continue
        if isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise InvalidRecord(f"{path} has a non-string key {k!r}; JSON keys are strings")
                stack.append((v, f"{path}[{k!r}]"))
            continue
        raise InvalidRecord(f"{path} is a {type(item).__name__}, which is not JSON-serialisable")


def canonical_json(value: Any, what: str = "value") -> str:
    """The canonical JSON text of ``value``: sorted keys, no whitespace, ASCII only."""
    check_json(value, what)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _check_id(value: Any, what: str, max_len: int = 256) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len or not value.isprintable():
        raise InvalidRecord(f"{what} must be a non-empty printable string of at most {max_len} characters, got {value!r}")
    return value


def _check_time(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRecord(f"{what} must be a finite number of seconds, got {value!r}")
    return float(value)


def _check_optional_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRecord(f"{what} must be a non-negative integer or None, got {value!r}")
    return value


def check_digest(digest: Any) -> str:
    """A SHA-256 hex digest, normalised to lower case."""
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest.lower()):
        raise InvalidRecord(f"image digest must be 64 hex digits (SHA-256), got {digest!r}")
    return digest.lower()


def check_kind(kind: Any, what: str = "kind") -> str:
    if kind not in CAMPAIGN_KINDS:
        raise InvalidRecord(f"{what} must be one of {', '.join(CAMPAIGN_KINDS)}, got {kind!r}")
    return kind


def check_status(status: Any) -> str:
    if status not in CAMPAIGN_STATUSES:
        raise InvalidRecord(f"campaign status must be one of {', '.join(CAMPAIGN_STATUSES)}, got {status!r}")
    return status


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """An image the gateway accepted (verified against TUF metadata)."""

    digest: str  #: SHA-256 of the image bytes, lower-case hex
    length: int
    kind: str  #: e.g. "lorawan", "zigbee-ota", "delta"
    custom: dict[str, Any]  #: TUF target custom metadata
    accepted_at: float


@dataclass(frozen=True, slots=True)
class CampaignRecord:
    id: str
    kind: str  #: one of CAMPAIGN_KINDS
    image_digest: str
    status: str  #: one of CAMPAIGN_STATUSES
    config: dict[str, Any]  #: waves / cohorts / policies
    created_at: float
    updated_at: float
    revision: int  #: revision of the stored session state (0: none saved yet)


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """A campaign's session machine state as last saved (``state`` None at revision 0)."""

    campaign_id: str
    revision: int
    state: dict[str, Any] | None
    saved_at: float | None


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A node (LoRaWAN DevEUI or Zigbee IEEE address as ``id``)."""

    id: str
    kind: str  #: one of CAMPAIGN_KINDS
    hw_class: str | None = None
    fw_version: int | None = None  #: running firmware version
    security_counter: int | None = None  #: anti-rollback counter
    battery: float | None = None  #: percent, 0..100
    last_seen: float | None = None
    rx_meta: dict[str, Any] = field(default_factory=dict)  #: RSSI, SNR, gateway, hops...


@dataclass(frozen=True, slots=True)
class NodeEvent:
    id: int
    node_id: str
    campaign_id: str | None
    time: float
    event: str
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    """A node's whole progress in a campaign as of ``time`` (replaces the previous one).

    ``progress`` is JSON: a bitmap or ranges of fragments received / blocks served, file
    version, throughput... ``outcome`` is the reason once the node has finished.
    """

    campaign_id: str
    node_id: str
    phase: str
    progress: dict[str, Any]
    time: float
    outcome: str | None = None

    def validated(self) -> ProgressUpdate:
        """A checked deep copy (so later changes to the caller's dict are not buffered)."""
        _check_id(self.campaign_id, "campaign id")
        _check_id(self.node_id, "node id")
        _check_id(self.phase, "progress phase", 64)
        if self.outcome is not None and not isinstance(self.outcome, str):
            raise InvalidRecord(f"progress outcome must be a string or None, got {self.outcome!r}")
        if not isinstance(self.progress, dict):
            raise InvalidRecord(f"progress must be a dict, got {type(self.progress).__name__}")
        text = canonical_json(self.progress, "progress")
        return dataclasses.replace(self, progress=json.loads(text), time=_check_time(self.time, "progress time"))


@dataclass(frozen=True, slots=True)
class ProgressRecord:
    campaign_id: str
    node_id: str
    phase: str
    outcome: str | None
    progress: dict[str, Any]
    updated_at: float


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One link of the audit chain: ``hash = SHA-256(prev_hash || canonical record)``."""

    seq: int
    time: float
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def row(self) -> tuple[int, float, str, str, str, str, str, str]:
        """The stored form (details as canonical JSON text), as :mod:`.audit` checks it."""
        return (self.seq, self.time, self.actor, self.action, self.subject,
                canonical_json(self.details, "audit details"), self.prev_hash, self.hash)


@dataclass(frozen=True, slots=True)
class AuditAnchor:
    """The chain head (last seq and hash), kept outside the database to detect truncation."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> AuditAnchor:
        """``"SEQ:HASH"`` as printed by ``proxyota audit head``."""
        seq_text, sep, digest = text.strip().partition(":")
        if not sep or not seq_text.isdigit() or int(seq_text) < 1 or not _HEX64.fullmatch(digest.lower()):
            raise InvalidArgument(f"audit anchor must look like SEQ:HASH (seq >= 1, 64 hex digits), got {text!r}")
        return cls(int(seq_text), digest.lower())

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """What :meth:`Store.audit_verify` found; truthy when the chain is intact."""

    ok: bool
    records: int  #: records checked
    first_bad_seq: int | None = None
    reason: str | None = None
    head: AuditAnchor | None = None  #: last record checked (None for an empty log)
    notes: tuple[str, ...] = ()  #: warnings that are not chain failures

    def __bool__(self) -> bool:
        return self.ok


# --------------------------------------------------------------------------- batching


class ProgressBuffer:
    """Per-frame progress updates held in memory until the next flush.

    Updates are coalesced per (campaign, node): each carries the node's whole progress, so
    only the newest is written. :meth:`due` says when to flush: after ``max_updates``
    updates since the last flush, or when the oldest pending update is ``max_age`` seconds
    old at ``now``. The buffer never writes by itself; :class:`Store` drives it.
    """

    def __init__(self, max_updates: int = 256, max_age: float = 1.0):
        if isinstance(max_updates, bool) or not isinstance(max_updates, int) or max_updates < 1:
            raise InvalidArgument(f"max_updates must be a positive integer, got {max_updates!r}")
        if not isinstance(max_age, (int, float)) or not max_age >= 0:
            raise InvalidArgument(f"max_age must be >= 0 seconds, got {max_age!r}")
        self.max_updates = max_updates
        self.max_age = float(max_age)
        self._pending: dict[tuple[str, str], ProgressUpdate] = {}
        self._added = 0
        self._oldest: float | None = None

    def __len__(self) -> int:
        """Distinct (campaign, node) pairs waiting to be written."""
        return len(self._pending)

    @property
    def added(self) -> int:
        """Updates added since the last :meth:`take` (before coalescing)."""
        return self._added

    def add(self, update: ProgressUpdate) -> None:
        """Remember ``update`` (validated and copied); raises :class:`InvalidRecord`."""
        checked = update.validated()
        key = (checked.campaign_id, checked.node_id)
        self._pending.pop(key, None)  # keep insertion order = order of last update
        self._pending[key] = checked
        self._added += 1
        if self._oldest is None or checked.time < self._oldest:
            self._oldest = checked.time

    def due(self, now: float) -> bool:
        if not self._pending:
            return False
        if self._added >= self.max_updates:
            return True
        return self._oldest is not None and now - self._oldest >= self.max_age

    def take(self) -> list[ProgressUpdate]:
        """Everything pending, oldest first; the buffer is empty afterwards."""
        batch = list(self._pending.values())
        self._pending.clear()
        self._added = 0
        self._oldest = None
        return batch

    def restore(self, batch: Iterable[ProgressUpdate]) -> None:
        """Put back a batch whose write failed, unless newer updates replaced it since."""
        for update in batch:
            key = (update.campaign_id, update.node_id)
            if key not in self._pending:
                self._pending[key] = update
                self._added += 1
                if self._oldest is None or update.time < self._oldest:
                    self._oldest = update.time

    def drop(self, campaign_id: str | None = None, node_id: str | None = None) -> int:
        """Forget pending updates (all, of one campaign, one node, or one pair)."""
        keys = [k for k in self._pending
                if (campaign_id is None or k[0] == campaign_id) and (node_id is None or k[1] == node_id)]
        for key in keys:
            del self._pending[key]
        if not self._pending:
            self._added = 0
            self._oldest = None
        else:
            self._oldest = min(u.time for u in self._pending.values())
        return len(keys)


# --------------------------------------------------------------------------- interface


class Store(abc.ABC):
    """The durable state store. Async; one instance per database per process.

    Timestamps are seconds from ``clock()`` (the service passes its GPS clock) unless a
    method is given ``now``. Reads return fresh copies; records are frozen dataclasses.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] | None = None,
        progress_max_updates: int = 256,
        progress_max_age: float = 1.0,
    ):
        import time as _time

        self._clock = clock or _time.time
        self.progress_buffer = ProgressBuffer(progress_max_updates, progress_max_age)

    def _now(self, now: float | None) -> float:
        return _check_time(self._clock() if now is None else now, "now")

    # ---- lifecycle

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, migrate the schema if needed (refusing a newer one)."""

    @abc.abstractmethod
    async def close(self, *, flush: bool = True) -> None:
        """Flush buffered progress (unless ``flush=False``) and disconnect."""

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[None]:
        """Group writes: all become durable when the outermost block exits, or none.

        Nested blocks are savepoints (an exception rolls back only the inner block if the
        caller catches it). Other tasks wait while a transaction is open, so don't await
        another task that uses the store inside it.
        """

    @property
    @abc.abstractmethod
    def transaction_open(self) -> bool:
        """True while any task has a transaction() open."""

    @abc.abstractmethod
    def on_rollback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` if the current transaction (or savepoint) rolls back."""

    # ---- images

    @abc.abstractmethod
    async def put_image(
        self, digest: str, length: int, kind: str, custom: Mapping[str, Any] | None = None,
        *, now: float | None = None,
    ) -> ImageRecord:
        """Record an accepted image. Idempotent for the same digest, length and kind;
        new custom metadata replaces the old (and refreshes ``accepted_at``); another
        length or kind raises :class:`ImageConflict`."""

    @abc.abstractmethod
    async def get_image(self, digest: str) -> ImageRecord: ...

    @abc.abstractmethod
    async def list_images(self) -> list[ImageRecord]: ...

    # ---- campaigns

    @abc.abstractmethod
    async def create_campaign(
        self, campaign_id: str, kind: str, image_digest: str,
        config: Mapping[str, Any] | None = None, *, now: float | None = None,
    ) -> CampaignRecord:
        """A new campaign in status ``draft`` at state revision 0."""

    @abc.abstractmethod
    async def get_campaign(self, campaign_id: str) -> CampaignRecord: ...

    @abc.abstractmethod
    async def list_campaigns(
        self, status: str | Iterable[str] | None = None, kind: str | None = None,
    ) -> list[CampaignRecord]: ...

    @abc.abstractmethod
    async def update_status(
        self, campaign_id: str, status: str, *, now: float | None = None,
    ) -> CampaignRecord:
        """Move along :data:`STATUS_TRANSITIONS` (same status: no-op)."""

    @abc.abstractmethod
    async def save_state(
        self, campaign_id: str, state: Mapping[str, Any], expected_revision: int,
        *, now: float | None = None,
    ) -> int:
        """Replace the session state if the stored revision is ``expected_revision``;
        returns the new revision (``expected_revision + 1``). Raises
        :class:`RevisionConflict` otherwise."""

    @abc.abstractmethod
    async def load_state(self, campaign_id: str) -> StateSnapshot: ...

    # ---- nodes

    @abc.abstractmethod
    async def upsert_node(self, node: NodeRecord) -> NodeRecord:
        """Insert or replace the node's record (the kind of a node cannot change)."""

    @abc.abstractmethod
    async def get_node(self, node_id: str) -> NodeRecord: ...

    @abc.abstractmethod
    async def list_nodes(self, kind: str | None = None) -> list[NodeRecord]: ...

    @abc.abstractmethod
    async def record_event(
        self, node_id: str, event: str, details: Mapping[str, Any] | None = None,
        *, campaign_id: str | None = None, now: float | None = None,
    ) -> NodeEvent: ...

    @abc.abstractmethod
    async def history(
        self, node_id: str, *, campaign_id: str | None = None, limit: int | None = None,
    ) -> list[NodeEvent]:
        """The node's events, oldest first (the newest ``limit`` when given)."""

    # ---- progress

    @abc.abstractmethod
    async def record_progress(self, updates: Sequence[ProgressUpdate]) -> int:
        """Write progress updates in ONE transaction (all or none); returns how many."""

    @abc.abstractmethod
    async def list_progress(
        self, campaign_id: str, node_id: str | None = None,
    ) -> list[ProgressRecord]: ...

    async def buffer_progress(self, update: ProgressUpdate) -> bool:
        """Buffer a per-frame update (``update.time`` is now); flush when due.

        Returns True when this call flushed. Not durable until the next flush.
        """
        self.progress_buffer.add(update)
        if self.progress_buffer.due(update.time):
            await self.flush()
            return True
        return False

    async def tick(self, now: float) -> bool:
        """Flush if the oldest buffered update is ``max_age`` old; True when it did."""
        if self.progress_buffer.due(now):
            await self.flush()
            return True
        return False

    async def flush(self) -> int:
        """Write every buffered progress update in one transaction: the durability point.

        Call before acknowledging or acting on progress. Returns how many records were
        written. Inside :meth:`transaction` the batch is durable when that commits (and
        goes back into the buffer if it rolls back).
        """
        if not self.progress_buffer and not self.transaction_open:
            return 0  # nothing buffered and no batch of another flush still uncommitted
        async with self.transaction():
            batch = self.progress_buffer.take()
            if not batch:
                return 0
            self.on_rollback(lambda: self.progress_buffer.restore(batch))
            await self.record_progress(batch)
        return len(batch)

    @property
    def pending_progress(self) -> int:
        return len(self.progress_buffer)

    # ---- audit

    @abc.abstractmethod
    async def audit_append(
        self, actor: str, action: str, subject: str, details: Mapping[str, Any] | None = None,
        *, now: float | None = None,
    ) -> AuditRecord:
        """Append a record to the hash chain (there is no way to change or remove one)."""

    @abc.abstractmethod
    async def audit_records(self, after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]: ...

    @abc.abstractmethod
    async def audit_head(self) -> AuditAnchor | None:
        """The anchor to keep elsewhere (None while the log is empty)."""

    @abc.abstractmethod
    async def audit_verify(self, anchor: AuditAnchor | None = None) -> AuditVerification:
        """Re-check the whole chain; with ``anchor`` also detect a truncated/rewritten tail."""

