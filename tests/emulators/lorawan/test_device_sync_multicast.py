"""The emulated device: PackageVersion, TS003 clock sync (drifting clock), TS005 multicast
setup, class A windows, duty cycle, battery."""

from __future__ import annotations

import math
import struct
from dataclasses import replace

import pytest

from radio_emulators.lorawan import crypto
from radio_emulators.lorawan.device import IDEAL, LBM, LORAMAC_NODE, EndDevice
from radio_emulators.lorawan.phy import US915

from . import frames as F
from .bench import DEV_EUI, T0, Bench

H = bytes.fromhex


# ------------------------------------------------------------------ PackageVersion
@pytest.mark.parametrize("profile,versions", [
    (LORAMAC_NODE, {200: 1, 201: 1, 202: 1, 203: 1}),
    (LBM, {200: 2, 201: 2, 202: 2, 203: 1}),
])
def test_package_versions(profile, versions):
    b = Bench(profile)
    pkg = {202: 1, 200: 2, 201: 3, 203: 4}
    for port, v in versions.items():
        assert b.send(port, b"\x00") == [bytes((0, pkg[port], v))]


def test_profile_without_fragmentation_ignores_its_port():
    prof = replace(IDEAL, packages={1: 1, 2: 1, 4: 1})
    b = Bench(prof)
    assert b.send(201, b"\x00") == []
    assert b.dev.counters["drop.unsupported-package"] == 1
    assert b.send(200, b"\x00") == [H("000201")]


# ------------------------------------------------------------------ TS003
def server_correction(up) -> int:
    device_time, = struct.unpack_from("<I", up.payload, 1)
    return round(up.t_start) - device_time


def test_boot_sync_request_and_correction():
    b = Bench(LORAMAC_NODE, clock_offset=-100.3, time_sync_at_boot=True)
    ups = [u for u in b.advance(20) if u.fport == 202]
    assert len(ups) == 1
    up = ups[0]
    assert up.payload[0] == 0x01 and up.payload[5] == 0x10       # AnsRequired, token 0
    device_time, = struct.unpack_from("<I", up.payload, 1)
    assert device_time == math.floor(b.dev.local_time(up.t_start))
    assert b.dev.clock_error(b.t) == pytest.approx(-100.3)
    corr = server_correction(up)
    b.send(202, F.app_time_ans(corr, 0), window=1)
    assert abs(b.dev.clock_error(b.t)) < 1.0 and b.dev.time_synced
    before = b.dev.clock_error(b.t)
    b.send(202, F.app_time_ans(1000, 0), window=1)                # stale token: ignored
    assert b.dev.counters["time.stale-token"] == 1
    assert b.dev.clock_error(b.t) == pytest.approx(before)


def test_drifting_clock_is_kept_in_step_by_periodic_sync():
    b = Bench(LBM, clock_drift_ppm=200.0, time_sync_period=3600.0)
    worst_before, worst_after = 0.0, 0.0
    for _ in range(8 * 60):                      # 8 hours, a server answering within 60 s
        for up in [u for u in b.advance(60) if u.fport == 202]:
            worst_before = max(worst_before, abs(b.dev.clock_error(up.t_start)))
            token = up.payload[5] & 0x0F
            b.send(202, F.app_time_ans(server_correction(up), token), window=1)
            worst_after = max(worst_after, abs(b.dev.clock_error(b.t)))
    assert worst_before > 0.5            # 200 ppm drifts ~0.7 s an hour
    assert worst_after < 1.5             # whole-second DeviceTime and correction
    assert b.dev.counters["time.corrected"] >= 7
    assert abs(b.dev.clock_error(b.t)) < 2.3
    # without corrections the error would have grown to ~5.8 s
    assert abs(EndDevice(LBM, DEV_EUI, gen_app_key=F.GEN_APP_KEY, now=T0,
                         clock_drift_ppm=200.0).clock_error(b.t)) > 5.5


def test_force_resync_repeats_until_answered():
    b = Bench(LORAMAC_NODE, resync_spacing=20.0)
    ups = [u for u in (b.dev.on_downlink(202, F.force_resync(3), b.t) and b.advance(200))
           if u.fport == 202]
    assert len(ups) == 3
    assert all(u.payload[5] & 0x10 for u in ups)                  # AnsRequired
    gaps = [b2.t_start - a.t_start for a, b2 in zip(ups, ups[1:])]
    assert all(g >= 20.0 for g in gaps)
    # answered after the first: no more requests
    b.dev.on_downlink(202, F.force_resync(5), b.t)
    first = [u for u in b.advance(5) if u.fport == 202]
    assert len(first) == 1
    b.send(202, F.app_time_ans(0, first[0].payload[5] & 0x0F), window=200)
    assert [u for u in b.sent[-5:] if u.fport == 202 and u.t_start > first[0].t_start] == []


