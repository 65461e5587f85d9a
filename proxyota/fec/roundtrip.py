"""An FEC round trip over a lossy broadcast: image -> fragments -> per-receiver erasures
-> decoders -> byte-identical check.

Fragments are sent in counter order (uncoded first, then coded) until every receiver's
decoder completes, like a rateless multicast; each receiver drops each fragment with its own
probability (seeded). The result states how many fragments were sent against the bound an
ideal erasure code needs for the worst receiver, NbFrag / (1 - p_max).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from proxyota.errors import InvalidArgument
from proxyota.fec import blocks
from proxyota.fec.blocks import ErasureDecoder


@dataclass(frozen=True)
class RoundTripResult:
    scheme: str
    nb_frag: int
    frag_size: int
    receivers: int
    p_max: float
    sent: int
    complete: int
    identical: int
    mean_overhead: float

    @property
    def bound(self) -> float:
        return self.nb_frag / (1 - self.p_max)

    @property
    def efficiency(self) -> float:
        return self.sent / self.bound


def run(
    image: bytes,
    *,
    scheme: str = "ts004",
    version: int = 1,
    frag_size: int = 48,
    losses: list[float],
    seed: int = 1,
    max_redundancy: float = 1.0,
) -> RoundTripResult:
    """Broadcast ``image`` to ``len(losses)`` receivers with those loss rates."""
    if not losses or any(not 0 <= p < 1 for p in losses):
        raise InvalidArgument("losses must be a non-empty list of rates in [0, 1)")
    nb = blocks.nb_frag(len(image), frag_size)
    redundancy = min(blocks.MAX_FRAG_COUNTER - nb, max(1, int(nb * max_redundancy)))
    if scheme == "ts004":
        from proxyota.fec import ts004

        frags = ts004.encode(image, frag_size, redundancy, version=version)
        decoders: list[ErasureDecoder] = [ts004.Decoder(nb, frag_size, version=version)
                                          for _ in losses]
        label = f"ts004 v{version}"
    elif scheme == "rs":
        from proxyota.fec import rs

        frags = rs.encode(image, frag_size, redundancy)
        decoders = [rs.Decoder(nb, frag_size, redundancy) for _ in losses]  # same protocol
        label = "rs"
    else:
        raise InvalidArgument(f"unknown FEC scheme {scheme!r}")
    rng = random.Random(seed)
    pending = set(range(len(losses)))
    got = [0] * len(losses)
    overhead = [0] * len(losses)
    sent = 0
    for n, payload in enumerate(frags, start=1):
        if not pending:
            break
        sent += 1
        for i in list(pending):
            if rng.random() < losses[i]:
                continue
            got[i] += 1
            if decoders[i].push(n, payload):
                pending.discard(i)
                overhead[i] = got[i] - nb
    want = hashlib.sha256(image).digest()
    identical = sum(
        1 for d in decoders if d.complete and hashlib.sha256(d.data[: len(image)]).digest() == want
    )
    done = [i for i in range(len(losses)) if decoders[i].complete]
    return RoundTripResult(
        scheme=label,
        nb_frag=nb,
        frag_size=frag_size,
        receivers=len(losses),
        p_max=max(losses),
        sent=sent,
        complete=len(done),
        identical=identical,
        mean_overhead=sum(overhead[i] for i in done) / len(done) if done else float("nan"),
    )
