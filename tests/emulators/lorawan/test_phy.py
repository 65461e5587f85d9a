"""The emulator's PHY: time on air (against the figures of shared/notes/lorawan-fuota.md and
Semtech's AN1200.13 / LoRa calculator values), DR tables, duty cycle, class B ping slots."""

from __future__ import annotations

import pytest

from radio_emulators.lorawan import phy
from radio_emulators.lorawan.phy import EU868, US915, DutyCycle, PhyError

# (region, DR, FragSize, ToA ms of a full DataFragment downlink) from the note's table
# ("Airtime and regulation"): PHYPayload = 13 B MAC + 3 B DataFragment header + FragSize.
NOTE_TOA = [
    (EU868, 0, 48, 2794), (EU868, 2, 48, 698), (EU868, 3, 112, 677), (EU868, 4, 239, 697),
    (EU868, 5, 239, 394), (US915, 8, 50, 616), (US915, 10, 239, 564), (US915, 11, 239, 313),
    (US915, 12, 239, 174), (US915, 13, 239, 99),
]


@pytest.mark.parametrize("region,dr,frag,ms", NOTE_TOA)
def test_fragment_time_on_air_matches_note(region, dr, frag, ms):
    d = region.downlink_dr(dr)
    toa = phy.time_on_air(d, phy.phy_payload_len(phy.DATA_FRAGMENT_HEADER + frag), uplink=False)
    assert abs(toa * 1000 - ms) < 1.0   # the note rounds to whole ms


@pytest.mark.parametrize("region,dr,n,frag", [(EU868, 0, 51, 48), (EU868, 3, 115, 112),
                                              (EU868, 5, 242, 239), (US915, 8, 53, 50),
                                              (US915, 13, 242, 239)])
def test_max_payload_and_fragment(region, dr, n, frag):
    assert region.downlink_dr(dr).max_frm_payload() == n
    assert n - phy.DATA_FRAGMENT_HEADER == frag


def test_repeater_payloads():
    assert EU868.downlink_dr(4).max_frm_payload(repeater=True) == 222
    assert EU868.downlink_dr(0).max_frm_payload(repeater=True) == 51


def test_lora_toa_known_values():
    # Semtech LoRa calculator: SF7/125 kHz, 10 B, CR4/5, CRC on, explicit header: 41.216 ms
    assert phy.lora_time_on_air(10, 7, 125_000) == pytest.approx(0.041216)
    # SF12/125, 51 B uplink (low data rate optimisation automatic): 2465.792 ms
    assert phy.lora_time_on_air(51, 12, 125_000) == pytest.approx(2.465792)
    # the optimisation changes the result at SF12
    assert phy.lora_time_on_air(51, 12, 125_000, low_dr_optimize=False) != pytest.approx(2.465792)
    # CRC adds 16 bits: an uplink is never shorter than the same downlink
    assert phy.lora_time_on_air(20, 9, 125_000, crc=True) >= phy.lora_time_on_air(
        20, 9, 125_000, crc=False)


def test_fsk_and_unsupported():
    assert phy.fsk_time_on_air(20) == pytest.approx((11 + 20) * 8 / 50_000)
    assert phy.time_on_air(EU868.downlink_dr(7), 20, uplink=False) == pytest.approx(
        phy.fsk_time_on_air(20))
    with pytest.raises(PhyError):
        phy.time_on_air(EU868.uplink_dr(8), 20, uplink=True)
    with pytest.raises(PhyError):
        EU868.downlink_dr(9)
    with pytest.raises(PhyError):
        phy.lora_time_on_air(10, 13, 125_000)


def test_sub_bands():
    assert EU868.sub_band(869_525_000).duty == 0.10
    assert EU868.sub_band(868_100_000).duty == 0.01
    assert EU868.sub_band(868_900_000).duty == 0.001
    with pytest.raises(PhyError):
        EU868.sub_band(869_300_000)  # between g2 and g3
    assert US915.sub_band(923_300_000).duty == 1.0


