"""The service's HTTP API (aiohttp, JSON) and its OpenAPI 3.1 document.

One table, :data:`ROUTES`, defines every endpoint: the aiohttp routes and the document at
``/openapi.json`` are both generated from it, so they cannot disagree.

Authentication: ``Authorization: Bearer <token>`` (compared in constant time) on every
mutation; reads are open unless ``[api] require_token_for_reads`` (the default when the
API listens beyond loopback). ``GET /health`` is always open and says nothing else.

Errors are JSON ``{"error": {"status", "message", "field", "details"}}``:
400 the request cannot be read (not JSON, not an object, bad query parameter),
401 missing or wrong token, 404 unknown resource or route, 405 wrong method,
409 the resource's state forbids it (start a running campaign, id taken),
413 body too large, 422 a field's value is wrong (``field`` names it), 503 ChirpStack
unreachable. A refused request changes nothing.

Campaigns of both kinds use the same endpoints: ``POST /campaigns`` with ``kind``
(``lorawan`` / ``zigbee``; default: from the image, a ``zigbee-ota`` image makes a Zigbee
campaign), targets as DevEUIs or IEEE addresses, and the kind's ``options``
(:data:`~proxyota.service.options.OPTION_FIELDS` /
:data:`~proxyota.service.zigbee_options.ZIGBEE_OPTION_FIELDS`). Nodes are addressed by
DevEUI or IEEE address (``/nodes/00:0d:6f:00:0a:bc:de:f0``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web

import proxyota
from proxyota.lorawan.session_config import Timeouts
from proxyota.service.runner import ApiError, CampaignRunner
from proxyota.service.images import ImageCatalog
from proxyota.service.zigbee_options import DEVICE_CLASS_FIELDS, ZIGBEE_OPTION_FIELDS
from proxyota.zigbee.ota_server import DEFAULT_DEVICE_CLASSES
from proxyota.store import UnknownImage

__all__ = ["ROUTES", "Route", "make_app", "openapi_document"]

log = logging.getLogger("proxyota.service.api")

_DIGEST = re.compile(r"^[0-9a-fA-F]{64}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

RUNNER_KEY = web.AppKey("runner", CampaignRunner)
CATALOG_KEY = web.AppKey("catalog", ImageCatalog)
SETTINGS_KEY = web.AppKey("settings", dict)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    name: str
    summary: str
    mutation: bool = False
    tag: str = "service"
    params: tuple[dict[str, Any], ...] = ()
    body: str | None = None  # component schema of the request body
    responses: dict[int, str | None] = field(default_factory=dict)  # status -> component


_CAMPAIGN_ID_PARAM = {"name": "id", "in": "path", "required": True,
                      "description": "campaign id", "schema": {"type": "string",
                                                                "pattern": _ID.pattern}}
_DIGEST_PARAM = {"name": "digest", "in": "path", "required": True,
                 "description": "SHA-256 of the image (hex)",
                 "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}}
_DEV_EUI_PARAM = {"name": "dev_eui", "in": "path", "required": True,
                  "description": "LoRaWAN DevEUI (16 hex digits) or Zigbee IEEE address "
                                 "(00:0d:6f:00:0a:bc:de:f0)", "schema": {"type": "string"}}

_LIFECYCLE_ERRORS: dict[int, str | None] = {400: "Error", 401: "Error", 404: "Error",
                                            409: "Error", 422: "Error"}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", "health", "Liveness: the service is up", responses={200: "Health"}),
    Route("GET", "/openapi.json", "openapi", "This OpenAPI document", responses={200: None}),
    Route("GET", "/images", "list_images", "Accepted images", tag="images",
          responses={200: "ImageList", 401: "Error"}),
    Route("GET", "/images/{digest}", "get_image", "Inspect an accepted image", tag="images",
          params=(_DIGEST_PARAM,), responses={200: "ImageDetail", 401: "Error", 404: "Error"}),
    Route("GET", "/campaigns", "list_campaigns", "Campaigns", tag="campaigns",
          responses={200: "CampaignList", 401: "Error"}),
    Route("POST", "/campaigns", "create_campaign", "Create a campaign (status draft)",
          mutation=True, tag="campaigns", body="CampaignCreate",
          responses={201: "Campaign", 400: "Error", 401: "Error", 409: "Error", 413: "Error",
                     422: "Error", 503: "Error"}),
    Route("GET", "/campaigns/{id}", "get_campaign", "Campaign status", tag="campaigns",
          params=(_CAMPAIGN_ID_PARAM,), responses={200: "Campaign", 401: "Error", 404: "Error"}),
    Route("POST", "/campaigns/{id}/start", "start_campaign", "Start a draft campaign",
          mutation=True, tag="campaigns", params=(_CAMPAIGN_ID_PARAM,), body="Empty",
          responses={200: "Campaign", **_LIFECYCLE_ERRORS}),
    Route("POST", "/campaigns/{id}/pause", "pause_campaign", "Pause a running campaign",
          mutation=True, tag="campaigns", params=(_CAMPAIGN_ID_PARAM,), body="Empty",
          responses={200: "Campaign", **_LIFECYCLE_ERRORS}),
    Route("POST", "/campaigns/{id}/resume", "resume_campaign", "Resume a paused campaign",
          mutation=True, tag="campaigns", params=(_CAMPAIGN_ID_PARAM,), body="Empty",
          responses={200: "Campaign", **_LIFECYCLE_ERRORS}),
    Route("POST", "/campaigns/{id}/abort", "abort_campaign", "Abort a campaign",
          mutation=True, tag="campaigns", params=(_CAMPAIGN_ID_PARAM,), body="Empty",
          responses={200: "Campaign", **_LIFECYCLE_ERRORS}),
    Route("GET", "/nodes", "list_nodes", "Known nodes", tag="nodes",
          responses={200: "NodeList", 401: "Error"}),
    Route("GET", "/nodes/{dev_eui}", "get_node", "A node's state and its campaigns", tag="nodes",
          params=(_DEV_EUI_PARAM,), responses={200: "Node", 401: "Error", 404: "Error"}),
    Route("GET", "/nodes/{dev_eui}/history", "node_history", "A node's history", tag="nodes",
          params=(_DEV_EUI_PARAM,
                  {"name": "campaign", "in": "query", "required": False,
                   "description": "only events of this campaign",
                   "schema": {"type": "string", "pattern": _ID.pattern}},
                  {"name": "limit", "in": "query", "required": False,
                   "description": "the newest N events",
                   "schema": {"type": "integer", "minimum": 0, "maximum": 10000}}),
          responses={200: "NodeHistory", 400: "Error", 401: "Error", 404: "Error"}),
)

# ----------------------------------------------------------------------------- schemas

_NUM = {"type": "number"}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_NUM = {"type": ["number", "null"]}
_BOOL = {"type": "boolean"}
#: JSON schema of each Zigbee option (ZIGBEE_OPTION_FIELDS gives the names)
_ZIGBEE_OPTION_SCHEMAS: dict[str, Any] = {
    "max_concurrent": {"type": "integer", "minimum": 1},
    "max_retries": {"type": "integer", "minimum": 0},
    "notify": {"enum": ["unicast", "broadcast", "none"]},
    "upgrade_delay": {"type": "number", "minimum": 0},
    "max_block_size": {"type": ["integer", "null"], "minimum": 1, "maximum": 255},
    "min_block_period_ms": {"type": "integer", "minimum": 0},
    "require_hardware_version": _BOOL,
    "query_jitter": {"type": "integer", "minimum": 1, "maximum": 100},
    "expected_throughput": {"type": "number", "exclusiveMinimum": 0},
    "min_wait": {"type": "number", "minimum": 0},
    "max_wait": {"type": "number", "minimum": 0},
    "time_reference": {"enum": ["utc", "relative"]},
    "wait_for_data_layout": {"enum": ["spec", "legacy", "auto"]},
    "default_device_class": {"enum": list(DEFAULT_DEVICE_CLASSES)},
    "device_classes": {
        "type": "object", "additionalProperties": False,
        "properties": {name: {"type": "object", "additionalProperties": False,
                              "properties": {f: (_NULLABLE_NUM if f == "notify_interval" else
                                                 {"type": "integer", "minimum": 1}
                                                 if f == "max_notifies" else _NUM)
                                             for f in DEVICE_CLASS_FIELDS}}
                       for name in DEFAULT_DEVICE_CLASSES}},
}
assert set(_ZIGBEE_OPTION_SCHEMAS) == set(ZIGBEE_OPTION_FIELDS)

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["status", "message", "field"],
            "properties": {"status": _INT, "message": _STR, "field": _NULLABLE_STR,
                           "details": {}}}},
    },
    "Empty": {"type": "object", "maxProperties": 0,
              "description": "no body, or an empty JSON object"},
    "Health": {
        "type": "object", "required": ["status", "version"],
        "properties": {"status": {"const": "ok"}, "version": _STR,
                       "campaigns_running": _INT},
    },
    "Image": {
        "type": "object", "required": ["digest", "length", "kind", "accepted_at", "cached"],
        "properties": {"digest": _STR, "length": _INT, "kind": _STR, "accepted_at": _NUM,
                       "target": _NULLABLE_STR, "metadata_expiry": _NULLABLE_STR,
                       "cached": {"type": "boolean"},
                       "pinned_by": {"type": "array", "items": _STR},
                       "firmware_version": _INT, "security_counter": _INT,
                       "hw_classes": {"type": "array", "items": _STR}, "container": _STR},
    },
    "ImageDetail": {"allOf": [{"$ref": "#/components/schemas/Image"}, {
        "type": "object",
        "properties": {"envelope": {"type": "object"}, "envelope_error": _STR}}]},
    "ImageList": {"type": "object", "required": ["images"],
                  "properties": {"images": {"type": "array",
                                            "items": {"$ref": "#/components/schemas/Image"}}}},
    "Target": {
        "oneOf": [
            {"type": "string", "description": "DevEUI (LoRaWAN) or IEEE address (Zigbee)"},
            {"type": "object", "required": ["dev_eui"], "additionalProperties": False,
             "properties": {"dev_eui": _STR, "hw_class": _STR,
                            "security_counter": {"type": "integer", "minimum": 0},
                            "fw_version": {"type": "integer", "minimum": 0},
                            "stack": {"enum": ["unknown", "loramac_node", "lbm", "zephyr"]}}},
            {"type": "object", "required": ["ieee"], "additionalProperties": False,
             "description": "a Zigbee node; fw_version: the file version it runs",
             "properties": {"ieee": _STR, "hw_class": _STR,
                            "security_counter": {"type": "integer", "minimum": 0},
                            "fw_version": {"type": "integer", "minimum": 0}}},
        ]},
    "CampaignOptions": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "region": _STR, "device_class": {"enum": ["C", "B"]}, "dr": _INT,
            "frequency": _INT, "ping_slot_periodicity": _INT, "frag_size": _INT,
            "frag_versions": {"type": "array", "items": {"enum": [1, 2]}},
            "block_ack_delay": _INT, "ack_reception": {"type": "boolean"},
            "initial_redundancy": _NUM, "max_rounds": _INT, "unicast_max_devices": _INT, "session_time_out": _INT,
            "expected_fw_version": _INT, "clock_sync_required": {"type": "boolean"},
            "reboot": {"type": "object", "additionalProperties": False,
                       "properties": {"mode": {"enum": ["countdown", "time"]},
                                      "delay": _INT, "at": _NULLABLE_INT}},
            "timeouts": {"type": "object", "additionalProperties": False,
                         "properties": {f.name: (_INT if f.name == "max_retries" else _NULLABLE_NUM)
                                        for f in dataclasses.fields(Timeouts)}},
        }},
    "ZigbeeCampaignOptions": {
        "type": "object", "additionalProperties": False,
        "description": "options of a Zigbee campaign (defaults: the service's [zigbee] section)",
        "properties": _ZIGBEE_OPTION_SCHEMAS},
    "CampaignCreate": {
        "type": "object", "required": ["image", "targets"], "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "pattern": _ID.pattern},
            "kind": {"enum": ["lorawan", "zigbee"],
                     "description": "default: zigbee for a zigbee-ota image, else lorawan"},
            "image": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
            "targets": {"type": "array", "minItems": 1,
                        "items": {"$ref": "#/components/schemas/Target"}},
            "options": {"anyOf": [{"$ref": "#/components/schemas/CampaignOptions"},
                                  {"$ref": "#/components/schemas/ZigbeeCampaignOptions"}]},
        }},
    "Campaign": {
        "type": "object",
        "required": ["id", "kind", "status", "stage", "image", "created_at", "updated_at",
                     "state_revision", "options", "counts", "devices", "refused"],
        "properties": {
            "id": _STR, "kind": _STR,
            "status": {"enum": ["draft", "running", "paused", "aborted", "completed", "failed"]},
            "stage": _NULLABLE_STR, "image": {"type": "object"},
            "created_at": _NUM, "updated_at": _NUM, "state_revision": _INT,
            "options": {"type": "object"},
            "multicast": {"type": "object", "description": "LoRaWAN campaigns"},
            "zigbee": {"type": "object", "description": "Zigbee campaigns",
                       "properties": {"notify": _STR, "started_at": _NULLABLE_NUM,
                                      "finished_at": _NULLABLE_NUM, "cancelled_at": _NULLABLE_NUM,
                                      "restarts": _INT, "blocks_served": _INT,
                                      "bytes_served": _INT,
                                      "phases": {"type": "object", "additionalProperties": _INT}}},
            "counts": {"type": "object", "additionalProperties": _INT},
            "devices": {"type": "object", "additionalProperties": {
                "type": "object", "required": ["phase", "outcome"],
                "properties": {"phase": _STR, "outcome": _NULLABLE_STR,
                               "nb_frag_received": _NULLABLE_INT,
                               "missing_frag": _NULLABLE_INT,
                               "offset": _NULLABLE_INT, "image_size": _NULLABLE_INT,
                               "progress": _NUM, "blocks_served": _NULLABLE_INT,
                               "current_file_version": _NULLABLE_INT,
                               "device_class": _NULLABLE_STR, "reason": _NULLABLE_STR}}},
            "refused": {"type": "object", "additionalProperties": {
                "type": "array", "items": {"type": "object", "required": ["reason", "detail"],
                                           "properties": {"reason": _STR, "detail": _STR}}}},
        }},
    "CampaignList": {"type": "object", "required": ["campaigns"], "properties": {
        "campaigns": {"type": "array", "items": {
            "type": "object", "required": ["id", "kind", "status", "image"],
            "properties": {"id": _STR, "kind": _STR, "status": _STR, "image": _STR,
                           "created_at": _NUM, "updated_at": _NUM, "targets": _INT}}}}},
    "Node": {
        "type": "object", "required": ["id", "kind", "campaigns"],
        "properties": {"id": _STR, "kind": _STR, "hw_class": _NULLABLE_STR,
                       "fw_version": _NULLABLE_INT, "security_counter": _NULLABLE_INT,
                       "battery": _NULLABLE_NUM, "last_seen": _NULLABLE_NUM,
                       "rx_meta": {"type": "object"},
                       "campaigns": {"type": "array", "items": {"type": "object"}}}},
    "NodeList": {"type": "object", "required": ["nodes"], "properties": {
        "nodes": {"type": "array", "items": {"type": "object", "required": ["id", "kind"]}}}},
    "NodeHistory": {"type": "object", "required": ["node", "events"], "properties": {
        "node": _STR,
        "events": {"type": "array", "items": {
            "type": "object", "required": ["id", "time", "event", "details"],
            "properties": {"id": _INT, "time": _NUM, "event": _STR,
                           "campaign": _NULLABLE_STR, "details": {"type": "object"}}}}}},
}

_STATUS_TEXT = {200: "OK", 201: "Created", 400: "Bad request", 401: "Missing or wrong bearer token",
                404: "Not found", 409: "Conflict with the resource's state",
                413: "Body too large", 422: "Invalid field value", 503: "ChirpStack unavailable"}


def openapi_document(*, reads_need_token: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document of :data:`ROUTES`."""
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        op: dict[str, Any] = {"operationId": r.name, "summary": r.summary, "tags": [r.tag]}
        if r.params:
            op["parameters"] = [dict(p) for p in r.params]
        if r.body is not None:
            op["requestBody"] = {
                "required": r.body != "Empty",
                "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{r.body}"}}}}
        responses: dict[str, Any] = {}
        for status, schema in sorted(r.responses.items()):
            resp: dict[str, Any] = {"description": _STATUS_TEXT.get(status, str(status))}
            if schema is not None:
                resp["content"] = {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{schema}"}}}
            else:
                resp["content"] = {"application/json": {"schema": {"type": "object"}}}
            responses[str(status)] = resp
        op["responses"] = responses
        if r.mutation or (reads_need_token and r.name != "health"):
            op["security"] = [{"bearerAuth": []}]
        else:
            op["security"] = [{}]
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "proxyota gateway API", "version": proxyota.__version__,
                 "description": "Images, LoRaWAN FUOTA and Zigbee OTA campaigns, and nodes of a "
                                "proxyota gateway. "
                                "Mutations need `Authorization: Bearer <token>`."},
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


