"""LoRaWAN regional parameters that FUOTA needs: data rates, payload sizes, defaults, duty cycle.

One :class:`Region` per RP002 region (EU868, US915, AS923-1..4, AU915, IN865, KR920), built
from the LoRa Alliance RP002-1.0.4 Regional Parameters tables as mirrored by ChirpStack
(``lrwn/src/region/*.rs``, revision RP002-1.0.4), brocaar/lorawan (``band/*.go``) and
LoRaMac-node (``src/mac/region/Region*.h``). The SF5/SF6 data rates added by RP002-1.0.5 are
not included.

Choices made here (all documented on the fields):

- **Maximum payload.** ``max_payload(dr)`` is N, the maximum MACPayload/FRMPayload size of
  the application (no FOpts). The default is the *not repeater-compatible* table (EU868
  DR4-DR7: N = 242), which LoRaMac-node and LoRa Basics Modem use; ``repeater_compatible=True``
  caps every N at 222 (RP002's repeater-compatible tables are exactly ``min(N, 222)``).
  ChirpStack's non-repeater EU868 table for RP002-1.0.2+ lists DR4 as M 250 / N 222, an
  inconsistency (M - N is 8 everywhere else); brocaar/lorawan and LoRaMac-node give 242.
- **Largest TS004 fragment** per DR is ``N - 3`` (the DataFragment command byte is the
  FPort-201 payload's first byte, then IndexAndN u16): :meth:`Region.max_frag_size`.
- **Class C / multicast default** is RX2 (frequency and DR); **class B** ping slots use the
  region's ping-slot frequency (``None`` where RP002 hops over the downlink channels, i.e.
  US915/AU915) and ping-slot DR.
- **Duty cycle.** EU868 has the ETSI EN 300 220 sub-bands that RP002 refers to and
  LoRaMac-node's ``RegionEU868.c`` (``VerifyRfFreq``) implements; every other region here
  has no LoRaWAN duty-cycle limit (one sub-band, limit 1.0 = unrestricted) but a *dwell
  time*: at most 400 ms per transmission on the US915/AU915 125 kHz uplink channels (FCC
  part 15 in the US), and on AS923 when the DwellTime setting is on (``dwell_time_400ms=True``,
  which also switches to RP002's dwell-limited payload table). Local rules the regional
  parameters do not model (listen-before-talk, national AS923 duty cycles) are out of scope.

Frequencies are integers in Hz; duty cycles are fractions (0.01 = 1 %).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType

from proxyota.errors import InvalidArgument

__all__ = [
    "DataRate",
    "Modulation",
    "Region",
    "SubBand",
    "REGION_NAMES",
    "REPEATER_MAX_PAYLOAD",
    "TS004_DATA_FRAGMENT_HEADER",
    "get_region",
]

TS004_DATA_FRAGMENT_HEADER = 3
"""CID (0x08) + IndexAndN (u16) in front of every fragment's FragSize bytes."""

REPEATER_MAX_PAYLOAD = 222
"""RP002 repeater-compatible cap on N (M = 230 minus the 8-byte FHDR/FPort overhead)."""


class Modulation:
    LORA = "LORA"
    FSK = "FSK"
    LR_FHSS = "LR-FHSS"


@dataclass(frozen=True)
class DataRate:
    """One row of a region's data-rate table.

    ``sf``/``bw_hz`` are set for LoRa, ``bitrate`` for FSK; LR-FHSS rows carry only their
    ``lr_fhss_cr`` and ``ocw_hz`` (occupied channel width) and are uplink-only.
    """

    dr: int
    modulation: str
    uplink: bool
    downlink: bool
    sf: int | None = None
    bw_hz: int | None = None
    bitrate: int | None = None
    lr_fhss_cr: str | None = None
    ocw_hz: int | None = None

    @property
    def is_lora(self) -> bool:
        return self.modulation == Modulation.LORA


def _lora(dr: int, sf: int, bw_khz: int, *, up: bool = True, down: bool = True) -> DataRate:
    return DataRate(dr, Modulation.LORA, up, down, sf=sf, bw_hz=bw_khz * 1000)


def _fsk(dr: int, bitrate: int) -> DataRate:
    return DataRate(dr, Modulation.FSK, True, True, bitrate=bitrate)


def _lr_fhss(dr: int, cr: str, ocw_hz: int) -> DataRate:
    return DataRate(dr, Modulation.LR_FHSS, True, False, lr_fhss_cr=cr, ocw_hz=ocw_hz)


