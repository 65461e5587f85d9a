"""Regional parameters: data-rate tables, payload sizes, defaults, duty-cycle sub-bands."""

from __future__ import annotations

import dataclasses

import pytest

from proxyota.errors import InvalidArgument
from proxyota.lorawan.airtime import fragment_phy_payload_size
from proxyota.lorawan.regions import REGION_NAMES, Modulation, get_region

# --- Reference data ----------------------------------------------------------------------
# Downlink N per DR, RP002-1.0.4, as in ChirpStack lrwn/src/region/{eu868,us915,au915,as923,
# in865,kr920}.rs (chirpstack/chirpstack @ d77207cd, max_dl_payload_size_per_dr, MacVersion
# Latest / Revision RP002_1_0_4), (repeater compatible, not repeater compatible). EU868 DR4 not
# repeater compatible is 242 as in brocaar/lorawan band_eu863_870.go and LoRaMac-node
# RegionEU868.h (ChirpStack's table has M 250 / N 222 there, an inconsistent entry).
DL_N = {
    "EU868": {0: (51, 51), 1: (51, 51), 2: (51, 51), 3: (115, 115), 4: (222, 242), 5: (222, 242),
              6: (222, 242), 7: (222, 242)},
    "US915": {8: (53, 53), 9: (129, 129), 10: (222, 242), 11: (222, 242), 12: (222, 242),
              13: (222, 242)},
    "AU915": {8: (53, 53), 9: (129, 129), 10: (222, 242), 11: (222, 242), 12: (222, 242),
              13: (222, 242)},
    "AS923-1": {0: (51, 51), 1: (51, 51), 2: (115, 115), 3: (115, 115), 4: (222, 242),
                5: (222, 242), 6: (222, 242), 7: (222, 242)},
    "IN865": {0: (51, 51), 1: (51, 51), 2: (51, 51), 3: (115, 115), 4: (222, 242), 5: (222, 242),
              7: (222, 242)},
    "KR920": {0: (51, 51), 1: (51, 51), 2: (51, 51), 3: (115, 115), 4: (222, 242), 5: (222, 242)},
}  # fmt: skip
# AS923 with the 400 ms dwell time (ChirpStack as923.rs dwell_time_400ms tables; LoRaMac-node
# RegionAS923.h MaxPayloadOfDatarateDwell1AS923).
AS923_DWELL_N = {2: (11, 11), 3: (53, 53), 4: (125, 125), 5: (222, 242), 6: (222, 242), 7: (222, 242)}

# (SF, BW kHz) of the LoRa DRs: ChirpStack lrwn region files / LoRaMac-node Datarates*/Bandwidths*.
LORA_DRS = {
    "EU868": {0: (12, 125), 1: (11, 125), 2: (10, 125), 3: (9, 125), 4: (8, 125), 5: (7, 125), 6: (7, 250)},
    "US915": {0: (10, 125), 1: (9, 125), 2: (8, 125), 3: (7, 125), 4: (8, 500), 8: (12, 500),
              9: (11, 500), 10: (10, 500), 11: (9, 500), 12: (8, 500), 13: (7, 500)},
    "AU915": {0: (12, 125), 1: (11, 125), 2: (10, 125), 3: (9, 125), 4: (8, 125), 5: (7, 125),
              6: (8, 500), 8: (12, 500), 9: (11, 500), 10: (10, 500), 11: (9, 500), 12: (8, 500),
              13: (7, 500)},
    "AS923-1": {0: (12, 125), 1: (11, 125), 2: (10, 125), 3: (9, 125), 4: (8, 125), 5: (7, 125), 6: (7, 250)},
    "IN865": {0: (12, 125), 1: (11, 125), 2: (10, 125), 3: (9, 125), 4: (8, 125), 5: (7, 125)},
    "KR920": {0: (12, 125), 1: (11, 125), 2: (10, 125), 3: (9, 125), 4: (8, 125), 5: (7, 125)},
}  # fmt: skip

# (RX2 frequency, RX2 DR, ping-slot frequency or None for hopping, ping-slot DR): LoRaMac-node
# Region*.h (*_RX_WND_2_FREQ/DR, *_PING_SLOT_CHANNEL_FREQ/DR) and ChirpStack get_defaults /
# get_ping_slot_frequency; AS923-2/3/4 apply the -1.8/-6.6/-5.9 MHz offsets of as923.rs.
DEFAULTS = {
    "EU868": (869_525_000, 0, 869_525_000, 3),
    "US915": (923_300_000, 8, None, 8),
    "AU915": (923_300_000, 8, None, 8),
    "AS923-1": (923_200_000, 2, 923_400_000, 3),
    "AS923-2": (921_400_000, 2, 921_600_000, 3),
    "AS923-3": (916_600_000, 2, 916_800_000, 3),
    "AS923-4": (917_300_000, 2, 917_500_000, 3),
    "IN865": (866_550_000, 2, 866_550_000, 4),
    "KR920": (921_900_000, 0, 923_100_000, 3),
}


