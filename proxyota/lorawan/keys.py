"""FUOTA key material: TS005 multicast keys and the TS004 v2 data-block integrity code.

Key hierarchy (TS005 "Remote Multicast Setup", TS004 v2.0.0 "Fragmented Data Block
Transport"; every derivation is one AES-128 block encryption of a constant block)::

    McRootKey     = aes128_encrypt(GenAppKey, 0x00 | pad16)   LoRaWAN 1.0.x
                  = aes128_encrypt(AppKey,    0x20 | pad16)   LoRaWAN 1.1
    McKEKey       = aes128_encrypt(McRootKey, 0x00 | pad16)
    McKey_encrypted (in McGroupSetupReq) = aes128_decrypt(McKEKey, McKey)   server side
    McKey         = aes128_encrypt(McKEKey, McKey_encrypted)                device side
    McAppSKey     = aes128_encrypt(McKey, 0x01 | McAddr (u32 LE) | pad16)
    McNwkSKey     = aes128_encrypt(McKey, 0x02 | McAddr (u32 LE) | pad16)
    DataBlockIntKey = aes128_encrypt(K, 0x30 | pad16), K = GenAppKey (1.0.x) / AppKey (1.1)
    MIC           = AES-CMAC(DataBlockIntKey, B0 | data)[0:4]
    B0            = 0x49 | SessionCnt u16 LE | FragIndex u8 | Descriptor 4 B
                    | 00 00 00 00 | len u32 LE                       (16 bytes)

``len`` is the length of the data block *without* the TS004 padding, and the MIC covers
only those ``len`` bytes; the four MIC bytes go on the wire in CMAC output order. This is
what ChirpStack's ``lrwn/src/applayer/fragmentation/v2.rs`` (``calculate_mic``, called with
the unpadded payload in ``chirpstack/src/applayer/fuota/flow.rs``) sends and what LoRa Basics
Modem's ``lorawan_fragmentation_package_v2.0.0.c`` (``compute_data_block_integrity_ckeck``:
size = NbFrag * FragSize - Padding, MIC compared as cmac[0..3] read little-endian against the
little-endian MIC field) checks.

Keys are 16-byte ``bytes``; addresses are ``int`` (the 32-bit McAddr / DevAddr value, sent
little-endian). Bad arguments raise :class:`~proxyota.errors.InvalidArgument`.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from proxyota.errors import InvalidArgument

KEY_SIZE = 16
MIC_SIZE = 4
DESCRIPTOR_SIZE = 4

__all__ = [
    "KEY_SIZE",
    "MIC_SIZE",
    "data_block_b0",
    "data_block_int_key",
    "data_block_mic",
    "decrypt_mc_key",
    "encrypt_mc_key",
    "mc_app_s_key",
    "mc_ke_key",
    "mc_nwk_s_key",
    "mc_root_key",
    "mc_root_key_for_app_key",
    "mc_root_key_for_gen_app_key",
]

# Derivation constants (first byte of the block; the rest is zero padding).
_MC_ROOT_KEY_1_0 = 0x00
_MC_ROOT_KEY_1_1 = 0x20
_MC_KE_KEY = 0x00
_MC_APP_S_KEY = 0x01
_MC_NWK_S_KEY = 0x02
_DATA_BLOCK_INT_KEY = 0x30
_DATA_BLOCK_B0 = 0x49


def _key(value: object, name: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidArgument(f"{name} must be {KEY_SIZE} bytes, got {type(value).__name__}")
    raw = bytes(value)
    if len(raw) != KEY_SIZE:
        raise InvalidArgument(f"{name} must be {KEY_SIZE} bytes, got {len(raw)}")
    return raw


def _uint(value: object, name: str, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value < 1 << bits:
        raise InvalidArgument(f"{name} must be 0..{(1 << bits) - 1}, got {value}")
    return value


def _aes_encrypt(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def _aes_decrypt(key: bytes, block: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    return decryptor.update(block) + decryptor.finalize()


def _derive(key: bytes, prefix: bytes) -> bytes:
    return _aes_encrypt(key, prefix.ljust(KEY_SIZE, b"\x00"))


# --- TS005 multicast keys ---------------------------------------------------------------


def mc_root_key_for_gen_app_key(gen_app_key: bytes) -> bytes:
    """McRootKey of a LoRaWAN 1.0.x device, derived from its GenAppKey."""
    return _derive(_key(gen_app_key, "gen_app_key"), bytes([_MC_ROOT_KEY_1_0]))


def mc_root_key_for_app_key(app_key: bytes) -> bytes:
    """McRootKey of a LoRaWAN 1.1 device, derived from its AppKey."""
    return _derive(_key(app_key, "app_key"), bytes([_MC_ROOT_KEY_1_1]))


def mc_root_key(root_key: bytes, *, lorawan_1_1: bool = False) -> bytes:
    """McRootKey from the device's application root key.

    ``root_key`` is the GenAppKey of a LoRaWAN 1.0.x device (``lorawan_1_1=False``) or the
    AppKey of a LoRaWAN 1.1 device (``lorawan_1_1=True``).
    """
    if lorawan_1_1:
        return mc_root_key_for_app_key(root_key)
    return mc_root_key_for_gen_app_key(root_key)


def mc_ke_key(mc_root_key: bytes) -> bytes:
    """McKEKey (multicast key-encryption key) from McRootKey."""
    return _derive(_key(mc_root_key, "mc_root_key"), bytes([_MC_KE_KEY]))


def encrypt_mc_key(mc_ke_key: bytes, mc_key: bytes) -> bytes:
    """McKey_encrypted as carried in McGroupSetupReq (server side).

    TS005 has the server *decrypt* McKey with McKEKey so that a device only needs the AES
    encrypt primitive to recover it (:func:`decrypt_mc_key`).
    """
    return _aes_decrypt(_key(mc_ke_key, "mc_ke_key"), _key(mc_key, "mc_key"))


def decrypt_mc_key(mc_ke_key: bytes, mc_key_encrypted: bytes) -> bytes:
    """McKey recovered from McKey_encrypted (device side): one AES encryption."""
    return _aes_encrypt(_key(mc_ke_key, "mc_ke_key"), _key(mc_key_encrypted, "mc_key_encrypted"))


def _mc_session_key(prefix: int, mc_key: bytes, mc_addr: int) -> bytes:
    key = _key(mc_key, "mc_key")
    addr = _uint(mc_addr, "mc_addr", 32)
    return _derive(key, bytes([prefix]) + addr.to_bytes(4, "little"))


def mc_app_s_key(mc_key: bytes, mc_addr: int) -> bytes:
    """McAppSKey of a multicast group (McAddr as the 32-bit address value)."""
    return _mc_session_key(_MC_APP_S_KEY, mc_key, mc_addr)


def mc_nwk_s_key(mc_key: bytes, mc_addr: int) -> bytes:
    """McNwkSKey of a multicast group (McAddr as the 32-bit address value)."""
    return _mc_session_key(_MC_NWK_S_KEY, mc_key, mc_addr)


# --- TS004 v2 data-block integrity --------------------------------------------------------


def data_block_int_key(key: bytes) -> bytes:
    """DataBlockIntKey from GenAppKey (LoRaWAN 1.0.x) or AppKey (1.1)."""
    return _derive(_key(key, "key"), bytes([_DATA_BLOCK_INT_KEY]))


def _descriptor(descriptor: object) -> bytes:
    if isinstance(descriptor, (bytes, bytearray, memoryview)):
        raw = bytes(descriptor)
        if len(raw) != DESCRIPTOR_SIZE:
            raise InvalidArgument(f"descriptor must be {DESCRIPTOR_SIZE} bytes, got {len(raw)}")
        return raw
    if isinstance(descriptor, int) and not isinstance(descriptor, bool):
        # An integer is the little-endian u32 value of the field, as LoRa Basics Modem reads it.
        return _uint(descriptor, "descriptor", 32).to_bytes(DESCRIPTOR_SIZE, "little")
    raise InvalidArgument(
        f"descriptor must be {DESCRIPTOR_SIZE} bytes or a u32, got {type(descriptor).__name__}"
    )


def data_block_b0(session_cnt: int, frag_index: int, descriptor: bytes | int, length: int) -> bytes:
    """The 16-byte B0 block that precedes the data in the data-block CMAC."""
    return (
        bytes([_DATA_BLOCK_B0])
        + _uint(session_cnt, "session_cnt", 16).to_bytes(2, "little")
        + bytes([_frag_index(frag_index)])
        + _descriptor(descriptor)
        + bytes(4)
        + _uint(length, "length", 32).to_bytes(4, "little")
    )


def _frag_index(frag_index: object) -> int:
    value = _uint(frag_index, "frag_index", 8)
    if value > 3:
        raise InvalidArgument(f"frag_index must be 0..3, got {value}")
    return value


def data_block_mic(
    data_block_int_key: bytes,
    session_cnt: int,
    frag_index: int,
    descriptor: bytes | int,
    data: bytes,
) -> bytes:
    """TS004 v2 MIC of a data block: the 4 bytes sent in FragSessionSetupReq, wire order.

    ``data`` is the data block without the TS004 padding; ``descriptor`` is the 4-byte
    Descriptor field as sent (or its little-endian u32 value).
    """
    key = _key(data_block_int_key, "data_block_int_key")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidArgument(f"data must be bytes, got {type(data).__name__}")
    block = memoryview(data).cast("B")
    b0 = data_block_b0(session_cnt, frag_index, descriptor, block.nbytes)
    cmac = CMAC(algorithms.AES(key))
    cmac.update(b0)
    cmac.update(block)
    return cmac.finalize()[:MIC_SIZE]
