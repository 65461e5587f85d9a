"""Adaptive repair benchmark: 200 devices, NbFrag 1000, loss uniform 1-30 %, several seeds.

For each seeded campaign prints the multicast fragments sent, the bound NbFrag / (1 - p_max)
(p_max = the worst device's loss), the efficiency sent / bound against the issue's budget
1.10 x bound + 10, the rounds, unicast fragments and devices left incomplete; then what a
single fixed-redundancy round (ChirpStack FUOTA) leaves behind at 10 / 20 / 30 % and the
smallest fixed redundancy that would have reached every device of that draw (an oracle:
it is only known afterwards).

    .venv/bin/python benchmarks/repair.py [--seeds 10] [--real-seeds 2] [--quick]

``model`` rows decode with the overhead model; ``ts004`` rows run proxyota's TS004 v1
decoder in every device (1-byte fragments; ~10 s per campaign). ``ge`` rows use
Gilbert-Elliott bursts (mean burst 4, bad-state loss 0.9) with the same mean losses.
"""

from __future__ import annotations

import argparse
import statistics
import time

from proxyota.lorawan.repair import RepairPolicy, Stack
from proxyota.lorawan.repair_sim import (
    fixed_round_completion,
    simulate_campaign,
    uniform_losses,
)

DEVICES, NB_FRAG, LO, HI = 200, 1000, 0.01, 0.30


def campaign_rows(label: str, seeds: range, policy: RepairPolicy, **kw) -> list[float]:
    effs = []
    for seed in seeds:
        losses = uniform_losses(DEVICES, LO, HI, seed)
        t = time.perf_counter()
        r = simulate_campaign(NB_FRAG, losses, policy, seed, **kw)
        dt = time.perf_counter() - t
        effs.append(r.efficiency)
        ok = "ok" if r.multicast_sent <= r.limit and r.incomplete == 0 else "OVER"
        print(
            f"{label:<16} {seed:>4} {r.multicast_sent:>6} {r.bound:>7.1f} {r.limit:>7.1f} "
            f"{r.efficiency:>6.3f} {ok:>4} {r.rounds:>6} {r.unicast_sent:>7} "
            f"{r.incomplete:>5} {len(r.given_up):>6} {dt:>6.2f}s"
        )
    return effs


def fixed_rows(label: str, seeds: range, **kw) -> None:
    for seed in seeds:
        losses = uniform_losses(DEVICES, LO, HI, seed)
        done = fixed_round_completion(NB_FRAG, losses, seed, **kw)
        left = []
        for red in (0.10, 0.20, 0.30):
            n = NB_FRAG + round(red * NB_FRAG)
            left.append(sum(c is None or c > n for c in done))
        if any(c is None for c in done):
            oracle = "none"
        else:
            oracle = f"{(max(done) - NB_FRAG) / NB_FRAG:.0%} ({max(done)} frags)"
        print(f"{label:<16} {seed:>4} {left[0]:>8} {left[1]:>8} {left[2]:>8}   {oracle}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--real-seeds", type=int, default=2, help="campaigns with the real decoder")
    ap.add_argument("--quick", action="store_true", help="3 seeds, no real-decoder runs")
    args = ap.parse_args()
    seeds = range(3 if args.quick else args.seeds)
    real = range(0 if args.quick else args.real_seeds)

    print(f"{DEVICES} devices, NbFrag {NB_FRAG}, loss uniform {LO:.0%}-{HI:.0%}; "
          "budget = 1.10 x bound + 10, efficiency = multicast sent / bound\n")
    print(f"{'campaign':<16} {'seed':>4} {'sent':>6} {'bound':>7} {'budget':>7} {'eff':>6} "
          f"{'':>4} {'rounds':>6} {'unicast':>7} {'left':>5} {'failed':>6} {'wall':>7}")
    summary = {}
    summary["model, no prior"] = campaign_rows("model", seeds, RepairPolicy())
    summary["model, prior 0.3"] = campaign_rows("model prior=.3", seeds,
                                                RepairPolicy(prior_loss=0.3))
    summary["unknown stacks"] = campaign_rows("model unknown", seeds, RepairPolicy(),
                                              tell_stack=False)
    summary["loramac-node only"] = campaign_rows("model loramac", seeds, RepairPolicy(),
                                                 stacks=Stack.LORAMAC_NODE)
    summary["gilbert-elliott"] = campaign_rows("ge", seeds, RepairPolicy(), channel="ge")
    if real:
        summary["ts004 decoder"] = campaign_rows("ts004", real, RepairPolicy(), decoder="ts004",
                                                 frag_size=1)
    print("\nefficiency (multicast sent / bound): mean / max")
    for name, effs in summary.items():
        print(f"  {name:<20} {statistics.mean(effs):.3f} / {max(effs):.3f}")

    print("\nsingle fixed-redundancy round, no repair: devices left behind (of "
          f"{DEVICES}) and the smallest redundancy reaching all (oracle)")
    print(f"{'channel':<16} {'seed':>4} {'10 %':>8} {'20 %':>8} {'30 %':>8}   smallest")
    fixed_rows("model", seeds)
    fixed_rows("ge", seeds, channel="ge")
    if real:
        fixed_rows("ts004", real, decoder="ts004", frag_size=1)


if __name__ == "__main__":
    main()