@dataclass(frozen=True)
class SubBand:
    """A frequency range ``[lo_hz, hi_hz]`` (inclusive) sharing one duty-cycle limit."""

    name: str
    lo_hz: int
    hi_hz: int
    duty_cycle: float  # fraction of time on air; 1.0 = no limit

    def contains(self, frequency_hz: int) -> bool:
        return self.lo_hz <= frequency_hz <= self.hi_hz


@dataclass(frozen=True, eq=False)
class Region:
    """Regional parameters of one RP002 region, as far as FUOTA needs them.

    Instances are immutable; equality is identity (:func:`get_region` returns one shared
    instance per configuration).
    """

    name: str
    band_hz: tuple[int, int]
    data_rates: Mapping[int, DataRate]
    max_payloads: Mapping[int, int]
    """N per DR (0 where RP002 says "not defined" for this configuration)."""
    rx2_frequency_hz: int
    rx2_dr: int
    ping_slot_frequency_hz: int | None
    """``None``: ping slots hop over the downlink channels (US915, AU915)."""
    ping_slot_dr: int
    beacon_dr: int
    sub_bands: tuple[SubBand, ...]
    uplink_dwell_time_s: float | None = None
    downlink_dwell_time_s: float | None = None
    repeater_compatible: bool = False
    dwell_time_400ms: bool = False
    aliases: tuple[str, ...] = field(default=())

    # -- data rates and payloads -----------------------------------------------------------

    def data_rate(self, dr: int) -> DataRate:
        """The data-rate row ``dr``; InvalidArgument if the region does not define it."""
        if isinstance(dr, bool) or not isinstance(dr, int) or dr not in self.data_rates:
            raise InvalidArgument(
                f"{self.name}: data rate {dr!r} is not defined "
                f"(defined: {', '.join(f'DR{d}' for d in sorted(self.data_rates))})"
            )
        return self.data_rates[dr]

    def max_payload(self, dr: int) -> int:
        """N: the maximum application payload (FRMPayload, no FOpts) at ``dr``."""
        self.data_rate(dr)
        n = self.max_payloads.get(dr, 0)
        if n <= 0:
            raise InvalidArgument(f"{self.name}: no payload size defined at DR{dr} in this configuration")
        return n

    def max_frag_size(self, dr: int) -> int:
        """Largest TS004 FragSize that fits one multicast downlink at ``dr`` (N - 3)."""
        rate = self.data_rate(dr)
        if not rate.downlink:
            raise InvalidArgument(f"{self.name}: DR{dr} is not a downlink data rate")
        return self.max_payload(dr) - TS004_DATA_FRAGMENT_HEADER

    def downlink_data_rates(self) -> list[int]:
        """DRs usable for (multicast) downlinks in this configuration, ascending."""
        return sorted(
            d for d, r in self.data_rates.items() if r.downlink and self.max_payloads.get(d, 0) > 0
        )

    # -- defaults ---------------------------------------------------------------------------

    @property
    def class_c_default(self) -> tuple[int, int]:
        """(frequency Hz, DR) a class C / multicast session uses by default: RX2."""
        return self.rx2_frequency_hz, self.rx2_dr

    @property
    def class_b_default(self) -> tuple[int | None, int]:
        """(ping-slot frequency Hz or ``None`` for hopping, ping-slot DR)."""
        return self.ping_slot_frequency_hz, self.ping_slot_dr

    # -- frequencies and duty cycle ------------------------------------------------------------

    def check_frequency(self, frequency_hz: int) -> int:
        if isinstance(frequency_hz, bool) or not isinstance(frequency_hz, int):
            raise InvalidArgument(f"frequency must be an int in Hz, got {frequency_hz!r}")
        lo, hi = self.band_hz
        if not lo <= frequency_hz <= hi:
            raise InvalidArgument(
                f"{self.name}: {frequency_hz} Hz is outside the band {lo}-{hi} Hz"
            )
        return frequency_hz

    def sub_band_for(self, frequency_hz: int) -> SubBand:
        """The duty-cycle sub-band ``frequency_hz`` belongs to.

        On an exact shared edge (e.g. 865.0 MHz in EU868) the stricter limit applies.
        """
        self.check_frequency(frequency_hz)
        matches = [b for b in self.sub_bands if b.contains(frequency_hz)]
        if not matches:
            raise InvalidArgument(
                f"{self.name}: {frequency_hz} Hz is in no regulatory sub-band (gap between sub-bands)"
            )
        return min(matches, key=lambda b: b.duty_cycle)

    def duty_cycle_for(self, frequency_hz: int) -> float:
        """Duty-cycle limit at ``frequency_hz`` as a fraction; 1.0 means no limit."""
        return self.sub_band_for(frequency_hz).duty_cycle


