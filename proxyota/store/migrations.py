"""The SQLite schema and its migrations (applied on open, each in one transaction).

``schema_migrations`` records every applied version. :func:`migrate` brings a database to
:data:`CURRENT_VERSION`: an empty file gets every migration, an older store the missing
ones, a current store nothing (idempotent). It refuses a database whose version is newer
than this code knows (:class:`SchemaTooNew`) and a non-empty database that is not a
proxyota store. Each migration runs inside ``BEGIN IMMEDIATE`` and re-reads the version
there, so two processes opening the same file at once apply it only once, and a crash
mid-migration leaves the previous version intact (SQLite DDL is transactional).

Never edit a released migration: append a new one.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import aiosqlite

from proxyota.store.base import GENESIS_HASH, SchemaError, SchemaTooNew

__all__ = ["Migration", "MIGRATIONS", "CURRENT_VERSION", "split_sql", "schema_version", "migrate"]


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


_V1 = """
CREATE TABLE schema_migrations (
    version     INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at  REAL NOT NULL
);
CREATE TABLE images (
    digest      TEXT PRIMARY KEY CHECK (length(digest) = 64 AND digest NOT GLOB '*[^0-9a-f]*'),
    length      INTEGER NOT NULL CHECK (length >= 0),
    kind        TEXT NOT NULL,
    custom      TEXT NOT NULL DEFAULT '{}',
    accepted_at REAL NOT NULL
);
CREATE TABLE campaigns (
    id             TEXT PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('lorawan', 'zigbee')),
    image_digest   TEXT NOT NULL REFERENCES images(digest),
    status         TEXT NOT NULL CHECK (status IN
                       ('draft', 'running', 'paused', 'aborted', 'completed', 'failed')),
    config         TEXT NOT NULL DEFAULT '{}',
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL,
    state          TEXT,
    state_revision INTEGER NOT NULL DEFAULT 0 CHECK (state_revision >= 0),
    state_saved_at REAL
);
CREATE INDEX campaigns_by_status ON campaigns(status);
CREATE TABLE nodes (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('lorawan', 'zigbee')),
    hw_class         TEXT,
    fw_version       INTEGER,
    security_counter INTEGER,
    battery          REAL,
    last_seen        REAL
);
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY CHECK (seq >= 1),
    time      REAL NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    details   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL UNIQUE
);
"""

_V2 = f"""
ALTER TABLE nodes ADD COLUMN rx_meta TEXT NOT NULL DEFAULT '{{}}';
CREATE TABLE node_progress (
    campaign_id TEXT NOT NULL REFERENCES campaigns(id),
    node_id     TEXT NOT NULL REFERENCES nodes(id),
    phase       TEXT NOT NULL,
    outcome     TEXT,
    progress    TEXT NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (campaign_id, node_id)
);
CREATE INDEX node_progress_by_node ON node_progress(node_id);
CREATE TABLE node_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id     TEXT NOT NULL REFERENCES nodes(id),
    campaign_id TEXT REFERENCES campaigns(id),
    time        REAL NOT NULL,
    event       TEXT NOT NULL,
    details     TEXT NOT NULL
);
CREATE INDEX node_events_by_node ON node_events(node_id, id);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused');
END;
CREATE TRIGGER audit_log_extends_chain BEFORE INSERT ON audit_log
WHEN NEW.seq IS NOT COALESCE((SELECT MAX(seq) FROM audit_log), 0) + 1
  OR NEW.prev_hash IS NOT COALESCE(
        (SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1), '{GENESIS_HASH}')
BEGIN
    SELECT RAISE(ABORT, 'audit_log insert must extend the chain (next seq, prev_hash = last hash)');
END;
"""

#: every schema version, oldest first; append only
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "images, campaigns with session state, nodes, audit log", _V1),
    Migration(2, "per-node progress and events, node rx metadata, append-only audit triggers", _V2),
)
CURRENT_VERSION = MIGRATIONS[-1].version


def split_sql(script: str) -> list[str]:
    """Split a script into complete statements (trigger bodies keep their semicolons)."""
    statements: list[str] = []
    current = ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n\t;"):
                statements.append(current.strip())
            current = ""
    if current.strip(" \n\t;"):
        raise SchemaError(f"incomplete SQL statement in migration: {current.strip()[:60]!r}")
    return statements


async def schema_version(conn: aiosqlite.Connection) -> int:
    """The applied version: 0 for an empty database; :class:`SchemaError` for a foreign one."""
    rows = await conn.execute_fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    tables = {r[0] for r in rows}
    if "schema_migrations" not in tables:
        if tables:
            raise SchemaError(
                f"not a proxyota store (it has tables {', '.join(sorted(tables))} but no "
                f"schema_migrations table)"
            )
        return 0
    rows = await conn.execute_fetchall("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
    return int(rows[0][0])


async def migrate(
    conn: aiosqlite.Connection,
    *,
    now: float,
    path: str = "database",
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> list[int]:
    """Apply the missing migrations to ``conn`` (autocommit mode); returns their versions."""
    latest = migrations[-1].version
    found = await schema_version(conn)
    if found > latest:
        raise SchemaTooNew(path, found, latest)
    applied: list[int] = []
    for migration in migrations:
        if migration.version <= found:
            continue
        await conn.execute("BEGIN IMMEDIATE")
        try:
            found = await schema_version(conn)  # another process may have migrated meanwhile
            if found > latest:
                raise SchemaTooNew(path, found, latest)
            if migration.version <= found:
                await conn.execute("ROLLBACK")
                continue
            for statement in split_sql(migration.sql):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, now),
            )
            await conn.execute("COMMIT")
        except sqlite3.Error as exc:
            await conn.execute("ROLLBACK")
            raise SchemaError(
                f"{path}: migration to schema version {migration.version} failed: {exc}"
            ) from exc
        except BaseException:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise
        found = migration.version
        applied.append(migration.version)
    return applied
