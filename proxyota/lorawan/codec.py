"""Shared framework of the LoRaWAN application-layer codecs (TS003, TS004, TS005, TS006).

Every application-layer package carries a sequence of commands ``CID | payload | CID |
payload ...`` on its own fPort; payload lengths are fixed by the CID (and sometimes by a
status bit of the command itself). This module holds what the four package modules share:

* :class:`Command`, the frozen-dataclass base of every command (``encode()`` returns the
  CID and the payload), and the field validators the commands call on construction (an
  out-of-range field raises :class:`~proxyota.errors.InvalidArgument` naming it);
* :class:`Reader`, a bounds-checked little-endian reader: truncation and RFU bits raise
  :class:`~proxyota.errors.DecodeError` naming the command and byte offset;
* :class:`Package` (fPort, PackageIdentifier, per-version CID tables) and the generic
  :func:`decode_commands` / :func:`encode_commands`;
* :class:`PackageVersionReq` / :class:`PackageVersionAns` (CID 0x00, common to all packages).

Decoding is sans-IO and total: any byte string either decodes to a list of commands or
raises ``DecodeError`` (never ``IndexError`` / ``struct.error``).

RFU bits: the 2022 specs tell receivers to ignore RFU bits; proxyota rejects them by
default (``strict=True``) so that a frame decodes only if it re-encodes to the same bytes,
and lets callers pass ``strict=False`` to follow the spec's receiver rule instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping, Sequence

from proxyota.errors import DecodeError, InvalidArgument

FPORT_MULTICAST_SETUP = 200
FPORT_FRAGMENTATION = 201
FPORT_CLOCK_SYNC = 202
FPORT_FIRMWARE_MANAGEMENT = 203

PACKAGE_CLOCK_SYNC = 1
PACKAGE_MULTICAST_SETUP = 2
PACKAGE_FRAGMENTATION = 3
PACKAGE_FIRMWARE_MANAGEMENT = 4

UPLINK = "uplink"
DOWNLINK = "downlink"
DIRECTIONS = (UPLINK, DOWNLINK)

U8 = 0xFF
U16 = 0xFFFF
U24 = 0xFFFFFF
U32 = 0xFFFFFFFF


# --------------------------------------------------------------------------- validation


class FieldError(InvalidArgument):
    """A command field is out of range; ``field`` names it (snake_case)."""

    def __init__(self, command: str, field: str, message: str):
        self.command = command
        self.field = field
        super().__init__(f"{command}.{field} {message}")


def _name(cmd: object) -> str:
    return type(cmd).__name__


def check_uint(cmd: object, field: str, value: Any, maximum: int, minimum: int = 0) -> None:
    """``value`` is an int (not a bool) in ``minimum..maximum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(_name(cmd), field, f"must be an int, got {value!r}")
    if not minimum <= value <= maximum:
        raise FieldError(_name(cmd), field, f"must be in {minimum}..{maximum}, got {value}")


def check_optional_uint(cmd: object, field: str, value: Any, maximum: int, minimum: int = 0) -> None:
    if value is not None:
        check_uint(cmd, field, value, maximum, minimum)


