"""Reed–Solomon (MDS) erasure code for fragmented data blocks, the alternative to TS004's parity code.

The byte-exact definition is docs/fec-rs.md; in short:

* The block is padded and split exactly like TS004 (``blocks.split``): NbFrag = M data
  fragments, N = 1..M; parity fragments follow, N = M+1, M+2, ...
* The layout depends on M only: G = ceil(M / 127) groups. Fragment N belongs to group
  ``(N-1) mod G`` at codeword position ``(N-1) div G``, so consecutive fragments (data and
  parity alike) are dealt round robin and a burst of losses spreads over all groups.
* Group g holds k_g = ceil((M-g)/G) <= 127 data fragments (positions 0..k_g-1). Each byte
  column of a group is one systematic RS(255, k_g) codeword over GF(2^8) (primitive polynomial
  0x11D, alpha = 2, first consecutive root alpha^0), i.e. ``reedsolo.rs_encode_msg(column,
  255 - k_g)``; the codeword is punctured to the positions actually sent. Any k_g distinct
  fragments of group g recover its data (MDS per group), whatever the redundancy, and more
  parity can be sent later (repair) without changing what was already sent.

Encoding and erasure decoding are linear maps shared by every byte column of a group, so the
parity matrix is derived once per k with reedsolo's field arithmetic and applied to all
columns at once with numpy (GF(2^8) product table built from reedsolo's log/antilog tables).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import reedsolo

from proxyota.errors import DecodeError, InvalidArgument
from proxyota.fec.blocks import (
    MAX_FRAG_COUNTER,
    check_counts,
    check_frag_size,
    split,
)

PRIMITIVE_POLY = 0x11D  # x^8 + x^4 + x^3 + x^2 + 1
GENERATOR = 2  # alpha
FCR = 0  # first consecutive root: the generator polynomial's roots are alpha^0 .. alpha^(254-k)
CODEWORD_LEN = 255  # symbols in a full (unpunctured) codeword
MAX_GROUP_DATA = 127  # at most this many data fragments per group: >= 128 parity positions left

_LOG_LIST, _EXP_LIST, _ = reedsolo.init_tables(PRIMITIVE_POLY, GENERATOR, 8)
_EXP = np.frombuffer(bytes(_EXP_LIST[:255]), dtype=np.uint8)
_LOG = np.frombuffer(bytes(_LOG_LIST), dtype=np.uint8)


def _product_table() -> np.ndarray:
    """MUL[a, b] = a * b in GF(2^8), from reedsolo's log / antilog tables."""
    logs = _LOG.astype(np.int32)
    table = _EXP[(logs[:, None] + logs[None, :]) % 255]
    table[0, :] = 0
    table[:, 0] = 0
    return np.ascontiguousarray(table)


_MUL = _product_table()
_INV = np.zeros(256, dtype=np.uint8)
_INV[1:] = _EXP[(255 - _LOG[1:].astype(np.int32)) % 255]


