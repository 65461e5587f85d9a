"""The SQLite backend of the state store (aiosqlite, WAL, one writer connection).

Connection settings, applied on every open:

* ``journal_mode=WAL``: readers (the CLI, an HTTP status handler in another process) never
  block the writer and vice versa, and a commit appends to the WAL instead of rewriting
  pages in place.
* ``synchronous=FULL``: the WAL is fsync'ed at every commit. With ``NORMAL`` a WAL commit
  is atomic and survives a process ``kill -9`` (the data is in the OS page cache), but the
  last commits can be lost on power failure or an OS crash, which on a gateway in a
  cabinet is a normal event. Our contract is "acknowledged means durable", so we pay one
  fsync per commit and make commits rare instead: per-frame progress is batched
  (:class:`~proxyota.store.base.ProgressBuffer`).
* ``foreign_keys=ON``: progress, events and campaigns cannot point at missing rows.
* ``busy_timeout``: another process holding the write lock (a migration, a CLI) makes us
  wait instead of failing at once.

One connection does all the work, in autocommit mode: the store issues ``BEGIN
IMMEDIATE`` / ``COMMIT`` itself (taking the write lock up front, so no deadlock on lock
upgrade) and an :class:`asyncio.Lock` gives one task at a time the connection, so another
task never sees or joins someone else's open transaction. Nested ``transaction()`` blocks
are savepoints.

``read_only=True`` opens the file without migrating it (``mode=ro``), for inspection
tools such as ``proxyota audit verify``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from proxyota.store import audit as audit_chain
from proxyota.store.base import (
    STATUS_TRANSITIONS,
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
    _check_id,
    _check_optional_int,
    _check_time,
    canonical_json,
    check_digest,
    check_kind,
    check_status,
)
from proxyota.store.migrations import CURRENT_VERSION, migrate, schema_version

__all__ = ["SqliteStore"]

_AUDIT_TRIGGERS = ("audit_log_no_update", "audit_log_no_delete", "audit_log_extends_chain")


class _Txn:
    """Bookkeeping of the transaction owned by one task: savepoint depth, rollback hooks."""

    def __init__(self, task: asyncio.Task | None):
        self.task = task
        self.hooks: list[list[Callable[[], None]]] = [[]]


def _run_hooks(hooks: Iterable[Callable[[], None]]) -> None:
    for hook in reversed(list(hooks)):
        hook()


class SqliteStore(Store):
    """:class:`~proxyota.store.base.Store` on one SQLite file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        read_only: bool = False,
        busy_timeout: float = 5.0,
        clock: Callable[[], float] | None = None,
        progress_max_updates: int = 256,
        progress_max_age: float = 1.0,
    ):
        super().__init__(clock=clock, progress_max_updates=progress_max_updates,
                         progress_max_age=progress_max_age)
        self.path = os.fspath(path)
        self.read_only = read_only
        self.busy_timeout = busy_timeout
        self.commits = 0  #: transactions committed since open (for tests and metrics)
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._txn: _Txn | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r}{', read_only=True' if self.read_only else ''})"

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if self._conn is not None:
            raise StoreError(f"{self.path}: store is already open")
        memory = self.path == ":memory:"
        if self.read_only:
            if not Path(self.path).is_file():
                raise StoreError(f"{self.path}: no such database file")
            target = f"file:{urllib.parse.quote(os.path.abspath(self.path))}?mode=ro"
            conn = aiosqlite.connect(target, uri=True, isolation_level=None)
        else:
            conn = aiosqlite.connect(self.path, isolation_level=None)
        try:
            conn = await conn
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open database: {exc}") from exc
        try:
            await self._configure(conn, memory)
            if self.read_only:
                found = await schema_version(conn)
                if found > CURRENT_VERSION:
                    raise SchemaTooNew(self.path, found, CURRENT_VERSION)
                if found == 0:
                    raise SchemaError(f"{self.path}: empty database, not a proxyota store")
            else:
                await migrate(conn, now=self._now(None), path=self.path)
        except sqlite3.DatabaseError as exc:
            await conn.close()
            raise StoreError(f"{self.path}: cannot use database: {exc}") from exc
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self.commits = 0

    async def _configure(self, conn: aiosqlite.Connection, memory: bool) -> None:
        await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA synchronous = FULL")
        if self.read_only:
            return
        rows = await conn.execute_fetchall("PRAGMA journal_mode = WAL")
        mode = str(rows[0][0]).lower()
        if mode != "wal" and not (memory and mode == "memory"):
            raise StoreError(f"{self.path}: could not switch to WAL journal mode (got {mode!r})")

    async def close(self, *, flush: bool = True) -> None:
        if self._conn is None:
            return
        try:
            if flush and not self.read_only:
                await self.flush()
        finally:
            async with self._lock:
                conn, self._conn = self._conn, None
                if conn is not None:
                    await conn.close()

    async def describe(self) -> dict[str, Any]:
        """Path, schema version and the connection settings actually in force."""
        async with self._reading() as conn:
            out: dict[str, Any] = {"path": self.path, "read_only": self.read_only,
                                   "schema_version": await schema_version(conn)}
            for pragma in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout"):
                rows = await conn.execute_fetchall(f"PRAGMA {pragma}")
                out[pragma] = rows[0][0]
            return out

    # ------------------------------------------------------------------ transactions

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreClosed(f"{self.path}: store is not open")
        return self._conn

    def _owned(self) -> bool:
        return self._txn is not None and self._txn.task is asyncio.current_task()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        if self.read_only:
            raise StoreClosed(f"{self.path}: store was opened read-only")
        self._connection()
        if self._owned():
            async with self._savepoint():
                yield
            return
        async with self._lock:
            conn = self._connection()
            try:
                await conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:  # e.g. another process held the write lock too long
                raise StoreError(f"{self.path}: cannot start a write transaction: {exc}") from exc
            txn = self._txn = _Txn(asyncio.current_task())
            try:
                try:
                    yield
                except BaseException:
                    await self._abort(conn, txn)
                    raise
                try:
                    await conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    await self._abort(conn, txn)
                    raise StoreError(f"{self.path}: commit failed: {exc}") from exc
                self.commits += 1
            finally:
                self._txn = None

    async def _abort(self, conn: aiosqlite.Connection, txn: _Txn) -> None:
        try:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
        finally:
            for level in reversed(txn.hooks):
                _run_hooks(level)
            txn.hooks = [[]]

    @asynccontextmanager
    async def _savepoint(self) -> AsyncIterator[None]:
        conn = self._connection()
        txn = self._txn
        assert txn is not None
        name = f"sp{len(txn.hooks)}"
        await conn.execute(f"SAVEPOINT {name}")
        txn.hooks.append([])
        try:
            yield
        except BaseException:
            hooks = txn.hooks.pop()
            try:
                await conn.execute(f"ROLLBACK TO {name}")
                await conn.execute(f"RELEASE {name}")
            finally:
                _run_hooks(hooks)
            raise
        hooks = txn.hooks.pop()
        await conn.execute(f"RELEASE {name}")
        txn.hooks[-1].extend(hooks)

    @property
    def transaction_open(self) -> bool:
        return self._txn is not None

    def on_rollback(self, callback: Callable[[], None]) -> None:
        if not self._owned():
            raise StoreError("on_rollback() needs a transaction() opened by this task")
        assert self._txn is not None
        self._txn.hooks[-1].append(callback)

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection for reads: inside our own transaction, or alone (never inside
        another task's uncommitted transaction)."""
        if self._owned():
            yield self._connection()
            return
        async with self._lock:
            yield self._connection()

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._reading() as conn:
            rows = await conn.execute_fetchall(sql, params)
        return rows[0] if rows else None

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._reading() as conn:
            return list(await conn.execute_fetchall(sql, params))

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> None:
        """A statement inside the caller's transaction() block."""
        await self._connection().execute(sql, params)

    # ------------------------------------------------------------------ images

    @staticmethod
    def _image(row: Any) -> ImageRecord:
        return ImageRecord(row[0], row[1], row[2], json.loads(row[3]), row[4])

    async def put_image(self, digest, length, kind, custom=None, *, now=None) -> ImageRecord:
        digest = check_digest(digest)
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise InvalidRecord(f"image length must be a non-negative integer, got {length!r}")
        _check_id(kind, "image kind", 64)
        custom_json = canonical_json(dict(custom or {}), "image custom metadata")
        t = self._now(now)
        async with self.transaction():
            row = await self._one("SELECT digest, length, kind, custom, accepted_at FROM images "
                                  "WHERE digest = ?", (digest,))
            if row is not None:
                old = self._image(row)
                if old.length != length or old.kind != kind:
                    raise ImageConflict(
                        f"image {digest} is already stored as {old.kind}, {old.length} bytes; "
                        f"refusing {kind}, {length} bytes"
                    )
                if row[3] == custom_json:
                    return old
                await self._write("UPDATE images SET custom = ?, accepted_at = ? WHERE digest = ?",
                                  (custom_json, t, digest))
            else:
                await self._write("INSERT INTO images (digest, length, kind, custom, accepted_at) "
                                  "VALUES (?, ?, ?, ?, ?)", (digest, length, kind, custom_json, t))
        return ImageRecord(digest, length, kind, json.loads(custom_json), t)

    async def get_image(self, digest: str) -> ImageRecord:
        digest = check_digest(digest)
        row = await self._one("SELECT digest, length, kind, custom, accepted_at FROM images "
                              "WHERE digest = ?", (digest,))
        if row is None:
            raise UnknownImage(digest)
        return self._image(row)

    async def list_images(self) -> list[ImageRecord]:
        rows = await self._all("SELECT digest, length, kind, custom, accepted_at FROM images "
                               "ORDER BY accepted_at, digest")
        return [self._image(r) for r in rows]

    # ------------------------------------------------------------------ campaigns

    _CAMPAIGN_COLS = "id, kind, image_digest, status, config, created_at, updated_at, state_revision"

    @staticmethod
    def _campaign(row: Any) -> CampaignRecord:
        return CampaignRecord(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6], row[7])

    async def _campaign_row(self, campaign_id: str) -> Any:
        _check_id(campaign_id, "campaign id")
        row = await self._one(f"SELECT {self._CAMPAIGN_COLS} FROM campaigns WHERE id = ?", (campaign_id,))
        if row is None:
            raise UnknownCampaign(campaign_id)
        return row

    async def create_campaign(self, campaign_id, kind, image_digest, config=None, *, now=None) -> CampaignRecord:
        _check_id(campaign_id, "campaign id")
        check_kind(kind, "campaign kind")
        digest = check_digest(image_digest)
        if config is not None and not isinstance(config, Mapping):
            raise InvalidRecord(f"campaign config must be a dict, got {type(config).__name__}")
        config_json = canonical_json(dict(config or {}), "campaign config")
        t = self._now(now)
        async with self.transaction():
            if await self._one("SELECT 1 FROM campaigns WHERE id = ?", (campaign_id,)):
                raise CampaignExists(campaign_id)
            if not await self._one("SELECT 1 FROM images WHERE digest = ?", (digest,)):
                raise UnknownImage(digest)
            await self._write(
                "INSERT INTO campaigns (id, kind, image_digest, status, config, created_at, updated_at) "
                "VALUES (?, ?, ?, 'draft', ?, ?, ?)", (campaign_id, kind, digest, config_json, t, t))
        return CampaignRecord(campaign_id, kind, digest, "draft", json.loads(config_json), t, t, 0)

    async def get_campaign(self, campaign_id: str) -> CampaignRecord:
        return self._campaign(await self._campaign_row(campaign_id))

    async def list_campaigns(self, status=None, kind=None) -> list[CampaignRecord]:
        where, params = [], []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            for s in statuses:
                check_status(s)
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        if kind is not None:
            where.append("kind = ?")
            params.append(check_kind(kind, "campaign kind"))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self._all(f"SELECT {self._CAMPAIGN_COLS} FROM campaigns{clause} "
                               f"ORDER BY created_at, id", params)
        return [self._campaign(r) for r in rows]

    async def update_status(self, campaign_id, status, *, now=None) -> CampaignRecord:
        check_status(status)
        t = self._now(now)
        async with self.transaction():
            current = self._campaign(await self._campaign_row(campaign_id))
            if current.status == status:
                return current
            if status not in STATUS_TRANSITIONS[current.status]:
                raise InvalidTransition(campaign_id, current.status, status)
            await self._write("UPDATE campaigns SET status = ?, updated_at = ? WHERE id = ?",
                              (status, t, campaign_id))
        return CampaignRecord(current.id, current.kind, current.image_digest, status,
                              current.config, current.created_at, t, current.revision)

    async def save_state(self, campaign_id, state, expected_revision, *, now=None) -> int:
        _check_id(campaign_id, "campaign id")
        if isinstance(expected_revision, bool) or not isinstance(expected_revision, int) or expected_revision < 0:
            raise InvalidRecord(f"expected_revision must be a non-negative integer, got {expected_revision!r}")
        if not isinstance(state, Mapping):
            raise InvalidRecord(f"campaign state must be a dict, got {type(state).__name__}")
        state_json = canonical_json(dict(state), "campaign state")
        t = self._now(now)
        async with self.transaction():
            row = await self._campaign_row(campaign_id)
            if row[7] != expected_revision:
                raise RevisionConflict(campaign_id, expected_revision, row[7])
            new = expected_revision + 1
            await self._write(
                "UPDATE campaigns SET state = ?, state_revision = ?, state_saved_at = ?, "
                "updated_at = ? WHERE id = ? AND state_revision = ?",
                (state_json, new, t, t, campaign_id, expected_revision))
        return new

    async def load_state(self, campaign_id: str) -> StateSnapshot:
        _check_id(campaign_id, "campaign id")
        row = await self._one("SELECT state_revision, state, state_saved_at FROM campaigns WHERE id = ?",
                              (campaign_id,))
        if row is None:
            raise UnknownCampaign(campaign_id)
        return StateSnapshot(campaign_id, row[0], None if row[1] is None else json.loads(row[1]), row[2])

    # ------------------------------------------------------------------ nodes

    _NODE_COLS = "id, kind, hw_class, fw_version, security_counter, battery, last_seen, rx_meta"

    @staticmethod
    def _node(row: Any) -> NodeRecord:
        return NodeRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]))

    async def upsert_node(self, node: NodeRecord) -> NodeRecord:
        if not isinstance(node, NodeRecord):
            raise InvalidRecord(f"upsert_node wants a NodeRecord, got {type(node).__name__}")
        _check_id(node.id, "node id")
        check_kind(node.kind, "node kind")
        if node.hw_class is not None:
            _check_id(node.hw_class, "node hw_class")
        _check_optional_int(node.fw_version, "node fw_version")
        _check_optional_int(node.security_counter, "node security_counter")
        battery = None if node.battery is None else _check_time(node.battery, "node battery")
        last_seen = None if node.last_seen is None else _check_time(node.last_seen, "node last_seen")
        if not isinstance(node.rx_meta, Mapping):
            raise InvalidRecord(f"node rx_meta must be a dict, got {type(node.rx_meta).__name__}")
        rx_json = canonical_json(dict(node.rx_meta), "node rx_meta")
        async with self.transaction():
            old = await self._one("SELECT kind FROM nodes WHERE id = ?", (node.id,))
            if old is not None and old[0] != node.kind:
                raise InvalidRecord(f"node {node.id!r} is a {old[0]} node; cannot make it {node.kind}")
            await self._write(
                f"INSERT INTO nodes ({self._NODE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET hw_class = excluded.hw_class, "
                "fw_version = excluded.fw_version, security_counter = excluded.security_counter, "
                "battery = excluded.battery, last_seen = excluded.last_seen, rx_meta = excluded.rx_meta",
                (node.id, node.kind, node.hw_class, node.fw_version, node.security_counter,
                 battery, last_seen, rx_json))
        return NodeRecord(node.id, node.kind, node.hw_class, node.fw_version, node.security_counter,
                          battery, last_seen, json.loads(rx_json))

    async def get_node(self, node_id: str) -> NodeRecord:
        _check_id(node_id, "node id")
        row = await self._one(f"SELECT {self._NODE_COLS} FROM nodes WHERE id = ?", (node_id,))
        if row is None:
            raise UnknownNode(node_id)
        return self._node(row)

    async def list_nodes(self, kind: str | None = None) -> list[NodeRecord]:
        if kind is None:
            rows = await self._all(f"SELECT {self._NODE_COLS} FROM nodes ORDER BY id")
        else:
            rows = await self._all(f"SELECT {self._NODE_COLS} FROM nodes WHERE kind = ? ORDER BY id",
                                   (check_kind(kind, "node kind"),))
        return [self._node(r) for r in rows]

    async def record_event(self, node_id, event, details=None, *, campaign_id=None, now=None) -> NodeEvent:
        _check_id(node_id, "node id")
        _check_id(event, "event name", 64)
        if campaign_id is not None:
            _check_id(campaign_id, "campaign id")
        if details is not None and not isinstance(details, Mapping):
            raise InvalidRecord(f"event details must be a dict, got {type(details).__name__}")
        details_json = canonical_json(dict(details or {}), "event details")
        t = self._now(now)
        async with self.transaction():
            if not await self._one("SELECT 1 FROM nodes WHERE id = ?", (node_id,)):
                raise UnknownNode(node_id)
            if campaign_id is not None and not await self._one("SELECT 1 FROM campaigns WHERE id = ?",
                                                               (campaign_id,)):
                raise UnknownCampaign(campaign_id)
            cursor = await self._connection().execute(
                "INSERT INTO node_events (node_id, campaign_id, time, event, details) VALUES (?, ?, ?, ?, ?)",
                (node_id, campaign_id, t, event, details_json))
            event_id = cursor.lastrowid
        return NodeEvent(event_id, node_id, campaign_id, t, event, json.loads(details_json))

    async def history(self, node_id, *, campaign_id=None, limit=None) -> list[NodeEvent]:
        _check_id(node_id, "node id")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidRecord(f"limit must be a non-negative integer, got {limit!r}")
        sql = "SELECT id, node_id, campaign_id, time, event, details FROM node_events WHERE node_id = ?"
        params: list[Any] = [node_id]
        if campaign_id is not None:
            sql += " AND campaign_id = ?"
            params.append(campaign_id)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        async with self._reading() as conn:
            if not (await conn.execute_fetchall("SELECT 1 FROM nodes WHERE id = ?", (node_id,))):
                raise UnknownNode(node_id)
            rows = await conn.execute_fetchall(sql, params)
        return [NodeEvent(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in reversed(list(rows))]

    # ------------------------------------------------------------------ progress

    async def record_progress(self, updates: Sequence[ProgressUpdate]) -> int:
        checked = [u.validated() if isinstance(u, ProgressUpdate) else _not_update(u) for u in updates]
        if not checked:
            return 0
        rows = [(u.campaign_id, u.node_id, u.phase, u.outcome, canonical_json(u.progress, "progress"), u.time)
                for u in checked]
        async with self.transaction():
            conn = self._connection()
            campaigns = sorted({u.campaign_id for u in checked})
            nodes = sorted({u.node_id for u in checked})
            known_c = {r[0] for r in await conn.execute_fetchall(
                f"SELECT id FROM campaigns WHERE id IN ({', '.join('?' * len(campaigns))})", campaigns)}
            for c in campaigns:
                if c not in known_c:
                    raise UnknownCampaign(c)
            known_n = {r[0] for r in await conn.execute_fetchall(
                f"SELECT id FROM nodes WHERE id IN ({', '.join('?' * len(nodes))})", nodes)}
            for n in nodes:
                if n not in known_n:
                    raise UnknownNode(n)
            await conn.executemany(
                "INSERT INTO node_progress (campaign_id, node_id, phase, outcome, progress, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (campaign_id, node_id) DO UPDATE SET "
                "phase = excluded.phase, outcome = excluded.outcome, progress = excluded.progress, "
                "updated_at = excluded.updated_at", rows)
        return len(rows)

    async def list_progress(self, campaign_id: str, node_id: str | None = None) -> list[ProgressRecord]:
        await self._campaign_row(campaign_id)
        sql = ("SELECT campaign_id, node_id, phase, outcome, progress, updated_at FROM node_progress "
               "WHERE campaign_id = ?")
        params: list[Any] = [campaign_id]
        if node_id is not None:
            sql += " AND node_id = ?"
            params.append(node_id)
        rows = await self._all(sql + " ORDER BY node_id", params)
        return [ProgressRecord(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    # ------------------------------------------------------------------ audit

    _AUDIT_COLS = "seq, time, actor, action, subject, details, prev_hash, hash"

    async def audit_append(self, actor, action, subject, details=None, *, now=None) -> AuditRecord:
        t = self._now(now)
        audit_chain.make_record(None, actor, action, subject, details, t)  # validate before locking
        async with self.transaction():
            record = audit_chain.make_record(await self.audit_head(), actor, action, subject, details, t)
            await self._write(f"INSERT INTO audit_log ({self._AUDIT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              record.row())
        return record

    async def audit_records(self, after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]:
        sql = f"SELECT {self._AUDIT_COLS} FROM audit_log WHERE seq > ? ORDER BY seq"
        params: list[Any] = [after_seq]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = await self._all(sql, params)
        return [AuditRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7]) for r in rows]

    async def audit_head(self) -> AuditAnchor | None:
        row = await self._one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        return None if row is None else AuditAnchor(row[0], row[1])

    async def audit_verify(self, anchor: AuditAnchor | None = None) -> AuditVerification:
        verifier = audit_chain.ChainVerifier(anchor)
        async with self._reading() as conn:
            triggers = {r[0] for r in await conn.execute_fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'")}
            async with conn.execute(f"SELECT {self._AUDIT_COLS} FROM audit_log ORDER BY seq") as cursor:
                while not verifier.failed:
                    rows = await cursor.fetchmany(1024)
                    if not rows:
                        break
                    for row in rows:
                        if not verifier.feed(row):
                            break
        result = verifier.finish()
        missing = [t for t in _AUDIT_TRIGGERS if t not in triggers]
        if missing:
            note = f"append-only triggers missing: {', '.join(missing)} (someone dropped them)"
            return AuditVerification(result.ok, result.records, result.first_bad_seq, result.reason,
                                     result.head, result.notes + (note,))
        return result


def _not_update(value: Any) -> ProgressUpdate:
    raise InvalidRecord(f"record_progress wants ProgressUpdate items, got {type(value).__name__}")
