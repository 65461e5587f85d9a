"""The emulated end device's own key derivation and integrity checks (TS005 multicast keys,
TS004 v2 data-block MIC), built on `cryptography`'s AES and CMAC.

Independent of the gateway's code. Facts (from TS005 v1.0.0/v2.0.0 and TS004 v2.0.0):
McRootKey = aes128_encrypt(GenAppKey, 0x00 x 16) for LoRaWAN 1.0.x devices, or
aes128_encrypt(AppKey, 0x20 | pad16) for 1.1 devices; McKEKey = aes128_encrypt(McRootKey,
0x00 x 16); the device recovers McKey = aes128_encrypt(McKEKey, McKey_encrypted);
McAppSKey = aes128_encrypt(McKey, 0x01 | McAddr LE | pad16), McNwkSKey with 0x02.
DataBlockIntKey = aes128_encrypt(K, 0x30 | pad16) with K = GenAppKey (1.0.x) / AppKey (1.1);
MIC = CMAC(DataBlockIntKey, B0 | data)[0:4], B0 = 0x49 | SessionCnt u16 | FragIndex |
Descriptor 4 B | 0x00 x 4 | len(data) u32 (little-endian fields).
"""

from __future__ import annotations

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "aes128_encrypt", "aes128_decrypt", "aes_cmac", "mc_root_key", "mc_ke_key",
    "decrypt_mc_key", "mc_app_s_key", "mc_nwk_s_key", "data_block_int_key", "data_block_mic",
    "root_key_for",
]


def _check_key(key: bytes, what: str = "key") -> None:
    if not isinstance(key, (bytes, bytearray)) or len(key) != 16:
        raise ValueError(f"{what} must be 16 bytes")


def aes128_encrypt(key: bytes, block: bytes) -> bytes:
    _check_key(key)
    if len(block) != 16:
        raise ValueError("AES block must be 16 bytes")
    enc = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()
    return enc.update(bytes(block)) + enc.finalize()


def aes128_decrypt(key: bytes, block: bytes) -> bytes:
    _check_key(key)
    if len(block) != 16:
        raise ValueError("AES block must be 16 bytes")
    dec = Cipher(algorithms.AES(bytes(key)), modes.ECB()).decryptor()
    return dec.update(bytes(block)) + dec.finalize()


def aes_cmac(key: bytes, data: bytes) -> bytes:
    _check_key(key)
    c = cmac.CMAC(algorithms.AES(bytes(key)))
    c.update(bytes(data))
    return c.finalize()


def mc_root_key(*, gen_app_key: bytes | None = None, app_key: bytes | None = None) -> bytes:
    """McRootKey of a LoRaWAN 1.0.x device (from GenAppKey) or a 1.1 device (from AppKey)."""
    if (gen_app_key is None) == (app_key is None):
        raise ValueError("give exactly one of gen_app_key (1.0.x) or app_key (1.1)")
    if gen_app_key is not None:
        return aes128_encrypt(gen_app_key, bytes(16))
    return aes128_encrypt(app_key, b"\x20" + bytes(15))


def mc_ke_key(root_key: bytes) -> bytes:
    return aes128_encrypt(root_key, bytes(16))


def decrypt_mc_key(ke_key: bytes, mc_key_encrypted: bytes) -> bytes:
    """The device side of McKey transport: McKey = aes128_encrypt(McKEKey, McKey_encrypted)."""
    return aes128_encrypt(ke_key, mc_key_encrypted)


def _session_key(mc_key: bytes, prefix: int, mc_addr: int) -> bytes:
    if not 0 <= mc_addr <= 0xFFFFFFFF:
        raise ValueError("McAddr must be a 32-bit value")
    return aes128_encrypt(mc_key, bytes([prefix]) + mc_addr.to_bytes(4, "little") + bytes(11))


def mc_app_s_key(mc_key: bytes, mc_addr: int) -> bytes:
    return _session_key(mc_key, 0x01, mc_addr)


def mc_nwk_s_key(mc_key: bytes, mc_addr: int) -> bytes:
    return _session_key(mc_key, 0x02, mc_addr)


def data_block_int_key(key: bytes) -> bytes:
    """DataBlockIntKey from GenAppKey (1.0.x) or AppKey (1.1)."""
    return aes128_encrypt(key, b"\x30" + bytes(15))


def data_block_mic(int_key: bytes, session_cnt: int, frag_index: int, descriptor: bytes,
                   data: bytes) -> bytes:
    """The 4-byte TS004 v2 MIC of a reassembled data block (padding removed)."""
    if len(descriptor) != 4 or not 0 <= session_cnt <= 0xFFFF or not 0 <= frag_index <= 3:
        raise ValueError("bad SessionCnt, FragIndex or Descriptor")
    b0 = (b"\x49" + session_cnt.to_bytes(2, "little") + bytes([frag_index]) + bytes(descriptor)
          + bytes(4) + len(data).to_bytes(4, "little"))
    return aes_cmac(int_key, b0 + bytes(data))[:4]


def root_key_for(mac_version: str, *, gen_app_key: bytes | None,
                 app_key: bytes | None) -> bytes:
    """The key TS005 and TS004 v2 derive from: GenAppKey for 1.0.x, AppKey for 1.1."""
    if mac_version.startswith("1.1"):
        if app_key is None:
            raise ValueError("a LoRaWAN 1.1 device needs its AppKey")
        return app_key
    if gen_app_key is None:
        raise ValueError("a LoRaWAN 1.0.x device needs its GenAppKey")
    return gen_app_key
