"""A LoRaWAN FUOTA campaign end to end: proxyota's ChirpStack client (gRPC), integration
receiver (HTTP), driver and session machine against the emulated ChirpStack and end devices,
over real sockets on 127.0.0.1, on a virtual clock. Ground truth (the firmware each emulated
device runs at the end) comes from the emulator, not from proxyota's own report."""

from __future__ import annotations

import asyncio

import pytest

from proxyota.simulation.lorawan import LorawanSimulation, run

pytestmark = pytest.mark.slow


def _check_figures(r: dict) -> None:
    assert r["fragments_sent"] >= r["nb_frag"]
    assert r["bound"] == pytest.approx(r["nb_frag"] / (1 - r["p_max"]), abs=0.01)
    assert r["efficiency"] == pytest.approx(r["fragments_sent"] / r["bound"], abs=1e-3)
    assert r["airtime_s"] > 0 and r["network_time_s"] > r["airtime_s"]
    # the gateway sent the multicast frames (and the unicast downlinks on top)
    assert sum(r["gateway_airtime_s"].values()) > r["airtime_s"]
    assert r["rounds"] >= 1
    assert r["updated"] == r["ground_truth_new_version"]


def _check_nothing_dropped(r: dict) -> None:
    """Paced at ChirpStack's class C margin, no multicast frame bunches at its scheduler tick
    and the gateway (enforcing the duty cycle) refuses none."""
    core = r["chirpstack"]["core"]
    assert core["mc_dropped_duty_cycle"] == core["mc_dropped_busy"] == 0, core
    assert core["mc_sent"] == core["mc_enqueued"] == r["fragments_sent"] + r["multicast_status_requests"]


def test_hundred_devices_two_dead_fifty_kib() -> None:
    r = asyncio.run(run(LorawanSimulation(nodes=100, loss_min=0.0, loss_max=0.30, dead=2,
                                          image_size=50 * 1024, dr=5, seed=11)))
    assert len(r["dead"]) == 2
    # every live device ends on the new version, checked on the emulated device itself
    assert r["updated"] == 98, r["failed"]
    assert set(r["failed"]) == set(r["dead"])
    assert all(reason == "no_answer" for reason in r["failed"].values())
    _check_figures(r)
    _check_nothing_dropped(r)


def test_chirpstack_restart_mid_campaign() -> None:
    # the emulated ChirpStack answers UNAVAILABLE for 5 emulated minutes from 10 s into the
    # multicast; the client backs off in emulated time and the campaign completes
    r = asyncio.run(run(LorawanSimulation(nodes=12, image_size=8 * 1024, dr=5, seed=4,
                                          chirpstack_down_at=10.0, chirpstack_down_for=300.0,
                                          chirpstack_down_in_multicast=True)))
    assert r["chirpstack"]["errors"].get("UNAVAILABLE", 0) > 0, r["chirpstack"]
    assert r["updated"] == 12, r["failed"]
    _check_figures(r)


def test_duplicated_and_malformed_integration_events_change_nothing() -> None:
    base = LorawanSimulation(nodes=10, image_size=6 * 1024, dr=5, seed=8)
    clean = asyncio.run(run(base))
    noisy = asyncio.run(run(LorawanSimulation(nodes=10, image_size=6 * 1024, dr=5, seed=8,
                                              duplicate_events=0.3, malformed_events=0.1)))
    responses = noisy["integration_responses"]
    assert responses.get("duplicate", 0) > 0 and responses.get("malformed", 0) > 0, responses
    assert clean["updated"] == noisy["updated"] == 10
    # the duplicates were not delivered twice: the machine saw the same uplinks
    assert noisy["driver"]["uplinks"] == clean["driver"]["uplinks"]
    assert noisy["fragments_sent"] == clean["fragments_sent"]
    _check_nothing_dropped(clean)
