"""The HTTP API against the service running in-process with the emulated ChirpStack and
network on a shared VirtualClock: happy paths (images, campaign create / start / pause /
resume / abort, nodes), every 4xx with the state checked unchanged through the store,
token handling, the OpenAPI document against the routes and every response, and the logs
of a whole campaign free of keys and tokens."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
from pathlib import Path
from typing import Any, AsyncIterator

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from proxyota.lorawan.session_config import RebootPolicy, Timeouts
from proxyota.service.api import ROUTES, make_app, openapi_document
from proxyota.service.app import Service
from proxyota.service.config import parse_config
from proxyota.service.logging import setup_logging
from proxyota.service.options import OPTION_FIELDS
from radio_emulators.clock import VirtualClock
from tests.service.harness import (
    API_TOKEN,
    CAMPAIGN_OPTIONS,
    CS_TOKEN,
    ENV,
    HW,
    NEW_FW,
    T0,
    Api,
    build_network,
    chirpstack,
    free_port,
    make_repo,
    service_config,
    targets,
)

N = 4
DOC = openapi_document()
_REGISTRY = Registry().with_resource(
    "urn:proxyota-api", Resource.from_contents(DOC, default_specification=DRAFT202012))


def check_schema(body: Any, component: str) -> None:
    """``body`` validates against ``#/components/schemas/<component>`` of the document."""
    validator = Draft202012Validator({"$ref": f"urn:proxyota-api#/components/schemas/{component}"},
                                     registry=_REGISTRY)
    errors = sorted(validator.iter_errors(body), key=str)
    assert not errors, (component, [e.message for e in errors[:3]])


class World:
    def __init__(self, tmp: Path, clock: VirtualClock, service: Service, cs: Any, cn: Any,
                 repo: Any, api: Api, log: io.StringIO) -> None:
        self.tmp, self.clock, self.service, self.cs, self.cn = tmp, clock, service, cs, cn
        self.repo, self.api, self.log = repo, api, log

    @property
    def store(self) -> Any:
        return self.service.store

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        with self.clock.busy():
            return await self.api.call(method, path, body, **kw)

    async def ok(self, method: str, path: str, body: Any = None, *, status: int = 200,
                 schema: str | None = None) -> Any:
        got, out = await self.call(method, path, body)
        assert got == status, (method, path, got, out)
        route = _route(method, path)
        component = schema or route.responses[status]
        if component:
            check_schema(out, component)
        return out

    async def until(self, campaign: str, pred: Any, *, step: float = 15.0,
                    limit: float = 20_000.0) -> dict:
        """Advance virtual time until ``pred(view)``."""
        start = self.clock.now()
        while True:
            view = await self.ok("GET", f"/campaigns/{campaign}")
            if pred(view):
                return view
            assert self.clock.now() - start < limit, view
            await self.clock.sleep(step)

    async def state(self) -> dict[str, Any]:
        """Everything a refused request must leave alone."""
        campaigns = [(c.id, c.status, c.revision, c.config.get("targets"))
                     for c in await self.store.list_campaigns()]
        nodes = await self.store.list_nodes()
        events = {n.id: len(await self.store.history(n.id)) for n in nodes}
        # last_seen / rx_meta follow the radio (devices keep uplinking), not the API
        managed = [(n.id, n.kind, n.hw_class, n.fw_version, n.security_counter)
                   for n in nodes]
        return {"campaigns": campaigns, "audit": await self.store.audit_head(),
                "nodes": managed, "events": events,
                "pins": self.service.cache.pinned()}


def _route(method: str, path: str) -> Any:
    parts = path.split("?")[0].strip("/").split("/")
    for r in ROUTES:
        rp = r.path.strip("/").split("/")
        if r.method == method and len(rp) == len(parts) and all(
                a.startswith("{") or a == b for a, b in zip(rp, parts)):
            return r
    raise AssertionError(f"no route for {method} {path}")