# --- tables ---------------------------------------------------------------------------------

# EU868 (RP002-1.0.4). Data rates: ChirpStack lrwn/src/region/eu868.rs; N (not repeater
# compatible): LoRaMac-node RegionEU868.h MaxPayloadOfDatarateEU868 + brocaar/lorawan
# band_eu863_870.go (LR-FHSS DR8-11: 50/115/50/115).
_EU868_DRS = (
    _lora(0, 12, 125), _lora(1, 11, 125), _lora(2, 10, 125), _lora(3, 9, 125),
    _lora(4, 8, 125), _lora(5, 7, 125), _lora(6, 7, 250), _fsk(7, 50_000),
    _lr_fhss(8, "1/3", 137_000), _lr_fhss(9, "2/3", 137_000),
    _lr_fhss(10, "1/3", 336_000), _lr_fhss(11, "2/3", 336_000),
)  # fmt: skip
_EU868_N = {0: 51, 1: 51, 2: 51, 3: 115, 4: 242, 5: 242, 6: 242, 7: 242, 8: 50, 9: 115, 10: 50, 11: 115}

# ETSI EN 300 220 sub-bands as in RP002 / LoRaMac-node RegionEU868.c VerifyRfFreq (bands 0-5).
_EU868_SUB_BANDS = (
    SubBand("863.0-865.0 MHz", 863_000_000, 865_000_000, 0.001),
    SubBand("865.0-868.0 MHz", 865_000_000, 868_000_000, 0.01),
    SubBand("868.0-868.6 MHz", 868_000_000, 868_600_000, 0.01),
    SubBand("868.7-869.2 MHz", 868_700_000, 869_200_000, 0.001),
    SubBand("869.4-869.65 MHz", 869_400_000, 869_650_000, 0.10),
    SubBand("869.7-870.0 MHz", 869_700_000, 870_000_000, 0.01),
)

# US915 / AU915 (RP002-1.0.4). Uplink DRs from LoRaMac-node RegionUS915.h /
# RegionAU915.h and ChirpStack us915.rs/au915.rs; downlink N from ChirpStack (RP002-1.0.4).
_US915_DRS = (
    _lora(0, 10, 125, down=False), _lora(1, 9, 125, down=False), _lora(2, 8, 125, down=False),
    _lora(3, 7, 125, down=False), _lora(4, 8, 500, down=False),
    _lr_fhss(5, "1/3", 1_523_000), _lr_fhss(6, "2/3", 1_523_000),
    _lora(8, 12, 500, up=False), _lora(9, 11, 500, up=False), _lora(10, 10, 500, up=False),
    _lora(11, 9, 500, up=False), _lora(12, 8, 500, up=False), _lora(13, 7, 500, up=False),
)  # fmt: skip
_US915_N = {0: 11, 1: 53, 2: 125, 3: 242, 4: 242, 8: 53, 9: 129, 10: 242, 11: 242, 12: 242, 13: 242}

_AU915_DRS = (
    _lora(0, 12, 125, down=False), _lora(1, 11, 125, down=False), _lora(2, 10, 125, down=False),
    _lora(3, 9, 125, down=False), _lora(4, 8, 125, down=False), _lora(5, 7, 125, down=False),
    _lora(6, 8, 500, down=False), _lr_fhss(7, "1/3", 1_523_000),
    _lora(8, 12, 500, up=False), _lora(9, 11, 500, up=False), _lora(10, 10, 500, up=False),
    _lora(11, 9, 500, up=False), _lora(12, 8, 500, up=False), _lora(13, 7, 500, up=False),
)  # fmt: skip
# Uplink N for UplinkDwellTime = 1 (the AU915 default, LoRaMac-node MaxPayloadOfDatarateDwell1AU915).
_AU915_N = {0: 0, 1: 0, 2: 11, 3: 53, 4: 125, 5: 242, 6: 242,
            8: 53, 9: 129, 10: 242, 11: 242, 12: 242, 13: 242}  # fmt: skip

