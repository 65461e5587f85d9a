"""The emulated LoRaWAN radio's physical layer: region data-rate tables, exact LoRa time on
air, per-sub-band duty-cycle accounting, and class A / B / C timing helpers.

Written for the emulator, independently of the gateway's airtime code (an independent peer:
a bug mirrored on both sides would pass). Sources of the facts used here:

- time on air: Semtech AN1200.13 "LoRa Modem Designer's Guide" (symbol time 2^SF/BW,
  preamble + 4.25 symbols, payload symbol formula with CRC / implicit header / low data rate
  optimisation); FSK frames as LoRaWAN sends them (5 B preamble, 3 B sync word, 1 B length,
  2 B CRC);
- data rates, maximum payloads (M = MACPayload, N = FRMPayload with empty FOpts), RX2 /
  beacon / ping-slot defaults, RX1 data-rate mapping: LoRa Alliance RP002-1.0.x;
- EU868 sub-bands and duty cycles: ETSI EN 300 220 as LoRaMac-node's RegionEU868 maps them;
- class B ping slots: LoRaWAN L2 1.0.4 section 14 (beacon period 128 s, beacon reserved
  2.120 s, slot 30 ms, pingOffset from AES-128 with a zero key).

Duty cycle model: each transmission occupies its sub-band for airtime / duty seconds (the
airtime followed by the mandatory off time T_off = airtime x (1/duty - 1)), as LoRaMac-node
and Basic Station account it; a frame that would overlap an occupied span is delayed.
Everything is in seconds of emulated (GPS) time; nothing here sleeps.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping

from radio_emulators.lorawan.crypto import aes128_encrypt

__all__ = [
    "PhyError", "Modulation", "DataRate", "SubBand", "Region", "EU868", "US915", "REGIONS",
    "MAC_OVERHEAD", "DATA_FRAGMENT_HEADER", "phy_payload_len", "lora_time_on_air",
    "fsk_time_on_air", "time_on_air", "DutyCycle", "RECEIVE_DELAY1", "RECEIVE_DELAY2",
    "rx_window_starts", "BEACON_PERIOD", "BEACON_RESERVED", "PING_SLOT_LEN",
    "ping_offset", "ping_slot_times", "next_ping_slot", "class_c_window",
    "class_b_window", "gps_beacon_time",
]


class PhyError(ValueError):
    """A radio parameter the emulated PHY cannot use (unknown data rate, payload too long,
    frequency outside the region)."""


class Modulation(Enum):
    LORA = "LoRa"
    FSK = "FSK"
    LR_FHSS = "LR-FHSS"


@dataclass(frozen=True)
class DataRate:
    """One row of a region's data-rate table."""

    index: int
    modulation: Modulation
    sf: int | None = None          # LoRa spreading factor
    bw_hz: int | None = None       # LoRa bandwidth
    bitrate: int | None = None     # FSK bit rate
    max_m: int = 0                 # max MACPayload
    max_n: int = 0                 # max FRMPayload (FOpts empty), no repeater
    max_n_repeater: int | None = None  # max FRMPayload when a repeater may be present

    def max_frm_payload(self, repeater: bool = False) -> int:
        if repeater and self.max_n_repeater is not None:
            return self.max_n_repeater
        return self.max_n

    @property
    def symbol_time(self) -> float:
        if self.modulation is not Modulation.LORA:
            raise PhyError(f"DR{self.index} is not LoRa: no symbol time")
        return (1 << self.sf) / self.bw_hz


@dataclass(frozen=True)
class SubBand:
    """A regulatory sub-band [lo_hz, hi_hz] with its duty-cycle limit (1.0 = none)."""

    name: str
    lo_hz: int
    hi_hz: int
    duty: float

    def contains(self, freq_hz: int) -> bool:
        return self.lo_hz <= freq_hz <= self.hi_hz


def _lora(i: int, sf: int, bw: int, m: int, n: int, nr: int | None = None) -> DataRate:
    return DataRate(i, Modulation.LORA, sf=sf, bw_hz=bw, max_m=m, max_n=n, max_n_repeater=nr)


