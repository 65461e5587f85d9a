"""Zigbee OTA Upgrade cluster server: sans-IO per-node sessions and the dispatcher.

The adapter (zigpy) feeds every OTA cluster command a node sends, with an explicit ``now``
(the project clock, GPS seconds), and executes the actions it gets back, in order::

    server = OtaServer(images, CampaignPolicy(...), state=None)
    actions = server.notify(now)                                  # ImageNotify
    actions = server.handle(ieee, command_id, payload, tsn, now, aps_max_payload=82)
    actions = server.on_timer(now)                                # at server.next_deadline()
    store.save(server.state.to_dict())                            # after every call

Actions: :class:`Reply` (a cluster-specific response or a ZCL Default Response to the
node; ``tsn`` None = unsolicited, the adapter picks one), :class:`Notify` (ImageNotify,
unicast or broadcast) and :class:`Log`. Every request gets exactly one reply.

Behaviour (ZCL OTA Upgrade cluster; Silicon Labs ``ota-server.c`` where the spec leaves
a choice):

* QueryNextImage: the image with the node's manufacturer code and image type, for its
  address if the file is device specific, inside the file's hardware version range when
  both the file and the request carry one (``require_hardware_version`` refuses requests
  without it), newer than the running version (or just different, with
  ``allow_downgrade``); otherwise NO_IMAGE_AVAILABLE. A node that asks again with the
  version it was sent is *verified*.
* ImageBlock: data capped to min(client maximum_data_size, APS payload - ZCL header - 14,
  policy caps). The :class:`~proxyota.zigbee.scheduler.FleetScheduler` bounds concurrent
  downloads; the others get WAIT_FOR_DATA with a realistic request time. Clients that send
  MinimumBlockPeriod get the server's period in WAIT_FOR_DATA, in the unit they use (found
  as Silicon Labs does: tell them 60 and see whether they come back after ~60 s or ~60 ms);
  clients that don't are paced by WAIT_FOR_DATA when they ask early
  (``pace_legacy_clients``). Unknown image: ABORT.
* ImagePage: a train of ImageBlockResponses, the first at once, the others from
  :meth:`OtaServer.on_timer` ``response_spacing`` ms apart (trains are transient: after a
  gateway restart the client asks for the page again).
* UpgradeEnd SUCCESS: UpgradeEndResponse with the policy's upgrade time (now, a delay, one
  absolute time for the whole campaign, or 0xFFFFFFFF = wait for
  :meth:`OtaServer.release_upgrade`). A failure status (INVALID_IMAGE, ABORT): Default
  Response SUCCESS, a retry counted, the node may query and download again (from 0);
  after ``max_retries`` it is failed with the reason. REQUIRE_MORE_IMAGE: Default
  Response SUCCESS, the node queries for its next image.
* QuerySpecificFile: the exact file asked for (device-specific files for that node only).
* Undecodable payloads: Default Response MALFORMED_COMMAND (also an offset past the
  image, a zero maximum data size or page size), state unchanged; other command ids:
  UNSUP_CLUSTER_COMMAND.

Per node (:class:`NodeState`): the served byte ranges, bytes, first/last time,
throughput, ETA, where a download resumed, restarts, retries, phase and outcome. Stalls
are detected per device class (:class:`DeviceClassPolicy`: silent-node timeout, a longer
one after the last block while the node verifies the image, unicast ImageNotify repeats
for sleepy nodes). A node that restarts is served from whatever offset it asks (resumed
from there, or from 0); after a gateway restart ``OtaServer(images, policy,
ServerState.from_dict(saved))`` continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Iterable, Literal, Mapping

from proxyota.clock import unix_to_gps
from proxyota.errors import DecodeError, InvalidArgument
from proxyota.zigbee import otafile
from proxyota.zigbee.otafile import OTAFile
from proxyota.zigbee.scheduler import Admit, FleetScheduler, SchedulerState
from proxyota.zigbee.zcl_ota import (
    IMAGE_BLOCK_RESPONSE_OVERHEAD,
    QUERY_JITTER_MAX,
    UPGRADE_TIME_WAIT_FOR_COMMAND,
    ZCL_HEADER_SIZE,
    ZCL_HEADER_SIZE_MANUFACTURER,
    DefaultResponse,
    ImageBlockRequest,
    ImageBlockResponse,
    ImageNotify,
    ImagePageRequest,
    QueryNextImageRequest,
    QueryNextImageResponse,
    QuerySpecificFileRequest,
    QuerySpecificFileResponse,
    Status,
    UnknownCommand,
    UpgradeEndRequest,
    UpgradeEndResponse,
    decode_request,
    eui64_from_str,
    status_name,
    zcl_utc_time,
)

__all__ = [
    "DEFAULT_DEVICE_CLASSES",
    "KNOWN_BLOCK_SIZE_CAPS",
    "STATE_FORMAT",
    "Action",
    "CampaignPolicy",
    "DeviceClassPolicy",
    "Log",
    "NodeState",
    "Notify",
    "OtaServer",
    "Outcome",
    "Phase",
    "Reply",
    "ServerState",
    "UpgradeTimeMode",
    "UpgradeTimePolicy",
]

STATE_FORMAT = 1

#: Manufacturer codes whose clients fail with blocks above 40 bytes (Insta 4474, Dresden
#: Elektronik 4405), from zigpy 2.4 ``zigpy/ota/manager.py``.
KNOWN_BLOCK_SIZE_CAPS: Mapping[int, int] = {4474: 40, 4405: 40}

#: MinimumBlockPeriod unit probe (Silicon Labs' dynamic block period): tell the client 60;
#: back after more than 60 - 60/8 s means it counts seconds, sooner milliseconds.
MBP_PROBE_VALUE = 60
MBP_PROBE_THRESHOLD = MBP_PROBE_VALUE - (MBP_PROBE_VALUE >> 3)

#: An offset further back than this from the last served position starts a new attempt.
_BACKTRACK = 0xFF


def _finite(name: str, value: Any, *, minimum: float | None = None, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise InvalidArgument(f"{name} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    return float(value)


def _int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise InvalidArgument(f"{name} must be an integer {bounds}, got {value!r}")


# -- policy --------------------------------------------------------------------------


class UpgradeTimeMode(StrEnum):
    NOW = "now"  # switch right after the download
    DELAY = "delay"  # switch ``delay`` seconds after each node's UpgradeEndRequest
    ABSOLUTE = "absolute"  # all nodes switch at the same moment ``at``
    WAIT = "wait"  # 0xFFFFFFFF: wait for release_upgrade()


@dataclass(frozen=True)
class UpgradeTimePolicy:
    """When nodes activate a downloaded image (UpgradeEndResponse upgrade_time)."""

    mode: UpgradeTimeMode = UpgradeTimeMode.NOW
    delay: float = 0.0  # seconds (DELAY)
    at: float | None = None  # GPS seconds, the project clock (ABSOLUTE)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", UpgradeTimeMode(self.mode))
        _finite("upgrade delay", self.delay, minimum=0.0)
        if self.mode is UpgradeTimeMode.ABSOLUTE:
            if self.at is None:
                raise InvalidArgument("an absolute upgrade time needs 'at'")
            _finite("upgrade time 'at'", self.at)

    @classmethod
    def now(cls) -> UpgradeTimePolicy:
        return cls(UpgradeTimeMode.NOW)

    @classmethod
    def after(cls, delay: float) -> UpgradeTimePolicy:
        return cls(UpgradeTimeMode.DELAY, delay=delay)

    @classmethod
    def at_gps(cls, gps_seconds: float) -> UpgradeTimePolicy:
        return cls(UpgradeTimeMode.ABSOLUTE, at=gps_seconds)

    @classmethod
    def at_utc(cls, when: dt.datetime) -> UpgradeTimePolicy:
        """One absolute UTC moment for the whole campaign (an aware datetime)."""
        if not isinstance(when, dt.datetime) or when.tzinfo is None:
            raise InvalidArgument("at_utc needs a timezone-aware datetime")
        return cls(UpgradeTimeMode.ABSOLUTE, at=unix_to_gps(when.timestamp()))

    @classmethod
    def wait_for_command(cls) -> UpgradeTimePolicy:
        return cls(UpgradeTimeMode.WAIT)


@dataclass(frozen=True)
class DeviceClassPolicy:
    """Timeouts of one class of device (routers answer fast; sleepy end devices poll).

    ``stall_timeout``: silence after which a downloading node is stalled (its slot is
    freed; it may resume later). ``verify_timeout``: silence allowed after the last block
    while the node checks the image (~31 s on some EFR32). ``notify_interval`` /
    ``max_notifies``: repeat a unicast ImageNotify to a node that does not query
    (sleepy nodes miss them), None = never repeat.
    """

    stall_timeout: float
    verify_timeout: float
    notify_interval: float | None = None
    max_notifies: int = 1

    def __post_init__(self) -> None:
        _finite("stall_timeout", self.stall_timeout, minimum=0.0, strict=True)
        _finite("verify_timeout", self.verify_timeout, minimum=0.0, strict=True)
        if self.notify_interval is not None:
            _finite("notify_interval", self.notify_interval, minimum=0.0, strict=True)
        if isinstance(self.max_notifies, bool) or not isinstance(self.max_notifies, int) or self.max_notifies < 1:
            raise InvalidArgument(f"max_notifies must be an integer >= 1, got {self.max_notifies!r}")


DEFAULT_DEVICE_CLASSES: Mapping[str, DeviceClassPolicy] = {
    "router": DeviceClassPolicy(stall_timeout=90.0, verify_timeout=180.0),
    "end_device": DeviceClassPolicy(stall_timeout=180.0, verify_timeout=240.0, notify_interval=600.0, max_notifies=3),
    "sleepy": DeviceClassPolicy(stall_timeout=900.0, verify_timeout=900.0, notify_interval=3600.0, max_notifies=24),
}


@dataclass(frozen=True)
class CampaignPolicy:
    """What the server serves, and how.

    ``allow_downgrade``: offer an older file than the node runs (default: upgrades only).
    ``max_concurrent``: download slots across the mesh (fleet scheduler); ``min_wait`` /
    ``max_wait`` bound the request time told to waiting nodes, estimated from
    ``expected_throughput`` until completed downloads give a measured one.
    ``device_classes`` / ``default_device_class``: stall timeouts per class.
    ``max_retries``: failed attempts allowed before a node is given up.
    ``max_block_size`` / ``manufacturer_block_caps``: caps on top of the client's maximum
    and the APS payload. ``targets``: the nodes this campaign may serve (None: any).
    ``query_jitter`` / ``broadcast_payload_type``: broadcast ImageNotify.
    """

    allow_downgrade: bool = False
    upgrade_time: UpgradeTimePolicy = UpgradeTimePolicy()
    max_concurrent: int = 4
    device_classes: Mapping[str, DeviceClassPolicy] = field(default_factory=lambda: dict(DEFAULT_DEVICE_CLASSES))
    default_device_class: str = "router"
    #: MinimumBlockPeriod the server asks for, in milliseconds (0 = as fast as they like).
    min_block_period_ms: int = 0
    pace_legacy_clients: bool = True
    #: WAIT_FOR_DATA layout: "spec" (with minimum_block_period), "legacy" (without), or
    #: "auto" (with it when the client sent MinimumBlockPeriod).
    wait_for_data_layout: Literal["spec", "legacy", "auto"] = "spec"
    #: "utc": current_time / upgrade / request times in ZCL UTCTime; "relative":
    #: current_time 0 and times as offsets in seconds (what Silicon Labs servers send).
    time_reference: Literal["utc", "relative"] = "utc"
    max_retries: int = 3
    max_block_size: int | None = None
    manufacturer_block_caps: Mapping[int, int] = field(default_factory=lambda: dict(KNOWN_BLOCK_SIZE_CAPS))
    require_hardware_version: bool = False
    targets: frozenset[str] | None = None  # None: every node that asks
    query_jitter: int = 50  # broadcast ImageNotify
    broadcast_payload_type: int = 3
    expected_throughput: float = 47.0  # bytes/s until measured (field pace ~40-50 B blocks)
    min_wait: float = 10.0
    max_wait: float = 300.0

    def __post_init__(self) -> None:
        _int("max_concurrent", self.max_concurrent, 1)
        _int("max_retries", self.max_retries, 0)
        _int("min_block_period_ms", self.min_block_period_ms, 0, 0xFFFF * 1000)
        if self.max_block_size is not None:
            _int("max_block_size", self.max_block_size, 1, 0xFF)
        for mfr, cap in self.manufacturer_block_caps.items():
            _int("manufacturer code", mfr, 0, 0xFFFF)
            _int("manufacturer block cap", cap, 1, 0xFF)
        if not self.device_classes:
            raise InvalidArgument("device_classes must not be empty")
        for name, cls in self.device_classes.items():
            if not isinstance(cls, DeviceClassPolicy):
                raise InvalidArgument(f"device class {name!r} must be a DeviceClassPolicy")
        if self.default_device_class not in self.device_classes:
            raise InvalidArgument(f"default_device_class {self.default_device_class!r} is not a device class")
        if self.wait_for_data_layout not in ("spec", "legacy", "auto"):
            raise InvalidArgument(f"wait_for_data_layout must be spec, legacy or auto, got {self.wait_for_data_layout!r}")
        if self.time_reference not in ("utc", "relative"):
            raise InvalidArgument(f"time_reference must be utc or relative, got {self.time_reference!r}")
        _int("query_jitter", self.query_jitter, 1, QUERY_JITTER_MAX)
        _int("broadcast_payload_type", self.broadcast_payload_type, 0, 3)
        _finite("expected_throughput", self.expected_throughput, minimum=0.0, strict=True)
        _finite("min_wait", self.min_wait, minimum=0.0)
        _finite("max_wait", self.max_wait, minimum=self.min_wait, strict=False)
        if self.targets is not None:
            object.__setattr__(self, "targets", frozenset(self.targets))
        if not isinstance(self.upgrade_time, UpgradeTimePolicy):
            raise InvalidArgument("upgrade_time must be an UpgradeTimePolicy")


# -- actions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """Send an OTA cluster command (or, ``general``, a ZCL global command such as the
    Default Response 0x0B) to ``ieee``. ``tsn``: the request's sequence number; None for
    an unsolicited command (the adapter allocates one)."""

    ieee: str
    command_id: int
    payload: bytes
    tsn: int | None
    general: bool = False


@dataclass(frozen=True)
class Notify:
    """Send ImageNotify to ``ieee``, or broadcast it when ``ieee`` is None."""

    ieee: str | None
    payload: bytes


@dataclass(frozen=True)
class Log:
    """A note for the operator / audit log."""

    ieee: str | None
    event: str
    detail: Mapping[str, Any] = field(default_factory=dict)


Action = Reply | Notify | Log


# -- state ---------------------------------------------------------------------------


class Phase(StrEnum):
    IDLE = "idle"  # known, nothing offered yet
    NOTIFIED = "notified"  # ImageNotify sent, no query yet
    OFFERED = "offered"  # QueryNextImage / QuerySpecificFile answered with an image
    WAITING = "waiting"  # told WAIT_FOR_DATA (no download slot)
    DOWNLOADING = "downloading"
    STALLED = "stalled"  # silent past its class's timeout; may resume
    DOWNLOADED = "downloaded"  # every byte served, waiting for UpgradeEndRequest
    AWAITING_COMMAND = "awaiting_command"  # told upgrade time 0xFFFFFFFF
    UPGRADING = "upgrading"  # told when to activate
    DONE = "done"  # verified on the new version, or already up to date
    FAILED = "failed"  # gave up; see reason


class Outcome(StrEnum):
    UPGRADED = "upgraded"  # UpgradeEnd SUCCESS answered with an activation time
    VERIFIED = "verified"  # the node then reported the new version
    UP_TO_DATE = "up_to_date"
    FAILED = "failed"


_ACTIVE_PHASES = frozenset({Phase.DOWNLOADING, Phase.DOWNLOADED, Phase.WAITING})


@dataclass
class NodeState:
    """One node's session. Ranges are ``[start, end)`` byte offsets of the image."""

    ieee: str
    device_class: str | None = None
    phase: Phase = Phase.IDLE
    manufacturer_code: int | None = None  # of the file being served (else of the last query)
    image_type: int | None = None
    current_file_version: int | None = None  # as the node last reported it
    hardware_version: int | None = None
    file_version: int | None = None  # the file being served
    image_size: int | None = None
    served: list[list[int]] = field(default_factory=list)
    bytes_served: int = 0  # repeats included
    blocks_served: int = 0
    repeats: int = 0  # blocks asked again (a response was lost)
    first_time: float | None = None
    last_time: float | None = None  # last block sent
    last_request: float | None = None  # last command received
    attempt_start: float | None = None
    attempt_offset: int = 0
    attempt_bytes: int = 0
    position: int = 0  # end of the last block sent
    resumed_from: int | None = None
    restarts: int = 0  # downloads started again (node reboot, re-download after a failure)
    retries: int = 0  # failures: stalls, INVALID_IMAGE, client ABORT, not activated
    waits: int = 0
    wait_until: float | None = None
    mbp_unit: str | None = None  # MinimumBlockPeriod unit: "probing", "s", "ms"
    mbp_probe_at: float | None = None
    notified_at: float | None = None
    notifies: int = 0
    upgrade_at: float | None = None  # activation time told (GPS)
    completed_at: float | None = None
    outcome: Outcome | None = None
    reason: str | None = None

    def coverage(self) -> int:
        """Distinct image bytes served so far."""
        return sum(end - start for start, end in self.served)

    def throughput(self) -> float | None:
        """Bytes per second over the current attempt."""
        if self.attempt_start is None or self.last_time is None or self.last_time <= self.attempt_start:
            return None
        return self.attempt_bytes / (self.last_time - self.attempt_start)

    def eta(self) -> float | None:
        """Seconds still needed at the current pace."""
        rate = self.throughput()
        if rate is None or rate <= 0 or self.image_size is None:
            return None
        return max(0, self.image_size - self.position) / rate

    def progress(self) -> float:
        if not self.image_size:
            return 0.0
        return min(1.0, self.position / self.image_size)

    def report(self) -> dict[str, Any]:
        """The node's figures (JSON-ready)."""
        rate, eta = self.throughput(), self.eta()
        out = self.to_dict()
        out.update(
            coverage=self.coverage(),
            progress=round(self.progress(), 4),
            throughput=None if rate is None else round(rate, 3),
            eta=None if eta is None else round(eta, 1),
        )
        return out

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["phase"] = self.phase.value
        out["outcome"] = None if self.outcome is None else self.outcome.value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeState:
        data = dict(_check_keys(cls, data))
        try:
            data["phase"] = Phase(data.get("phase", Phase.IDLE))
            if data.get("outcome") is not None:
                data["outcome"] = Outcome(data["outcome"])
            data["served"] = [[int(a), int(b)] for a, b in data.get("served", [])]
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"malformed NodeState: {exc}") from None


