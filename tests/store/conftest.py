"""Shared fixtures for the state store tests: a deterministic clock and a fresh store."""

from __future__ import annotations

import pytest

from proxyota.store import NodeRecord, SqliteStore

DIGEST = "ab" * 32


class StepClock:
    """Deterministic clock: each call returns the next whole second."""

    def __init__(self, start: float = 1000.0):
        self.t = start

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "state.db"


@pytest.fixture
async def store(db_path):
    s = SqliteStore(db_path, clock=StepClock())
    await s.open()
    yield s
    await s.close()


async def seed(store, campaign_id="c1", node_ids=("n1",), kind="lorawan"):
    """An image, one campaign and some nodes."""
    await store.put_image(DIGEST, 1234, kind, {"hw": ["rev-a"]})
    await store.create_campaign(campaign_id, kind, DIGEST, {"waves": [{"cohort": "canary", "size": 1}]})
    for node_id in node_ids:
        await store.upsert_node(NodeRecord(node_id, kind, hw_class="rev-a", fw_version=1))
