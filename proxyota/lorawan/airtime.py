"""LoRa (and FSK) time on air, multicast fragment airtime and duty-cycle pacing.

Time on air follows Semtech AN1200.13 "LoRa Modem Designer's Guide" (and the SX127x
datasheet) exactly::

    Tsym      = 2^SF / BW
    Tpreamble = (n_preamble + 4.25) * Tsym
    n_payload = 8 + max(ceil((8*PL - 4*SF + 28 + 16*CRC - 20*IH) / (4*(SF - 2*DE))) * (CR + 4), 0)
    ToA       = Tpreamble + n_payload * Tsym

PL is the PHYPayload length in bytes. LoRaWAN frames use an explicit header (IH = 0),
coding rate 4/5 (CR = 1) and 8 preamble symbols; uplinks carry the PHY CRC, downlinks do
not (CRC = 0). Low-data-rate optimisation (DE) is on when the symbol lasts 16 ms or more,
as the SX127x datasheet requires and LoRaMac-node's SX1276 driver does: for every LoRaWAN
data rate that is exactly SF11 and SF12 at 125 kHz.

FSK (EU868/AS923/IN865 DR7, 50 kbit/s) uses the SX127x packet format of LoRaMac-node's
``SX1276GetGfskTimeOnAirNumerator``: 5 preamble bytes, 3 sync-word bytes, a length byte,
the payload and a 2-byte CRC (on for LoRaWAN FSK frames in both directions).

A multicast DataFragment downlink is ``13 + 3 + FragSize`` PHYPayload bytes: MHDR (1),
FHDR without FOpts (7), FPort (1), MIC (4), then the TS004 command byte and IndexAndN (3).

Duty cycle: :class:`DutyCycleAccount` applies the simple per-sub-band rule LoRaWAN stacks
have long used (LoRaMac-node up to v4.4: band ``TimeOff = ToA * DCycle - ToA`` with
``DCycle = 1/dc``): after a transmission of ``airtime`` the sub-band stays closed for
``airtime * (1/dc - 1)``, i.e. the next transmission may start ``airtime / dc`` after the
previous one started. This is stricter than ETSI's one-hour averaging, so a schedule it
accepts is always compliant. Everything here is sans-IO: times are plain seconds on any
clock the caller chooses.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

from proxyota.errors import InvalidArgument
from proxyota.lorawan.regions import TS004_DATA_FRAGMENT_HEADER, Modulation, Region

__all__ = [
    "LORAWAN_FRAME_OVERHEAD",
    "DutyCycleAccount",
    "fragment_phy_payload_size",
    "fsk_time_on_air",
    "low_data_rate_optimize",
    "min_fragment_period",
    "multicast_fragment_airtime",
    "payload_symbols",
    "time_on_air",
]

LORAWAN_FRAME_OVERHEAD = 13
"""MHDR (1) + FHDR without FOpts (DevAddr 4, FCtrl 1, FCnt 2) + FPort (1) + MIC (4)."""

MAX_PHY_PAYLOAD = 255
_LDRO_SYMBOL_TIME = Fraction(16, 1000)  # DE is mandatory from 16 ms symbols upwards


def _int(value: object, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name} must be an int, got {value!r}")
    if not lo <= value <= hi:
        raise InvalidArgument(f"{name} must be {lo}..{hi}, got {value}")
    return value


def _seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{name} must be a number of seconds, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidArgument(f"{name} must be finite, got {value!r}")
    return float(value)


def low_data_rate_optimize(sf: int, bw_hz: int) -> bool:
    """Whether DE is required: symbol time 2^SF/BW of 16 ms or more (SF11/SF12 at 125 kHz)."""
    return Fraction(2**sf, bw_hz) >= _LDRO_SYMBOL_TIME


def payload_symbols(
    payload_len: int,
    sf: int,
    *,
    cr: int = 1,
    crc: bool,
    implicit_header: bool = False,
    low_dr_optimize: bool,
) -> int:
    """Number of payload symbols (the AN1200.13 ``payloadSymbNb``, header included)."""
    de = 1 if low_dr_optimize else 0
    numerator = 8 * payload_len - 4 * sf + 28 + 16 * int(bool(crc)) - 20 * int(bool(implicit_header))
    denominator = 4 * (sf - 2 * de)
    blocks = -(-numerator // denominator)  # exact integer ceil
    return 8 + max(blocks * (cr + 4), 0)


def time_on_air(
    payload_len: int,
    sf: int,
    bw_hz: int,
    *,
    cr: int = 1,
    crc: bool,
    implicit_header: bool = False,
    preamble_symbols: int = 8,
    low_dr_optimize: bool | None = None,
) -> float:
    """LoRa time on air in seconds of a ``payload_len``-byte PHYPayload (AN1200.13).

    ``cr`` is 1..4 for 4/5..4/8. ``crc`` has no default on purpose: LoRaWAN uplinks carry
    the PHY CRC, downlinks do not. ``low_dr_optimize=None`` picks DE automatically
    (:func:`low_data_rate_optimize`).
    """
    _int(payload_len, "payload_len", 0, MAX_PHY_PAYLOAD)
    _int(sf, "sf", 6, 12)
    _int(bw_hz, "bw_hz", 1, 10_000_000)
    _int(cr, "cr", 1, 4)
    _int(preamble_symbols, "preamble_symbols", 0, 0xFFFF)
    if not isinstance(crc, bool):
        raise InvalidArgument(f"crc must be a bool, got {crc!r}")
    if low_dr_optimize is None:
        de = low_data_rate_optimize(sf, bw_hz)
    elif isinstance(low_dr_optimize, bool):
        de = low_dr_optimize
    else:
        raise InvalidArgument(f"low_dr_optimize must be None or a bool, got {low_dr_optimize!r}")
    n_payload = payload_symbols(
        payload_len, sf, cr=cr, crc=crc, implicit_header=implicit_header, low_dr_optimize=de
    )
    # (n_preamble + 4.25 + n_payload) * 2^SF / BW, exactly, then one rounding to float.
    quarter_symbols = 4 * preamble_symbols + 17 + 4 * n_payload
    return float(Fraction(quarter_symbols * 2**sf, 4 * bw_hz))


def fsk_time_on_air(
    payload_len: int,
    *,
    bitrate: int = 50_000,
    preamble_bytes: int = 5,
    sync_word_bytes: int = 3,
    crc: bool = True,
    variable_length: bool = True,
) -> float:
    """FSK time on air in seconds of a ``payload_len``-byte PHYPayload (LoRaWAN FSK framing)."""
    _int(payload_len, "payload_len", 0, MAX_PHY_PAYLOAD)
    _int(bitrate, "bitrate", 1, 10_000_000)
    _int(preamble_bytes, "preamble_bytes", 0, 0xFFFF)
    _int(sync_word_bytes, "sync_word_bytes", 0, 8)
    octets = preamble_bytes + sync_word_bytes + (1 if variable_length else 0) + payload_len
    octets += 2 if crc else 0
    return float(Fraction(8 * octets, bitrate))


def fragment_phy_payload_size(frag_size: int) -> int:
    """PHYPayload bytes of one multicast DataFragment frame carrying ``frag_size`` bytes."""
    _int(frag_size, "frag_size", 1, MAX_PHY_PAYLOAD)
    return LORAWAN_FRAME_OVERHEAD + TS004_DATA_FRAGMENT_HEADER + frag_size


def multicast_fragment_airtime(region: Region, dr: int, frag_size: int) -> float:
    """Time on air in seconds of one multicast DataFragment downlink at ``dr``.

    ``frag_size`` must fit the DR (1..``region.max_frag_size(dr)``); downlinks have no PHY
    CRC (LoRa). Raises InvalidArgument if the frame would break the region's downlink dwell
    time.
    """
    max_frag = region.max_frag_size(dr)
    _int(frag_size, "frag_size", 1, max_frag)
    rate = region.data_rate(dr)
    phy_len = fragment_phy_payload_size(frag_size)
    if rate.modulation == Modulation.LORA:
        assert rate.sf is not None and rate.bw_hz is not None
        airtime = time_on_air(phy_len, rate.sf, rate.bw_hz, crc=False)
    elif rate.modulation == Modulation.FSK:
        assert rate.bitrate is not None
        airtime = fsk_time_on_air(phy_len, bitrate=rate.bitrate)
    else:  # pragma: no cover - max_frag_size already rejects uplink-only (LR-FHSS) rates
        raise InvalidArgument(f"{region.name}: DR{dr} ({rate.modulation}) cannot carry downlinks")
    dwell = region.downlink_dwell_time_s
    if dwell is not None and airtime > dwell:
        raise InvalidArgument(
            f"{region.name}: a {frag_size}-byte fragment at DR{dr} lasts {airtime * 1000:.1f} ms, "
            f"over the {dwell * 1000:.0f} ms downlink dwell time"
        )
    return airtime


def min_fragment_period(
    region: Region, dr: int, frag_size: int, frequency_hz: int | None = None
) -> float:
    """Shortest start-to-start spacing in seconds of back-to-back fragments on one frequency.

    ``airtime / duty_cycle`` of the sub-band (the class C default, RX2, when
    ``frequency_hz`` is None); without a duty-cycle limit, just the airtime.
    """
    if frequency_hz is None:
        frequency_hz = region.rx2_frequency_hz
    dc = region.duty_cycle_for(frequency_hz)
    return multicast_fragment_airtime(region, dr, frag_size) / dc


class DutyCycleAccount:
    """Per-sub-band duty-cycle bookkeeping for one transmitter (sans-IO).

    After each recorded transmission its sub-band is closed until
    ``start + airtime / duty_cycle`` (off-time ``airtime * (1/dc - 1)`` after it ends).
    Sub-bands without a limit (dc = 1.0) only forbid overlapping transmissions.
    ``ready_at`` restores a saved :meth:`state`.
    """

    def __init__(self, region: Region, ready_at: Mapping[str, float] | None = None) -> None:
        self.region = region
        self._ready_at: dict[str, float] = {}
        names = {b.name for b in region.sub_bands}
        for name, when in (ready_at or {}).items():
            if name not in names:
                raise InvalidArgument(f"{region.name}: unknown sub-band {name!r} in saved state")
            self._ready_at[name] = _seconds(when, f"ready_at[{name!r}]")

    def state(self) -> dict[str, float]:
        """When each used sub-band opens again (sub-band name -> time), for persistence."""
        return dict(self._ready_at)

    def ready_at(self, frequency_hz: int) -> float | None:
        """When the sub-band of ``frequency_hz`` opens again, or None if never used."""
        return self._ready_at.get(self.region.sub_band_for(frequency_hz).name)

    def earliest(self, now: float, frequency_hz: int, airtime: float) -> float:
        """Earliest time >= ``now`` a transmission of ``airtime`` seconds may start."""
        now = _seconds(now, "now")
        self._airtime(airtime)
        band = self.region.sub_band_for(frequency_hz)
        ready = self._ready_at.get(band.name)
        return now if ready is None or ready <= now else ready

    def record(self, start: float, frequency_hz: int, airtime: float) -> float:
        """Account a transmission; returns when its sub-band opens again.

        Raises InvalidArgument (and records nothing) if ``start`` is before the sub-band is
        open again, i.e. the transmission would break the duty cycle.
        """
        start = _seconds(start, "start")
        airtime = self._airtime(airtime)
        band = self.region.sub_band_for(frequency_hz)
        ready = self._ready_at.get(band.name)
        if ready is not None and start < ready:
            raise InvalidArgument(
                f"{self.region.name}: transmission at {start} s in {band.name} breaks the "
                f"{band.duty_cycle:.1%} duty cycle (sub-band closed until {ready} s)"
            )
        reopen = start + airtime / band.duty_cycle
        self._ready_at[band.name] = reopen
        return reopen

    @staticmethod
    def _airtime(airtime: object) -> float:
        value = _seconds(airtime, "airtime")
        if value <= 0:
            raise InvalidArgument(f"airtime must be > 0 s, got {value}")
        return value
