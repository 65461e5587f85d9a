"""A whole mesh updated by the tiny in-test responder: 30 nodes, 5 of them sleepy, 10 %
loss per hop, up to 4 hops; every node ends on the new file version, the figures add up,
and a run is reproducible."""

from __future__ import annotations

from radio_emulators.zigbee import MeshConfig, ZigbeeNetwork

from .conftest import make_image
from .responder import TinyOtaResponder

IMAGE = make_image(2000)


async def campaign(clock, networks, seed=21):
    net = networks(clock, routers=15, end_devices=10, sleepy=5, max_hops=4, seed=seed,
                   config=MeshConfig(loss=0.10))
    resp = TinyOtaResponder(net, IMAGE)
    resp.attach()
    net.start()
    try:
        done = await net.wait_until(lambda: net.all_on_version(2), timeout_s=20_000)
    finally:
        await resp.close()
    return net, resp, done


async def test_thirty_nodes_all_end_on_the_new_version(clock, networks):
    net, resp, done = await campaign(clock, networks)
    assert done
    report = net.report()
    assert len(report.nodes) == 30 and sum(n.sleepy for n in report.nodes) == 5
    assert max(n.hops for n in report.nodes) == 4
    assert all(n.file_version == 2 and n.versions == [1, 2] for n in report.nodes)
    assert all(n.bytes >= len(IMAGE) for n in report.nodes)
    assert all(resp.end_status[n.nwk][-1] == 0 for n in report.nodes)
    mesh = report.mesh
    # 10 % per attempt, plus attempts towards routers rebooting into their new image
    assert 0.09 < mesh.mac_failures / mesh.mac_attempts < 0.2
    assert mesh.aps_retries > 0 and mesh.polls > 0
    bound = net.airtime_bound_s(len(IMAGE))
    assert report.makespan_s > bound and report.airtime_s > bound
    summary = report.summary()
    assert summary["nodes"] == 30 and summary["blocks"] == sum(n.blocks for n in report.nodes)


def test_campaign_is_reproducible():
    from radio_emulators.zigbee.looptime import LoopClock, run_virtual
    from .conftest import T0

    async def once():
        made = []
        net, _, done = await campaign(LoopClock(), lambda clock, **kw: made.append(
            ZigbeeNetwork.generate(clock, **kw)) or made[-1], seed=5)
        assert done
        report = net.report()
        await net.close()
        return report

    reports = []
    for _ in range(2):                    # same seed, same start time -> the same run
        reports.append(run_virtual(once(), start=T0))
    a, b = reports
    assert a.summary() == b.summary()
    assert [(n.nwk, n.blocks, n.version_reported_at) for n in a.nodes] == \
           [(n.nwk, n.blocks, n.version_reported_at) for n in b.nodes]
