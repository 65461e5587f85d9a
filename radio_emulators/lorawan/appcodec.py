"""The emulated end device's own codec for the LoRaWAN application-layer packages it
speaks: decode the requests it receives (downlinks) and encode its answers (uplinks).

Packages and ports: Clock Sync TS003 (id 1, fPort 202), Remote Multicast Setup TS005 (id 2,
fPort 200), Fragmented Data Block Transport TS004 (id 3, fPort 201), Firmware Management
TS006 (id 4, fPort 203); PackageVersionReq (CID 0x00) on each. Versions 1 (v1.0.0) and 2
(v2.0.0) where the frame layouts differ (TS004 FragSessionSetupReq/FragSessionStatusAns,
TS004 v2 FragDataBlockReceived*, TS005 v2 StartMissed). Multi-byte fields little-endian.

Independent of the gateway's codecs. A downlink may carry several commands (a DataFragment
only alone); decoding stops at the first malformed or unknown command and returns the
commands before it together with the error, as a device would process what it understood.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "AppCodecError", "PORT_MULTICAST", "PORT_FRAGMENTATION", "PORT_CLOCK_SYNC",
    "PORT_FIRMWARE", "PACKAGE_ID", "PORT_OF_PACKAGE", "decode_downlink",
    # requests (downlink)
    "PackageVersionReq", "AppTimeAns", "DeviceAppTimePeriodicityReq", "ForceDeviceResyncReq",
    "McGroupStatusReq", "McGroupSetupReq", "McGroupDeleteReq", "McClassCSessionReq",
    "McClassBSessionReq", "FragSessionStatusReq", "FragSessionSetupReq",
    "FragSessionDeleteReq", "FragDataBlockReceivedAns", "DataFragment", "DevVersionReq",
    "DevRebootTimeReq", "DevRebootCountdownReq", "DevUpgradeImageReq", "DevDeleteImageReq",
    # answers (uplink)
    "PackageVersionAns", "AppTimeReq", "DeviceAppTimePeriodicityAns", "McGroupStatusAns",
    "McGroupSetupAns", "McGroupDeleteAns", "McSessionAns", "FragSessionStatusAns",
    "FragSessionSetupAns", "FragSessionDeleteAns", "FragDataBlockReceivedReq", "DevVersionAns",
    "DevRebootTimeAns", "DevRebootCountdownAns", "DevUpgradeImageAns", "DevDeleteImageAns",
]

PORT_MULTICAST = 200
PORT_FRAGMENTATION = 201
PORT_CLOCK_SYNC = 202
PORT_FIRMWARE = 203
# package identifier by port, and port by package identifier
PACKAGE_ID = {PORT_CLOCK_SYNC: 1, PORT_MULTICAST: 2, PORT_FRAGMENTATION: 3, PORT_FIRMWARE: 4}
PORT_OF_PACKAGE = {v: k for k, v in PACKAGE_ID.items()}


class AppCodecError(ValueError):
    """A frame the device cannot parse; names the command and the byte offset."""

    def __init__(self, message: str, *, command: str | None = None, offset: int | None = None):
        super().__init__(message)
        self.command = command
        self.offset = offset


def _u24(b: bytes) -> int:
    return b[0] | (b[1] << 8) | (b[2] << 16)


def _p24(v: int) -> bytes:
    return bytes((v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF))


# ----------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class PackageVersionReq:
    pass


@dataclass(frozen=True)
class AppTimeAns:
    time_correction: int
    token: int


@dataclass(frozen=True)
class DeviceAppTimePeriodicityReq:
    period: int


@dataclass(frozen=True)
class ForceDeviceResyncReq:
    nb_transmissions: int


@dataclass(frozen=True)
class McGroupStatusReq:
    req_group_mask: int


@dataclass(frozen=True)
class McGroupSetupReq:
    mc_group_id: int
    mc_addr: int
    mc_key_encrypted: bytes
    min_mc_fcount: int
    max_mc_fcount: int


@dataclass(frozen=True)
class McGroupDeleteReq:
    mc_group_id: int


@dataclass(frozen=True)
class McClassCSessionReq:
    mc_group_id: int
    session_time: int
    timeout: int
    dl_frequency: int  # Hz
    dr: int


@dataclass(frozen=True)
class McClassBSessionReq:
    mc_group_id: int
    session_time: int
    timeout: int
    periodicity: int
    dl_frequency: int  # Hz (v2: 0 = hopping)
    dr: int


@dataclass(frozen=True)
class FragSessionStatusReq:
    frag_index: int
    participants: bool


@dataclass(frozen=True)
class FragSessionSetupReq:
    frag_index: int
    mc_group_bit_mask: int
    nb_frag: int
    frag_size: int
    frag_algo: int          # v1 "FragmentationMatrix"
    block_ack_delay: int
    padding: int
    descriptor: bytes
    ack_reception: bool = False   # v2
    session_cnt: int | None = None  # v2
    mic: bytes | None = None      # v2


@dataclass(frozen=True)
class FragSessionDeleteReq:
    frag_index: int


@dataclass(frozen=True)
class FragDataBlockReceivedAns:
    frag_index: int


@dataclass(frozen=True)
class DataFragment:
    frag_index: int
    n: int
    payload: bytes


@dataclass(frozen=True)
class DevVersionReq:
    pass


@dataclass(frozen=True)
class DevRebootTimeReq:
    reboot_time: int


@dataclass(frozen=True)
class DevRebootCountdownReq:
    countdown: int


@dataclass(frozen=True)
class DevUpgradeImageReq:
    pass


@dataclass(frozen=True)
class DevDeleteImageReq:
    version: int


def _clock_sync(cid: int, body: bytes, version: int):
    if cid == 0x01:
        corr, param = struct.unpack("<iB", body)
        return AppTimeAns(corr, param & 0x0F)
    if cid == 0x02:
        return DeviceAppTimePeriodicityReq(body[0] & 0x0F)
    if cid == 0x03:
        return ForceDeviceResyncReq(body[0] & 0x07)
    raise KeyError(cid)


def _multicast(cid: int, body: bytes, version: int):
    if cid == 0x01:
        return McGroupStatusReq(body[0] & 0x0F)
    if cid == 0x02:
        addr, = struct.unpack_from("<I", body, 1)
        mn, mx = struct.unpack_from("<II", body, 21)
        return McGroupSetupReq(body[0] & 0x03, addr, bytes(body[5:21]), mn, mx)
    if cid == 0x03:
        return McGroupDeleteReq(body[0] & 0x03)
    if cid == 0x04:
        st, = struct.unpack_from("<I", body, 1)
        return McClassCSessionReq(body[0] & 0x03, st, body[5] & 0x0F, _u24(body[6:9]) * 100,
                                  body[9] & 0x0F)
    if cid == 0x05:
        st, = struct.unpack_from("<I", body, 1)
        return McClassBSessionReq(body[0] & 0x03, st, body[5] & 0x0F, (body[5] >> 4) & 0x07,
                                  _u24(body[6:9]) * 100, body[9] & 0x0F)
    raise KeyError(cid)


def _fragmentation(cid: int, body: bytes, version: int):
    if cid == 0x01:
        return FragSessionStatusReq((body[0] >> 1) & 0x03, bool(body[0] & 0x01))
    if cid == 0x02:
        nb, = struct.unpack_from("<H", body, 1)
        ctrl = body[4]
        common = dict(frag_index=(body[0] >> 4) & 0x03, mc_group_bit_mask=body[0] & 0x0F,
                      nb_frag=nb, frag_size=body[3], frag_algo=(ctrl >> 3) & 0x07,
                      block_ack_delay=ctrl & 0x07, padding=body[5], descriptor=bytes(body[6:10]))
        if version >= 2:
            cnt, = struct.unpack_from("<H", body, 10)
            return FragSessionSetupReq(**common, ack_reception=bool(ctrl & 0x40),
                                       session_cnt=cnt, mic=bytes(body[12:16]))
        return FragSessionSetupReq(**common)
    if cid == 0x03:
        return FragSessionDeleteReq(body[0] & 0x03)
    if cid == 0x04 and version >= 2:
        return FragDataBlockReceivedAns(body[0] & 0x03)
    raise KeyError(cid)


def _firmware(cid: int, body: bytes, version: int):
    if cid == 0x01:
        return DevVersionReq()
    if cid == 0x02:
        return DevRebootTimeReq(struct.unpack("<I", body)[0])
    if cid == 0x03:
        return DevRebootCountdownReq(_u24(body))
    if cid == 0x04:
        return DevUpgradeImageReq()
    if cid == 0x05:
        return DevDeleteImageReq(struct.unpack("<I", body)[0])
    raise KeyError(cid)


# (port) -> (parser, {cid: (name, body length by version)})
_REQUESTS = {
    PORT_CLOCK_SYNC: (_clock_sync, {1: ("AppTimeAns", 5), 2: ("DeviceAppTimePeriodicityReq", 1),
                                    3: ("ForceDeviceResyncReq", 1)}),
    PORT_MULTICAST: (_multicast, {1: ("McGroupStatusReq", 1), 2: ("McGroupSetupReq", 29),
                                  3: ("McGroupDeleteReq", 1), 4: ("McClassCSessionReq", 10),
                                  5: ("McClassBSessionReq", 10)}),
    PORT_FRAGMENTATION: (_fragmentation, {1: ("FragSessionStatusReq", 1),
                                          2: ("FragSessionSetupReq", 10),
                                          3: ("FragSessionDeleteReq", 1),
                                          4: ("FragDataBlockReceivedAns", 1)}),
    PORT_FIRMWARE: (_firmware, {1: ("DevVersionReq", 0), 2: ("DevRebootTimeReq", 4),
                                3: ("DevRebootCountdownReq", 3), 4: ("DevUpgradeImageReq", 0),
                                5: ("DevDeleteImageReq", 4)}),
}


def decode_downlink(port: int, payload: bytes, version: int = 1
                    ) -> tuple[list, AppCodecError | None]:
    """Split a downlink on one of the package ports into its commands.

    Returns (commands, error): the commands parsed before the first problem, and the
    problem (None if the whole payload was understood)."""
    if port not in _REQUESTS:
        return [], AppCodecError(f"fPort {port} carries no application-layer package")
    parser, table = _REQUESTS[port]
    out: list = []
    i = 0
    payload = bytes(payload)
    while i < len(payload):
        cid = payload[i]
        if cid == 0x00:
            out.append(PackageVersionReq())
            i += 1
            continue
        if port == PORT_FRAGMENTATION and cid == 0x08:
            if i != 0:
                return out, AppCodecError("DataFragment must be alone in its frame",
                                          command="DataFragment", offset=i)
            if len(payload) < 3:
                return out, AppCodecError("DataFragment shorter than its 2-byte header",
                                          command="DataFragment", offset=i)
            ian, = struct.unpack_from("<H", payload, 1)
            out.append(DataFragment(ian >> 14, ian & 0x3FFF, payload[3:]))
            return out, None
        entry = table.get(cid)
        if entry is None or (port == PORT_FRAGMENTATION and cid == 0x04 and version < 2):
            return out, AppCodecError(f"unknown command 0x{cid:02x} on fPort {port}",
                                      offset=i)
        name, length = entry
        if port == PORT_FRAGMENTATION and cid == 0x02 and version >= 2:
            length = 16
        body = payload[i + 1:i + 1 + length]
        if len(body) != length:
            return out, AppCodecError(f"{name} needs {length} bytes after its CID, "
                                      f"got {len(body)}", command=name, offset=i)
        out.append(parser(cid, body, version))
        i += 1 + length
    return out, None


# ------------------------------------------------------------------------------ answers
def _flags(*pairs: tuple[bool, int]) -> int:
    v = 0
    for on, bit in pairs:
        if on:
            v |= 1 << bit
    return v


@dataclass(frozen=True)
class PackageVersionAns:
    package_id: int
    version: int

    def encode(self) -> bytes:
        return bytes((0x00, self.package_id, self.version))


@dataclass(frozen=True)
class AppTimeReq:
    device_time: int
    token: int
    ans_required: bool

    def encode(self) -> bytes:
        param = (self.token & 0x0F) | (0x10 if self.ans_required else 0)
        return b"\x01" + struct.pack("<IB", self.device_time & 0xFFFFFFFF, param)


@dataclass(frozen=True)
class DeviceAppTimePeriodicityAns:
    not_supported: bool
    device_time: int

    def encode(self) -> bytes:
        return b"\x02" + struct.pack("<BI", 1 if self.not_supported else 0,
                                     self.device_time & 0xFFFFFFFF)


@dataclass(frozen=True)
class McGroupStatusAns:
    nb_total_groups: int
    groups: tuple[tuple[int, int], ...]  # (McGroupID, McAddr) answered

    def encode(self) -> bytes:
        mask = 0
        items = b""
        for gid, addr in self.groups:
            mask |= 1 << gid
            items += bytes((gid,)) + struct.pack("<I", addr)
        return bytes((0x01, ((self.nb_total_groups & 0x07) << 4) | mask)) + items


@dataclass(frozen=True)
class McGroupSetupAns:
    mc_group_id: int
    id_error: bool

    def encode(self) -> bytes:
        return bytes((0x02, (self.mc_group_id & 0x03) | _flags((self.id_error, 2))))


@dataclass(frozen=True)
class McGroupDeleteAns:
    mc_group_id: int
    mc_group_undefined: bool

    def encode(self) -> bytes:
        return bytes((0x03, (self.mc_group_id & 0x03) | _flags((self.mc_group_undefined, 2))))


@dataclass(frozen=True)
class McSessionAns:
    """McClassCSessionAns (cid 0x04) or McClassBSessionAns (cid 0x05)."""

    cid: int
    mc_group_id: int
    dr_error: bool = False
    freq_error: bool = False
    mc_group_undefined: bool = False
    start_missed: bool = False  # v2 only
    time_to_start: int | None = None

    def encode(self) -> bytes:
        status = (self.mc_group_id & 0x03) | _flags(
            (self.dr_error, 2), (self.freq_error, 3), (self.mc_group_undefined, 4),
            (self.start_missed, 5))
        out = bytes((self.cid, status))
        if self.time_to_start is not None:
            out += _p24(self.time_to_start)
        return out


@dataclass(frozen=True)
class FragSessionStatusAns:
    version: int
    frag_index: int
    nb_frag_received: int
    missing_frag: int
    not_enough_matrix_memory: bool = False  # v1 Status b0 / v2 MemoryError
    mic_error: bool = False                 # v2
    session_does_not_exist: bool = False    # v2

    def encode(self) -> bytes:
        rai = struct.pack("<H", ((self.frag_index & 0x03) << 14)
                          | (self.nb_frag_received & 0x3FFF))
        missing = bytes((self.missing_frag & 0xFF,))
        if self.version >= 2:
            status = _flags((self.not_enough_matrix_memory, 0), (self.mic_error, 1),
                            (self.session_does_not_exist, 2))
            return bytes((0x01, status)) + rai + missing
        return b"\x01" + rai + missing + bytes((1 if self.not_enough_matrix_memory else 0,))


@dataclass(frozen=True)
class FragSessionSetupAns:
    frag_index: int
    encoding_unsupported: bool = False
    not_enough_memory: bool = False
    index_not_supported: bool = False
    wrong_descriptor: bool = False
    session_cnt_replay: bool = False  # v2

    @property
    def ok(self) -> bool:
        return not (self.encoding_unsupported or self.not_enough_memory
                    or self.index_not_supported or self.wrong_descriptor
                    or self.session_cnt_replay)

    def encode(self) -> bytes:
        return bytes((0x02, ((self.frag_index & 0x03) << 6) | _flags(
            (self.encoding_unsupported, 0), (self.not_enough_memory, 1),
            (self.index_not_supported, 2), (self.wrong_descriptor, 3),
            (self.session_cnt_replay, 4))))


@dataclass(frozen=True)
class FragSessionDeleteAns:
    frag_index: int
    session_does_not_exist: bool

    def encode(self) -> bytes:
        return bytes((0x03, (self.frag_index & 0x03) | _flags((self.session_does_not_exist, 2))))


@dataclass(frozen=True)
class FragDataBlockReceivedReq:
    frag_index: int
    mic_error: bool

    def encode(self) -> bytes:
        return bytes((0x04, (self.frag_index & 0x03) | _flags((self.mic_error, 2))))


@dataclass(frozen=True)
class DevVersionAns:
    fw_version: int
    hw_version: int

    def encode(self) -> bytes:
        return b"\x01" + struct.pack("<II", self.fw_version & 0xFFFFFFFF,
                                     self.hw_version & 0xFFFFFFFF)


@dataclass(frozen=True)
class DevRebootTimeAns:
    value: int  # seconds until reboot; 0 = error; 0xFFFFFFFF = cancel acknowledged

    def encode(self) -> bytes:
        return b"\x02" + struct.pack("<I", self.value & 0xFFFFFFFF)


@dataclass(frozen=True)
class DevRebootCountdownAns:
    value: int  # 24-bit: seconds until reboot; 0 error; 0xFFFFFF cancel acknowledged

    def encode(self) -> bytes:
        return b"\x03" + _p24(self.value)


@dataclass(frozen=True)
class DevUpgradeImageAns:
    status: int  # 0 no image, 1 corrupt / bad signature, 2 wrong hardware, 3 valid
    next_version: int | None = None

    def encode(self) -> bytes:
        out = bytes((0x04, self.status & 0x03))
        if self.status == 3:
            out += struct.pack("<I", (self.next_version or 0) & 0xFFFFFFFF)
        return out


@dataclass(frozen=True)
class DevDeleteImageAns:
    no_valid_image: bool
    invalid_version: bool

    def encode(self) -> bytes:
        return bytes((0x05, _flags((self.no_valid_image, 0), (self.invalid_version, 1))))