# ----------------------------------------------------------------------------- helpers


def _error(status: int, message: str, field_name: str | None = None,
           details: Any = None) -> web.Response:
    body = {"error": {"status": status, "message": message, "field": field_name,
                      "details": details}}
    headers = {"WWW-Authenticate": 'Bearer realm="proxyota"'} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def _json_body(request: web.Request, *, allow_empty: bool) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"the body is larger than {request.app[SETTINGS_KEY]['max_body']} bytes")
    if not raw.strip():
        if allow_empty:
            return {}
        raise ApiError(400, "the request needs a JSON body")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None


def _authorized(request: web.Request) -> bool:
    token: str = request.app[SETTINGS_KEY]["token"]
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        # compare anyway so a missing header costs what a wrong one does
        hmac.compare_digest(token.encode(), b"\0" * len(token))
        return False
    return hmac.compare_digest(token.encode(), given.strip().encode())


# ----------------------------------------------------------------------------- handlers


class _Handlers:
    def __init__(self, runner: CampaignRunner, catalog: ImageCatalog,
                 reads_need_token: bool) -> None:
        self.runner = runner
        self.catalog = catalog
        self.document = openapi_document(reads_need_token=reads_need_token)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": proxyota.__version__,
                                  "campaigns_running": len(self.runner.active)})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(self.document)

    async def list_images(self, request: web.Request) -> web.Response:
        return web.json_response({"images": await self.catalog.list()})

    async def get_image(self, request: web.Request) -> web.Response:
        digest = request.match_info["digest"]
        if not _DIGEST.match(digest):
            raise ApiError(404, f"unknown image {digest!r}", field="digest")
        try:
            return web.json_response(await self.catalog.inspect(digest.lower()))
        except UnknownImage:
            raise ApiError(404, f"unknown image {digest.lower()}", field="digest") from None

    async def list_campaigns(self, request: web.Request) -> web.Response:
        return web.json_response({"campaigns": await self.runner.list()})

    async def create_campaign(self, request: web.Request) -> web.Response:
        body = await _json_body(request, allow_empty=False)
        view = await self.runner.create(body)
        return web.json_response(view, status=201,
                                 headers={"Location": f"/campaigns/{view['id']}"})

    async def get_campaign(self, request: web.Request) -> web.Response:
        return web.json_response(await self.runner.view(request.match_info["id"]))

    async def _lifecycle(self, request: web.Request,
                         op: Callable[[str], Awaitable[dict[str, Any]]]) -> web.Response:
        body = await _json_body(request, allow_empty=True)
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be empty or a JSON object")
        if body:
            raise ApiError(422, "this request takes no fields", field=sorted(body)[0])
        return web.json_response(await op(request.match_info["id"]))

    async def start_campaign(self, request: web.Request) -> web.Response:
        return await self._lifecycle(request, self.runner.start)

    async def pause_campaign(self, request: web.Request) -> web.Response:
        return await self._lifecycle(request, self.runner.pause)

    async def resume_campaign(self, request: web.Request) -> web.Response:
        return await self._lifecycle(request, self.runner.resume)

    async def abort_campaign(self, request: web.Request) -> web.Response:
        return await self._lifecycle(request, self.runner.abort)

    async def list_nodes(self, request: web.Request) -> web.Response:
        return web.json_response({"nodes": await self.runner.nodes()})

    async def get_node(self, request: web.Request) -> web.Response:
        return web.json_response(await self.runner.node(request.match_info["dev_eui"]))

    async def node_history(self, request: web.Request) -> web.Response:
        campaign = request.query.get("campaign")
        if campaign is not None and not _ID.match(campaign):
            raise ApiError(400, "must be a campaign id", field="campaign")
        limit_text = request.query.get("limit")
        limit = None
        if limit_text is not None:
            if not limit_text.isdigit() or int(limit_text) > 10000:
                raise ApiError(400, "must be an integer 0..10000", field="limit")
            limit = int(limit_text)
        unknown = set(request.query) - {"campaign", "limit"}
        if unknown:
            raise ApiError(400, "unknown query parameter", field=sorted(unknown)[0])
        events = await self.runner.node_history(request.match_info["dev_eui"],
                                                campaign_id=campaign, limit=limit)
        return web.json_response({"node": request.match_info["dev_eui"].lower(), "events": events})


