"""The LoRa Alliance TS004 parity code (FragAlgo 0): encoder and an any-order decoder.

Fragment counter ``N`` is 1-based. ``N = 1..M`` (``M`` = NbFrag) are the uncoded fragments;
coded fragment ``N = M + k`` (``k >= 1``) is the XOR of the uncoded fragments ``j`` (0-based)
for which line ``k`` of the parity matrix has a one. Line ``k`` is drawn from the PRBS23
generator seeded with ``1 + 1001 * k``:

* v1 (TS004 v1.0.0, LoRaMac-node, brocaar/lorawan, ChirpStack ``lrwn`` v1): ``M // 2`` draws,
  repeated draws collapse (~0.39·M ones);
* v2 (TS004 v2.0.0, LoRa Basics Modem, ChirpStack ``lrwn`` v2): draws until exactly
  ``M // 2`` distinct columns are set.

A draw is ``r = x % (M + mm)`` after one PRBS23 step, redrawn while ``r >= M``; ``mm = 1``
when ``M`` is a power of two (``M = 1`` included), else 0. The PRBS23 step is
``(x >> 1) + ((x ^ (x >> 5)) & 1) << 22`` — an addition, as in every reference
implementation, which differs from a bitwise OR only for seeds above 2**23 (k > 8379).

Speed: parity lines are generated for many ``k`` at once (lock-step numpy over lines),
coefficient rows are bit-packed into uint64 words, and the decoder keeps its basis in
reduced row-echelon form so that each fragment costs a constant number of numpy
operations, never a per-bit Python loop.
"""

from __future__ import annotations

import numpy as np

from proxyota.errors import InvalidArgument
from proxyota.fec.blocks import (
    MAX_FRAG_COUNTER,
    check_counts,
    check_frag_size,
    nb_frag,
    padding,
    split,
)

__all__ = [
    "VERSIONS",
    "Decoder",
    "encode",
    "nb_frag",
    "padding",
    "parity_line",
    "parity_matrix",
]

VERSIONS = (1, 2)
_PRBS_MASK_BIT = 1 << 22


def _check_version(version: int) -> None:
    if version not in VERSIONS:
        raise InvalidArgument(f"TS004 parity version must be 1 or 2, got {version!r}")


def _prbs23(x: int) -> int:
    return (x >> 1) + (((x ^ (x >> 5)) & 1) << 22)


def reference_line(k: int, m: int, version: int = 1) -> list[int]:
    """Line ``k`` of the parity matrix, computed draw by draw exactly as the spec's
    pseudo-code. Slow; kept as the executable definition the fast path is tested against."""
    _check_version(version)
    line = [0] * m
    mm = 1 if m & (m - 1) == 0 else 0
    x = 1 + 1001 * k
    set_count = 0
    draws = 0
    while (draws if version == 1 else set_count) < m // 2:
        r = m
        while r >= m:
            x = _prbs23(x)
            r = x % (m + mm)
        draws += 1
        if not line[r]:
            line[r] = 1
            set_count += 1
    return line


def parity_matrix(ks: np.ndarray | list[int], m: int, version: int = 1) -> np.ndarray:
    """Lines ``ks`` (each >= 1) of the parity matrix for NbFrag ``m``, as a bool array of
    shape ``(len(ks), m)``. All lines advance their PRBS23 generators in lock step."""
    _check_version(version)
    ks_arr = np.asarray(ks, dtype=np.int64).reshape(-1)
    if m < 1:
        raise InvalidArgument(f"NbFrag must be >= 1, got {m}")
    if ks_arr.size and (ks_arr.min() < 1 or ks_arr.max() > MAX_FRAG_COUNTER):
        raise InvalidArgument("parity line index k must be 1..16383")
    lines = np.zeros((ks_arr.size, m), dtype=bool)
    target = m // 2
    if target == 0 or ks_arr.size == 0:
        return lines
    modulus = m + (1 if m & (m - 1) == 0 else 0)
    x = 1 + 1001 * ks_arr
    count = np.zeros(ks_arr.size, dtype=np.int64)
    active = np.arange(ks_arr.size)
    while active.size:
        xa = x[active]
        xa = (xa >> 1) + (((xa ^ (xa >> 5)) & 1) << 22)
        x[active] = xa
        r = xa % modulus
        ok = r < m
        if version == 2:
            rc = np.minimum(r, m - 1)
            ok &= ~lines[active, rc]
        rows = active[ok]
        lines[rows, r[ok]] = True
        count[rows] += 1
        active = active[count[active] < target]
    return lines


