"""The service's TOML configuration, validated at start with errors that name the key.

``load_config(path)`` reads the file, checks every section and key (unknown keys are
errors, with a suggestion), resolves secrets from environment variables (never from the
file itself), registers them with the log redactor and returns a frozen
:class:`ServiceConfig`. A bad file raises :class:`ConfigError`:
``configs/x.toml: [api] listen: must be HOST:PORT, got '8080'``. Relative paths are taken
from the current directory. Sections::

    [service]     state_db, clock ("real" | {scaled, origin_unix, origin_gps}),
                  log_level, log_format ("json" | "text"), shutdown_grace
    [api]         listen, token_env, require_token_for_reads, max_body_bytes
    [images]      tuf_repo_url (or metadata_url + targets_url), trusted_root,
                  metadata_dir, cache_dir, cache_max_bytes, hardware_classes,
                  vendor_keys, refresh_interval
    [chirpstack]  server, tls, ca_cert, api_token_env, application_id,
                  integration_listen, integration_path, integration_auth_env,
                  gateway_ids, class_c_scheduling_type, device_keys ("chirpstack" |
                  "file"), device_keys_file, timeout
    [lorawan]     campaign defaults (see :mod:`proxyota.service.options`; ``multicast_dr``
                  and ``multicast_frequency`` name the multicast DR / frequency), with
                  [lorawan.timeouts] and [lorawan.reboot]
    [zigbee]      enabled, radio ("ezsp" | "znp" | "deconz" | "zigate" | "xbee", each
                  only when its zigpy radio library is installed; "emulated": an
                  in-process mesh), device (serial port, "socket://host:port", "auto"
                  = the one stick that looks like that radio type, "emulated:NAME"),
                  baudrate, flow_control ("none" | "hardware" | "software"), database
                  (zigpy's device database; default zigbee.db next to state_db),
                  aps_max_payload, open_timeout, and the Zigbee campaign defaults of
                  :mod:`proxyota.service.zigbee_options` (max_concurrent, max_retries,
                  notify, upgrade_delay, ..., with [zigbee.device_classes.<class>]
                  stall_timeout, verify_timeout, notify_interval, max_notifies)
    [emulator]    repo_dir, devices, seed, uplink_period, downlink_loss, uplink_loss,
                  profiles, image_size, old_version, new_version, security_counter,
                  integration_listen: run against an in-process emulated network and
                  demo repository (:mod:`proxyota.service.emulated`); then [chirpstack]
                  and the repository keys of [images] are absent, and [service] clock
                  may be "virtual"
    [emulator.zigbee]  nodes, sleepy, routers, hops, loss, seed, image_size,
                  old_version, new_version: an emulated Zigbee mesh as the coordinator's
                  network (enables [zigbee] with radio "emulated") and a Zigbee OTA file
                  in the demo repository

See ``configs/chirpstack.toml`` (a real ChirpStack), ``configs/zigbee.toml`` (a real EZSP
stick) and ``configs/emulated.toml``.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from proxyota.clock import unix_to_gps
from proxyota.errors import InvalidArgument
from proxyota.service.logging import SECRETS, SecretRegistry
from proxyota.service.options import CampaignOptions, OptionError, parse_options

__all__ = [
    "ApiConfig",
    "ChirpStackConfig",
    "ClockConfig",
    "ConfigError",
    "ImagesConfig",
    "Listen",
    "Secret",
    "ServiceConfig",
    "ServiceSection",
    "ZigbeeConfig",
    "load_config",
    "parse_config",
]


class ConfigError(InvalidArgument):
    """The configuration is wrong; the message names the file, section and key."""

    def __init__(self, source: str, section: str, key: str | None, message: str) -> None:
        self.source = source
        self.section = section
        self.key = key
        where = f"[{section}]" if section else "top level"
        if key:
            where += f" {key}"
        super().__init__(f"{source}: {where}: {message}")


class Secret:
    """A secret string that never shows itself in repr/str (``reveal()`` gives it)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ClockConfig:
    """``kind`` "real", or "scaled" with the three numbers of :class:`ScaledClock`.

    A scaled clock without ``origin_unix`` starts at the service's start (fine for an
    in-process emulator; processes sharing emulated time must give the same origin);
    ``origin_gps`` defaults to the GPS time of ``origin_unix``.
    """

    kind: str = "real"
    rate: float = 1.0
    origin_unix: float | None = None
    origin_gps: float | None = None

    def build(self) -> Any:
        if self.kind == "real":
            from proxyota.clock import RealClock

            return RealClock()
        if self.kind == "virtual":  # only with the in-process emulator
            from radio_emulators.clock import VirtualClock

            from proxyota.clock import unix_to_gps as _gps
            import time as _time

            return VirtualClock(_gps(_time.time()))
        import time

        from proxyota.service.scaled_clock import ScaledClock

        origin_unix = time.time() if self.origin_unix is None else self.origin_unix
        origin_gps = unix_to_gps(origin_unix) if self.origin_gps is None else self.origin_gps
        return ScaledClock(origin_unix, origin_gps, self.rate)


