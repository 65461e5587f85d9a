"""SqliteStore: records round-trip, bad input is refused with nothing written, transactions."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from proxyota.errors import ProxyotaError
from proxyota.store import (
    CampaignExists,
    ImageConflict,
    InvalidRecord,
    InvalidTransition,
    NodeRecord,
    ProgressUpdate,
    RevisionConflict,
    SqliteStore,
    StoreClosed,
    StoreError,
    UnknownCampaign,
    UnknownImage,
    UnknownNode,
    store_for,
)

from .conftest import DIGEST, StepClock, seed


async def test_connection_settings(store, db_path):
    info = await store.describe()
    assert info["journal_mode"] == "wal"
    assert info["synchronous"] == 2  # FULL
    assert info["foreign_keys"] == 1
    assert info["busy_timeout"] == 5000
    # WAL is a property of the file: a plain sqlite3 connection sees it too
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_images(store):
    rec = await store.put_image(DIGEST.upper(), 1234, "lorawan", {"hw": ["a"]}, now=5.0)
    assert rec.digest == DIGEST and rec.accepted_at == 5.0
    assert await store.get_image(DIGEST) == rec
    # idempotent: same image again keeps the original acceptance time
    assert await store.put_image(DIGEST, 1234, "lorawan", {"hw": ["a"]}, now=9.0) == rec
    # newer metadata replaces the old
    newer = await store.put_image(DIGEST, 1234, "lorawan", {"hw": ["a", "b"]}, now=9.0)
    assert (await store.get_image(DIGEST)).custom == {"hw": ["a", "b"]} == newer.custom
    with pytest.raises(ImageConflict):
        await store.put_image(DIGEST, 99, "lorawan")
    with pytest.raises(UnknownImage):
        await store.get_image("cd" * 32)
    with pytest.raises(InvalidRecord, match="64 hex"):
        await store.put_image("xyz", 1, "lorawan")
    assert [i.digest for i in await store.list_images()] == [DIGEST]


async def test_campaign_lifecycle(store):
    await seed(store)
    c = await store.get_campaign("c1")
    assert (c.status, c.revision, c.kind, c.image_digest) == ("draft", 0, "lorawan", DIGEST)
    assert c.config == {"waves": [{"cohort": "canary", "size": 1}]}
    assert (await store.load_state("c1")).state is None
    assert (await store.update_status("c1", "running")).status == "running"
    assert (await store.update_status("c1", "running")).status == "running"  # no-op
    await store.update_status("c1", "paused")
    await store.update_status("c1", "running")
    await store.update_status("c1", "completed")
    with pytest.raises(InvalidTransition, match="final"):
        await store.update_status("c1", "running")
    with pytest.raises(InvalidRecord):
        await store.update_status("c1", "exploded")
    assert (await store.get_campaign("c1")).status == "completed"
    with pytest.raises(CampaignExists):
        await store.create_campaign("c1", "lorawan", DIGEST)
    await store.create_campaign("c2", "zigbee", DIGEST)
    assert [c.id for c in await store.list_campaigns()] == ["c1", "c2"]
    assert [c.id for c in await store.list_campaigns(status=("draft", "running"))] == ["c2"]
    assert [c.id for c in await store.list_campaigns(kind="lorawan")] == ["c1"]


async def test_state_revisions(store):
    await seed(store)
    state = {"stage": "fragmenting", "devices": {"0102": {"phase": "ready", "missing": [1, 5]}},
             "x": 1.5, "flag": True, "none": None}
    r1 = await store.save_state("c1", state, 0)
    assert r1 == 1
    snap = await store.load_state("c1")
    assert (snap.revision, snap.state) == (1, state)
    r2 = await store.save_state("c1", {"stage": "done"}, r1)
    assert r2 == 2 and (await store.get_campaign("c1")).revision == 2
    with pytest.raises(RevisionConflict) as info:
        await store.save_state("c1", {"stage": "lost update"}, 1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert (await store.load_state("c1")).state == {"stage": "done"}


@pytest.mark.parametrize("bad, message", [
    ({"k": float("nan")}, "JSON cannot represent"),
    ({"k": b"\x01"}, "bytes"),
    ({1: "int key"}, "non-string key"),
    ({"k": {"deep": [1, {2, 3}]}}, "set"),
    (["not", "a", "dict"], "must be a dict"),
])
async def test_non_json_state_refused_nothing_written(store, bad, message):
    await seed(store)
    await store.save_state("c1", {"ok": 1}, 0)
    with pytest.raises(InvalidRecord, match=message):
        await store.save_state("c1", bad, 1)
    snap = await store.load_state("c1")
    assert (snap.revision, snap.state) == (1, {"ok": 1})


async def test_unknown_ids_are_clear_errors(store):
    await seed(store)
    commits = store.commits
    for call in (store.get_campaign("nope"), store.load_state("nope"),
                 store.save_state("nope", {}, 0), store.update_status("nope", "running"),
                 store.list_progress("nope"),
                 store.record_event("n1", "x", campaign_id="nope")):
        with pytest.raises(UnknownCampaign, match="'nope'"):
            await call
    with pytest.raises(UnknownNode):
        await store.get_node("ghost")
    with pytest.raises(UnknownNode):
        await store.record_event("ghost", "joined")
    with pytest.raises(UnknownNode):
        await store.history("ghost")
    with pytest.raises(UnknownImage):
        await store.create_campaign("c9", "zigbee", "ef" * 32)
    assert store.commits == commits  # every failed write rolled back
    assert [c.id for c in await store.list_campaigns()] == ["c1"]
    assert await store.history("n1") == []
    assert all(isinstance(e, ProxyotaError) for e in (UnknownCampaign("x"), RevisionConflict("x", 0, 1)))


async def test_nodes_and_history(store):
    await seed(store, node_ids=())
    node = NodeRecord("0011223344556677", "lorawan", "rev-b", 0x01020304, 7, 88.5, 12.0,
                      {"rssi": -97, "snr": 7.25, "gw": "gw1"})
    assert await store.upsert_node(node) == node
    assert await store.get_node(node.id) == node
    moved = NodeRecord(node.id, "lorawan", "rev-b", 0x01020305, 8, 80.0, 20.0, {})
    await store.upsert_node(moved)
    assert await store.get_node(node.id) == moved
    with pytest.raises(InvalidRecord, match="cannot make it zigbee"):
        await store.upsert_node(NodeRecord(node.id, "zigbee"))
    with pytest.raises(InvalidRecord):
        await store.upsert_node(NodeRecord("z1", "zigbee", fw_version=-1))
    await store.upsert_node(NodeRecord("z1", "zigbee"))
    assert [n.id for n in await store.list_nodes(kind="zigbee")] == ["z1"]
    for i in range(5):
        await store.record_event(node.id, "block", {"offset": i * 64}, campaign_id="c1" if i % 2 else None,
                                 now=100.0 + i)
    events = await store.history(node.id)
    assert [e.details["offset"] for e in events] == [0, 64, 128, 192, 256]
    assert [e.time for e in events] == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert [e.details["offset"] for e in await store.history(node.id, campaign_id="c1")] == [64, 192]
    assert [e.details["offset"] for e in await store.history(node.id, limit=2)] == [192, 256]


async def test_transaction_groups_writes_and_rolls_back(store):
    await seed(store)
    with pytest.raises(RuntimeError):
        async with store.transaction():
            await store.save_state("c1", {"step": 1}, 0)
            await store.audit_append("planner", "campaign.step", "c1", {"step": 1})
            raise RuntimeError("crash between the writes")
    assert (await store.load_state("c1")).revision == 0
    assert await store.audit_head() is None
    async with store.transaction():
        rev = await store.save_state("c1", {"step": 1}, 0)
        try:
            async with store.transaction():  # savepoint: only this part is undone
                await store.audit_append("planner", "inner", "c1")
                await store.save_state("c1", {"step": 2}, rev)
                raise KeyError("inner")
        except KeyError:
            pass
        await store.audit_append("planner", "campaign.step", "c1", {"step": 1})
    assert (await store.load_state("c1")).state == {"step": 1}
    assert [r.action for r in await store.audit_records()] == ["campaign.step"]


async def test_other_tasks_never_see_an_open_transaction(store):
    await seed(store)
    inside = asyncio.Event()
    release = asyncio.Event()

    async def writer():
        async with store.transaction():
            await store.save_state("c1", {"v": "uncommitted"}, 0)
            inside.set()
            await release.wait()

    task = asyncio.create_task(writer())
    await inside.wait()
    reader = asyncio.create_task(store.load_state("c1"))
    await asyncio.sleep(0.01)
    assert not reader.done()  # waits for the writer instead of reading its open transaction
    release.set()
    await task
    snap = await reader
    assert (snap.revision, snap.state) == (1, {"v": "uncommitted"})


async def test_closed_and_read_only(db_path):
    s = SqliteStore(db_path, clock=StepClock())
    with pytest.raises(StoreClosed):
        await s.get_campaign("c1")
    await s.open()
    await seed(s)
    await s.close()
    ro = SqliteStore(db_path, read_only=True)
    await ro.open()
    try:
        assert (await ro.get_campaign("c1")).status == "draft"
        with pytest.raises(StoreClosed, match="read-only"):
            await ro.save_state("c1", {}, 0)
    finally:
        await ro.close()
    with pytest.raises(StoreError, match="no such database"):
        await SqliteStore(db_path.with_name("missing.db"), read_only=True).open()


async def test_store_for(db_path):
    s = store_for(f"sqlite:{db_path}")
    assert isinstance(s, SqliteStore) and s.path == str(db_path)
    with pytest.raises(ProxyotaError, match="PostgreSQL"):
        store_for("postgresql://db/proxyota")


async def test_record_progress_is_all_or_nothing(store):
    await seed(store, node_ids=("n1", "n2"))
    good = ProgressUpdate("c1", "n1", "blocks", {"served": [[0, 10]]}, time=1.0)
    ghost = ProgressUpdate("c1", "ghost", "blocks", {"served": []}, time=1.0)
    with pytest.raises(UnknownNode, match="ghost"):
        await store.record_progress([good, ghost])
    assert await store.list_progress("c1") == []
    with pytest.raises(InvalidRecord):
        await store.record_progress([good, ProgressUpdate("c1", "n2", "blocks", {"x": {1, 2}}, time=1.0)])
    assert await store.list_progress("c1") == []
    assert await store.record_progress([good]) == 1
    [rec] = await store.list_progress("c1", "n1")
    assert (rec.phase, rec.progress, rec.updated_at) == ("blocks", {"served": [[0, 10]]}, 1.0)
