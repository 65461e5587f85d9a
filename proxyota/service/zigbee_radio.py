"""The service's Zigbee coordinator: the zigpy ``ControllerApplication`` opened from
``[zigbee]`` at start and shut down at stop, and what the service reads from zigpy about
the nodes (inventory, link quality, whether a node is known at all).

Radios: a real coordinator through its zigpy radio library (``ezsp`` = bellows by
default; ``znp``, ``deconz``, ``zigate``, ``xbee`` when installed), opened the way zigpy's
users do it, through :func:`~proxyota.zigbee.zigpy_adapter.open_radio` (the network must
be formed already; zigpy's own OTA providers stay off; a radio that does not start within
``open_timeout`` is shut down again), with its device database in ``database``.
``device = "auto"`` picks the one serial port whose USB fingerprint looks like that radio
type (what ``proxyota radios list`` shows); none or several is an error naming the
candidates. ``radio = "emulated"``: the in-process emulated mesh of ``radio_emulators``
(the network object handed over by the ``[emulator.zigbee]`` world, or one registered in
this process as ``device = "emulated:NAME"``), its nodes known to zigpy as from a
database.

A radio that cannot be opened raises :class:`RadioError` naming the radio type and the
device, and the service does not start (``proxyota serve`` exits 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from proxyota.errors import InvalidArgument, ProxyotaError
from proxyota.zigbee.zigpy_adapter import (
    DEFAULT_APS_MAX_PAYLOAD,
    RadioConfig,
    device_class_of,
    open_radio,
)

__all__ = ["EMULATED", "RadioError", "ZigbeeRadio", "discover_port"]

log = logging.getLogger("proxyota.service.zigbee")

#: the radio type of the in-process emulated mesh
EMULATED = "emulated"
EMULATED_PREFIX = "emulated:"


class RadioError(ProxyotaError):
    """The Zigbee radio could not be opened (the message names the device)."""


def discover_port(radio: str, ports: list[dict[str, Any]] | None = None) -> str:
    """The serial port of the one attached stick that looks like a ``radio`` coordinator
    (its stable /dev/serial/by-id path when there is one); :class:`RadioError` otherwise."""
    if ports is None:
        from proxyota.cli.radios import list_radios

        ports = list_radios()
    found = [p for p in ports if p.get("radio") == radio]
    if len(found) == 1:
        p = found[0]
        return str(p["by_id"][0] if p.get("by_id") else p["port"])
    seen = ", ".join(f"{p['port']} ({p.get('adapter') or p.get('vid_pid') or 'unknown'})"
                     for p in ports) or "no USB serial port"
    if not found:
        raise RadioError(f"[zigbee] device = \"auto\": no serial port looks like a {radio!r} "
                         f"coordinator (found: {seen}); set [zigbee] device to its port "
                         "(see 'proxyota radios list')")
    raise RadioError(f"[zigbee] device = \"auto\": several ports look like a {radio!r} "
                     f"coordinator ({', '.join(str(p['port']) for p in found)}); set [zigbee] "
                     "device to one of them")


class ZigbeeRadio:
    """The coordinator of ``config`` (a :class:`~proxyota.service.config.ZigbeeConfig`);
    ``network``: the emulated mesh to use with ``radio = "emulated"``."""

    def __init__(self, config: Any, *, network: Any = None) -> None:
        self.config = config
        self.network = network
        self.app: Any = None
        self.aps_max_payload = int(getattr(config, "aps_max_payload", DEFAULT_APS_MAX_PAYLOAD))
        self.device: str = str(config.device)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> Any:
        """Start the radio; returns the zigpy application."""
        cfg = self.config
        if cfg.radio == EMULATED:
            self.app = await self._open_emulated()
        else:
            port = discover_port(cfg.radio) if cfg.device == "auto" else cfg.device
            self.device = port
            try:
                radio = RadioConfig(port=port, radio=cfg.radio, baudrate=cfg.baudrate,
                                    flow_control=cfg.flow_control,
                                    database=None if cfg.database is None else str(cfg.database),
                                    aps_max_payload=cfg.aps_max_payload)
            except InvalidArgument as exc:
                raise RadioError(f"Zigbee radio {cfg.radio} on {port}: {exc}") from None
            if cfg.database is not None:
                Path(cfg.database).parent.mkdir(parents=True, exist_ok=True)
            try:
                self.app, self.aps_max_payload = await open_radio(radio, timeout=cfg.open_timeout)
            except asyncio.TimeoutError:
                raise RadioError(f"cannot open the Zigbee radio {cfg.radio!r} on {port}: no answer "
                                 f"within {cfg.open_timeout:g} s (wrong port, baudrate or flow "
                                 "control, or another program holds it?)") from None
            except InvalidArgument as exc:
                raise RadioError(f"cannot open the Zigbee radio {cfg.radio!r} on {port}: {exc}") from None
            except Exception as exc:  # serial, radio library and zigpy errors alike
                raise RadioError(f"cannot open the Zigbee radio {cfg.radio!r} on {port}: "
                                 f"{type(exc).__name__}: {exc}") from None
        log.info("zigbee radio open", extra={"radio": cfg.radio, "device": self.device,
                                             "devices": len(self.app.devices),
                                             "aps_max_payload": self.aps_max_payload})
        return self.app

    async def _open_emulated(self) -> Any:
        from radio_emulators.zigbee.radio import EmulatedControllerApplication, emulated_config

        device = self.device
        if self.network is None and not device.startswith(EMULATED_PREFIX):
            raise RadioError(f"[zigbee] device {device!r}: the emulated radio needs "
                             f"'{EMULATED_PREFIX}NAME' (a mesh registered in this process) or "
                             "the [emulator.zigbee] table")
        name = device[len(EMULATED_PREFIX):] if device.startswith(EMULATED_PREFIX) else "service"
        network = self.network
        if network is None:
            from radio_emulators.zigbee.network import lookup_network

            try:
                network = lookup_network(name)
            except LookupError as exc:
                raise RadioError(f"cannot open the emulated Zigbee radio {device!r}: {exc}") from None
        app = EmulatedControllerApplication(emulated_config(name), network=network)
        try:
            await app.startup()
        except Exception as exc:
            raise RadioError(f"cannot open the emulated Zigbee radio {device!r}: {exc}") from None
        app.add_emulated_devices()  # zigpy knows the joined nodes, as from its database
        self.aps_max_payload = network.mesh.config.max_aps_payload
        return app

    async def close(self) -> None:
        app, self.app = self.app, None
        if app is None:
            return
        quiet = logging.getLogger("zigpy")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # zigpy logs the handler tasks shutdown cancels
        try:
            await app.shutdown()
        except Exception as exc:  # the radio may be gone already
            log.warning("zigbee radio shutdown failed: %s", exc)
        finally:
            quiet.setLevel(level)
        log.info("zigbee radio closed", extra={"device": self.device})

    # ------------------------------------------------------------------ what zigpy knows

    def zigpy_device(self, ieee: str) -> Any | None:
        if self.app is None:
            return None
        import zigpy.types as zt

        with contextlib.suppress(KeyError, ValueError):
            return self.app.get_device(ieee=zt.EUI64.convert(ieee))
        return None

    def knows(self, ieee: str) -> bool:
        return self.zigpy_device(ieee) is not None

    def node_meta(self, ieee: str) -> dict[str, Any]:
        """What zigpy knows of a node's link and identity (for its node record)."""
        device = self.zigpy_device(ieee)
        if device is None:
            return {}
        meta: dict[str, Any] = {"nwk": f"0x{int(device.nwk):04x}"}
        for name in ("lqi", "rssi"):
            value = getattr(device, name, None)
            if value is not None:
                meta[name] = int(value)
        relays = getattr(device, "relays", None)
        if relays is not None:
            meta["hops"] = len(relays) + 1
        for name in ("manufacturer", "model"):
            value = getattr(device, name, None)
            if value:
                meta[name] = str(value)
        device_class = device_class_of(device)
        if device_class is not None:
            meta["device_class"] = device_class
        return meta

    def inventory(self) -> dict[str, tuple[int | None, dict[str, Any]]]:
        """Every node zigpy knows (the coordinator left out): IEEE -> (the OTA cluster's
        current file version if zigpy has it cached, :meth:`node_meta`)."""
        out: dict[str, tuple[int | None, dict[str, Any]]] = {}
        if self.app is None:
            return out
        for ieee, device in list(self.app.devices.items()):
            if int(device.nwk) == 0x0000:
                continue
            version = None
            for ep_id, ep in getattr(device, "endpoints", {}).items():
                if ep_id == 0:
                    continue
                cluster = getattr(ep, "out_clusters", {}).get(0x0019)
                cached = None
                if cluster is not None:
                    with contextlib.suppress(Exception):  # zigpy's attribute cache
                        cached = cluster.get(0x0002)  # current_file_version
                if isinstance(cached, int) and not isinstance(cached, bool):
                    version = int(cached)
            out[str(ieee)] = (version, self.node_meta(str(ieee)))
        return out
