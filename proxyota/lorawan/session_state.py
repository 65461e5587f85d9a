"""The serializable state of a LoRaWAN FUOTA campaign session.

Everything :class:`~proxyota.lorawan.session.FuotaSession` knows between two events lives
in one :class:`SessionState`: a tree of dataclasses holding only plain values (str, int,
float, bool, None, lists, str-keyed dicts; byte strings as hex). ``to_dict()`` gives a
JSON-serialisable dict and ``SessionState.from_dict()`` rebuilds an equal state, so a
service can persist it after every event and resume after a restart. Nothing derived
(keys, fragments, the FEC) is stored: it is recomputed from the config and the image.

Per device (:class:`DeviceState`): its :class:`Phase`, the package versions it speaks, the
requests waiting for an answer (:class:`PendingRequest`, with deadline and attempts), its
last FragSessionStatusAns, reboot/verify times, its outcome once it has one, and a history
of events (what it sent, what was decided). Per fragmentation session (:class:`LaneState`,
one per TS004 version in use): FragIndex and the rounds sent (counter ranges, the input of
the repair planner). Campaign-wide: :class:`Stage`, the session window, the multicast
transmission queue (:class:`TxItem` counter ranges, never the fragments themselves), the
duty-cycle account and the figures of the report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping

from proxyota.errors import InvalidArgument

__all__ = [
    "STATE_FORMAT",
    "DeviceState",
    "LaneState",
    "PendingRequest",
    "Phase",
    "SessionState",
    "Stage",
    "TERMINAL_PHASES",
    "TxItem",
]

STATE_FORMAT = 1


class Phase(StrEnum):
    """Where one device is in the campaign."""

    PROBE = "probe"  # PackageVersionReq on the four ports
    CLOCK_SYNC = "clock_sync"  # waiting for an AppTimeReq after ForceDeviceResyncReq
    MC_SETUP = "mc_setup"  # McGroupSetupReq
    FRAG_SETUP = "frag_setup"  # FragSessionSetupReq
    SESSION_SETUP = "session_setup"  # McClassCSessionReq / McClassBSessionReq
    READY = "ready"  # set up, waiting for the session start
    RECEIVING = "receiving"  # in the multicast session, rounds and repairs
    COMPLETE = "complete"  # has the data block (transient: reboot or done follows)
    REBOOTING = "rebooting"  # TS006 reboot requested / announced
    VERIFYING = "verifying"  # DevVersionReq after the reboot
    DONE = "done"  # successful
    FAILED = "failed"  # see the outcome reason


TERMINAL_PHASES = frozenset({Phase.DONE, Phase.FAILED})


class Stage(StrEnum):
    """Where the campaign as a whole is."""

    CREATED = "created"  # start() not called yet
    SETUP = "setup"  # unicast setup, before the session start
    TRANSMITTING = "transmitting"  # multicast fragments / status requests being paced
    POLLING = "polling"  # waiting for FragSessionStatusAns after a round
    REOPENING = "reopening"  # window closed: new session requested, waiting for its start
    IDLE = "idle"  # nothing to send; waiting for confirmations
    WRAPUP = "wrapup"  # multicast over; reboots / version checks in progress
    FINISHED = "finished"  # every device has its outcome


def _check_keys(cls: type, data: Any) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise InvalidArgument(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
    return data


_LEAVES = (str, int, float, bool, type(None))
_FIELDS: dict[type, tuple[str, ...]] = {}


def _plain(value: Any) -> Any:
    """Deep copy into JSON-native values (StrEnum -> str, tuples -> lists).

    Called on the whole state at every persisted step, so plain leaves and dicts take the
    shortest path (exact type checks; dataclass field names cached per class)."""
    kind = type(value)
    if kind in _LEAVES:
        return value
    if kind is dict:
        return {str(k): (v if type(v) in _LEAVES else _plain(v)) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [v if type(v) in _LEAVES else _plain(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    names = _FIELDS.get(kind)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return {n: _plain(getattr(value, n)) for n in names}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _simple(cls: type, data: Any) -> Any:
    data = _check_keys(cls, data)
    try:
        return cls(**{k: _plain(v) for k, v in data.items()})
    except TypeError as exc:
        raise InvalidArgument(f"malformed {cls.__name__}: {exc}") from None


@dataclass
class PendingRequest:
    """A unicast request waiting for its answer (payload as hex, resent as is on retry).

    ``delivered_at``: when the network server reported the downlink transmitted (only with
    ``Timeouts.delivery``); until then the request is still in the device's queue."""

    kind: str
    fport: int
    payload: str
    sent_at: float
    deadline: float
    attempts: int = 1
    delivered_at: float | None = None
    waits: int = 0  # delivery windows waited through while still queued

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PendingRequest:
        return _simple(cls, data)


