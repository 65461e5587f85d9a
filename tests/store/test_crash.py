"""kill -9 safety: a writer acknowledges state + audit + progress after each flush and is
SIGKILLed at seeded points; after reopening, everything acknowledged is there, the audit
chain verifies and the writer resumes where the store says it was.

Deterministic: the parent kills after reading K acknowledgements (K seeded), never after
a delay, and asserts nothing about time. Where exactly the child is when the signal lands
varies, which is the point: whatever it was doing, acknowledged state must survive.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys

from proxyota.store import SqliteStore

CHILD = r"""
import asyncio, sys
from proxyota.store import NodeRecord, ProgressUpdate, SqliteStore, UnknownCampaign

async def main(path):
    # huge N and T: progress is only written by the explicit flush before each ack
    store = SqliteStore(path, progress_max_updates=10**9, progress_max_age=1e18)
    await store.open()
    async with store.transaction():
        try:
            await store.get_campaign("c1")
        except UnknownCampaign:
            await store.put_image("ab" * 32, 4096, "lorawan", {"hw": ["rev-a"]})
            await store.create_campaign("c1", "lorawan", "ab" * 32)
            await store.upsert_node(NodeRecord("n1", "lorawan"))
    snap = await store.load_state("c1")
    rev = snap.revision
    step = snap.state["step"] if snap.state else 0
    progress = await store.list_progress("c1", "n1")
    frame = progress[0].progress["frame"] if progress else 0
    print(f"ready {rev} {frame}", flush=True)
    while True:
        step += 1
        for _ in range(3):  # per-frame progress, only buffered
            frame += 1
            await store.buffer_progress(ProgressUpdate("c1", "n1", "blocks", {"frame": frame}, float(frame)))
        async with store.transaction():
            rev = await store.save_state("c1", {"step": step, "frame": frame, "pad": "x" * 300}, rev)
            print("at saved", flush=True)
            rec = await store.audit_append("child", "campaign.step", "c1", {"step": step, "rev": rev})
            print("at audited", flush=True)
            await store.flush()
            print("at flushed", flush=True)
        print("at committed", flush=True)
        print(f"ack {rev} {rec.seq} {rec.hash} {frame}", flush=True)
        frame += 1  # buffered but never acknowledged: may be lost
        await store.buffer_progress(ProgressUpdate("c1", "n1", "blocks", {"frame": frame}, float(frame)))

asyncio.run(main(sys.argv[1]))
"""


POINTS = ("saved", "audited", "flushed", "committed")


def run_and_kill(db_path, acks_wanted: int, point: str) -> tuple[tuple[int, int], list[tuple[int, int, str, int]]]:
    """Kill the writer once it reported ``acks_wanted`` acks and then reached ``point``
    (inside the next transaction, or just after its commit)."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline().split()
        assert ready and ready[0] == "ready", proc.stderr.read() if proc.poll() is not None else ready
        acks = []
        while True:
            line = proc.stdout.readline()
            assert line, f"writer died early: {proc.stderr.read()}"
            word, *rest = line.split()
            if word == "ack":
                rev, seq, digest, frame = rest
                acks.append((int(rev), int(seq), digest, int(frame)))
            elif len(acks) >= acks_wanted and rest == [point]:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return (int(ready[1]), int(ready[2])), acks


async def check_store(db_path) -> tuple[int, int]:
    async with SqliteStore(db_path) as store:
        snap = await store.load_state("c1")
        records = await store.audit_records()
        verdict = await store.audit_verify()
        [progress] = await store.list_progress("c1", "n1") or [None]
    assert verdict.ok, verdict.reason
    # state and audit record were written in one transaction: both or neither survived
    assert len(records) == snap.revision == (snap.state["step"] if snap.state else 0)
    assert [r.details["rev"] for r in records] == list(range(1, snap.revision + 1))
    return snap.revision, progress.progress["frame"] if progress else 0


def test_sigkill_loses_nothing_acknowledged(db_path):
    rng = random.Random(0x5EED)
    plan = [(0, "saved"), (1, "committed")] + [(rng.randrange(2, 40), p) for p in POINTS + (rng.choice(POINTS),) * 2]
    resumed_from = (0, 0)
    for k, point in plan:
        (ready_rev, ready_frame), acks = run_and_kill(db_path, k, point)
        # the writer resumed from what the store held after the previous kill
        assert (ready_rev, ready_frame) == resumed_from
        revision, frame = asyncio.run(check_store(db_path))
        if acks:
            last_rev, _, _, last_frame = acks[-1]
            assert revision >= last_rev
            assert frame >= last_frame  # acknowledged progress was flushed
        assert revision >= ready_rev
        audit = asyncio.run(_audit_hashes(db_path))
        for rev, seq, digest, _ in acks:
            assert audit[seq] == digest
        resumed_from = (revision, frame)


async def _audit_hashes(db_path) -> dict[int, str]:
    async with SqliteStore(db_path) as store:
        return {r.seq: r.hash for r in await store.audit_records()}
