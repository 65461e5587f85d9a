"""Crash safety of ``proxyota serve``: a campaign of 10 emulated devices runs against the
service in a subprocess; the service is SIGKILLed at three seeded points (setup, multicast,
reboot/verify), restarted each time, and the campaign completes with every node's
progress kept: the state only moves forward, no device's fragment session is restarted,
no audit record is lost (the final chain verifies against the head recorded at each
kill), and every device's outcome is audited exactly once. The run ends with SIGTERM and
a clean exit 0; the service's log never shows a key or a token.

Time: the service and the emulated network share emulated time through a wall-clock
scaled clock (RATE x real time); every wait below is bounded, nothing asserts wall time.
While the service is down the devices go on for DOWNTIME emulated seconds (their uplinks
to the dead integration endpoint are lost, as with a real gateway restart); then emulated
time stands still until the restarted service's new clock origin, so a slow or loaded
machine does not turn a restart into an hour-long emulated outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp
import pytest

from proxyota.store import SqliteStore
from tests.service.harness import (
    API_TOKEN,
    CAMPAIGN_OPTIONS,
    CS_TOKEN,
    ENV,
    NEW_FW,
    T0,
    Api,
    ScaledClock,
    ServiceProcess,
    build_network,
    chirpstack,
    free_port,
    make_repo,
    service_config,
    targets,
    write_toml,
)

#: a kill during setup costs lost answers, retries and stale duplicates in the class A
#: queues: give the setup a long window so every device is ready even on a loaded machine
OPTIONS = {**CAMPAIGN_OPTIONS, "timeouts": {**CAMPAIGN_OPTIONS["timeouts"], "setup_window": 1500.0}}
RATE = 100.0
DOWNTIME = 150.0  # emulated seconds the devices go on while the service is down
N = 10
SEED = 20240611
PHASE_ORDER = {"probe": 0, "clock_sync": 1, "mc_setup": 2, "frag_setup": 3, "session_setup": 4,
               "ready": 5, "receiving": 6, "complete": 7, "rebooting": 8, "verifying": 9,
               "done": 10, "failed": 10}
RECEIVING = PHASE_ORDER["receiving"]


class DeviceMonitor:
    """Samples the emulated devices: a fragment session, once it received fragments, must
    never be replaced by a new one (that would be a node starting over)."""

    def __init__(self, cn: Any) -> None:
        self.cn = cn
        self.decoder: dict[bytes, Any] = {}
        self.counter: dict[bytes, int] = {}
        self.violations: list[str] = []

    def sample(self) -> None:
        for dev in self.cn.devices:
            for session in dev.frag_sessions.values():
                dec = session.decoder
                mine = self.decoder.get(dev.dev_eui)
                if mine is None:
                    if dec.last_counter > 0:
                        self.decoder[dev.dev_eui] = dec
                        self.counter[dev.dev_eui] = dec.last_counter
                    continue
                if dec is not mine:
                    self.violations.append(f"{dev.dev_eui.hex()}: new fragment session after "
                                           f"{self.counter[dev.dev_eui]} fragments")
                    self.decoder[dev.dev_eui] = dec
                elif dec.last_counter < self.counter[dev.dev_eui]:
                    self.violations.append(f"{dev.dev_eui.hex()}: fragment counter went back")
                self.counter[dev.dev_eui] = dec.last_counter


async def snapshot(db: Path, campaign: str) -> dict[str, Any]:
    """What the store holds right after a kill (read-only, never migrated)."""
    store = SqliteStore(db, read_only=True)
    await store.open()
    try:
        state = await store.load_state(campaign)
        head = await store.audit_head()
        machine = (state.state or {}).get("machine") or {}
        return {
            "revision": state.revision,
            "head": head,
            "highest": max((lane.get("highest", 0) for lane in (machine.get("lanes") or {}).values()),
                           default=0),
            "phases": {eui: d["phase"] for eui, d in (machine.get("devices") or {}).items()},
        }
    finally:
        await store.close()


def stage_trigger(name: str, pred: Callable[[dict], bool]) -> tuple[str, Callable[[dict], bool]]:
    return name, pred


TRIGGERS = [
    stage_trigger("setup", lambda v: v["stage"] == "setup" and any(
        d["phase"] in ("mc_setup", "frag_setup", "session_setup") for d in v["devices"].values())),
    stage_trigger("multicast", lambda v: v["multicast"]["highest_counter"] > 0 and v["stage"] in (
        "transmitting", "polling", "reopening", "idle")),
    stage_trigger("wrapup", lambda v: any(d["phase"] in ("rebooting", "verifying", "done")
                                          for d in v["devices"].values())
                  and v["counts"]["in_progress"] > 0),
]


@pytest.mark.slow
async def test_campaign_survives_sigkill_and_ends_on_sigterm(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    repo = await make_repo(tmp_path)
    clock = ScaledClock(time.time(), T0, RATE)
    cn = build_network(clock, N, repo.image, seed=SEED % 997)
    iport, aport = free_port(), free_port()
    cs = chirpstack(clock, cn, iport)
    cs_port = await cs.start()
    doc = service_config(tmp_path, repo, cs_port=cs_port, integration_port=iport, api_port=aport,
                         clock={"scaled": RATE, "origin_unix": clock.origin_unix, "origin_gps": T0})
    db = Path(doc["service"]["state_db"])
    config_path = write_toml(tmp_path / "service.toml", doc)
    svc = ServiceProcess(config_path, tmp_path / "service.log", ENV)
    monitor = DeviceMonitor(cn)
    snapshots: list[dict[str, Any]] = []
    kills: list[str] = []
    try:
        svc.start()
        started = time.monotonic()
        async with Api(f"http://127.0.0.1:{aport}") as api:
            await svc.wait_ready(api)
            # real seconds a restart may take before emulated time goes on without it
            allowance = max(DOWNTIME / RATE, 1.5 * (time.monotonic() - started) + 0.3)
            for _ in range(400):
                if (await api.get("/images"))["images"]:
                    break
                await asyncio.sleep(0.05)
            await api.post("/campaigns", {"id": "c1", "image": repo.digest, "targets": targets(cn),
                                          "options": OPTIONS}, expect=201)
            await api.post("/campaigns/c1/start")

            triggers = list(TRIGGERS)
            view: dict[str, Any] = {}
            deadline = time.monotonic() + 100  # a bound, not an assertion on speed
            while time.monotonic() < deadline:
                monitor.sample()
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, AssertionError):
                    view = await api.get("/campaigns/c1")
                if view.get("status") in ("completed", "failed", "aborted"):
                    break
                if triggers and view and triggers[0][1](view):
                    name, _ = triggers.pop(0)
                    await asyncio.sleep(rng.uniform(0.0, 0.25))
                    monitor.sample()
                    await svc.kill()
                    kills.append(name)
                    hold, release = clock.now() + DOWNTIME, time.time() + allowance
                    clock.hold_then_restart(hold, release)
                    doc["service"]["clock"] = {"scaled": RATE, "origin_unix": release,
                                               "origin_gps": hold}
                    write_toml(config_path, doc)
                    snapshots.append(await snapshot(db, "c1"))
                    svc.start()
                    await svc.wait_ready(api)
                    view = {}
                    continue
                await asyncio.sleep(0.1)
            monitor.sample()
            assert view.get("status") == "completed", (view, svc.log.read_text()[-2000:])
            assert kills == ["setup", "multicast", "wrapup"]

            # every device updated, nothing started over
            assert view["counts"]["successful"] == N, view["devices"]
            assert monitor.violations == []
            for dev in cn.devices:
                assert dev.fw_version == NEW_FW
                assert dev.counters["boot.new-image"] == 1, dev.dev_eui.hex()
            node = await api.get(f"/nodes/{cn.devices[0].dev_eui.hex()}")
            assert node["fw_version"] == NEW_FW and node["security_counter"] == 2

            assert await svc.terminate() == 0
    finally:
        svc.cleanup()
        await cs.stop()
        await repo.server.close()

    final = await snapshot(db, "c1")
    # the state only moved forward across the restarts
    history = snapshots + [final]
    for before, after in zip(history, history[1:]):
        assert after["revision"] >= before["revision"]
        assert after["highest"] >= before["highest"]
        for eui, phase in before["phases"].items():
            p0, p1 = PHASE_ORDER[phase], PHASE_ORDER[after["phases"][eui]]
            if p0 >= RECEIVING:
                assert p1 >= RECEIVING, (eui, phase, after["phases"][eui])
            if p0 > 0:
                assert p1 > 0, (eui, phase, after["phases"][eui])

    # no audit record lost or rewritten: the final chain extends every head seen at a kill
    store = SqliteStore(db, read_only=True)
    await store.open()
    try:
        for snap in snapshots:
            assert (await store.audit_verify(snap["head"])).ok
        assert (await store.audit_verify()).ok
        records = await store.audit_records()
        snap_state = await store.load_state("c1")
        campaign = await store.get_campaign("c1")
    finally:
        await store.close()
    actions = [r.action for r in records if r.subject == "c1"]
    assert actions.count("campaign.created") == 1
    assert actions.count("campaign.started") == 1
    assert actions.count("campaign.recovered") == len(kills)
    assert actions.count("campaign.finished") == 1
    outcomes = [r.details["dev_eui"] for r in records if r.action == "device.outcome"]
    assert sorted(outcomes) == sorted(d.dev_eui.hex() for d in cn.devices)
    assert snap_state.state["machine"]["stage"] == "finished"

    # logs: structured, and no key or token anywhere
    log_text = (tmp_path / "service.log").read_text()
    lines = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    assert any(line["message"] == "service started" for line in lines)
    assert any(line["message"] == "service stopped" for line in lines)
    mc_key = campaign.config["session"]["mc_key"]
    secrets = [API_TOKEN, CS_TOKEN, mc_key, mc_key.upper()]
    secrets += [k.gen_app_key.hex() for k in cn.keys.values() if k.gen_app_key]
    for secret in secrets:
        assert secret not in log_text