def _gf_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(x by y) @ (y by F) over GF(2^8)."""
    if a.shape[1] == 0:
        return np.zeros((a.shape[0], b.shape[1]), dtype=np.uint8)
    return np.bitwise_xor.reduce(_MUL[a[:, :, None], b[None, :, :]], axis=1)


def _gf_solve(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """X with a @ X = y over GF(2^8), a square and invertible (Gauss–Jordan on [a | y])."""
    u = a.shape[0]
    aug = np.concatenate([a, y], axis=1)
    for col in range(u):
        pivots = np.nonzero(aug[col:, col])[0]
        if len(pivots) == 0:  # cannot happen for an MDS code; guard against a broken table
            raise DecodeError("singular recovery matrix", command="RS group")
        piv = col + int(pivots[0])
        if piv != col:
            aug[[col, piv]] = aug[[piv, col]]
        aug[col] = _MUL[_INV[aug[col, col]], aug[col]]
        factors = aug[:, col].copy()
        factors[col] = 0
        aug ^= _MUL[factors[:, None], aug[col][None, :]]
    return aug[:, u:]


# --- layout -------------------------------------------------------------------------------


def group_count(nb_frag: int) -> int:
    """G = ceil(NbFrag / 127): the number of interleaved groups."""
    if isinstance(nb_frag, bool) or not isinstance(nb_frag, int):
        raise InvalidArgument(f"NbFrag must be an int, got {nb_frag!r}")
    check_counts(nb_frag, 0)
    return -(-nb_frag // MAX_GROUP_DATA)


def data_in_group(group: int, nb_frag: int) -> int:
    """k_g: how many data fragments group ``group`` holds (codeword positions 0..k_g-1)."""
    g_count = group_count(nb_frag)
    if not isinstance(group, int) or not 0 <= group < g_count:
        raise InvalidArgument(f"group must be 0..{g_count - 1} for NbFrag {nb_frag}, got {group!r}")
    return -(-(nb_frag - group) // g_count)


def max_redundancy(nb_frag: int) -> int:
    """Most parity fragments the layout offers: every group full (255 symbols) or N = 16383."""
    return min(CODEWORD_LEN * group_count(nb_frag), MAX_FRAG_COUNTER) - nb_frag


def _check_redundancy(nb_frag: int, redundancy: int) -> None:
    if isinstance(redundancy, bool) or not isinstance(redundancy, int):
        raise InvalidArgument(f"redundancy must be an int, got {redundancy!r}")
    check_counts(nb_frag, redundancy)
    limit = max_redundancy(nb_frag)
    if redundancy > limit:
        raise InvalidArgument(
            f"redundancy {redundancy} exceeds the {limit} parity fragments the RS layout offers "
            f"for NbFrag {nb_frag} ({group_count(nb_frag)} groups of at most {CODEWORD_LEN} symbols)"
        )


def _last_counter(nb_frag: int, redundancy: int | None) -> int:
    if redundancy is None:
        return nb_frag + max_redundancy(nb_frag)
    _check_redundancy(nb_frag, redundancy)
    return nb_frag + redundancy


def locate(n: int, nb_frag: int, redundancy: int | None = None) -> tuple[int, int]:
    """(group, codeword position) of fragment counter ``n`` (1-based).

    ``redundancy`` (the number of parity fragments sent) only narrows the accepted range;
    the layout itself depends on NbFrag alone.
    """
    last = _last_counter(nb_frag, redundancy)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= last:
        raise InvalidArgument(f"fragment counter N must be 1..{last}, got {n!r}")
    g_count = group_count(nb_frag)
    return (n - 1) % g_count, (n - 1) // g_count


def group_of(n: int, nb_frag: int, redundancy: int | None = None) -> int:
    """The group (0-based) fragment ``n`` belongs to; pure, for the repair planner."""
    return locate(n, nb_frag, redundancy)[0]


def fragments_of_group(group: int, nb_frag: int, redundancy: int) -> list[int]:
    """Counters N of group ``group`` among N = 1..NbFrag+redundancy, in codeword order."""
    data_in_group(group, nb_frag)
    _check_redundancy(nb_frag, redundancy)
    return list(range(group + 1, nb_frag + redundancy + 1, group_count(nb_frag)))


# --- the code -----------------------------------------------------------------------------


def _ensure_reedsolo_field() -> None:
    """reedsolo keeps its tables in module globals; make sure they are ours (0x11D, alpha 2)."""
    if bytes(reedsolo.gf_exp[:255]) != _EXP.tobytes():
        reedsolo.init_tables(PRIMITIVE_POLY, GENERATOR, 8)


@lru_cache(maxsize=None)
def _parity_matrix(k: int) -> np.ndarray:
    _ensure_reedsolo_field()
    nsym = CODEWORD_LEN - k
    gen = np.frombuffer(bytes(reedsolo.rs_generator_poly(nsym, FCR, GENERATOR)), dtype=np.uint8)
    tail = gen[1:]  # the generator is monic: x^nsym = tail (mod gen), char 2
    rows = np.empty((k, nsym), dtype=np.uint8)
    rem = tail.copy()  # x^nsym mod gen, i.e. the parity of the last data position (j = k-1)
    for j in range(k - 1, -1, -1):
        rows[j] = rem
        lead = rem[0]
        rem = np.append(rem[1:], np.uint8(0))
        if lead:
            rem ^= _MUL[lead, tail]
    rows.setflags(write=False)
    return rows


def parity_matrix(k: int) -> np.ndarray:
    """P_k (k by 255-k, read-only): parity position k+q of a group = XOR_j P_k[j, q] * data_j.

    Row j holds the coefficients (highest degree first) of x^(254-j) mod g_k(x), where
    g_k(x) = prod_{i=0}^{254-k} (x - alpha^i) is reedsolo's generator polynomial; row j is
    therefore the parity reedsolo.rs_encode_msg gives for the unit message e_j.
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_GROUP_DATA:
        raise InvalidArgument(f"k must be 1..{MAX_GROUP_DATA}, got {k!r}")
    return _parity_matrix(k)


def encode(data: bytes, frag_size: int, redundancy: int) -> list[bytes]:
    """NbFrag data fragments (zero-padded as ``blocks.split``) then ``redundancy`` parity ones.

    Fragment ``i`` of the returned list carries counter N = i + 1.
    """
    check_frag_size(frag_size)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidArgument(f"data must be bytes, got {type(data).__name__}")
    frags = split(data, frag_size)
    nb = len(frags)
    _check_redundancy(nb, redundancy)
    total = nb + redundancy
    block = np.frombuffer(b"".join(frags), dtype=np.uint8).reshape(nb, frag_size)
    out = np.zeros((total, frag_size), dtype=np.uint8)
    out[:nb] = block
    g_count = group_count(nb)
    for g in range(g_count):
        k = data_in_group(g, nb)
        first_parity = g + k * g_count  # 0-based index t of the group's first parity fragment
        if first_parity >= total:
            continue
        r = len(range(first_parity, total, g_count))
        p = _parity_matrix(k)[:, :r]
        out[first_parity:total:g_count] = _gf_matmul(np.ascontiguousarray(p.T), block[g::g_count])
    return [row.tobytes() for row in out]


