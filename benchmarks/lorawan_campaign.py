"""LoRaWAN campaign benchmark, end to end on emulated radios (real gRPC + HTTP on loopback,
emulated time): proxyota's adaptive repair against ChirpStack's built-in FUOTA (one round with
a fixed redundancy, no repair).

    .venv/bin/python benchmarks/lorawan_campaign.py [--nodes 200] [--nb-frag 1000] [--seed 1]

Prints the efficiency (multicast fragments sent / bound, bound = NbFrag / (1 - p_max)) of the
adaptive campaign and, side by side, how many devices a single fixed-redundancy round leaves
behind at 10 / 20 / 30 % and the smallest fixed redundancy (5 % steps) updating every device.
Goal: efficiency <= 1.10 with 100 % updated.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from proxyota.simulation.lorawan import LorawanSimulation, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--nb-frag", type=int, default=1000)
    ap.add_argument("--frag-size", type=int, default=48, help="EU868 DR0-2 maximum (default 48)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dr", type=int, default=5, help="multicast DR (pacing only; default 5)")
    ap.add_argument("--max-fixed", type=int, default=80, help="highest fixed %% tried")
    args = ap.parse_args()
    # a generated image of exactly NbFrag fragments (the emulator's image header is 16 B and a
    # SHA-256 trailer 32 B are part of the block)
    image_size = args.nb_frag * args.frag_size - 48
    base = dict(nodes=args.nodes, loss_min=0.01, loss_max=0.30, image_size=image_size,
                dr=args.dr, seed=args.seed, frag_size=args.frag_size)
    t0 = time.perf_counter()
    r = asyncio.run(run(LorawanSimulation(**base)))
    print(f"{args.nodes} devices, loss uniform 1-30 %, NbFrag {r['nb_frag']}, FragSize "
          f"{r['frag_size']}, EU868 DR{r['dr']}, seed {args.seed}")
    print(f"adaptive repair:  updated {r['updated']}/{args.nodes}, multicast {r['fragments_sent']}, "
          f"unicast {r['unicast_fragments']}, rounds {r['rounds']}, bound {r['bound']:.1f}, "
          f"efficiency {r['efficiency']:.3f} (goal <= 1.10, ratio {r['efficiency'] / 1.10:.3f}), "
          f"network time {r['network_time_s'] / 3600:.1f} h, wall {r['wall_s']:.0f} s")
    print("ChirpStack-style single round, fixed redundancy, no repair:")
    smallest = None
    for pct in [10, 20, 30] + list(range(35, args.max_fixed + 1, 5)):
        f = asyncio.run(run(LorawanSimulation(**base, fixed_redundancy=float(pct))))
        behind = args.nodes - f["updated"]
        if pct in (10, 20, 30):
            print(f"  {pct:3d} %: sent {f['fragments_sent']}, left behind {behind}/{args.nodes}")
        if behind == 0:
            smallest = (pct, f["fragments_sent"])
            break
    if smallest:
        print(f"  smallest fixed redundancy updating all: {smallest[0]} % ({smallest[1]} fragments, "
              f"{smallest[1] / r['bound']:.3f} x bound) vs adaptive {r['efficiency']:.3f} x bound")
    else:
        print(f"  no fixed redundancy up to {args.max_fixed} % updated every device")
    print(f"total wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