def _configurations():
    for name in REGION_NAMES:
        for repeater in (False, True):
            yield get_region(name, repeater_compatible=repeater)
            if name.startswith("AS923"):
                yield get_region(name, repeater_compatible=repeater, dwell_time_400ms=True)


ALL_CONFIGURATIONS = list(_configurations())


# --- Lookup ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("EU868", "EU868"), ("eu868", "EU868"), ("EU863-870", "EU868"), ("eu_868", "EU868"),
        ("US915", "US915"), ("US902-928", "US915"), ("AS923", "AS923-1"), ("as923_2", "AS923-2"),
        ("AS9233", "AS923-3"), ("AU915", "AU915"), ("AU915-928", "AU915"), ("IN865", "IN865"),
        ("KR920", "KR920"), (" kr920 ", "KR920"),
    ],
)  # fmt: skip
def test_get_region_names(alias, canonical):
    assert get_region(alias).name == canonical


@pytest.mark.parametrize("bad", ["EU869", "", "CN470", "AS923-5", None, 868])
def test_get_region_unknown(bad):
    with pytest.raises(InvalidArgument):
        get_region(bad)


def test_dwell_time_flag_is_as923_only():
    with pytest.raises(InvalidArgument, match="AS923"):
        get_region("EU868", dwell_time_400ms=True)
    assert get_region("AS923-2", dwell_time_400ms=True).downlink_dwell_time_s == 0.4