def test_periodicity_request_per_profile():
    lmn = Bench(LORAMAC_NODE)
    ans = lmn.send(202, F.periodicity_req(2))
    assert ans[0][:2] == H("0201")                                 # NotSupported
    lbm = Bench(LBM)
    ans = lbm.send(202, F.periodicity_req(0), window=1)
    assert ans[0][:2] == H("0200")
    assert struct.unpack_from("<I", ans[0], 2)[0] == math.floor(lbm.dev.local_time(lbm.t - 1))
    times = [u.t_start for u in lbm.advance(2000) if u.fport == 202]
    assert len(times) >= 10                                        # every 128 +- 30 s
    assert all(90 <= b - a <= 170 for a, b in zip(times, times[1:]))


def test_v2_saturated_correction_asks_again():
    b = Bench(LBM)
    b.dev.on_downlink(202, F.force_resync(1), b.t)
    up = [u for u in b.advance(10) if u.fport == 202][0]
    again = b.send(202, F.app_time_ans(0x7FFFFFFF, up.payload[5] & 0x0F), window=30)
    assert len(again) == 1 and again[0][0] == 0x01 and again[0][5] & 0x10
    assert not b.dev.time_synced


# ------------------------------------------------------------------ TS005
def test_group_setup_derives_the_session_keys():
    b = Bench(LORAMAC_NODE)
    assert b.setup_group(1) == [H("0201")]
    g = b.dev.mc_groups[1]
    assert g.mc_key == F.MC_KEY
    assert g.app_s_key == crypto.mc_app_s_key(F.MC_KEY, F.MC_ADDR)
    assert g.nwk_s_key == crypto.mc_nwk_s_key(F.MC_KEY, F.MC_ADDR)


def test_group_setup_lorawan_1_1_uses_app_key():
    b = Bench(LBM, gen_app_key=None, app_key=F.APP_KEY, mac_version="1.1.0")
    b.send(200, F.mc_group_setup_req(0, key_enc=F.encrypted_mc_key(app_key=F.APP_KEY)))
    assert b.dev.mc_groups[0].mc_key == F.MC_KEY


def test_group_setup_id_error_status_and_delete():
    b = Bench(LBM, max_mc_groups=2)
    assert b.setup_group(3) == [H("0207")]                         # IDError | id 3
    assert b.setup_group(0, 0x11111111) == [H("0200")]
    assert b.setup_group(1, 0x22222222) == [H("0201")]
    assert b.send(200, F.mc_group_status_req(0b0010)) == [H("0122" "0122222222")]
    assert b.send(200, F.mc_group_status_req(0b1111)) == [H("0123" "0011111111"
                                                             "0122222222")]
    assert b.send(200, F.mc_group_delete_req(1)) == [H("0301")]
    assert b.send(200, F.mc_group_delete_req(1)) == [H("0305")]   # McGroupUndefined


def test_class_c_time_to_start_uses_the_device_clock():
    b = Bench(LORAMAC_NODE, clock_offset=+50.0)
    b.setup_group(0)
    true_now = b.t + 1.0
    st = int(true_now) + 100                     # the server means 100 s from now
    ans = b.send(200, F.mc_class_c_req(0, st, 8), window=1)
    tts = ans[0][2] | ans[0][3] << 8 | ans[0][4] << 16
    assert ans[0][:2] == H("0400") and tts in (49, 50)   # the device thinks it is 50 s later
    # its window opens when its own clock says so: ~50 s early in true time
    b.advance(st - 50 + 1 - b.t)
    assert b.mc(201, F.data_fragment(0, 1, b"x"), dt=0) is True
    assert b.dev.counters["drop.fragment-no-session"] == 1        # reached the package


def test_class_c_window_closes_after_timeout():
    b = Bench(LORAMAC_NODE)
    b.setup_group(0)
    b.open_class_c(0, timeout=4)                 # 16 s
    assert b.mc(201, F.data_fragment(0, 1, b"x"), dt=1)
    assert not b.mc(201, F.data_fragment(0, 1, b"x"), dt=20)
    assert b.dev.counters["drop.no-open-session"] == 1


@pytest.mark.parametrize("profile,expected", [(LORAMAC_NODE, "041e"), (LBM, "0412")])
def test_class_c_undefined_group(profile, expected):
    b = Bench(profile)
    st = F.session_time_after(b.dev, b.t, 100)
    assert b.send(200, F.mc_class_c_req(2, st, 8)) == [H(expected)]


@pytest.mark.parametrize("profile,expected", [(LORAMAC_NODE, "0410"), (LBM, "0420")])
def test_class_c_start_in_the_past(profile, expected):
    b = Bench(profile)
    b.setup_group(0)
    st = F.session_time_after(b.dev, b.t + 1, -5)
    assert b.send(200, F.mc_class_c_req(0, st, 8)) == [H(expected)]
    assert b.dev.mc_groups[0].session is None


