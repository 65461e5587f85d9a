"""The emulated end device's own TS004 (Fragmented Data Block Transport) FEC decoder,
FragAlgo 0, for the v1.0.0 and v2.0.0 parity matrices.

Written from the specification text, independently of the gateway's encoder. Facts:
uncoded fragments N = 1..M (M = NbFrag); coded fragment N = M + k (k >= 1) is the XOR of the
uncoded fragments j (0-based) whose bit is set in line(k, M):

    prbs23(x) = (x >> 1) | (((x & 1) ^ ((x >> 5) & 1)) << 22)
    mm = 1 if M is a power of two else 0; x = 1 + 1001 k
    draw: r = 2^16; while r >= M: x = prbs23(x); r = x mod (M + mm)
    v1.0.0: M // 2 draws, each sets bit r (repeats collapse)
    v2.0.0: draws until M // 2 distinct bits are set

Decoding is Gaussian elimination over GF(2) with bit-packed rows (Python ints as bit sets,
fragment payloads as ints). Two acceptance policies:

- any order (the spec allows it; Zephyr-like): every fragment is used whenever it arrives;
- in order (LoRaMac-node's and LoRa Basics Modem's FragDecoder): a fragment whose counter
  is below the last counter seen is dropped, so an uncoded fragment arriving after a coded
  one is lost for good; "lost" counts the uncoded fragments skipped so far and is never
  lowered, and the matrix can hold at most `max_lost` lost fragments (FRAG_MAX_REDUNDANCY).

The decoder also keeps the counters each stack reports in FragSessionStatusAns (see
`radio_emulators.lorawan.device`).
"""

from __future__ import annotations

from enum import Enum
from functools import lru_cache

__all__ = ["prbs23", "parity_line", "encode_fragments", "FragDecoder", "Push", "MAX_N"]

MAX_N = 0x3FFF  # the 14-bit fragment counter


def prbs23(x: int) -> int:
    return (x >> 1) | (((x & 1) ^ ((x >> 5) & 1)) << 22)


@lru_cache(maxsize=1 << 16)
def parity_line(k: int, m: int, version: int) -> int:
    """Bit set of the uncoded fragments (bit j = fragment j, 0-based) XORed into the coded
    fragment N = m + k, for matrix `version` 1 (TS004 v1.0.0) or 2 (v2.0.0)."""
    if k < 1 or m < 1 or version not in (1, 2):
        raise ValueError(f"bad parity line request k={k} M={m} v{version}")
    mm = 1 if (m & (m - 1)) == 0 else 0
    x = 1 + 1001 * k
    line = 0
    need = m // 2
    count = 0
    while count < need:
        r = 1 << 16
        while r >= m:
            x = prbs23(x)
            r = x % (m + mm)
        bit = 1 << r
        if version == 1:
            line |= bit
            count += 1
        elif not line & bit:
            line |= bit
            count += 1
    return line


def encode_fragments(data: bytes, frag_size: int, redundancy: int, version: int) -> list[bytes]:
    """Reference encoder (for tests and test gateways): the M uncoded fragments followed by
    `redundancy` coded ones. `data` must be a multiple of frag_size (pad it first)."""
    if frag_size <= 0 or len(data) % frag_size or not data:
        raise ValueError("data length must be a non-zero multiple of frag_size")
    m = len(data) // frag_size
    rows = [data[i * frag_size:(i + 1) * frag_size] for i in range(m)]
    ints = [int.from_bytes(r, "little") for r in rows]
    out = list(rows)
    for k in range(1, redundancy + 1):
        line = parity_line(k, m, version)
        acc = 0
        while line:
            low = line & -line
            acc ^= ints[low.bit_length() - 1]
            line ^= low
        out.append(acc.to_bytes(frag_size, "little"))
    return out


class Push(Enum):
    """What the decoder did with one fragment."""

    NEW = "new"                        # added information
    USELESS = "useless"                # a duplicate or a linearly dependent coded fragment
    OUT_OF_ORDER = "out-of-order"      # dropped by the in-order policy
    MEMORY = "memory"                  # dropped: too many lost fragments for the matrix
    COMPLETE = "complete"              # this fragment completed the block
    MATRIX_ERROR = "matrix-error"      # in-order decoder gave up (lost > max_lost)
    FINISHED = "finished"              # the decoder was already done; ignored


