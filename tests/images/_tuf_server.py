"""A static HTTP server for a published TUF repository, with hooks to attack the client,
and :class:`TufWorld`: a publisher repository, that server, an image cache and intakes.

Serves ``root`` (a ``proxyota repo publish`` output: metadata/ and targets/) on 127.0.0.1
with real sockets (aiohttp), honouring ``Range: bytes=N-`` / ``N-M`` (206, 416). Every
request is recorded (path, Range header, bytes sent). Hooks replace the answer for paths
matching a predicate, for a number of requests: serve other bytes (tamper, old metadata),
break the connection after N bytes, or stream endless data.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from proxyota.images import envelope
from proxyota.images.cache import ImageCache
from proxyota.images.intake import Intake
from proxyota.images.tuf_repo import TufRepository

HW = "669d8e58-f8b1-5858-826a-2ee7071abf7b"
HW_OTHER = "0b0f1c3e-0000-5000-8000-000000000001"
Handler = Callable[[web.Request, str], Awaitable[web.StreamResponse]]
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Request:
    path: str
    range: str | None
    sent: int = 0


@dataclass
class _Hook:
    match: Callable[[str], bool]
    handler: Handler
    times: int | None  # None: for ever


class RepoServer:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.requests: list[Request] = []
        self._hooks: list[_Hook] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def metadata_url(self) -> str:
        return f"{self.base_url}/metadata/"

    @property
    def targets_url(self) -> str:
        return f"{self.base_url}/targets/"

    # -- inspection --------------------------------------------------------------------

    def requests_for(self, pred: Callable[[str], bool]) -> list[Request]:
        return [r for r in self.requests if pred(r.path)]

    def bytes_sent(self, pred: Callable[[str], bool]) -> int:
        return sum(r.sent for r in self.requests_for(pred))

    # -- hooks -------------------------------------------------------------------------

    def hook(self, match: Callable[[str], bool], handler: Handler, times: int | None = None) -> None:
        self._hooks.append(_Hook(match, handler, times))

    def serve_bytes(self, match: Callable[[str], bool], data_for: Callable[[str], bytes],
                    times: int | None = None) -> None:
        """Answer with ``data_for(path)`` instead of the file (tampering, old metadata)."""
        async def handler(request: web.Request, path: str) -> web.StreamResponse:
            return await self._send(request, path, data_for(path))
        self.hook(match, handler, times)

    def break_after(self, match: Callable[[str], bool], n: int, times: int = 1) -> None:
        """Announce the full length, send ``n`` bytes, then drop the connection."""
        async def handler(request: web.Request, path: str) -> web.StreamResponse:
            data = self._file(path)
            if data is None:
                return web.Response(status=404)
            start = self._range_start(request)
            body = data[start:]
            resp = web.StreamResponse(status=206 if start else 200)
            resp.content_length = len(body)
            if start:
                resp.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            await resp.prepare(request)
            await resp.write(body[:n])
            self.requests[-1].sent += min(n, len(body))
            assert request.transport is not None
            request.transport.close()
            return resp
        self.hook(match, handler, times)

    def endless(self, match: Callable[[str], bool], chunk: bytes = b"\0" * 65536,
                cap: int = 256 * 1024 * 1024) -> None:
        """Stream data for ever (up to ``cap`` bytes, a safety net for the test itself)."""
        async def handler(request: web.Request, path: str) -> web.StreamResponse:
            resp = web.StreamResponse(status=200)
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            sent = 0
            try:
                while sent < cap:
                    await resp.write(chunk)
                    sent += len(chunk)
                    self.requests[-1].sent = sent
            except (ConnectionError, RuntimeError):
                pass
            return resp
        self.hook(match, handler)

    def clear_hooks(self) -> None:
        self._hooks.clear()

    # -- serving -----------------------------------------------------------------------

    def _file(self, path: str) -> bytes | None:
        p = (self.root / path).resolve()
        if self.root.resolve() not in p.parents or not p.is_file():
            return None
        return p.read_bytes()

    @staticmethod
    def _range_start(request: web.Request) -> int:
        m = _RANGE.match(request.headers.get("Range", ""))
        return int(m.group(1)) if m else 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["tail"]
        self.requests.append(Request(path, request.headers.get("Range")))
        for hook in self._hooks:
            if hook.match(path) and (hook.times is None or hook.times > 0):
                if hook.times is not None:
                    hook.times -= 1
                return await hook.handler(request, path)
        data = self._file(path)
        if data is None:
            return web.Response(status=404)
        return await self._send(request, path, data)

    async def _send(self, request: web.Request, path: str, data: bytes) -> web.StreamResponse:
        header = request.headers.get("Range")
        if header:
            m = _RANGE.match(header)
            if not m:
                return web.Response(status=416)
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            if start >= len(data):
                return web.Response(status=416,
                                    headers={"Content-Range": f"bytes */{len(data)}"})
            end = min(end, len(data) - 1)
            body = data[start:end + 1]
            self.requests[-1].sent += len(body)
            return web.Response(status=206, body=body, headers={
                "Content-Range": f"bytes {start}-{end}/{len(data)}",
                "Accept-Ranges": "bytes"})
        self.requests[-1].sent += len(data)
        return web.Response(body=data, headers={"Accept-Ranges": "bytes"})


def is_target(path: str) -> bool:
    return path.startswith("targets/")


class TufWorld:
    """Publisher repository + HTTP server on its published output + cache + intake factory."""

    def __init__(self, tmp: Path, vendor_key, **init_kw) -> None:
        self.tmp = tmp
        self.vendor = vendor_key
        self.repo = TufRepository.init(tmp / "repo", **init_kw)
        self.www = tmp / "www"
        self.repo.publish(self.www)
        self.server = RepoServer(self.www)
        self.cache = ImageCache(tmp / "cache", 64 * 1024 * 1024)
        self.trusted_root = self.repo.metadata_bytes("root", 1)

    async def __aenter__(self) -> TufWorld:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()
        self.cache.close()

    def envelope(self, *, hw: str = HW, counter: int = 1, version: int = 1,
                 size: int = 2000, seed: int = 0, base: bytes | None = None) -> bytes:
        payload = bytes((i * 131 + seed * 7 + (i >> 8)) & 0xFF for i in range(size))
        return envelope.build(payload, hw_class=hw, firmware_version=version,
                              security_counter=counter, private_key=self.vendor,
                              base_digest=base)

    def add_and_publish(self, name: str, data: bytes, **kw) -> bytes:
        self.repo.add_target(data, name, **kw)
        self.repo.sign()
        self.repo.publish(self.www)
        return data

    def intake(self, classes=(HW,), *, state: str = "client", **kw) -> Intake:
        kw.setdefault("vendor_keys", [self.vendor.public_key()])
        kw.setdefault("retry_delay", 0)
        return Intake(self.tmp / state, self.server.metadata_url, self.server.targets_url,
                      self.trusted_root, self.cache, classes, **kw)