@contextlib.asynccontextmanager
async def world(tmp: Path, *, n: int = N, config: dict | None = None) -> AsyncIterator[World]:
    log = io.StringIO()
    handler = setup_logging("info", "json", stream=log)
    repo = await make_repo(tmp)
    clock = VirtualClock(T0)
    cn = build_network(clock, n, repo.image)
    iport, aport = free_port(), free_port()
    cs = chirpstack(clock, cn, iport)
    cs_port = await cs.start()
    doc = service_config(tmp, repo, cs_port=cs_port, integration_port=iport, api_port=aport)
    for section, values in (config or {}).items():
        doc[section].update(values)
    service = Service(parse_config(doc, env=ENV), clock=clock)
    await service.start()
    try:
        async with Api(service.api_url) as api:
            w = World(tmp, clock, service, cs, cn, repo, api, log)
            for _ in range(200):
                status, body = await api.call("GET", "/images")
                if status == 200 and body["images"]:
                    break
                await asyncio.sleep(0.02)
            yield w
    finally:
        await service.stop()
        await cs.stop()
        await repo.server.close()
        import logging

        logging.getLogger().removeHandler(handler)


def create_body(w: World, cid: str = "c1", **over: Any) -> dict:
    body = {"id": cid, "image": w.repo.digest, "targets": targets(w.cn), "options": CAMPAIGN_OPTIONS}
    body.update(over)
    return body


# ----------------------------------------------------------------------------- OpenAPI


