"""Nodes download an image through the emulated mesh from a tiny in-test OTA responder
(raw ZCL frames): multi-hop, sleepy paging, every quirk profile, and the fault hooks
(reboot mid-download, corrupted block, gateway restart, dropped node)."""

from __future__ import annotations

import hashlib
import math

import pytest

from radio_emulators.zigbee import PROFILES, ROUTER, MeshConfig
from radio_emulators.zigbee.ota_client import OtaState
from radio_emulators.zigbee.otafile import raw_public_key

from .conftest import make_image
from .responder import TinyOtaResponder

IMAGE = make_image(1000)
SIZE = len(IMAGE)


async def run(net, responder, *, timeout_s=3000.0, nwks=None) -> bool:
    responder.attach()
    if net.started_at is None:
        net.start()
    try:
        return await net.wait_until(lambda: net.all_on_version(2, nwks), timeout_s=timeout_s)
    finally:
        await responder.close()


def only(net):
    [node] = net.nodes.values()
    return node


async def test_router_three_hops_deep_downloads(clock, networks):
    net = networks(clock, routers=3, max_hops=3, seed=1)
    resp = TinyOtaResponder(net, IMAGE)
    assert await run(net, resp)
    deep = max(net.nodes.values(), key=lambda n: n.mesh_node.depth)
    assert deep.mesh_node.depth == 3
    assert deep.stats.ota.blocks == math.ceil(SIZE / 64) and deep.stats.ota.bytes == SIZE
    offsets = [o for kind, o, _ in resp.requests[deep.nwk] if kind == "block"]
    assert offsets == list(range(0, SIZE, 64))
    assert resp.end_status[deep.nwk] == [0]
    assert deep.attributes(0x0019)[0x0002][1] == 2                          # current file version attr
    assert deep.attributes(0x0000)[0x4000][1] == "0x00000002"               # Basic sw build id
    assert resp.queries[deep.nwk][-1] == (2, 1)                             # re-queried with the new version
    report = net.report()
    assert report.makespan_s is not None and report.airtime_s > net.airtime_bound_s(SIZE)
    assert report.mesh.polls == 0 and report.host_frames_in > 0


async def test_sleepy_node_downloads_by_pages_through_its_parent(clock, networks):
    # the parent router runs another image type, so it stays up (a rebooting parent would
    # cut its sleepy child off for its boot time)
    net = networks(clock, routers=1, sleepy=1, max_hops=2, seed=2,
                   profiles=lambda mn: PROFILES["sleepy"] if mn.sleepy else ROUTER.with_(image_type=7))
    sed = next(n for n in net.nodes.values() if n.sleepy)
    resp = TinyOtaResponder(net, IMAGE)
    assert await run(net, resp, nwks=[sed.nwk])
    pages = [o for kind, o, _ in resp.requests[sed.nwk] if kind == "page"]
    assert pages == list(range(0, SIZE, 256)) and not any(k == "block" for k, _, _ in resp.requests[sed.nwk])
    per_page = [math.ceil(min(256, SIZE - p) / 48) for p in pages]       # 48-byte blocks within a page
    assert sed.stats.ota.bytes == SIZE and sed.stats.ota.blocks == sum(per_page)
    assert sed.stats.ota.timeouts == 0
    assert net.mesh.stats.polls >= sed.stats.ota.blocks                   # every frame waited for a poll


async def test_slow_crc_check_pauses_thirty_seconds(clock, networks):
    net = networks(clock, routers=1, seed=3, profiles=PROFILES["slow-crc"])
    resp = TinyOtaResponder(net, IMAGE)
    assert await run(net, resp)
    node = only(net)
    end_at = next(t for kind, _, t in resp.requests[node.nwk] if kind == "end")
    assert 30.0 <= end_at - node.stats.ota.download_done_at < 30.2


async def test_small_block_profile(clock, networks):
    net = networks(clock, routers=1, seed=3, profiles=PROFILES["small-blocks"])
    assert await run(net, TinyOtaResponder(net, IMAGE))
    assert only(net).stats.ota.blocks == math.ceil(SIZE / 32)


@pytest.mark.parametrize("profile,period,spaced", [
    ("router", 2, True), ("ignores-min-block-period", 2, False), ("legacy-ms-period", 2000, True)])