def test_regions_are_immutable_and_cached():
    eu = get_region("EU868")
    assert eu is get_region("eu868")
    assert eu != get_region("EU868", repeater_compatible=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        eu.rx2_dr = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        eu.max_payloads[0] = 1  # type: ignore[index]
    assert len({eu, get_region("EU868"), get_region("US915")}) == 2


# --- Data rates and payloads -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LORA_DRS))
def test_lora_data_rate_tables(name):
    region = get_region(name)
    lora = {dr: (r.sf, r.bw_hz // 1000) for dr, r in region.data_rates.items() if r.is_lora}
    assert lora == LORA_DRS[name]


def test_non_lora_data_rates_are_marked():
    eu = get_region("EU868")
    assert eu.data_rate(7).modulation == Modulation.FSK and eu.data_rate(7).bitrate == 50_000
    assert not eu.data_rate(7).is_lora
    for dr in (8, 9, 10, 11):
        rate = eu.data_rate(dr)
        assert rate.modulation == Modulation.LR_FHSS and not rate.downlink and rate.sf is None
    us = get_region("US915")
    assert us.data_rate(5).modulation == Modulation.LR_FHSS
    assert [dr for dr, r in us.data_rates.items() if r.downlink] == [8, 9, 10, 11, 12, 13]
    with pytest.raises(InvalidArgument, match="data rate 7 is not defined"):
        us.data_rate(7)  # RFU


@pytest.mark.parametrize("name", sorted(DL_N))
@pytest.mark.parametrize("repeater", [True, False])
def test_downlink_max_payload_tables(name, repeater):
    region = get_region(name, repeater_compatible=repeater)
    for dr, (n_repeater, n_plain) in DL_N[name].items():
        assert region.max_payload(dr) == (n_repeater if repeater else n_plain), (name, dr)
    assert region.downlink_data_rates() == sorted(DL_N[name])


@pytest.mark.parametrize("repeater", [True, False])
def test_as923_dwell_time_payload_table(repeater):
    region = get_region("AS923", repeater_compatible=repeater, dwell_time_400ms=True)
    for dr, (n_repeater, n_plain) in AS923_DWELL_N.items():
        assert region.max_payload(dr) == (n_repeater if repeater else n_plain)
    assert region.downlink_data_rates() == sorted(AS923_DWELL_N)
    for dr in (0, 1):  # not defined under the dwell time
        with pytest.raises(InvalidArgument, match="no payload size"):
            region.max_payload(dr)
        with pytest.raises(InvalidArgument):
            region.max_frag_size(dr)


def test_us915_uplink_payloads_loramac_node():
    # LoRaMac-node RegionUS915.h MaxPayloadOfDatarateUS915 (uplink DRs, dwell-time limited).
    us = get_region("US915")
    assert [us.max_payload(dr) for dr in range(5)] == [11, 53, 125, 242, 242]


def test_max_frag_size_is_n_minus_3():
    eu = get_region("EU868")
    assert [eu.max_frag_size(dr) for dr in range(8)] == [48, 48, 48, 112, 239, 239, 239, 239]
    eu_rep = get_region("EU868", repeater_compatible=True)
    assert [eu_rep.max_frag_size(dr) for dr in (4, 5)] == [219, 219]
    us = get_region("US915")
    assert [us.max_frag_size(dr) for dr in range(8, 14)] == [50, 126, 239, 239, 239, 239]


def _config_id(region) -> str:
    return f"{region.name}-rep{int(region.repeater_compatible)}-dwell{int(region.dwell_time_400ms)}"


@pytest.mark.parametrize("region", ALL_CONFIGURATIONS, ids=_config_id)
def test_largest_fragment_fits_every_downlink_dr(region):
    assert region.downlink_data_rates(), region.name
    for dr in region.downlink_data_rates():
        frag = region.max_frag_size(dr)
        n = region.max_payload(dr)
        assert 1 <= frag and frag + 3 == n  # DataFragment CID + IndexAndN + FragSize bytes = N
        assert n <= (222 if region.repeater_compatible else 242)
        assert fragment_phy_payload_size(frag) == n + 13 <= 255


@pytest.mark.parametrize("dr", [0, 1, 2, 3, 4])
def test_uplink_only_dr_has_no_fragment_size(dr):
    with pytest.raises(InvalidArgument, match="not a downlink"):
        get_region("US915").max_frag_size(dr)


@pytest.mark.parametrize("dr", [-1, 14, 16, True, "5", 5.0])
def test_unknown_dr(dr):
    with pytest.raises(InvalidArgument):
        get_region("EU868").max_frag_size(dr)


# --- Defaults ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_class_b_and_c_defaults(name):
    region = get_region(name)
    rx2_f, rx2_dr, ping_f, ping_dr = DEFAULTS[name]
    assert region.class_c_default == (rx2_f, rx2_dr)
    assert region.class_b_default == (ping_f, ping_dr)
    region.check_frequency(rx2_f)  # inside the band
    assert rx2_dr in region.downlink_data_rates()


# --- Duty cycle and dwell time -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mhz", "dc"),
    [
        (863.1, 0.001), (864.9, 0.001), (865.0, 0.001),  # shared edge: the stricter limit
        (866.0, 0.01), (867.1, 0.01), (868.0, 0.01), (868.1, 0.01), (868.3, 0.01), (868.5, 0.01),
        (868.6, 0.01), (868.8, 0.001), (869.2, 0.001), (869.4, 0.10), (869.525, 0.10),
        (869.65, 0.10), (869.7, 0.01), (869.85, 0.01), (870.0, 0.01),
    ],
)  # fmt: skip
def test_eu868_duty_cycle_sub_bands(mhz, dc):
    assert get_region("EU868").duty_cycle_for(round(mhz * 1_000_000)) == dc


@pytest.mark.parametrize("mhz", [868.65, 869.3, 869.675])
def test_eu868_gaps_between_sub_bands(mhz):
    with pytest.raises(InvalidArgument, match="no regulatory sub-band"):
        get_region("EU868").duty_cycle_for(round(mhz * 1_000_000))


@pytest.mark.parametrize(("name", "hz"), [("EU868", 862_900_000), ("EU868", 870_100_000),
                                          ("US915", 868_100_000), ("AS923-2", 923_400_000)])
def test_frequency_outside_band(name, hz):
    with pytest.raises(InvalidArgument, match="outside the band"):
        get_region(name).duty_cycle_for(hz)


@pytest.mark.parametrize("bad", [868.1e6, "868100000", None, True])
def test_frequency_must_be_int_hz(bad):
    with pytest.raises(InvalidArgument):
        get_region("EU868").duty_cycle_for(bad)


@pytest.mark.parametrize("name", ["US915", "AU915", "AS923-1", "IN865", "KR920"])
def test_other_regions_have_no_duty_cycle_limit(name):
    region = get_region(name)
    assert region.duty_cycle_for(region.rx2_frequency_hz) == 1.0


def test_dwell_times():
    assert get_region("US915").uplink_dwell_time_s == 0.4
    assert get_region("US915").downlink_dwell_time_s is None
    assert get_region("AU915").uplink_dwell_time_s == 0.4
    assert get_region("AS923").downlink_dwell_time_s is None
    assert get_region("AS923", dwell_time_400ms=True).uplink_dwell_time_s == 0.4
    assert get_region("EU868").uplink_dwell_time_s is None