def parity_line(k: int, m: int, version: int = 1) -> np.ndarray:
    """Line ``k`` (>= 1) of the parity matrix as a bool array of length ``m``."""
    return parity_matrix([k], m, version)[0]


def _words(nbytes: int) -> int:
    return (nbytes + 7) // 8


def _to_words(rows: np.ndarray, nwords: int) -> np.ndarray:
    """uint8 rows (n, L) -> uint64 rows (n, nwords), zero-extended, little-endian."""
    out = np.zeros((rows.shape[0], nwords * 8), dtype=np.uint8)
    out[:, : rows.shape[1]] = rows
    return out.view("<u8")


def _pack_bits(lines: np.ndarray, nwords: int) -> np.ndarray:
    """bool rows (n, m) -> bit-packed uint64 rows (n, nwords); column j is bit j % 64 of
    word j // 64."""
    packed = np.packbits(lines, axis=1, bitorder="little")
    return _to_words(packed, nwords)


def encode(data: bytes, frag_size: int, redundancy: int, *, version: int = 1) -> list[bytes]:
    """Fragment ``data`` for TS004: NbFrag uncoded fragments (zero-padded) followed by
    ``redundancy`` coded fragments (``N = NbFrag + 1 ..``)."""
    _check_version(version)
    check_frag_size(frag_size)
    uncoded = split(data, frag_size)
    m = len(uncoded)
    check_counts(m, redundancy)
    if redundancy == 0:
        return uncoded
    pwords = _words(frag_size)
    block = np.frombuffer(b"".join(uncoded), dtype=np.uint8).reshape(m, frag_size)
    dwords = _to_words(block, pwords)  # (m, pwords) uint64
    coded: list[bytes] = []
    # Bound the working set: generate and combine lines in chunks.
    chunk = max(1, min(redundancy, 256))
    for start in range(1, redundancy + 1, chunk):
        ks = np.arange(start, min(start + chunk, redundancy + 1))
        lines = parity_matrix(ks, m, version)
        for line in lines:
            idx = np.flatnonzero(line)
            if idx.size:
                acc = np.bitwise_xor.reduce(dwords[idx], axis=0)
            else:
                acc = np.zeros(pwords, dtype=np.uint64)
            coded.append(acc.view(np.uint8)[:frag_size].tobytes())
    return uncoded + coded


