"""Zigbee campaign options: the OTA server settings of ``[zigbee]`` (service defaults) and
the ``options`` object of a Zigbee campaign-create request, validated with errors that
name the field, and turned into the server's
:class:`~proxyota.zigbee.ota_server.CampaignPolicy`.

A request's options override the config's defaults key by key (``device_classes`` merges
per class and per field). Fields (all optional):

==========================  ==========================================================
``max_concurrent``          download slots across the mesh (fleet scheduler; the others
                            get WAIT_FOR_DATA), default 4
``max_retries``             failed attempts (stall, INVALID_IMAGE, ABORT) before a node is
                            given up, default 3
``notify``                  ImageNotify at the start: ``unicast`` (each target; sleepy ones
                            again per their class), ``broadcast`` or ``none``
``upgrade_delay``           seconds between a node's UpgradeEndRequest and its switch to
                            the new image (0: at once)
``max_block_size``          cap on the data bytes of an image block (1..255; the APS
                            payload and the client's maximum cap it anyway)
``min_block_period_ms``     MinimumBlockPeriod asked of clients that support it
``require_hardware_version``  refuse queries that do not carry a hardware version
``query_jitter``            QueryJitter of a broadcast ImageNotify (1..100)
``expected_throughput``     bytes/s per node assumed until downloads measured one
``min_wait`` / ``max_wait``  bounds of the request time told to waiting nodes (s)
``time_reference``          ``utc`` (ZCL UTCTime) or ``relative`` (current_time 0)
``wait_for_data_layout``    ``spec``, ``legacy`` or ``auto`` (WAIT_FOR_DATA with or without
                            minimum_block_period)
``default_device_class``    class of nodes whose node descriptor zigpy does not know
``device_classes``          per class (``router``, ``end_device``, ``sleepy``):
                            ``{stall_timeout, verify_timeout, notify_interval,
                            max_notifies}`` (seconds; notify_interval None = never repeat)
==========================  ==========================================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from proxyota.errors import InvalidArgument
from proxyota.service.options import OptionError, type_ok
from proxyota.zigbee.campaign import NOTIFY_MODES
from proxyota.zigbee.ota_server import (
    DEFAULT_DEVICE_CLASSES,
    CampaignPolicy,
    DeviceClassPolicy,
    UpgradeTimePolicy,
)

__all__ = ["ZIGBEE_OPTION_FIELDS", "DEVICE_CLASS_FIELDS", "ZigbeeOptions", "merge_zigbee_options",
           "parse_zigbee_options"]

_NUMBER = (int, float)

#: option name -> (accepted python types, description); bool is never an int here
ZIGBEE_OPTION_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "max_concurrent": ((int,), "download slots across the mesh, >= 1"),
    "max_retries": ((int,), "failed attempts before a node is given up, >= 0"),
    "notify": ((str,), f"ImageNotify mode, one of {', '.join(NOTIFY_MODES)}"),
    "upgrade_delay": (_NUMBER, "seconds from UpgradeEndRequest to activation, >= 0"),
    "max_block_size": ((int,), "image block data cap in bytes, 1..255"),
    "min_block_period_ms": ((int,), "MinimumBlockPeriod in milliseconds, >= 0"),
    "require_hardware_version": ((bool,), "refuse queries without a hardware version"),
    "query_jitter": ((int,), "broadcast ImageNotify QueryJitter, 1..100"),
    "expected_throughput": (_NUMBER, "bytes/s per node until measured, > 0"),
    "min_wait": (_NUMBER, "shortest request time told to waiting nodes (s)"),
    "max_wait": (_NUMBER, "longest request time told to waiting nodes (s)"),
    "time_reference": ((str,), "utc or relative"),
    "wait_for_data_layout": ((str,), "spec, legacy or auto"),
    "default_device_class": ((str,), "router, end_device or sleepy"),
    "device_classes": ((dict,), "per class {stall_timeout, verify_timeout, notify_interval, "
                                "max_notifies}"),
}
#: fields of one ``device_classes`` entry
DEVICE_CLASS_FIELDS = tuple(f.name for f in dataclasses.fields(DeviceClassPolicy))
_CHOICES = {"notify": NOTIFY_MODES, "time_reference": ("utc", "relative"),
            "wait_for_data_layout": ("spec", "legacy", "auto"),
            "default_device_class": tuple(DEFAULT_DEVICE_CLASSES)}
#: option -> CampaignPolicy field of the same meaning
_POLICY_FIELDS = ("max_concurrent", "max_retries", "max_block_size", "min_block_period_ms",
                  "require_hardware_version", "query_jitter", "expected_throughput", "min_wait",
                  "max_wait", "time_reference", "wait_for_data_layout", "default_device_class")


@dataclass(frozen=True)
class ZigbeeOptions:
    """Validated options: their JSON form (:attr:`values`) and the server policy."""

    values: Mapping[str, Any]
    policy: CampaignPolicy

    @property
    def notify(self) -> str:
        return str(self.values.get("notify") or "unicast")


def merge_zigbee_options(defaults: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``defaults``; ``device_classes`` merges per class and field."""
    out = {k: v for k, v in defaults.items()}
    for key, value in override.items():
        if key == "device_classes" and isinstance(value, dict) and isinstance(out.get(key), dict):
            merged = {name: dict(fields) for name, fields in out[key].items()}
            for name, fields in value.items():
                if isinstance(fields, dict) and isinstance(merged.get(name), dict):
                    merged[name].update(fields)
                else:
                    merged[name] = fields
            out[key] = merged
        else:
            out[key] = value
    return out


