"""LoRaWAN campaign options: the ``[lorawan]`` defaults of the config and the ``options``
object of a campaign-create request, validated with errors that name the field.

A request's options override the config's defaults key by key (``timeouts`` and ``reboot``
merge one level deeper). :func:`parse_options` checks names and types and builds the
protocol objects (:class:`~proxyota.lorawan.session_config.Timeouts`,
:class:`~proxyota.lorawan.session_config.RebootPolicy`, the repair policy) and a probe
:class:`~proxyota.lorawan.session_config.SessionConfig`, so everything the session machine
would refuse is refused here, before anything is stored, with the option's path
(``options.timeouts.answer``, ``[lorawan] multicast_dr``...) in the message.

Fields (all optional):

=======================  =============================================================
``region``               RP002 region name (``EU868``, ``US915``, ...)
``device_class``         ``"C"`` or ``"B"`` (multicast session class)
``dr``                   multicast data rate (default: the region's class C / B default)
``frequency``            multicast frequency in Hz (class B: 0 = hopping)
``ping_slot_periodicity``  class B, 0..7
``frag_size``            TS004 FragSize (default: the largest the DR carries)
``frag_versions``        accepted TS004 versions in order of preference, e.g. ``[2, 1]``
``block_ack_delay``      TS004 BlockAckDelay 0..7
``ack_reception``        TS004 v2 AckReception
``initial_redundancy``   first-round redundancy as a fraction of the fragments
``max_rounds``           repair rounds in all (first included)
``unicast_max_devices``  repair by unicast only when at most this many devices remain
                         (0: always by multicast)
``session_time_out``     fixed class C/B TimeOut exponent 0..15
``expected_fw_version``  what DevVersionAns must report after the reboot (default: the
                         image's ``firmware_version``)
``reboot``               ``{mode = "countdown" | "time", delay = s, at = GPS s}``
``timeouts``             ``{answer, delivery, max_retries, setup_window, reopen_window,
                         session_lead, status_margin, start_guard, boot_margin,
                         clock_tolerance}``
``clock_sync_required``  bool
=======================  =============================================================
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from proxyota.errors import InvalidArgument
from proxyota.lorawan.regions import get_region
from proxyota.lorawan.repair import RepairPolicy
from proxyota.lorawan.session_config import (
    DeviceConfig,
    RebootPolicy,
    SessionConfig,
    Timeouts,
)

__all__ = ["CampaignOptions", "OptionError", "merge_options", "parse_options", "OPTION_FIELDS"]


class OptionError(InvalidArgument):
    """A bad option; ``field`` is its path (``options.timeouts.answer``)."""

    def __init__(self, field_path: str, message: str) -> None:
        self.field = field_path
        super().__init__(f"{field_path}: {message}")


_TIMEOUT_FIELDS = {f.name for f in dataclasses.fields(Timeouts)}
_REBOOT_FIELDS = {f.name for f in dataclasses.fields(RebootPolicy)}

#: option name -> (accepted python types, description); bool is never an int here
OPTION_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "region": ((str,), "RP002 region name"),
    "device_class": ((str,), "multicast session class, C or B"),
    "dr": ((int,), "multicast data rate"),
    "frequency": ((int,), "multicast frequency in Hz"),
    "ping_slot_periodicity": ((int,), "class B ping-slot periodicity 0..7"),
    "frag_size": ((int,), "TS004 FragSize in bytes"),
    "frag_versions": ((list,), "accepted TS004 versions in order of preference"),
    "block_ack_delay": ((int,), "TS004 BlockAckDelay 0..7"),
    "ack_reception": ((bool,), "TS004 v2 AckReception"),
    "initial_redundancy": ((int, float), "first-round redundancy (fraction of NbFrag)"),
    "max_rounds": ((int,), "transmission rounds in all"),
    "unicast_max_devices": ((int,), "repair by unicast when at most this many devices remain "
                                    "(0: always by multicast)"),
    "session_time_out": ((int,), "fixed class C/B TimeOut exponent 0..15"),
    "expected_fw_version": ((int,), "firmware version expected after the reboot"),
    "reboot": ((dict,), "reboot policy {mode, delay, at}"),
    "timeouts": ((dict,), "protocol timeouts in seconds"),
    "clock_sync_required": ((bool,), "require TS003 clock sync"),
}


@dataclass(frozen=True)
class CampaignOptions:
    """Validated options (JSON form in :attr:`values`, protocol objects alongside)."""

    values: Mapping[str, Any]
    timeouts: Timeouts
    reboot: RebootPolicy
    repair_policy: RepairPolicy
    extra: Mapping[str, Any] = field(default_factory=dict)

    def session_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`SessionConfig` (besides devices and keys)."""
        v = self.values
        kw: dict[str, Any] = {
            "timeouts": self.timeouts,
            "reboot": self.reboot,
            "repair_policy": self.repair_policy,
        }
        for name in ("region", "device_class", "dr", "frequency", "ping_slot_periodicity",
                     "frag_size", "block_ack_delay", "ack_reception", "max_rounds",
                     "session_time_out", "expected_fw_version", "clock_sync_required"):
            if v.get(name) is not None:
                kw[name] = v[name]
        if v.get("frag_versions") is not None:
            kw["frag_versions"] = tuple(v["frag_versions"])
        return kw


