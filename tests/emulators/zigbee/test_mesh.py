"""The mesh radio model: topology generation, per-hop latency, loss with MAC and APS
retries, airtime per neighbourhood, sleepy indirect delivery, broadcast, payload limit,
and the airtime bound."""

from __future__ import annotations

import math

import pytest

from radio_emulators.zigbee import phy
from radio_emulators.zigbee.mesh import Mesh, MeshConfig
from radio_emulators.zigbee.topology import COORDINATOR, END_DEVICE, ROUTER, MeshNode, Topology


def chain(hops: int, *, sleepy_leaf: bool = False) -> Topology:
    """coordinator - r1 - r2 - ... (hops routers), optionally a sleepy end device below."""
    nodes = [MeshNode(0, 0x0000, bytes(8), COORDINATOR)]
    for k in range(1, hops + 1):
        nodes.append(MeshNode(k, 0x1000 + k, bytes([k] * 8), ROUTER, parent=k - 1, depth=k))
    if sleepy_leaf:
        nodes.append(MeshNode(hops + 1, 0x2000, bytes([0xEE] * 8), END_DEVICE, sleepy=True, parent=hops,
                              depth=hops + 1))
    return Topology(nodes)


def star(children: int) -> Topology:
    nodes = [MeshNode(0, 0x0000, bytes(8), COORDINATOR)]
    for k in range(1, children + 1):
        nodes.append(MeshNode(k, 0x1000 + k, bytes([k] * 8), ROUTER, parent=0, depth=1))
    return Topology(nodes)


EXCHANGE_MIN = phy.CCA_S + phy.TURNAROUND_S + phy.frame_airtime(phy.ACK_PSDU)
BACKOFF_MAX = 7 * phy.BACKOFF_UNIT_S


# -- topology --------------------------------------------------------------------------------------
def test_generated_topology_is_seeded_and_bounded():
    a = Topology.generate(routers=15, end_devices=10, sleepy=5, max_hops=4, seed=7)
    b = Topology.generate(routers=15, end_devices=10, sleepy=5, max_hops=4, seed=7)
    assert [(n.nwk, n.ieee, n.parent) for n in a.nodes] == [(n.nwk, n.ieee, n.parent) for n in b.nodes]
    assert len(a.nodes) == 31 and a.max_depth == 4
    assert sum(n.sleepy for n in a.nodes) == 5 and all(n.parent is not None for n in a.nodes[1:])
    assert all(a.nodes[n.parent].is_router for n in a.nodes[1:])
    assert len({n.nwk for n in a.nodes}) == 31 and len({n.ieee for n in a.nodes}) == 31
    for n in a.nodes[1:]:
        assert a.nodes[n.parent].depth == n.depth - 1
        assert len(a.path(0, n.index)) == n.depth + 1
    assert Topology.generate(routers=15, end_devices=10, sleepy=5, max_hops=4, seed=8).nodes[1].nwk != a.nodes[1].nwk


# -- latency, airtime ------------------------------------------------------------------------------
@pytest.mark.parametrize("hops", [1, 2, 4])
def test_latency_grows_per_hop(hops):
    mesh = Mesh(chain(hops), MeshConfig(hop_latency_s=0.004), seed=1)
    plan = mesh.plan_unicast(0, hops, 50, 100.0, aps_ack=False)
    per_hop = EXCHANGE_MIN + phy.frame_airtime(phy.data_psdu(50)) + 0.004
    assert plan.success and plan.delivered_at is not None
    assert hops * per_hop - 1e-9 <= plan.delivered_at - 100.0 <= hops * (per_hop + BACKOFF_MAX) + 1e-9
    # airtime: the data frame and its MAC ACK on each hop, nothing else
    expected = hops * (phy.frame_airtime(phy.data_psdu(50)) + phy.frame_airtime(phy.ACK_PSDU))
    assert mesh.stats.total_airtime_s == pytest.approx(expected)
    assert mesh.stats.mac_attempts == hops and mesh.stats.mac_failures == 0


