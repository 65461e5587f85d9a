"""``proxyota simulate NETWORK ...``: run a campaign end to end against an emulated network on
an emulated clock and report what a real network would take.

Each network is one sub-command, added by a function decorated with :func:`subcommand`
(``(subparsers) -> None``: add the parser, set ``func``); adding one needs nothing else.

``proxyota simulate zigbee [--nodes N] [--sleepy K] [--hops H] [--loss P] [--image FILE]
[--seed S] [--json]``: an OTA campaign through the zigpy adapter against the emulated Zigbee
mesh (see :mod:`proxyota.simulation.zigbee`). Exit 0 when every node ends on the new file
version, 3 when some did not (the report names them and why), 1 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

__all__ = ["EXIT_NOT_ALL_UPDATED", "register", "subcommand"]

EXIT_NOT_ALL_UPDATED = 3

Adder = Callable[[Any], None]
_SUBCOMMANDS: list[Adder] = []


def subcommand(add: Adder) -> Adder:
    """Register ``add(subparsers)`` as a ``simulate`` sub-command."""
    _SUBCOMMANDS.append(add)
    return add


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate", help="run a campaign against an emulated network (emulated time)",
        description="Run a campaign end to end against an emulated network; emulated time, real code paths.")
    sub = parser.add_subparsers(dest="simulate_network", metavar="NETWORK", required=True)
    for add in _SUBCOMMANDS:
        add(sub)


# -- zigbee -----------------------------------------------------------------------------


def _probability(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a probability: {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"loss must be in [0, 1) (or 0%%..99%%), got {text!r}")
    return value


@subcommand
def add_zigbee(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "zigbee", help="OTA campaign through zigpy + proxyota against the emulated Zigbee mesh",
        description="Start an emulated Zigbee mesh (a zigpy radio library) on an emulated clock, serve an "
        "OTA file to every node through proxyota's zigpy adapter and report the outcome per node "
        "(ground truth from the emulated devices), makespan, airtime bound and gateway CPU. "
        "Exit 0 when every node runs the new file, 3 when some do not.")
    p.add_argument("--nodes", type=int, default=30, help="nodes besides the coordinator (default 30)")
    p.add_argument("--sleepy", type=int, default=5, help="how many of them are sleepy end devices (default 5)")
    p.add_argument("--hops", type=int, default=4, help="deepest hop count from the coordinator (default 4)")
    p.add_argument("--loss", type=_probability, default=0.10,
                   help="loss per hop and transmission attempt, e.g. 0.1 or 10%% (default 0.1)")
    p.add_argument("--image", metavar="FILE",
                   help="OTA file to serve (plain or vendor container; the nodes are made to run an older "
                   "version of its manufacturer code and image type); default: a built image")
    p.add_argument("--image-size", type=int, default=4096,
                   help="firmware bytes of the built image when no --image is given (default 4096)")
    p.add_argument("--seed", type=int, default=1, help="seed of the topology, losses and devices (default 1)")
    p.add_argument("--max-concurrent", type=int, default=32,
                   help="downloads the server runs at once; the others are told WAIT_FOR_DATA (default 32)")
    p.add_argument("--server", choices=("proxyota", "zigpy"), default="proxyota",
                   help="proxyota (default), or zigpy's built-in OTA (Device.update_firmware) for comparison")
    p.add_argument("--restart-at", type=float, metavar="SECONDS",
                   help="restart the gateway this many emulated seconds into the campaign (resumes from "
                   "the saved state)")
    p.add_argument("--state-dir", metavar="DIR", help="where the campaign state is saved (default: temporary)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_zigbee)


def _zigbee(args: argparse.Namespace) -> int:
    from proxyota.errors import InvalidArgument
    from proxyota.simulation.zigbee import ZigbeeSimulation, run
    from proxyota.zigbee.ota_server import CampaignPolicy

    image = Path(args.image).read_bytes() if args.image else None
    if args.max_concurrent < 1:
        raise InvalidArgument("--max-concurrent must be >= 1")
    sim = ZigbeeSimulation(
        nodes=args.nodes, sleepy=args.sleepy, hops=args.hops, loss=args.loss, seed=args.seed, image=image,
        image_size=args.image_size, server=args.server, restart_at_s=args.restart_at,
        state_dir=args.state_dir, policy=CampaignPolicy(max_concurrent=args.max_concurrent))
    report = run(sim)
    if args.json:
        json.dump(report, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print_zigbee_report(report)
    return 0 if not report["failed"] and report["updated"] == report["nodes"] else EXIT_NOT_ALL_UPDATED


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def print_zigbee_report(report: dict[str, Any], out: Any = None) -> None:
    out = out if out is not None else sys.stdout
    image = report["image"]
    print(f"server: {report['server']}   seed {report['seed']}   {report['nodes']} nodes "
          f"({report['routers']} routers, {report['sleepy']} sleepy), up to {report['max_hops']} hops, "
          f"loss {report['loss']:.0%} per hop", file=out)
    print(f"image: manufacturer 0x{image['manufacturer_code']:04X} type 0x{image['image_type']:04X} "
          f"version 0x{image['file_version']:08X}, {image['size']} bytes", file=out)
    print(f"updated: {report['updated']}/{report['nodes']}   failed: {len(report['failed'])}", file=out)
    ratio = report.get("makespan_over_bound")
    print(f"makespan: {_fmt(report['makespan_s'], ' s')} emulated   airtime bound: "
          f"{_fmt(report['airtime_bound_s'], ' s', 2)}   ratio: {_fmt(ratio, 'x')}", file=out)
    print(f"blocks served: {report['blocks_served']}   gateway CPU: {_fmt(report['cpu_s'], ' s', 2)} "
          f"({_fmt(report['cpu_per_block_ms'], ' ms', 2)} per block)   wall: {_fmt(report['wall_s'], ' s', 2)}",
          file=out)
    if report.get("gateway_restarts"):
        print(f"gateway restarts: {report['gateway_restarts']}", file=out)
    print(file=out)
    print(f"{'ieee':<23} {'nwk':<6} {'role':<10} {'hops':>4} {'profile':<22} {'version':>10} "
          f"{'blocks':>6} {'resumes':>7} {'done at':>9}  status", file=out)
    for node in report["per_node"]:
        role = "sleepy" if node["sleepy"] else node["role"]
        status = "updated" if node["updated"] else report["failed"].get(node["ieee"], "not updated")
        print(f"{node['ieee']:<23} {node['nwk']:<6} {role:<10} {node['hops']:>4} {node['profile']:<22} "
              f"0x{node['file_version']:08X} {node['blocks_received']:>6} {node['resumes']:>7} "
              f"{_fmt(node['version_reported_at'], ' s'):>9}  {status}", file=out)


# -- lorawan ----------------------------------------------------------------------------


def _loss_range(text: str) -> tuple[float, float]:
    """``LO-HI`` as probabilities (0.01-0.3) or percentages (1-30%%)."""
    lo_text, sep, hi_text = text.partition("-")
    if not sep:
        lo_text = hi_text = text
    try:
        lo, hi = (_probability(v if not text.endswith("%") or v.endswith("%") else v + "%")
                  for v in (lo_text, hi_text))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"--loss must be LO-HI, e.g. 0-0.3 or 1-30%%, got {text!r}") from None
    if lo > hi:
        raise argparse.ArgumentTypeError(f"--loss LO must not exceed HI, got {text!r}")
    return lo, hi


def _lorawan(args: argparse.Namespace) -> int:
    import asyncio

    from proxyota.simulation.lorawan import LorawanSimulation, run

    image = Path(args.image).read_bytes() if args.image else None
    sim = LorawanSimulation(
        nodes=args.nodes, loss_min=args.loss[0], loss_max=args.loss[1], burst=args.burst,
        dead=args.dead, image_size=args.image_size, image=image, region=args.region,
        dr=args.dr, version=args.version,
        fixed_redundancy=args.fixed_redundancy, seed=args.seed,
        uplink_period=args.uplink_period,
    )
    report = asyncio.run(run(sim))
    if args.json:
        json.dump(report, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print_lorawan_report(report)
    return 0 if report["updated"] == report["nodes"] - len(report["dead"]) else EXIT_NOT_ALL_UPDATED


def print_lorawan_report(r: dict[str, Any], out: Any = None) -> None:
    out = out or sys.stdout
    w = out.write
    w(f"LoRaWAN FUOTA campaign ({r['mode']}, TS004 v{r['version']}, {r['region']} DR{r['dr']}, "
      f"FragSize {r['frag_size']})\n")
    w(f"  nodes            {r['nodes']} ({len(r['dead'])} dead)\n")
    w(f"  updated          {r['updated']} (new firmware running, read from the emulated devices)\n")
    w(f"  failed           {len(r['failed'])}")
    if r["failed"]:
        reasons: dict[str, int] = {}
        for reason in r["failed"].values():
            reasons[str(reason)] = reasons.get(str(reason), 0) + 1
        w("  (" + ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items())) + ")")
    w("\n")
    w(f"  image            {r['image_bytes']} bytes -> NbFrag {r['nb_frag']}\n")
    w(f"  multicast sent   {r['fragments_sent']} fragments in {r['rounds']} round(s); "
      f"unicast {r['unicast_fragments']}\n")
    w(f"  bound            {r['bound']:.1f} = NbFrag / (1 - p_max {r['p_max']:.3f}); "
      f"efficiency {r['efficiency']:.3f}\n")
    gateway = sum(r.get("gateway_airtime_s", {}).values())
    w(f"  airtime          {_fmt(r['airtime_s'], ' s')} multicast, {_fmt(gateway, ' s')} all "
      f"gateway downlinks; network time {_fmt(r['network_time_s'] / 3600, ' h', 2)} (emulated)\n")
    w(f"  wall             {_fmt(r['wall_s'], ' s', 2)}\n")


@subcommand
def add_lorawan(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "lorawan", help="FUOTA campaign through ChirpStack's API against emulated ChirpStack + devices",
        description="Start an emulated ChirpStack v4 (gRPC + HTTP integration) with emulated end "
        "devices on an emulated clock, run a real campaign through proxyota's ChirpStack adapter "
        "over 127.0.0.1 (ephemeral ports) and report. Exit 0 when every live device runs the new "
        "firmware, 3 when some do not.")
    p.add_argument("--nodes", type=int, default=100, help="end devices (default 100)")
    p.add_argument("--loss", type=_loss_range, default=(0.0, 0.30), metavar="LO-HI",
                   help="per-device downlink loss, drawn uniformly in LO-HI (default 0-0.3)")
    p.add_argument("--burst", action="store_true",
                   help="Gilbert-Elliott burst losses (mean burst 4 frames) instead of independent")
    p.add_argument("--dead", type=int, default=0, help="devices that never answer (default 0)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image-size", type=int, default=50 * 1024,
                     help="bytes of a generated image (default 51200)")
    src.add_argument("--image", metavar="FILE", help="firmware payload to deliver")
    p.add_argument("--region", default="EU868", help="EU868 (default), US915, AU915, AS923-1, ...")
    p.add_argument("--dr", type=int, default=None,
                   help="multicast data rate (default: the region's class C default, RX2)")
    p.add_argument("--version", type=int, choices=(1, 2), default=1,
                   help="TS004 version: 1 = LoRaMac-node-like devices, 2 = LBM-like (default 1)")
    p.add_argument("--fixed-redundancy", type=float, metavar="PCT", default=None,
                   help="ChirpStack's built-in FUOTA instead: one round, PCT %% redundancy, no repair")
    p.add_argument("--uplink-period", type=float, default=300.0,
                   help="class A uplink period of the devices, s (default 300)")
    p.add_argument("--seed", type=int, default=1, help="seed of losses, keys and devices (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_lorawan)
