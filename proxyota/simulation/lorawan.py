"""A LoRaWAN FUOTA campaign end to end on emulated radios (``proxyota simulate lorawan``).

The gateway side is proxyota's own field code: :class:`~proxyota.chirpstack.client.ChirpStackClient`
(gRPC), :class:`~proxyota.chirpstack.integration.IntegrationReceiver` (HTTP), the
:class:`~proxyota.chirpstack.fuota.FuotaDriver` and the sans-IO session machine. The other side
is ``radio_emulators.lorawan``: an emulated ChirpStack v4 (gRPC servicers + HTTP integration)
over an emulated radio network of end devices with their own protocol stacks. Both run on one
:class:`~radio_emulators.clock.VirtualClock` and talk over real sockets on 127.0.0.1 (ephemeral
ports): airtime and duty cycle are accounted exactly, hours on air pass in seconds.

``fixed_redundancy`` replaces the adaptive repair with ChirpStack's built-in FUOTA behaviour:
one round of NbFrag + a fixed percentage of coded fragments, no repair.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

from proxyota.chirpstack.client import ChirpStackClient, RetryPolicy
from proxyota.chirpstack.fuota import FileStateSink, FuotaDriver
from proxyota.chirpstack.integration import IntegrationReceiver
from proxyota.errors import InvalidArgument
from proxyota.lorawan.repair import RepairPolicy
from proxyota.lorawan.session_config import DeviceConfig, SessionConfig, Timeouts

#: the emulated network's GPS start time (2024-05-18, an arbitrary fixed point)
START_GPS = 1_400_000_000.0
API_TOKEN = "simulate-lorawan-token"  # only ever sent to the emulator on 127.0.0.1
OLD_VERSION = 0x01000000
NEW_VERSION = 0x01010000


@dataclass(frozen=True)
class LorawanSimulation:
    nodes: int = 100
    loss_min: float = 0.0
    loss_max: float = 0.30
    burst: bool = False
    dead: int = 0
    image_size: int = 50 * 1024
    image: bytes | None = None
    region: str = "EU868"
    dr: int | None = None
    frag_size: int | None = None  # default: the largest the DR carries
    version: int = 1
    fixed_redundancy: float | None = None  # percent
    seed: int = 1
    uplink_period: float = 300.0  # class A uplinks while a FUOTA runs (LoRaMac-node's example: 40 s)
    encoding: str = "json"
    chirpstack_down_at: float | None = None  # emulated ChirpStack restart (s after start,
    # or after the first multicast frame with chirpstack_down_in_multicast)
    chirpstack_down_in_multicast: bool = False
    chirpstack_down_for: float = 600.0
    duplicate_events: float = 0.0  # integration faults: each event repeated with this probability
    malformed_events: float = 0.0  # ... or preceded by a malformed body

    def validate(self) -> None:
        if self.nodes < 1:
            raise InvalidArgument("--nodes must be >= 1")
        if not 0 <= self.loss_min <= self.loss_max < 1:
            raise InvalidArgument("--loss must be LO-HI with 0 <= LO <= HI < 1")
        if not 0 <= self.dead <= self.nodes:
            raise InvalidArgument("--dead must be between 0 and --nodes")
        if self.version not in (1, 2):
            raise InvalidArgument("--version must be 1 or 2")
        if self.image is None and self.image_size < 1:
            raise InvalidArgument("--image-size must be >= 1")
        if self.fixed_redundancy is not None and not 0 <= self.fixed_redundancy <= 300:
            raise InvalidArgument("--fixed-redundancy must be a percentage in 0..300")


def _repair_policy(sim: LorawanSimulation) -> RepairPolicy:
    if sim.fixed_redundancy is None:
        return RepairPolicy()
    return RepairPolicy(initial_redundancy=sim.fixed_redundancy / 100.0, max_rounds=1,
                        unicast_max_devices=0)


async def run(sim: LorawanSimulation) -> dict[str, Any]:
    """Run one campaign; returns the report (plain values)."""
    sim.validate()
    # imported here: the gateway package never needs the emulators outside simulations
    from radio_emulators.clock import VirtualClock
    from radio_emulators.lorawan.campaign import build_campaign_network
    from radio_emulators.lorawan.chirpstack import EmulatedChirpStack
    from radio_emulators.lorawan.firmware import make_test_image
    from radio_emulators.lorawan.integration import IntegrationFaults

    wall0 = time.perf_counter()
    rng = random.Random(sim.seed)
    clock = VirtualClock(START_GPS)
    losses = [rng.uniform(sim.loss_min, sim.loss_max) for _ in range(sim.nodes)]
    profile = "loramac-node" if sim.version == 1 else "lbm"
    stack = "loramac_node" if sim.version == 1 else "lbm"  # proxyota.lorawan.repair.Stack
    cn = build_campaign_network(
        sim.nodes, losses=losses, burst=4.0 if sim.burst else None, dead=sim.dead,
        seed=sim.seed, region=sim.region, profiles=(profile,), start=clock.now(),
        fw_version=OLD_VERSION, hw_version=1, uplink_period=sim.uplink_period,
    )
    body = sim.image if sim.image is not None else rng.randbytes(sim.image_size)
    image = make_test_image(body, NEW_VERSION, 1)
    application_id = str(uuid.UUID(int=rng.getrandbits(128)))

    driver: FuotaDriver | None = None

    async def on_event(event) -> None:
        if driver is not None:
            await driver.handle_event(event)

    receiver = IntegrationReceiver(on_event, clock=clock)
    url = await receiver.start("127.0.0.1", 0)
    chirpstack = EmulatedChirpStack(cn.network, clock, api_token=API_TOKEN, integration_url=url,
                                    encoding=sim.encoding, application_id=application_id,
                                    device_keys=cn.keys, seed=sim.seed,
                                    faults=IntegrationFaults(duplicate_p=sim.duplicate_events,
                                                             malformed_p=sim.malformed_events,
                                                             seed=sim.seed))
    port = await chirpstack.start("127.0.0.1", 0)
    client = ChirpStackClient(f"127.0.0.1:{port}", API_TOKEN, clock=clock,
                              retry=RetryPolicy(max_attempts=12, max_backoff=120.0))
    fault_task: asyncio.Task[None] | None = None
    try:
        devices = {}
        for eui in cn.dev_euis:  # keys as a real deployment gets them: DeviceService.GetKeys
            keys = await client.get_device_keys(eui.hex())
            if keys.gen_app_key is not None:  # LoRaWAN 1.0.x: McRootKey from GenAppKey
                devices[eui.hex()] = DeviceConfig(gen_app_key=keys.gen_app_key, stack=stack)
            else:  # 1.1: from AppKey
                devices[eui.hex()] = DeviceConfig(app_key=keys.app_key, lorawan_1_1=True,
                                                  stack=stack)
        config = SessionConfig(
            devices=devices,
            mc_addr=rng.getrandbits(32) | 1,
            mc_key=rng.randbytes(16),
            region=sim.region,
            dr=sim.dr,
            frag_size=sim.frag_size,
            frag_versions=(sim.version,),
            descriptor=hashlib.sha256(image).digest()[:4],
            expected_fw_version=NEW_VERSION,
            repair_policy=_repair_policy(sim),
            # ChirpStack reports each unicast transmission (txack): answer timers start then;
            # a class A device fetches a queued request at its next uplink
            # (5 resends: at 30 % downlink loss three attempts still fail ~3 % of devices)
            # every class A setup step (probes, clock, McGroup, FragSession, session) costs about
            # one uplink period, more with losses, and the gateway's duty cycle rations unicast
            # downlinks across the fleet: both windows grow with the fleet
            # the session starts once the fleet is set up, when the session requests have had
            # eight uplink periods (plus the gateway's downlink rationing) to arrive: at 30 %
            # loss each way a class A request + answer may take several attempts, and a
            # device that misses the start is lost to the campaign
            timeouts=Timeouts(setup_window=16 * sim.uplink_period + 60.0 * sim.nodes,
                              max_retries=5,
                              delivery=4 * sim.uplink_period + 10.0 * sim.nodes,
                              session_lead=8 * sim.uplink_period + 20.0 * sim.nodes),
        )
        with tempfile.TemporaryDirectory(prefix="proxyota-sim-") as tmp:
            from proxyota.lorawan.session import FuotaSession

            driver = FuotaDriver(FuotaSession(config, image), client, clock,
                                 campaign_id="simulate-lorawan", application_id=application_id,
                                 sink=FileStateSink(tmp))
            if sim.chirpstack_down_at is not None:
                async def fault() -> None:
                    if sim.chirpstack_down_in_multicast:
                        while not chirpstack.core.counters["mc_enqueued"]:
                            await clock.sleep(5.0)
                    await clock.sleep(sim.chirpstack_down_at)
                    await chirpstack.restart(sim.chirpstack_down_for)

                fault_task = asyncio.create_task(fault())
            report = await driver.run()
            saves = driver.sink.saves  # type: ignore[attr-defined]
    finally:
        if fault_task is not None:
            fault_task.cancel()
        await client.close()
        await chirpstack.stop()
        await receiver.stop()

    outcomes = driver.session.outcomes()
    truth = {d.dev_eui.hex(): d for d in cn.devices}
    updated = sorted(e for e, o in outcomes.items()
                     if o.reason == "successful" and truth[e].fw_version == NEW_VERSION)
    failed = {e: o.reason for e, o in sorted(outcomes.items()) if o.reason != "successful"}
    live = [p for p, d in zip(losses, cn.devices) if d.dev_eui not in cn.dead]
    p_max = max(live) if live else 0.0
    nb_frag = report["nb_frag"]
    bound = nb_frag / (1 - p_max)
    sent = report["multicast_fragments"]
    stats = chirpstack.stats()
    return {
        "nodes": sim.nodes,
        "updated": len(updated),
        "failed": failed,
        "dead": sorted(e.hex() for e in cn.dead),
        "mode": "adaptive" if sim.fixed_redundancy is None
        else f"fixed {sim.fixed_redundancy:g} %",
        "version": sim.version,
        "region": sim.region,
        "dr": config.dr,
        "frag_size": report["frag_size"],
        "image_bytes": len(image),
        "nb_frag": nb_frag,
        "fragments_sent": sent,
        "unicast_fragments": report["unicast_fragments"],
        "multicast_status_requests": report["multicast_status_requests"],
        "p_max": round(p_max, 4),
        "bound": round(bound, 2),
        "efficiency": round(sent / bound, 4),
        "airtime_s": report["airtime_s"],
        # what the emulated gateway transmitted, per duty-cycle sub-band (multicast + unicast)
        "gateway_airtime_s": {band: round(t, 3) for band, t in
                              sorted(stats["network"].gateway_airtime.items())},
        "network_time_s": round(clock.now() - START_GPS, 1),
        "rounds": report["rounds"],
        "reopenings": report["reopenings"],
        "state_saves": saves,
        "driver": {"uplinks": driver.stats.uplinks, "action_errors": driver.stats.action_errors},
        "chirpstack": {"calls": sum(stats["calls"].values()), "errors": dict(stats["errors"]),
                       "core": {k: v for k, v in stats["core"].items()
                                if isinstance(v, (int, float, dict))},
                       "network": {k: v for k, v in vars(stats["network"]).items()
                                   if isinstance(v, (int, float))}},
        "integration_responses": dict(sorted(receiver.dispatcher.counts.items())),
        "ground_truth_new_version": sum(1 for d in cn.devices if d.fw_version == NEW_VERSION),
        "wall_s": round(time.perf_counter() - wall0, 2),
    }