def test_aps_ack_adds_the_return_path():
    mesh = Mesh(chain(2), seed=1)
    plan = mesh.plan_unicast(0, 2, 82, 0.0, aps_ack=True)
    assert plan.success and plan.confirm_at > plan.delivered_at
    data = phy.frame_airtime(phy.data_psdu(82)) + phy.frame_airtime(phy.ACK_PSDU)
    ack = phy.frame_airtime(phy.APS_ACK_PSDU) + phy.frame_airtime(phy.ACK_PSDU)
    assert mesh.stats.total_airtime_s == pytest.approx(2 * data + 2 * ack)


def test_payload_limit():
    mesh = Mesh(chain(1))
    assert phy.MAX_APS_PAYLOAD == 82 and phy.data_psdu(82) == phy.MAX_PSDU
    mesh.plan_unicast(0, 1, 82, 0.0, aps_ack=True)
    with pytest.raises(ValueError, match="83 bytes"):
        mesh.plan_unicast(0, 1, 83, 0.0, aps_ack=True)


def test_frames_in_one_neighbourhood_serialise_and_others_overlap():
    mesh = Mesh(star(2), seed=3)
    a = mesh.plan_unicast(0, 1, 82, 0.0, aps_ack=False)
    b = mesh.plan_unicast(0, 2, 82, 0.0, aps_ack=False)
    one = phy.frame_airtime(phy.data_psdu(82)) + phy.TURNAROUND_S + phy.frame_airtime(phy.ACK_PSDU)
    assert abs(b.delivered_at - a.delivered_at) >= one - 1e-9          # same cell: one after the other
    # two leaf links below two different routers: different cells, may overlap in time
    nodes = [MeshNode(0, 0, bytes(8), COORDINATOR),
             MeshNode(1, 1, b"\x01" * 8, ROUTER, parent=0, depth=1),
             MeshNode(2, 2, b"\x02" * 8, ROUTER, parent=0, depth=1),
             MeshNode(3, 3, b"\x03" * 8, END_DEVICE, parent=1, depth=2),
             MeshNode(4, 4, b"\x04" * 8, END_DEVICE, parent=2, depth=2)]
    mesh2 = Mesh(Topology(nodes), seed=3)
    p = mesh2.plan_unicast(1, 3, 82, 0.0, aps_ack=False)
    q = mesh2.plan_unicast(2, 4, 82, 0.0, aps_ack=False)
    assert abs(p.delivered_at - q.delivered_at) < one
    shared = Mesh(Topology(nodes), MeshConfig(shared_channel=True), seed=3)
    p = shared.plan_unicast(1, 3, 82, 0.0, aps_ack=False)
    q = shared.plan_unicast(2, 4, 82, 0.0, aps_ack=False)
    assert abs(p.delivered_at - q.delivered_at) >= one - 1e-9


# -- loss, retries ----------------------------------------------------------------------------------
def test_loss_is_recovered_by_mac_retries_and_accounted():
    mesh = Mesh(chain(4), MeshConfig(loss=0.1), seed=5)
    plans = [mesh.plan_unicast(0, 4, 60, 10.0 * k, aps_ack=True) for k in range(300)]
    assert all(p.success for p in plans)
    s = mesh.stats
    assert 0.07 < s.mac_failures / s.mac_attempts < 0.13
    lossless = Mesh(chain(4), seed=5)
    for k in range(300):
        lossless.plan_unicast(0, 4, 60, 10.0 * k, aps_ack=True)
    assert s.total_airtime_s > lossless.stats.total_airtime_s * 1.05