class FragDecoder:
    """One fragmentation session's decoder.

    push(n, fragment) with n the 1-based fragment counter; `complete` once every uncoded
    fragment is known; `data()` returns the M x FragSize reassembled bytes."""

    def __init__(self, nb_frag: int, frag_size: int, *, matrix_version: int = 1,
                 in_order: bool = False, max_lost: int | None = None) -> None:
        if not 1 <= nb_frag <= MAX_N or not 1 <= frag_size <= 255:
            raise ValueError("NbFrag must be 1..16383 and FragSize 1..255")
        if matrix_version not in (1, 2):
            raise ValueError("matrix_version must be 1 or 2")
        self.m = nb_frag
        self.frag_size = frag_size
        self.matrix_version = matrix_version
        self.in_order = in_order
        self.max_lost = max_lost
        self._uncoded: dict[int, int] = {}
        self._have = 0
        self._rows: dict[int, tuple[int, int]] = {}  # pivot -> (mask, data)
        self._solved: dict[int, int] | None = None
        # counters as the reference stacks keep them
        self.last_counter = 0      # FragNbRx: the last counter pushed (even if dropped)
        self.last_rx = 0           # FragNbLastRx: the in-order high-water mark
        self.lost = 0              # FragNbLost (in order) - never lowered
        self.lbm_missing = nb_frag  # LoRa Basics Modem's MissingFrag ("still needed")
        self.received = 0          # distinct fragments that were accepted
        self.matrix_error = False
        self.memory_error = False
        self.dropped = 0
        self._seen: set[int] = set()

    # -- state -----------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return self._solved is not None

    @property
    def finished(self) -> bool:
        return self.complete or (self.matrix_error and self.in_order)

    @property
    def rank(self) -> int:
        return len(self._uncoded) + len(self._rows)

    @property
    def missing_uncoded(self) -> int:
        return self.m - len(self._uncoded)

    @property
    def needed(self) -> int:
        """Independent fragments still needed to complete the block."""
        return 0 if self.complete else self.m - self.rank

    # -- input -----------------------------------------------------------------------
    def push(self, n: int, fragment: bytes) -> Push:
        if not 1 <= n <= MAX_N:
            raise ValueError(f"fragment counter {n} outside 1..16383")
        if len(fragment) != self.frag_size:
            raise ValueError(f"fragment of {len(fragment)} bytes, FragSize is {self.frag_size}")
        if self.finished:
            return Push.FINISHED
        self.last_counter = n
        if self.in_order and n < self.last_rx:
            self.dropped += 1
            return Push.OUT_OF_ORDER
        value = int.from_bytes(fragment, "little")
        if n <= self.m:
            return self._push_uncoded(n, value)
        return self._push_coded(n, value)

    def _find_missing(self, n: int) -> None:
        """LoRaMac-node's FragFindMissingFrags: uncoded fragments between the high-water
        mark and n are lost; the mark moves to n (or past the uncoded part)."""
        i = self.last_rx
        while i < n - 1:
            if i < self.m:
                self.lost += 1
            i += 1
        self.last_rx = n if max(self.last_rx, n - 1) < self.m else self.m + 1

    def _push_uncoded(self, n: int, value: int) -> Push:
        j = n - 1
        if self.in_order:
            self._find_missing(n)
        new = j not in self._uncoded
        if new:
            self._uncoded[j] = value
            self._have |= 1 << j
            self._seen.add(n)
            self.received += 1
            self._eliminate_column(j, value)
        if self.in_order:
            if self.lost == 0 and n == self.m:
                return self._finish()  # LBM returns here without updating MissingFrag
            self.lbm_missing = self.m - n + self.lost
        if self.rank == self.m:
            return self._finish()
        return Push.NEW if new else Push.USELESS

    def _push_coded(self, n: int, value: int) -> Push:
        if self.in_order:
            if self.max_lost is not None and self.lost > self.max_lost:
                self.matrix_error = True
                return Push.MATRIX_ERROR
            self._find_missing(n)
        elif self.max_lost is not None and self.missing_uncoded > self.max_lost:
            self.memory_error = True
            self.dropped += 1
            return Push.MEMORY
        if n in self._seen:
            return Push.USELESS
        self._seen.add(n)
        self.received += 1
        line = parity_line(n - self.m, self.m, self.matrix_version)
        known = line & self._have
        mask = line ^ known
        while known:
            low = known & -known
            value ^= self._uncoded[low.bit_length() - 1]
            known ^= low
        added = self._insert(mask, value)
        if self.in_order:
            self.lbm_missing = self.lost - len(self._rows)
        if self.rank == self.m:
            return self._finish()
        return Push.NEW if added else Push.USELESS

    def _insert(self, mask: int, value: int) -> bool:
        rows = self._rows
        while mask:
            p = (mask & -mask).bit_length() - 1
            row = rows.get(p)
            if row is None:
                rows[p] = (mask, value)
                return True
            mask ^= row[0]
            value ^= row[1]
        return False

    def _eliminate_column(self, j: int, value: int) -> None:
        """A late uncoded fragment j: remove column j from the stored coded rows."""
        bit = 1 << j
        touched = [(p, r) for p, r in self._rows.items() if r[0] & bit]
        for p, (mask, data) in touched:
            if p == j:
                del self._rows[p]
                self._insert(mask ^ bit, data ^ value)
            else:
                self._rows[p] = (mask ^ bit, data ^ value)

    def _finish(self) -> Push:
        solved: dict[int, int] = {}
        for p in sorted(self._rows, reverse=True):
            mask, data = self._rows[p]
            rest = mask ^ (1 << p)
            while rest:
                low = rest & -rest
                data ^= solved[low.bit_length() - 1]
                rest ^= low
            solved[p] = data
        solved.update(self._uncoded)
        self._solved = solved
        self._rows.clear()
        return Push.COMPLETE

    # -- output ----------------------------------------------------------------------
    def data(self) -> bytes:
        if self._solved is None:
            raise ValueError("the block is not complete")
        fs = self.frag_size
        return b"".join(self._solved[j].to_bytes(fs, "little") for j in range(self.m))

    def best_effort(self, fill: int = 0xFF) -> bytes:
        """The block as far as known, unknown fragments filled with `fill` (what a stack that
        gives up on a matrix error leaves in flash)."""
        if self._solved is not None:
            return self.data()
        fs = self.frag_size
        blank = bytes([fill]) * fs
        return b"".join(self._uncoded[j].to_bytes(fs, "little") if j in self._uncoded else blank
                        for j in range(self.m))
