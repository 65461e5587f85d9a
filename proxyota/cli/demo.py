"""``proxyota demo``: what ``make demo`` runs — the main job end to end on emulated radios.

Today that is the FEC path: a synthetic firmware image is FEC-coded, broadcast over a seeded
lossy channel to many receivers, decoded, and checked byte for byte, for each code.
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
    for key in ("image_size", "frag_size", "receivers"):
        if settings[key] < 1:
            raise InvalidArgument(f"demo.{key} must be >= 1")
    return argparse.Namespace(**settings)


def _run(cli: argparse.Namespace) -> int:
    args = load_settings(cli.config, {k: getattr(cli, k) for k in DEFAULTS})
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
    return 0 if ok else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the main job end to end on emulated radios")
    p.add_argument("--config", help="TOML file with a [demo] table (configs/demo.toml)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--frag-size", type=int)
    p.add_argument("--receivers", type=int)
    p.add_argument("--loss-min", type=float)
    p.add_argument("--loss-max", type=float)
    p.add_argument("--seed", type=int)
    p.set_defaults(func=_run)