def test_rx1_mapping():
    assert EU868.rx1(868_300_000, 5) == (868_300_000, 5)
    assert US915.rx1(902_300_000 + 200_000 * 9, 2) == (923_300_000 + 600_000, 12)


def test_duty_cycle_delays_a_frame_that_would_break_the_limit():
    dc = DutyCycle(EU868)
    f = 869_525_000
    dc.book(0.0, f, 1.0)             # occupies [0, 10) at 10 %
    assert dc.earliest_tx(0.5, f, 1.0) == pytest.approx(10.0)
    assert not dc.allowed(5.0, f, 1.0)
    assert dc.allowed(10.0, f, 1.0)
    # another sub-band is independent
    assert dc.allowed(0.5, 868_100_000, 0.1)
    with pytest.raises(PhyError):
        dc.book(9.0, f, 1.0)
    # a future booking blocks the span before it too
    dc.book(20.0, f, 1.0)            # [20, 30)
    assert dc.earliest_tx(11.0, f, 1.0) == pytest.approx(30.0)   # [11, 21) would overlap
    assert dc.earliest_tx(10.0, f, 1.0) == pytest.approx(10.0)   # [10, 20) fits exactly
    assert dc.airtime["869.4-869.65"] == pytest.approx(2.0)
    dc.forget_before(31.0)
    assert dc.earliest_tx(11.0, f, 1.0) == pytest.approx(11.0)


def test_duty_cycle_minimum_period_of_full_fragments():
    # note: EU868 DR0, 48-byte fragments, 10 % sub-band -> one every 27.9 s
    dc = DutyCycle(EU868)
    toa = phy.time_on_air(EU868.downlink_dr(0), phy.phy_payload_len(51), uplink=False)
    t = 0.0
    starts = []
    for _ in range(5):
        t = dc.earliest_tx(t, 869_525_000, toa)
        dc.book(t, 869_525_000, toa)
        starts.append(t)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert all(g == pytest.approx(27.93472) for g in gaps)


def test_us915_has_no_duty_cycle():
    dc = DutyCycle(US915)
    dc.book(0.0, 923_300_000, 0.5)
    assert dc.earliest_tx(0.0, 923_300_000, 0.5) == pytest.approx(0.5)


def test_ping_slots():
    slots = phy.ping_slot_times(128 * 1000, 0x01AB23CD, 7)   # one slot per beacon period
    assert len(slots) == 1
    s = slots[0]
    assert 128_000 + phy.BEACON_RESERVED <= s < 128_000 + 128
    # the offset is a whole number of 30 ms slots after the beacon-reserved time
    k = (s - 128_000 - phy.BEACON_RESERVED) / phy.PING_SLOT_LEN
    assert abs(k - round(k)) < 1e-6 and 0 <= round(k) < 4096
    many = phy.ping_slot_times(128 * 1000, 0x01AB23CD, 0)    # 128 slots, 32 apart
    assert len(many) == 128
    assert many[1] - many[0] == pytest.approx(32 * phy.PING_SLOT_LEN)
    # the offset changes from beacon to beacon and between addresses
    offs = {phy.ping_offset(128 * b, 0x01AB23CD, 4096) for b in range(20)}
    assert len(offs) > 15
    assert phy.next_ping_slot(s, 0x01AB23CD, 7) == pytest.approx(s)
    assert phy.next_ping_slot(s + 0.001, 0x01AB23CD, 7) > 128_000 + 128
    with pytest.raises(PhyError):
        phy.ping_slot_times(0, 1, 8)


def test_session_windows():
    assert phy.class_c_window(1000, 4) == (1000.0, 1016.0)
    assert phy.class_b_window(1024, 2) == (1024.0, 1024.0 + 512.0)
    assert phy.rx_window_starts(10.0) == (11.0, 12.0)