class Decoder:
    """Any-order TS004 decoder for one data block.

    ``push(n, payload)`` accepts uncoded and coded fragments in any order, ignores
    duplicates, and returns True as soon as the fragments received have full GF(2) rank
    (the block is then in ``data``). The basis is kept in reduced row-echelon form, one row
    per pivot column, so each fragment costs a constant number of vectorised operations.
    """

    #: parity lines are generated this many at a time (lock-step) and cached
    LINE_BATCH = 256

    def __init__(self, nb_frag: int, frag_size: int, *, version: int = 1) -> None:
        _check_version(version)
        check_frag_size(frag_size)
        if not isinstance(nb_frag, int) or not 1 <= nb_frag <= MAX_FRAG_COUNTER:
            raise InvalidArgument(f"NbFrag must be 1..{MAX_FRAG_COUNTER}, got {nb_frag!r}")
        self.nb_frag = nb_frag
        self.frag_size = frag_size
        self.version = version
        self._cwords = _words((nb_frag + 7) // 8)
        self._pwords = _words(frag_size)
        self._bits = np.zeros((nb_frag, self._cwords), dtype=np.uint64)
        self._pay = np.zeros((nb_frag, self._pwords), dtype=np.uint64)
        self._pivot = np.zeros(nb_frag, dtype=bool)
        self._unit = np.zeros(nb_frag, dtype=bool)  # pivot rows that are unit vectors
        self._seen: set[int] = set()
        self._uncoded_received = 0
        self._rank = 0
        self._line_cache: dict[int, np.ndarray] = {}

    # -- counters -------------------------------------------------------------------
    @property
    def received(self) -> int:
        """Distinct fragments received (duplicates not counted)."""
        return len(self._seen)

    @property
    def missing_uncoded(self) -> int:
        """Uncoded fragments not received as such (some may be recovered already)."""
        return self.nb_frag - self._uncoded_received

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def needed(self) -> int:
        """At least this many more independent fragments are needed (NbFrag - rank)."""
        return self.nb_frag - self._rank

    @property
    def complete(self) -> bool:
        return self._rank == self.nb_frag

    @property
    def data(self) -> bytes:
        """The reconstructed block, NbFrag * frag_size bytes, padding included."""
        if not self.complete:
            raise InvalidArgument(
                f"data block is not complete yet (rank {self._rank} of {self.nb_frag})"
            )
        return self._pay.view(np.uint8)[:, : self.frag_size].tobytes()

    # -- input ----------------------------------------------------------------------
    def _coded_row(self, k: int) -> np.ndarray:
        row = self._line_cache.pop(k, None)
        if row is None:
            last = min(k + self.LINE_BATCH, MAX_FRAG_COUNTER - self.nb_frag + 1)
            ks = np.arange(k, last)
            packed = _pack_bits(parity_matrix(ks, self.nb_frag, self.version), self._cwords)
            for kk, r in zip(ks[1:].tolist(), packed[1:]):
                if kk + self.nb_frag not in self._seen:
                    self._line_cache[kk] = r
            row = packed[0]
        return row.copy()

    def push(self, n: int, payload: bytes) -> bool:
        """Add fragment ``n`` (1-based counter). Returns True once the block is complete."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_FRAG_COUNTER:
            raise InvalidArgument(f"fragment counter N must be 1..{MAX_FRAG_COUNTER}, got {n!r}")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"fragment payload must be bytes, got {type(payload).__name__}")
        if len(payload) != self.frag_size:
            raise InvalidArgument(
                f"fragment {n} payload is {len(payload)} bytes, expected frag_size {self.frag_size}"
            )
        if n in self._seen:
            return self.complete
        m = self.nb_frag
        if self.complete:  # counted, but nothing left to learn
            self._seen.add(n)
            self._uncoded_received += n <= m
            return True
        pay = _to_words(np.frombuffer(bytes(payload), dtype=np.uint8)[None, :], self._pwords)[0]
        if n <= m:
            bits = np.zeros(self._cwords, dtype=np.uint64)
            bits[(n - 1) >> 6] = np.uint64(1) << np.uint64((n - 1) & 63)
            self._seen.add(n)
            self._uncoded_received += 1
            self._insert(bits, pay.copy(), unit_hint=n - 1)
        else:
            bits = self._coded_row(n - m)
            self._seen.add(n)
            self._insert(bits, pay.copy(), unit_hint=None)
        return self.complete

    def _insert(self, bits: np.ndarray, pay: np.ndarray, unit_hint: int | None) -> None:
        m = self.nb_frag
        if unit_hint is not None and not self._pivot[unit_hint]:
            c = unit_hint
            unit = True
        else:
            # Reduce against the RREF basis in one pass: pivot rows are zero in every other
            # pivot column, so the rows to add are fixed by the incoming row's own bits.
            col = np.unpackbits(bits.view(np.uint8), bitorder="little")[:m].astype(bool)
            sel = col & self._pivot
            if sel.any():
                unit_sel = sel & self._unit
                other = np.flatnonzero(sel & ~self._unit)
                if unit_sel.any():
                    bits &= ~_pack_bits(unit_sel[None, :], self._cwords)[0]
                    pay ^= np.bitwise_xor.reduce(self._pay[unit_sel], axis=0)
                if other.size:
                    bits ^= np.bitwise_xor.reduce(self._bits[other], axis=0)
                    pay ^= np.bitwise_xor.reduce(self._pay[other], axis=0)
            nz = np.flatnonzero(bits)
            if nz.size == 0:
                return  # linearly dependent: no new information
            w = int(nz[0])
            word = int(bits[w])
            c = w * 64 + ((word & -word).bit_length() - 1)
            unit = bool(np.count_nonzero(bits) == 1 and word & (word - 1) == 0)
        # Eliminate column c from the existing non-unit pivot rows (unit rows never have it).
        hit = np.flatnonzero(
            ((self._bits[:, c >> 6] >> np.uint64(c & 63)) & np.uint64(1)).astype(bool)
        )
        if hit.size:
            # (a row may become a unit vector here; it keeps its non-unit flag, which only
            # costs speed: ``_unit`` is an optimisation, never needed for correctness)
            self._bits[hit] ^= bits
            self._pay[hit] ^= pay
        self._bits[c] = bits
        self._pay[c] = pay
        self._pivot[c] = True
        self._unit[c] = unit
        self._rank += 1