async def test_minimum_block_period(clock, networks, profile, period, spaced):
    net = networks(clock, routers=1, seed=4, profiles=PROFILES[profile])
    resp = TinyOtaResponder(net, IMAGE, wait_for_data=(1, 1), wait_block_period=period)
    assert await run(net, resp)
    node = only(net)
    times = [t for kind, _, t in resp.requests[node.nwk] if kind == "block"]
    gaps = [b - a for a, b in zip(times[1:], times[2:])]                  # after the WAIT_FOR_DATA
    assert node.stats.ota.wait_for_data == 1
    if spaced:
        assert min(gaps) >= 2.0 - 0.01                                     # arrival jitter (CSMA)
    else:
        assert max(gaps) < 0.5


async def test_quirk_reboot_mid_download_resumes(clock, networks):
    net = networks(clock, routers=1, seed=5, profiles=PROFILES["reboots-mid-download"])
    resp = TinyOtaResponder(net, IMAGE)
    assert await run(net, resp)
    node = only(net)
    s = node.stats.ota
    assert node.stats.reboots == 2                                         # the quirk + the activation
    assert s.resumes == 1 and s.restarts_from_zero == 0 and s.bytes <= SIZE + 64
    offsets = [o for kind, o, _ in resp.requests[node.nwk] if kind == "block"]
    assert offsets[0] == 0 and sorted(set(offsets)) == list(range(0, SIZE, 64))
    assert offsets.count(0) == 1                                           # never started over


