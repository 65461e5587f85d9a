"""Zigbee OTA campaign benchmark: proxyota (zigpy adapter + OTA server) against zigpy's
built-in OTA (``Device.update_firmware`` started for every node at once), serving the same
emulated mesh (same seed: same topology, devices, losses) on an emulated clock.

    .venv/bin/python benchmarks/zigbee_campaign.py [--nodes 50] [--sleepy 8] [--hops 4]
        [--loss 0.1] [--image-size 8192] [--seed 1] [--max-concurrent 32] [--json]

Printed side by side: nodes updated (ground truth from the emulated devices), makespan
(emulated seconds until the last updated node reported its new version) over the airtime
bound (channel time alone, ``radio_emulators.zigbee.phy.airtime_bound_s``), blocks served,
and gateway CPU per block served (process CPU time of the campaign / blocks; the process
also runs zigpy and the emulated mesh, the same for every column). proxyota runs twice: with
its durable state file (JSON, fsync, after every step, as in the field) and with an
in-memory state sink (what the durability costs). Wall times are printed, never targets.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from proxyota.simulation.zigbee import ZigbeeSimulation, run
from proxyota.zigbee.ota_server import CampaignPolicy


class MemorySink:
    """State documents serialised (as the file sink does) but kept in memory."""

    def __init__(self) -> None:
        self.docs: dict[str, str] = {}

    async def save(self, campaign_id: str, doc: dict) -> None:
        self.docs[campaign_id] = json.dumps(doc, sort_keys=True, separators=(",", ":"))

    async def load(self, campaign_id: str) -> dict | None:
        text = self.docs.get(campaign_id)
        return None if text is None else json.loads(text)


ROWS = (
    ("nodes updated", lambda r: f"{r['updated']}/{r['nodes']}"),
    ("makespan (emulated s)", lambda r: _f(r["makespan_s"], 1)),
    ("airtime bound (s)", lambda r: _f(r["airtime_bound_s"], 2)),
    ("makespan / bound", lambda r: _f(r["makespan_over_bound"], 1)),
    ("blocks served", lambda r: str(r["blocks_served"])),
    ("gateway CPU (s)", lambda r: _f(r["cpu_s"], 2)),
    ("CPU per block (ms)", lambda r: _f(r["cpu_per_block_ms"], 3)),
    ("wall (s)", lambda r: _f(r["wall_s"], 1)),
)


def _f(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--sleepy", type=int, default=8)
    ap.add_argument("--hops", type=int, default=4)
    ap.add_argument("--loss", type=float, default=0.10)
    ap.add_argument("--image-size", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-concurrent", type=int, default=32)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    common = dict(nodes=args.nodes, sleepy=args.sleepy, hops=args.hops, loss=args.loss, seed=args.seed,
                  image_size=args.image_size, policy=CampaignPolicy(max_concurrent=args.max_concurrent))
    runs = {
        "proxyota": run(ZigbeeSimulation(**common)),
        "proxyota (state in memory)": run(ZigbeeSimulation(**common, sink=MemorySink())),
        "zigpy built-in": run(ZigbeeSimulation(**common, server="zigpy")),
    }
    if args.json:
        json.dump({k: {key: v for key, v in r.items() if key != "per_node"} for k, r in runs.items()},
                  sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    first = next(iter(runs.values()))
    print(f"{args.nodes} nodes ({first['routers']} routers, {args.sleepy} sleepy), up to {first['max_hops']} hops, "
          f"loss {args.loss:.0%} per hop, image {first['image']['size']} bytes, seed {args.seed}, "
          f"proxyota max {args.max_concurrent} downloads at once")
    width = max(len(k) for k in runs) + 2
    print(f"{'':<24}" + "".join(f"{name:>{width}}" for name in runs))
    for label, cell in ROWS:
        print(f"{label:<24}" + "".join(f"{cell(r):>{width}}" for r in runs.values()))
    for name, r in runs.items():
        if not r["failed"]:
            continue
        reasons: dict[str, int] = {}
        for reason in r["failed"].values():
            reasons[reason] = reasons.get(reason, 0) + 1
        sleepy = sum(1 for n in r["per_node"] if not n["updated"] and n["sleepy"])
        print(f"{name}: {len(r['failed'])} not updated ({sleepy} of them sleepy): "
              + "; ".join(f"{k} x{v}" for k, v in sorted(reasons.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
