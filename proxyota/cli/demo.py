"""``proxyota demo``: what ``make demo`` runs — the main job end to end on emulated radios.

1. The FEC path: a synthetic image FEC-coded (TS004 v1, v2, Reed-Solomon), broadcast over a
   seeded lossy channel to many receivers, decoded and checked byte for byte.
2. A LoRaWAN FUOTA campaign: proxyota's ChirpStack adapter (gRPC + HTTP integration on
   127.0.0.1) against an emulated ChirpStack with emulated end devices, adaptive repair,
   TS006 reboot and version check; ground truth read from the emulated devices.
3. A Zigbee OTA campaign through zigpy and proxyota's OTA server against an emulated mesh.

Everything runs on emulated time: hours on air pass in seconds.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import tomllib
from pathlib import Path

from rich.console import Console
from rich.table import Table

from proxyota.errors import InvalidArgument
from proxyota.fec import roundtrip

DEFAULTS = {
    "seed": 1,
    "image_size": 64 * 1024,
    "frag_size": 48,
    "receivers": 50,
    "loss_min": 0.01,
    "loss_max": 0.30,
    "lorawan_nodes": 30,
    "lorawan_image_size": 16 * 1024,
    "lorawan_dead": 1,
    "zigbee_nodes": 20,
    "zigbee_image_size": 8 * 1024,
}


def load_settings(path: str | None, overrides: dict[str, object]) -> argparse.Namespace:
    """Defaults, then the ``[demo]`` table of the TOML file, then command-line flags.
    Unknown keys and wrong types are errors that name the key."""
    settings = dict(DEFAULTS)
    if path is not None:
        try:
            doc = tomllib.loads(Path(path).read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InvalidArgument(f"{path}: not valid TOML: {exc}") from None
        table = doc.get("demo", {})
        if not isinstance(table, dict):
            raise InvalidArgument(f"{path}: [demo] must be a table")
        for key, value in table.items():
            if key not in DEFAULTS:
                raise InvalidArgument(f"{path}: unknown key demo.{key}")
            want = type(DEFAULTS[key])
            if isinstance(value, bool) or not isinstance(value, (want, int)):
                raise InvalidArgument(f"{path}: demo.{key} must be a {want.__name__}")
            settings[key] = want(value)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if not 0 <= settings["loss_min"] <= settings["loss_max"] < 1:
        raise InvalidArgument("demo.loss_min <= demo.loss_max < 1 is required")
    for key in ("image_size", "frag_size", "receivers", "lorawan_image_size",
                "zigbee_image_size"):
        if settings[key] < 1:
            raise InvalidArgument(f"demo.{key} must be >= 1")
    return argparse.Namespace(**settings)


def _run(cli: argparse.Namespace) -> int:
    args = load_settings(cli.config, {k: getattr(cli, k, None) for k in DEFAULTS})
    # a pipe (make, CI logs) gets a fixed width wide enough for the table
    console = Console(width=None if sys.stdout.isatty() else 110)
    rng = random.Random(args.seed)
    image = rng.randbytes(args.image_size)
    losses = [rng.uniform(args.loss_min, args.loss_max) for _ in range(args.receivers)]
    console.print(
        f"[bold]proxyota demo[/bold]: a {len(image)}-byte image, FragSize {args.frag_size}, "
        f"{args.receivers} receivers with loss {args.loss_min:.0%}-{args.loss_max:.0%} "
        f"(seed {args.seed})"
    )
    table = Table(title="FEC round trip: send until every receiver decodes "
                        "(bound = NbFrag / (1 - p_max); overhead = mean fragments beyond NbFrag)")
    for col in ("code", "NbFrag", "sent", "bound", "sent/bound", "overhead",
                "decoded", "identical", "wall s"):
        table.add_column(col, justify="right")
    ok = True
    for scheme, version in (("ts004", 1), ("ts004", 2), ("rs", 1)):
        t0 = time.perf_counter()
        res = roundtrip.run(image, scheme=scheme, version=version, frag_size=args.frag_size,
                            losses=losses, seed=args.seed)
        wall = time.perf_counter() - t0
        ok &= res.identical == res.receivers
        table.add_row(res.scheme, str(res.nb_frag), str(res.sent), f"{res.bound:.1f}",
                      f"{res.efficiency:.3f}", f"{res.mean_overhead:.2f}",
                      f"{res.complete}/{res.receivers}", f"{res.identical}/{res.receivers}",
                      f"{wall:.2f}")
    console.print(table)
    console.print("[green]all receivers rebuilt the image byte for byte[/green]" if ok
                  else "[red]some receivers did not rebuild the image[/red]")
    if args.lorawan_nodes:
        ok &= _lorawan(console, args)
    if args.zigbee_nodes:
        ok &= _zigbee(console, args)
    return 0 if ok else 1


def _lorawan(console: Console, args: argparse.Namespace) -> bool:
    import asyncio

    from proxyota.cli.simulate import print_lorawan_report
    from proxyota.simulation.lorawan import LorawanSimulation, run

    console.rule("LoRaWAN FUOTA: proxyota -> ChirpStack API (gRPC, HTTP) -> emulated network")
    r = asyncio.run(run(LorawanSimulation(
        nodes=args.lorawan_nodes, loss_min=args.loss_min, loss_max=args.loss_max,
        dead=args.lorawan_dead, image_size=args.lorawan_image_size, dr=5, seed=args.seed)))
    print_lorawan_report(r, out=console.file)
    return r["updated"] == r["nodes"] - len(r["dead"])


def _zigbee(console: Console, args: argparse.Namespace) -> bool:
    from proxyota.cli.simulate import print_zigbee_report
    from proxyota.simulation.zigbee import ZigbeeSimulation, run

    console.rule("Zigbee OTA: proxyota -> zigpy -> emulated mesh (sleepy nodes, 4 hops)")
    r = run(ZigbeeSimulation(nodes=args.zigbee_nodes, sleepy=max(1, args.zigbee_nodes // 6),
                             image_size=args.zigbee_image_size, seed=args.seed))
    print_zigbee_report(r, out=console.file)
    return not r["failed"] and r["updated"] == r["nodes"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the main job end to end on emulated radios")
    p.add_argument("--config", help="TOML file with a [demo] table (configs/demo.toml)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--frag-size", type=int)
    p.add_argument("--receivers", type=int)
    p.add_argument("--loss-min", type=float)
    p.add_argument("--loss-max", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--lorawan-nodes", type=int, help="0 skips the LoRaWAN campaign")
    p.add_argument("--zigbee-nodes", type=int, help="0 skips the Zigbee campaign")
    p.set_defaults(func=_run)
