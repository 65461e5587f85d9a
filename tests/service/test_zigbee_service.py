"""Zigbee campaigns through the service, over the real HTTP API on loopback, against the
emulated Zigbee mesh (``radio_emulators.zigbee``: a zigpy radio) on a shared virtual
clock: a campaign created and started through the API ends with every emulated node
running the new file version (read from the nodes themselves), its per-node progress in
``GET /campaigns/{id}`` and ``GET /nodes/{ieee}``; a service stop + restart mid-campaign
(same state database, the mesh running on meanwhile) resumes every node from its offset;
pause / resume / abort; requests refused with the field named and nothing changed; a radio
that cannot be opened stops the service with an error naming the device.

Two set-ups: ``configs/emulated.toml`` as shipped (its ``[emulator.zigbee]`` mesh and demo
repository), and a test-owned mesh registered in-process (``[zigbee] radio = "emulated"``,
``device = "emulated:NAME"``) with a test TUF repository, which outlives the service
across restarts as a real network would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from proxyota.images import envelope
from proxyota.images.signing import generate_key, public_key_pem
from proxyota.images.tuf_repo import TufRepository
from proxyota.service.api import openapi_document
from proxyota.service.app import Service
from proxyota.service.config import parse_config
from proxyota.service.logging import SecretRegistry
from proxyota.service.zigbee_options import ZIGBEE_OPTION_FIELDS
from proxyota.service.zigbee_radio import RadioError, discover_port
from proxyota.zigbee import otafile
from radio_emulators.clock import VirtualClock
from radio_emulators.zigbee import END_DEVICE, ROUTER, SLEEPY, MeshConfig, ZigbeeNetwork, register_network
from radio_emulators.zigbee.otafile import raw_public_key
from tests.images._tuf_server import RepoServer
from tests.service.harness import ENV, T0, Api, free_port, write_toml
from tests.service.test_api import _route, check_schema
from tests.service.test_emulated import emulated_doc as emulated_service_doc

ROOT = Path(__file__).resolve().parents[2]
MFR, IMAGE_TYPE = 0x1234, 0x0001
OLD, NEW = 1, 2
OTA = 0x0019


# ----------------------------------------------------------------------------- the world


def signed_ota(vendor: Any, size: int, *, version: int = NEW, seed: int = 5) -> bytes:
    firmware = bytes((i * 97 + seed + (i >> 6)) & 0xFF for i in range(size))
    ota = otafile.build(MFR, IMAGE_TYPE, version, firmware, header_string="svc test",
                        minimum_hardware_version=1, maximum_hardware_version=3)
    return envelope.sign_zigbee_ota(ota.to_bytes(), vendor)


def mesh(clock: Any, *, nodes: int, sleepy: int, seed: int, trusted: bytes) -> ZigbeeNetwork:
    def profile(node: Any) -> Any:
        base = SLEEPY if node.sleepy else (ROUTER if node.is_router else END_DEVICE)
        return base.with_(manufacturer_code=MFR, image_type=IMAGE_TYPE, file_version=OLD,
                          trusted_keys=(trusted,))

    routers = max(1, (nodes - sleepy) * 2 // 3)
    net = ZigbeeNetwork.generate(clock, routers=routers, end_devices=nodes - sleepy - routers,
                                 sleepy=sleepy, max_hops=3, seed=seed,
                                 config=MeshConfig(loss=0.02), profiles=profile)
    net.trace = []
    return net


class World:
    """A test-owned mesh and TUF repository, and the service (restartable) on them."""

    def __init__(self, tmp: Path, clock: VirtualClock, net: ZigbeeNetwork, doc: dict,
                 server: RepoServer, digest: str, size: int) -> None:
        self.tmp, self.clock, self.net, self.doc = tmp, clock, net, doc
        self.server, self.digest, self.size = server, digest, size
        self.service: Service | None = None
        self.api: Api | None = None

    @property
    def ieees(self) -> list[str]:
        return [n.mesh_node.ieee_str for n in self.net.nodes.values()]

    def node(self, ieee: str) -> Any:
        return next(n for n in self.net.nodes.values() if n.mesh_node.ieee_str == ieee)

    @property
    def store(self) -> Any:
        assert self.service is not None
        return self.service.store

    async def start(self) -> None:
        self.service = Service(parse_config(self.doc, env=ENV, registry=SecretRegistry()),
                               clock=self.clock)
        await self.service.start()
        self.api = Api(self.service.api_url)
        await self.api.__aenter__()
        for _ in range(300):  # the intake's first refresh (a thread, real time)
            status, body = await self.api.call("GET", "/images")
            if status == 200 and body["images"]:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the Zigbee image was not accepted")

    async def stop(self) -> None:
        if self.api is not None:
            await self.api.__aexit__(None, None, None)
            self.api = None
        if self.service is not None:
            await self.service.stop()
            self.service = None

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        assert self.api is not None
        with self.clock.busy():
            return await self.api.call(method, path, body, **kw)

    async def ok(self, method: str, path: str, body: Any = None, *, status: int = 200) -> Any:
        got, out = await self.call(method, path, body)
        assert got == status, (method, path, got, out)
        component = _route(method, path).responses[status]
        if component:
            check_schema(out, component)
        return out

    async def until(self, pred: Any, *, step: float = 5.0, limit: float = 20_000.0) -> None:
        """Advance virtual time until ``pred()``."""
        start = self.clock.now()
        while not pred():
            assert self.clock.now() - start < limit
            await self.clock.sleep(step)

    async def until_view(self, campaign: str, pred: Any, **kw: Any) -> dict:
        box: dict = {}

        async def check() -> bool:
            box["view"] = await self.ok("GET", f"/campaigns/{campaign}")
            return pred(box["view"])

        start = self.clock.now()
        while not await check():
            assert self.clock.now() - start < kw.get("limit", 20_000.0), box["view"]
            await self.clock.sleep(kw.get("step", 10.0))
        return box["view"]

    async def state(self) -> dict[str, Any]:
        """Everything a refused request must leave alone."""
        campaigns = [(c.id, c.status, c.revision) for c in await self.store.list_campaigns()]
        nodes = [(n.id, n.kind, n.hw_class, n.fw_version, n.security_counter)
                 for n in await self.store.list_nodes()]
        events = {n[0]: len(await self.store.history(n[0])) for n in nodes}
        return {"campaigns": campaigns, "audit": await self.store.audit_head(), "nodes": nodes,
                "events": events, "pins": self.service.cache.pinned() if self.service else None}


@contextlib.asynccontextmanager
async def world(tmp: Path, *, nodes: int = 6, sleepy: int = 1, size: int = 1500,
                seed: int = 3, zigbee: dict | None = None) -> AsyncIterator[World]:
    clock = VirtualClock(T0)
    vendor = generate_key()
    (tmp / "vendor.pub").write_bytes(public_key_pem(vendor))
    image = signed_ota(vendor, size)
    repo = TufRepository.init(tmp / "repo")
    repo.add_target(image, "zigbee/plug.ota")
    repo.sign()
    repo.publish(tmp / "www")
    (tmp / "root.json").write_bytes(repo.metadata_bytes("root", 1))
    server = RepoServer(tmp / "www")
    url = await server.start()
    net = mesh(clock, nodes=nodes, sleepy=sleepy, seed=seed,
               trusted=raw_public_key(vendor.public_key()))
    name = f"svc-{tmp.name}"
    register_network(name, net)
    net.start()
    doc = {
        "service": {"state_db": str(tmp / "state" / "state.db"), "log_level": "warning",
                    "shutdown_grace": 5.0},
        "api": {"listen": f"127.0.0.1:{free_port()}", "token_env": "PROXYOTA_API_TOKEN"},
        "images": {"tuf_repo_url": url + "/", "trusted_root": str(tmp / "root.json"),
                   "metadata_dir": str(tmp / "state" / "tuf"),
                   "cache_dir": str(tmp / "state" / "images"),
                   "hardware_classes": [f"zigbee:{MFR:04x}:{IMAGE_TYPE:04x}"],
                   "vendor_keys": [str(tmp / "vendor.pub")], "refresh_interval": 3600.0},
        "zigbee": {"enabled": True, "radio": "emulated", "device": f"emulated:{name}",
                   **(zigbee or {})},
    }
    import hashlib

    w = World(tmp, clock, net, doc, server, hashlib.sha256(image).hexdigest(), len(image))
    try:
        await w.start()
        yield w
    finally:
        await w.stop()
        await net.close()
        await server.close()


def requested_offsets(net: ZigbeeNetwork, since: int = 0) -> dict[int, list[int]]:
    """NWK -> file offsets of the ImageBlock / ImagePage requests the nodes sent (from the
    mesh trace, entries from index ``since``)."""
    out: dict[int, list[int]] = {}
    for _, who, src, _, cluster, payload in net.trace[since:]:
        # ZCL: frame control, TSN, command; block / page request: fc u8, mfr u16, type u16,
        # version u32, offset u32
        if who == "node" and cluster == OTA and len(payload) >= 16 and payload[2] in (0x03, 0x04):
            out.setdefault(src, []).append(struct.unpack_from("<I", payload, 3 + 9)[0])
    return out


# ----------------------------------------------------------------------------- configs/emulated.toml


def emulated_doc(tmp: Path) -> dict:
    doc = emulated_service_doc(tmp)
    doc["service"]["log_level"] = "warning"
    doc["emulator"]["devices"] = 1
    return doc


async def test_emulated_config_runs_a_zigbee_campaign_through_the_api(tmp_path: Path) -> None:
    cfg = parse_config(emulated_doc(tmp_path), env=ENV, registry=SecretRegistry())
    assert cfg.zigbee.enabled and cfg.zigbee.radio == "emulated" and cfg.emulator.zigbee is not None
    service = Service(cfg)
    clock = service.clock
    await service.start()
    try:
        async with Api(service.api_url) as api:
            async def ok(method: str, path: str, body: Any = None, status: int = 200) -> Any:
                with clock.busy():
                    got, out = await api.call(method, path, body)
                assert got == status, (path, got, out)
                component = _route(method, path).responses[status]
                if component:
                    check_schema(out, component)
                return out

            images: list = []
            for _ in range(300):
                images = [i for i in (await ok("GET", "/images"))["images"] if i["kind"] == "zigbee-ota"]
                if images:
                    break
                await asyncio.sleep(0.02)
            assert images and images[0]["cached"] and images[0]["hw_classes"] == ["zigbee:1234:0001"]
            net = service.world.zigbee_network
            nodes = [n for n in (await ok("GET", "/nodes"))["nodes"] if n["kind"] == "zigbee"]
            assert sorted(n["id"] for n in nodes) == sorted(service.world.zigbee_ieees)
            assert len(nodes) == cfg.emulator.zigbee.nodes
            assert {(n["hw_class"], n["fw_version"]) for n in nodes} == {("zigbee:1234:0001", 1)}

            # no "kind": a zigbee-ota image makes a Zigbee campaign; IEEE in either form
            targets = [n["id"].replace(":", "") if i % 2 else n["id"] for i, n in enumerate(nodes)]
            created = await ok("POST", "/campaigns", {"id": "zb", "image": images[0]["digest"],
                                                     "targets": targets}, status=201)
            assert created["kind"] == "zigbee" and created["status"] == "draft"
            assert created["counts"]["targets"] == len(nodes) and not created["refused"]
            assert created["options"]["max_concurrent"] == 4  # the [zigbee] default of the file
            assert (await ok("POST", "/campaigns/zb/start"))["status"] == "running"
            view = created
            for _ in range(3000):
                view = await ok("GET", "/campaigns/zb")
                if view["status"] != "running":
                    break
                await clock.sleep(10.0)
            assert view["status"] == "completed" and view["stage"] == "finished", view
            assert view["counts"]["successful"] == len(nodes), view["devices"]
            for device in view["devices"].values():
                assert device["outcome"] == "successful" and device["phase"] == "done"
                assert device["offset"] == device["image_size"] > 0 and device["blocks_served"] > 0
                assert device["current_file_version"] == 2
            assert view["zigbee"]["blocks_served"] >= len(nodes) and view["zigbee"]["phases"] == {
                "done": len(nodes)}
            # ground truth: the emulated nodes themselves
            assert all(n.current_file_version == 2 and n.stats.version_reported_at is not None
                       for n in net.nodes.values())

            ieee = nodes[0]["id"]
            node = await ok("GET", f"/nodes/{ieee}")
            assert node["kind"] == "zigbee" and node["fw_version"] == 2 and node["security_counter"] == 2
            assert {"lqi", "nwk", "hops"} <= set(node["rx_meta"])
            entry = node["campaigns"][0]
            assert entry["campaign"] == "zb" and entry["outcome"] == "successful"
            assert entry["progress"]["offset"] == entry["progress"]["image_size"]
            assert entry["progress"]["blocks_served"] > 0
            assert (await ok("GET", f"/nodes/{ieee.replace(':', '').upper()}"))["id"] == ieee
            history = [e["event"] for e in (await ok("GET", f"/nodes/{ieee}/history?campaign=zb"))["events"]]
            assert history[0] == "targeted" and "phase" in history and history[-1] == "outcome"
            store = service.store
            actions = [r.action for r in await store.audit_records() if r.subject == "zb"]
            assert actions[:2] == ["campaign.created", "campaign.started"]
            assert actions.count("device.outcome") == len(nodes) and actions[-1] == "campaign.finished"
            assert (await store.audit_verify()).ok
            assert service.cache.pins(images[0]["digest"]) == frozenset()
    finally:
        await service.stop()


def test_openapi_documents_the_zigbee_options() -> None:
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    assert set(schemas["ZigbeeCampaignOptions"]["properties"]) == set(ZIGBEE_OPTION_FIELDS)
    assert schemas["CampaignCreate"]["properties"]["kind"]["enum"] == ["lorawan", "zigbee"]
    check_schema({"image": "ab" * 32, "kind": "zigbee", "targets": ["00:0d:6f:00:0a:bc:de:f0",
                                                                    {"ieee": "000d6f000abcdef1"}],
                  "options": {"max_concurrent": 2, "device_classes": {"sleepy": {"stall_timeout": 60}}}},
                 "CampaignCreate")


# ----------------------------------------------------------------------------- restart


async def test_restart_mid_campaign_resumes_every_node_from_its_offset(tmp_path: Path) -> None:
    async with world(tmp_path, nodes=6, sleepy=1, size=4000) as w:
        await w.ok("POST", "/campaigns", {"id": "r", "image": w.digest, "targets": w.ieees,
                                          "options": {"max_concurrent": 6}}, status=201)
        await w.ok("POST", "/campaigns/r/start")
        nodes = list(w.net.nodes.values())
        # run until several nodes hold part of the image
        await w.until(lambda: sum(0 < n.storage.offset < w.size for n in nodes) >= 3, step=0.2)
        assert all(n.current_file_version == OLD for n in nodes)
        await w.stop()  # SIGTERM-like stop: the campaign halts between two steps
        before = {n.nwk: n.storage.offset for n in nodes}
        partial = {nwk for nwk, offset in before.items() if 0 < offset < w.size}
        assert len(partial) >= 2
        mark = len(w.net.trace)
        await w.clock.sleep(120.0)  # the gateway is down; the mesh runs on
        # nobody was served meanwhile (a node that had it all may have applied it anyway)
        assert all(n.storage.offset == before[n.nwk] for n in nodes if n.nwk in partial)

        await w.start()  # same state database: the running campaign resumes
        view = await w.until_view("r", lambda v: v["status"] != "running")
        assert view["status"] == "completed" and view["counts"]["successful"] == 6, view
        assert view["zigbee"]["restarts"] == 1
        assert all(n.current_file_version == NEW for n in nodes)
        asked = requested_offsets(w.net, mark)
        progress = {p.node_id: p.progress for p in await w.store.list_progress("r")}
        for n in nodes:
            assert n.stats.ota.restarts_from_zero == 0, n.mesh_node.ieee_str
            if n.nwk in partial:
                # nobody starts from 0 again: every request after the restart is at or past
                # where the node had got to, the node resumed, the server saw it resume
                assert asked[n.nwk] and min(asked[n.nwk]) >= before[n.nwk] > 0
                assert n.stats.ota.resumes >= 1
                assert progress[n.mesh_node.ieee_str]["resumed_from"] == before[n.nwk]
        assert all(d["offset"] == d["image_size"] for d in view["devices"].values())
        actions = [r.action for r in await w.store.audit_records() if r.subject == "r"]
        assert "campaign.recovered" in actions and actions[-1] == "campaign.finished"
        assert actions.count("device.outcome") == 6


# ----------------------------------------------------------------------------- lifecycle


async def test_pause_resume_abort(tmp_path: Path) -> None:
    # an image large enough that no node can finish before the pause below: the order of
    # frames at one emulated instant depends on when the store's thread answers, so how far
    # each node got by then varies a little from run to run
    async with world(tmp_path, nodes=6, sleepy=1, size=8000, seed=4) as w:
        nodes = {n.mesh_node.ieee_str: n for n in w.net.nodes.values()}
        a, b = w.ieees[:3], w.ieees[3:]
        for cid, targets in (("a", a), ("b", b), ("c", a[:1])):
            await w.ok("POST", "/campaigns", {"id": cid, "kind": "zigbee", "image": w.digest,
                                              "targets": targets}, status=201)
        await w.ok("POST", "/campaigns/a/start")
        await w.ok("POST", "/campaigns/b/start")
        # one OTA server per node: c shares a node with the running a
        status, body = await w.call("POST", "/campaigns/c/start")
        assert status == 409 and body["error"]["field"] == "targets"
        assert body["error"]["details"]["busy"] == {a[0]: "a"}
        assert (await w.ok("POST", "/campaigns/c/abort"))["status"] == "aborted"

        await w.until(lambda: any(0 < nodes[i].storage.offset for i in a)
                      and any(0 < nodes[i].storage.offset for i in b), step=0.5)
        assert max(n.storage.offset for n in nodes.values()) < w.size // 2
        assert (await w.ok("POST", "/campaigns/a/pause"))["status"] == "paused"
        assert (await w.ok("POST", "/campaigns/b/pause"))["status"] == "paused"
        revision = (await w.store.load_state("a")).revision
        await w.clock.sleep(10.0)  # blocks already on the air still arrive
        offsets = {i: n.storage.offset for i, n in nodes.items()}
        await w.clock.sleep(300.0)  # paused: zigpy answers the nodes (no image, abort)
        assert (await w.store.load_state("a")).revision == revision
        assert {i: n.storage.offset for i, n in nodes.items()} == offsets
        assert all(n.current_file_version == OLD for n in nodes.values())

        # b is aborted while paused: its nodes end cancelled (saved and audited)
        view = await w.ok("POST", "/campaigns/b/abort")
        assert view["status"] == "aborted" and view["stage"] == "finished"
        assert {d["outcome"] for d in view["devices"].values()} == {"cancelled"}
        status, body = await w.call("POST", "/campaigns/b/resume")
        assert status == 409 and body["error"]["field"] == "status"
        actions = [r.action for r in await w.store.audit_records() if r.subject == "b"]
        assert actions.count("device.outcome") == 3  # audited once each, after the abort
        assert actions.index("campaign.aborted") < actions.index("device.outcome")
        node_b = await w.ok("GET", f"/nodes/{b[0]}")
        assert node_b["campaigns"][-1]["outcome"] == "cancelled" and node_b["fw_version"] == OLD

        await w.ok("POST", "/campaigns/a/resume")
        view = await w.until_view("a", lambda v: v["status"] != "running")
        assert view["status"] == "completed" and view["counts"]["successful"] == 3
        assert all(nodes[i].current_file_version == NEW for i in a)
        assert all(nodes[i].stats.ota.restarts_from_zero == 0 for i in a)

        # d takes over b's nodes; aborted while running, its pending nodes end cancelled
        await w.ok("POST", "/campaigns", {"id": "d", "image": w.digest, "targets": b}, status=201)
        await w.ok("POST", "/campaigns/d/start")
        progress_d = {i: nodes[i].storage.offset for i in b}
        await w.until(lambda: any(nodes[i].storage.offset > progress_d[i] for i in b), step=1.0)
        view = await w.ok("POST", "/campaigns/d/abort")
        assert view["status"] == "aborted"
        assert {d["outcome"] for d in view["devices"].values()} <= {"cancelled", "successful"}
        assert "cancelled" in {d["outcome"] for d in view["devices"].values()}
        await w.clock.sleep(600.0)
        assert any(nodes[i].current_file_version == OLD for i in b)
        assert w.service.cache.pins(w.digest) == frozenset()
        assert (await w.store.audit_verify()).ok


# ----------------------------------------------------------------------------- refusals


async def test_bad_zigbee_requests_are_refused_and_change_nothing(tmp_path: Path) -> None:
    async with world(tmp_path, nodes=3, sleepy=0, size=600) as w:
        ieee = w.ieees[0]
        stranger = "00:11:22:33:44:55:66:77"
        base = {"image": w.digest, "targets": [ieee]}
        with w.clock.busy():
            before = await w.state()
            cases: list[tuple[dict, int, str]] = [
                ({**base, "kind": "matter"}, 422, "kind"),
                ({**base, "targets": ["zz"]}, 422, "targets[0].ieee"),
                ({**base, "targets": [ieee, ieee.replace(":", "")]}, 422, "targets[1].ieee"),
                ({**base, "targets": [{"dev_eui": ieee}]}, 422, "targets[0].dev_eui"),
                ({**base, "targets": [{"ieee": ieee, "stack": "lbm"}]}, 422, "targets[0].stack"),
                ({**base, "targets": [{"ieee": ieee, "fw_version": -1}]}, 422, "targets[0].fw_version"),
                ({**base, "options": {"max_concurrent": 0}}, 422, "options.max_concurrent"),
                ({**base, "options": {"notify": "shout"}}, 422, "options.notify"),
                ({**base, "options": {"dr": 5}}, 422, "options.dr"),
                ({**base, "options": {"device_classes": {"sleepy": {"stall_timeout": -1}}}}, 422,
                 "options.device_classes.sleepy.stall_timeout"),
                ({**base, "targets": [stranger]}, 422, "targets"),
                ({**base, "targets": [{"ieee": ieee, "fw_version": 7}]}, 422, "targets"),
                ({**base, "targets": [{"ieee": ieee, "hw_class": "zigbee:9999:0001"}]}, 422, "targets"),
                ({**base, "kind": "lorawan"}, 422, "targets"),  # no LoRaWAN network server here
            ]
            for body, status, field in cases:
                got, out = await w.call("POST", "/campaigns", body)
                assert got == status and out["error"]["field"] == field, (body, got, out)
                check_schema(out, "Error")
            _, out = await w.call("POST", "/campaigns", {**base, "targets": [stranger]})
            assert out["error"]["details"]["refused"][stranger][0]["reason"] == "not_in_network"
            _, out = await w.call("POST", "/campaigns", {**base, "targets": [{"ieee": ieee, "fw_version": 7}]})
            assert out["error"]["details"]["refused"][ieee][0]["reason"] == "security_counter_rollback"
            got, out = await w.call("GET", f"/nodes/{stranger}")
            assert got == 404 and out["error"]["field"] == "dev_eui"
            assert await w.state() == before

        # a mix: the stranger is refused (with its reason), the campaign keeps the others
        created = await w.ok("POST", "/campaigns", {**base, "id": "m", "targets": [stranger, *w.ieees],
                                                    "options": {"max_concurrent": 2}}, status=201)
        assert created["refused"][stranger][0]["reason"] == "not_in_network"
        assert created["counts"]["targets"] == 3 and created["options"]["max_concurrent"] == 2
        rec = await w.store.get_campaign("m")
        assert rec.kind == "zigbee" and rec.config["image"]["file_version"] == NEW


# ----------------------------------------------------------------------------- the radio


def test_auto_device_picks_the_one_stick_of_that_radio_type() -> None:
    ports = [{"port": "/dev/ttyUSB0", "by_id": ["/dev/serial/by-id/usb-Nabu_Casa_SkyConnect"],
              "radio": "ezsp", "adapter": "SkyConnect"},
             {"port": "/dev/ttyACM0", "by_id": [], "radio": "znp", "adapter": "ZBDongle-P"}]
    assert discover_port("ezsp", ports) == "/dev/serial/by-id/usb-Nabu_Casa_SkyConnect"
    assert discover_port("znp", ports) == "/dev/ttyACM0"
    with pytest.raises(RadioError, match=r"device = \"auto\": no serial port looks like a 'deconz'"):
        discover_port("deconz", ports)
    with pytest.raises(RadioError, match=r"several ports .*\(/dev/ttyUSB0, /dev/ttyUSB1\)"):
        discover_port("ezsp", ports + [{**ports[0], "port": "/dev/ttyUSB1", "by_id": []}])


def _real_radio_doc(tmp: Path, device: str, **zigbee: Any) -> dict:
    repo = TufRepository.init(tmp / "repo")
    (tmp / "root.json").write_bytes(repo.metadata_bytes("root", 1))
    (tmp / "vendor.pub").write_bytes(public_key_pem(generate_key()))
    return {
        "service": {"state_db": str(tmp / "state.db"), "log_format": "text"},
        "api": {"listen": f"127.0.0.1:{free_port()}", "token_env": "PROXYOTA_API_TOKEN"},
        "images": {"tuf_repo_url": "http://127.0.0.1:9/", "trusted_root": str(tmp / "root.json"),
                   "metadata_dir": str(tmp / "tuf"), "cache_dir": str(tmp / "images"),
                   "hardware_classes": ["zigbee:1234:0001"], "vendor_keys": [str(tmp / "vendor.pub")]},
        "zigbee": {"enabled": True, "radio": "ezsp", "device": device, **zigbee},
    }


async def test_a_radio_that_does_not_answer_stops_the_start(tmp_path: Path) -> None:
    master, slave = os.openpty()  # a serial port nobody answers on
    try:
        path = os.ttyname(slave)
        cfg = parse_config(_real_radio_doc(tmp_path, path, open_timeout=1.0), env=ENV,
                           registry=SecretRegistry())
        assert cfg.zigbee.database == tmp_path / "zigbee.db"
        service = Service(cfg)
        with pytest.raises(RadioError, match=f"Zigbee radio 'ezsp' on {path}: no answer within 1 s"):
            await service.start()
        assert service.store is None and service.api_url is None  # everything closed again
    finally:
        os.close(master)
        os.close(slave)


def test_serve_exits_1_naming_the_device_it_cannot_open(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "zb.toml", _real_radio_doc(tmp_path, "/dev/ttyNOPE7"))
    proc = subprocess.run([sys.executable, "-m", "proxyota", "serve", "--config", str(config)],
                          env={**os.environ, **ENV}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "cannot open the Zigbee radio 'ezsp' on /dev/ttyNOPE7" in proc.stderr
    assert json.dumps(ENV["PROXYOTA_API_TOKEN"])[1:-1] not in proc.stderr


async def test_serve_stops_a_zigbee_campaign_cleanly_on_sigterm(tmp_path: Path) -> None:
    from proxyota.store import SqliteStore
    from tests.service.harness import ServiceProcess

    doc = emulated_doc(tmp_path)
    doc["service"].update(clock={"scaled": 5.0}, log_level="info", log_format="text")
    doc["emulator"]["zigbee"].update(image_size=6000)
    port = doc["api"]["listen"].rsplit(":", 1)[1]
    proc = ServiceProcess(write_toml(tmp_path / "svc.toml", doc), tmp_path / "svc.log", ENV)
    proc.start()
    try:
        async with Api(f"http://127.0.0.1:{port}") as api:
            await proc.wait_ready(api)
            images: list = []
            for _ in range(500):
                images = [i for i in (await api.get("/images"))["images"] if i["kind"] == "zigbee-ota"]
                if images:
                    break
                await asyncio.sleep(0.02)
            ieees = [n["id"] for n in (await api.get("/nodes"))["nodes"] if n["kind"] == "zigbee"]
            await api.post("/campaigns", {"id": "zb", "image": images[0]["digest"], "targets": ieees},
                           expect=201)
            await api.post("/campaigns/zb/start")
            for _ in range(500):
                view = await api.get("/campaigns/zb")
                if view["zigbee"]["blocks_served"] > 0:
                    break
                await asyncio.sleep(0.02)
            assert view["status"] == "running" and view["counts"]["successful"] < len(ieees)
        assert await proc.terminate() == 0
    finally:
        proc.cleanup()
    log = (tmp_path / "svc.log").read_text()
    assert "zigbee radio closed" in log and "service stopped" in log, log[-2000:]
    store = SqliteStore(Path(doc["service"]["state_db"]), read_only=True)
    await store.open()
    try:  # still running, its state saved: the next start resumes it
        rec = await store.get_campaign("zb")
        assert rec.status == "running" and rec.kind == "zigbee" and rec.revision > 0
    finally:
        await store.close()