@dataclass(frozen=True)
class Region:
    """The parts of a regional parameter set the emulator needs."""

    name: str
    uplink_drs: Mapping[int, DataRate]
    downlink_drs: Mapping[int, DataRate]
    sub_bands: tuple[SubBand, ...]
    freq_range: tuple[int, int]              # any TX/RX frequency must lie here
    downlink_freq_range: tuple[int, int]
    rx2: tuple[int, int]                     # (frequency Hz, DR)
    ping_slot: tuple[int, int]               # default class B ping-slot (frequency, DR)
    beacon: tuple[int, int]
    default_uplink_channels: tuple[int, ...]
    rx1_dr_table: Mapping[int, int] = field(default_factory=dict)  # uplink DR -> RX1 DR
    rx1_downlink_channels: tuple[int, ...] = ()  # if set, RX1 freq = these[ch % len]
    uplink_channel_grid: tuple[int, ...] = ()   # all uplink channels (for the RX1 index)

    def uplink_dr(self, dr: int) -> DataRate:
        try:
            return self.uplink_drs[dr]
        except KeyError:
            raise PhyError(f"{self.name}: no uplink DR{dr}") from None

    def downlink_dr(self, dr: int) -> DataRate:
        try:
            return self.downlink_drs[dr]
        except KeyError:
            raise PhyError(f"{self.name}: no downlink DR{dr}") from None

    def is_valid_downlink_dr(self, dr: int) -> bool:
        d = self.downlink_drs.get(dr)
        return d is not None and d.modulation is not Modulation.LR_FHSS

    def is_valid_downlink_freq(self, freq_hz: int) -> bool:
        lo, hi = self.downlink_freq_range
        return lo <= freq_hz <= hi

    def sub_band(self, freq_hz: int) -> SubBand:
        for band in self.sub_bands:
            if band.contains(freq_hz):
                return band
        raise PhyError(f"{self.name}: {freq_hz} Hz is in no sub-band")

    def rx1(self, uplink_freq: int, uplink_dr: int) -> tuple[int, int]:
        """RX1 (frequency, DR) for RX1DROffset 0."""
        dr = self.rx1_dr_table.get(uplink_dr, uplink_dr)
        if self.rx1_downlink_channels:
            try:
                ch = self.uplink_channel_grid.index(uplink_freq)
            except ValueError:
                raise PhyError(f"{self.name}: {uplink_freq} Hz is no uplink channel") from None
            return self.rx1_downlink_channels[ch % len(self.rx1_downlink_channels)], dr
        return uplink_freq, dr


# EU868 (RP002-1.0.x table "EU863-870 data rates" and maximum payload sizes).
_EU868_DRS = {
    0: _lora(0, 12, 125_000, 59, 51),
    1: _lora(1, 11, 125_000, 59, 51),
    2: _lora(2, 10, 125_000, 59, 51),
    3: _lora(3, 9, 125_000, 123, 115),
    4: _lora(4, 8, 125_000, 250, 242, 222),
    5: _lora(5, 7, 125_000, 250, 242, 222),
    6: _lora(6, 7, 250_000, 250, 242, 222),
    7: DataRate(7, Modulation.FSK, bitrate=50_000, max_m=250, max_n=242, max_n_repeater=222),
    8: DataRate(8, Modulation.LR_FHSS, max_m=58, max_n=50),
    9: DataRate(9, Modulation.LR_FHSS, max_m=123, max_n=115),
    10: DataRate(10, Modulation.LR_FHSS, max_m=58, max_n=50),
    11: DataRate(11, Modulation.LR_FHSS, max_m=123, max_n=115),
}