@dataclass(frozen=True)
class ServiceSection:
    state_db: Path
    clock: ClockConfig = field(default_factory=ClockConfig)
    log_level: str = "info"
    log_format: str = "json"
    shutdown_grace: float = 10.0


@dataclass(frozen=True)
class ApiConfig:
    listen: Listen
    token: Secret
    require_token_for_reads: bool
    max_body_bytes: int = 64 * 1024


@dataclass(frozen=True)
class ImagesConfig:
    """Where images come from. With ``[emulator]`` the repository fields are None (the
    emulated world provides its demo repository)."""

    metadata_dir: Path
    cache_dir: Path
    metadata_url: str | None = None
    targets_url: str | None = None
    trusted_root: Path | None = None
    hardware_classes: tuple[str, ...] = ()
    vendor_keys: tuple[Path, ...] = ()
    cache_max_bytes: int = 256 * 1024 * 1024
    refresh_interval: float = 300.0


@dataclass(frozen=True)
class ChirpStackConfig:
    server: str
    api_token: Secret
    application_id: str
    integration_listen: Listen
    integration_path: str = "/integration"
    integration_auth: Secret | None = None
    tls: bool = False
    ca_cert: Path | None = None
    gateway_ids: tuple[str, ...] = ()
    class_c_scheduling_type: str = "DELAY"
    device_keys: str = "chirpstack"
    device_keys_file: Path | None = None
    timeout: float = 10.0


@dataclass(frozen=True)
class ZigbeeConfig:
    """The ``[zigbee]`` section: the coordinator radio and the Zigbee campaign defaults
    (``defaults``: option values, see :mod:`proxyota.service.zigbee_options`)."""

    enabled: bool = False
    radio: str = "ezsp"
    device: str = "auto"
    baudrate: int | None = None
    flow_control: str | None = None
    database: Path | None = None
    aps_max_payload: int = 82
    open_timeout: float = 60.0
    defaults: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceConfig:
    source: str
    service: ServiceSection
    api: ApiConfig
    images: ImagesConfig
    chirpstack: ChirpStackConfig | None
    lorawan: CampaignOptions
    zigbee: ZigbeeConfig
    emulator: Any = None  #: :class:`proxyota.service.emulated.EmulatorConfig` or None
    emulator_integration: Listen | None = None

    def summary(self) -> dict[str, Any]:
        """What the service will run with (no secrets)."""
        cs = self.chirpstack
        return {
            "config": self.source,
            "state_db": str(self.service.state_db),
            "clock": self.service.clock.kind if self.service.clock.kind == "real"
            else f"scaled x{self.service.clock.rate:g}",
            "api": str(self.api.listen),
            "api_reads_need_token": self.api.require_token_for_reads,
            "tuf_metadata": self.images.metadata_url,
            "image_cache": str(self.images.cache_dir),
            "chirpstack": None if cs is None else {
                "server": cs.server, "application_id": cs.application_id,
                "integration": f"{cs.integration_listen}{cs.integration_path}",
                "device_keys": cs.device_keys},
            "lorawan_defaults": dict(self.lorawan.values),
            "zigbee": None if not self.zigbee.enabled else {
                "radio": self.zigbee.radio, "device": self.zigbee.device,
                "database": None if self.zigbee.database is None else str(self.zigbee.database),
                "defaults": dict(self.zigbee.defaults)},
            "emulator": None if self.emulator is None else {
                "devices": self.emulator.devices, "repo_dir": str(self.emulator.repo_dir)},
        }