# ----------------------------------------------------------------------------- the app


def make_app(runner: CampaignRunner, catalog: ImageCatalog, *, token: str,
             reads_need_token: bool = False, max_body: int = 64 * 1024,
             clock: Any = None) -> web.Application:
    """The aiohttp application of the API (routes from :data:`ROUTES`).

    ``clock``: every request is handled inside its ``busy()`` (a virtual clock does not
    jump while a request, e.g. a create fetching keys from ChirpStack, is in flight)."""
    if not token:
        raise ValueError("the API needs a token")
    handlers = _Handlers(runner, catalog, reads_need_token)
    busy = clock.busy if clock is not None else contextlib.nullcontext
    mutations = {(r.method, r.path) for r in ROUTES if r.mutation}

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.monotonic()
        status = 500
        try:
            info = request.match_info.route.resource
            template = info.canonical if info is not None else request.path
            needs_token = (request.method, template) in mutations or (
                reads_need_token and template != "/health")
            if needs_token and not _authorized(request):
                response: web.StreamResponse = _error(401, "a valid bearer token is required",
                                                      "Authorization")
            else:
                try:
                    with busy():
                        response = await handler(request)
                except ApiError as exc:
                    response = _error(exc.status, exc.message, exc.field, exc.details)
                except web.HTTPException as exc:
                    if exc.status < 400:
                        raise
                    message = exc.reason or "error"
                    if exc.status == 413:
                        message = f"the body is larger than {max_body} bytes"
                    response = _error(exc.status, message, None)
                    if exc.status == 405:
                        response.headers["Allow"] = exc.headers.get("Allow", "")
            status = response.status
            return response
        except Exception:
            log.exception("API handler failed", extra={"method": request.method,
                                                       "path": request.path})
            return _error(500, "internal error (see the service log)")
        finally:
            log.info("api request", extra={"method": request.method, "path": request.path,
                                           "status": status,
                                           "ms": round((time.monotonic() - started) * 1000, 1)})

    app = web.Application(middlewares=[middleware], client_max_size=max_body)
    app[RUNNER_KEY] = runner
    app[CATALOG_KEY] = catalog
    app[SETTINGS_KEY] = {"token": token, "max_body": max_body}
    for r in ROUTES:
        app.router.add_route(r.method, r.path, getattr(handlers, r.name), name=r.name)
    return app
