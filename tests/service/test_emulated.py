"""``configs/emulated.toml``: the service with its in-process emulated ChirpStack, devices
and demo TUF repository runs a campaign end to end (here on a virtual clock)."""

from __future__ import annotations

import asyncio
import copy
import tomllib
from pathlib import Path

import pytest

from proxyota.service.app import Service
from proxyota.service.config import ConfigError, parse_config
from proxyota.service.logging import SecretRegistry
from tests.service.harness import ENV, Api, free_port

ROOT = Path(__file__).resolve().parents[2]


def emulated_doc(tmp: Path) -> dict:
    doc = tomllib.loads((ROOT / "configs" / "emulated.toml").read_text())
    doc["service"].update(state_db=str(tmp / "state.db"), clock="virtual", log_format="json")
    doc["api"]["listen"] = f"127.0.0.1:{free_port()}"
    doc["images"].update(metadata_dir=str(tmp / "tuf"), cache_dir=str(tmp / "images"))
    doc["emulator"].update(repo_dir=str(tmp / "repo"), devices=4)
    return doc


async def test_emulated_config_runs_a_campaign(tmp_path: Path) -> None:
    cfg = parse_config(emulated_doc(tmp_path), env=ENV, registry=SecretRegistry())
    service = Service(cfg)
    clock = service.clock
    await service.start()
    try:
        async with Api(service.api_url) as api:
            images: list = []
            for _ in range(300):  # the LoRaWAN image (the demo repository has a Zigbee one too)
                images = [i for i in (await api.get("/images"))["images"] if i["kind"] == "envelope"]
                if images:
                    break
                await asyncio.sleep(0.02)
            assert images and images[0]["cached"]
            nodes = [n for n in (await api.get("/nodes"))["nodes"] if n["kind"] == "lorawan"]
            euis = sorted(n["id"] for n in nodes)
            assert len(euis) == 4 and all(n["hw_class"] for n in nodes)
            with clock.busy():
                created = await api.post("/campaigns", {"id": "demo", "image": images[0]["digest"],
                                                        "targets": euis}, expect=201)
                assert created["counts"]["targets"] == 4 and not created["refused"]
                await api.post("/campaigns/demo/start")
            for _ in range(2000):
                with clock.busy():
                    view = await api.get("/campaigns/demo")
                if view["status"] != "running":
                    break
                await clock.sleep(30.0)
            assert view["status"] == "completed", view
            assert view["counts"]["successful"] == 4, view["devices"]
            world = service.world
            assert all(d.fw_version == cfg.emulator.new_version for d in world.network.devices)
    finally:
        await service.stop()

    # a second start reuses the demo repository (same trusted root) and the store
    again = Service(parse_config(emulated_doc(tmp_path), env=ENV, registry=SecretRegistry()))
    await again.start()
    try:
        async with Api(again.api_url) as api:
            campaigns = (await api.get("/campaigns"))["campaigns"]
            assert [(c["id"], c["status"]) for c in campaigns] == [("demo", "completed")]
            for _ in range(300):
                if (await api.get("/images"))["images"]:
                    break
                await asyncio.sleep(0.02)
            assert again.catalog.last_error is None
    finally:
        await again.stop()


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(chirpstack={"server": "x:1"}), "[chirpstack]: is not used with [emulator]"),
    (lambda d: d["images"].update(tuf_repo_url="http://x/"), "[images] tuf_repo_url: is provided by [emulator]"),
    (lambda d: d["emulator"].update(devices=0), "[emulator] devices"),
    (lambda d: d["emulator"].update(profiles=["contiki"]), "[emulator] profiles: unknown device profile"),
    (lambda d: d["emulator"].update(downlink_loss=1.5), "[emulator] downlink_loss"),
    (lambda d: d["emulator"].update(colour=1), "[emulator] colour: unknown key"),
    (lambda d: d.pop("emulator"), "[service] clock: \"virtual\" needs the in-process [emulator]"),
    (lambda d: d["emulator"]["zigbee"].update(nodes=0), "[emulator.zigbee] nodes: must be in 1..200"),
    (lambda d: d["emulator"]["zigbee"].update(sleepy=8), "[emulator.zigbee] sleepy: must be in 0..7"),
    (lambda d: d["emulator"]["zigbee"].update(loss=1.5), "[emulator.zigbee] loss: must be a probability"),
    (lambda d: d["emulator"]["zigbee"].update(new_version=1), "[emulator.zigbee] new_version: must be in 2.."),
    (lambda d: d["emulator"]["zigbee"].update(colour=1), "[emulator.zigbee] colour: unknown key"),
    (lambda d: d["zigbee"].update(radio="ezsp"), "[zigbee] radio: is the emulated mesh of [emulator.zigbee]"),
    (lambda d: d["zigbee"].update(device="/dev/ttyUSB0"), "[zigbee] device: is the emulated mesh"),
    (lambda d: d["zigbee"].update(enabled=False), "[zigbee] enabled: is false, but [emulator.zigbee]"),
    (lambda d: d["zigbee"].update(max_concurrent=0), "[zigbee] max_concurrent"),
])
def test_emulated_config_errors(tmp_path: Path, change, message: str) -> None:
    doc = copy.deepcopy(emulated_doc(tmp_path))
    change(doc)
    with pytest.raises(ConfigError) as err:
        parse_config(doc, env=ENV, registry=SecretRegistry())
    assert message in str(err.value)


def test_example_emulated_config_validates() -> None:
    doc = tomllib.loads((ROOT / "configs" / "emulated.toml").read_text())
    cfg = parse_config(doc, source="configs/emulated.toml", env=ENV, registry=SecretRegistry())
    assert cfg.emulator is not None and cfg.emulator.devices == 10
    assert cfg.service.clock.kind == "scaled" and cfg.service.clock.rate == 50.0
    assert cfg.chirpstack is None
    assert cfg.zigbee.enabled and cfg.zigbee.radio == "emulated" and cfg.zigbee.database is None
    assert cfg.emulator.zigbee is not None and cfg.emulator.zigbee.nodes == 8
    assert cfg.emulator.zigbee.sleepy == 1 and cfg.zigbee.defaults == {"max_concurrent": 4}