# --------------------------------------------------------------------------- reading


_MISSING = object()


class _Section:
    """Typed access to one table; remembers which keys were read to report the others."""

    def __init__(self, source: str, name: str, data: Any, env: Mapping[str, str],
                 registry: SecretRegistry) -> None:
        if not isinstance(data, dict):
            raise ConfigError(source, name, None, f"must be a table, got {type(data).__name__}")
        self.source = source
        self.name = name
        self.data = data
        self.env = env
        self.registry = registry
        self.known: set[str] = set()

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(self.source, self.name, key, message)

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        self.known.add(key)
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise self.error(key, "is required")
        return default

    def string(self, key: str, default: Any = _MISSING, *, choices: tuple[str, ...] = ()) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        if choices and value not in choices:
            raise self.error(key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def integer(self, key: str, default: Any = _MISSING, *, lo: int | None = None,
                hi: int | None = None) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self.error(key, f"must be in {lo if lo is not None else '-inf'}.."
                                  f"{hi if hi is not None else 'inf'}, got {value}")
        return value

    def number(self, key: str, default: Any = _MISSING, *, positive: bool = False) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(key, f"must be a number, got {value!r}")
        if positive and value <= 0:
            raise self.error(key, f"must be > 0, got {value}")
        if value < 0:
            raise self.error(key, f"must be >= 0, got {value}")
        return float(value)

    def path(self, key: str, default: Any = _MISSING, *, must_exist: bool = False) -> Any:
        value = self.string(key, default)
        if value is default and default is not _MISSING:
            return value
        p = Path(os.path.expanduser(value))
        if must_exist and not p.is_file():
            raise self.error(key, f"file {str(p)!r} does not exist")
        return p

    def listen(self, key: str, default: Any = _MISSING) -> Any:
        value = self.string(key, default)
        if value is default and default is not _MISSING:
            return value
        m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", value)
        if not m:
            raise self.error(key, f"must be HOST:PORT (IPv6 as [ADDR]:PORT), got {value!r}")
        host = m.group(1) or m.group(3)
        port = int(m.group(2) or m.group(4))
        if port > 65535:
            raise self.error(key, f"port must be 0..65535, got {port}")
        return Listen(host, port)

    def secret_env(self, key: str, *, required: bool = True) -> Secret | None:
        name = self.string(key, _MISSING if required else None)
        if name is None:
            return None
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise self.error(key, f"must name an environment variable, got {name!r}")
        value = self.env.get(name)
        if not value:
            raise self.error(key, f"environment variable {name} is not set (or empty)")
        if "\n" in value or value != value.strip():
            raise self.error(key, f"environment variable {name} must be one line without "
                                  "surrounding spaces")
        self.registry.add(value)
        return Secret(value)

    def string_list(self, key: str, default: Any = _MISSING) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, f"must be a list of strings, got {value!r}")
        return tuple(value)

    def url(self, key: str, default: Any = _MISSING) -> Any:
        value = self.string(key, default)
        if value is default and default is not _MISSING:
            return value
        if not re.match(r"^https?://[^/\s]+", value):
            raise self.error(key, f"must be an http:// or https:// URL, got {value!r}")
        return value if value.endswith("/") else value + "/"

    def finish(self, allowed_subtables: tuple[str, ...] = ()) -> None:
        for key in self.data:
            if key in self.known or key in allowed_subtables:
                continue
            close = difflib.get_close_matches(key, sorted(self.known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.error(key, f"unknown key{hint}; known keys: {', '.join(sorted(self.known))}")


_SECTIONS = ("service", "api", "images", "chirpstack", "lorawan", "zigbee", "emulator")
#: [images] keys the emulated world provides
_EMULATED_IMAGE_KEYS = ("tuf_repo_url", "metadata_url", "targets_url", "trusted_root",
                        "hardware_classes", "vendor_keys")


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None,
                registry: SecretRegistry = SECRETS) -> ServiceConfig:
    """Read and validate the TOML file at ``path``."""
    source = os.fspath(path)
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError(source, "", None, f"cannot read: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(source, "", None, "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", None, f"not valid TOML: {exc}") from None
    return parse_config(doc, source=source, env=env, registry=registry)


def parse_config(doc: Mapping[str, Any], *, source: str = "<config>",
                 env: Mapping[str, str] | None = None,
                 registry: SecretRegistry = SECRETS) -> ServiceConfig:
    """Validate an already parsed TOML document."""
    env = os.environ if env is None else env
    for key in doc:
        if key not in _SECTIONS:
            close = difflib.get_close_matches(key, _SECTIONS, n=1)
            hint = f" (did you mean [{close[0]}]?)" if close else ""
            raise ConfigError(source, "", key, f"unknown section{hint}; known: "
                                               f"{', '.join(_SECTIONS)}")

    def section(name: str, required: bool) -> _Section | None:
        if name not in doc:
            if required:
                raise ConfigError(source, name, None, "section is required")
            return None
        return _Section(source, name, doc[name], env, registry)

    emu_section = section("emulator", False)
    emulated = emu_section is not None
    service = _service(section("service", True), emulated)
    api = _api(section("api", True))
    images = _images(section("images", True), emulated)
    cs_section = section("chirpstack", False)
    if emulated and cs_section is not None:
        raise ConfigError(source, "chirpstack", None, "is not used with [emulator] (the emulator "
                                                      "is the network server); remove one of them")
    chirpstack = _chirpstack(cs_section) if cs_section is not None else None
    lorawan = _lorawan(section("lorawan", False) or _Section(source, "lorawan", {}, env, registry))
    emulator, emu_listen = _emulator(emu_section) if emu_section is not None else (None, None)
    zigbee = _zigbee(section("zigbee", False) or _Section(source, "zigbee", {}, env, registry),
                     state_db=service.state_db,
                     emulated_mesh=emulator is not None and emulator.zigbee is not None)
    return ServiceConfig(source=source, service=service, api=api, images=images,
                         chirpstack=chirpstack, lorawan=lorawan, zigbee=zigbee,
                         emulator=emulator, emulator_integration=emu_listen)


def _service(s: _Section, emulated: bool) -> ServiceSection:
    state_db = s.path("state_db")
    clock = _clock(s, emulated)
    level = s.string("log_level", "info", choices=("debug", "info", "warning", "error"))
    fmt = s.string("log_format", "json", choices=("json", "text"))
    grace = s.number("shutdown_grace", 10.0, positive=True)
    s.finish()
    return ServiceSection(state_db=state_db, clock=clock, log_level=level, log_format=fmt,
                          shutdown_grace=grace)


def _clock(s: _Section, emulated: bool) -> ClockConfig:
    value = s.raw("clock", "real")
    if value == "real":
        return ClockConfig()
    if value == "virtual":
        if not emulated:
            raise s.error("clock", "\"virtual\" needs the in-process [emulator] (emulated time "
                                   "that jumps whenever nothing is in flight)")
        return ClockConfig("virtual")
    if not isinstance(value, dict):
        raise s.error("clock", f"must be \"real\" or a table {{scaled = RATE, origin_unix = ..., "
                               f"origin_gps = ...}}, got {value!r}")
    unknown = set(value) - {"scaled", "origin_unix", "origin_gps"}
    if unknown:
        raise s.error(f"clock.{sorted(unknown)[0]}", "unknown key; known: scaled, origin_unix, "
                                                     "origin_gps")

    def num(key: str, default: Any = _MISSING) -> float:
        v = value.get(key, default)
        if v is _MISSING:
            raise s.error(f"clock.{key}", "is required for a scaled clock")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise s.error(f"clock.{key}", f"must be a number, got {v!r}")
        return float(v)

    rate = num("scaled")
    if not 0 < rate <= 100_000:
        raise s.error("clock.scaled", f"rate must be in (0, 100000], got {rate}")
    origin_unix = num("origin_unix", None) if "origin_unix" in value else None
    if origin_unix is not None and origin_unix < 0:
        raise s.error("clock.origin_unix", f"must be >= 0 (Unix seconds), got {origin_unix}")
    origin_gps = num("origin_gps") if "origin_gps" in value else None
    if origin_gps is not None and origin_gps < 0:
        raise s.error("clock.origin_gps", f"must be >= 0 (GPS seconds), got {origin_gps}")
    return ClockConfig("scaled", rate, origin_unix, origin_gps)


def _api(s: _Section) -> ApiConfig:
    listen = s.listen("listen", Listen("127.0.0.1", 8710))
    token = s.secret_env("token_env")
    assert token is not None
    if len(token.reveal()) < 16:
        raise s.error("token_env", "the API token must be at least 16 characters")
    reads = s.boolean("require_token_for_reads", not listen.loopback)
    max_body = s.integer("max_body_bytes", 64 * 1024, lo=1024, hi=16 * 1024 * 1024)
    s.finish()
    return ApiConfig(listen=listen, token=token, require_token_for_reads=reads,
                     max_body_bytes=max_body)


def _images(s: _Section, emulated: bool) -> ImagesConfig:
    if emulated:
        for key in _EMULATED_IMAGE_KEYS:
            if key in s.data:
                raise s.error(key, "is provided by [emulator] (its demo repository); remove it")
        metadata_dir = s.path("metadata_dir")
        cache_dir = s.path("cache_dir")
        max_bytes = s.integer("cache_max_bytes", 256 * 1024 * 1024, lo=1024)
        interval = s.number("refresh_interval", 300.0, positive=True)
        s.finish()
        return ImagesConfig(metadata_dir=metadata_dir, cache_dir=cache_dir,
                            cache_max_bytes=max_bytes, refresh_interval=interval)
    repo = s.url("tuf_repo_url", None)
    metadata_url = s.url("metadata_url", None)
    targets_url = s.url("targets_url", None)
    if repo is None and (metadata_url is None or targets_url is None):
        raise s.error("tuf_repo_url", "is required (or both metadata_url and targets_url)")
    metadata_url = metadata_url or repo + "metadata/"
    targets_url = targets_url or repo + "targets/"
    trusted_root = s.path("trusted_root", must_exist=True)
    metadata_dir = s.path("metadata_dir")
    cache_dir = s.path("cache_dir")
    max_bytes = s.integer("cache_max_bytes", 256 * 1024 * 1024, lo=1024)
    classes = s.string_list("hardware_classes")
    if not classes:
        raise s.error("hardware_classes", "must name at least one hardware class")
    from proxyota.images.policy import normalize_hw_class

    normalised = []
    for c in classes:
        try:
            normalised.append(normalize_hw_class(c))
        except InvalidArgument as exc:
            raise s.error("hardware_classes", str(exc)) from None
    keys = s.string_list("vendor_keys")
    if not keys:
        raise s.error("vendor_keys", "must list at least one vendor public key file: images "
                                     "are verified before any airtime")
    from proxyota.images.signing import load_public_key

    key_paths = []
    for k in keys:
        p = Path(os.path.expanduser(k))
        if not p.is_file():
            raise s.error("vendor_keys", f"file {str(p)!r} does not exist")
        try:
            load_public_key(p)
        except InvalidArgument as exc:
            raise s.error("vendor_keys", f"{p}: {exc}") from None
        key_paths.append(p)
    interval = s.number("refresh_interval", 300.0, positive=True)
    s.finish()
    return ImagesConfig(metadata_url=metadata_url, targets_url=targets_url,
                        trusted_root=trusted_root, metadata_dir=metadata_dir, cache_dir=cache_dir,
                        hardware_classes=tuple(normalised), vendor_keys=tuple(key_paths),
                        cache_max_bytes=max_bytes, refresh_interval=interval)


def _chirpstack(s: _Section) -> ChirpStackConfig:
    server = s.string("server")
    if not re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\s/]+):\d{1,5}", server):
        raise s.error("server", f"must be HOST:PORT of ChirpStack's gRPC API, got {server!r}")
    tls = s.boolean("tls", False)
    ca_cert = s.path("ca_cert", None, must_exist=True)
    if ca_cert is not None and not tls:
        raise s.error("ca_cert", "is only used with tls = true")
    token = s.secret_env("api_token_env")
    app = s.string("application_id")
    try:
        uuid.UUID(app)
    except ValueError:
        raise s.error("application_id", f"must be a UUID, got {app!r}") from None
    listen = s.listen("integration_listen")
    path = s.string("integration_path", "/integration")
    if not path.startswith("/"):
        raise s.error("integration_path", f"must start with '/', got {path!r}")
    auth = s.secret_env("integration_auth_env", required=False)
    gateways = s.string_list("gateway_ids", ())
    for g in gateways:
        if not re.fullmatch(r"[0-9a-fA-F]{16}", g):
            raise s.error("gateway_ids", f"each gateway id must be 16 hex digits, got {g!r}")
    sched = s.string("class_c_scheduling_type", "DELAY", choices=("DELAY", "GPS_TIME"))
    keys = s.string("device_keys", "chirpstack", choices=("chirpstack", "file"))
    keys_file = s.path("device_keys_file", None, must_exist=True)
    if keys == "file" and keys_file is None:
        raise s.error("device_keys_file", "is required with device_keys = \"file\"")
    if keys == "chirpstack" and keys_file is not None:
        raise s.error("device_keys_file", "is only used with device_keys = \"file\"")
    timeout = s.number("timeout", 10.0, positive=True)
    s.finish()
    assert token is not None
    return ChirpStackConfig(server=server, api_token=token, application_id=app,
                            integration_listen=listen, integration_path=path,
                            integration_auth=auth, tls=tls, ca_cert=ca_cert,
                            gateway_ids=tuple(g.lower() for g in gateways),
                            class_c_scheduling_type=sched, device_keys=keys,
                            device_keys_file=keys_file, timeout=timeout)