def check_bool(cmd: object, field: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise FieldError(_name(cmd), field, f"must be a bool, got {value!r}")


def check_bytes(cmd: object, field: str, value: Any, length: int | None = None, min_length: int = 0) -> None:
    """``value`` is bytes-like of the given length; it is stored back as ``bytes``."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise FieldError(_name(cmd), field, f"must be bytes, got {type(value).__name__}")
    data = bytes(value)
    if length is not None and len(data) != length:
        raise FieldError(_name(cmd), field, f"must be {length} bytes, got {len(data)}")
    if len(data) < min_length:
        raise FieldError(_name(cmd), field, f"must be at least {min_length} byte(s), got {len(data)}")
    object.__setattr__(cmd, field, data)


def check_version(cmd: object, value: Any, versions: Sequence[int] = (1, 2)) -> None:
    if isinstance(value, bool) or value not in versions:
        raise FieldError(_name(cmd), "version", f"must be one of {tuple(versions)}, got {value!r}")


def require(cmd: object, field: str, condition: bool, message: str) -> None:
    """Cross-field rule: raise a FieldError on ``field`` unless ``condition`` holds."""
    if not condition:
        raise FieldError(_name(cmd), field, message)


def check_frequency(cmd: object, field: str, value: Any) -> None:
    """A frequency in Hz carried as u24 x 100 Hz (TS005 DLFreq)."""
    check_uint(cmd, field, value, U24 * 100)
    if value % 100:
        raise FieldError(_name(cmd), field, f"must be a multiple of 100 Hz, got {value}")


# --------------------------------------------------------------------------- JSON field kinds

# ``dataclasses.field(metadata=...)`` keys understood by to_json / from_json:
#   "json": "hex" (bytes <-> hex string), "devaddr" (u32 <-> 8 hex digits, MSB first),
#           "enum" (IntEnum <-> member name), "items" (tuple of dataclasses <-> list of dicts),
#           "skip" (not in JSON: the version, which the caller passes separately)
#   "since": 2  (omitted from JSON when the command's version is lower)


def hex_field(**kwargs: Any) -> Any:
    return dataclasses.field(metadata={"json": "hex", **kwargs.pop("metadata", {})}, **kwargs)


def devaddr_field(**kwargs: Any) -> Any:
    return dataclasses.field(metadata={"json": "devaddr"}, **kwargs)


def version_field(default: int = 1) -> Any:
    return dataclasses.field(default=default, metadata={"json": "skip"})


def v2_field(default: Any, kind: str | None = None) -> Any:
    meta: dict[str, Any] = {"since": 2}
    if kind:
        meta["json"] = kind
    return dataclasses.field(default=default, metadata=meta)


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Command:
    """Base of every application-layer command (one frozen dataclass per spec command).

    Subclasses set ``CID``, validate their fields in ``__post_init__``, implement
    ``_encode_payload`` and the classmethod ``_decode``.
    """

    CID: ClassVar[int] = -1
    JSON_ALIASES: ClassVar[Mapping[str, str]] = {}

    @property
    def command(self) -> str:
        """The spec's command name, e.g. ``"FragSessionStatusAns"``."""
        return type(self).__name__

    def encode(self) -> bytes:
        """The command on the wire: CID followed by its payload."""
        return bytes((self.CID,)) + self._encode_payload()

    def _encode_payload(self) -> bytes:
        return b""

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        return cls()

    @classmethod
    def _decode_alternatives(cls, r: Reader, version: int) -> list[tuple[Command, int]]:
        """Readings of the command at ``r`` as (command, end offset), preferred first.

        Only a command whose length cannot be told from its own bytes returns more than
        one (see ``FragSessionStatusAns``); the framework keeps the first reading after
        which the rest of the payload decodes.
        """
        cmd = cls._decode(r, version)
        return [(cmd, r.pos)]


class IndexWithFlag(Command):
    """The one-byte answers laid out as b7:3 RFU, b2 one error flag, b1:0 an index
    (FragSessionDeleteAns, FragDataBlockReceivedReq, McGroupSetupAns, McGroupDeleteAns).
    Subclasses declare the two dataclass fields, index first, and name the byte
    (``_LABEL``) for decode errors."""

    _LABEL: ClassVar[str]

    def _fields(self) -> tuple[str, str]:
        index, flag = dataclasses.fields(self)[:2]  # type: ignore[arg-type]
        return index.name, flag.name

    def __post_init__(self) -> None:
        index, flag = self._fields()
        check_uint(self, index, getattr(self, index), 3)
        check_bool(self, flag, getattr(self, flag))

    def _encode_payload(self) -> bytes:
        index, flag = self._fields()
        return bytes((getattr(self, index) | (4 if getattr(self, flag) else 0),))

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        index, flag = (f.name for f in dataclasses.fields(cls)[:2])  # type: ignore[arg-type]
        b = r.u8(index, flag, rfu=0xF8, label=cls._LABEL)
        return cls(b & 0x03, bool(b & 4))  # type: ignore[call-arg]


def le(value: int, size: int, signed: bool = False) -> bytes:
    return value.to_bytes(size, "little", signed=signed)


@dataclass(frozen=True)
class PackageVersionReq(Command):
    """PackageVersionReq (CID 0x00, downlink, every package): no payload."""

    CID = 0x00


@dataclass(frozen=True)
class PackageVersionAns(Command):
    """PackageVersionAns (CID 0x00, uplink): PackageIdentifier u8 | PackageVersion u8.

    On decode (strict or not) the identifier must be the one of the fPort's package
    (1 clock sync, 2 multicast setup, 3 fragmentation, 4 firmware management): another
    identifier means the port does not carry the package it is decoded as. (This also
    resolves the ambiguous v2 FragSessionStatusAns form, see there.)
    """

    CID = 0x00
    package_identifier: int
    package_version: int

    def __post_init__(self) -> None:
        check_uint(self, "package_identifier", self.package_identifier, U8)
        check_uint(self, "package_version", self.package_version, U8)

    def _encode_payload(self) -> bytes:
        return bytes((self.package_identifier, self.package_version))

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        ident = r.u8("package_identifier")
        package_version = r.u8("package_version")
        if ident != r.package.identifier:
            raise r.error(
                f"PackageIdentifier {ident} is not the {r.package.name} package "
                f"({r.package.identifier})",
                offset=r.pos - 2,
            )
        return cls(ident, package_version)


# --------------------------------------------------------------------------- reading


class Reader:
    """Bounds-checked little-endian reader over one command of a payload."""

    def __init__(self, payload: bytes, start: int, command: str, package: Package, strict: bool = True):
        self.payload = payload
        self.start = start  # offset of the CID
        self.pos = start + 1
        self.command = command
        self.package = package
        self.strict = strict
        self.field_offsets: dict[str, int] = {}

    @property
    def remaining(self) -> int:
        return len(self.payload) - self.pos

    def error(self, message: str, offset: int | None = None) -> DecodeError:
        return DecodeError(message, command=self.command, offset=self.pos if offset is None else offset)

    def take(self, n: int, *fields: str, label: str | None = None) -> bytes:
        """``n`` bytes holding ``fields`` (dataclass names); ``label`` is the spec's name."""
        if n > self.remaining:
            what = label or "/".join(fields) or "payload"
            raise self.error(f"truncated: {what} needs {n} byte(s), {self.remaining} left")
        for f in fields:
            self.field_offsets[f] = self.pos
        data = self.payload[self.pos : self.pos + n]
        self.pos += n
        return data

    def uint(self, size: int, *fields: str, label: str | None = None) -> int:
        return int.from_bytes(self.take(size, *fields, label=label), "little")

    def u8(self, *fields: str, rfu: int = 0, label: str | None = None) -> int:
        """One byte; ``rfu`` masks the bits the spec reserves (rejected when strict)."""
        value = self.take(1, *fields, label=label)[0]
        if rfu and value & rfu:
            if self.strict:
                raise self.error(
                    f"RFU bits set in {label or '/'.join(fields)}: 0x{value:02x} & 0x{rfu:02x}",
                    offset=self.pos - 1,
                )
            value &= ~rfu & 0xFF
        return value

    def u16(self, *fields: str, label: str | None = None) -> int:
        return self.uint(2, *fields, label=label)

    def u24(self, *fields: str, label: str | None = None) -> int:
        return self.uint(3, *fields, label=label)

    def u32(self, *fields: str, label: str | None = None) -> int:
        return self.uint(4, *fields, label=label)

    def i32(self, *fields: str) -> int:
        return int.from_bytes(self.take(4, *fields), "little", signed=True)

    def rest(self, *fields: str) -> bytes:
        return self.take(self.remaining, *fields)


# --------------------------------------------------------------------------- packages


@dataclass(frozen=True)
class Package:
    """An application-layer package: identifier, default fPort, CID tables per version."""

    name: str
    identifier: int
    fport: int
    versions: tuple[int, ...]
    uplink: Mapping[int, Mapping[int, type[Command]]]  # version -> CID -> command class
    downlink: Mapping[int, Mapping[int, type[Command]]]

    def check_version(self, version: Any) -> int:
        if isinstance(version, bool) or version not in self.versions:
            raise InvalidArgument(
                f"{self.name} (fPort {self.fport}) has versions {self.versions}, got {version!r}"
            )
        return version

    def table(self, direction: str, version: int) -> Mapping[int, type[Command]]:
        self.check_version(version)
        if direction == UPLINK:
            return self.uplink[version]
        if direction == DOWNLINK:
            return self.downlink[version]
        raise InvalidArgument(f"direction must be {UPLINK!r} or {DOWNLINK!r}, got {direction!r}")

    def command_class(self, name: str, direction: str, version: int) -> type[Command]:
        for cls in self.table(direction, version).values():
            if cls.__name__ == name:
                return cls
        known = ", ".join(c.__name__ for c in self.table(direction, version).values())
        raise InvalidArgument(
            f"{name!r} is not a {direction} command of {self.name} v{version} (known: {known})"
        )


def _decode_at(
    package: Package, table: Mapping[int, type[Command]], direction: str, payload: bytes, off: int,
    version: int, strict: bool,
) -> list[tuple[Command, int]]:
    cid = payload[off]
    cls = table.get(cid)
    if cls is None:
        raise DecodeError(
            f"unknown {direction} CID 0x{cid:02x} for {package.name} v{version}",
            command=f"CID 0x{cid:02x}",
            offset=off,
        )
    r = Reader(payload, off, cls.__name__, package, strict)
    try:
        return cls._decode_alternatives(r, version)
    except FieldError as exc:
        raise DecodeError(
            str(exc), command=cls.__name__, offset=r.field_offsets.get(exc.field, off)
        ) from None


def decode_commands(
    package: Package, direction: str, payload: bytes | bytearray | memoryview, version: int = 1,
    *, strict: bool = True,
) -> list[Command]:
    """Decode every command of ``payload`` in order (an empty payload gives ``[]``).

    Raises ``DecodeError`` (naming the command and byte offset) on a truncated command, an
    unknown CID, a reserved value or an out-of-range field. When a command's length is
    ambiguous the first reading after which the whole payload decodes is kept; the error
    reported is the first one along the preferred readings.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise InvalidArgument(f"payload must be bytes, got {type(payload).__name__}")
    data = bytes(payload)
    table = package.table(direction, version)
    n = len(data)
    # Forward: readings at every reachable offset.
    readings: dict[int, list[tuple[Command, int]] | DecodeError] = {}
    todo = [0] if n else []
    while todo:
        off = todo.pop()
        if off in readings or off >= n:
            continue
        try:
            alts = _decode_at(package, table, direction, data, off, version, strict)
        except DecodeError as exc:
            readings[off] = exc
            continue
        readings[off] = alts
        todo.extend(end for _, end in alts)
    # Backward: which offsets decode to the end, and by which reading.
    failure: dict[int, DecodeError | None] = {n: None}
    chosen: dict[int, tuple[Command, int]] = {}
    for off in sorted(readings, reverse=True):
        entry = readings[off]
        if isinstance(entry, DecodeError):
            failure[off] = entry
            continue
        first_error: DecodeError | None = None
        for cmd, end in entry:
            if failure[end] is None:
                chosen[off] = (cmd, end)
                break
            first_error = first_error or failure[end]
        failure[off] = None if off in chosen else first_error
    if n and failure[0] is not None:
        raise failure[0]
    out: list[Command] = []
    off = 0
    while off < n:
        cmd, off = chosen[off]
        out.append(cmd)
    return out


def encode_commands(commands: Iterable[Command]) -> bytes:
    """Concatenate the encodings of ``commands``.

    A ``DataFragment`` runs to the end of its frame, so it must be the only command.
    """
    cmds = list(commands)
    for cmd in cmds:
        if not isinstance(cmd, Command):
            raise InvalidArgument(f"not a command: {cmd!r}")
        if getattr(cmd, "ALONE_IN_FRAME", False) and len(cmds) != 1:
            raise InvalidArgument(f"{cmd.command} must be the only command of its frame")
    return b"".join(cmd.encode() for cmd in cmds)


def __getattr__(name: str) -> Any:
    """Let ``from proxyota.lorawan.codec import decode_uplink, FragSessionSetupReq`` work too.

    The public API lives in :mod:`proxyota.lorawan.applayer` (which imports this module);
    its names are looked up lazily here to avoid an import cycle. Dunder names (the import
    system probes ``__path__``) never trigger that import: a package module such as
    :mod:`proxyota.lorawan.firmware` must be importable on its own.
    """
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from proxyota.lorawan import applayer

    if name in applayer.__all__:
        return getattr(applayer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
