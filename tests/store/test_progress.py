"""Per-frame progress batching: one transaction per flush, flushed on N / T / explicit flush,
and a crash loses only what was neither flushed nor acknowledged."""

from __future__ import annotations

import pytest

from proxyota.errors import InvalidArgument
from proxyota.store import InvalidRecord, ProgressBuffer, ProgressUpdate, SqliteStore, UnknownNode

from .conftest import StepClock, seed


def upd(node: str, n: int, t: float, campaign: str = "c1") -> ProgressUpdate:
    return ProgressUpdate(campaign, node, "blocks", {"served": n}, time=t)


def test_buffer_coalesces_and_counts():
    buf = ProgressBuffer(max_updates=4, max_age=10.0)
    buf.add(upd("a", 1, 0.0))
    buf.add(upd("b", 1, 1.0))
    buf.add(upd("a", 2, 2.0))
    assert (len(buf), buf.added) == (2, 3)
    assert not buf.due(2.0)
    assert buf.due(10.0)  # oldest update (t=0) is max_age old
    buf.add(upd("b", 2, 3.0))
    assert buf.due(3.0)  # 4 updates since the last flush
    batch = buf.take()
    assert [(u.node_id, u.progress["served"]) for u in batch] == [("a", 2), ("b", 2)]
    assert (len(buf), buf.added, buf.due(1e9)) == (0, 0, False)


def test_buffer_freezes_the_callers_dict_and_validates():
    buf = ProgressBuffer()
    bitmap = {"missing": [1, 2, 3]}
    buf.add(ProgressUpdate("c1", "a", "frags", bitmap, time=0.0))
    bitmap["missing"].clear()  # the caller keeps mutating its own structure
    assert buf.take()[0].progress == {"missing": [1, 2, 3]}
    with pytest.raises(InvalidRecord):
        buf.add(ProgressUpdate("c1", "a", "frags", {"bad": object()}, time=0.0))
    with pytest.raises(InvalidRecord):
        buf.add(ProgressUpdate("c1", "", "frags", {}, time=0.0))
    assert len(buf) == 0
    with pytest.raises(InvalidArgument):
        ProgressBuffer(max_updates=0)


def test_buffer_restore_keeps_newer_updates():
    buf = ProgressBuffer()
    buf.add(upd("a", 1, 0.0))
    buf.add(upd("b", 1, 0.0))
    batch = buf.take()
    buf.add(upd("a", 5, 1.0))  # arrived while the failed write was in flight
    buf.restore(batch)
    assert sorted((u.node_id, u.progress["served"]) for u in buf.take()) == [("a", 5), ("b", 1)]
    buf.add(upd("a", 1, 0.0))
    buf.add(upd("b", 1, 0.0, campaign="c2"))
    assert buf.drop(campaign_id="c2") == 1 and len(buf) == 1


async def test_flush_every_n_updates_in_one_transaction(db_path):
    store = SqliteStore(db_path, clock=StepClock(), progress_max_updates=10, progress_max_age=1e9)
    async with store:
        await seed(store, node_ids=("n1", "n2", "n3"))
        before = store.commits
        flushed = [await store.buffer_progress(upd(f"n{1 + i % 3}", i, float(i))) for i in range(25)]
        assert [i for i, f in enumerate(flushed) if f] == [9, 19]
        assert store.commits - before == 2  # 20 frames, 2 transactions
        rows = {r.node_id: r.progress["served"] for r in await store.list_progress("c1")}
        assert rows == {"n1": 18, "n2": 19, "n3": 17}
        assert store.pending_progress == 3
        assert await store.flush() == 3
        assert store.commits - before == 3
        assert await store.flush() == 0 and store.commits - before == 3


async def test_flush_after_max_age_on_tick(store):
    store.progress_buffer.max_age = 2.0
    await seed(store)
    assert not await store.buffer_progress(upd("n1", 1, 100.0))
    assert not await store.tick(101.5)
    assert await store.list_progress("c1") == []
    assert await store.tick(102.0)
    assert [r.progress for r in await store.list_progress("c1")] == [{"served": 1}]


async def test_crash_loses_only_unflushed_unacknowledged_updates(db_path):
    store = SqliteStore(db_path, clock=StepClock(), progress_max_updates=1000, progress_max_age=1e9)
    await store.open()
    await seed(store, node_ids=("n1", "n2"))
    acked: dict[str, int] = {}
    for frame in range(1, 31):
        node = "n1" if frame % 2 else "n2"
        await store.buffer_progress(upd(node, frame, float(frame)))
        if frame % 7 == 0:  # about to acknowledge: the durability point
            await store.flush()
            acked = {r.node_id: r.progress["served"] for r in await store.list_progress("c1")}
    # frames 29, 30 were buffered after the last flush and never acknowledged
    assert store.pending_progress == 2
    await store.close(flush=False)  # crash: the in-memory buffer is gone

    async with SqliteStore(db_path) as reopened:
        durable = {r.node_id: r.progress["served"] for r in await reopened.list_progress("c1")}
    assert durable == acked == {"n1": 27, "n2": 28}


async def test_failed_flush_writes_nothing_and_keeps_the_batch(store):
    await seed(store)
    await store.buffer_progress(upd("n1", 1, 0.0))
    await store.buffer_progress(upd("ghost", 1, 0.0))
    with pytest.raises(UnknownNode, match="ghost"):
        await store.flush()
    assert await store.list_progress("c1") == []
    assert store.pending_progress == 2  # back in the buffer
    store.progress_buffer.drop(node_id="ghost")
    assert await store.flush() == 1


async def test_flush_inside_rolled_back_transaction_restores_the_buffer(store):
    await seed(store)
    await store.buffer_progress(upd("n1", 3, 0.0))
    with pytest.raises(RuntimeError):
        async with store.transaction():
            assert await store.flush() == 1
            raise RuntimeError("acting failed")
    assert await store.list_progress("c1") == []
    assert store.pending_progress == 1
    await store.close()  # a clean close flushes
    async with SqliteStore(store.path) as again:
        assert [r.progress for r in await again.list_progress("c1")] == [{"served": 3}]
