"""Runner building blocks: the store-backed state sink (one transaction per save, outcome
audited exactly once, stale revisions refused), the driver's halt that lets the step in
flight finish, and the campaign options' field-naming errors."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest

from proxyota.lorawan.session import FuotaSession
from proxyota.lorawan.session_config import DeviceConfig, SessionConfig
from proxyota.service.options import OptionError, merge_options, parse_options
from proxyota.service.runner import ServiceDriver
from proxyota.service.sink import StoreSink, device_summary
from proxyota.store import NodeRecord, RevisionConflict, SqliteStore

DIGEST = "cd" * 32
EUI = "70b3d57ed0000001"


def _session() -> FuotaSession:
    config = SessionConfig(devices={EUI: DeviceConfig(gen_app_key=bytes(range(1, 17)))},
                           mc_addr=0x01020304, mc_key=bytes(range(16)), dr=5)
    return FuotaSession(config, bytes(range(200)))


@pytest.fixture
async def store(tmp_path: Path):
    s = SqliteStore(tmp_path / "state.db", clock=lambda: 1_400_000_000.0)
    await s.open()
    await s.put_image(DIGEST, 200, "envelope", {})
    await s.create_campaign("c1", "lorawan", DIGEST, {})
    await s.upsert_node(NodeRecord(EUI, "lorawan"))
    yield s
    await s.close()


async def test_sink_saves_progress_events_and_audits_outcomes_once(store: SqliteStore) -> None:
    session = _session()
    session.start(1_400_000_000.0)
    sink = StoreSink(store, "c1", clock=lambda: 1_400_000_001.0)
    doc = {"machine": session.state.to_dict(), "driver": {"group_id": "g"}}
    await sink.save("c1", doc)
    assert sink.revision == 1
    progress = await store.list_progress("c1", EUI)
    assert progress[0].phase == "probe" and progress[0].outcome is None
    session.cancel(1_400_000_010.0)
    done = {"machine": session.state.to_dict(), "driver": {"group_id": "g"}}
    await sink.save("c1", done)
    await sink.save("c1", copy.deepcopy(done))  # the same state again: nothing new to audit
    records = [r for r in await store.audit_records() if r.action == "device.outcome"]
    assert len(records) == 1 and records[0].details["reason"] == "cancelled"
    events = [e.event for e in await store.history(EUI)]
    assert events == ["phase", "phase", "outcome"]
    assert (await store.list_progress("c1", EUI))[0].outcome == "cancelled"

    # a second sink resuming from the store continues the revisions and knows the outcome
    again = StoreSink(store, "c1", clock=lambda: 1_400_000_020.0)
    assert (await again.load("c1"))["driver"]["group_id"] == "g"
    await again.save("c1", done)
    assert len([r for r in await store.audit_records() if r.action == "device.outcome"]) == 1

    # a stale writer is refused and writes nothing
    head = await store.audit_head()
    with pytest.raises(RevisionConflict):
        await sink.save("c1", doc)
    assert await store.audit_head() == head
    with pytest.raises(ValueError):
        await sink.save("other", doc)


def test_device_summary_of_nothing() -> None:
    assert device_summary(None) == {}
    assert device_summary({"machine": {}}) == {}


async def test_halt_lets_the_step_in_flight_finish() -> None:
    driver = ServiceDriver(_session(), client=None, clock=None, campaign_id="c1",  # type: ignore[arg-type]
                           application_id="app", sink=None)  # type: ignore[arg-type]
    events: list[str] = []

    async def step() -> None:  # what run()/handle_event do: a step under the driver's lock
        async with driver._lock:
            events.append("step begins")
            await asyncio.sleep(0.05)
            events.append("step ends")

    async def run_loop() -> None:
        await step()
        await asyncio.sleep(3600)  # waiting for the next deadline

    task = asyncio.create_task(run_loop())
    await asyncio.sleep(0.01)  # the step is in flight
    await driver.halt(task)
    events.append("halted")
    assert events == ["step begins", "step ends", "halted"]
    assert task.cancelled()
    await driver.halt(task)  # idempotent


def test_options_name_the_field() -> None:
    cases = {
        "options.dr": {"dr": 16},
        "options.frequency": {"frequency": 100},
        "options.frag_size": {"dr": 0, "frag_size": 49},
        "options.timeouts.max_retries": {"timeouts": {"max_retries": 1.5}},
        "options.timeouts.setup_window": {"timeouts": {"setup_window": 0}},
        "options.reboot.delay": {"reboot": {"delay": 0}},
        "options.reboot.colour": {"reboot": {"colour": 1}},
        "options.frag_versions": {"frag_versions": [1, 1]},
        "options.initial_redundancy": {"initial_redundancy": -0.5},
        "options.ack_reception": {"ack_reception": "yes"},
        "options.max_rounds": {"max_rounds": 0},
        "options.session_time_out": {"session_time_out": 99},
        "options.expected_fw_version": {"expected_fw_version": True},
        "options.ping_slot_periodicity": {"device_class": "B", "ping_slot_periodicity": 9},
    }
    for field, doc in cases.items():
        with pytest.raises(OptionError) as err:
            parse_options(doc)
        assert err.value.field == field, (doc, str(err.value))
        assert str(err.value).startswith(field + ": ")


def test_options_merge_and_build() -> None:
    defaults = parse_options({"dr": 5, "timeouts": {"answer": 600.0}, "reboot": {"delay": 90}})
    merged = merge_options(defaults.values, {"timeouts": {"max_retries": 4}, "frag_versions": [2]})
    opts = parse_options(merged)
    assert opts.timeouts.answer == 600.0 and opts.timeouts.max_retries == 4
    assert opts.reboot.delay == 90
    kw = opts.session_kwargs()
    assert kw["dr"] == 5 and kw["frag_versions"] == (2,)
    timed = merge_options({"reboot": {"mode": "time", "at": 5}}, {"reboot": {"mode": "countdown"}})
    assert "at" not in timed["reboot"]