#: config key -> option name
_LORAWAN_KEYS = {"multicast_dr": "dr", "multicast_frequency": "frequency"}


def _lorawan(s: _Section) -> CampaignOptions:
    options: dict[str, Any] = {}
    for key, value in s.data.items():
        name = _LORAWAN_KEYS.get(key, key)
        if name in ("dr", "frequency") and key == name:
            raise s.error(key, f"unknown key (did you mean 'multicast_{key}'?)")
        options[name] = value
        s.known.add(key)
    names = {v: k for k, v in _LORAWAN_KEYS.items()}
    try:
        return parse_options(options, prefix="", names=names)
    except OptionError as exc:
        message = str(exc)[len(exc.field) + 2:]
        raise s.error(exc.field or None, message) from None


def _emulator(s: _Section) -> tuple[Any, Listen]:
    from proxyota.images.policy import U32_MAX
    from proxyota.service.emulated import EmulatorConfig

    repo_dir = s.path("repo_dir")
    devices = s.integer("devices", 10, lo=1, hi=1000)
    seed = s.integer("seed", 1, lo=0)
    uplink_period = s.number("uplink_period", 60.0, positive=True)
    down = s.number("downlink_loss", 0.0)
    up = s.number("uplink_loss", 0.0)
    for key, value in (("downlink_loss", down), ("uplink_loss", up)):
        if value >= 1.0:
            raise s.error(key, f"must be a probability in [0, 1), got {value}")
    profiles = s.string_list("profiles", ("loramac-node",))
    from radio_emulators.lorawan.device import PROFILES

    for p in profiles:
        if p not in PROFILES:
            raise s.error("profiles", f"unknown device profile {p!r} (known: "
                                      f"{', '.join(sorted(PROFILES))})")
    image_size = s.integer("image_size", 4096, lo=16, hi=1 << 20)
    old = s.integer("old_version", 0x0001_0000, lo=0, hi=U32_MAX)
    new = s.integer("new_version", 0x0002_0000, lo=0, hi=U32_MAX)
    counter = s.integer("security_counter", 2, lo=1, hi=U32_MAX)
    listen = s.listen("integration_listen", Listen("127.0.0.1", 0))
    zigbee = None
    if "zigbee" in s.data:
        zigbee = _emulator_zigbee(_Section(s.source, "emulator.zigbee", s.data["zigbee"], s.env,
                                           s.registry), seed)
    s.finish(allowed_subtables=("zigbee",))
    return EmulatorConfig(repo_dir=repo_dir, devices=devices, seed=seed,
                          uplink_period=uplink_period, downlink_loss=down, uplink_loss=up,
                          profiles=tuple(profiles), image_size=image_size, old_version=old,
                          new_version=new, security_counter=counter, zigbee=zigbee), listen


