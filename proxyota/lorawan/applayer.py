"""Public API of the LoRaWAN application-layer codecs: decode/encode by fPort, and JSON.

    from proxyota.lorawan.applayer import decode_uplink, FragSessionStatusAns, ...

    decode_uplink(FPORT_FRAGMENTATION, payload, version=2)  -> [FragSessionStatusAns(...), ...]
    decode_downlink(fport, payload, version=1)              -> [Command, ...]
    encode_commands([cmd, ...])                             -> bytes
    to_json(cmd) -> dict;  from_json(dict, fport=..., direction="uplink", version=1) -> Command

The packages are keyed by their default fPorts (200 multicast setup, 201 fragmentation,
202 clock sync, 203 firmware management). ``version`` is the package version (1 or 2;
firmware management only 1). Every command class of the four packages is re-exported here.

JSON form of a command: ``{"command": "<spec name>", <field>: <value>, ...}`` with the
dataclass field names (spec names in snake_case); byte strings as hex, flags as booleans,
``mc_addr`` as 8 hex digits (MSB first, like a DevAddr), ``up_image_status`` as the enum
name, ``dl_frequency`` in Hz; fields that are None (absent on the wire) or that exist only
in a later version are left out. The version is not part of the JSON; pass it separately.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from proxyota.errors import InvalidArgument
from proxyota.lorawan.clocksync import (
    CLOCK_SYNC,
    AppTimeAns,
    AppTimeReq,
    DeviceAppTimePeriodicityAns,
    DeviceAppTimePeriodicityReq,
    ForceDeviceResyncCmd,
    ForceDeviceResyncReq,
    clamp_time_correction,
)
from proxyota.lorawan.codec import (
    DIRECTIONS,
    DOWNLINK,
    FPORT_CLOCK_SYNC,
    FPORT_FIRMWARE_MANAGEMENT,
    FPORT_FRAGMENTATION,
    FPORT_MULTICAST_SETUP,
    PACKAGE_CLOCK_SYNC,
    PACKAGE_FIRMWARE_MANAGEMENT,
    PACKAGE_FRAGMENTATION,
    PACKAGE_MULTICAST_SETUP,
    UPLINK,
    Command,
    Package,
    PackageVersionAns,
    PackageVersionReq,
    decode_commands,
    encode_commands,
)
from proxyota.lorawan.firmware import (
    FIRMWARE_MANAGEMENT,
    DevDeleteImageAns,
    DevDeleteImageReq,
    DevRebootCountdownAns,
    DevRebootCountdownReq,
    DevRebootTimeAns,
    DevRebootTimeReq,
    DevUpgradeImageAns,
    DevUpgradeImageReq,
    DevVersionAns,
    DevVersionReq,
    UpImageStatus,
)
from proxyota.lorawan.fragmentation import (
    FRAGMENTATION,
    DataFragment,
    FragDataBlockReceivedAns,
    FragDataBlockReceivedReq,
    FragSessionDeleteAns,
    FragSessionDeleteReq,
    FragSessionSetupAns,
    FragSessionSetupReq,
    FragSessionStatusAns,
    FragSessionStatusReq,
)
from proxyota.lorawan.multicast import (
    MULTICAST_SETUP,
    McClassBSessionAns,
    McClassBSessionReq,
    McClassCSessionAns,
    McClassCSessionReq,
    McGroupDeleteAns,
    McGroupDeleteReq,
    McGroupSetupAns,
    McGroupSetupReq,
    McGroupStatusAns,
    McGroupStatusItem,
    McGroupStatusReq,
)

PACKAGES: Mapping[int, Package] = {
    p.fport: p for p in (MULTICAST_SETUP, FRAGMENTATION, CLOCK_SYNC, FIRMWARE_MANAGEMENT)
}

__all__ = [
    "PACKAGES", "UPLINK", "DOWNLINK", "Command", "Package", "package_for_fport",
    "decode_uplink", "decode_downlink", "decode", "encode_commands", "to_json", "from_json",
    "FPORT_MULTICAST_SETUP", "FPORT_FRAGMENTATION", "FPORT_CLOCK_SYNC", "FPORT_FIRMWARE_MANAGEMENT",
    "PACKAGE_CLOCK_SYNC", "PACKAGE_MULTICAST_SETUP", "PACKAGE_FRAGMENTATION", "PACKAGE_FIRMWARE_MANAGEMENT",
    "PackageVersionReq", "PackageVersionAns",
    "AppTimeReq", "AppTimeAns", "DeviceAppTimePeriodicityReq", "DeviceAppTimePeriodicityAns",
    "ForceDeviceResyncReq", "ForceDeviceResyncCmd", "clamp_time_correction",
    "FragSessionStatusReq", "FragSessionStatusAns", "FragSessionSetupReq", "FragSessionSetupAns",
    "FragSessionDeleteReq", "FragSessionDeleteAns", "FragDataBlockReceivedReq", "FragDataBlockReceivedAns",
    "DataFragment",
    "McGroupStatusReq", "McGroupStatusAns", "McGroupStatusItem", "McGroupSetupReq", "McGroupSetupAns",
    "McGroupDeleteReq", "McGroupDeleteAns", "McClassCSessionReq", "McClassCSessionAns",
    "McClassBSessionReq", "McClassBSessionAns",
    "DevVersionReq", "DevVersionAns", "DevRebootTimeReq", "DevRebootTimeAns", "DevRebootCountdownReq",
    "DevRebootCountdownAns", "DevUpgradeImageReq", "DevUpgradeImageAns", "UpImageStatus",
    "DevDeleteImageReq", "DevDeleteImageAns",
]


def package_for_fport(fport: int) -> Package:
    package = PACKAGES.get(fport) if isinstance(fport, int) and not isinstance(fport, bool) else None
    if package is None:
        known = ", ".join(f"{p} ({PACKAGES[p].name})" for p in sorted(PACKAGES))
        raise InvalidArgument(f"no application-layer package on fPort {fport!r} (known: {known})")
    return package


def decode(fport: int, direction: str, payload: bytes, version: int = 1, *, strict: bool = True) -> list[Command]:
    """Decode every command of an application-layer payload (see :func:`decode_uplink`)."""
    return decode_commands(package_for_fport(fport), direction, payload, version, strict=strict)


def decode_uplink(fport: int, payload: bytes, version: int = 1, *, strict: bool = True) -> list[Command]:
    """Decode all commands of an uplink FRMPayload on ``fport`` (package version ``version``).

    Raises ``DecodeError`` naming the command and byte offset on a truncated payload, an
    unknown CID, a reserved value or RFU bits (``strict=False`` ignores RFU bits, as the
    specs' receiver rule says); ``InvalidArgument`` for an unknown fPort or version.
    """
    return decode(fport, UPLINK, payload, version, strict=strict)


def decode_downlink(fport: int, payload: bytes, version: int = 1, *, strict: bool = True) -> list[Command]:
    """Decode all commands of a downlink FRMPayload (see :func:`decode_uplink`)."""
    return decode(fport, DOWNLINK, payload, version, strict=strict)


# --------------------------------------------------------------------------- JSON


def _field_to_json(kind: str | None, value: Any) -> Any:
    if value is None:
        return None
    if kind == "hex":
        return bytes(value).hex()
    if kind == "devaddr":
        return f"{value:08x}"
    if kind == "enum":
        return value.name
    if kind == "items":
        return [_fields_to_json(item) for item in value]
    return value


def _fields_to_json(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    version = getattr(obj, "version", 1)
    for f in dataclasses.fields(obj):
        kind = f.metadata.get("json")
        if kind == "skip" or f.metadata.get("since", 1) > version:
            continue
        value = getattr(obj, f.name)
        if value is None:
            continue
        out[f.name] = _field_to_json(kind, value)
    return out


def to_json(cmd: Command) -> dict[str, Any]:
    """The JSON object of a command: ``{"command": name, **fields}``."""
    if not isinstance(cmd, Command):
        raise InvalidArgument(f"not a command: {cmd!r}")
    return {"command": cmd.command, **_fields_to_json(cmd)}


def _field_from_json(owner: str, field: dataclasses.Field, value: Any) -> Any:
    kind = field.metadata.get("json")
    where = f"{owner}.{field.name}"
    if value is None:
        return None
    if kind == "hex":
        if not isinstance(value, str):
            raise InvalidArgument(f"{where} must be a hex string, got {value!r}")
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise InvalidArgument(f"{where} is not valid hex: {value!r}") from None
    if kind == "devaddr":
        if isinstance(value, str):
            text = value[2:] if value.lower().startswith("0x") else value
            if len(text) != 8:
                raise InvalidArgument(f"{where} must be 8 hex digits, got {value!r}")
            try:
                return int(text, 16)
            except ValueError:
                raise InvalidArgument(f"{where} is not valid hex: {value!r}") from None
        return value  # an int (range-checked by the command)
    if kind == "enum":
        if isinstance(value, str):
            try:
                return UpImageStatus[value.upper()]
            except KeyError:
                names = ", ".join(m.name for m in UpImageStatus)
                raise InvalidArgument(f"{where} must be one of {names}, got {value!r}") from None
        return value
    if kind == "items":
        if not isinstance(value, list):
            raise InvalidArgument(f"{where} must be a list, got {value!r}")
        return tuple(_object_from_json(McGroupStatusItem, item, {}, where) for item in value)
    return value


def _object_from_json(cls: type, obj: Any, extra: dict[str, Any], owner: str,
                      aliases: Mapping[str, str] | None = None) -> Any:
    if not isinstance(obj, dict):
        raise InvalidArgument(f"{owner} must be a JSON object, got {obj!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.metadata.get("json") != "skip"}
    kwargs: dict[str, Any] = dict(extra)
    for key, value in obj.items():
        name = (aliases or {}).get(key, key)
        if name not in fields:
            raise InvalidArgument(f"{owner} has no field {key!r} (fields: {', '.join(fields)})")
        if name in kwargs:
            raise InvalidArgument(f"{owner}: field {name!r} given twice")
        kwargs[name] = _field_from_json(owner, fields[name], value)
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise InvalidArgument(f"{owner} is missing field(s): {', '.join(missing)}")
    return cls(**kwargs)


def from_json(obj: Mapping[str, Any], *, fport: int, direction: str, version: int = 1) -> Command:
    """Build the command described by ``obj`` (the form :func:`to_json` produces).

    ``fport``, ``direction`` ("uplink" or "downlink") and ``version`` select the command
    table, so ``{"command": "ForceDeviceResyncCmd", ...}`` needs ``version=2``. Raises
    ``InvalidArgument`` naming the problem (unknown command or field, out-of-range value).
    """
    if direction not in DIRECTIONS:
        raise InvalidArgument(f"direction must be {UPLINK!r} or {DOWNLINK!r}, got {direction!r}")
    package = package_for_fport(fport)
    package.check_version(version)
    if not isinstance(obj, dict):
        raise InvalidArgument(f"a command must be a JSON object, got {obj!r}")
    name = obj.get("command")
    if not isinstance(name, str):
        raise InvalidArgument(f"a command object needs a \"command\" name, got {obj!r}")
    cls = package.command_class(name, direction, version)
    body = {k: v for k, v in obj.items() if k != "command"}
    extra: dict[str, Any] = {}
    has_version = any(f.name == "version" for f in dataclasses.fields(cls))
    if "version" in body:
        if body.pop("version") != version:
            raise InvalidArgument(f"{name}: \"version\" in the object differs from version={version}")
    if has_version:
        extra["version"] = version
    return _object_from_json(cls, body, extra, name, cls.JSON_ALIASES)
