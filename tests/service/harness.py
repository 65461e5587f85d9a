"""Test harness for the service: a published TUF repository served over loopback, an
emulated LoRaWAN network + ChirpStack, service configurations, and the service either
in-process (sharing a VirtualClock) or as a ``proxyota serve`` subprocess (sharing
wall-clock-scaled emulated time through :class:`ScaledClock`).

:class:`ScaledClock` here is the emulator side's own copy of the service's
``proxyota.service.scaled_clock.ScaledClock`` (same formula, written separately: the
emulated network must not import proxyota).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import aiohttp

from proxyota.images import envelope
from proxyota.images.signing import generate_key, public_key_pem
from proxyota.images.tuf_repo import TufRepository
from radio_emulators.lorawan.campaign import CampaignNetwork, build_campaign_network
from radio_emulators.lorawan.chirpstack import EmulatedChirpStack
from radio_emulators.lorawan.firmware import DigestImageVerifier
from tests.images._tuf_server import RepoServer

T0 = 1_400_000_000.0
APP_ID = str(uuid.UUID(int=0x1234))
CS_TOKEN = "chirpstack-token-3f9a1c77e2b54d08"
API_TOKEN = "api-token-6b1e0d2c9a8f4e37"
HW = "669d8e58-f8b1-5858-826a-2ee7071abf7b"
OLD_FW = 0x0001_0000
NEW_FW = 0x0002_0000
ENV = {"PROXYOTA_API_TOKEN": API_TOKEN, "CHIRPSTACK_API_TOKEN": CS_TOKEN}
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}

#: campaign options that keep a 10-device campaign short in emulated time and robust to
#: a service that is down for a few hundred emulated seconds
CAMPAIGN_OPTIONS = {
    "timeouts": {"answer": 120.0, "max_retries": 8, "setup_window": 900.0,
                 "boot_margin": 60.0},
    "reboot": {"mode": "countdown", "delay": 30},
    # repair by multicast only: a unicast repair queued for a device that completes
    # meanwhile delays its TS006 reboot request behind the queued fragments (reported)
    "unicast_max_devices": 0,
}


class ScaledClock:
    """Emulated GPS time = origin_gps + max(0, time.time() - origin_unix) * rate (the
    emulator's copy), plus :meth:`hold_then_restart`: emulated time runs on up to a value,
    stands there, and restarts at a real time from it, which a restarted service is told
    as its new origin (so both sides keep the same time)."""

    def __init__(self, origin_unix: float, origin_gps: float, rate: float) -> None:
        self.origin_unix, self.origin_gps, self.rate = origin_unix, origin_gps, rate
        self._hold: tuple[float, float] | None = None  # (hold value, real release time)

    def _linear(self, wall: float) -> float:
        return self.origin_gps + max(0.0, wall - self.origin_unix) * self.rate

    def now(self) -> float:
        wall = time.time()
        if self._hold is not None:
            value, release = self._hold
            if wall < release:
                return min(self._linear(wall), value)
            self.origin_unix, self.origin_gps, self._hold = release, value, None
        return self._linear(wall)

    def hold_then_restart(self, value: float, release: float) -> None:
        """Run on until emulated ``value``, stand there, run again from real ``release``."""
        assert value >= self.now()
        self._hold = (value, release)

    async def sleep_until(self, t: float) -> None:
        while (left := t - self.now()) > 0:
            await asyncio.sleep(max(left / self.rate, 0.005 if self._hold else 0.0))
        await asyncio.sleep(0)

    async def sleep(self, dt: float) -> None:
        await self.sleep_until(self.now() + max(0.0, dt))

    @contextmanager
    def busy(self) -> Iterator[None]:
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- TUF repo


@dataclass
class Repo:
    server: RepoServer
    url: str
    trusted_root: Path
    vendor_pub: Path
    image: bytes
    digest: str


async def make_repo(tmp: Path, *, version: int = NEW_FW, counter: int = 2, size: int = 1500,
                    seed: int = 3) -> Repo:
    """A TUF repository publishing one signed envelope, served on 127.0.0.1."""
    vendor = generate_key()
    pub = tmp / "vendor.pub"
    pub.write_bytes(public_key_pem(vendor))
    repo = TufRepository.init(tmp / "repo")
    payload = bytes((i * 131 + seed * 7 + (i >> 8)) & 0xFF for i in range(size))
    image = envelope.build(payload, hw_class=HW, firmware_version=version,
                           security_counter=counter, private_key=vendor)
    repo.add_target(image, "fw/app-2.0.0.bin")
    repo.sign()
    www = tmp / "www"
    repo.publish(www)
    root = tmp / "root.json"
    root.write_bytes(repo.metadata_bytes("root", 1))
    server = RepoServer(www)
    url = await server.start()
    return Repo(server, url + "/", root, pub, image, hashlib.sha256(image).hexdigest())


# ----------------------------------------------------------------------------- network


def build_network(clock: Any, n: int, image: bytes, *, seed: int = 1,
                  uplink_period: float = 30.0, **kw: Any) -> CampaignNetwork:
    """N emulated devices running OLD_FW that accept exactly ``image`` as NEW_FW."""
    verifier = DigestImageVerifier(1, {hashlib.sha256(image).digest(): NEW_FW})
    return build_campaign_network(n, seed=seed, start=clock.now(), uplink_period=uplink_period,
                                  image_verifier=verifier, fw_version=OLD_FW, **kw)


def chirpstack(clock: Any, cn: CampaignNetwork, integration_port: int,
               **kw: Any) -> EmulatedChirpStack:
    return EmulatedChirpStack(cn.network, clock, api_token=CS_TOKEN,
                              integration_url=f"http://127.0.0.1:{integration_port}/integration",
                              application_id=APP_ID, device_keys=cn.keys, seed=7, **kw)


def targets(cn: CampaignNetwork, **facts: Any) -> list[dict[str, Any]]:
    base = {"hw_class": HW, "security_counter": 1, "fw_version": OLD_FW}
    base.update(facts)
    return [{"dev_eui": eui.hex(), **base} for eui in cn.dev_euis]


# ----------------------------------------------------------------------------- config


def service_config(tmp: Path, repo: Repo, *, cs_port: int, integration_port: int,
                   api_port: int, clock: Any = "real", lorawan: dict | None = None) -> dict:
    """A config document (as TOML would parse) for the service under test."""
    return {
        "service": {"state_db": str(tmp / "state" / "state.db"), "clock": clock,
                    "log_level": "info", "log_format": "json", "shutdown_grace": 5.0},
        "api": {"listen": f"127.0.0.1:{api_port}", "token_env": "PROXYOTA_API_TOKEN"},
        "images": {"tuf_repo_url": repo.url, "trusted_root": str(repo.trusted_root),
                   "metadata_dir": str(tmp / "state" / "tuf"),
                   "cache_dir": str(tmp / "state" / "images"),
                   "hardware_classes": [HW], "vendor_keys": [str(repo.vendor_pub)],
                   "refresh_interval": 3600.0},
        "chirpstack": {"server": f"127.0.0.1:{cs_port}", "api_token_env": "CHIRPSTACK_API_TOKEN",
                       "application_id": APP_ID,
                       "integration_listen": f"127.0.0.1:{integration_port}",
                       "timeout": 5.0},
        "lorawan": {"multicast_dr": 5, "multicast_frequency": 869_525_000,
                    **(lorawan or {})},
    }


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def write_toml(path: Path, doc: dict) -> Path:
    lines = []
    for section, table in doc.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


# ----------------------------------------------------------------------------- the API


class Api:
    """A small client of the service's HTTP API."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "Api":
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.session is not None
        await self.session.close()

    async def call(self, method: str, path: str, body: Any = None, *, auth: bool = True,
                   headers: dict | None = None, raw: bytes | None = None) -> tuple[int, Any]:
        assert self.session is not None
        h = dict(AUTH if auth else {})
        h.update(headers or {})
        kw: dict[str, Any] = {"headers": h}
        if raw is not None:
            kw["data"] = raw
        elif body is not None:
            kw["json"] = body
        async with self.session.request(method, self.base + path, **kw) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text) if text else None
            except ValueError:
                return resp.status, text

    async def get(self, path: str, **kw: Any) -> Any:
        status, body = await self.call("GET", path, **kw)
        assert status == 200, (path, status, body)
        return body

    async def post(self, path: str, body: Any = None, *, expect: int = 200) -> Any:
        status, out = await self.call("POST", path, body)
        assert status == expect, (path, status, out)
        return out


# ----------------------------------------------------------------------------- subprocess


class ServiceProcess:
    """``python -m proxyota serve --config FILE`` as a child process."""

    def __init__(self, config: Path, log: Path, env: dict[str, str]) -> None:
        self.config = config
        self.log = log
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "proxyota", "serve", "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.starts += 1

    async def wait_ready(self, api: Api, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited with {self.proc.returncode}:\n"
                                     + self.log.read_text()[-3000:])
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                status, _ = await api.call("GET", "/health", auth=False)
                if status == 200:
                    return
            await asyncio.sleep(0.05)
        raise AssertionError("service did not become ready:\n" + self.log.read_text()[-3000:])

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, 10)

    async def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, timeout)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
