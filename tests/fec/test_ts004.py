"""TS004 parity code: known-answer vectors, the fast line generator against the spec's
pseudo-code, and decoder properties checked against an independent GF(2) rank oracle."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxyota.errors import InvalidArgument
from proxyota.fec import ts004
from proxyota.fec.blocks import MAX_FRAG_COUNTER

# Known-answer vectors: 100 bytes 0x00..0x63, FragSize 10, redundancy 10. The uncoded part is
# the data itself. Coded fragments copied from ChirpStack lrwn
# (lrwn/src/applayer/fragmentation/v1.rs and v2.rs, `test_encode`); the v1 set is identical
# in brocaar/lorawan applayer/fragmentation/encode_test.go.
KAT_DATA = bytes(range(100))
KAT_V1 = [
    "26262222 2e2e2222 2626",
    "54555657 58596a6b 7c7d",
    "5c5d6e6f 10110203 0405",
    "36363232 3e3e2222 3636",
    "3a3a0e0e 0a0a0606 0a0a",
    "0e0e3232 36362222 3e3e",
    "02020e0e 72727676 6262",
    "1e1e1a1a 66665a5a 4e4e",
    "1a1b1c1d 1e1f3031 2223",
    "22232425 26271819 0a0b",
]
KAT_V2 = [
    "68695253 5c5d7677 7071",
    "54555657 58596a6b 7c7d",
    "5c5d6e6f 10110203 0405",
    "6c6d6e6f 60614243 5455",
    "12132425 26272829 3a3b",
    "48497a7b 7c7d6e6f 7071",
    "1c1d2e2f 50515253 4445",
    "58595253 2c2d1617 0001",
    "1a1b1c1d 1e1f3031 2223",
    "00013a3b 44457e7f 6869",
]


def _hex(v: str) -> bytes:
    return bytes.fromhex(v.replace(" ", ""))


@pytest.mark.parametrize("version,expected", [(1, KAT_V1), (2, KAT_V2)])
@pytest.mark.parametrize("redundancy", [5, 10])
def test_known_answer_vectors(version: int, expected: list[str], redundancy: int) -> None:
    frags = ts004.encode(KAT_DATA, 10, redundancy, version=version)
    assert len(frags) == 10 + redundancy
    assert frags[:10] == [KAT_DATA[i : i + 10] for i in range(0, 100, 10)]
    assert frags[10:] == [_hex(v) for v in expected[:redundancy]]


def test_versions_differ() -> None:
    assert ts004.encode(KAT_DATA, 10, 10, version=1) != ts004.encode(KAT_DATA, 10, 10, version=2)


# -- the parity matrix -------------------------------------------------------------------

@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 64, 100, 128, 255, 256, 1000])
@pytest.mark.parametrize("version", [1, 2])
def test_fast_lines_match_reference(m: int, version: int) -> None:
    ks = [1, 2, 3, 10, 57, 1000, 8379, 8380, 9001, MAX_FRAG_COUNTER - m]
    ks = [k for k in ks if 1 <= k <= MAX_FRAG_COUNTER - m]
    fast = ts004.parity_matrix(ks, m, version)
    for row, k in zip(fast, ks):
        assert row.tolist() == [bool(b) for b in ts004.reference_line(k, m, version)], (m, k)


@pytest.mark.parametrize("m", [2, 3, 10, 64, 99, 1000])
def test_line_weights(m: int) -> None:
    ks = list(range(1, 60))
    v1 = ts004.parity_matrix(ks, m, 1).sum(axis=1)
    v2 = ts004.parity_matrix(ks, m, 2).sum(axis=1)
    assert (v2 == m // 2).all()  # v2: exactly floor(M/2) distinct coefficients
    assert (v1 <= m // 2).all() and (v1 >= 1).all()  # v1: repeats collapse


def test_prbs_uses_addition_for_large_seeds() -> None:
    # Above k = 8379 the seed exceeds 2**23 and (x >> 1) + b << 22 carries into bit 23,
    # which a bitwise OR would not: the reference definition keeps the addition.
    x = 1 + 1001 * 9000
    assert x >= 1 << 23
    assert ts004._prbs23(x) == (x >> 1) + (((x ^ (x >> 5)) & 1) << 22)


def test_nb_frag_one_gives_zero_coded_fragments() -> None:
    frags = ts004.encode(b"\x01\x02\x03", 3, 4)
    assert frags[0] == b"\x01\x02\x03"
    assert frags[1:] == [bytes(3)] * 4


def test_padding_and_nb_frag() -> None:
    assert ts004.padding(100, 10) == 0 and ts004.nb_frag(100, 10) == 10
    assert ts004.padding(101, 10) == 9 and ts004.nb_frag(101, 10) == 11
    frags = ts004.encode(b"\xff" * 101, 10, 0)
    assert len(frags) == 11 and frags[-1] == b"\xff" + bytes(9)


# -- an independent rank oracle ----------------------------------------------------------

def _oracle_rows(m: int, version: int, ns: list[int]) -> list[int]:
    rows = []
    for n in ns:
        if n <= m:
            rows.append(1 << (n - 1))
        else:
            line = ts004.reference_line(n - m, m, version)
            rows.append(sum(1 << j for j, b in enumerate(line) if b))
    return rows


def _rank_prefixes(rows: list[int]) -> list[int]:
    basis: dict[int, int] = {}
    ranks = []
    for r in rows:
        while r:
            h = r.bit_length() - 1
            if h in basis:
                r ^= basis[h]
            else:
                basis[h] = r
                break
        ranks.append(len(basis))
    return ranks


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    m=st.integers(1, 40),
    frag_size=st.integers(1, 16),
    extra=st.integers(0, 40),
    version=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**32 - 1),
    keep=st.floats(0.2, 1.0),
)
def test_decoder_completes_exactly_at_full_rank(m, frag_size, extra, version, seed, keep) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(m * frag_size - rng.randrange(frag_size))
    frags = ts004.encode(data, frag_size, extra, version=version)
    ns = [n for n in range(1, len(frags) + 1) if rng.random() < keep]
    rng.shuffle(ns)
    ranks = _rank_prefixes(_oracle_rows(m, version, ns))
    dec = ts004.Decoder(m, frag_size, version=version)
    for i, n in enumerate(ns):
        done = dec.push(n, frags[n - 1])
        assert dec.rank == ranks[i]
        assert done == (ranks[i] == m)
        # duplicates change nothing
        assert dec.push(n, frags[n - 1]) == done
        assert dec.received == i + 1
    if dec.complete:
        padded = data + bytes(ts004.padding(len(data), frag_size))
        assert dec.data == padded
    else:
        with pytest.raises(InvalidArgument):
            _ = dec.data
    assert dec.missing_uncoded == m - sum(1 for n in ns if n <= m)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(frag_size=st.integers(1, 242), size=st.integers(1, 600), version=st.sampled_from([1, 2]))
def test_round_trip_any_frag_size(frag_size: int, size: int, version: int) -> None:
    data = random.Random(size * 1000 + frag_size).randbytes(size)
    frags = ts004.encode(data, frag_size, 3, version=version)
    dec = ts004.Decoder(len(frags) - 3, frag_size, version=version)
    for n in reversed(range(1, len(frags) + 1)):
        if dec.push(n, frags[n - 1]):
            break
    assert dec.complete
    assert dec.data[: len(data)] == data


@pytest.mark.parametrize("m", [64, 128, 300])
@pytest.mark.parametrize("version", [1, 2])
def test_heavy_loss_recovers_with_small_overhead(m: int, version: int) -> None:
    rng = random.Random(m + version)
    data = rng.randbytes(m * 20)
    frags = ts004.encode(data, 20, m, version=version)
    dec = ts004.Decoder(m, 20, version=version)
    got = 0
    for n, f in enumerate(frags, 1):
        if rng.random() < 0.3:
            continue
        got += 1
        if dec.push(n, f):
            break
    assert dec.complete and dec.data == data
    assert got - m <= 20  # the code's overhead is a few fragments, not a fraction of M


def test_uncoded_after_coded_and_recovered_columns() -> None:
    m, fs = 30, 8
    rng = random.Random(7)
    data = rng.randbytes(m * fs)
    frags = ts004.encode(data, fs, 60)
    dec = ts004.Decoder(m, fs)
    for n in range(m + 1, m + 61):  # coded first
        dec.push(n, frags[n - 1])
    assert dec.complete and dec.data == data
    before = dec.received
    assert dec.push(1, frags[0]) is True  # counted after completion, nothing changes
    assert dec.received == before + 1 and dec.data == data


# -- bad input ---------------------------------------------------------------------------

def test_bad_push_changes_nothing() -> None:
    dec = ts004.Decoder(10, 10)
    frags = ts004.encode(KAT_DATA, 10, 5)
    dec.push(1, frags[0])
    state = (dec.received, dec.rank, dec.missing_uncoded)
    for n, payload in [
        (0, frags[1]),
        (MAX_FRAG_COUNTER + 1, frags[1]),
        (-3, frags[1]),
        (True, frags[1]),
        ("2", frags[1]),
        (2, frags[1][:9]),
        (2, frags[1] + b"\x00"),
        (2, "text"),
    ]:
        with pytest.raises(InvalidArgument):
            dec.push(n, payload)  # type: ignore[arg-type]
        assert (dec.received, dec.rank, dec.missing_uncoded) == state


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(data=b"", frag_size=10, redundancy=1),
        dict(data=b"x", frag_size=0, redundancy=1),
        dict(data=b"x", frag_size=256, redundancy=1),
        dict(data=b"x", frag_size=10, redundancy=-1),
        dict(data=b"x" * 10, frag_size=1, redundancy=MAX_FRAG_COUNTER),
        dict(data=b"x", frag_size=10, redundancy=1, version=3),
    ],
)
def test_bad_encode_arguments(kwargs) -> None:
    with pytest.raises(InvalidArgument):
        ts004.encode(**kwargs)


@pytest.mark.parametrize("args", [(0, 10), (MAX_FRAG_COUNTER + 1, 10), (10, 0), (10, 256)])
def test_bad_decoder_arguments(args) -> None:
    with pytest.raises(InvalidArgument):
        ts004.Decoder(*args)
    with pytest.raises(InvalidArgument):
        ts004.Decoder(10, 10, version=0)


def test_max_counter_is_accepted() -> None:
    m = 3
    frags = ts004.encode(b"abcdefghi", 3, MAX_FRAG_COUNTER - m)
    assert len(frags) == MAX_FRAG_COUNTER
    dec = ts004.Decoder(m, 3)
    dec.push(MAX_FRAG_COUNTER, frags[-1])
    assert dec.received == 1
    expected = np.array(ts004.reference_line(MAX_FRAG_COUNTER - m, m, 1), dtype=bool)
    assert (ts004.parity_line(MAX_FRAG_COUNTER - m, m) == expected).all()
