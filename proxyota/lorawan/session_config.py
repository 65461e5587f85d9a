"""Configuration of one LoRaWAN FUOTA campaign session (immutable, validated, JSON-able).

:class:`SessionConfig` holds everything the session machine needs besides the image: the
devices and their root keys, the multicast group (McAddr, McKey given by the caller: the
machine never draws random numbers), the TS004 session parameters (FragIndex, FragSize,
Descriptor, SessionCnt, BlockAckDelay), radio settings (region, DR, frequency, class C or
B), :class:`Timeouts`, the repair policy (:class:`proxyota.lorawan.repair.RepairPolicy`),
the TS006 :class:`RebootPolicy` and the firmware version expected after the reboot.

Bad values raise :class:`~proxyota.errors.InvalidArgument` naming the field.
``to_dict`` / ``from_dict`` give a JSON form (bytes as hex) so a service can store the
config next to the session state.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from proxyota.errors import InvalidArgument
from proxyota.lorawan.regions import Region, get_region
from proxyota.lorawan.repair import RepairPolicy, Stack

__all__ = ["DeviceConfig", "RebootPolicy", "SessionConfig", "Timeouts", "normalise_dev_eui"]


def normalise_dev_eui(dev_eui: object) -> str:
    """A DevEUI as 16 lower-case hex digits (InvalidArgument otherwise)."""
    if not isinstance(dev_eui, str):
        raise InvalidArgument(f"dev_eui must be a string of 16 hex digits, got {dev_eui!r}")
    text = dev_eui.strip().lower().replace("-", "").replace(":", "")
    if len(text) != 16 or any(c not in "0123456789abcdef" for c in text):
        raise InvalidArgument(f"dev_eui must be 16 hex digits, got {dev_eui!r}")
    return text


def _int(owner: str, name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgument(f"{owner}.{name} must be an int in {lo}..{hi}, got {value!r}")
    return value


def _num(owner: str, name: str, value: Any, lo: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidArgument(f"{owner}.{name} must be a finite number, got {value!r}")
    if value < lo:
        raise InvalidArgument(f"{owner}.{name} must be >= {lo}, got {value!r}")
    return float(value)


def _key(owner: str, name: str, value: Any, size: int = 16) -> bytes:
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            raise InvalidArgument(f"{owner}.{name} is not valid hex") from None
    if not isinstance(value, (bytes, bytearray, memoryview)) or len(bytes(value)) != size:
        raise InvalidArgument(f"{owner}.{name} must be {size} bytes")
    return bytes(value)


@dataclass(frozen=True)
class DeviceConfig:
    """One device: its application root key and optional stack hint.

    LoRaWAN 1.0.x devices derive McRootKey and the v2 DataBlockIntKey from ``gen_app_key``;
    LoRaWAN 1.1 devices (``lorawan_1_1=True``) from ``app_key``. ``stack`` tells the repair
    planner what NbFragReceived / MissingFrag mean for this device (see
    :class:`proxyota.lorawan.repair.Stack`); "unknown" is the conservative default.
    """

    gen_app_key: bytes | None = None
    app_key: bytes | None = None
    lorawan_1_1: bool = False
    stack: str = Stack.UNKNOWN.value

    def __post_init__(self) -> None:
        if not isinstance(self.lorawan_1_1, bool):
            raise InvalidArgument(f"DeviceConfig.lorawan_1_1 must be a bool, got {self.lorawan_1_1!r}")
        for name in ("gen_app_key", "app_key"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _key("DeviceConfig", name, value))
        needed = "app_key" if self.lorawan_1_1 else "gen_app_key"
        if getattr(self, needed) is None:
            raise InvalidArgument(
                f"DeviceConfig.{needed} is required for a LoRaWAN "
                f"{'1.1' if self.lorawan_1_1 else '1.0.x'} device"
            )
        try:
            object.__setattr__(self, "stack", Stack(self.stack).value)
        except ValueError:
            names = ", ".join(s.value for s in Stack)
            raise InvalidArgument(f"DeviceConfig.stack must be one of {names}, got {self.stack!r}") from None

    @property
    def root_key(self) -> bytes:
        """GenAppKey (1.0.x) or AppKey (1.1): the key McRootKey and DataBlockIntKey derive from."""
        key = self.app_key if self.lorawan_1_1 else self.gen_app_key
        assert key is not None
        return key

    def to_dict(self) -> dict[str, Any]:
        return {
            "gen_app_key": self.gen_app_key.hex() if self.gen_app_key else None,
            "app_key": self.app_key.hex() if self.app_key else None,
            "lorawan_1_1": self.lorawan_1_1,
            "stack": self.stack,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceConfig:
        return cls(
            gen_app_key=data.get("gen_app_key"),
            app_key=data.get("app_key"),
            lorawan_1_1=data.get("lorawan_1_1", False),
            stack=data.get("stack", Stack.UNKNOWN.value),
        )


@dataclass(frozen=True)
class Timeouts:
    """Timing knobs, in seconds.

    answer: how long one queued class A request may take to be answered (the device must
        uplink to fetch it, then uplink its answer); a request queued behind others gets
        one ``answer`` more per request ahead of it.
    delivery: None, or delivery tracking (the driver reports each downlink's transmission
        with :meth:`FuotaSession.on_delivered`, e.g. from ChirpStack ``txack`` events): a
        request then waits up to ``delivery`` s for the device to fetch it (class A: its next
        uplink) and is never resent while still queued; ``answer`` counts from the
        transmission. A request never fetched fails the device (``no_answer``).
    max_retries: resends of an unanswered request before giving up on it.
    setup_window: from ``start`` to the multicast session start (every device must be set
        up by then). ``reopen_window``: the same for a reopened session (default: equal).
    status_margin: added to the 2^(BlockAckDelay+4) s devices may wait before answering a
        multicast FragSessionStatusReq.
    start_guard: first fragment this long after the session start.
    boot_margin: after the announced reboot time, wait this long before DevVersionReq.
    clock_tolerance: how far a device's TimeToStart may disagree with ours before a resync.
    session_lead: None (the session starts at ``start + setup_window``), or the session
        starts as soon as the fleet is ready: once every device still in the campaign is set
        up and waits only for its session request (or at ``start + setup_window -
        session_lead`` at the latest), the session time is fixed ``session_lead`` s ahead
        (the time the session requests need to reach the devices) and the requests go out.
        A reopened session starts ``2 * session_lead`` s after the reopening (at most
        ``reopen_window``): its requests meet the busiest downlink traffic. ChirpStack's FUOTA server picks its session time the same way,
        after its setup steps.
    """

    answer: float = 300.0
    delivery: float | None = None
    max_retries: int = 2
    setup_window: float = 3600.0
    reopen_window: float | None = None
    status_margin: float = 10.0
    start_guard: float = 2.0
    boot_margin: float = 120.0
    clock_tolerance: float = 20.0
    session_lead: float | None = None

    def __post_init__(self) -> None:
        for name in ("answer", "setup_window"):
            if _num("Timeouts", name, getattr(self, name)) <= 0:
                raise InvalidArgument(f"Timeouts.{name} must be > 0")
        if self.delivery is not None and _num("Timeouts", "delivery", self.delivery) <= 0:
            raise InvalidArgument("Timeouts.delivery must be > 0")
        if self.reopen_window is not None and _num("Timeouts", "reopen_window", self.reopen_window) <= 0:
            raise InvalidArgument("Timeouts.reopen_window must be > 0")
        if self.session_lead is not None and not (
                0 < _num("Timeouts", "session_lead", self.session_lead) <= self.setup_window):
            raise InvalidArgument("Timeouts.session_lead must be > 0 and <= setup_window")
        for name in ("status_margin", "start_guard", "boot_margin", "clock_tolerance"):
            _num("Timeouts", name, getattr(self, name))
        _int("Timeouts", "max_retries", self.max_retries, 0, 100)

    @property
    def reopen(self) -> float:
        return self.setup_window if self.reopen_window is None else self.reopen_window


@dataclass(frozen=True)
class RebootPolicy:
    """When TS006 devices reboot into the new image once they have it.

    mode "countdown": DevRebootCountdownReq(``delay``) as soon as a device completes.
    mode "time": DevRebootTimeReq(``at``), one GPS time for the whole campaign; a device
    completing less than ``delay`` s before ``at`` (or after it) reboots ``delay`` s after
    its completion instead.
    """

    mode: str = "countdown"
    delay: int = 60
    at: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("countdown", "time"):
            raise InvalidArgument(f"RebootPolicy.mode must be 'countdown' or 'time', got {self.mode!r}")
        _int("RebootPolicy", "delay", self.delay, 1, 0xFFFFFE)
        if self.mode == "time":
            if self.at is None:
                raise InvalidArgument("RebootPolicy.at (GPS seconds) is required in mode 'time'")
            _int("RebootPolicy", "at", self.at, 1, 0xFFFFFFFE)
        elif self.at is not None:
            raise InvalidArgument("RebootPolicy.at is only used in mode 'time'")


@dataclass(frozen=True)
class SessionConfig:
    """Everything a :class:`~proxyota.lorawan.session.FuotaSession` needs besides the image.

    ``frag_size`` None: the largest fragment of the DR (``region.max_frag_size(dr)``).
    ``dr`` / ``frequency`` None: the region's class C default (RX2) or, for class B, its
    ping-slot DR and frequency (0 = hopping where the region hops). ``frag_versions``: the
    TS004 versions the campaign accepts; a device speaking another is reported
    ``package_not_supported``. Devices speaking different accepted versions get one
    fragmentation session each (v1 and v2 parity codes differ): ``frag_index`` for the
    first version set up, ``(frag_index + 1) % 4`` for the other.
    ``max_rounds`` overrides ``repair_policy.max_rounds`` when given.
    ``expected_fw_version``: what DevVersionAns must report after the reboot (None: any).
    ``session_time_out``: a fixed TimeOut for the session requests (class C: 2^TimeOut s,
    class B: 128·2^TimeOut s) instead of the one sized from the expected work.
    ``min_frame_spacing``: the network server's own minimum spacing of multicast frames
    (ChirpStack v4: ``multicast_class_c_margin``, 5 s by default); fragments are paced at
    least this far apart, or they pile up in its queue and reach the devices after their
    class C window has closed.
    """

    devices: Mapping[str, DeviceConfig]
    mc_addr: int
    mc_key: bytes
    mc_group_id: int = 0
    frag_index: int = 0
    frag_size: int | None = None
    frag_versions: tuple[int, ...] = (1, 2)
    descriptor: bytes = bytes(4)
    session_cnt: int = 0
    region: str = "EU868"
    dr: int | None = None
    frequency: int | None = None
    device_class: str = "C"
    ping_slot_periodicity: int = 0
    block_ack_delay: int = 0
    ack_reception: bool = True
    timeouts: Timeouts = field(default_factory=Timeouts)
    repair_policy: RepairPolicy = field(default_factory=RepairPolicy)
    max_rounds: int | None = None
    reboot: RebootPolicy = field(default_factory=RebootPolicy)
    expected_fw_version: int | None = None
    session_time_out: int | None = None
    clock_sync_required: bool = True
    resync_nb_transmissions: int = 1
    min_mc_fcount: int = 0
    max_mc_fcount: int = 0xFFFFFFFF
    min_frame_spacing: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.devices, Mapping) or not self.devices:
            raise InvalidArgument("SessionConfig.devices must be a non-empty mapping dev_eui -> DeviceConfig")
        devices: dict[str, DeviceConfig] = {}
        for eui, dev in self.devices.items():
            key = normalise_dev_eui(eui)
            if key in devices:
                raise InvalidArgument(f"SessionConfig.devices lists {key} twice")
            if isinstance(dev, Mapping):
                dev = DeviceConfig.from_dict(dev)
            if not isinstance(dev, DeviceConfig):
                raise InvalidArgument(f"SessionConfig.devices[{key}] must be a DeviceConfig")
            devices[key] = dev
        object.__setattr__(self, "devices", dict(sorted(devices.items())))
        _int("SessionConfig", "mc_addr", self.mc_addr, 0, 0xFFFFFFFF)
        object.__setattr__(self, "mc_key", _key("SessionConfig", "mc_key", self.mc_key))
        _int("SessionConfig", "mc_group_id", self.mc_group_id, 0, 3)
        _int("SessionConfig", "frag_index", self.frag_index, 0, 3)
        object.__setattr__(self, "descriptor", _key("SessionConfig", "descriptor", self.descriptor, 4))
        _int("SessionConfig", "session_cnt", self.session_cnt, 0, 0xFFFF)
        versions = tuple(self.frag_versions)
        if not versions or any(v not in (1, 2) for v in versions) or len(set(versions)) != len(versions):
            raise InvalidArgument(f"SessionConfig.frag_versions must be distinct values of 1, 2; got {versions!r}")
        object.__setattr__(self, "frag_versions", versions)
        if self.device_class not in ("C", "B"):
            raise InvalidArgument(f"SessionConfig.device_class must be 'C' or 'B', got {self.device_class!r}")
        _int("SessionConfig", "ping_slot_periodicity", self.ping_slot_periodicity, 0, 7)
        _int("SessionConfig", "block_ack_delay", self.block_ack_delay, 0, 7)
        for name in ("ack_reception", "clock_sync_required"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgument(f"SessionConfig.{name} must be a bool")
        if not isinstance(self.timeouts, Timeouts):
            raise InvalidArgument("SessionConfig.timeouts must be a Timeouts")
        if not isinstance(self.repair_policy, RepairPolicy):
            raise InvalidArgument("SessionConfig.repair_policy must be a RepairPolicy")
        if not isinstance(self.reboot, RebootPolicy):
            raise InvalidArgument("SessionConfig.reboot must be a RebootPolicy")
        if self.max_rounds is not None:
            _int("SessionConfig", "max_rounds", self.max_rounds, 1, 1000)
        if self.expected_fw_version is not None:
            _int("SessionConfig", "expected_fw_version", self.expected_fw_version, 0, 0xFFFFFFFF)
        if self.session_time_out is not None:
            _int("SessionConfig", "session_time_out", self.session_time_out, 0, 15)
        _int("SessionConfig", "resync_nb_transmissions", self.resync_nb_transmissions, 1, 7)
        _int("SessionConfig", "min_mc_fcount", self.min_mc_fcount, 0, 0xFFFFFFFF)
        _int("SessionConfig", "max_mc_fcount", self.max_mc_fcount, self.min_mc_fcount, 0xFFFFFFFF)
        if _num("SessionConfig", "min_frame_spacing", self.min_frame_spacing) < 0:
            raise InvalidArgument("SessionConfig.min_frame_spacing must be >= 0")
        # radio: resolve the defaults now so every user sees the same values
        region = self.region_params
        if self.dr is None:
            dr = region.class_b_default[1] if self.device_class == "B" else region.class_c_default[1]
            object.__setattr__(self, "dr", dr)
        region.max_frag_size(self.dr)  # DR defined and usable for downlinks
        if self.frequency is None:
            if self.device_class == "B":
                freq = region.class_b_default[0] or 0
            else:
                freq = region.class_c_default[0]
            object.__setattr__(self, "frequency", freq)
        if self.frequency != 0 or self.device_class == "C":
            region.check_frequency(self.frequency)
            region.sub_band_for(self.frequency)
        max_frag = region.max_frag_size(self.dr)
        if self.frag_size is None:
            object.__setattr__(self, "frag_size", max_frag)
        _int("SessionConfig", "frag_size", self.frag_size, 1, max_frag)

    @property
    def region_params(self) -> Region:
        return get_region(self.region)

    @property
    def policy(self) -> RepairPolicy:
        """The repair policy with ``max_rounds`` applied."""
        if self.max_rounds is None:
            return self.repair_policy
        return dataclasses.replace(self.repair_policy, max_rounds=self.max_rounds)

    @property
    def mc_group_bit_mask(self) -> int:
        return 1 << self.mc_group_id

    # -- JSON ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "devices":
                value = {eui: dev.to_dict() for eui, dev in value.items()}
            elif isinstance(value, bytes):
                value = value.hex()
            elif dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionConfig:
        if not isinstance(data, Mapping):
            raise InvalidArgument("a SessionConfig must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise InvalidArgument(f"SessionConfig has no field(s) {', '.join(sorted(unknown))}")
        kwargs = dict(data)
        try:
            kwargs["devices"] = {eui: DeviceConfig.from_dict(d) for eui, d in data["devices"].items()}
            if "timeouts" in data:
                kwargs["timeouts"] = Timeouts(**data["timeouts"])
            if "repair_policy" in data:
                kwargs["repair_policy"] = RepairPolicy(**data["repair_policy"])
            if "reboot" in data:
                kwargs["reboot"] = RebootPolicy(**data["reboot"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise InvalidArgument(f"malformed SessionConfig: {exc}") from None
        if "frag_versions" in data:
            kwargs["frag_versions"] = tuple(data["frag_versions"])
        return cls(**kwargs)
