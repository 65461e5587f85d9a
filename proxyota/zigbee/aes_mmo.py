"""AES-MMO: the Zigbee block-cipher-based hash (Zigbee spec 05-3474, B.6).

Matyas-Meyer-Oseas with AES-128: ``H_0 = 0``, ``H_i = E(H_{i-1}, M_i) xor M_i`` over
16-byte blocks. The message is padded Merkle-Damgård style with a ``1`` bit, zero bits
and the message length in bits:

* short messages (fewer than 2**16 bits, i.e. < 8192 bytes): zero-pad to 14 mod 16
  bytes, then the bit length as a 16-bit big-endian number;
* long messages (8192 bytes or more): zero-pad to 10 mod 16 bytes, then the bit length
  as a 32-bit big-endian number followed by 16 zero bits.

(zigpy's ``aes_mmo_hash`` only implements the short form and is wrong from 8 KiB on;
the OTA image integrity code of any real firmware needs the long form.)

:class:`AesMmo` is incremental (``update`` / ``copy`` / ``digest``) like :mod:`hashlib`,
so a prefix shared by two hashes is processed once.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from proxyota.errors import InvalidArgument

BLOCK_SIZE = 16
DIGEST_SIZE = 16
#: Messages of this many bytes or more use the long (32-bit length) padding.
LONG_MESSAGE_BYTES = 8192
#: The long form's 32-bit bit-length caps the message at 2**32 - 1 bits.
MAX_MESSAGE_BYTES = (2**32 - 1) // 8


def _compress(state: bytes, block: bytes) -> bytes:
    """One Matyas-Meyer-Oseas step: ``E(state, block) xor block``."""
    encryptor = Cipher(algorithms.AES(state), modes.ECB()).encryptor()
    cipher = encryptor.update(block)
    return (int.from_bytes(cipher, "big") ^ int.from_bytes(block, "big")).to_bytes(BLOCK_SIZE, "big")


def padding(length: int) -> bytes:
    """The padding appended to a message of ``length`` bytes before hashing."""
    if length < 0 or length > MAX_MESSAGE_BYTES:
        raise InvalidArgument(f"AES-MMO message length {length} out of range 0..{MAX_MESSAGE_BYTES}")
    bits = length * 8
    if length < LONG_MESSAGE_BYTES:
        zeros = (14 - (length + 1)) % BLOCK_SIZE
        return b"\x80" + bytes(zeros) + bits.to_bytes(2, "big")
    zeros = (10 - (length + 1)) % BLOCK_SIZE
    return b"\x80" + bytes(zeros) + bits.to_bytes(4, "big") + bytes(2)


class AesMmo:
    """Incremental AES-MMO hash; ``digest()`` does not change the state."""

    digest_size = DIGEST_SIZE
    block_size = BLOCK_SIZE

    def __init__(self, data: bytes = b"") -> None:
        self._state = bytes(BLOCK_SIZE)
        self._pending = b""
        self._length = 0
        if data:
            self.update(data)

    def update(self, data: bytes) -> None:
        """Feed more message bytes."""
        view = memoryview(bytes(data))
        self._length += len(view)
        if self._pending:
            need = BLOCK_SIZE - len(self._pending)
            self._pending += bytes(view[:need])
            view = view[need:]
            if len(self._pending) < BLOCK_SIZE:
                return
            self._state = _compress(self._state, self._pending)
            self._pending = b""
        state = self._state
        full = len(view) - len(view) % BLOCK_SIZE
        for offset in range(0, full, BLOCK_SIZE):
            state = _compress(state, bytes(view[offset : offset + BLOCK_SIZE]))
        self._state = state
        self._pending = bytes(view[full:])

    def copy(self) -> AesMmo:
        """An independent hash object with the same state."""
        other = AesMmo.__new__(AesMmo)
        other._state = self._state
        other._pending = self._pending
        other._length = self._length
        return other

    def digest(self) -> bytes:
        """The 16-byte hash of everything fed so far."""
        tail = self._pending + padding(self._length)
        state = self._state
        for offset in range(0, len(tail), BLOCK_SIZE):
            state = _compress(state, tail[offset : offset + BLOCK_SIZE])
        return state

    def hexdigest(self) -> str:
        return self.digest().hex()


def aes_mmo_hash(data: bytes) -> bytes:
    """AES-MMO hash of ``data`` (16 bytes)."""
    return AesMmo(data).digest()