def test_openapi_document_matches_the_routes() -> None:
    app = make_app(None, None, token="x" * 20)  # type: ignore[arg-type]
    served = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        served.add((route.method, route.resource.canonical))
        assert route.name in {r.name for r in ROUTES}
    documented = {(m.upper(), p) for p, ops in DOC["paths"].items() for m in ops}
    assert served == documented
    assert DOC["openapi"] == "3.1.0"
    ids = [op["operationId"] for ops in DOC["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for path, ops in DOC["paths"].items():
        for method, op in ops.items():
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}
            # every mutation needs the token; reads are open on loopback by default
            route = _route(method.upper(), path.replace("{", "").replace("}", ""))
            assert (op["security"] == [{"bearerAuth": []}]) == route.mutation
            for status, resp in op["responses"].items():
                ref = resp["content"]["application/json"]["schema"].get("$ref")
                if ref:
                    assert ref.rsplit("/", 1)[1] in DOC["components"]["schemas"]
    for name, schema in DOC["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
    # the documented campaign options are the ones the service parses
    options = DOC["components"]["schemas"]["CampaignOptions"]["properties"]
    assert set(options) == set(OPTION_FIELDS)
    assert set(options["timeouts"]["properties"]) == {f.name for f in dataclasses.fields(Timeouts)}
    assert set(options["reboot"]["properties"]) == {f.name for f in dataclasses.fields(RebootPolicy)}
    reads = openapi_document(reads_need_token=True)
    assert reads["paths"]["/images"]["get"]["security"] == [{"bearerAuth": []}]
    assert reads["paths"]["/health"]["get"]["security"] == [{}]


# ----------------------------------------------------------------------------- happy path


async def test_campaign_lifecycle_through_the_api(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        assert (await w.ok("GET", "/health"))["status"] == "ok"
        doc = await w.ok("GET", "/openapi.json")
        assert doc == json.loads(json.dumps(DOC))
        images = (await w.ok("GET", "/images"))["images"]
        assert [i["digest"] for i in images] == [w.repo.digest]
        assert images[0]["firmware_version"] == NEW_FW and images[0]["cached"]
        detail = await w.ok("GET", f"/images/{w.repo.digest.upper()}")
        assert detail["envelope"]["hw_class"] == HW and detail["envelope"]["payload_digest_ok"]

        refused_eui = "70b3d57ed00000ff"
        body = create_body(w)
        body["targets"] = body["targets"] + [{"dev_eui": refused_eui, "hw_class": HW,
                                              "security_counter": 7}]
        check_schema(body, "CampaignCreate")
        created = await w.ok("POST", "/campaigns", body, status=201)
        assert created["status"] == "draft" and created["counts"]["targets"] == N
        assert created["refused"][refused_eui][0]["reason"] == "security_counter_rollback"
        mc_key = (await w.store.get_campaign("c1")).config["session"]["mc_key"]
        assert "session" not in created and "mc_key" not in json.dumps(created)
        assert mc_key not in json.dumps(created)
        assert w.service.cache.pins(w.repo.digest) == frozenset({"campaign-c1"})
        listed = (await w.ok("GET", "/campaigns"))["campaigns"]
        assert [(c["id"], c["status"]) for c in listed] == [("c1", "draft")]

        started = await w.ok("POST", "/campaigns/c1/start")
        assert started["status"] == "running"
        view = await w.until("c1", lambda v: v["multicast"]["highest_counter"] > 0)
        paused = await w.ok("POST", "/campaigns/c1/pause", {})
        assert paused["status"] == "paused"
        group = (await w.store.load_state("c1")).state["driver"]["group_id"]
        assert not [q for q in w.cs.core.mc_queue if getattr(q, "group_id", group) == group]
        revision = (await w.store.load_state("c1")).revision
        await w.clock.sleep(200.0)  # paused: no timer fires, nothing is saved or sent
        assert (await w.store.load_state("c1")).revision == revision
        assert (await w.ok("GET", "/campaigns/c1"))["status"] == "paused"

        await w.ok("POST", "/campaigns/c1/resume")
        view = await w.until("c1", lambda v: v["status"] != "running")
        assert view["status"] == "completed", view
        assert view["counts"]["successful"] == N and view["stage"] == "finished"
        assert w.service.cache.pins(w.repo.digest) == frozenset()

        nodes = (await w.ok("GET", "/nodes"))["nodes"]
        assert {n["id"] for n in nodes} >= {d.dev_eui.hex() for d in w.cn.devices} | {refused_eui}
        eui = w.cn.devices[0].dev_eui.hex()
        node = await w.ok("GET", f"/nodes/{eui.upper()}")
        assert node["fw_version"] == NEW_FW and node["security_counter"] == 2
        assert node["last_seen"] is not None and "rssi" in node["rx_meta"]
        assert node["campaigns"][0]["outcome"] == "successful"
        history = (await w.ok("GET", f"/nodes/{eui}/history?campaign=c1"))["events"]
        kinds = [e["event"] for e in history]
        assert kinds[0] == "targeted" and kinds[-1] == "outcome" and "phase" in kinds
        last = (await w.ok("GET", f"/nodes/{eui}/history?limit=1"))["events"]
        assert len(last) == 1
        refused_history = (await w.ok("GET", f"/nodes/{refused_eui}/history"))["events"]
        assert [e["event"] for e in refused_history] == ["refused"]

        actions = [r.action for r in await w.store.audit_records() if r.subject == "c1"]
        assert actions[:4] == ["campaign.created", "campaign.started", "campaign.paused",
                               "campaign.resumed"]
        assert actions.count("device.outcome") == N and actions[-1] == "campaign.finished"
        assert (await w.store.audit_verify()).ok

        # the log of the whole campaign: structured, no key, no token
        text = w.log.getvalue()
        session = (await w.store.get_campaign("c1")).config["session"]
        secrets = [API_TOKEN, CS_TOKEN, session["mc_key"], session["mc_key"].upper()]
        secrets += [k.gen_app_key.hex() for k in w.cn.keys.values()]
        for secret in secrets:
            assert secret not in text
        assert all(json.loads(line)["level"] for line in text.splitlines())


async def test_abort_cancels_and_cleans_up(tmp_path: Path) -> None:
    async with world(tmp_path, n=2) as w:
        await w.ok("POST", "/campaigns", create_body(w, "draft1"), status=201)
        aborted = await w.ok("POST", "/campaigns/draft1/abort")
        assert aborted["status"] == "aborted"
        assert w.service.cache.pins(w.repo.digest) == frozenset()

        await w.ok("POST", "/campaigns", create_body(w, "c2"), status=201)
        await w.ok("POST", "/campaigns/c2/start")
        await w.until("c2", lambda v: any(d["phase"] not in ("pending", "probe")
                                          for d in v["devices"].values()))
        assert w.cs.core.stats()["mc_queued"] >= 0 and len(w.cs.core.groups) == 1
        view = await w.ok("POST", "/campaigns/c2/abort")
        assert view["status"] == "aborted" and view["stage"] == "finished"
        assert {d["outcome"] for d in view["devices"].values()} == {"cancelled"}
        assert len(w.cs.core.groups) == 0  # the ChirpStack multicast group is gone
        status, body = await w.call("POST", "/campaigns/c2/resume")
        assert status == 409 and body["error"]["field"] == "status"
        actions = [r.action for r in await w.store.audit_records() if r.subject == "c2"]
        assert actions.count("campaign.aborted") == 1 and actions.count("device.outcome") == 2


# ----------------------------------------------------------------------------- 4xx


async def test_bad_requests_get_4xx_and_change_nothing(tmp_path: Path) -> None:
    async with world(tmp_path, n=2) as w:
        await w.ok("POST", "/campaigns", create_body(w, "c1"), status=201)
        eui = w.cn.devices[0].dev_eui.hex()
        with w.clock.busy():  # no emulated time passes while the requests are judged
            before = await w.state()
            big = json.dumps(create_body(w, "big", padding="x" * 70_000)).encode()
            unknown = "ab" * 32
            cases: list[tuple[str, str, dict, int, str | None]] = [
                ("POST", "/campaigns", {"raw": b"{not json"}, 400, None),
                ("POST", "/campaigns", {"raw": b"[1, 2]"}, 400, None),
                ("POST", "/campaigns", {"raw": b""}, 400, None),
                ("POST", "/campaigns", {"raw": b'{"image": NaN}'}, 400, None),
                ("POST", "/campaigns", {"raw": b"\xff\xfe"}, 400, None),
                ("POST", "/campaigns", {"raw": big}, 413, None),
                ("POST", "/campaigns", {"body": {}}, 422, "image"),
                ("POST", "/campaigns", {"body": create_body(w, "x", image="zz")}, 422, "image"),
                ("POST", "/campaigns", {"body": create_body(w, "x", image=unknown)}, 422, "image"),
                ("POST", "/campaigns", {"body": create_body(w, "x", targets=[])}, 422, "targets"),
                ("POST", "/campaigns", {"body": create_body(w, "x", targets="all")}, 422, "targets"),
                ("POST", "/campaigns", {"body": create_body(w, "x", targets=[123])}, 422, "targets[0]"),
                ("POST", "/campaigns", {"body": create_body(w, "x", targets=["zz"])}, 422,
                 "targets[0].dev_eui"),
                ("POST", "/campaigns", {"body": create_body(w, "x", targets=[eui, eui.upper()])}, 422,
                 "targets[1].dev_eui"),
                ("POST", "/campaigns", {"body": create_body(w, "x", targets=[{"dev_eui": eui,
                                                                              "colour": 1}])}, 422,
                 "targets[0].colour"),
                ("POST", "/campaigns", {"body": create_body(w, "x", targets=[{
                    "dev_eui": eui, "security_counter": -1}])}, 422, "targets[0].security_counter"),
                ("POST", "/campaigns", {"body": create_body(w, "x", targets=[{
                    "dev_eui": eui, "stack": "contiki"}])}, 422, "targets[0].stack"),
                ("POST", "/campaigns", {"body": create_body(w, "x", options={"dr": 99})}, 422,
                 "options.dr"),
                ("POST", "/campaigns", {"body": create_body(w, "x", options={"frag_size": 1000})}, 422,
                 "options.frag_size"),
                ("POST", "/campaigns", {"body": create_body(w, "x", options={
                    "timeouts": {"answer": -1}})}, 422, "options.timeouts.answer"),
                ("POST", "/campaigns", {"body": create_body(w, "x", options={
                    "reboot": {"mode": "time"}})}, 422, "options.reboot.at"),
                ("POST", "/campaigns", {"body": create_body(w, "x", options={"speed": 3})}, 422,
                 "options.speed"),
                ("POST", "/campaigns", {"body": create_body(w, "x", options="fast")}, 422, "options"),
                ("POST", "/campaigns", {"body": create_body(w, "x", colour="red")}, 422, "colour"),
                ("POST", "/campaigns", {"body": create_body(w, "bad id!")}, 422, "id"),
                ("POST", "/campaigns", {"body": create_body(w, "c1")}, 409, "id"),
                ("POST", "/campaigns", {"body": create_body(w, "x", targets=[{
                    "dev_eui": eui, "hw_class": "0b0f1c3e-0000-5000-8000-000000000001"}])}, 422,
                 "targets"),
                ("POST", "/campaigns", {"body": create_body(w, "x", targets=[{
                    "dev_eui": eui, "hw_class": HW, "security_counter": 9}])}, 422, "targets"),
                ("POST", "/campaigns", {"body": create_body(w, "x", targets=[{
                    "dev_eui": "0000000000000bad", "hw_class": HW}])}, 422, "targets"),
                ("POST", "/campaigns/nope/start", {}, 404, "id"),
                ("POST", "/campaigns/c1/pause", {}, 409, "status"),
                ("POST", "/campaigns/c1/resume", {}, 409, "status"),
                ("POST", "/campaigns/c1/start", {"body": {"now": True}}, 422, "now"),
                ("POST", "/campaigns/c1/start", {"raw": b"[1]"}, 400, None),
                ("POST", "/campaigns/c1/start", {"auth": False}, 401, "Authorization"),
                ("POST", "/campaigns/c1/start", {"headers": {"Authorization": "Bearer wrong-token"}},
                 401, "Authorization"),
                ("POST", "/campaigns/c1/start", {"headers": {"Authorization": f"Basic {API_TOKEN}"}},
                 401, "Authorization"),
                ("POST", "/campaigns", {"body": create_body(w, "x"), "auth": False}, 401,
                 "Authorization"),
                ("DELETE", "/campaigns/c1", {}, 405, None),
                ("GET", "/nope", {}, 404, None),
                ("GET", "/campaigns/nope", {}, 404, "id"),
                ("GET", "/campaigns/..", {}, 404, None),
                ("GET", "/images/zz", {}, 404, "digest"),
                ("GET", f"/images/{unknown}", {}, 404, "digest"),
                ("GET", "/nodes/zz", {}, 404, "dev_eui"),
                ("GET", "/nodes/0000000000000bad", {}, 404, "dev_eui"),
                ("GET", f"/nodes/{eui}/history?limit=-1", {}, 400, "limit"),
                ("GET", f"/nodes/{eui}/history?limit=abc", {}, 400, "limit"),
                ("GET", f"/nodes/{eui}/history?campaign=a%20b", {}, 400, "campaign"),
                ("GET", f"/nodes/{eui}/history?bogus=1", {}, 400, "bogus"),
            ]
            for method, path, kw, status, field in cases:
                kw = dict(kw)
                body = kw.pop("body", None)
                got, out = await w.call(method, path, body, **kw)
                assert got == status, (method, path, field, got, out)
                check_schema(out, "Error")
                assert out["error"]["status"] == status
                if field is not None:
                    assert out["error"]["field"] == field, (path, out)
                if status == 401:
                    assert API_TOKEN not in json.dumps(out)
            # a refusal says why per node
            _, out = await w.call("POST", "/campaigns", create_body(w, "x", targets=[{
                "dev_eui": eui, "hw_class": HW, "security_counter": 9}]))
            assert out["error"]["details"]["refused"][eui][0]["reason"] == "security_counter_rollback"
            assert await w.state() == before
        assert "x" not in {c.id for c in await w.store.list_campaigns()}


async def test_reads_can_require_the_token(tmp_path: Path) -> None:
    async with world(tmp_path, n=1, config={"api": {"require_token_for_reads": True}}) as w:
        status, body = await w.call("GET", "/images", auth=False)
        assert status == 401 and body["error"]["field"] == "Authorization"
        status, _ = await w.call("GET", "/openapi.json", auth=False)
        assert status == 401
        status, body = await w.call("GET", "/health", auth=False)
        assert status == 200 and body["status"] == "ok"
        assert (await w.ok("GET", "/images"))["images"]
        doc = await w.ok("GET", "/openapi.json")
        assert doc["paths"]["/nodes"]["get"]["security"] == [{"bearerAuth": []}]


async def test_reads_are_open_on_loopback_by_default(tmp_path: Path) -> None:
    async with world(tmp_path, n=1) as w:
        for path in ("/images", "/campaigns", "/nodes", "/openapi.json", "/health"):
            status, _ = await w.call("GET", path, auth=False)
            assert status == 200, path