EU868 = Region(
    name="EU868",
    uplink_drs=_EU868_DRS,
    downlink_drs={k: v for k, v in _EU868_DRS.items() if k <= 7},
    sub_bands=(
        SubBand("863.0-865.0", 863_000_000, 864_999_999, 0.001),
        SubBand("865.0-868.0", 865_000_000, 868_000_000, 0.01),
        SubBand("868.0-868.6", 868_000_001, 868_600_000, 0.01),
        SubBand("868.7-869.2", 868_700_000, 869_200_000, 0.001),
        SubBand("869.4-869.65", 869_400_000, 869_650_000, 0.10),
        SubBand("869.7-870.0", 869_700_000, 870_000_000, 0.01),
    ),
    freq_range=(863_000_000, 870_000_000),
    downlink_freq_range=(863_000_000, 870_000_000),
    rx2=(869_525_000, 0),
    ping_slot=(869_525_000, 3),
    beacon=(869_525_000, 3),
    default_uplink_channels=(868_100_000, 868_300_000, 868_500_000),
)

# US915 (RP002-1.0.x): uplink DR0-6, downlink DR8-13.
_US915_UP = {
    0: _lora(0, 10, 125_000, 19, 11),
    1: _lora(1, 9, 125_000, 61, 53),
    2: _lora(2, 8, 125_000, 133, 125),
    3: _lora(3, 7, 125_000, 250, 242),
    4: _lora(4, 8, 500_000, 250, 242),
    5: DataRate(5, Modulation.LR_FHSS, max_m=58, max_n=50),
    6: DataRate(6, Modulation.LR_FHSS, max_m=133, max_n=125),
}
_US915_DOWN = {
    8: _lora(8, 12, 500_000, 61, 53, 33),
    9: _lora(9, 11, 500_000, 137, 129, 109),
    10: _lora(10, 10, 500_000, 250, 242, 222),
    11: _lora(11, 9, 500_000, 250, 242, 222),
    12: _lora(12, 8, 500_000, 250, 242, 222),
    13: _lora(13, 7, 500_000, 250, 242, 222),
}
_US915_UPLINK_GRID = tuple(902_300_000 + 200_000 * i for i in range(64)) + tuple(
    903_000_000 + 1_600_000 * i for i in range(8))
_US915_DOWNLINK = tuple(923_300_000 + 600_000 * i for i in range(8))

US915 = Region(
    name="US915",
    uplink_drs=_US915_UP,
    downlink_drs=_US915_DOWN,
    sub_bands=(SubBand("902-928", 902_000_000, 928_000_000, 1.0),),
    freq_range=(902_000_000, 928_000_000),
    downlink_freq_range=(923_300_000, 927_500_000),
    rx2=(923_300_000, 8),
    ping_slot=(923_300_000, 8),
    beacon=(923_300_000, 8),
    # sub-band 2 (channels 8-15 + 65), the one ChirpStack enables by default
    default_uplink_channels=tuple(902_300_000 + 200_000 * i for i in range(8, 16)),
    rx1_dr_table={0: 10, 1: 11, 2: 12, 3: 13, 4: 13, 5: 10, 6: 11},
    rx1_downlink_channels=_US915_DOWNLINK,
    uplink_channel_grid=_US915_UPLINK_GRID,
)

REGIONS: dict[str, Region] = {"EU868": EU868, "US915": US915}

# MHDR (1) + FHDR without FOpts (DevAddr 4, FCtrl 1, FCnt 2) + FPort (1) + MIC (4)
MAC_OVERHEAD = 13
DATA_FRAGMENT_HEADER = 3  # CID + IndexAndN


def phy_payload_len(frm_payload_len: int, fopts_len: int = 0) -> int:
    """PHYPayload length of a data frame carrying `frm_payload_len` bytes on an FPort."""
    if frm_payload_len < 0 or not 0 <= fopts_len <= 15:
        raise PhyError("negative payload length or FOpts longer than 15 bytes")
    return MAC_OVERHEAD + fopts_len + frm_payload_len