def test_class_c_frequency_and_dr_errors():
    b = Bench(LBM)
    b.setup_group(0)
    st = F.session_time_after(b.dev, b.t, 100)
    assert b.send(200, F.mc_class_c_req(0, st, 8, 800_000_000, 0)) == [H("0408")]
    st = F.session_time_after(b.dev, b.t, 100)
    assert b.send(200, F.mc_class_c_req(0, st, 8, 869_525_000, 8)) == [H("0404")]
    assert b.dev.mc_groups[0].session is None


def test_time_to_start_overflow_per_version():
    lbm, lmn = Bench(LBM), Bench(LORAMAC_NODE)
    for b in (lbm, lmn):
        b.setup_group(0)
    far = (1 << 24) + 5
    a2 = lbm.send(200, F.mc_class_c_req(0, F.session_time_after(lbm.dev, lbm.t + 1, far), 8))
    a1 = lmn.send(200, F.mc_class_c_req(0, F.session_time_after(lmn.dev, lmn.t + 1, far), 8))
    assert a2 == [H("0400ffffff")]
    assert a1 == [H("0400050000")]                 # LoRaMac-node keeps the low 24 bits


def test_class_b_session():
    b = Bench(LBM)
    b.setup_group(0)
    st = (int(b.dev.local_time(b.t)) // 128 + 3) * 128
    ans = b.send(200, F.mc_class_b_req(0, st, 1, 5, 869_525_000, 3))
    assert ans[0][:2] == H("0500")
    s = b.dev.mc_groups[0].session
    assert (s.kind, s.end - s.start, s.periodicity, s.dr) == ("B", 256.0, 5, 3)
    hop = b.send(200, F.mc_class_b_req(0, st, 1, 5, 0, 3))   # v2: 0 = hopping
    assert hop[0][:2] == H("0500")


def test_multicast_setup_commands_are_ignored_on_multicast():
    b = Bench(LBM)
    b.setup_group(0)
    b.open_class_c(0)
    assert b.mc(200, F.mc_group_delete_req(0))
    assert b.mc(201, F.frag_setup_req(0, 10, 10, version=2))
    assert 0 in b.dev.mc_groups and 0 not in b.dev.frag_sessions
    assert b.dev.counters["drop.multicast-command"] == 2
    assert [u for u in b.advance(60) if u.fport in (200, 201)] == []


# ------------------------------------------------------------------ radio behaviour
def test_class_a_windows_are_enforced():
    b = Bench(LORAMAC_NODE, strict_rx_windows=True, uplink_period=600.0)
    assert not b.dev.on_downlink(203, F.dev_version_req(), b.t)    # no uplink yet
    up = b.advance(700)[0]
    rx1, rx2 = up.t_end + 1.0, up.t_end + 2.0
    assert b.dev.rx_windows() == (rx1, rx2)
    assert not b.dev.on_downlink(203, F.dev_version_req(), rx1 + 0.5)
    assert b.dev.on_downlink(203, F.dev_version_req(), rx2)
    assert not b.dev.on_downlink(203, F.dev_version_req(), rx2)   # one downlink per uplink
    assert b.dev.counters["drop.outside-rx-window"] == 3


def test_uplinks_respect_the_device_duty_cycle():
    b = Bench(LORAMAC_NODE)
    b.dev.on_downlink(200, b"\x00", b.t)
    b.dev.on_downlink(201, b"\x00", b.t)
    b.dev.on_downlink(202, b"\x00", b.t)
    b.dev.on_downlink(203, b"\x00", b.t)
    ups = b.advance(60)
    assert len(ups) == 4
    for a, c in zip(ups, ups[1:]):
        assert c.t_start >= a.t_start + a.airtime / 0.01 - 1e-9   # one 1 % sub-band
        assert c.t_start >= a.t_end + 3.0 - 1e-9                  # after the RX windows
    assert b.dev.duty_cycle.frames["868.0-868.6"] == 4


def test_periodic_uplinks_battery_and_dead_battery():
    b = Bench(IDEAL, uplink_period=300.0)
    ups = [u for u in b.advance(3000) if u.fport == 2]
    assert 9 <= len(ups) <= 10
    status = ups[-1].payload
    assert struct.unpack("<IBH", status)[0] == 1
    full = b.dev.battery.level
    assert full < 1.0
    b.setup_group(0)
    b.open_class_c(0, timeout=12)
    lvl = b.dev.battery.level
    b.advance(3600)                               # an hour listening in class C
    assert lvl - b.dev.battery.level == pytest.approx(11.0 / 2400.0, rel=0.05)
    b.dev.battery.level = 0.0
    assert b.dev.poll(b.t + 1000) == [] and b.dev.next_deadline() is None
    assert not b.dev.on_downlink(203, b"\x01", b.t + 1001)


def test_us915_device():
    b = Bench(LBM, region=US915)
    assert b.dev.uplink_dr == 3
    ans = b.send(203, F.dev_version_req())
    assert ans == [H("01" "01000000" "01000000")]
    assert b.sent[-1].freq in US915.default_uplink_channels
