"""The event-driven emulated network: class A delivery, multicast scheduling under the duty
cycle, class B ping slots, and a whole FUOTA campaign over lossy devices of every profile."""

from __future__ import annotations

import random
import struct

import pytest

from radio_emulators.lorawan import crypto, phy
from radio_emulators.lorawan.channel import (Dead, GilbertElliott, IndependentLoss, JoinLate,
                                             Offline, Perfect)
from radio_emulators.lorawan.device import IDEAL, LBM, LORAMAC_NODE, EndDevice
from radio_emulators.lorawan.fragdecoder import encode_fragments
from radio_emulators.lorawan.network import Network
from radio_emulators.lorawan.phy import EU868

from . import frames as F
from .bench import T0, image_block

H = bytes.fromhex
KEYS = (crypto.mc_nwk_s_key(F.MC_KEY, F.MC_ADDR), crypto.mc_app_s_key(F.MC_KEY, F.MC_ADDR))


def eui(i: int) -> bytes:
    return struct.pack(">Q", 0x70B3D57ED0000000 + i)


def device(i: int, profile=IDEAL, **kw) -> EndDevice:
    kw.setdefault("uplink_period", 300.0)
    return EndDevice(profile, eui(i), gen_app_key=F.GEN_APP_KEY, now=T0, **kw)