# AS923 (RP002-1.0.4); DwellTime 0 vs 1 tables: ChirpStack as923.rs, LoRaMac-node RegionAS923.h.
_AS923_DRS = (
    _lora(0, 12, 125), _lora(1, 11, 125), _lora(2, 10, 125), _lora(3, 9, 125),
    _lora(4, 8, 125), _lora(5, 7, 125), _lora(6, 7, 250), _fsk(7, 50_000),
)  # fmt: skip
_AS923_N = {0: 51, 1: 51, 2: 115, 3: 115, 4: 242, 5: 242, 6: 242, 7: 242}
_AS923_N_DWELL = {0: 0, 1: 0, 2: 11, 3: 53, 4: 125, 5: 242, 6: 242, 7: 242}
# name -> (frequency offset from AS923-1 in Hz, band)
_AS923_VARIANTS = {
    "AS923-1": (0, (915_000_000, 928_000_000)),
    "AS923-2": (-1_800_000, (920_000_000, 923_000_000)),
    "AS923-3": (-6_600_000, (915_000_000, 921_000_000)),
    "AS923-4": (-5_900_000, (917_000_000, 920_000_000)),
}

# IN865 (RP002-1.0.4): DR6 is RFU; KR920: DR0-5 only.
_IN865_DRS = (
    _lora(0, 12, 125), _lora(1, 11, 125), _lora(2, 10, 125), _lora(3, 9, 125),
    _lora(4, 8, 125), _lora(5, 7, 125), _fsk(7, 50_000),
)  # fmt: skip
_IN865_N = {0: 51, 1: 51, 2: 51, 3: 115, 4: 242, 5: 242, 7: 242}
_KR920_DRS = (
    _lora(0, 12, 125), _lora(1, 11, 125), _lora(2, 10, 125), _lora(3, 9, 125),
    _lora(4, 8, 125), _lora(5, 7, 125),
)  # fmt: skip
_KR920_N = {0: 51, 1: 51, 2: 51, 3: 115, 4: 242, 5: 242}

_DWELL_400MS = 0.4


def _cap(table: Mapping[int, int], repeater_compatible: bool) -> dict[int, int]:
    if not repeater_compatible:
        return dict(table)
    return {dr: min(n, REPEATER_MAX_PAYLOAD) for dr, n in table.items()}


def _whole_band(name: str, band: tuple[int, int]) -> tuple[SubBand, ...]:
    return (SubBand(f"{name} (no duty-cycle limit)", band[0], band[1], 1.0),)


def _build(
    name: str,
    *,
    aliases: tuple[str, ...],
    band: tuple[int, int],
    drs: tuple[DataRate, ...],
    n: Mapping[int, int],
    rx2: tuple[int, int],
    ping: tuple[int | None, int],
    beacon_dr: int,
    sub_bands: tuple[SubBand, ...] | None = None,
    uplink_dwell: float | None = None,
    downlink_dwell: float | None = None,
    repeater_compatible: bool,
    dwell_time_400ms: bool = False,
) -> Region:
    return Region(
        name=name,
        band_hz=band,
        data_rates=MappingProxyType({r.dr: r for r in drs}),
        max_payloads=MappingProxyType(_cap(n, repeater_compatible)),
        rx2_frequency_hz=rx2[0],
        rx2_dr=rx2[1],
        ping_slot_frequency_hz=ping[0],
        ping_slot_dr=ping[1],
        beacon_dr=beacon_dr,
        sub_bands=sub_bands if sub_bands is not None else _whole_band(name, band),
        uplink_dwell_time_s=uplink_dwell,
        downlink_dwell_time_s=downlink_dwell,
        repeater_compatible=repeater_compatible,
        dwell_time_400ms=dwell_time_400ms,
        aliases=aliases,
    )


def _eu868(repeater_compatible: bool, _dwell: bool) -> Region:
    return _build(
        "EU868", aliases=("EU863-870",), band=(863_000_000, 870_000_000),
        drs=_EU868_DRS, n=_EU868_N, rx2=(869_525_000, 0), ping=(869_525_000, 3), beacon_dr=3,
        sub_bands=_EU868_SUB_BANDS, repeater_compatible=repeater_compatible,
    )  # fmt: skip


def _us915(repeater_compatible: bool, _dwell: bool) -> Region:
    return _build(
        "US915", aliases=("US902-928",), band=(902_000_000, 928_000_000),
        drs=_US915_DRS, n=_US915_N, rx2=(923_300_000, 8), ping=(None, 8), beacon_dr=8,
        uplink_dwell=_DWELL_400MS, repeater_compatible=repeater_compatible,
    )  # fmt: skip