def test_dead_link_exhausts_aps_retries():
    cfg = MeshConfig(link_loss={(1, 2): 1.0})
    mesh = Mesh(chain(2), cfg, seed=2)
    plan = mesh.plan_unicast(0, 2, 40, 0.0, aps_ack=True)
    assert not plan.success and plan.delivered_at is None and plan.aps_attempts == 4
    assert mesh.stats.aps_retries == 3 and mesh.stats.hop_failures == 4
    assert mesh.stats.mac_attempts == 4 * (1 + 4)                      # first hop ok, second 4 tries
    assert plan.confirm_at == pytest.approx(4 * mesh.aps_ack_timeout(2, False), rel=0.05)
    no_ack = mesh.plan_unicast(0, 2, 40, 100.0, aps_ack=False)
    assert no_ack.success and no_ack.delivered_at is None               # only the first hop is confirmed


def test_dead_node_is_unreachable():
    alive = {0: True, 1: True, 2: False}
    mesh = Mesh(chain(2), seed=1, alive=lambda i: alive[i])
    assert not mesh.plan_unicast(0, 2, 10, 0.0, aps_ack=True).success
    assert mesh.plan_unicast(0, 1, 10, 50.0, aps_ack=True).success


# -- sleepy end devices -------------------------------------------------------------------------------
def test_sleepy_child_gets_data_at_its_next_poll():
    polls = lambda index, t: math.ceil(t / 5.0) * 5.0 + 0.5     # polls at 0.5, 5.5, 10.5, ...
    mesh = Mesh(chain(1, sleepy_leaf=True), seed=1, poll_schedule=polls)
    plan = mesh.plan_unicast(0, 2, 50, 1.0, aps_ack=False)
    assert 5.5 < plan.delivered_at < 5.52
    assert mesh.stats.polls == 1
    up = mesh.plan_unicast(2, 0, 50, 20.0, aps_ack=False)            # the sleepy node sends at once
    assert up.delivered_at < 20.05


def test_indirect_frame_expires_after_7_68_s():
    polls = lambda index, t: math.ceil(t / 10.0) * 10.0              # polls every 10 s
    mesh = Mesh(chain(1, sleepy_leaf=True), seed=1, poll_schedule=polls)
    plan = mesh.plan_unicast(0, 2, 50, 1.0, aps_ack=False)
    assert plan.delivered_at is None and mesh.stats.indirect_expired == 1
    acked = mesh.plan_unicast(0, 2, 50, 1.0, aps_ack=True)           # an APS retry lands in a poll
    assert acked.success and acked.aps_attempts == 2 and acked.delivered_at >= 10.0


# -- broadcast ---------------------------------------------------------------------------------------------
def test_broadcast_reaches_every_node_once():
    topo = Topology.generate(routers=6, end_devices=3, sleepy=2, max_hops=3, seed=4)
    mesh = Mesh(topo, MeshConfig(loss=0.1), seed=4, poll_schedule=lambda i, t: t + 1.0)
    heard = mesh.plan_broadcast(0, 10, 0.0)
    assert set(heard) == set(range(1, len(topo.nodes)))
    for index, t in heard.items():
        assert t > 0.0
        if topo.nodes[index].sleepy:
            assert t >= 1.0
    up = mesh.plan_broadcast(len(topo.nodes) - 1, 10, 5.0)          # from an end device
    assert 0 in up


# -- bound --------------------------------------------------------------------------------------------------
def test_airtime_bound():
    per_hop = (phy.frame_airtime(127) + phy.TURNAROUND_S + phy.frame_airtime(5)) + \
              (phy.frame_airtime(66) + phy.TURNAROUND_S + phy.frame_airtime(5))
    assert per_hop == pytest.approx(0.007648)
    assert phy.airtime_bound_s(650) == pytest.approx(10 * per_hop)           # 65-byte blocks
    assert phy.airtime_bound_s(650, hops=[1, 1, 1]) == pytest.approx(30 * per_hop)
    assert phy.airtime_bound_s(650, hops=[4, 1]) == pytest.approx(40 * per_hop)
    assert phy.airtime_bound_s(0) == 0.0
    with pytest.raises(ValueError):
        phy.airtime_bound_s(10, hops=[0])