def _emulator_zigbee(s: _Section, seed: int) -> Any:
    from proxyota.service.emulated import EmulatedZigbeeConfig

    nodes = s.integer("nodes", 8, lo=1, hi=200)
    sleepy = s.integer("sleepy", 1, lo=0, hi=nodes - 1)
    routers = s.integer("routers", None, lo=1, hi=nodes - sleepy)
    hops = s.integer("hops", 3, lo=1, hi=15)
    loss = s.number("loss", 0.0)
    if loss >= 1.0:
        raise s.error("loss", f"must be a probability in [0, 1), got {loss}")
    mesh_seed = s.integer("seed", seed, lo=0)
    image_size = s.integer("image_size", 2048, lo=16, hi=1 << 20)
    old = s.integer("old_version", 1, lo=0, hi=0xFFFF_FFFE)
    new = s.integer("new_version", old + 1, lo=old + 1, hi=0xFFFF_FFFF)
    s.finish()
    return EmulatedZigbeeConfig(nodes=nodes, sleepy=sleepy, routers=routers, hops=hops, loss=loss,
                                seed=mesh_seed, image_size=image_size, old_version=old,
                                new_version=new)


#: [zigbee] keys of the coordinator radio (the others are campaign defaults)
_ZIGBEE_RADIO_KEYS = ("enabled", "radio", "device", "baudrate", "flow_control", "database",
                      "aps_max_payload", "open_timeout")