def merge_options(defaults: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``defaults``; ``timeouts`` / ``reboot`` merge key by key."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in defaults.items()}
    for key, value in override.items():
        if key in ("timeouts", "reboot") and isinstance(value, dict) and isinstance(out.get(key), dict):
            merged = dict(out[key])
            merged.update(value)
            if key == "reboot" and value.get("mode") == "countdown" and "at" not in value:
                merged.pop("at", None)
            out[key] = merged
        else:
            out[key] = value
    return out


def type_ok(value: Any, types: tuple[type, ...]) -> bool:
    """``value`` is one of ``types`` as a JSON/TOML value: a bool is not an int, and a
    non-finite float is no number."""
    if isinstance(value, bool) and bool not in types:
        return False
    if isinstance(value, float) and float in types and not math.isfinite(value):
        return False
    return isinstance(value, types)


_FIELD_IN_MESSAGE = re.compile(r"\b(SessionConfig|Timeouts|RebootPolicy|RepairPolicy)\.(\w+)")
_SECTION_OF = {"SessionConfig": "", "Timeouts": "timeouts.", "RebootPolicy": "reboot.",
               "RepairPolicy": ""}
_REPAIR_FIELD_NAMES = {"initial_redundancy": "initial_redundancy", "max_rounds": "max_rounds"}


def _field_of(message: str, prefix: str) -> str:
    m = _FIELD_IN_MESSAGE.search(message)
    if not m:
        return prefix.rstrip(".") or "options"
    section, name = m.group(1), m.group(2)
    if section == "RepairPolicy":
        name = _REPAIR_FIELD_NAMES.get(name, name)
    return f"{prefix}{_SECTION_OF[section]}{name}"


def parse_options(
    doc: Any,
    *,
    prefix: str = "options.",
    names: Mapping[str, str] | None = None,
) -> CampaignOptions:
    """Validate an options mapping; raise :class:`OptionError` naming the bad field.

    ``prefix`` is put before field names in errors; ``names`` renames fields in errors
    (the config calls ``dr`` ``multicast_dr``, for instance).
    """
    names = dict(names or {})

    def path(name: str) -> str:
        return f"{prefix}{names.get(name, name)}"

    if not isinstance(doc, Mapping):
        raise OptionError(prefix.rstrip(".") or "options", "must be an object")
    for key in doc:
        if key not in OPTION_FIELDS:
            known = ", ".join(sorted(names.get(k, k) for k in OPTION_FIELDS))
            raise OptionError(path(str(key)), f"unknown option (known: {known})")
    values: dict[str, Any] = {}
    for key, value in doc.items():
        types, what = OPTION_FIELDS[key]
        if value is None:
            values[key] = None
            continue
        if not type_ok(value, types):
            raise OptionError(path(key), f"must be {what} ({'/'.join(t.__name__ for t in types)}), "
                                         f"got {value!r}")
        values[key] = value

    # nested objects
    t_doc = values.get("timeouts") or {}
    for key, value in t_doc.items():
        if key not in _TIMEOUT_FIELDS:
            raise OptionError(f"{path('timeouts')}.{key}",
                              f"unknown timeout (known: {', '.join(sorted(_TIMEOUT_FIELDS))})")
        if value is not None and not type_ok(value, (int,) if key == "max_retries" else (int, float)):
            raise OptionError(f"{path('timeouts')}.{key}", f"must be a number, got {value!r}")
    r_doc = values.get("reboot") or {}
    for key, value in r_doc.items():
        if key not in _REBOOT_FIELDS:
            raise OptionError(f"{path('reboot')}.{key}",
                              f"unknown reboot field (known: {', '.join(sorted(_REBOOT_FIELDS))})")
    def nested_error(section: str, exc: Exception) -> OptionError:
        field_path = path(section)
        m = _FIELD_IN_MESSAGE.search(str(exc))
        if m:
            field_path += "." + m.group(2)
        return OptionError(field_path, str(exc))

    try:
        timeouts = Timeouts(**{k: v for k, v in t_doc.items() if v is not None})
    except (InvalidArgument, TypeError) as exc:
        raise nested_error("timeouts", exc) from None
    try:
        reboot = RebootPolicy(**{k: v for k, v in r_doc.items() if v is not None})
    except (InvalidArgument, TypeError) as exc:
        raise nested_error("reboot", exc) from None
    frag_versions = values.get("frag_versions")
    if frag_versions is not None:
        if not frag_versions or any(v not in (1, 2) or isinstance(v, bool) for v in frag_versions) \
                or len(set(frag_versions)) != len(frag_versions):
            raise OptionError(path("frag_versions"),
                              f"must list distinct TS004 versions 1 and/or 2, got {frag_versions!r}")
    redundancy = values.get("initial_redundancy")
    repair_kw: dict[str, Any] = {}
    if redundancy is not None:
        repair_kw["initial_redundancy"] = float(redundancy)
    if values.get("unicast_max_devices") is not None:
        repair_kw["unicast_max_devices"] = values["unicast_max_devices"]
    try:
        repair = RepairPolicy(**repair_kw)
    except InvalidArgument as exc:
        m = _FIELD_IN_MESSAGE.search(str(exc))
        raise OptionError(path(m.group(2) if m else "initial_redundancy"), str(exc)) from None

    # radio settings: check each one where the region answers without naming the field
    region_name = values.get("region") or "EU868"
    try:
        region = get_region(region_name)
    except InvalidArgument as exc:
        raise OptionError(path("region"), str(exc)) from None
    if values.get("device_class") not in (None, "C", "B"):
        raise OptionError(path("device_class"), f"must be 'C' or 'B', got {values['device_class']!r}")
    dr = values.get("dr")
    if dr is not None:
        try:
            max_frag = region.max_frag_size(dr)
        except InvalidArgument as exc:
            raise OptionError(path("dr"), str(exc)) from None
        frag_size = values.get("frag_size")
        if frag_size is not None and not 1 <= frag_size <= max_frag:
            raise OptionError(path("frag_size"),
                              f"must be 1..{max_frag} at DR{dr} in {region.name}, got {frag_size}")
    freq = values.get("frequency")
    if freq is not None and not (freq == 0 and values.get("device_class") == "B"):
        try:
            region.sub_band_for(freq)
        except InvalidArgument as exc:
            raise OptionError(path("frequency"), str(exc)) from None

    opts = CampaignOptions(values=values, timeouts=timeouts, reboot=reboot, repair_policy=repair)
    # the probe: everything SessionConfig checks, with a placeholder device and keys
    try:
        SessionConfig(devices={"0000000000000001": DeviceConfig(gen_app_key=bytes(range(1, 17)))},
                      mc_addr=1, mc_key=bytes(range(16)), **opts.session_kwargs())
    except InvalidArgument as exc:
        message = str(exc)
        field_path = _field_of(message, prefix)
        # report under the caller's names (the config's multicast_dr...)
        base = field_path[len(prefix):] if field_path.startswith(prefix) else None
        if base in names:
            field_path = prefix + names[base]
        raise OptionError(field_path, message) from None
    return opts