@dataclass
class DeviceState:
    """Everything known about one device."""

    dev_eui: str
    phase: Phase = Phase.PROBE
    # fPort (as str) -> package version spoken; 0 = not supported; absent = not known yet
    versions: dict[str, int] = field(default_factory=dict)
    answered: bool = False  # answered anything at all
    pending: dict[str, PendingRequest] = field(default_factory=dict)
    # downlinks queued at the network server and not reported transmitted yet (delivery
    # tracking only): a new request waits behind them
    unfetched: int = 0
    synced_at: float | None = None
    resync: bool = False  # in CLOCK_SYNC because TimeToStart disagreed
    resyncs: int = 0
    clock_skipped: bool = False  # no AppTimeReq after ForceDeviceResyncReq: went on without
    mc_setup_sent: bool = False
    frag_setup_sent: bool = False
    lane: str | None = None  # key of the LaneState (the TS004 version)
    session_time: int | None = None  # session start the device accepted
    # last FragSessionStatusAns: {"nb_frag_received", "missing_frag", "round", "at"}
    report: dict[str, Any] | None = None
    unanswered_polls: int = 0
    upgrade_asked_round: int | None = None  # DevUpgradeImageReq sent after this round
    image_absent_round: int | None = None  # DevUpgradeImageAns said "no image" at this round
    confirming: bool = False  # judged by a DevUpgradeImageReq before done / failed
    confirm_reason: str | None = None  # reason if the image is not valid (None: planner said done)
    confirm_detail: dict[str, Any] = field(default_factory=dict)
    block_ack_at: float | None = None  # last FragDataBlockReceivedAns sent
    completion: str | None = None  # what signalled completion
    completed_at: float | None = None
    reboot_attempts: int = 0
    reboot_at: float | None = None
    verify_at: float | None = None
    fw_version: int | None = None
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    finished_at: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceState:
        data = dict(_check_keys(cls, data))
        try:
            data["phase"] = Phase(data.get("phase", Phase.PROBE))
        except ValueError:
            raise InvalidArgument(f"DeviceState.phase: unknown phase {data.get('phase')!r}") from None
        pending = data.get("pending", {})
        if not isinstance(pending, Mapping):
            raise InvalidArgument("DeviceState.pending must be an object")
        data["pending"] = {k: PendingRequest.from_dict(v) for k, v in pending.items()}
        try:
            return cls(**{k: (v if k in ("phase", "pending") else _plain(v)) for k, v in data.items()})
        except TypeError as exc:
            raise InvalidArgument(f"malformed DeviceState: {exc}") from None


@dataclass
class LaneState:
    """One TS004 fragmentation session (one parity-code version) inside the campaign.

    ``rounds``: what was sent, in order; each ``{"multicast": [first, count] | None,
    "unicast": {dev_eui: [first, count]}}`` (the repair planner's ``SentRound``).
    """

    version: int
    frag_index: int
    rounds: list[dict[str, Any]] = field(default_factory=list)
    highest: int = 0  # highest counter N used so far
    finished: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LaneState:
        return _simple(cls, data)


@dataclass
class TxItem:
    """A queued multicast transmission: fragments ``next_n..last_n`` of a lane, or one
    FragSessionStatusReq (``kind`` "status")."""

    kind: str
    lane: str
    next_n: int = 0
    last_n: int = 0
    participants: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TxItem:
        return _simple(cls, data)


