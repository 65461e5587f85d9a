"""FEC benchmark: speed of the TS004 parity code and the Reed-Solomon code, and the parity
code's decoding overhead. Prints each figure with its target and the ratio figure/target.

    .venv/bin/python benchmarks/fec.py [--trials 200] [--quick]

Targets (2-core machine): encode 1 MiB at FragSize 239 with 20 % redundancy < 0.5 s; decode
NbFrag = 4000 at 30 % loss < 2 s; mean decoding overhead <= 2.5 fragments.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np

from proxyota.fec import rs, ts004


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def row(name: str, value: float, unit: str, target: float | None) -> None:
    if target is None:
        print(f"  {name:<58} {value:10.3f} {unit}")
    else:
        print(f"  {name:<58} {value:10.3f} {unit}   target < {target:g} {unit}   "
              f"ratio {value / target:.2f}")


def bench_encode(version: int) -> float:
    data = random.Random(1).randbytes(1 << 20)
    red = -(-ts004.nb_frag(len(data), 239) * 20 // 100)
    return best_of(lambda: ts004.encode(data, 239, red, version=version))


def decode_run(m: int, loss: float, version: int, seed: int, frag_size: int = 239):
    """(seconds spent in push, fragments received at completion)."""
    rng = random.Random(seed)
    data = rng.randbytes(m * frag_size)
    frags = ts004.encode(data, frag_size, m, version=version)
    dec = ts004.Decoder(m, frag_size, version=version)
    got = 0
    t0 = time.perf_counter()
    for n, f in enumerate(frags, 1):
        if rng.random() < loss:
            continue
        got += 1
        if dec.push(n, f):
            break
    elapsed = time.perf_counter() - t0
    assert dec.complete and dec.data == data
    return elapsed, got


def overhead_trials(m: int, loss: float, version: int, trials: int) -> list[int]:
    """Fragments needed beyond NbFrag, over seeded random erasure patterns."""
    frag_size = 4  # the overhead does not depend on the fragment size
    data = random.Random(m).randbytes(m * frag_size)
    frags = ts004.encode(data, frag_size, min(3 * m, 16383 - m), version=version)
    out = []
    for seed in range(trials):
        rng = random.Random(seed * 7919 + m)
        dec = ts004.Decoder(m, frag_size, version=version)
        got = 0
        for n, f in enumerate(frags, 1):
            if rng.random() < loss:
                continue
            got += 1
            if dec.push(n, f):
                break
        assert dec.complete
        out.append(got - m)
    return out


def bench_rs(m: int, frag_size: int = 239, loss: float = 0.2) -> tuple[float, float, int, int]:
    """RS encode and decode time at NbFrag = m with 20 % redundancy, decoding from exactly
    the k_g fragments each group needs (overhead 0), chosen at random among those sent."""
    rng = random.Random(3)
    data = rng.randbytes(m * frag_size)
    red = -(-m * 20 // 100)
    enc_t = best_of(lambda: rs.encode(data, frag_size, red))
    frags = rs.encode(data, frag_size, red)
    chosen: list[int] = []
    for g in range(rs.group_count(m)):
        members = rs.fragments_of_group(g, m, red)
        chosen += rng.sample(members, rs.data_in_group(g, m))
    rng.shuffle(chosen)

    def decode() -> int:
        dec = rs.Decoder(m, frag_size, red)
        for n in chosen:
            dec.push(n, frags[n - 1])
        assert dec.complete and dec.data == data
        return dec.received

    used = decode()
    dec_t = best_of(decode)
    lost = sum(1 for n in chosen if n > m)
    return enc_t, dec_t, used, lost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="fewer trials, for a smoke run")
    args = ap.parse_args()
    trials = 20 if args.quick else args.trials

    print("TS004 parity code (FragAlgo 0)")
    for v in (1, 2):
        row(f"v{v} encode 1 MiB, FragSize 239, 20 % redundancy", bench_encode(v), "s", 0.5)
    for v in (1, 2):
        for m in (1000, 4000):
            t, got = decode_run(m, 0.30, v, seed=m)
            row(f"v{v} decode NbFrag={m}, 30 % loss ({got - m} overhead)", t, "s",
                2.0 if m == 4000 else None)
    print(f"\nTS004 decoding overhead, fragments beyond NbFrag ({trials} seeded trials each)")
    for v in (1, 2):
        for m in (100, 1000):
            for loss in (0.10, 0.30):
                o = overhead_trials(m, loss, v, trials)
                p95 = float(np.percentile(o, 95))
                print(f"  v{v} NbFrag={m:<5} loss {loss:.0%}: mean {statistics.mean(o):5.2f}  "
                      f"p95 {p95:5.1f}  max {max(o):3d}   target mean <= 2.5   "
                      f"ratio {statistics.mean(o) / 2.5:.2f}")
    print("\nReed-Solomon erasure code (MDS per group; docs/fec-rs.md)")
    enc_t, dec_t, used, parity = bench_rs(1000)
    row("encode NbFrag=1000, FragSize 239, 20 % redundancy", enc_t, "s", None)
    row(f"decode NbFrag=1000 from {used} fragments, {parity} of them parity "
        f"(overhead {used - 1000})", dec_t, "s", None)


if __name__ == "__main__":
    main()
