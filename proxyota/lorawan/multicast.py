"""TS005 Remote Multicast Setup commands (fPort 200, PackageIdentifier 2), v1.0.0 and v2.0.0.

| CID  | uplink (end-device) | downlink (application server) |
|------|---------------------|-------------------------------|
| 0x00 | PackageVersionAns   | PackageVersionReq             |
| 0x01 | McGroupStatusAns    | McGroupStatusReq              |
| 0x02 | McGroupSetupAns     | McGroupSetupReq               |
| 0x03 | McGroupDeleteAns    | McGroupDeleteReq              |
| 0x04 | McClassCSessionAns  | McClassCSessionReq            |
| 0x05 | McClassBSessionAns  | McClassBSessionReq            |

Only the session answers differ between versions (they carry ``version``): v2 adds the
StartMissed bit, makes bits 7:6 "reserved for future errors", and TimeToStart 0xFFFFFF
means "2^24 s or more" (the device clock is out of sync).

``dl_frequency`` is in Hz; the wire carries u24 x 100 Hz (the LoRaWAN 2.4 GHz 200 Hz
stepping some network servers use is not supported). ``mc_addr`` is the multicast DevAddr
as an int (u32, little-endian on the wire; JSON shows it as 8 hex digits, MSB first).
The McKey keys derivations live in :mod:`proxyota.lorawan.keys`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from proxyota.lorawan.codec import (
    FPORT_MULTICAST_SETUP,
    PACKAGE_MULTICAST_SETUP,
    U24,
    U32,
    Command,
    IndexWithFlag,
    Package,
    PackageVersionAns,
    PackageVersionReq,
    Reader,
    check_bool,
    check_bytes,
    check_frequency,
    check_optional_uint,
    check_uint,
    check_version,
    devaddr_field,
    hex_field,
    le,
    require,
    v2_field,
    version_field,
)

TIME_TO_START_UNKNOWN = 0xFFFFFF  # v2: 2^24 s or more to the session start
MAX_DR = 15


def _check_group(cmd: object, value: object) -> None:
    check_uint(cmd, "mc_group_id", value, 3)


def _mask_ids(mask: int) -> tuple[int, ...]:
    return tuple(i for i in range(4) if mask >> i & 1)


@dataclass(frozen=True)
class McGroupStatusReq(Command):
    """McGroupStatusReq (downlink): CmdMask (b7:4 RFU, b3:0 ReqGroupMask)."""

    CID = 0x01
    req_group_mask: int

    def __post_init__(self) -> None:
        check_uint(self, "req_group_mask", self.req_group_mask, 0x0F)

    def _encode_payload(self) -> bytes:
        return bytes((self.req_group_mask,))

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        return cls(r.u8("req_group_mask", rfu=0xF0, label="CmdMask"))


@dataclass(frozen=True)
class McGroupStatusItem:
    """One [McGroupID + McAddr] entry of McGroupStatusAns."""

    mc_group_id: int
    mc_addr: int = devaddr_field()

    def __post_init__(self) -> None:
        _check_group(self, self.mc_group_id)
        check_uint(self, "mc_addr", self.mc_addr, U32)


@dataclass(frozen=True)
class McGroupStatusAns(Command):
    """McGroupStatusAns (uplink): Status (b7 RFU, b6:4 NbTotalGroups, b3:0 AnsGroupMask) |
    one [McGroupID (b7:2 RFU, b1:0) | McAddr u32] per bit of AnsGroupMask.

    The entries are kept in wire order (stacks differ); their ids must be the mask's bits.
    """

    CID = 0x01
    nb_total_groups: int
    ans_group_mask: int
    groups: tuple[McGroupStatusItem, ...] = dataclasses.field(default=(), metadata={"json": "items"})

    def __post_init__(self) -> None:
        check_uint(self, "nb_total_groups", self.nb_total_groups, 7)
        check_uint(self, "ans_group_mask", self.ans_group_mask, 0x0F)
        if not isinstance(self.groups, (tuple, list)) or not all(
            isinstance(g, McGroupStatusItem) for g in self.groups
        ):
            require(self, "groups", False, "must be a sequence of McGroupStatusItem")
        object.__setattr__(self, "groups", tuple(self.groups))
        ids = sorted(g.mc_group_id for g in self.groups)
        require(
            self, "groups", ids == list(_mask_ids(self.ans_group_mask)),
            f"ids {ids} must be the groups of ans_group_mask 0x{self.ans_group_mask:x}",
        )

    def _encode_payload(self) -> bytes:
        out = bytes(((self.nb_total_groups << 4) | self.ans_group_mask,))
        for g in self.groups:
            out += bytes((g.mc_group_id,)) + le(g.mc_addr, 4)
        return out

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        status = r.u8("nb_total_groups", "ans_group_mask", rfu=0x80, label="Status")
        mask = status & 0x0F
        groups = []
        for _ in _mask_ids(mask):
            gid = r.u8("groups", rfu=0xFC, label="McGroupID")
            groups.append(McGroupStatusItem(gid, r.u32("groups", label="McAddr")))
        return cls((status >> 4) & 0x07, mask, tuple(groups))


@dataclass(frozen=True)
class McGroupSetupReq(Command):
    """McGroupSetupReq (downlink): McGroupIDHeader (b7:2 RFU, b1:0 McGroupID) | McAddr u32 |
    McKey_encrypted 16 B | minMcFCount u32 | maxMcFCount u32."""

    CID = 0x02
    mc_group_id: int
    mc_addr: int = devaddr_field()
    mc_key_encrypted: bytes = hex_field()
    min_mc_fcount: int
    max_mc_fcount: int

    def __post_init__(self) -> None:
        _check_group(self, self.mc_group_id)
        check_uint(self, "mc_addr", self.mc_addr, U32)
        check_bytes(self, "mc_key_encrypted", self.mc_key_encrypted, 16)
        check_uint(self, "min_mc_fcount", self.min_mc_fcount, U32)
        check_uint(self, "max_mc_fcount", self.max_mc_fcount, U32)

    def _encode_payload(self) -> bytes:
        return (
            bytes((self.mc_group_id,)) + le(self.mc_addr, 4) + self.mc_key_encrypted
            + le(self.min_mc_fcount, 4) + le(self.max_mc_fcount, 4)
        )

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        gid = r.u8("mc_group_id", rfu=0xFC)
        return cls(gid, r.u32("mc_addr"), r.take(16, "mc_key_encrypted"), r.u32("min_mc_fcount"),
                   r.u32("max_mc_fcount"))


@dataclass(frozen=True)
class McGroupSetupAns(IndexWithFlag):
    """McGroupSetupAns (uplink): McGroupIDHeader (b7:3 RFU, b2 IDerror, b1:0 McGroupID)."""

    CID = 0x02
    mc_group_id: int
    id_error: bool = False
    _LABEL = "McGroupIDHeader"


@dataclass(frozen=True)
class McGroupDeleteReq(Command):
    """McGroupDeleteReq (downlink): McGroupIDHeader (b7:2 RFU, b1:0 McGroupID)."""

    CID = 0x03
    mc_group_id: int

    def __post_init__(self) -> None:
        _check_group(self, self.mc_group_id)

    def _encode_payload(self) -> bytes:
        return bytes((self.mc_group_id,))

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        return cls(r.u8("mc_group_id", rfu=0xFC))


@dataclass(frozen=True)
class McGroupDeleteAns(IndexWithFlag):
    """McGroupDeleteAns (uplink): b7:3 RFU, b2 McGroupUndefined, b1:0 McGroupID."""

    CID = 0x03
    mc_group_id: int
    mc_group_undefined: bool = False
    _LABEL = "McGroupIDHeader"


@dataclass(frozen=True)
class McClassCSessionReq(Command):
    """McClassCSessionReq (downlink): McGroupIDHeader | SessionTime u32 (GPS s) |
    SessionTimeOut (b7:4 RFU, b3:0 TimeOut: session <= 2^TimeOut s) | DLFreq u24 (x100 Hz) | DR."""

    CID = 0x04
    JSON_ALIASES = {"dl_frequ": "dl_frequency"}
    mc_group_id: int
    session_time: int
    time_out: int
    dl_frequency: int
    dr: int

    def __post_init__(self) -> None:
        _check_group(self, self.mc_group_id)
        check_uint(self, "session_time", self.session_time, U32)
        check_uint(self, "time_out", self.time_out, 0x0F)
        check_frequency(self, "dl_frequency", self.dl_frequency)
        check_uint(self, "dr", self.dr, MAX_DR)

    @property
    def time_out_seconds(self) -> int:
        return 1 << self.time_out

    def _encode_payload(self) -> bytes:
        return (
            bytes((self.mc_group_id,)) + le(self.session_time, 4) + bytes((self.time_out,))
            + le(self.dl_frequency // 100, 3) + bytes((self.dr,))
        )

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        gid = r.u8("mc_group_id", rfu=0xFC)
        session_time = r.u32("session_time")
        time_out = r.u8("time_out", rfu=0xF0, label="SessionTimeOut")
        freq = r.u24("dl_frequency") * 100
        return cls(gid, session_time, time_out, freq, r.u8("dr"))


@dataclass(frozen=True)
class McClassBSessionReq(Command):
    """McClassBSessionReq (downlink): McGroupIDHeader | SessionTime u32 (GPS s, a multiple of
    128 per spec, not enforced) | TimeOutPeriodicity (b7 RFU, b6:4 Periodicity, b3:0 TimeOut:
    session <= 128·2^TimeOut s) | DLFreq u24 (x100 Hz; v2: 0 = beacon hopping) | DR."""

    CID = 0x05
    JSON_ALIASES = {"dl_frequ": "dl_frequency"}
    mc_group_id: int
    session_time: int
    time_out: int
    periodicity: int
    dl_frequency: int
    dr: int

    def __post_init__(self) -> None:
        _check_group(self, self.mc_group_id)
        check_uint(self, "session_time", self.session_time, U32)
        check_uint(self, "time_out", self.time_out, 0x0F)
        check_uint(self, "periodicity", self.periodicity, 7)
        check_frequency(self, "dl_frequency", self.dl_frequency)
        check_uint(self, "dr", self.dr, MAX_DR)

    @property
    def time_out_seconds(self) -> int:
        return 128 << self.time_out

    @property
    def ping_slot_period_seconds(self) -> int:
        """A ping slot every 2^Periodicity seconds (approximately, as in PingSlotInfoReq)."""
        return 1 << self.periodicity

    @property
    def frequency_hopping(self) -> bool:
        return self.dl_frequency == 0

    def _encode_payload(self) -> bytes:
        return (
            bytes((self.mc_group_id,)) + le(self.session_time, 4)
            + bytes(((self.periodicity << 4) | self.time_out,))
            + le(self.dl_frequency // 100, 3) + bytes((self.dr,))
        )

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        gid = r.u8("mc_group_id", rfu=0xFC)
        session_time = r.u32("session_time")
        tp = r.u8("time_out", "periodicity", rfu=0x80, label="TimeOutPeriodicity")
        freq = r.u24("dl_frequency") * 100
        return cls(gid, session_time, tp & 0x0F, (tp >> 4) & 0x07, freq, r.u8("dr"))


@dataclass(frozen=True)
class _SessionAns(Command):
    """Status&McGroupID | (cond) TimeToStart u24.

    v1: b7:5 RFU, b4 McGroupUndefined, b3 FreqError, b2 DRError, b1:0 McGroupID.
    v2: b7:6 reserved for future errors (rejected on decode), b5 StartMissed, then as v1.
    TimeToStart (seconds from the answer to the session start) is present iff no error bit
    is set (bits 2-4 in v1, 2-7 in v2). ChirpStack's v2 codec ignores StartMissed for the
    presence test; LoRa Basics Modem and the spec do not, and neither does this codec.
    """

    mc_group_id: int
    mc_group_undefined: bool = False
    freq_error: bool = False
    dr_error: bool = False
    start_missed: bool = v2_field(False)
    time_to_start: int | None = None
    version: int = version_field()

    def __post_init__(self) -> None:
        check_version(self, self.version)
        _check_group(self, self.mc_group_id)
        for name in ("mc_group_undefined", "freq_error", "dr_error", "start_missed"):
            check_bool(self, name, getattr(self, name))
        if self.version == 1:
            require(self, "start_missed", not self.start_missed, "exists only in version 2")
        check_optional_uint(self, "time_to_start", self.time_to_start, U24)
        if self.error:
            require(self, "time_to_start", self.time_to_start is None, "must be None when an error bit is set")
        else:
            require(self, "time_to_start", self.time_to_start is not None, "is required when no error bit is set")

    @property
    def error(self) -> bool:
        return self.mc_group_undefined or self.freq_error or self.dr_error or self.start_missed

    @property
    def time_to_start_unknown(self) -> bool:
        """v2: TimeToStart 0xFFFFFF, i.e. 2^24 s or more (the device clock is out of sync)."""
        return self.version == 2 and self.time_to_start == TIME_TO_START_UNKNOWN

    def _encode_payload(self) -> bytes:
        status = (
            self.mc_group_id
            | (0x04 if self.dr_error else 0)
            | (0x08 if self.freq_error else 0)
            | (0x10 if self.mc_group_undefined else 0)
            | (0x20 if self.start_missed else 0)
        )
        out = bytes((status,))
        if self.time_to_start is not None:
            out += le(self.time_to_start, 3)
        return out

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        fields = ("mc_group_id", "dr_error", "freq_error", "mc_group_undefined", "start_missed")
        if version == 1:
            status = r.u8(*fields, rfu=0xE0, label="Status&McGroupID")
        else:
            status = r.u8(*fields, label="Status&McGroupID")
            if status & 0xC0:  # reserved *error* bits: TimeToStart would be absent
                raise r.error(f"reserved error bits set in Status&McGroupID: 0x{status:02x}", offset=r.pos - 1)
        time_to_start = None if status & 0xFC else r.u24("time_to_start")
        return cls(
            mc_group_id=status & 3,
            mc_group_undefined=bool(status & 0x10),
            freq_error=bool(status & 0x08),
            dr_error=bool(status & 0x04),
            start_missed=bool(status & 0x20),
            time_to_start=time_to_start,
            version=version,
        )


@dataclass(frozen=True)
class McClassCSessionAns(_SessionAns):
    __doc__ = "McClassCSessionAns (uplink): " + (_SessionAns.__doc__ or "")
    CID = 0x04


@dataclass(frozen=True)
class McClassBSessionAns(_SessionAns):
    __doc__ = "McClassBSessionAns (uplink): " + (_SessionAns.__doc__ or "")
    CID = 0x05


_UP = {0x00: PackageVersionAns, 0x01: McGroupStatusAns, 0x02: McGroupSetupAns, 0x03: McGroupDeleteAns,
       0x04: McClassCSessionAns, 0x05: McClassBSessionAns}
_DOWN = {0x00: PackageVersionReq, 0x01: McGroupStatusReq, 0x02: McGroupSetupReq, 0x03: McGroupDeleteReq,
         0x04: McClassCSessionReq, 0x05: McClassBSessionReq}

MULTICAST_SETUP = Package(
    name="RemoteMulticastSetup",
    identifier=PACKAGE_MULTICAST_SETUP,
    fport=FPORT_MULTICAST_SETUP,
    versions=(1, 2),
    uplink={1: _UP, 2: _UP},
    downlink={1: _DOWN, 2: _DOWN},
)