def _au915(repeater_compatible: bool, _dwell: bool) -> Region:
    return _build(
        "AU915", aliases=("AU915-928",), band=(915_000_000, 928_000_000),
        drs=_AU915_DRS, n=_AU915_N, rx2=(923_300_000, 8), ping=(None, 8), beacon_dr=8,
        uplink_dwell=_DWELL_400MS, repeater_compatible=repeater_compatible,
    )  # fmt: skip


def _as923(variant: str):
    offset, band = _AS923_VARIANTS[variant]

    def build(repeater_compatible: bool, dwell: bool) -> Region:
        return _build(
            variant, aliases=("AS923",) if variant == "AS923-1" else (), band=band,
            drs=_AS923_DRS, n=_AS923_N_DWELL if dwell else _AS923_N,
            rx2=(923_200_000 + offset, 2), ping=(923_400_000 + offset, 3), beacon_dr=3,
            uplink_dwell=_DWELL_400MS if dwell else None,
            downlink_dwell=_DWELL_400MS if dwell else None,
            repeater_compatible=repeater_compatible, dwell_time_400ms=dwell,
        )  # fmt: skip

    return build


def _in865(repeater_compatible: bool, _dwell: bool) -> Region:
    return _build(
        "IN865", aliases=("IN865-867",), band=(865_000_000, 867_000_000),
        drs=_IN865_DRS, n=_IN865_N, rx2=(866_550_000, 2), ping=(866_550_000, 4), beacon_dr=4,
        repeater_compatible=repeater_compatible,
    )  # fmt: skip


def _kr920(repeater_compatible: bool, _dwell: bool) -> Region:
    return _build(
        "KR920", aliases=("KR920-923",), band=(920_900_000, 923_300_000),
        drs=_KR920_DRS, n=_KR920_N, rx2=(921_900_000, 0), ping=(923_100_000, 3), beacon_dr=3,
        repeater_compatible=repeater_compatible,
    )  # fmt: skip


_FACTORIES = {
    "EU868": _eu868,
    "US915": _us915,
    "AU915": _au915,
    "AS923-1": _as923("AS923-1"),
    "AS923-2": _as923("AS923-2"),
    "AS923-3": _as923("AS923-3"),
    "AS923-4": _as923("AS923-4"),
    "IN865": _in865,
    "KR920": _kr920,
}
_ALIASES = {
    "EU863-870": "EU868",
    "US902-928": "US915",
    "AU915-928": "AU915",
    "AS923": "AS923-1",
    "IN865-867": "IN865",
    "KR920-923": "KR920",
}
REGION_NAMES: tuple[str, ...] = tuple(_FACTORIES)
"""Canonical names :func:`get_region` accepts (aliases: EU863-870, US902-928, AS923, ...)."""


def _normalise(name: str) -> str:
    key = name.strip().upper().replace("_", "-")
    if key in _FACTORIES:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    compact = key.replace("-", "")
    for canonical in (*_FACTORIES, *_ALIASES):
        if canonical.replace("-", "") == compact:
            return _ALIASES.get(canonical, canonical)
    raise InvalidArgument(
        f"unknown LoRaWAN region {name!r} (known: {', '.join(REGION_NAMES)})"
    )


def get_region(name: str, *, repeater_compatible: bool = False, dwell_time_400ms: bool = False) -> Region:
    """The :class:`Region` called ``name`` (case-insensitive; ``AS923`` means AS923-1).

    ``repeater_compatible`` selects RP002's repeater-compatible payload sizes (N <= 222).
    ``dwell_time_400ms`` (AS923 only) applies the 400 ms dwell time and its payload table.
    """
    if not isinstance(name, str):
        raise InvalidArgument(f"region name must be a str, got {type(name).__name__}")
    canonical = _normalise(name)
    if dwell_time_400ms and not canonical.startswith("AS923"):
        raise InvalidArgument(
            f"dwell_time_400ms is an AS923 setting; {canonical}'s dwell times are fixed"
        )
    return _cached(canonical, bool(repeater_compatible), bool(dwell_time_400ms))


@cache
def _cached(canonical: str, repeater_compatible: bool, dwell_time_400ms: bool) -> Region:
    return _FACTORIES[canonical](repeater_compatible, dwell_time_400ms)

