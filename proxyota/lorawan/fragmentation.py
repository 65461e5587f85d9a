"""TS004 Fragmented Data Block Transport commands (fPort 201, PackageIdentifier 3), v1.0.0 and v2.0.0.

| CID  | uplink (end-device)             | downlink (fragmentation server)  |
|------|---------------------------------|----------------------------------|
| 0x00 | PackageVersionAns               | PackageVersionReq                |
| 0x01 | FragSessionStatusAns            | FragSessionStatusReq             |
| 0x02 | FragSessionSetupAns             | FragSessionSetupReq              |
| 0x03 | FragSessionDeleteAns            | FragSessionDeleteReq             |
| 0x04 | FragDataBlockReceivedReq (v2)   | FragDataBlockReceivedAns (v2)    |
| 0x08 | —                               | DataFragment (alone in its frame)|

Commands whose layout differs between v1 and v2 carry a ``version`` field (1 or 2):
FragSessionStatusAns, FragSessionSetupReq, FragSessionSetupAns. Field names follow v2.0.0;
the v1.0.0 names are FragmentationMatrix (= ``frag_algo``), NotEnoughMatrixMemory
(= ``memory_error``), EncodingUnsupported (= ``frag_algo_unsupported``) and
FragSessionIndexNotSupported (= ``frag_index_unsupported``).

The FEC itself (coded fragments, the parity matrix) lives in :mod:`proxyota.fec`.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxyota.lorawan.codec import (
    FPORT_FRAGMENTATION,
    PACKAGE_FRAGMENTATION,
    U8,
    U16,
    Command,
    IndexWithFlag,
    Package,
    PackageVersionAns,
    PackageVersionReq,
    Reader,
    check_bool,
    check_bytes,
    check_optional_uint,
    check_uint,
    check_version,
    hex_field,
    le,
    require,
    v2_field,
    version_field,
)

MAX_FRAG_COUNTER = 0x3FFF  # N and NbFragReceived are 14 bits


@dataclass(frozen=True)
class FragSessionStatusReq(Command):
    """FragSessionStatusReq (downlink): FragStatusReqParam (b7:3 RFU, b2:1 FragIndex, b0 Participants).

    ``participants`` True: every device answers; False: only devices still missing fragments.
    """

    CID = 0x01
    frag_index: int
    participants: bool = False

    def __post_init__(self) -> None:
        check_uint(self, "frag_index", self.frag_index, 3)
        check_bool(self, "participants", self.participants)

    def _encode_payload(self) -> bytes:
        return bytes(((self.frag_index << 1) | (1 if self.participants else 0),))

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        b = r.u8("frag_index", "participants", rfu=0xF8, label="FragStatusReqParam")
        return cls((b >> 1) & 0x03, bool(b & 1))


@dataclass(frozen=True)
class FragSessionStatusAns(Command):
    """FragSessionStatusAns (uplink).

    v1: Received&Index u16 (b15:14 FragIndex, b13:0 NbFragReceived) | MissingFrag u8 |
        Status (b7:1 RFU, b0 NotEnoughMatrixMemory = ``memory_error``).
    v2: Status (b7:3 RFU, b2 SessionDoesNotExist, b1 MICError, b0 MemoryError) |
        Received&Index | MissingFrag; the last two are absent when the session does not
        exist (then ``frag_index``, ``nb_frag_received`` and ``missing_frag`` are None).

    Leniency: LoRa Basics Modem (and ChirpStack's codec) always send the 4-byte v2 form,
    also with SessionDoesNotExist set. On decode such a status byte is read as the spec's
    1-byte form unless the rest of the payload then fails to decode, in which case the
    3 following bytes are taken as the (meaningless, dropped) Received&Index and MissingFrag.

    What NbFragReceived and MissingFrag count differs between device stacks (see
    docs / the FUOTA notes); this class only carries the numbers.
    """

    CID = 0x01
    JSON_ALIASES = {"not_enough_matrix_memory": "memory_error"}
    frag_index: int | None = None
    nb_frag_received: int | None = None
    missing_frag: int | None = None
    memory_error: bool = False
    mic_error: bool = v2_field(False)
    session_does_not_exist: bool = v2_field(False)
    version: int = version_field()

    def __post_init__(self) -> None:
        check_version(self, self.version)
        check_bool(self, "memory_error", self.memory_error)
        check_bool(self, "mic_error", self.mic_error)
        check_bool(self, "session_does_not_exist", self.session_does_not_exist)
        if self.version == 1:
            require(self, "mic_error", not self.mic_error, "exists only in version 2")
            require(self, "session_does_not_exist", not self.session_does_not_exist, "exists only in version 2")
        if self.session_does_not_exist:
            for name in ("frag_index", "nb_frag_received", "missing_frag"):
                require(self, name, getattr(self, name) is None, "must be None when the session does not exist")
        else:
            for name in ("frag_index", "nb_frag_received", "missing_frag"):
                require(self, name, getattr(self, name) is not None, "is required")
        check_optional_uint(self, "frag_index", self.frag_index, 3)
        check_optional_uint(self, "nb_frag_received", self.nb_frag_received, MAX_FRAG_COUNTER)
        check_optional_uint(self, "missing_frag", self.missing_frag, U8)

    @property
    def status(self) -> int:
        return (
            (4 if self.session_does_not_exist else 0)
            | (2 if self.mic_error else 0)
            | (1 if self.memory_error else 0)
        )

    def _received(self) -> bytes:
        assert self.frag_index is not None and self.nb_frag_received is not None
        assert self.missing_frag is not None
        return le((self.frag_index << 14) | self.nb_frag_received, 2) + bytes((self.missing_frag,))

    def _encode_payload(self) -> bytes:
        if self.version == 1:
            return self._received() + bytes((self.status,))
        if self.session_does_not_exist:
            return bytes((self.status,))
        return bytes((self.status,)) + self._received()

    @classmethod
    def _decode_alternatives(cls, r: Reader, version: int) -> list[tuple[Command, int]]:
        if version == 1:
            received = r.u16("frag_index", "nb_frag_received", label="Received&Index")
            missing = r.u8("missing_frag")
            status = r.u8("memory_error", rfu=0xFE, label="Status")
            cmd = cls(received >> 14, received & MAX_FRAG_COUNTER, missing, bool(status & 1))
            return [(cmd, r.pos)]
        status = r.u8("session_does_not_exist", "mic_error", "memory_error", rfu=0xF8, label="Status")
        memory, mic = bool(status & 1), bool(status & 2)
        if status & 4:
            cmd = cls(None, None, None, memory, mic, True, version=2)
            alts: list[tuple[Command, int]] = [(cmd, r.pos)]
            if r.remaining >= 3:  # the 4-byte form some stacks send anyway
                alts.append((cmd, r.pos + 3))
            return alts
        received = r.u16("frag_index", "nb_frag_received", label="Received&Index")
        missing = r.u8("missing_frag")
        cmd = cls(received >> 14, received & MAX_FRAG_COUNTER, missing, memory, mic, False, version=2)
        return [(cmd, r.pos)]


@dataclass(frozen=True)
class FragSessionSetupReq(Command):
    """FragSessionSetupReq (downlink).

    FragSession (b7:6 RFU, b5:4 FragIndex, b3:0 McGroupBitMask) | NbFrag u16 | FragSize u8 |
    Control (v1: b7:6 RFU, b5:3 FragmentationMatrix, b2:0 BlockAckDelay;
             v2: b7 RFU, b6 AckReception, b5:3 FragAlgo, b2:0 BlockAckDelay) |
    Padding u8 | Descriptor 4 B | v2 only: SessionCnt u16 | MIC 4 B.

    ``frag_algo`` 0 is the spec's parity code; other values are carried (the device answers
    FragAlgoUnsupported). ``padding`` must be smaller than ``frag_size``.
    """

    CID = 0x02
    JSON_ALIASES = {"fragmentation_matrix": "frag_algo"}
    frag_index: int
    nb_frag: int
    frag_size: int
    padding: int = 0
    mc_group_bit_mask: int = 0
    frag_algo: int = 0
    block_ack_delay: int = 0
    descriptor: bytes = hex_field(default=bytes(4))
    ack_reception: bool = v2_field(False)
    session_cnt: int | None = v2_field(None)
    mic: bytes | None = v2_field(None, "hex")
    version: int = version_field()

    def __post_init__(self) -> None:
        check_version(self, self.version)
        check_uint(self, "frag_index", self.frag_index, 3)
        check_uint(self, "nb_frag", self.nb_frag, U16, 1)
        check_uint(self, "frag_size", self.frag_size, U8, 1)
        check_uint(self, "padding", self.padding, self.frag_size - 1)
        check_uint(self, "mc_group_bit_mask", self.mc_group_bit_mask, 0x0F)
        check_uint(self, "frag_algo", self.frag_algo, 7)
        check_uint(self, "block_ack_delay", self.block_ack_delay, 7)
        check_bytes(self, "descriptor", self.descriptor, 4)
        check_bool(self, "ack_reception", self.ack_reception)
        if self.version == 1:
            require(self, "ack_reception", not self.ack_reception, "exists only in version 2")
            require(self, "session_cnt", self.session_cnt is None, "exists only in version 2")
            require(self, "mic", self.mic is None, "exists only in version 2")
        else:
            require(self, "session_cnt", self.session_cnt is not None, "is required in version 2")
            require(self, "mic", self.mic is not None, "is required in version 2")
            check_uint(self, "session_cnt", self.session_cnt, U16)
            check_bytes(self, "mic", self.mic, 4)

    @property
    def block_ack_delay_max_seconds(self) -> int:
        """Devices answer after a random delay in [0, 2^(BlockAckDelay+4)] seconds."""
        return 1 << (self.block_ack_delay + 4)

    @property
    def mc_group_ids(self) -> tuple[int, ...]:
        return tuple(i for i in range(4) if self.mc_group_bit_mask >> i & 1)

    def _encode_payload(self) -> bytes:
        control = (self.frag_algo << 3) | self.block_ack_delay | (0x40 if self.ack_reception else 0)
        out = (
            bytes(((self.frag_index << 4) | self.mc_group_bit_mask,))
            + le(self.nb_frag, 2)
            + bytes((self.frag_size, control, self.padding))
            + self.descriptor
        )
        if self.version == 2:
            assert self.session_cnt is not None and self.mic is not None
            out += le(self.session_cnt, 2) + self.mic
        return out

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        session = r.u8("frag_index", "mc_group_bit_mask", rfu=0xC0, label="FragSession")
        nb_frag = r.u16("nb_frag")
        frag_size = r.u8("frag_size")
        control = r.u8("frag_algo", "block_ack_delay", "ack_reception", rfu=0xC0 if version == 1 else 0x80,
                       label="Control")
        padding = r.u8("padding")
        descriptor = r.take(4, "descriptor")
        session_cnt = mic = None
        if version == 2:
            session_cnt = r.u16("session_cnt")
            mic = r.take(4, "mic")
        return cls(
            frag_index=(session >> 4) & 0x03,
            nb_frag=nb_frag,
            frag_size=frag_size,
            padding=padding,
            mc_group_bit_mask=session & 0x0F,
            frag_algo=(control >> 3) & 0x07,
            block_ack_delay=control & 0x07,
            descriptor=descriptor,
            ack_reception=bool(control & 0x40),
            session_cnt=session_cnt,
            mic=mic,
            version=version,
        )


@dataclass(frozen=True)
class FragSessionSetupAns(Command):
    """FragSessionSetupAns (uplink): StatusBitMask.

    b7:6 FragIndex | v1: b5:4 RFU; v2: b5 RFU, b4 SessionCntReplay | b3 WrongDescriptor |
    b2 FragIndexUnsupported | b1 NotEnoughMemory | b0 FragAlgoUnsupported (v1: EncodingUnsupported).
    """

    CID = 0x02
    JSON_ALIASES = {
        "encoding_unsupported": "frag_algo_unsupported",
        "frag_session_index_not_supported": "frag_index_unsupported",
    }
    frag_index: int
    frag_algo_unsupported: bool = False
    not_enough_memory: bool = False
    frag_index_unsupported: bool = False
    wrong_descriptor: bool = False
    session_cnt_replay: bool = v2_field(False)
    version: int = version_field()

    def __post_init__(self) -> None:
        check_version(self, self.version)
        check_uint(self, "frag_index", self.frag_index, 3)
        for name in ("frag_algo_unsupported", "not_enough_memory", "frag_index_unsupported",
                     "wrong_descriptor", "session_cnt_replay"):
            check_bool(self, name, getattr(self, name))
        if self.version == 1:
            require(self, "session_cnt_replay", not self.session_cnt_replay, "exists only in version 2")

    @property
    def accepted(self) -> bool:
        return not (self._bits() & 0x1F)

    def _bits(self) -> int:
        return (
            (0x10 if self.session_cnt_replay else 0)
            | (0x08 if self.wrong_descriptor else 0)
            | (0x04 if self.frag_index_unsupported else 0)
            | (0x02 if self.not_enough_memory else 0)
            | (0x01 if self.frag_algo_unsupported else 0)
        )

    def _encode_payload(self) -> bytes:
        return bytes(((self.frag_index << 6) | self._bits(),))

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        b = r.u8("frag_index", "frag_algo_unsupported", "not_enough_memory", "frag_index_unsupported",
                 "wrong_descriptor", "session_cnt_replay", rfu=0x30 if version == 1 else 0x20,
                 label="StatusBitMask")
        return cls(b >> 6, bool(b & 1), bool(b & 2), bool(b & 4), bool(b & 8), bool(b & 0x10), version=version)


@dataclass(frozen=True)
class FragSessionDeleteReq(Command):
    """FragSessionDeleteReq (downlink): Param (b7:2 RFU, b1:0 FragIndex)."""

    CID = 0x03
    frag_index: int

    def __post_init__(self) -> None:
        check_uint(self, "frag_index", self.frag_index, 3)

    def _encode_payload(self) -> bytes:
        return bytes((self.frag_index,))

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        return cls(r.u8("frag_index", rfu=0xFC))


@dataclass(frozen=True)
class FragSessionDeleteAns(IndexWithFlag):
    """FragSessionDeleteAns (uplink): Status (b7:3 RFU, b2 SessionDoesNotExist, b1:0 FragIndex)."""

    CID = 0x03
    frag_index: int
    session_does_not_exist: bool = False
    _LABEL = "Status"


@dataclass(frozen=True)
class FragDataBlockReceivedReq(IndexWithFlag):
    """FragDataBlockReceivedReq (v2, uplink): Status (b7:3 RFU, b2 MICError, b1:0 FragIndex).

    Sent only when the session was set up with AckReception, after a random delay.
    """

    CID = 0x04
    frag_index: int
    mic_error: bool = False
    _LABEL = "Status"


@dataclass(frozen=True)
class FragDataBlockReceivedAns(Command):
    """FragDataBlockReceivedAns (v2, downlink): b7:2 RFU, b1:0 FragIndex."""

    CID = 0x04
    frag_index: int

    def __post_init__(self) -> None:
        check_uint(self, "frag_index", self.frag_index, 3)

    def _encode_payload(self) -> bytes:
        return bytes((self.frag_index,))

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        return cls(r.u8("frag_index", rfu=0xFC))


@dataclass(frozen=True)
class DataFragment(Command):
    """DataFragment (downlink, unicast or multicast): IndexAndN u16 (b15:14 FragIndex,
    b13:0 N, 1-based) | the fragment, running to the end of the frame.

    It is the only command of its frame (``encode_commands`` enforces it; on decode a
    DataFragment after other commands is accepted and takes the rest of the payload).
    """

    CID = 0x08
    ALONE_IN_FRAME = True
    frag_index: int
    n: int
    payload: bytes = hex_field()

    def __post_init__(self) -> None:
        check_uint(self, "frag_index", self.frag_index, 3)
        check_uint(self, "n", self.n, MAX_FRAG_COUNTER, 1)
        check_bytes(self, "payload", self.payload, min_length=1)

    def _encode_payload(self) -> bytes:
        return le((self.frag_index << 14) | self.n, 2) + self.payload

    @classmethod
    def _decode(cls, r: Reader, version: int) -> Command:
        index_and_n = r.u16("frag_index", "n", label="IndexAndN")
        return cls(index_and_n >> 14, index_and_n & MAX_FRAG_COUNTER, r.rest("payload"))


_UP_V1 = {0x00: PackageVersionAns, 0x01: FragSessionStatusAns, 0x02: FragSessionSetupAns,
          0x03: FragSessionDeleteAns}
_DOWN_V1 = {0x00: PackageVersionReq, 0x01: FragSessionStatusReq, 0x02: FragSessionSetupReq,
            0x03: FragSessionDeleteReq, 0x08: DataFragment}

FRAGMENTATION = Package(
    name="Fragmentation",
    identifier=PACKAGE_FRAGMENTATION,
    fport=FPORT_FRAGMENTATION,
    versions=(1, 2),
    uplink={1: _UP_V1, 2: {**_UP_V1, 0x04: FragDataBlockReceivedReq}},
    downlink={1: _DOWN_V1, 2: {**_DOWN_V1, 0x04: FragDataBlockReceivedAns}},
)