def _check_keys(cls: type, data: Any) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"{cls.__name__} must be an object, got {type(data).__name__}")
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise InvalidArgument(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
    return data


@dataclass
class ServerState:
    """Everything the server knows between two events (persist after each call)."""

    nodes: dict[str, NodeState] = field(default_factory=dict)
    scheduler: SchedulerState = field(default_factory=SchedulerState)
    min_block_period_ms: int | None = None  # None: the policy's
    activation_at: float | None = None  # release_upgrade() time for the whole campaign
    broadcast_at: float | None = None
    completed: int = 0
    completed_throughput: float = 0.0  # sum over completed downloads (B/s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "nodes": {k: v.to_dict() for k, v in self.nodes.items()},
            "scheduler": self.scheduler.to_dict(),
            "min_block_period_ms": self.min_block_period_ms,
            "activation_at": self.activation_at,
            "broadcast_at": self.broadcast_at,
            "completed": self.completed,
            "completed_throughput": self.completed_throughput,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerState:
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"ServerState must be an object, got {type(data).__name__}")
        if data.get("format") != STATE_FORMAT:
            raise InvalidArgument(f"unsupported ServerState format {data.get('format')!r}, expected {STATE_FORMAT}")
        nodes = data.get("nodes", {})
        if not isinstance(nodes, Mapping):
            raise InvalidArgument("ServerState.nodes must be an object")
        try:
            return cls(
                nodes={str(k): NodeState.from_dict(v) for k, v in nodes.items()},
                scheduler=SchedulerState.from_dict(data.get("scheduler", {})),
                min_block_period_ms=data.get("min_block_period_ms"),
                activation_at=data.get("activation_at"),
                broadcast_at=data.get("broadcast_at"),
                completed=int(data.get("completed", 0)),
                completed_throughput=float(data.get("completed_throughput", 0.0)),
            )
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"malformed ServerState: {exc}") from None