def _zigbee(s: _Section, *, state_db: Path, emulated_mesh: bool) -> ZigbeeConfig:
    from proxyota.service.zigbee_options import ZIGBEE_OPTION_FIELDS, parse_zigbee_options
    from proxyota.service.zigbee_radio import EMULATED, EMULATED_PREFIX
    from proxyota.zigbee.zigpy_adapter import RADIO_TYPES

    enabled = s.boolean("enabled", emulated_mesh)
    radio = s.string("radio", EMULATED if emulated_mesh else "ezsp",
                     choices=(*RADIO_TYPES, EMULATED))
    if emulated_mesh:
        if not enabled:
            raise s.error("enabled", "is false, but [emulator.zigbee] builds an emulated mesh for "
                                     "the coordinator; remove one of them")
        for key in ("radio", "device"):
            if key in s.data and not (key == "radio" and radio == EMULATED):
                raise s.error(key, "is the emulated mesh of [emulator.zigbee]; remove it")
    device = s.string("device", f"{EMULATED_PREFIX}emulator.zigbee" if emulated_mesh else "auto")
    if radio == EMULATED and not emulated_mesh and enabled and not device.startswith(EMULATED_PREFIX):
        raise s.error("device", f"radio \"emulated\" needs device = \"{EMULATED_PREFIX}NAME\" (a "
                                f"mesh registered in this process) or the [emulator.zigbee] "
                                f"table, got {device!r}")
    if enabled and radio != EMULATED:
        import importlib.util

        rtype = RADIO_TYPES[radio]
        if importlib.util.find_spec(rtype.module.split(".")[0]) is None:
            raise s.error("radio", f"{radio!r} needs the {rtype.package} package, which is not "
                                   f"installed (pip install {rtype.package}); or use another radio")
    baudrate = s.integer("baudrate", None, lo=1200, hi=4_000_000)
    flow = s.string("flow_control", "none", choices=("none", "hardware", "software"))
    database = s.path("database", None)
    if database is None and radio != EMULATED:
        database = state_db.parent / "zigbee.db"
    aps = s.integer("aps_max_payload", 82, lo=20, hi=127)
    open_timeout = s.number("open_timeout", 60.0, positive=True)
    defaults: dict[str, Any] = {}
    for key, value in s.data.items():
        if key in _ZIGBEE_RADIO_KEYS:
            continue
        if key not in ZIGBEE_OPTION_FIELDS:
            known = sorted({*_ZIGBEE_RADIO_KEYS, *ZIGBEE_OPTION_FIELDS})
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise s.error(key, f"unknown key{hint}; known keys: {', '.join(known)}")
        defaults[key] = value
        s.known.add(key)
    try:
        parse_zigbee_options(defaults, prefix="")
    except OptionError as exc:
        message = str(exc)[len(exc.field) + 2:]
        raise s.error(exc.field or None, message) from None
    s.finish()
    return ZigbeeConfig(enabled=enabled, radio=radio, device=device, baudrate=baudrate,
                        flow_control=None if flow == "none" else flow, database=database,
                        aps_max_payload=aps, open_timeout=open_timeout, defaults=defaults)