def lora_time_on_air(payload_len: int, sf: int, bw_hz: int, *, cr: int = 1, crc: bool = True,
                     explicit_header: bool = True, low_dr_optimize: bool | None = None,
                     preamble_symbols: int = 8) -> float:
    """Seconds on air of a LoRa frame of `payload_len` bytes (AN1200.13).

    cr is 1..4 for coding rates 4/5..4/8; low_dr_optimize defaults to on when a symbol
    lasts 16 ms or more (SF11/SF12 at 125 kHz), as LoRaWAN mandates."""
    if not 6 <= sf <= 12 or bw_hz <= 0 or not 1 <= cr <= 4 or payload_len < 0:
        raise PhyError(f"bad LoRa parameters SF{sf} BW{bw_hz} CR{cr} PL{payload_len}")
    t_sym = (1 << sf) / bw_hz
    if low_dr_optimize is None:
        low_dr_optimize = t_sym >= 0.016
    de = 1 if low_dr_optimize else 0
    ih = 0 if explicit_header else 1
    num = 8 * payload_len - 4 * sf + 28 + 16 * (1 if crc else 0) - 20 * ih
    den = 4 * (sf - 2 * de)
    n_payload = 8 + max(math.ceil(num / den) * (cr + 4), 0)
    return (preamble_symbols + 4.25 + n_payload) * t_sym


def fsk_time_on_air(payload_len: int, bitrate: int = 50_000) -> float:
    """Seconds on air of a LoRaWAN FSK frame: 5 B preamble, 3 B sync, 1 B length, payload,
    2 B CRC."""
    if payload_len < 0 or bitrate <= 0:
        raise PhyError("bad FSK parameters")
    return (5 + 3 + 1 + payload_len + 2) * 8 / bitrate


def time_on_air(dr: DataRate, phy_len: int, *, uplink: bool) -> float:
    """Time on air of a PHYPayload of `phy_len` bytes at `dr`; uplinks carry a payload CRC,
    downlinks do not (LoRaWAN L2)."""
    if dr.modulation is Modulation.LORA:
        return lora_time_on_air(phy_len, dr.sf, dr.bw_hz, crc=uplink)
    if dr.modulation is Modulation.FSK:
        return fsk_time_on_air(phy_len, dr.bitrate)
    raise PhyError(f"DR{dr.index}: no time-on-air model for {dr.modulation.value}")


class DutyCycle:
    """Per-sub-band duty-cycle accounting for one transmitter (a device or a gateway).

    A transmission of airtime a starting at s on a band with duty d occupies the band for
    [s, s + a/d). Bookings may lie in the future (a scheduled multicast); a new frame fits
    at t if [t, t + a/d) overlaps no booking on its band."""

    def __init__(self, region: Region, *, enforce: bool = True) -> None:
        self.region = region
        self.enforce = enforce
        self._spans: dict[str, list[tuple[float, float]]] = {b.name: [] for b in region.sub_bands}
        self.airtime: dict[str, float] = {b.name: 0.0 for b in region.sub_bands}
        self.frames: dict[str, int] = {b.name: 0 for b in region.sub_bands}
        self.delay_total = 0.0  # seconds frames were pushed back by earliest_tx

    def _span(self, band: SubBand, t: float, airtime: float) -> tuple[float, float]:
        return t, t + (airtime / band.duty if self.enforce else airtime)

    def earliest_tx(self, now: float, freq_hz: int, airtime: float) -> float:
        """The earliest t >= now at which a frame of `airtime` s on `freq_hz` keeps the
        sub-band within its duty cycle."""
        band = self.region.sub_band(freq_hz)
        spans = self._spans[band.name]
        length = (airtime / band.duty) if self.enforce else airtime
        t = now
        # spans are kept sorted by start and pairwise disjoint
        i = bisect.bisect_left(spans, (t, -math.inf))
        if i > 0 and spans[i - 1][1] > t:
            t = spans[i - 1][1]
        while i < len(spans):
            s, e = spans[i]
            if e <= t:
                i += 1
                continue
            if s >= t + length:
                break
            t = max(t, e)
            i += 1
        return t

    def allowed(self, t: float, freq_hz: int, airtime: float) -> bool:
        return self.earliest_tx(t, freq_hz, airtime) == t

    def book(self, t: float, freq_hz: int, airtime: float) -> None:
        """Account a transmission; raises PhyError if it would break the limit."""
        if not self.allowed(t, freq_hz, airtime):
            raise PhyError(f"TX at {t:.3f} on {freq_hz} Hz breaks the duty cycle")
        band = self.region.sub_band(freq_hz)
        bisect.insort(self._spans[band.name], self._span(band, t, airtime))
        self.airtime[band.name] += airtime
        self.frames[band.name] += 1

    def forget_before(self, t: float) -> None:
        """Drop bookings that ended before t (keeps the lists short in long runs)."""
        for name, spans in self._spans.items():
            k = 0
            while k < len(spans) and spans[k][1] <= t:
                k += 1
            if k:
                del spans[:k]


