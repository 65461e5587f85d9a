"""The device's own TS005 key derivation and TS004 v2 data-block MIC.

Vectors: ChirpStack v4 `lrwn/src/applayer/multicastsetup/v2.rs` tests (commit d77207cd of
chirpstack/chirpstack): get_mc_root_key_for_gen_app_key / _for_app_key, get_mc_ke_key,
get_mc_app_s_key, get_mc_net_s_key, encrypt_mc_key. AES-CMAC: RFC 4493 example 2."""

from __future__ import annotations

import pytest

from radio_emulators.lorawan import crypto

MC_ADDR = 0x01020304  # DevAddr::from_be_bytes([1, 2, 3, 4])
MC_KEY = bytes([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])
APP_KEY = bytes([2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])
GEN_APP_KEY = bytes([3, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])
MC_ROOT_KEY = bytes([4, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])


def test_mc_root_key_from_gen_app_key():
    assert crypto.mc_root_key(gen_app_key=GEN_APP_KEY) == bytes(
        [0x55, 0x34, 0x4e, 0x82, 0x57, 0x0e, 0xae, 0xc8, 0xbf, 0x03, 0xb9, 0x99, 0x62, 0xd1,
         0xf4, 0x45])


def test_mc_root_key_from_app_key():
    assert crypto.mc_root_key(app_key=APP_KEY) == bytes(
        [0x26, 0x4f, 0xd8, 0x59, 0x58, 0x3f, 0xcc, 0x67, 0x02, 0x41, 0xac, 0x07, 0x1c, 0xc9,
         0xf5, 0xbb])


def test_mc_ke_key():
    assert crypto.mc_ke_key(MC_ROOT_KEY) == bytes(
        [0x90, 0x83, 0xbe, 0xbf, 0x70, 0x42, 0x57, 0x88, 0x31, 0x60, 0xdb, 0xfc, 0xde, 0x33,
         0xad, 0x71])


def test_mc_session_keys():
    assert crypto.mc_app_s_key(MC_KEY, MC_ADDR) == bytes(
        [0x95, 0xcb, 0x45, 0x18, 0xee, 0x37, 0x56, 0x06, 0x73, 0x5b, 0xba, 0xcb, 0xdc, 0xe8,
         0x37, 0xfa])
    assert crypto.mc_nwk_s_key(MC_KEY, MC_ADDR) == bytes(
        [0xc3, 0xf6, 0xb3, 0x88, 0xba, 0xd6, 0xc0, 0x00, 0xb2, 0x32, 0x91, 0xad, 0x52, 0xc1,
         0x1c, 0x7b])


def test_device_recovers_mc_key_from_chirpstack_encryption():
    # ChirpStack encrypt_mc_key(ke = 0x01 x 16, mc = 0x02 x 16) (the server side)
    encrypted = bytes([52, 55, 214, 226, 49, 215, 2, 65, 155, 81, 180, 148, 114, 113, 182, 17])
    assert crypto.decrypt_mc_key(bytes([1] * 16), encrypted) == bytes([2] * 16)


def test_cmac_rfc4493():
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    msg = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    assert crypto.aes_cmac(key, msg) == bytes.fromhex("070a16b46b4d4144f79bdd9dd04a287c")


def test_data_block_mic_layout():
    key = bytes(range(16))
    int_key = crypto.data_block_int_key(key)
    assert int_key == crypto.aes128_encrypt(key, bytes([0x30]) + bytes(15))
    data = bytes(range(100))
    b0 = bytes([0x49, 0x34, 0x12, 2, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 100, 0, 0, 0])
    expected = crypto.aes_cmac(int_key, b0 + data)[:4]
    assert crypto.data_block_mic(int_key, 0x1234, 2, bytes.fromhex("deadbeef"), data) == expected
    assert crypto.data_block_mic(int_key, 0x1235, 2, bytes.fromhex("deadbeef"), data) != expected


def test_root_key_selection_and_errors():
    assert crypto.root_key_for("1.0.4", gen_app_key=GEN_APP_KEY, app_key=None) == GEN_APP_KEY
    assert crypto.root_key_for("1.1.0", gen_app_key=None, app_key=APP_KEY) == APP_KEY
    with pytest.raises(ValueError):
        crypto.root_key_for("1.1", gen_app_key=GEN_APP_KEY, app_key=None)
    with pytest.raises(ValueError):
        crypto.mc_root_key(gen_app_key=GEN_APP_KEY, app_key=APP_KEY)
    with pytest.raises(ValueError):
        crypto.aes128_encrypt(b"short", bytes(16))
    with pytest.raises(ValueError):
        crypto.mc_app_s_key(MC_KEY, 1 << 32)