@dataclass
class SessionState:
    """The whole campaign session (see the module docstring)."""

    image_sha256: str
    image_length: int
    nb_frag: int
    frag_size: int
    padding: int
    round1_size: int
    format: int = STATE_FORMAT
    stage: Stage = Stage.CREATED
    started_at: float | None = None
    session_time: int | None = None
    time_out: int | None = None
    session_end: float | None = None
    session_committed: bool = False  # session time fixed and told (Timeouts.session_lead)
    devices: dict[str, DeviceState] = field(default_factory=dict)
    lanes: dict[str, LaneState] = field(default_factory=dict)
    tx_queue: list[TxItem] = field(default_factory=list)
    next_tx_at: float | None = None
    poll_started_at: float | None = None
    poll_until: float | None = None
    poll_awaited: list[str] = field(default_factory=list)
    duty_cycle: dict[str, float] = field(default_factory=dict)
    group_created: bool = False
    group_deleted: bool = False
    reopenings: int = 0
    multicast_fragments: int = 0
    multicast_status: int = 0
    unicast_fragments: int = 0
    airtime: float = 0.0
    finished_at: float | None = None
    log: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (no shared mutable parts).

        Called at every persisted step: the append-only journals (each device's ``history``
        and the campaign ``log``, most of the document) are converted once per entry and
        kept, so a step costs what changed, not the whole history again."""
        out: dict[str, Any] = {}
        for name in _field_names(SessionState):
            value = getattr(self, name)
            if name == "devices":
                out[name] = {str(eui): self._device_dict(dev) for eui, dev in value.items()}
            elif name == "log":
                out[name] = self._journal(value)
            else:
                out[name] = _plain(value)
        return out

    def _device_dict(self, dev: DeviceState) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in _field_names(DeviceState):
            v = getattr(dev, name)
            if type(v) in _LEAVES:  # most fields: no call at all
                out[name] = v
            elif name == "history":
                out[name] = self._journal(v)
            else:
                out[name] = _plain(v)
        return out

    def _journal(self, entries: list[dict[str, Any]]) -> list[Any]:
        """``_plain(entries)`` for an append-only list, converting only the new entries
        (the machine appends history entries and never changes or removes one)."""
        cache: dict[int, tuple[list, int, list]] = self.__dict__.setdefault("_journals", {})
        hit = cache.get(id(entries))
        if hit is None or hit[0] is not entries or len(entries) < hit[1]:
            plain = [_plain(e) for e in entries]
        else:
            plain = hit[2]
            plain.extend(_plain(e) for e in entries[hit[1]:])
        cache[id(entries)] = (entries, len(entries), plain)
        return plain[:]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionState:
        """Rebuild a state from :meth:`to_dict` output (InvalidArgument if malformed)."""
        data = dict(_check_keys(cls, data))
        if data.get("format", STATE_FORMAT) != STATE_FORMAT:
            raise InvalidArgument(f"unsupported session state format {data.get('format')!r}")
        try:
            data["stage"] = Stage(data.get("stage", Stage.CREATED))
        except ValueError:
            raise InvalidArgument(f"SessionState.stage: unknown stage {data.get('stage')!r}") from None
        for name, sub in (("devices", DeviceState), ("lanes", LaneState)):
            value = data.get(name, {})
            if not isinstance(value, Mapping):
                raise InvalidArgument(f"SessionState.{name} must be an object")
            data[name] = {k: sub.from_dict(v) for k, v in value.items()}
        queue = data.get("tx_queue", [])
        if not isinstance(queue, list):
            raise InvalidArgument("SessionState.tx_queue must be a list")
        data["tx_queue"] = [TxItem.from_dict(v) for v in queue]
        structured = ("stage", "devices", "lanes", "tx_queue")
        try:
            return cls(**{k: (v if k in structured else _plain(v)) for k, v in data.items()})
        except TypeError as exc:
            raise InvalidArgument(f"malformed SessionState: {exc}") from None