# Class A receive windows (LoRaWAN L2: RECEIVE_DELAY1 = 1 s, RECEIVE_DELAY2 = 2 s).
RECEIVE_DELAY1 = 1.0
RECEIVE_DELAY2 = 2.0


def rx_window_starts(uplink_end: float) -> tuple[float, float]:
    """(RX1, RX2) opening times after an uplink that ended at `uplink_end`."""
    return uplink_end + RECEIVE_DELAY1, uplink_end + RECEIVE_DELAY2


# Class B (LoRaWAN L2 1.0.4, section 14)
BEACON_PERIOD = 128.0
BEACON_RESERVED = 2.120
PING_SLOT_LEN = 0.030


def gps_beacon_time(t: float) -> int:
    """GPS time of the beacon period containing t."""
    return int(t // BEACON_PERIOD) * int(BEACON_PERIOD)


def ping_offset(beacon_time: int, dev_addr: int, ping_period: int) -> int:
    """pingOffset = (Rand[0] + Rand[1] x 256) mod pingPeriod, Rand = aes128_encrypt(16 x 0x00,
    beaconTime | DevAddr | pad16), both 4 bytes little-endian."""
    block = (beacon_time & 0xFFFFFFFF).to_bytes(4, "little") + (dev_addr & 0xFFFFFFFF).to_bytes(
        4, "little") + bytes(8)
    rand = aes128_encrypt(bytes(16), block)
    return (rand[0] + rand[1] * 256) % ping_period


def ping_slot_times(beacon_time: int, dev_addr: int, periodicity: int) -> list[float]:
    """Opening times of the ping slots of `dev_addr` (a DevAddr or McAddr) in the beacon
    period starting at `beacon_time`; periodicity 0..7 gives 2^(7-p) slots per period."""
    if not 0 <= periodicity <= 7:
        raise PhyError(f"ping-slot periodicity {periodicity} out of 0..7")
    ping_nb = 1 << (7 - periodicity)
    ping_period = 4096 // ping_nb
    off = ping_offset(beacon_time, dev_addr, ping_period)
    return [beacon_time + BEACON_RESERVED + (off + n * ping_period) * PING_SLOT_LEN
            for n in range(ping_nb)]


def next_ping_slot(t: float, dev_addr: int, periodicity: int) -> float:
    """The first ping slot of `dev_addr` opening at or after t."""
    bt = gps_beacon_time(t)
    while True:
        for s in ping_slot_times(bt, dev_addr, periodicity):
            if s >= t:
                return s
        bt += int(BEACON_PERIOD)


def class_c_window(session_time: int, timeout_exp: int) -> tuple[float, float]:
    """A TS005 class C session [start, end): TimeOut is the exponent, 2^TimeOut seconds."""
    return float(session_time), float(session_time) + float(1 << timeout_exp)


def class_b_window(session_time: int, timeout_exp: int) -> tuple[float, float]:
    """A TS005 class B session [start, end): 128 x 2^TimeOut seconds."""
    return float(session_time), float(session_time) + BEACON_PERIOD * (1 << timeout_exp)