def _device_classes(doc: Any, path: str) -> dict[str, DeviceClassPolicy]:
    classes = dict(DEFAULT_DEVICE_CLASSES)
    if doc is None:
        return classes
    for name, fields in doc.items():
        where = f"{path}.{name}"
        if name not in DEFAULT_DEVICE_CLASSES:
            raise OptionError(where, f"unknown device class (known: {', '.join(DEFAULT_DEVICE_CLASSES)})")
        if not isinstance(fields, dict):
            raise OptionError(where, f"must be a table/object of {', '.join(DEVICE_CLASS_FIELDS)}")
        for key, value in fields.items():
            if key not in DEVICE_CLASS_FIELDS:
                raise OptionError(f"{where}.{key}", f"unknown field (known: {', '.join(DEVICE_CLASS_FIELDS)})")
            allowed = (int,) if key == "max_notifies" else _NUMBER
            if not (value is None and key == "notify_interval") and not type_ok(value, allowed):
                raise OptionError(f"{where}.{key}", f"must be a number, got {value!r}")
        try:
            classes[name] = dataclasses.replace(classes[name], **fields)
        except InvalidArgument as exc:
            bad = next((k for k in DEVICE_CLASS_FIELDS if str(exc).startswith(k)), None)
            raise OptionError(f"{where}.{bad}" if bad else where, str(exc)) from None
    return classes


def parse_zigbee_options(doc: Any, *, prefix: str = "options.") -> ZigbeeOptions:
    """Validate an options mapping; raise :class:`OptionError` naming the bad field
    (``prefix`` goes before field names: ``options.`` for the API, empty for the config)."""
    if not isinstance(doc, Mapping):
        raise OptionError(prefix.rstrip(".") or "options", "must be an object")
    values: dict[str, Any] = {}
    for key, value in doc.items():
        if key not in ZIGBEE_OPTION_FIELDS:
            raise OptionError(f"{prefix}{key}",
                              f"unknown option (known: {', '.join(sorted(ZIGBEE_OPTION_FIELDS))})")
        types, what = ZIGBEE_OPTION_FIELDS[key]
        if value is not None and not type_ok(value, types):
            raise OptionError(f"{prefix}{key}", f"must be {what}, got {value!r}")
        if key in _CHOICES and value is not None and value not in _CHOICES[key]:
            raise OptionError(f"{prefix}{key}", f"must be one of {', '.join(_CHOICES[key])}, got {value!r}")
        values[key] = value
    classes = _device_classes(values.get("device_classes"), f"{prefix}device_classes")
    delay = values.get("upgrade_delay")
    if delay is not None and delay < 0:
        raise OptionError(f"{prefix}upgrade_delay", f"must be >= 0 seconds, got {delay!r}")
    kwargs: dict[str, Any] = {k: values[k] for k in _POLICY_FIELDS if values.get(k) is not None}
    if delay:
        kwargs["upgrade_time"] = UpgradeTimePolicy.after(float(delay))
    for name in ("expected_throughput", "min_wait", "max_wait"):
        if name in kwargs:
            kwargs[name] = float(kwargs[name])
    try:
        policy = CampaignPolicy(device_classes=classes, **kwargs)
    except InvalidArgument as exc:
        bad = next((k for k in sorted(kwargs, key=len, reverse=True) if str(exc).startswith(k)), None)
        where = f"{prefix}{bad}" if bad else (prefix.rstrip(".") or "options")
        raise OptionError(where, str(exc)) from None
    return ZigbeeOptions(values=values, policy=policy)
