"""Fragments of the FUOTA data block, computed on demand (never stored in the session state).

Uncoded fragment ``N`` (1..NbFrag) is a slice of the zero-padded image; coded fragment
``N = NbFrag + k`` is the XOR of the uncoded fragments selected by line ``k`` of the TS004
parity matrix (:func:`proxyota.fec.ts004.parity_matrix`, v1 or v2). Lines are generated a
chunk at a time and only the current chunk is cached, so memory stays bounded whatever
the counter range; the result is byte-identical to :func:`proxyota.fec.ts004.encode`.
"""

from __future__ import annotations

import numpy as np

from proxyota.errors import InvalidArgument
from proxyota.fec.blocks import MAX_FRAG_COUNTER, nb_frag, padding, split
from proxyota.fec.ts004 import parity_matrix

__all__ = ["FragmentSource"]


class FragmentSource:
    """Fragment ``N`` of ``image`` for FragSize ``frag_size`` (any parity version)."""

    CHUNK = 64

    def __init__(self, image: bytes, frag_size: int) -> None:
        if not isinstance(image, (bytes, bytearray, memoryview)) or len(image) == 0:
            raise InvalidArgument("image must be non-empty bytes")
        self.frag_size = frag_size
        self.nb_frag = nb_frag(len(image), frag_size)
        self.padding = padding(len(image), frag_size)
        self._uncoded = split(bytes(image), frag_size)
        self._block = np.frombuffer(b"".join(self._uncoded), dtype=np.uint8).reshape(self.nb_frag, frag_size)
        self._cache: dict[tuple[int, int], bytes] = {}

    def fragment(self, n: int, version: int) -> bytes:
        """Fragment counter ``n`` (1-based) with the parity code of TS004 ``version``."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_FRAG_COUNTER:
            raise InvalidArgument(f"fragment counter must be 1..{MAX_FRAG_COUNTER}, got {n!r}")
        if n <= self.nb_frag:
            return self._uncoded[n - 1]
        key = (version, n)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        k0 = n - self.nb_frag
        last = min(k0 + self.CHUNK - 1, MAX_FRAG_COUNTER - self.nb_frag)
        ks = list(range(k0, last + 1))
        lines = parity_matrix(ks, self.nb_frag, version)
        self._cache = {}
        for k, line in zip(ks, lines):
            idx = np.flatnonzero(line)
            if idx.size:
                data = np.bitwise_xor.reduce(self._block[idx], axis=0).tobytes()
            else:
                data = bytes(self.frag_size)
            self._cache[(version, self.nb_frag + k)] = data
        return self._cache[key]
