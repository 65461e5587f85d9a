"""The device's own TS004 decoder.

External vectors: the coded fragments of ChirpStack v4 `lrwn/src/applayer/fragmentation/
v1.rs` and `v2.rs` `test_encode` (data 0..99, FragSize 10, redundancy 10 / 5; commit d77207cd
of chirpstack/chirpstack); the v1 vectors are also brocaar/lorawan
`applayer/fragmentation/encode_test.go` (commit a052dd3c)."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radio_emulators.lorawan.fragdecoder import (FragDecoder, Push, encode_fragments,
                                                 parity_line, prbs23)

DATA = bytes(range(100))
V1_CODED = [
    [0x26, 0x26, 0x22, 0x22, 0x2e, 0x2e, 0x22, 0x22, 0x26, 0x26],
    [0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x6a, 0x6b, 0x7c, 0x7d],
    [0x5c, 0x5d, 0x6e, 0x6f, 0x10, 0x11, 0x2, 0x3, 0x4, 0x5],
    [0x36, 0x36, 0x32, 0x32, 0x3e, 0x3e, 0x22, 0x22, 0x36, 0x36],
    [0x3a, 0x3a, 0xe, 0xe, 0xa, 0xa, 0x6, 0x6, 0xa, 0xa],
    [0xe, 0xe, 0x32, 0x32, 0x36, 0x36, 0x22, 0x22, 0x3e, 0x3e],
    [0x2, 0x2, 0xe, 0xe, 0x72, 0x72, 0x76, 0x76, 0x62, 0x62],
    [0x1e, 0x1e, 0x1a, 0x1a, 0x66, 0x66, 0x5a, 0x5a, 0x4e, 0x4e],
    [0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x30, 0x31, 0x22, 0x23],
    [0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x18, 0x19, 0xa, 0xb],
]
V2_CODED = [
    [0x68, 0x69, 0x52, 0x53, 0x5c, 0x5d, 0x76, 0x77, 0x70, 0x71],
    [0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x6a, 0x6b, 0x7c, 0x7d],
    [0x5c, 0x5d, 0x6e, 0x6f, 0x10, 0x11, 0x2, 0x3, 0x4, 0x5],
    [0x6c, 0x6d, 0x6e, 0x6f, 0x60, 0x61, 0x42, 0x43, 0x54, 0x55],
    [0x12, 0x13, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x3a, 0x3b],
    [0x48, 0x49, 0x7a, 0x7b, 0x7c, 0x7d, 0x6e, 0x6f, 0x70, 0x71],
    [0x1c, 0x1d, 0x2e, 0x2f, 0x50, 0x51, 0x52, 0x53, 0x44, 0x45],
    [0x58, 0x59, 0x52, 0x53, 0x2c, 0x2d, 0x16, 0x17, 0x0, 0x1],
    [0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x30, 0x31, 0x22, 0x23],
    [0x0, 0x1, 0x3a, 0x3b, 0x44, 0x45, 0x7e, 0x7f, 0x68, 0x69],
]
VECTORS = {1: V1_CODED, 2: V2_CODED}


@pytest.mark.parametrize("version", [1, 2])
def test_parity_lines_reproduce_chirpstack_vectors(version):
    frags = encode_fragments(DATA, 10, 10, version)
    assert frags[:10] == [DATA[i * 10:(i + 1) * 10] for i in range(10)]
    assert [list(f) for f in frags[10:]] == VECTORS[version]


@pytest.mark.parametrize("version", [1, 2])
def test_decode_chirpstack_vectors_with_losses(version):
    coded = [bytes(c) for c in VECTORS[version]]
    # lose uncoded fragments 2, 5 and 9 (1-based); recover from ChirpStack's coded fragments
    dec = FragDecoder(10, 10, matrix_version=version)
    for n in range(1, 11):
        if n not in (2, 5, 9):
            dec.push(n, DATA[(n - 1) * 10:n * 10])
    for k, frag in enumerate(coded, start=1):
        if dec.push(10 + k, frag) is Push.COMPLETE:
            break
    assert dec.complete and dec.data() == DATA


def test_matrices_differ_and_v2_rows_have_exactly_half():
    m = 100
    assert any(parity_line(k, m, 1) != parity_line(k, m, 2) for k in range(1, 20))
    for k in range(1, 50):
        assert bin(parity_line(k, m, 2)).count("1") == m // 2
        assert bin(parity_line(k, m, 1)).count("1") <= m // 2
    assert parity_line(1, 1, 1) == 0 and parity_line(3, 1, 2) == 0  # M = 1: all-zero rows
    assert prbs23(1) == 1 << 22
    with pytest.raises(ValueError):
        parity_line(0, 10, 1)


def _run(m, fs, version, loss, rng, in_order=False, shuffle=True, max_lost=None):
    data = rng.randbytes(m * fs)
    frags = encode_fragments(data, fs, m + 40, version)
    order = list(range(1, len(frags) + 1))
    if shuffle:
        rng.shuffle(order)
    dec = FragDecoder(m, fs, matrix_version=version, in_order=in_order, max_lost=max_lost)
    sent = 0
    for n in order:
        if rng.random() < loss:
            continue
        sent += 1
        if dec.push(n, frags[n - 1]) is Push.COMPLETE:
            break
    return dec, data


@pytest.mark.parametrize("version", [1, 2])
def test_random_order_random_loss_recovers(version):
    rng = random.Random(7 + version)
    for m in (1, 2, 3, 16, 33, 64, 150):
        dec, data = _run(m, 7, version, 0.2, rng)
        assert dec.complete, m
        assert dec.data() == data


@settings(derandomize=True, deadline=None, max_examples=40,
          suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 80), loss=st.floats(0, 0.5), seed=st.integers(0, 10_000),
       version=st.sampled_from([1, 2]))
def test_any_order_decoder_is_correct(m, loss, seed, version):
    rng = random.Random(seed)
    dec, data = _run(m, 5, version, loss, rng)
    if dec.complete:
        assert dec.data() == data
    else:  # not enough independent fragments: the rank says how many are needed
        assert dec.needed > 0


def test_late_uncoded_fragment_after_coded_ones():
    m, fs = 12, 4
    data = bytes(range(m * fs))
    frags = encode_fragments(data, fs, 30, 1)
    dec = FragDecoder(m, fs)
    for n in range(1, m + 1):
        if n not in (3, 4, 8):
            dec.push(n, frags[n - 1])
    dec.push(m + 1, frags[m])        # coded rows stored with columns 3, 4, 8 unknown
    dec.push(m + 2, frags[m + 1])
    assert dec.push(4, frags[3]) in (Push.NEW, Push.COMPLETE)   # late uncoded: eliminated
    k = 3
    while not dec.complete:
        dec.push(m + k, frags[m + k - 1])
        k += 1
    assert dec.data() == data


def test_in_order_drops_and_counts_like_loramac_node():
    m, fs = 10, 3
    frags = encode_fragments(bytes(range(30)), fs, 10, 1)
    dec = FragDecoder(m, fs, in_order=True)
    for n in (1, 2, 4, 5):                       # 3 skipped: lost = 1
        dec.push(n, frags[n - 1])
    assert dec.lost == 1 and dec.last_rx == 5
    assert dec.push(3, frags[2]) is Push.OUT_OF_ORDER   # late uncoded is dropped
    assert dec.last_counter == 3                 # but FragNbRx still shows it
    for n in (6, 7, 8, 9, 10):
        dec.push(n, frags[n - 1])
    assert dec.lbm_missing == 1                  # M - 10 + lost
    k = 11
    while not dec.complete:
        dec.push(k, frags[k - 1])
        k += 1
    assert dec.lost == 1                         # never lowered
    assert dec.lbm_missing == 0
    assert dec.data() == bytes(range(30))
    assert dec.push(20, frags[19]) is Push.FINISHED


def test_in_order_tail_loss_counted_at_first_coded():
    frags = encode_fragments(bytes(range(40)), 4, 10, 2)
    dec = FragDecoder(10, 4, matrix_version=2, in_order=True)
    for n in range(1, 8):
        dec.push(n, frags[n - 1])
    assert dec.lost == 0
    dec.push(12, frags[11])                      # 8, 9, 10 were lost
    assert dec.lost == 3 and dec.last_rx == 11
    assert dec.push(9, frags[8]) is Push.OUT_OF_ORDER


def test_lossless_in_order_leaves_lbm_missing_stale():
    frags = encode_fragments(bytes(range(20)), 2, 0, 2)
    dec = FragDecoder(10, 2, matrix_version=2, in_order=True)
    for n in range(1, 11):
        r = dec.push(n, frags[n - 1])
    assert r is Push.COMPLETE
    assert dec.lbm_missing == 1                  # LBM returns before updating MissingFrag


def test_matrix_error_and_memory_limits():
    frags = encode_fragments(bytes(range(60)), 3, 10, 1)
    dec = FragDecoder(20, 3, in_order=True, max_lost=2)
    for n in (1, 5):                             # 2, 3, 4 lost -> 3 > 2
        dec.push(n, frags[n - 1])
    assert dec.push(21, frags[20]) is Push.MATRIX_ERROR
    assert dec.matrix_error and dec.finished
    junk = dec.best_effort()
    assert junk[:3] == frags[0] and junk[3:6] == b"\xff\xff\xff"
    # any-order decoder: coded fragments dropped while too much is missing, then used
    dec2 = FragDecoder(20, 3, max_lost=2)
    assert dec2.push(21, frags[20]) is Push.MEMORY and dec2.memory_error
    for n in range(1, 19):
        dec2.push(n, frags[n - 1])
    k = 21
    while not dec2.complete:
        assert dec2.push(k, frags[k - 1]) is not Push.MEMORY
        k += 1
    assert dec2.data() == bytes(range(60))


def test_duplicates_and_bad_input():
    frags = encode_fragments(bytes(range(12)), 3, 4, 1)
    dec = FragDecoder(4, 3)
    assert dec.push(1, frags[0]) is Push.NEW
    assert dec.push(1, frags[0]) is Push.USELESS
    assert dec.received == 1
    with pytest.raises(ValueError):
        dec.push(2, b"\x00")
    with pytest.raises(ValueError):
        dec.push(0, frags[0])
    with pytest.raises(ValueError):
        dec.data()
    with pytest.raises(ValueError):
        FragDecoder(0, 10)
    with pytest.raises(ValueError):
        encode_fragments(b"12345", 10, 1, 1)
