"""Schema migrations: fresh DB, idempotent re-open, v1 -> current, refusals, atomic failure."""

from __future__ import annotations

import sqlite3

import pytest

from proxyota.store import NodeRecord, SchemaError, SchemaTooNew, SqliteStore, StoreError
from proxyota.store import migrations as m

from .conftest import DIGEST, StepClock


def applied_versions(path) -> list[int]:
    with sqlite3.connect(path) as raw:
        return [r[0] for r in raw.execute("SELECT version FROM schema_migrations ORDER BY version")]


def test_migration_list_is_sane():
    versions = [mig.version for mig in m.MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1))
    assert m.CURRENT_VERSION == versions[-1] >= 2
    # trigger bodies keep their inner semicolons
    statements = m.split_sql(m.MIGRATIONS[1].sql)
    triggers = [s for s in statements if s.startswith("CREATE TRIGGER")]
    assert len(triggers) == 3 and all(s.endswith("END;") for s in triggers)


async def test_fresh_database_and_idempotent_reopen(db_path):
    async with SqliteStore(db_path, clock=StepClock()) as s:
        assert (await s.describe())["schema_version"] == m.CURRENT_VERSION
    assert applied_versions(db_path) == [mig.version for mig in m.MIGRATIONS]
    async with SqliteStore(db_path):
        pass
    assert applied_versions(db_path) == [mig.version for mig in m.MIGRATIONS]


async def test_v1_database_is_migrated_to_current(db_path):
    # a store as v1 of proxyota left it, written with the v1 SQL alone
    with sqlite3.connect(db_path) as raw:
        raw.executescript(m.MIGRATIONS[0].sql)
        raw.execute("INSERT INTO schema_migrations VALUES (1, 'v1', 1.0)")
        raw.execute("INSERT INTO images VALUES (?, 10, 'lorawan', '{}', 2.0)", (DIGEST,))
        raw.execute("INSERT INTO campaigns (id, kind, image_digest, status, config, created_at, "
                    "updated_at, state, state_revision, state_saved_at) VALUES "
                    "('c1', 'lorawan', ?, 'running', '{}', 3.0, 3.0, '{\"i\":7}', 7, 3.0)", (DIGEST,))
        raw.execute("INSERT INTO nodes VALUES ('n1', 'lorawan', 'rev-a', 5, 2, 90.0, 4.0)")
    raw.close()

    async with SqliteStore(db_path, clock=StepClock()) as s:
        assert (await s.describe())["schema_version"] == m.CURRENT_VERSION
        # v1 data intact, new column defaulted
        assert await s.get_node("n1") == NodeRecord("n1", "lorawan", "rev-a", 5, 2, 90.0, 4.0, {})
        snap = await s.load_state("c1")
        assert (snap.revision, snap.state) == (7, {"i": 7})
        # v2 features work on the migrated file
        await s.record_event("n1", "rebooted", campaign_id="c1")
        await s.record_progress([])
        await s.audit_append("ops", "migrated", "store")
    assert applied_versions(db_path) == [1, 2]
    with sqlite3.connect(db_path) as raw:
        names = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert {"audit_log_no_update", "audit_log_no_delete", "audit_log_extends_chain"} <= names
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("DELETE FROM audit_log")


async def test_newer_schema_is_refused_untouched(db_path):
    async with SqliteStore(db_path):
        pass
    with sqlite3.connect(db_path) as raw:
        raw.execute("INSERT INTO schema_migrations VALUES (?, 'from the future', 9.0)", (m.CURRENT_VERSION + 1,))
    raw.close()
    before = db_path.read_bytes()
    for read_only in (False, True):
        with pytest.raises(SchemaTooNew, match=rf"version {m.CURRENT_VERSION + 1} is newer .*upgrade proxyota"):
            await SqliteStore(db_path, read_only=read_only).open()
    assert db_path.read_bytes() == before


async def test_foreign_database_is_refused(db_path):
    with sqlite3.connect(db_path) as raw:
        raw.execute("CREATE TABLE something_else (x)")
    raw.close()
    with pytest.raises(SchemaError, match="not a proxyota store"):
        await SqliteStore(db_path).open()


async def test_failed_migration_leaves_previous_version(db_path, monkeypatch):
    async with SqliteStore(db_path):
        pass
    broken = m.MIGRATIONS + (m.Migration(m.CURRENT_VERSION + 1, "broken",
                                         "CREATE TABLE half_done (x); INSERT INTO no_such_table VALUES (1);"),)
    import aiosqlite

    conn = await aiosqlite.connect(db_path, isolation_level=None)
    try:
        with pytest.raises(SchemaError, match="migration to schema version 3 failed"):
            await m.migrate(conn, now=1.0, migrations=broken)
        assert await m.schema_version(conn) == m.CURRENT_VERSION
        rows = await conn.execute_fetchall("SELECT name FROM sqlite_master WHERE name = 'half_done'")
        assert list(rows) == []
        assert not conn.in_transaction
    finally:
        await conn.close()


async def test_garbage_file_is_a_clear_error(db_path):
    db_path.write_bytes(b"this is not a database, just text " * 200)
    with pytest.raises(StoreError, match="cannot use database"):
        await SqliteStore(db_path).open()


async def test_busy_writer_is_a_clear_error(db_path):
    async with SqliteStore(db_path):
        pass
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        s = SqliteStore(db_path, busy_timeout=0.05)
        await s.open()  # nothing to migrate: opening needs no write lock
        try:
            with pytest.raises(StoreError, match="cannot start a write transaction"):
                await s.audit_append("ops", "x", "y")
        finally:
            await s.close()
    finally:
        other.execute("ROLLBACK")
        other.close()
