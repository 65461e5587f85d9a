"""LoRaWAN campaign benchmark, end to end on emulated radios (real gRPC + HTTP on loopback,
emulated time): proxyota's adaptive repair against ChirpStack's built-in FUOTA (one round with
a fixed redundancy, no repair).

    .venv/bin/python benchmarks/lorawan_campaign.py [--nodes 200] [--nb-frag 1000] [--seed 1]

Prints the efficiency (multicast fragments sent / bound, bound = NbFrag / (1 - p_max)) of the
adaptive campaign and, side by side, how many devices a single fixed-redundancy round leaves
behind at 10 / 20 / 30 % and the smallest fixed redundancy updating every device.
Goal: efficiency <= 1.10 with 100 % updated.

The fixed-redundancy figures come from ONE campaign with ChirpStack's behaviour at a high
redundancy: each emulated device's decoder records the fragment counter at which its block
completed, and since the fragments go out in the same order over the same seeded channels,
a round of r % would have completed exactly the devices whose counter is <= NbFrag·(1 + r).
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
    ap.add_argument("--fixed-max", type=float, default=100.0,
                    help="redundancy %% of the single fixed round measured (default 100)")
    args = ap.parse_args()
    # a generated image of exactly NbFrag fragments (the emulator's test image adds a 16-byte
    # header and a 32-byte SHA-256 trailer to the payload)
    image_size = args.nb_frag * args.frag_size - 48
    base = dict(nodes=args.nodes, loss_min=0.01, loss_max=0.30, image_size=image_size,
                dr=args.dr, seed=args.seed, frag_size=args.frag_size)
    t0 = time.perf_counter()
    r = asyncio.run(run(LorawanSimulation(**base)))
    print(f"{args.nodes} devices, loss uniform 1-30 %, NbFrag {r['nb_frag']}, FragSize "
          f"{r['frag_size']}, EU868 DR{r['dr']}, seed {args.seed}", flush=True)
    print(f"adaptive repair:  updated {r['updated']}/{args.nodes}, multicast {r['fragments_sent']}, "
          f"unicast {r['unicast_fragments']}, rounds {r['rounds']}, bound {r['bound']:.1f}, "
          f"efficiency {r['efficiency']:.3f} (goal <= 1.10, ratio {r['efficiency'] / 1.10:.3f}), "
          f"network time {r['network_time_s'] / 3600:.1f} h, wall {r['wall_s']:.0f} s", flush=True)

    completed = _record_completions()
    f = asyncio.run(run(LorawanSimulation(**base, fixed_redundancy=args.fixed_max)))
    m = f["nb_frag"]
    counters = sorted(completed)
    never = args.nodes - len(counters)
    print(f"ChirpStack-style single round, no repair (one {args.fixed_max:g} % run: "
          f"{len(counters)} blocks completed, {never} never):", flush=True)
    for pct in (10, 20, 30):
        limit = m * (1 + pct / 100)
        behind = never + sum(1 for c in counters if c > limit)
        print(f"  {pct:3d} %: {int(limit)} fragments, left behind {behind}/{args.nodes}")
    if never == 0:
        need = counters[-1]
        print(f"  smallest fixed redundancy completing every block: {100 * (need - m) / m:.1f} % "
              f"({need} fragments, {need / r['bound']:.3f} x bound) vs adaptive "
              f"{r['efficiency']:.3f} x bound (known only after the fact)")
    else:
        print(f"  {never} devices did not complete even at {args.fixed_max:g} %")
    print(f"total wall {time.perf_counter() - t0:.0f} s")


def _record_completions() -> list[int]:
    """Instrument the emulated devices' decoders: the counter at which each block completed."""
    from radio_emulators.lorawan.fragdecoder import FragDecoder, Push

    completed: list[int] = []
    original = FragDecoder.push

    def push(self, n, fragment):  # type: ignore[no-untyped-def]
        result = original(self, n, fragment)
        if result is Push.COMPLETE:
            completed.append(n)
        return result

    FragDecoder.push = push  # type: ignore[method-assign]
    return completed


if __name__ == "__main__":
    main()