async def test_reboot_fault_hook_resumes_where_it_stopped(clock, networks):
    net = networks(clock, routers=2, max_hops=2, seed=6)
    target = max(net.nodes.values(), key=lambda n: n.mesh_node.depth)
    resp = TinyOtaResponder(net, IMAGE)
    resp.attach()
    net.start()
    assert await net.wait_until(lambda: target.storage.offset >= SIZE // 2, timeout_s=600)
    stopped_at = target.storage.offset
    net.reboot_at(target.nwk, clock.now())
    assert await run(net, resp)
    after = [o for kind, o, t in resp.requests[target.nwk] if kind == "block"]
    resumed = after[after.index(stopped_at):]
    assert resumed[0] == stopped_at and stopped_at > 0
    assert target.stats.ota.resumes == 1 and target.stats.ota.restarts_from_zero == 0
    assert target.stats.ota.bytes <= SIZE + 64


@pytest.mark.parametrize("how", ["hook", "profile"])
async def test_corrupted_block_is_caught_and_the_image_re_requested(clock, networks, how):
    profile = PROFILES["corrupting-link"] if how == "profile" else ROUTER
    net = networks(clock, routers=1, seed=7, profiles=profile)
    node = only(net)
    if how == "hook":
        net.corrupt_block(node.nwk, 5)
    resp = TinyOtaResponder(net, IMAGE)
    assert await run(net, resp)
    assert node.stats.corrupted_blocks == 1
    assert resp.end_status[node.nwk] == [0x96, 0x00]
    assert node.stats.ota.integrity_failures == 1
    offsets = [o for kind, o, _ in resp.requests[node.nwk] if kind == "block"]
    assert offsets.count(0) == 2 and node.stats.ota.bytes == 2 * SIZE     # downloaded twice
    assert node.current_file_version == 2


async def test_hardware_version_out_of_range_gets_no_image(clock, networks):
    net = networks(clock, routers=1, seed=8, profiles=PROFILES["hw-out-of-range"])
    resp = TinyOtaResponder(net, IMAGE)
    resp.attach()
    net.start()
    await clock.sleep(300.0)
    await resp.close()
    node = only(net)
    assert resp.queries[node.nwk] and all(hw == 9 for _, hw in resp.queries[node.nwk])
    assert set(resp.query_answers[node.nwk]) == {0x98}
    assert node.stats.ota.blocks == 0 and node.current_file_version == 1
    assert node.client.state == OtaState.IDLE


async def test_node_refuses_an_image_for_other_hardware_itself(clock, networks):
    net = networks(clock, routers=1, seed=8, profiles=PROFILES["hw-out-of-range"])
    resp = TinyOtaResponder(net, IMAGE, check_hardware=False)            # a careless server
    resp.attach()
    net.start()
    await clock.sleep(60.0)
    await resp.close()
    node = only(net)
    assert resp.end_status[node.nwk] and set(resp.end_status[node.nwk]) == {0x96}
    assert node.stats.ota.header_rejects >= 1 and node.current_file_version == 1


async def test_gateway_restart_mid_campaign_resumes(clock, networks):
    big = make_image(3000)
    net = networks(clock, routers=4, sleepy=1, max_hops=3, seed=9, config=MeshConfig(loss=0.05))
    first = TinyOtaResponder(net, big)
    first.attach()
    net.start()
    assert await net.wait_until(lambda: max(n.storage.offset for n in net.nodes.values()) >= 1500, timeout_s=900)
    first.detach()                                                         # gateway goes down
    await first.close()
    await clock.sleep(10.0)                                                # frames in flight land
    progress = {n.nwk: n.storage.offset for n in net.nodes.values()}
    assert sum(1 for p in progress.values() if p > 0) >= 3
    await clock.sleep(200.0)
    assert net.host_dropped > 0
    assert {n.nwk: n.storage.offset for n in net.nodes.values()} == progress   # nothing moves meanwhile
    second = TinyOtaResponder(net, big)                                    # restarted, no memory
    assert await run(net, second, timeout_s=5000)
    for node in net.nodes.values():
        s = node.stats.ota
        assert s.restarts_from_zero == 0 and s.bytes <= len(big) + 256
        if progress[node.nwk]:
            assert s.resumes >= 1
            first_offset = next(o for kind, o, _ in second.requests[node.nwk] if kind in ("block", "page"))
            assert first_offset == progress[node.nwk]


async def test_upgrade_time_wait_then_later_command(clock, networks):
    net = networks(clock, routers=1, seed=10)
    resp = TinyOtaResponder(net, IMAGE, upgrade_time=0xFFFFFFFF)
    resp.attach()
    net.start()
    node = only(net)
    assert await net.wait_until(lambda: node.client.state == OtaState.WAITING_COMMAND, timeout_s=600)
    await clock.sleep(100.0)
    assert node.current_file_version == 1 and node.attributes(0x0019)[0x0006][1] == 3   # waiting to upgrade
    resp.send_upgrade_now(node.nwk)
    assert await run(net, resp)
    assert node.stats.activated_at > node.stats.ota.download_done_at + 100


async def test_signature_required_by_the_node(clock, networks):
    from cryptography.hazmat.primitives.asymmetric import ed25519
    key = ed25519.Ed25519PrivateKey.generate()
    profile = ROUTER.with_(trusted_keys=(raw_public_key(key.public_key()),))
    net = networks(clock, routers=2, seed=11, profiles=profile)
    a, b = list(net.nodes.values())
    signed = make_image(1000, signing_key=key)
    assert await run(net, TinyOtaResponder(net, signed))
    assert a.current_file_version == b.current_file_version == 2

    net2 = networks(clock, routers=1, seed=11, profiles=profile)
    resp = TinyOtaResponder(net2, IMAGE)                                   # unsigned
    resp.attach()
    net2.start()
    await clock.sleep(120.0)
    await resp.close()
    node = only(net2)
    assert node.current_file_version == 1 and 0x96 in resp.end_status[node.nwk]
    assert "signature" in node.client.last_reject


async def test_dropped_node_stays_behind(clock, networks):
    net = networks(clock, routers=2, seed=12)
    a, b = sorted(net.nodes.values(), key=lambda n: n.mesh_node.depth)
    resp = TinyOtaResponder(net, IMAGE)
    resp.attach()
    net.start()
    net.drop_node(b.nwk, at=clock.now() + 1.0)
    assert await net.wait_until(lambda: net.all_on_version(2, [a.nwk]), timeout_s=900)
    await clock.sleep(100.0)
    await resp.close()
    assert b.current_file_version == 1 and not b.alive and b.stats.ota.blocks == 0


async def test_provisioned_sha256_is_checked_by_the_node(clock, networks):
    net = networks(clock, routers=2, seed=13)
    good, bad = list(net.nodes.values())
    good.provision_sha256(0x1234, 1, 2, SIZE, hashlib.sha256(IMAGE).digest())
    bad.provision_sha256(0x1234, 1, 2, SIZE, bytes(32))
    resp = TinyOtaResponder(net, IMAGE)
    assert await run(net, resp, nwks=[good.nwk])
    await clock.sleep(5.0)                                          # its UpgradeEndRequest lands
    assert bad.current_file_version == 1 and "SHA-256" in bad.client.last_reject
    assert resp.end_status[bad.nwk][0] == 0x96


async def test_activation_waits_for_the_upgrade_time(clock, networks):
    net = networks(clock, routers=1, seed=14)
    resp = TinyOtaResponder(net, IMAGE, upgrade_time=120)          # current_time 0: an offset
    assert await run(net, resp)
    node = only(net)
    end_at = next(t for kind, _, t in resp.requests[node.nwk] if kind == "end")
    assert 120.0 <= node.stats.activated_at - end_at < 121.0
