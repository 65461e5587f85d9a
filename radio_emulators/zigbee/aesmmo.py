"""The emulated node's own AES-MMO hash (Matyas-Meyer-Oseas over AES-128), used for the
OTA image integrity code (sub-element 0x0003) and install-code link keys.

Facts (Zigbee specification 05-3474, B.6 "Block-Cipher-Based Cryptographic Hash
Function"): blocks of 16 bytes, H0 = 0^16, H_j = E(H_{j-1}, M_j) XOR M_j. Padding of an
l-bit message: a 1 bit, then k zero bits, then the length:
- l < 2^16 bits (fewer than 8192 bytes): k such that l + 1 + k = 112 (mod 128), then l
  as a 16-bit big-endian integer;
- otherwise ("long messages"): k such that l + 1 + k = 80 (mod 128), then l as a 32-bit
  big-endian integer, then 16 zero bits.
zigpy's `aes_mmo_hash` implements only the first form, so it differs from 8 KiB on.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["AesMmo", "aes_mmo", "mmo_padding", "LONG_MESSAGE_BYTES"]

BLOCK = 16
LONG_MESSAGE_BYTES = 8192  # 2^16 bits


def mmo_padding(length: int) -> bytes:
    """The bytes appended to a message of `length` bytes before hashing."""
    if length < 0:
        raise ValueError("message length must be >= 0")
    bits = length * 8
    if length < LONG_MESSAGE_BYTES:
        tail = bits.to_bytes(2, "big")
        fill = (14 - (length + 1)) % BLOCK          # 0x80 byte + zeros to 14 mod 16
    else:
        if bits >= 1 << 32:
            raise ValueError("message too long for AES-MMO (2^32 bits)")
        tail = bits.to_bytes(4, "big") + b"\x00\x00"
        fill = (10 - (length + 1)) % BLOCK          # 0x80 byte + zeros to 10 mod 16
    return b"\x80" + bytes(fill) + tail


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


class AesMmo:
    """Incremental AES-MMO: `update()` as blocks arrive, `digest()` at the end (a node
    hashes its image while writing it to flash, without a second copy)."""

    def __init__(self) -> None:
        self._h = bytes(BLOCK)
        self._pending = b""
        self._length = 0

    def _compress(self, block: bytes) -> None:
        enc = Cipher(algorithms.AES(self._h), modes.ECB()).encryptor()
        self._h = _xor(enc.update(block) + enc.finalize(), block)

    def update(self, data: bytes) -> None:
        self._length += len(data)
        buf = self._pending + bytes(data)
        full = len(buf) - len(buf) % BLOCK
        for i in range(0, full, BLOCK):
            self._compress(buf[i:i + BLOCK])
        self._pending = buf[full:]

    def digest(self) -> bytes:
        saved = (self._h, self._pending)
        buf = self._pending + mmo_padding(self._length)
        for i in range(0, len(buf), BLOCK):
            self._compress(buf[i:i + BLOCK])
        out = self._h
        self._h, self._pending = saved
        return out


def aes_mmo(data: bytes) -> bytes:
    h = AesMmo()
    h.update(data)
    return h.digest()