# -- images --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Image:
    ota: OTAFile
    data: bytes  # the OTA image proper (total_size bytes), what blocks are cut from

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.ota.manufacturer_code, self.ota.image_type, self.ota.file_version)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class _Train:
    """Blocks of an ImagePageRequest still to send."""

    key: tuple[int, int, int]
    offset: int
    end: int
    block_size: int
    spacing: float  # seconds
    next_time: float
    tsn: int


# -- the server ----------------------------------------------------------------------


class OtaServer:
    """The OTA Upgrade cluster server for a campaign (see the module docstring)."""

    def __init__(
        self,
        images: Iterable[OTAFile | bytes],
        policy: CampaignPolicy | None = None,
        state: ServerState | None = None,
    ) -> None:
        self.policy = policy if policy is not None else CampaignPolicy()
        if not isinstance(self.policy, CampaignPolicy):
            raise InvalidArgument("policy must be a CampaignPolicy")
        self._images: dict[tuple[int, int, int], _Image] = {}
        for item in images:
            ota = item if isinstance(item, OTAFile) else otafile.parse(item)
            image = _Image(ota, ota.image_bytes())
            if image.key in self._images:
                raise InvalidArgument(
                    "two images with manufacturer 0x%04X, image type 0x%04X, version 0x%08X" % image.key
                )
            self._images[image.key] = image
        self.state = state if state is not None else ServerState()
        if not isinstance(self.state, ServerState):
            raise InvalidArgument("state must be a ServerState")
        self.scheduler = FleetScheduler(
            self.policy.max_concurrent,
            min_wait=self.policy.min_wait,
            max_wait=self.policy.max_wait,
            state=self.state.scheduler,
        )
        self._trains: dict[str, _Train] = {}

    # -- public API ------------------------------------------------------------------

    @property
    def min_block_period_ms(self) -> int:
        value = self.state.min_block_period_ms
        return self.policy.min_block_period_ms if value is None else value

    def set_min_block_period(self, milliseconds: int | None) -> None:
        """Pace clients (mesh busy) or stop pacing (0); None = back to the policy's."""
        if milliseconds is not None:
            _int("min_block_period_ms", milliseconds, 0, 0xFFFF * 1000)
        self.state.min_block_period_ms = milliseconds

    def set_device_class(self, ieee: str, device_class: str) -> None:
        if device_class not in self.policy.device_classes:
            raise InvalidArgument(f"unknown device class {device_class!r}")
        self._node(_ieee(ieee)).device_class = device_class

    def reset_node(self, ieee: str) -> None:
        """Forget a node's failures (the operator allows it to try again)."""
        node = self.state.nodes.get(ieee)
        if node is None:
            raise InvalidArgument(f"unknown node {ieee!r}")
        node.retries = 0
        if node.phase is Phase.FAILED:
            node.phase, node.outcome, node.reason = Phase.IDLE, None, None

    def node(self, ieee: str) -> NodeState | None:
        return self.state.nodes.get(ieee)

    def report(self) -> dict[str, Any]:
        """Figures for every node plus campaign totals."""
        nodes = {k: v.report() for k, v in self.state.nodes.items()}
        phases: dict[str, int] = {}
        for node in self.state.nodes.values():
            phases[node.phase.value] = phases.get(node.phase.value, 0) + 1
        return {
            "nodes": nodes,
            "phases": phases,
            "active": list(self.scheduler.active),
            "waiting": list(self.scheduler.waiting),
            "completed": self.state.completed,
        }

    def notify(
        self,
        now: float,
        ieee: str | None = None,
        *,
        payload_type: int | None = None,
        query_jitter: int | None = None,
    ) -> list[Action]:
        """ImageNotify: unicast to ``ieee`` (payload type 0, jitter 100: the node queries
        at once) or broadcast (``policy.broadcast_payload_type`` / ``query_jitter``: one
        per manufacturer code and image type, with the newest version)."""
        now = _now(now)
        if ieee is not None:
            ieee = _ieee(ieee)
        if payload_type is None:
            payload_type = 0 if ieee is not None else self.policy.broadcast_payload_type
        if query_jitter is None:
            query_jitter = QUERY_JITTER_MAX if ieee is not None else self.policy.query_jitter
        _int("payload_type", payload_type, 0, 3)
        _int("query_jitter", query_jitter, 1, QUERY_JITTER_MAX)
        payloads = self._notify_payloads(payload_type, query_jitter)
        out: list[Action] = [Notify(ieee, p) for p in payloads]
        if ieee is None:
            self.state.broadcast_at = now
            out.append(Log(None, "notify_broadcast", {"payload_type": payload_type, "query_jitter": query_jitter}))
            return out
        node = self._node(ieee)
        node.notified_at, node.notifies = now, node.notifies + 1
        if node.phase in (Phase.IDLE, Phase.DONE) and node.outcome is not Outcome.VERIFIED:
            node.phase = Phase.NOTIFIED
        out.append(Log(ieee, "notify", {"count": node.notifies}))
        return out

    def release_upgrade(self, now: float, ieees: Iterable[str] | None = None, *, at: float | None = None) -> list[Action]:
        """The later upgrade command for nodes told 0xFFFFFFFF: an unsolicited
        UpgradeEndResponse with the activation time (``at``, default now). Without
        ``ieees`` it applies to the whole campaign, including nodes that finish later."""
        now = _now(now)
        when = now if at is None else max(now, _now(at))
        if ieees is None:
            self.state.activation_at = when
            chosen = [n for n in self.state.nodes.values() if n.phase is Phase.AWAITING_COMMAND]
        else:
            chosen = []
            for ieee in ieees:
                node = self.state.nodes.get(ieee)
                if node is None or node.phase is not Phase.AWAITING_COMMAND:
                    raise InvalidArgument(f"node {ieee!r} is not waiting for an upgrade command")
                chosen.append(node)
        out: list[Action] = []
        for node in chosen:
            image = self._images.get(self._node_key(node))
            if image is None:
                out.append(Log(node.ieee, "release_skipped", {"reason": "image no longer served"}))
                continue
            out.append(self._upgrade_end_response(node, image, now, when, tsn=None))
            out.append(Log(node.ieee, "upgrade_released", {"upgrade_at": when}))
        return out

    def handle(
        self,
        ieee: str,
        command_id: int,
        payload: bytes,
        tsn: int,
        now: float,
        *,
        aps_max_payload: int,
        manufacturer_specific: bool = False,
    ) -> list[Action]:
        """One OTA cluster command from node ``ieee``: the reply and log entries."""
        ieee = _ieee(ieee)
        now = _now(now)
        _int("tsn", tsn, 0, 0xFF)
        header = ZCL_HEADER_SIZE_MANUFACTURER if manufacturer_specific else ZCL_HEADER_SIZE
        _int("aps_max_payload", aps_max_payload, header + IMAGE_BLOCK_RESPONSE_OVERHEAD + 1)
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"payload must be bytes, got {type(payload).__name__}")
        try:
            command = decode_request(command_id, bytes(payload))
        except UnknownCommand as exc:
            return self._refuse(ieee, command_id, tsn, Status.UNSUP_CLUSTER_COMMAND, str(exc))
        except DecodeError as exc:
            return self._refuse(ieee, command_id, tsn, Status.MALFORMED_COMMAND, str(exc))
        room = aps_max_payload - header - IMAGE_BLOCK_RESPONSE_OVERHEAD
        if isinstance(command, QueryNextImageRequest):
            return self._query_next_image(ieee, command, tsn, now)
        if isinstance(command, ImageBlockRequest):
            return self._image_block(ieee, command, tsn, now, room)
        if isinstance(command, ImagePageRequest):
            return self._image_page(ieee, command, tsn, now, room)
        if isinstance(command, UpgradeEndRequest):
            return self._upgrade_end(ieee, command, tsn, now)
        assert isinstance(command, QuerySpecificFileRequest)
        return self._query_specific_file(ieee, command, tsn, now)

    def on_timer(self, now: float) -> list[Action]:
        """Page-train blocks due, stalls, ImageNotify repeats."""
        now = _now(now)
        out: list[Action] = []
        for ieee in sorted(self._trains, key=lambda k: self._trains[k].next_time):
            out += self._run_train(ieee, now)
        for node in list(self.state.nodes.values()):
            out += self._check_stall(node, now)
            out += self._renotify(node, now)
        self.scheduler.expire(now)
        return out

    def next_deadline(self) -> float | None:
        times = [t.next_time for t in self._trains.values()]
        for node in self.state.nodes.values():
            deadline = self._stall_deadline(node)
            if deadline is not None:
                times.append(deadline)
            deadline = self._renotify_deadline(node)
            if deadline is not None:
                times.append(deadline)
        scheduler = self.scheduler.next_deadline()
        if scheduler is not None:
            times.append(scheduler)
        return min(times) if times else None

    # -- QueryNextImage / QuerySpecificFile ------------------------------------------

    def _query_next_image(self, ieee: str, req: QueryNextImageRequest, tsn: int, now: float) -> list[Action]:
        self._trains.pop(ieee, None)
        node = self._node(ieee)
        out = self._check_stall(node, now)
        out += self._check_activation(node, req, now)
        node.last_request = now
        if node.file_version is None:  # else they name the file being served
            node.manufacturer_code, node.image_type = req.manufacturer_code, req.image_type
        node.current_file_version, node.hardware_version = req.current_file_version, req.hardware_version
        if node.phase is Phase.FAILED:
            return out + self._no_image(node, tsn, "failed", node.reason or "gave up")
        if not self._is_target(ieee):
            return out + self._no_image(node, tsn, "not_target", "not a target of this campaign")
        image, code, why = self._select(node, req)
        if image is None:
            same_file = node.file_version is None or (node.manufacturer_code, node.image_type) == (
                req.manufacturer_code, req.image_type)
            if code == "up_to_date" and same_file and node.phase not in (Phase.UPGRADING, Phase.AWAITING_COMMAND):
                if node.outcome is None:
                    node.outcome = Outcome.UP_TO_DATE
                node.phase = Phase.DONE
                self.scheduler.release(ieee)
            return out + self._no_image(node, tsn, code, why)
        self._offer(node, image)
        response = QueryNextImageResponse(Status.SUCCESS, *image.key, image.size)
        out.append(Log(ieee, "offered", {"file_version": image.ota.file_version, "image_size": image.size,
                                         "current_file_version": req.current_file_version}))
        return [*out, _reply(ieee, response, tsn)]

    def _check_activation(self, node: NodeState, req: QueryNextImageRequest, now: float) -> list[Action]:
        """A query after an upgrade tells whether the node switched images."""
        if node.file_version is None or node.phase not in (Phase.UPGRADING, Phase.AWAITING_COMMAND, Phase.DOWNLOADED):
            return []
        if (req.manufacturer_code, req.image_type) != (node.manufacturer_code, node.image_type):
            return []
        if req.current_file_version == node.file_version:
            node.phase, node.outcome = Phase.DONE, Outcome.VERIFIED
            self.scheduler.release(node.ieee)
            return [Log(node.ieee, "verified", {"file_version": node.file_version})]
        grace = self._class(node).verify_timeout
        if node.phase is Phase.UPGRADING and node.upgrade_at is not None and now >= node.upgrade_at + grace:
            return self._failure(
                node, now, f"still running 0x{req.current_file_version:08X} after the activation time"
            )
        return []

    def _select(self, node: NodeState, req: QueryNextImageRequest) -> tuple[_Image | None, str, str]:
        """The image for this query, or (None, reason code, reason)."""
        candidates = [
            im for im in self._images.values()
            if (im.ota.manufacturer_code, im.ota.image_type) == (req.manufacturer_code, req.image_type)
        ]
        if not candidates:
            return None, "no_image", (
                f"no image for manufacturer 0x{req.manufacturer_code:04X} image type 0x{req.image_type:04X}"
            )
        address = _eui_or_none(node.ieee)
        mine = [im for im in candidates if im.ota.upgrade_file_destination in (None, address)]
        if not mine:
            return None, "destination", "only device-specific files for other nodes"
        fitting, why = [], ""
        for im in mine:
            low, high = im.ota.minimum_hardware_version, im.ota.maximum_hardware_version
            if low is None or high is None:
                fitting.append(im)
            elif req.hardware_version is None:
                if self.policy.require_hardware_version:
                    why = f"no hardware version in the query; the file needs {low}..{high}"
                else:
                    fitting.append(im)
            elif low <= req.hardware_version <= high:
                fitting.append(im)
            else:
                why = f"hardware version {req.hardware_version} out of range {low}..{high}"
        if not fitting:
            return None, "hardware", why
        current = req.current_file_version
        newer = [im for im in fitting if im.ota.file_version > current]
        if newer:
            return max(newer, key=lambda im: im.ota.file_version), "", ""
        older = [im for im in fitting if im.ota.file_version < current]
        if older and self.policy.allow_downgrade:
            return max(older, key=lambda im: im.ota.file_version), "", ""
        if older and not any(im.ota.file_version == current for im in fitting):
            best = max(im.ota.file_version for im in older)
            return None, "downgrade", f"downgrade from 0x{current:08X} to 0x{best:08X} not allowed"
        return None, "up_to_date", f"already running 0x{current:08X}"

    def _offer(self, node: NodeState, image: _Image) -> None:
        if node.file_version != image.ota.file_version or node.image_size != image.size:
            self._switch_file(node, image)
        if node.phase not in (Phase.UPGRADING, Phase.AWAITING_COMMAND):
            node.phase = Phase.OFFERED

    def _switch_file(self, node: NodeState, image: _Image) -> None:
        """Serve another file: progress starts afresh (retries are per file)."""
        node.manufacturer_code, node.image_type = image.ota.manufacturer_code, image.ota.image_type
        node.file_version, node.image_size = image.ota.file_version, image.size
        node.served, node.bytes_served, node.blocks_served, node.repeats = [], 0, 0, 0
        node.first_time = node.last_time = node.attempt_start = None
        node.attempt_offset = node.attempt_bytes = node.position = 0
        node.resumed_from, node.restarts, node.retries = None, 0, 0
        node.upgrade_at = node.completed_at = None
        node.outcome = node.reason = None

    def _no_image(self, node: NodeState, tsn: int, code: str, why: str) -> list[Action]:
        return [
            Log(node.ieee, "no_image", {"reason": code, "detail": why}),
            _reply(node.ieee, QueryNextImageResponse(Status.NO_IMAGE_AVAILABLE), tsn),
        ]

    def _query_specific_file(self, ieee: str, req: QuerySpecificFileRequest, tsn: int, now: float) -> list[Action]:
        self._trains.pop(ieee, None)
        key = (req.manufacturer_code, req.image_type, req.file_version)
        image = self._images.get(key)
        node = self._node(ieee)
        node.last_request = now
        why = None
        if image is None:
            why = "no such file"
        elif image.ota.upgrade_file_destination not in (None, req.request_node_addr, _eui_or_none(ieee)):
            why = "device-specific file for another node"
        elif node.phase is Phase.FAILED:
            why = node.reason or "gave up"
        elif not self._is_target(ieee):
            why = "not a target of this campaign"
        if why is not None or image is None:
            return [
                Log(ieee, "no_specific_file", {"file": "%04X-%04X-%08X" % key, "reason": why}),
                _reply(ieee, QuerySpecificFileResponse(Status.NO_IMAGE_AVAILABLE), tsn),
            ]
        self._offer(node, image)
        return [
            Log(ieee, "offered_specific_file", {"file_version": req.file_version, "image_size": image.size,
                                                "stack_version": req.current_zigbee_stack_version}),
            _reply(ieee, QuerySpecificFileResponse(Status.SUCCESS, *key, image.size), tsn),
        ]

    # -- ImageBlock / ImagePage ------------------------------------------------------

    def _image_block(self, ieee: str, req: ImageBlockRequest, tsn: int, now: float, room: int) -> list[Action]:
        key = (req.manufacturer_code, req.image_type, req.file_version)
        image = self._images.get(key)
        if image is not None and (req.file_offset >= image.size or req.maximum_data_size == 0):
            why = "file_offset past the image" if req.file_offset >= image.size else "maximum_data_size is 0"
            return self._refuse(ieee, req.command_id, tsn, Status.MALFORMED_COMMAND, why)
        self._trains.pop(ieee, None)
        node = self._node(ieee)
        out = self._check_stall(node, now)
        refusal = self._refusal(node, image, key)
        node.last_request = now
        if refusal is not None:
            return [*out, Log(ieee, "abort", {"reason": refusal}), _reply(ieee, ImageBlockResponse.abort(), tsn)]
        assert image is not None
        wait = self._negotiate_block_period(node, req, now)
        if wait is None:
            wait = self._pace_legacy(node, req, now)
        if wait is None:
            wait = self._admit(node, image, now, req.minimum_block_period is not None)
        if wait is not None:
            return [*out, *wait[1:], _reply(ieee, wait[0], tsn)]
        self._start_attempt(node, image, req.file_offset, now, out)
        size = self._block_size(req.maximum_data_size, room, req.manufacturer_code)
        data = image.data[req.file_offset : req.file_offset + size]
        out += self._record_served(node, image, req.file_offset, len(data), now)
        return [*out, _reply(ieee, ImageBlockResponse.success(*key, req.file_offset, data), tsn)]

    def _image_page(self, ieee: str, req: ImagePageRequest, tsn: int, now: float, room: int) -> list[Action]:
        key = (req.manufacturer_code, req.image_type, req.file_version)
        image = self._images.get(key)
        if image is not None and (req.file_offset >= image.size or req.maximum_data_size == 0 or req.page_size == 0):
            why = ("file_offset past the image" if req.file_offset >= image.size
                   else "maximum_data_size is 0" if req.maximum_data_size == 0 else "page_size is 0")
            return self._refuse(ieee, req.command_id, tsn, Status.MALFORMED_COMMAND, why)
        self._trains.pop(ieee, None)
        node = self._node(ieee)
        out = self._check_stall(node, now)
        refusal = self._refusal(node, image, key)
        node.last_request = now
        if refusal is not None:
            return [*out, Log(ieee, "abort", {"reason": refusal}), _reply(ieee, ImageBlockResponse.abort(), tsn)]
        assert image is not None
        wait = self._admit(node, image, now, False)
        if wait is not None:
            return [*out, *wait[1:], _reply(ieee, wait[0], tsn)]
        self._start_attempt(node, image, req.file_offset, now, out)
        self._trains[ieee] = _Train(
            key=key,
            offset=req.file_offset,
            end=min(image.size, req.file_offset + req.page_size),
            block_size=self._block_size(req.maximum_data_size, room, req.manufacturer_code),
            spacing=req.response_spacing / 1000.0,
            next_time=now,
            tsn=tsn,
        )
        out.append(Log(ieee, "page", {"offset": req.file_offset, "page_size": req.page_size,
                                      "response_spacing_ms": req.response_spacing}))
        return out + self._run_train(ieee, now)

    def _run_train(self, ieee: str, now: float) -> list[Action]:
        train = self._trains.get(ieee)
        node = self.state.nodes.get(ieee)
        out: list[Action] = []
        if train is None or node is None:
            return out
        image = self._images.get(train.key)
        if image is None:
            del self._trains[ieee]
            return out
        while train.offset < train.end and train.next_time <= now:
            data = image.data[train.offset : min(train.end, train.offset + train.block_size)]
            out += self._record_served(node, image, train.offset, len(data), train.next_time)
            out.append(_reply(ieee, ImageBlockResponse.success(*train.key, train.offset, data), train.tsn))
            train.offset += len(data)
            train.next_time += train.spacing
        if train.offset >= train.end:
            del self._trains[ieee]
        return out

    def _refusal(self, node: NodeState, image: _Image | None, key: tuple[int, int, int]) -> str | None:
        """Why a block/page request is answered ABORT, if it is."""
        if image is None:
            return "no such image: manufacturer 0x%04X, image type 0x%04X, version 0x%08X" % key
        if node.phase is Phase.FAILED:
            return node.reason or "gave up"
        if not self._is_target(node.ieee):
            return "not a target of this campaign"
        if image.ota.upgrade_file_destination not in (None, _eui_or_none(node.ieee)):
            return "device-specific file for another node"
        if not self.policy.allow_downgrade and node.current_file_version is not None \
                and (node.manufacturer_code, node.image_type) == key[:2] and key[2] < node.current_file_version:
            return f"downgrade from 0x{node.current_file_version:08X} not allowed"
        return None

    def _negotiate_block_period(
        self, node: NodeState, req: ImageBlockRequest, now: float
    ) -> tuple[ImageBlockResponse, Log] | None:
        """WAIT_FOR_DATA telling a MinimumBlockPeriod-aware client the server's period."""
        if req.minimum_block_period is None:
            return None
        period_ms = self.min_block_period_ms
        if period_ms == 0:
            wanted = 0
        elif node.mbp_unit is None:
            node.mbp_unit, node.mbp_probe_at = "probing", now
            return self._wait_response(node, now, now, MBP_PROBE_VALUE, True), Log(
                node.ieee, "block_period_probe", {"value": MBP_PROBE_VALUE})
        else:
            if node.mbp_unit == "probing":
                elapsed = now - (node.mbp_probe_at if node.mbp_probe_at is not None else now)
                node.mbp_unit = "s" if elapsed > MBP_PROBE_THRESHOLD else "ms"
            wanted = self._period_for(node)
        if req.minimum_block_period == wanted:
            return None
        return self._wait_response(node, now, now, wanted, True), Log(
            node.ieee, "block_period", {"value": wanted, "unit": node.mbp_unit or "any",
                                        "client_value": req.minimum_block_period})

    def _pace_legacy(self, node: NodeState, req: ImageBlockRequest, now: float) -> tuple[ImageBlockResponse, Log] | None:
        """A client without MinimumBlockPeriod asking sooner than the period: come back later."""
        period = self.min_block_period_ms / 1000.0
        if (not self.policy.pace_legacy_clients or period <= 0 or req.minimum_block_period is not None
                or node.phase is not Phase.DOWNLOADING or node.last_time is None):
            return None
        due = node.last_time + period
        if now >= node.last_time + 0.9 * period:
            return None
        return self._wait_response(node, now, due, None, False), Log(node.ieee, "paced", {"request_time": due})

    def _admit(
        self, node: NodeState, image: _Image, now: float, client_mbp: bool
    ) -> tuple[ImageBlockResponse, Log] | None:
        duration = image.size / self._expected_throughput()
        eta = node.eta()
        decision = self.scheduler.request(
            node.ieee,
            now,
            stall_timeout=self._stall_timeout(node),
            expected_duration=duration,
            eta=None if eta is None else now + eta,
        )
        if isinstance(decision, Admit):
            return None
        node.phase = Phase.WAITING
        node.waits += 1
        return self._wait_response(node, now, decision.request_time, None, client_mbp), Log(
            node.ieee, "wait_for_data", {"request_time": decision.request_time, "position": decision.position})

    def _wait_response(
        self, node: NodeState, now: float, request_time: float, period: int | None, client_mbp: bool
    ) -> ImageBlockResponse:
        """WAIT_FOR_DATA until ``request_time``; ``period`` None: the server's period in the
        node's unit."""
        node.wait_until = request_time
        layout = self.policy.wait_for_data_layout
        if layout == "legacy" or (layout == "auto" and not client_mbp):
            period = None
        elif period is None:
            period = self._period_for(node)
        if self.policy.time_reference == "relative":
            return ImageBlockResponse.wait_for_data(0, min(math.ceil(request_time - now), 0xFFFFFFFE), period)
        return ImageBlockResponse.wait_for_data(zcl_utc_time(now), zcl_utc_time(request_time), period)

    def _period_for(self, node: NodeState) -> int:
        """The server's MinimumBlockPeriod in the node's unit: milliseconds for clients
        found to count milliseconds, else seconds (the current specification), rounded up."""
        period_ms = self.min_block_period_ms
        value = period_ms if node.mbp_unit == "ms" else math.ceil(period_ms / 1000)
        return min(value, 0xFFFF)

    def _block_size(self, client_max: int, room: int, manufacturer_code: int) -> int:
        size = min(client_max, room, 0xFF)
        if self.policy.max_block_size is not None:
            size = min(size, self.policy.max_block_size)
        cap = self.policy.manufacturer_block_caps.get(manufacturer_code)
        if cap is not None:
            size = min(size, cap)
        return size

    def _start_attempt(self, node: NodeState, image: _Image, offset: int, now: float, out: list[Action]) -> None:
        """Begin a new attempt unless the node continues where it was."""
        if node.file_version != image.ota.file_version or node.image_size != image.size:
            self._switch_file(node, image)
        continuing = (
            node.attempt_start is not None
            and node.phase in (Phase.DOWNLOADING, Phase.WAITING, Phase.DOWNLOADED)
            and offset + _BACKTRACK >= node.position
        )
        node.wait_until = None
        if continuing:
            return
        if offset > 0:
            node.resumed_from = offset
            out.append(Log(node.ieee, "resumed", {"offset": offset, "coverage": node.coverage()}))
        elif node.served:
            node.restarts += 1
            node.resumed_from = 0
            out.append(Log(node.ieee, "restarted", {"restarts": node.restarts, "coverage": node.coverage()}))
        else:
            out.append(Log(node.ieee, "download_started", {"file_version": node.file_version}))
        node.attempt_start, node.attempt_offset, node.attempt_bytes, node.position = now, offset, 0, offset
        if node.outcome is not Outcome.FAILED:
            node.outcome = None

    def _record_served(self, node: NodeState, image: _Image, offset: int, size: int, now: float) -> list[Action]:
        if node.first_time is None:
            node.first_time = now
        if offset + size <= node.position and offset >= node.attempt_offset:
            node.repeats += 1
        node.last_time = now
        node.bytes_served += size
        node.blocks_served += 1
        node.attempt_bytes += size
        node.served = _add_range(node.served, offset, offset + size)
        node.position = offset + size
        eta = node.eta()
        if node.position >= image.size:
            first = node.phase is not Phase.DOWNLOADED
            node.phase = Phase.DOWNLOADED
            self.scheduler.touch(node.ieee, now, stall_timeout=self._stall_timeout(node), eta=now)
            if first:
                return [Log(node.ieee, "downloaded", {"bytes_served": node.bytes_served,
                                                      "coverage": node.coverage(),
                                                      "throughput": node.throughput()})]
            return []
        node.phase = Phase.DOWNLOADING
        self.scheduler.touch(node.ieee, now, stall_timeout=self._stall_timeout(node),
                             eta=None if eta is None else now + eta)
        return []

    # -- UpgradeEnd ------------------------------------------------------------------

    def _upgrade_end(self, ieee: str, req: UpgradeEndRequest, tsn: int, now: float) -> list[Action]:
        self._trains.pop(ieee, None)
        node = self._node(ieee)
        node.last_request = now
        self.scheduler.release(ieee)
        if req.status == Status.SUCCESS:
            key = (req.manufacturer_code, req.image_type, req.file_version)
            image = self._images.get(key)
            refusal = self._refusal(node, image, key)  # type: ignore[arg-type]
            if refusal is not None or image is None:
                return [Log(ieee, "upgrade_refused", {"reason": refusal}),
                        _reply(ieee, DefaultResponse(req.command_id, Status.ABORT), tsn)]
            out: list[Action] = []
            if node.file_version != image.ota.file_version:
                self._switch_file(node, image)
            if node.coverage() < image.size:
                out.append(Log(ieee, "incomplete_download", {"coverage": node.coverage(), "image_size": image.size}))
            if node.completed_at is None or node.outcome is not Outcome.UPGRADED:
                rate = node.throughput()
                if rate is not None:
                    self.state.completed += 1
                    self.state.completed_throughput += rate
            node.completed_at, node.outcome, node.reason = now, Outcome.UPGRADED, None
            when = self._activation_time(node, now)
            out.append(Log(ieee, "upgrade_end", {"status": "SUCCESS", "upgrade_at": when}))
            out.append(self._upgrade_end_response(node, image, now, when, tsn))
            return out
        name = status_name(req.status)
        ack = _reply(ieee, DefaultResponse(req.command_id, Status.SUCCESS), tsn)
        if req.status == Status.REQUIRE_MORE_IMAGE:
            node.phase = Phase.IDLE
            return [Log(ieee, "upgrade_end", {"status": name, "detail": "the node needs more images"}), ack]
        out = [Log(ieee, "upgrade_end", {"status": name})]
        out += self._failure(node, now, f"client reported {name}")
        return [*out, ack]

    def _activation_time(self, node: NodeState, now: float) -> float | None:
        policy = self.policy.upgrade_time
        if policy.mode is UpgradeTimeMode.NOW:
            return now
        if policy.mode is UpgradeTimeMode.DELAY:
            return now + policy.delay
        if policy.mode is UpgradeTimeMode.ABSOLUTE:
            assert policy.at is not None
            return max(now, policy.at)
        if self.state.activation_at is not None:
            return max(now, self.state.activation_at)
        return None

    def _upgrade_end_response(
        self, node: NodeState, image: _Image, now: float, when: float | None, tsn: int | None
    ) -> Reply:
        if when is None:
            node.phase, node.upgrade_at = Phase.AWAITING_COMMAND, None
            current = 0 if self.policy.time_reference == "relative" else zcl_utc_time(now)
            upgrade = UPGRADE_TIME_WAIT_FOR_COMMAND
        else:
            node.phase, node.upgrade_at = Phase.UPGRADING, when
            if self.policy.time_reference == "relative":
                current, upgrade = 0, min(math.ceil(when - now), 0xFFFFFFFE)
            else:
                current, upgrade = zcl_utc_time(now), zcl_utc_time(when)
        return _reply(node.ieee, UpgradeEndResponse(*image.key, current, upgrade), tsn)

    # -- failures, stalls, repeats ---------------------------------------------------

    def _failure(self, node: NodeState, now: float, reason: str, phase: Phase = Phase.IDLE) -> list[Action]:
        """A failed attempt: count it (the node goes to ``phase``); give up past max_retries."""
        self._trains.pop(node.ieee, None)
        self.scheduler.release(node.ieee)
        node.retries += 1
        node.reason = reason
        node.attempt_start = None
        node.wait_until = None
        if node.retries > self.policy.max_retries:
            node.phase, node.outcome = Phase.FAILED, Outcome.FAILED
            node.reason = f"gave up after {node.retries} failed attempts; last: {reason}"
            return [Log(node.ieee, "failed", {"reason": node.reason, "retries": node.retries})]
        node.phase = phase
        node.outcome = None
        node.notifies, node.notified_at = 0, now  # ImageNotify repeats count from here
        return [Log(node.ieee, "retry", {"reason": reason, "retries": node.retries})]

    def _stall_timeout(self, node: NodeState) -> float:
        cls = self._class(node)
        base = cls.verify_timeout if node.phase is Phase.DOWNLOADED else cls.stall_timeout
        return base + self.min_block_period_ms / 1000.0

    def _stall_deadline(self, node: NodeState) -> float | None:
        if node.ieee in self._trains:
            return None  # the server is talking; the node is not silent
        if node.phase in (Phase.DOWNLOADING, Phase.DOWNLOADED):
            times = [t for t in (node.last_request, node.last_time, node.wait_until) if t is not None]
        elif node.phase is Phase.WAITING:
            times = [t for t in (node.wait_until,) if t is not None]
        elif node.phase is Phase.OFFERED:
            times = [t for t in (node.last_request, node.wait_until) if t is not None]
        else:
            return None
        return max(times) + self._stall_timeout(node) if times else None

    def _check_stall(self, node: NodeState, now: float) -> list[Action]:
        deadline = self._stall_deadline(node)
        if deadline is None or now < deadline:
            return []
        cls_name = node.device_class or self.policy.default_device_class
        silence = round(now - (deadline - self._stall_timeout(node)), 3)
        if node.phase in (Phase.WAITING, Phase.OFFERED):
            # the node never came back: not a failure of ours, nothing was downloading
            was = node.phase.value
            node.phase = Phase.STALLED
            node.notifies, node.notified_at = 0, now
            self.scheduler.release(node.ieee)
            return [Log(node.ieee, "stalled", {"while": was, "silence": silence, "device_class": cls_name})]
        what = "UpgradeEndRequest" if node.phase is Phase.DOWNLOADED else "block request"
        return self._failure(node, now, f"no {what} for {silence} s (device class {cls_name})", Phase.STALLED)

    def _renotify_deadline(self, node: NodeState) -> float | None:
        if node.phase not in (Phase.NOTIFIED, Phase.STALLED) or node.notified_at is None:
            return None
        cls = self._class(node)
        if cls.notify_interval is None or node.notifies >= cls.max_notifies:
            return None
        if node.last_request is not None and node.last_request > node.notified_at and node.phase is Phase.NOTIFIED:
            return None
        return node.notified_at + cls.notify_interval

    def _renotify(self, node: NodeState, now: float) -> list[Action]:
        deadline = self._renotify_deadline(node)
        if deadline is None or now < deadline:
            return []
        return self.notify(now, node.ieee)

    # -- helpers ---------------------------------------------------------------------

    def _node(self, ieee: str) -> NodeState:
        node = self.state.nodes.get(ieee)
        if node is None:
            node = self.state.nodes[ieee] = NodeState(ieee)
        return node

    def _node_key(self, node: NodeState) -> tuple[int, int, int]:
        return (node.manufacturer_code or 0, node.image_type or 0, node.file_version or 0)

    def _class(self, node: NodeState) -> DeviceClassPolicy:
        name = node.device_class or self.policy.default_device_class
        return self.policy.device_classes.get(name) or self.policy.device_classes[self.policy.default_device_class]

    def _is_target(self, ieee: str) -> bool:
        return self.policy.targets is None or ieee in self.policy.targets

    def _expected_throughput(self) -> float:
        if self.state.completed > 0 and self.state.completed_throughput > 0:
            return self.state.completed_throughput / self.state.completed
        return self.policy.expected_throughput

    def _notify_payloads(self, payload_type: int, jitter: int) -> list[bytes]:
        if payload_type == 0:
            return [ImageNotify(0, jitter).to_bytes()]
        newest: dict[tuple[int, int], int] = {}
        for mfr, itype, version in self._images:
            newest[(mfr, itype)] = max(version, newest.get((mfr, itype), 0))
        out = []
        for (mfr, itype), version in sorted(newest.items()):
            out.append(ImageNotify(
                payload_type, jitter, mfr,
                itype if payload_type >= 2 else None,
                version if payload_type >= 3 else None,
            ).to_bytes())
        return list(dict.fromkeys(out))

    def _refuse(self, ieee: str, command_id: int, tsn: int, status: Status, why: str) -> list[Action]:
        """Default Response with an error status; no state change."""
        command = command_id if isinstance(command_id, int) and 0 <= command_id <= 0xFF else 0
        return [
            Log(ieee, "refused", {"command_id": command, "status": status.name, "detail": why}),
            _reply(ieee, DefaultResponse(command, status), tsn),
        ]


def _reply(ieee: str, command: Any, tsn: int | None) -> Reply:
    return Reply(ieee, int(command.command_id), command.to_bytes(), tsn, general=isinstance(command, DefaultResponse))


def _ieee(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"ieee must be a non-empty string, got {value!r}")
    return value


def _now(value: Any) -> float:
    return _finite("now", value)


def _eui_or_none(ieee: str) -> int | None:
    try:
        return eui64_from_str(ieee)
    except InvalidArgument:
        return None


def _add_range(ranges: list[list[int]], start: int, end: int) -> list[list[int]]:
    """Merge [start, end) into sorted disjoint ranges."""
    if end <= start:
        return ranges
    out: list[list[int]] = []
    placed = False
    for a, b in ranges:
        if b < start:
            out.append([a, b])
        elif end < a:
            if not placed:
                out.append([start, end])
                placed = True
            out.append([a, b])
        else:
            start, end = min(a, start), max(b, end)
    if not placed:
        out.append([start, end])
    out.sort()
    return out

