"""Data-block geometry shared by every erasure code: padding, fragment count, splitting.

TS004 pads the data block with ``padding = (frag_size - len % frag_size) % frag_size`` zero
bytes before coding; the FragSessionSetupReq ``Padding`` field tells the node how many to
drop. Fragment counters ``N`` are 1-based and 14 bits wide (1..16383).
"""

from __future__ import annotations

from typing import Protocol

from proxyota.errors import InvalidArgument

MAX_FRAG_COUNTER = 0x3FFF  # N is 14 bits in the DataFragment IndexAndN field
MAX_FRAG_SIZE = 255  # FragSize is one byte in FragSessionSetupReq


def check_frag_size(frag_size: int) -> None:
    if not isinstance(frag_size, int) or not 1 <= frag_size <= MAX_FRAG_SIZE:
        raise InvalidArgument(f"frag_size must be 1..{MAX_FRAG_SIZE}, got {frag_size!r}")


def padding(length: int, frag_size: int) -> int:
    """Zero bytes appended so the block is a whole number of fragments."""
    check_frag_size(frag_size)
    if length < 0:
        raise InvalidArgument(f"length must be >= 0, got {length}")
    return (frag_size - length % frag_size) % frag_size


def nb_frag(length: int, frag_size: int) -> int:
    """Number of uncoded fragments (NbFrag) for a block of ``length`` bytes."""
    return (length + padding(length, frag_size)) // frag_size


def split(data: bytes, frag_size: int) -> list[bytes]:
    """The uncoded fragments of ``data``, the last one zero-padded."""
    if len(data) == 0:
        raise InvalidArgument("data block is empty")
    padded = bytes(data) + bytes(padding(len(data), frag_size))
    return [padded[i : i + frag_size] for i in range(0, len(padded), frag_size)]


def check_counts(nb: int, redundancy: int) -> None:
    """NbFrag >= 1, redundancy >= 0, and every counter N = 1..nb+redundancy fits 14 bits."""
    if nb < 1:
        raise InvalidArgument(f"NbFrag must be >= 1, got {nb}")
    if redundancy < 0:
        raise InvalidArgument(f"redundancy must be >= 0, got {redundancy}")
    if nb + redundancy > MAX_FRAG_COUNTER:
        raise InvalidArgument(
            f"NbFrag + redundancy = {nb + redundancy} exceeds the 14-bit fragment counter "
            f"({MAX_FRAG_COUNTER})"
        )


class ErasureDecoder(Protocol):
    """What every decoder offers (TS004 parity, Reed–Solomon)."""

    nb_frag: int
    frag_size: int

    def push(self, n: int, payload: bytes) -> bool: ...

    @property
    def data(self) -> bytes: ...

    @property
    def received(self) -> int: ...

    @property
    def missing_uncoded(self) -> int: ...

    @property
    def complete(self) -> bool: ...
