"""Reed–Solomon erasure code: docs/fec-rs.md examples, reedsolo cross-checks, decoder properties."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import reedsolo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxyota.errors import InvalidArgument, ProxyotaError
from proxyota.fec import blocks, rs

HYPO = settings(derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- docs/fec-rs.md, section 5 (worked example 1) ----------------------------------------
EX1_DATA = b"Hello, LoRa!"
EX1_FRAGS = [
    "48 65 6c 6c 6f",
    "2c 20 4c 6f 52",
    "61 21 00 00 00",
    "47 1e 58 74 11",
    "f2 dc 45 07 40",
]
EX1_P3_COLS = {0: ("36", "57"), 1: ("19", "5b"), 2: ("64", "b0")}
EX1_P3_ROW_HEADS = ["36 57 cb 52", "19 5b c1 90", "64 b0 39 b0"]
EX1_Y_PRIME = ["ec 19 fa fa a0", "ce 73 95 95 6c"]
EX1_A_INV = [[0xA0, 0x1D], [0x04, 0xDE]]

# --- docs/fec-rs.md, section 6 (worked example 2) ----------------------------------------
EX2_DATA = bytes((37 * i + 11) & 0xFF for i in range(513))
EX2_PARITY = {  # N: (group, position, bytes)
    258: (2, 85, "65 3d"),
    259: (0, 86, "63 8f"),
    260: (1, 86, "ef b3"),
    261: (2, 86, "21 9b"),
    262: (0, 87, "e0 dc"),
    263: (1, 87, "76 22"),
}


def _mul(a: int, b: int) -> int:
    return reedsolo.gf_mul(a, b)


def _fresh_field() -> None:
    reedsolo.init_tables(0x11D, 2, 8)


def _column(frags: list[bytes], ns: list[int], c: int) -> bytearray:
    return bytearray(frags[n - 1][c] for n in ns)


# ------------------------------------------------------------------------------------------
# the documented examples


def test_doc_example1_fragments():
    frags = rs.encode(EX1_DATA, 5, 2)
    assert [f.hex(" ") for f in frags] == EX1_FRAGS
    assert rs.group_count(3) == 1 and rs.data_in_group(0, 3) == 3


def test_doc_example1_generator_and_parity_matrix():
    _fresh_field()
    gen = bytes(reedsolo.rs_generator_poly(252, 0, 2))
    assert len(gen) == 253
    assert gen[:6].hex(" ") == "01 64 b0 39 b0 f2" and gen[-4:].hex(" ") == "7b 02 a7 40"
    p = rs.parity_matrix(3)
    assert p.shape == (3, 252)
    for j, (a, b) in EX1_P3_COLS.items():
        assert (int(p[j, 0]), int(p[j, 1])) == (int(a, 16), int(b, 16))
        assert p[j, :4].tobytes().hex(" ") == EX1_P3_ROW_HEADS[j]


def test_doc_example1_column0_arithmetic():
    _fresh_field()
    assert [_mul(0x36, 0x48), _mul(0x19, 0x2C), _mul(0x64, 0x61)] == [0xAC, 0xAB, 0x40]
    assert [_mul(0x57, 0x48), _mul(0x5B, 0x2C), _mul(0xB0, 0x61)] == [0xE6, 0x3C, 0x28]
    assert 0xAC ^ 0xAB ^ 0x40 == 0x47 and 0xE6 ^ 0x3C ^ 0x28 == 0xF2


def test_doc_example1_decode_steps():
    _fresh_field()
    frags = [bytes.fromhex(h) for h in EX1_FRAGS]
    y_prime = [
        bytes(a ^ _mul(0x19, b) for a, b in zip(frags[3], frags[1])),
        bytes(a ^ _mul(0x5B, b) for a, b in zip(frags[4], frags[1])),
    ]
    assert [y.hex(" ") for y in y_prime] == EX1_Y_PRIME
    a = [[0x36, 0x64], [0x57, 0xB0]]
    for i in range(2):  # A @ A^-1 = I
        for j in range(2):
            acc = _mul(a[i][0], EX1_A_INV[0][j]) ^ _mul(a[i][1], EX1_A_INV[1][j])
            assert acc == (1 if i == j else 0)
    x0 = bytes(_mul(0xA0, p) ^ _mul(0x1D, q) for p, q in zip(*y_prime))
    x2 = bytes(_mul(0x04, p) ^ _mul(0xDE, q) for p, q in zip(*y_prime))
    assert (x0, x2) == (frags[0], frags[2])
    dec = rs.Decoder(3, 5, 2)
    for n in (5, 2, 4):
        dec.push(n, frags[n - 1])
    assert dec.complete and dec.data == EX1_DATA + bytes(3)


def test_doc_example2_parity_fragments():
    assert EX2_DATA[:4].hex(" ") == "0b 30 55 7a"
    assert blocks.padding(len(EX2_DATA), 2) == 1
    frags = rs.encode(EX2_DATA, 2, 6)
    assert len(frags) == 263 and frags[256].hex(" ") == "0b 00"
    assert rs.group_count(257) == 3
    assert [rs.data_in_group(g, 257) for g in range(3)] == [86, 86, 85]
    assert rs.max_redundancy(257) == 508
    for n, (g, s, hexbytes) in EX2_PARITY.items():
        assert rs.locate(n, 257) == (g, s)
        assert frags[n - 1].hex(" ") == hexbytes


# ------------------------------------------------------------------------------------------
# layout


@pytest.mark.parametrize(
    "m, groups, ks",
    [(1, 1, [1]), (127, 1, [127]), (128, 2, [64, 64]), (254, 2, [127, 127]), (255, 3, [85, 85, 85]),
     (1000, 8, [125] * 8), (1001, 8, [126] + [125] * 7)],
)
def test_group_sizes(m, groups, ks):
    assert rs.group_count(m) == groups
    assert [rs.data_in_group(g, m) for g in range(groups)] == ks
    assert sum(ks) == m


@given(m=st.integers(1, 16383), r=st.integers(0, 16383), start=st.integers(1, 16383), length=st.integers(1, 2000))
@HYPO
def test_layout_properties(m, r, start, length):
    g_count = rs.group_count(m)
    r = min(r, rs.max_redundancy(m))
    assert rs.max_redundancy(m) == min(255 * g_count, 16383) - m
    if m <= 8191:
        assert rs.max_redundancy(m) >= m  # 100 % redundancy always fits
    ks = [rs.data_in_group(g, m) for g in range(g_count)]
    assert max(ks) <= 127 and min(ks) >= 1 and max(ks) - min(ks) <= 1
    # a data fragment sits below k_g, a parity fragment at or above it
    for n in {1, m, m + 1, m + r, min(start, m + r)}:
        if 1 <= n <= m + r:
            g, s = rs.locate(n, m, r)
            assert rs.group_of(n, m, r) == g == (n - 1) % g_count
            assert (s < ks[g]) == (n <= m) and s <= 254
    # parity shares and burst spread: every group floor/ceil of the count
    parity_per_group = [len([n for n in rs.fragments_of_group(g, m, r) if n > m]) for g in range(g_count)]
    assert sum(parity_per_group) == r and max(parity_per_group) - min(parity_per_group) <= 1
    last = m + r
    lo, hi = min(start, last), min(start + length - 1, last)
    hits = [0] * g_count
    for n in range(lo, hi + 1):
        hits[(n - 1) % g_count] += 1
    assert max(hits) - min(hits) <= 1


def test_fragments_of_group_lists_codeword_order():
    assert rs.fragments_of_group(2, 257, 6) == list(range(3, 264, 3))
    assert [rs.locate(n, 257)[1] for n in rs.fragments_of_group(2, 257, 6)] == list(range(87))


# ------------------------------------------------------------------------------------------
# fast path against reedsolo


@pytest.mark.parametrize("k", [1, 2, 3, 17, 64, 126, 127])
def test_parity_matrix_rows_are_reedsolo_unit_parities(k):
    _fresh_field()
    p = rs.parity_matrix(k)
    assert p.shape == (k, 255 - k) and not p.flags.writeable
    for j in sorted({0, 1 % k, k // 2, k - 1}):
        unit = bytearray(k)
        unit[j] = 1
        assert bytes(reedsolo.rs_encode_msg(unit, 255 - k, 0, 2)[k:]) == p[j].tobytes()


def test_field_survives_foreign_reedsolo_tables():
    rs._parity_matrix.cache_clear()
    reedsolo.init_tables(0x187, 2, 8)  # someone else switched reedsolo's global field
    try:
        frags = rs.encode(EX1_DATA, 5, 2)
    finally:
        _fresh_field()
    assert [f.hex(" ") for f in frags] == EX1_FRAGS


@st.composite
def block_params(draw, max_m=400):
    m = draw(st.one_of(st.just(1), st.integers(1, 127), st.integers(128, max_m)))
    f = draw(st.integers(1, 242))
    r = draw(st.integers(0, min(rs.max_redundancy(m), m // 2 + 6)))
    seed = draw(st.integers(0, 2**32 - 1))
    rnd = random.Random(seed)
    length = m * f - rnd.randrange(f)
    data = rnd.randbytes(length)
    return data, f, r, rnd


@given(block_params())
@settings(HYPO, max_examples=40)
def test_encode_matches_reedsolo_per_column(params):
    data, f, r, rnd = params
    frags = rs.encode(data, f, r)
    m = blocks.nb_frag(len(data), f)
    assert len(frags) == m + r and all(len(x) == f for x in frags)
    assert frags[:m] == blocks.split(data, f)
    _fresh_field()
    for g in range(rs.group_count(m)):
        k = rs.data_in_group(g, m)
        ns = rs.fragments_of_group(g, m, r)
        for c in {0, f - 1, rnd.randrange(f)}:
            codeword = reedsolo.rs_encode_msg(_column(frags, ns[:k], c), 255 - k, 0, 2)
            assert bytes(codeword[: len(ns)]) == bytes(_column(frags, ns, c))


def test_encode_is_prefix_stable():
    data = random.Random(7).randbytes(300 * 3 - 1)
    big = rs.encode(data, 3, 400)
    for r in (0, 1, 5, 120):
        assert rs.encode(data, 3, r) == big[: 300 + r]


def test_encode_large_block_multi_group():
    rnd = random.Random(3)
    data = rnd.randbytes(1000 * 239 - 17)
    frags = rs.encode(data, 239, 200)
    _fresh_field()
    for g in (0, 7):
        ns = rs.fragments_of_group(g, 1000, 200)
        codeword = reedsolo.rs_encode_msg(_column(frags, ns[:125], 100), 130, 0, 2)
        assert bytes(codeword[: len(ns)]) == bytes(_column(frags, ns, 100))


# ------------------------------------------------------------------------------------------
# decoder


def _expected(data: bytes, f: int) -> bytes:
    return b"".join(blocks.split(data, f))


@given(block_params(), st.booleans())
@settings(HYPO, max_examples=40)
def test_decoder_random_erasures_order_duplicates(params, pass_r):
    data, f, r, rnd = params
    frags = rs.encode(data, f, r)
    m = len(frags) - r
    g_count = rs.group_count(m)
    ks = [rs.data_in_group(g, m) for g in range(g_count)]
    # for each group keep between k_g - 1 and all of its fragments (some groups may stay short)
    kept: list[int] = []
    for g in range(g_count):
        ns = rs.fragments_of_group(g, m, r)
        want = rnd.randint(max(0, ks[g] - 1), len(ns)) if rnd.random() < 0.2 else rnd.randint(ks[g], len(ns))
        kept += rnd.sample(ns, min(want, len(ns)))
    stream = kept + rnd.sample(kept, min(len(kept), rnd.randint(0, 20)))  # duplicates
    rnd.shuffle(stream)
    dec = rs.Decoder(m, f, r if pass_r else None)
    counts = [0] * g_count
    seen: set[int] = set()
    for n in stream:
        done = dec.push(n, frags[n - 1])
        if n not in seen:
            seen.add(n)
            counts[(n - 1) % g_count] += 1
        expect = [max(0, k - c) for k, c in zip(ks, counts)]
        assert dec.needed_per_group() == expect
        assert done == dec.complete == all(e == 0 for e in expect)
        assert dec.received == len(seen)
        assert dec.missing_uncoded == len([n for n in range(1, m + 1) if n not in seen])
    if dec.complete:
        assert dec.data == _expected(data, f)
    else:
        with pytest.raises(InvalidArgument, match="not complete"):
            dec.data


@given(block_params(max_m=260))
@settings(HYPO, max_examples=12)
def test_decoder_agrees_with_reedsolo_erasure_decoding(params):
    data, f, r, rnd = params
    if r == 0:
        r = 3
    frags = rs.encode(data, f, r)
    m = len(frags) - r
    g_count = rs.group_count(m)
    dec = rs.Decoder(m, f, r)
    received: dict[int, list[int]] = {}
    for g in range(g_count):
        k = rs.data_in_group(g, m)
        ns = rs.fragments_of_group(g, m, r)
        received[g] = sorted(rnd.sample(ns, k))  # exactly k_g: the hardest case
        for n in received[g]:
            dec.push(n, frags[n - 1])
    assert dec.complete
    out = dec.data
    _fresh_field()
    g = rnd.randrange(g_count)
    k = rs.data_in_group(g, m)
    c = rnd.randrange(f)
    codeword = bytearray(255)
    got = {rs.locate(n, m)[1]: frags[n - 1][c] for n in received[g]}
    for s, v in got.items():
        codeword[s] = v
    erase = [s for s in range(255) if s not in got]
    msg, _, _ = reedsolo.rs_correct_msg(codeword, 255 - k, 0, 2, erase_pos=erase, only_erasures=True)
    rows = rs.fragments_of_group(g, m, 0)
    assert bytes(msg) == bytes(out[(n - 1) * f + c] for n in rows)


def test_decoder_is_mds_for_every_choice_of_k():
    data = random.Random(11).randbytes(3 * 4)
    frags = rs.encode(data, 4, 5)  # k = 3, n = 8
    for subset in itertools.combinations(range(1, 9), 3):
        dec = rs.Decoder(3, 4, 5)
        for n in subset[:-1]:
            assert dec.push(n, frags[n - 1]) is False
        assert dec.push(subset[-1], frags[subset[-1] - 1]) is True
        assert dec.data == data


def test_decoder_nbfrag_one_from_any_single_fragment():
    frags = rs.encode(b"\x7f\x00\xff", 3, 254)
    assert len(frags) == 255 and rs.max_redundancy(1) == 254
    for n in (1, 2, 100, 255):
        dec = rs.Decoder(1, 3)
        assert dec.push(n, frags[n - 1]) is True
        assert dec.data == b"\x7f\x00\xff"


def test_decoder_counts_and_late_fragments():
    frags = rs.encode(EX1_DATA, 5, 2)
    dec = rs.Decoder(3, 5, 2)
    assert (dec.received, dec.missing_uncoded, dec.needed, dec.complete) == (0, 3, 3, False)
    assert dec.push(4, frags[3]) is False
    assert (dec.received, dec.missing_uncoded, dec.needed_per_group()) == (1, 3, [2])
    assert dec.push(2, frags[1]) is False
    assert (dec.received, dec.missing_uncoded) == (2, 2)
    assert dec.push(2, frags[1]) is False  # duplicate
    assert dec.received == 2
    assert dec.push(5, frags[4]) is True
    assert (dec.received, dec.missing_uncoded, dec.needed) == (3, 2, 0)  # 1 and 3 recovered, not received
    assert dec.push(1, frags[0]) is True  # after completion: counted, harmless
    assert (dec.received, dec.missing_uncoded) == (4, 1)
    assert dec.data == EX1_DATA + bytes(3)


def test_decoder_layout_without_redundancy_accepts_repair_parity():
    data = random.Random(5).randbytes(300 * 2)
    frags = rs.encode(data, 2, rs.max_redundancy(300))
    dec = rs.Decoder(300, 2)  # no redundancy given: any N of the layout
    for n in range(len(frags), 0, -1):  # highest parity first
        dec.push(n, frags[n - 1])
        if dec.complete:
            break
    assert dec.complete and dec.data == data
    assert n == len(frags) - 299  # exactly 300 fragments: 100 per group
    assert dec.missing_uncoded == 300 and dec.received == 300


# ------------------------------------------------------------------------------------------
# bad input


def _state(dec: rs.Decoder):
    return (dec.received, dec.missing_uncoded, dec.needed_per_group(), dec.complete, bytes(dec._seen),
            dec._block.tobytes())


@pytest.mark.parametrize(
    "n, payload, match",
    [
        (0, b"\x00" * 5, "1..5"),
        (6, b"\x00" * 5, "1..5"),
        (16384, b"\x00" * 5, "1..5"),
        (-1, b"\x00" * 5, "1..5"),
        (True, b"\x00" * 5, "1..5"),
        ("1", b"\x00" * 5, "1..5"),
        (1, b"\x00" * 4, "4 bytes, FragSize is 5"),
        (1, b"\x00" * 6, "6 bytes, FragSize is 5"),
        (1, b"", "0 bytes"),
        (1, "hello", "must be bytes"),
        (1, None, "must be bytes"),
    ],
)
def test_push_rejects_bad_fragment_without_state_change(n, payload, match):
    frags = rs.encode(EX1_DATA, 5, 2)
    dec = rs.Decoder(3, 5, 2)
    dec.push(4, frags[3])
    before = _state(dec)
    with pytest.raises(InvalidArgument, match=match):
        dec.push(n, payload)
    assert _state(dec) == before
    dec.push(1, frags[0])
    dec.push(2, frags[1])
    assert dec.data == EX1_DATA + bytes(3)


def test_push_rejects_counter_beyond_14_bits():
    dec = rs.Decoder(16000, 1)
    assert dec._last == 16383
    before = _state(dec)
    with pytest.raises(InvalidArgument, match="1..16383"):
        dec.push(16384, b"\x00")
    assert _state(dec) == before
    with pytest.raises(InvalidArgument, match="1..765"):
        rs.Decoder(257, 2).push(766, b"\x00\x00")


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: rs.encode(b"", 5, 2), InvalidArgument, "empty"),
        (lambda: rs.encode(b"abc", 0, 2), InvalidArgument, "frag_size"),
        (lambda: rs.encode(b"abc", 256, 2), InvalidArgument, "frag_size"),
        (lambda: rs.encode(b"abc", 1, -1), InvalidArgument, "redundancy"),
        (lambda: rs.encode(b"abc", 1, 253), InvalidArgument, "exceeds the 252 parity"),
        (lambda: rs.encode(b"abc", 1, 1.5), InvalidArgument, "redundancy must be an int"),
        (lambda: rs.encode("abc", 1, 1), InvalidArgument, "data must be bytes"),
        (lambda: rs.encode(bytes(16000), 1, 384), InvalidArgument, "14-bit"),
        (lambda: rs.Decoder(0, 5), InvalidArgument, "NbFrag must be >= 1"),
        (lambda: rs.Decoder(3, 0), InvalidArgument, "frag_size"),
        (lambda: rs.Decoder(3, 256), InvalidArgument, "frag_size"),
        (lambda: rs.Decoder(3, 5, 253), InvalidArgument, "exceeds"),
        (lambda: rs.Decoder(16000, 5, 384), InvalidArgument, "14-bit"),
        (lambda: rs.Decoder(3, 5, -1), InvalidArgument, "redundancy"),
        (lambda: rs.Decoder("3", 5), InvalidArgument, "nb_frag"),
        (lambda: rs.group_of(0, 3, 2), InvalidArgument, "1..5"),
        (lambda: rs.group_of(6, 3, 2), InvalidArgument, "1..5"),
        (lambda: rs.group_of(16384, 16000), InvalidArgument, "1..16383"),
        (lambda: rs.data_in_group(3, 257), InvalidArgument, "group must be 0..2"),
        (lambda: rs.parity_matrix(128), InvalidArgument, "k must be 1..127"),
        (lambda: rs.group_count(0), InvalidArgument, "NbFrag"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match) as info:
        call()
    assert isinstance(info.value, ProxyotaError)


def test_data_before_complete_names_what_is_missing():
    dec = rs.Decoder(257, 2)
    dec.push(1, b"\x00\x00")
    with pytest.raises(InvalidArgument, match=r"256 more fragments needed \(per group \[85, 86, 85\]\)"):
        dec.data


def test_gf_solve_matches_numpy_free_reference():
    _fresh_field()
    rnd = random.Random(9)
    for u in (1, 2, 5):
        p = rs.parity_matrix(40)
        lost = rnd.sample(range(40), u)
        cols = rnd.sample(range(215), u)
        a = np.ascontiguousarray(p[np.ix_(lost, cols)].T)
        x = np.frombuffer(rnd.randbytes(u * 3), dtype=np.uint8).reshape(u, 3)
        y = np.zeros((u, 3), dtype=np.uint8)
        for i in range(u):
            for c in range(3):
                acc = 0
                for j in range(u):
                    acc ^= _mul(int(a[i, j]), int(x[j, c]))
                y[i, c] = acc
        assert np.array_equal(rs._gf_solve(a.copy(), y), x)