class Server:
    """A minimal application server on the uplink handlers: answers clock sync, records
    every uplink by port."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.by_port: dict[tuple[bytes, int], list[bytes]] = {}
        net.uplink_handlers.append(self.on_uplink)

    def on_uplink(self, ev) -> None:
        self.by_port.setdefault((ev.dev_eui, ev.fport), []).append(ev.payload)
        if ev.fport == 202 and ev.payload[0] == 0x01:
            device_time, param = struct.unpack_from("<IB", ev.payload, 1)
            corr = round(ev.rx_time) - device_time
            if corr or param & 0x10:
                self.net.enqueue_unicast(ev.dev_eui, 202, F.app_time_ans(corr, param & 0x0F))

    def got(self, dev_eui: bytes, port: int) -> list[bytes]:
        return self.by_port.get((dev_eui, port), [])


# ------------------------------------------------------------------ class A
def test_unicast_waits_for_an_uplink_and_uses_rx1():
    net = Network(EU868, start=T0)
    d = device(1, uplink_period=600.0, time_sync_at_boot=False)
    net.add_device(d)
    srv = Server(net)
    net.enqueue_unicast(d.dev_eui, 203, F.dev_version_req())
    first_up = None
    while first_up is None:
        net.run_for(10)
        first_up = net.uplink_log[0].uplink if net.uplink_log else None
    net.run_for(30)
    tx = [x for x in net.downlink_log if x.kind == "unicast"][0]
    assert tx.t_start == pytest.approx(first_up.t_end + 1.0)     # RX1 on the uplink channel
    assert (tx.freq, tx.dr) == (first_up.freq, first_up.dr)
    assert tx.accepted == 1
    assert srv.got(d.dev_eui, 203) == [H("01" "01000000" "01000000")]
    assert net.unicast_queue(d.dev_eui) == []


@pytest.mark.parametrize("fetch", [True, False])
def test_fpending_makes_the_device_fetch_the_rest_at_once(fetch):
    """Two downlinks queued: the first goes out with FPending and the device (LoRaMac-node's
    class A behaviour) uplinks again as soon as it may, instead of a whole period later."""
    import dataclasses

    profile = dataclasses.replace(IDEAL, fetch_on_fpending=fetch)
    net = Network(EU868, start=T0)
    d = device(3, profile, uplink_period=3600.0, time_sync_at_boot=False)
    net.add_device(d)
    Server(net)
    net.enqueue_unicast(d.dev_eui, 6, b"\x01")
    net.enqueue_unicast(d.dev_eui, 6, b"\x02")
    net.run_for(3600.0 * 1.5)
    tx = [x for x in net.downlink_log if x.kind == "unicast"]
    assert [x.f_pending for x in tx][:2] == [True, False]
    gap = tx[1].t_start - tx[0].t_start
    if fetch:
        assert gap < 60.0  # the duty cycle's off-time, not the uplink period
    else:
        assert gap > 1000.0


def test_rx2_when_rx1_would_break_the_duty_cycle():
    net = Network(EU868, start=T0)
    d = device(2, uplink_period=600.0, time_sync_at_boot=False)
    net.add_device(d)
    # occupy the gateway's 868.0-868.6 sub-band for a long time
    big = phy.time_on_air(EU868.downlink_dr(0), 64, uplink=False)
    net.gw_duty.book(T0, 868_100_000, big * 1000 / 100)           # ~ occupied for 1000 s
    net.enqueue_unicast(d.dev_eui, 203, F.dev_version_req())
    net.run_for(700)
    tx = [x for x in net.downlink_log if x.kind == "unicast"][0]
    up = net.uplink_log[0].uplink
    assert tx.t_start == pytest.approx(up.t_end + 2.0)
    assert (tx.freq, tx.dr) == EU868.rx2


def test_expired_unicast_is_dropped_and_lost_uplinks_get_nothing():
    net = Network(EU868, start=T0)
    d = device(3, uplink_period=100.0, time_sync_at_boot=False)
    net.add_device(d, uplink=IndependentLoss(1.0, random.Random(1)))
    net.enqueue_unicast(d.dev_eui, 203, F.dev_version_req(), expires_at=T0 + 50)
    net.run_for(500)
    assert net.stats().uplinks_lost == net.stats().uplinks >= 4
    assert [x for x in net.downlink_log if x.kind == "unicast"] == []
    assert len(net.unicast_queue(d.dev_eui)) == 1                   # still waiting
    net.uplink_models[d.dev_eui] = IndependentLoss(0.0, random.Random(1))
    net.run_for(500)
    assert net.unicast_queue(d.dev_eui) == []                       # expired, dropped
    assert [x for x in net.downlink_log if x.kind == "unicast"] == []


# ------------------------------------------------------------------ multicast
def add_group(net: Network, *, group_type="C", dr=3, periodicity=0):
    return net.add_group("g", F.MC_ADDR, *KEYS, group_type=group_type, dr=dr,
                         ping_slot_periodicity=periodicity)


def test_multicast_frames_respect_the_gateway_duty_cycle():
    net = Network(EU868, start=T0)
    add_group(net, dr=0)
    txs = [net.schedule_multicast("g", 201, F.data_fragment(0, n, bytes(48)))
           for n in range(1, 6)]
    toa = txs[0].airtime
    assert toa == pytest.approx(2.793472)
    for a, b in zip(txs, txs[1:]):
        assert b.t_start - a.t_start == pytest.approx(toa / 0.10)
    assert [t.f_cnt for t in txs] == [0, 1, 2, 3, 4]
    net.run_for(200)
    st = net.stats()
    assert st.multicast_frames == 5
    assert st.gateway_airtime["869.4-869.65"] == pytest.approx(5 * toa)
    assert st.multicast_delay == pytest.approx(sum(4 * i * 27.93472 / 4 for i in range(5)))
    with pytest.raises(phy.PhyError):
        net.schedule_multicast("g", 201, bytes(52))                 # > 51 at DR0


def test_multicast_delivers_only_inside_the_class_c_window():
    net = Network(EU868, start=T0)
    add_group(net)
    d = device(4, time_sync_at_boot=False, uplink_period=None, strict_rx_windows=False)
    net.add_device(d)
    net.add_to_group("g", d.dev_eui)
    d.on_downlink(200, F.mc_group_setup_req(0), T0 + 1)
    d.on_downlink(201, F.frag_setup_req(0, 10, 10), T0 + 2)
    d.on_downlink(200, F.mc_class_c_req(0, int(T0) + 100, 6, 869_525_000, 3), T0 + 3)
    early = net.schedule_multicast("g", 201, F.data_fragment(0, 1, bytes(10)),
                                   not_before=T0 + 50)
    ok = net.schedule_multicast("g", 201, F.data_fragment(0, 2, bytes(10)),
                                not_before=T0 + 120)
    late = net.schedule_multicast("g", 201, F.data_fragment(0, 3, bytes(10)),
                                  not_before=T0 + 200)
    net.run_for(300)
    assert (early.accepted, ok.accepted, late.accepted) == (0, 1, 0)
    assert net.stats().rejected == 2


def test_class_b_ping_slots():
    net = Network(EU868, start=T0)
    add_group(net, group_type="B", periodicity=7)
    d = device(5, profile=LBM, time_sync_at_boot=False, uplink_period=None,
               strict_rx_windows=False)
    net.add_device(d)
    net.add_to_group("g", d.dev_eui)
    st = (int(T0) // 128 + 2) * 128
    d.on_downlink(200, F.mc_group_setup_req(0), T0 + 1)
    d.on_downlink(201, F.frag_setup_req(0, 10, 10, version=2), T0 + 2)
    d.on_downlink(200, F.mc_class_b_req(0, st, 2, 7, 869_525_000, 3), T0 + 3)
    txs = [net.schedule_multicast("g", 201, F.data_fragment(0, n, bytes(10)), not_before=st)
           for n in (1, 2, 3)]
    for tx in txs:       # one ping slot per beacon period at periodicity 7
        bt = phy.gps_beacon_time(tx.t_start)
        assert tx.t_start == pytest.approx(phy.ping_slot_times(bt, F.MC_ADDR, 7)[0])
    beacons = [phy.gps_beacon_time(tx.t_start) for tx in txs]
    assert beacons[1] == beacons[0] + 128 and beacons[2] == beacons[1] + 128
    net.run_for(st + 600 - T0)
    assert [tx.accepted for tx in txs] == [1, 1, 1]
    assert d.frag_sessions[0].decoder.received == 3


# ------------------------------------------------------------------ a campaign
def test_fuota_campaign_over_lossy_devices():
    rng = random.Random(2024)
    net = Network(EU868, start=T0)
    srv = Server(net)
    add_group(net, dr=3)
    profiles = [IDEAL, LORAMAC_NODE, LBM]
    devs, lossy = {}, {}
    for i in range(24):
        prof = profiles[i % 3]
        kw = dict(clock_offset=rng.uniform(-30, 30), clock_drift_ppm=rng.uniform(-40, 40),
                  fw_version=1)
        if i == 5:
            kw["self_test"] = False
        d = device(i, prof, **kw)
        if i == 7:
            model = Dead()
        elif i == 8:
            model = JoinLate(T0 + 100_000)
        elif i == 9:
            model = Offline([(T0 + 3000, T0 + 3300)])
        elif i % 2:
            model = GilbertElliott.from_mean(0.15, 3.0, random.Random(i))
        else:
            model = IndependentLoss(0.1, random.Random(i))
        if isinstance(model, (GilbertElliott, IndependentLoss)):
            lossy[d.dev_eui] = model       # the set-up phase goes through (no retries here)
            model = None
        net.add_device(d, downlink=model)
        net.add_to_group("g", d.dev_eui)
        devs[i] = d

    blk, m, pad = image_block(2, size=4000, frag_size=112)
    data = blk[:len(blk) - pad]
    session_time = int(T0) + 3000
    for i, d in devs.items():
        v = d.profile.packages[3]
        mic = crypto.data_block_mic(crypto.data_block_int_key(F.GEN_APP_KEY), 1, 0, bytes(4),
                                    data)
        net.enqueue_unicast(d.dev_eui, 200, F.mc_group_setup_req(0))
        net.enqueue_unicast(d.dev_eui, 201, F.frag_setup_req(0, m, 112, padding=pad, version=v,
                                                              session_cnt=1, mic=mic))
        net.enqueue_unicast(d.dev_eui, 200, F.mc_class_c_req(0, session_time, 12, 869_525_000,
                                                              3))
    net.run_until(session_time + 10)
    # everyone present answered the three setup requests (clock already synced at boot)
    for i, d in devs.items():
        if i in (7, 8):
            assert srv.got(d.dev_eui, 200) == []
            continue
        assert len(srv.got(d.dev_eui, 200)) == 2 and srv.got(d.dev_eui, 200)[1][:2] == H(
            "0400"), i
    net.downlink_models.update(lossy)
    frags = {v: encode_fragments(blk, 112, m, v) for v in (1, 2)}
    # one frame per fragment for both matrix versions would not be a real campaign: send the
    # v1 stream on group "g" (IDEAL and LoRaMac-node) and a v2 stream on group "g2" (LBM)
    net.add_group("g2", F.MC_ADDR, *KEYS, dr=3)
    for i, d in devs.items():
        if d.profile is LBM:
            net.groups["g"].members.discard(d.dev_eui)
            net.add_to_group("g2", d.dev_eui)
    t = session_time + 5
    for n in range(1, 2 * m + 1):
        net.schedule_multicast("g", 201, F.data_fragment(0, n, frags[1][n - 1]), not_before=t)
        net.schedule_multicast("g2", 201, F.data_fragment(0, n, frags[2][n - 1]), not_before=t)
    net.run_until(session_time + 4000)
    done = {i for i, d in devs.items() if d.image_status == 3}
    assert done >= set(devs) - {7, 8}
    assert 7 not in done and 8 not in done
    # the gateway kept its 10 % sub-band: frame spans never overlap, airtime accounted
    mc = sorted((x for x in net.downlink_log if x.kind == "multicast"),
                key=lambda x: x.t_start)
    assert len(mc) == 4 * m
    for a, b in zip(mc, mc[1:]):
        assert b.t_start >= a.t_start + a.airtime / 0.10 - 1e-6
    st = net.stats()
    band = [x for x in net.downlink_log if 869_400_000 <= x.freq <= 869_650_000]
    assert st.gateway_airtime["869.4-869.65"] == pytest.approx(sum(x.airtime for x in band))
    full = phy.time_on_air(EU868.downlink_dr(3), phy.phy_payload_len(3 + 112), uplink=False)
    assert sum(x.airtime for x in mc) == pytest.approx(4 * m * full)
    assert st.delivery_losses > 0 and st.deliveries > 0
    # reboot everyone that has the image; new versions are announced (one rolls back)
    for e in lossy:                         # no retries in this small server: unicast is clean
        net.downlink_models[e] = Perfect()
    for i in done:
        net.enqueue_unicast(devs[i].dev_eui, 203, F.reboot_countdown_req(60))
    net.run_until(session_time + 6000)
    for i in done:
        ver = srv.got(devs[i].dev_eui, 203)[-1]
        assert ver[0] == 0x01
        assert struct.unpack_from("<I", ver, 1)[0] == (1 if i == 5 else 2), i
    assert devs[5].rollbacks == 1
