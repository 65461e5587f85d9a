"""The daemon: wires the store, image cache + TUF intake, ChirpStack client, integration
receiver, Zigbee coordinator radio, campaign runner and HTTP API from a
:class:`ServiceConfig`, and shuts down cleanly.

Start order: store (migrated) -> [emulator: integration receiver, emulated world] -> image
cache -> catalogue (intake) -> ChirpStack client -> [zigbee: the coordinator radio (zigpy
application) and the Zigbee nodes it knows into the inventory] -> runner, which resumes
the campaigns that were running (from their saved state) -> the integration receiver ->
the API -> the intake polling loop. A radio that cannot be opened stops the start with an
error naming the device (``proxyota serve`` exits 1).

Stop (SIGTERM / SIGINT, :meth:`Service.request_stop`): stop accepting (API and
integration listeners close; requests in flight complete), stop every campaign driver
between two steps (the step in flight finishes, its state is already saved; Zigbee
campaigns leave zigpy's receive path), shut the Zigbee radio down, stop the intake loop,
flush and close the store, close the gRPC channel; ``run()`` then returns and the process
exits 0. A ``kill -9`` at any point loses nothing that was acknowledged: the
next start resumes every running campaign from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

from aiohttp import web

from proxyota.chirpstack.client import ChirpStackClient
from proxyota.chirpstack.integration import IntegrationReceiver
from proxyota.images.cache import ImageCache
from proxyota.images.intake import Intake
from proxyota.images.signing import load_public_key
from proxyota.service.api import make_app
from proxyota.service.config import ServiceConfig
from proxyota.service.images import ImageCatalog
from proxyota.service.runner import CampaignRunner, load_device_keys_file
from proxyota.service.zigbee import ZigbeeCampaigns
from proxyota.service.zigbee_radio import ZigbeeRadio
from proxyota.store import SqliteStore

__all__ = ["Service"]

log = logging.getLogger("proxyota.service")


class Service:
    """One gateway service instance (``await Service(config).run()``)."""

    def __init__(self, config: ServiceConfig, *, clock: Any = None) -> None:
        self.config = config
        #: the configured clock; tests may inject another (e.g. a virtual clock)
        self.clock = clock if clock is not None else config.service.clock.build()
        self.store: SqliteStore | None = None
        self.cache: ImageCache | None = None
        self.catalog: ImageCatalog | None = None
        self.client: ChirpStackClient | None = None
        self.runner: CampaignRunner | None = None
        self.radio: ZigbeeRadio | None = None  #: the Zigbee coordinator ([zigbee] enabled)
        self.receiver: IntegrationReceiver | None = None
        self.api_runner: web.AppRunner | None = None
        self.api_url: str | None = None
        self.integration_url: str | None = None
        self._stop = asyncio.Event()
        self._intake_stop = asyncio.Event()
        self._intake_task: asyncio.Task | None = None
        self._started = False
        self.world: Any = None  #: the in-process emulated world ([emulator] configs)

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        cfg = self.config
        db = cfg.service.state_db
        if db.parent and str(db.parent) not in ("", "."):
            db.parent.mkdir(parents=True, exist_ok=True)
        if not db.exists():  # created 0600 (SQLite gives its WAL files the same mode)
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
        with contextlib.suppress(OSError):
            os.chmod(db, 0o600)  # it holds device root keys and multicast keys
        self.store = SqliteStore(db, clock=self.clock.now)
        await self.store.open()
        try:
            await self._start_rest()
        except BaseException:
            await self.stop()
            raise
        self._started = True

    async def _on_event(self, event: Any) -> None:
        if self.runner is not None:
            await self.runner.on_event(event)

    async def _start_rest(self) -> None:
        cfg = self.config
        images = cfg.images
        cs = cfg.chirpstack
        assert self.store is not None
        if cfg.emulator is not None:
            # the receiver first: the emulated ChirpStack needs its URL
            from proxyota.service.emulated import EmulatedWorld

            self.receiver = IntegrationReceiver(self._on_event, clock=self.clock)
            listen = cfg.emulator_integration
            self.integration_url = await self.receiver.start(listen.host, listen.port)
            self.world = EmulatedWorld(cfg.emulator)
            await self.world.start(self.clock, self.integration_url)
            await self.world.seed_nodes(self.store)
            metadata_url, targets_url = self.world.metadata_url, self.world.targets_url
            trusted_root = self.world.trusted_root_path.read_bytes()
            key_paths: tuple[Path, ...] = self.world.vendor_key_paths
            classes: tuple[str, ...] = self.world.hw_classes
            server, token, application_id = (self.world.server_address, self.world.api_token,
                                             self.world.application_id)
        else:
            assert images.trusted_root is not None and images.metadata_url and images.targets_url
            metadata_url, targets_url = images.metadata_url, images.targets_url
            trusted_root = images.trusted_root.read_bytes()
            key_paths, classes = images.vendor_keys, images.hardware_classes
            server = cs.server if cs else ""
            token = cs.api_token.reveal() if cs else ""
            application_id = cs.application_id if cs else None
        self.cache = ImageCache(images.cache_dir, images.cache_max_bytes)
        vendor_keys = [load_public_key(p) for p in key_paths]
        intake = Intake(images.metadata_dir, metadata_url, targets_url, trusted_root, self.cache,
                        classes, vendor_keys=vendor_keys)
        self.catalog = ImageCatalog(self.store, self.cache, vendor_keys, intake=intake,
                                    refresh_interval=images.refresh_interval,
                                    clock=self.clock.now)
        device_keys = None
        if server:
            root = cs.ca_cert.read_bytes() if cs is not None and cs.ca_cert is not None else None
            self.client = ChirpStackClient(server, token, clock=self.clock,
                                           tls=cs.tls if cs else False, root_certificates=root,
                                           timeout=cs.timeout if cs else 10.0)
            if cs is not None and cs.device_keys == "file":
                assert cs.device_keys_file is not None
                device_keys = load_device_keys_file(cs.device_keys_file)
        zigbee = None
        if cfg.zigbee.enabled:
            network = self.world.zigbee_network if self.world is not None else None
            self.radio = ZigbeeRadio(cfg.zigbee, network=network)
            await self.radio.open()
            zigbee = ZigbeeCampaigns(self.radio, self.store, self.catalog, self.clock,
                                     defaults=cfg.zigbee.defaults)
            await zigbee.sync_inventory()
        self.runner = CampaignRunner(
            self.store, self.catalog, self.clock, defaults=cfg.lorawan, client=self.client,
            application_id=application_id,
            gateway_ids=cs.gateway_ids if cs else (),
            class_c_scheduling_type=cs.class_c_scheduling_type if cs else "DELAY",
            device_keys=device_keys, zigbee=zigbee)
        await self.runner.recover()
        if cs is not None:
            headers = {"Authorization": cs.integration_auth.reveal()} if cs.integration_auth else None
            self.receiver = IntegrationReceiver(self._on_event, clock=self.clock,
                                                path=cs.integration_path, required_headers=headers)
            self.integration_url = await self.receiver.start(cs.integration_listen.host,
                                                             cs.integration_listen.port)
        app = make_app(self.runner, self.catalog, token=cfg.api.token.reveal(),
                       reads_need_token=cfg.api.require_token_for_reads,
                       max_body=cfg.api.max_body_bytes, clock=self.clock)
        self.api_runner = web.AppRunner(app, access_log=None, shutdown_timeout=cfg.service.shutdown_grace)
        await self.api_runner.setup()
        site = web.TCPSite(self.api_runner, cfg.api.listen.host, cfg.api.listen.port)
        await site.start()
        host, port = self.api_runner.addresses[0][:2]
        self.api_url = f"http://{f'[{host}]' if ':' in str(host) else host}:{port}"
        self._intake_task = asyncio.get_running_loop().create_task(
            self.catalog.run(self._intake_stop), name="image-intake")
        log.info("service started", extra={
            "api": self.api_url, "integration": self.integration_url,
            "state_db": str(cfg.service.state_db), "clock": cfg.service.clock.kind,
            "zigbee": None if self.radio is None else f"{cfg.zigbee.radio} on {self.radio.device}",
            "campaigns_resumed": sorted(self.runner.active)})

    # ------------------------------------------------------------------ stop

    def request_stop(self) -> None:
        self._stop.set()

    async def stop(self) -> None:
        """Stop accepting, let in-flight steps finish, flush the store, close everything."""
        log.info("service stopping")
        if self.api_runner is not None:
            await self.api_runner.cleanup()
            self.api_runner = None
        if self.receiver is not None:
            await self.receiver.stop()
            self.receiver = None
        if self.runner is not None:
            await self.runner.shutdown()
        if self.radio is not None:
            await self.radio.close()
            self.radio = None
        self._intake_stop.set()
        if self._intake_task is not None:
            try:
                await asyncio.wait_for(self._intake_task, timeout=self.config.service.shutdown_grace)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                log.warning("image intake did not stop in time")
            except Exception:  # pragma: no cover - logged by the loop already
                pass
            self._intake_task = None
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.world is not None:
            await self.world.stop()
            self.world = None
        if self.store is not None:
            await self.store.close()
            self.store = None
        if self.cache is not None:
            self.cache.close()
            self.cache = None
        log.info("service stopped")

    async def run(self) -> int:
        """Start, serve until SIGTERM / SIGINT (or :meth:`request_stop`), stop; returns 0."""
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
                installed.append(sig)
        try:
            await self.start()
            await self._stop.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            if self._started:
                await self.stop()
        return 0

    def status(self) -> dict[str, Any]:
        return {"api": self.api_url, "integration": self.integration_url,
                "running": sorted(self.runner.active) if self.runner else []}