class Decoder:
    """Erasure decoder for one RS-coded block; accepts fragments in any order.

    ``redundancy`` is optional: the layout depends on NbFrag only, so a node needs nothing
    beyond FragSessionSetupReq's NbFrag and FragSize. When given, counters above
    NbFrag + redundancy are rejected; otherwise any N the layout defines is accepted.
    """

    def __init__(self, nb_frag: int, frag_size: int, redundancy: int | None = None):
        check_frag_size(frag_size)
        if isinstance(nb_frag, bool) or not isinstance(nb_frag, int):
            raise InvalidArgument(f"nb_frag must be an int, got {nb_frag!r}")
        self.nb_frag = nb_frag
        self.frag_size = frag_size
        self.redundancy = redundancy
        self._last = _last_counter(nb_frag, redundancy)
        self._groups = group_count(nb_frag)
        self._k = [data_in_group(g, nb_frag) for g in range(self._groups)]
        self._seen = bytearray(self._last + 1)
        self._received = 0
        self._uncoded_received = 0  # data fragments received as such
        self._block = np.zeros((nb_frag, frag_size), dtype=np.uint8)
        self._pending: list[dict[int, bytes] | None] = [{} for _ in range(self._groups)]
        self._open = self._groups  # groups not yet solved

    # -- queries --

    @property
    def complete(self) -> bool:
        return self._open == 0

    @property
    def received(self) -> int:
        """Distinct fragments accepted (data and parity, including those after completion)."""
        return self._received

    @property
    def missing_uncoded(self) -> int:
        """Data fragments not received as such (some may be recovered already), as in ts004."""
        return self.nb_frag - self._uncoded_received

    def needed_per_group(self) -> list[int]:
        """For each group, how many more distinct fragments it needs (0 when solved)."""
        return [0 if p is None else self._k[g] - len(p) for g, p in enumerate(self._pending)]

    @property
    def needed(self) -> int:
        """Fragments still needed in total, counting every group (0 once complete)."""
        return sum(self.needed_per_group())

    @property
    def data(self) -> bytes:
        """The block, NbFrag * frag_size bytes with the padding (drop it using Padding)."""
        if not self.complete:
            raise InvalidArgument(
                f"data block is not complete yet: {self.needed} more fragments needed "
                f"(per group {self.needed_per_group()})"
            )
        return self._block.tobytes()

    # -- input --

    def push(self, n: int, payload: bytes) -> bool:
        """Accept fragment ``n``; returns True once the block is complete. Duplicates are ignored."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self._last:
            raise InvalidArgument(f"fragment counter N must be 1..{self._last}, got {n!r}")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"fragment payload must be bytes, got {type(payload).__name__}")
        payload = bytes(payload)
        if len(payload) != self.frag_size:
            raise InvalidArgument(f"fragment {n} has {len(payload)} bytes, FragSize is {self.frag_size}")
        if self._seen[n]:
            return self.complete
        self._seen[n] = 1
        self._received += 1
        if n <= self.nb_frag:
            self._uncoded_received += 1
        g, s = (n - 1) % self._groups, (n - 1) // self._groups
        pending = self._pending[g]
        if pending is None:  # group already solved: nothing left to learn
            return self.complete
        if n <= self.nb_frag:
            self._block[n - 1] = np.frombuffer(payload, dtype=np.uint8)
        pending[s] = payload
        if len(pending) == self._k[g]:
            self._solve(g, pending)
        return self.complete

    def _solve(self, g: int, pending: dict[int, bytes]) -> None:
        k, stride = self._k[g], self._groups
        lost = [s for s in range(k) if s not in pending]
        if lost:
            known = [s for s in range(k) if s in pending]
            parity = sorted(s for s in pending if s >= k)[: len(lost)]
            p = _parity_matrix(k)
            cols = [s - k for s in parity]
            y = np.frombuffer(b"".join(pending[s] for s in parity), dtype=np.uint8).reshape(len(parity), -1)
            if known:
                rows = [g + s * stride for s in known]
                y = y ^ _gf_matmul(np.ascontiguousarray(p[np.ix_(known, cols)].T), self._block[rows])
            recovered = _gf_solve(np.ascontiguousarray(p[np.ix_(lost, cols)].T), y)
            self._block[[g + s * stride for s in lost]] = recovered
        self._pending[g] = None
        self._open -= 1
