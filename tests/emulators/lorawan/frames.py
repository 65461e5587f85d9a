"""Test-side 'server': builds the downlink requests the emulated device receives and parses
its answers, with plain struct calls written from the spec tables (independently of the
device's own appcodec, and checked against ChirpStack's lrwn vectors in test_appcodec)."""

from __future__ import annotations

import math
import struct

from radio_emulators.lorawan import crypto
from radio_emulators.lorawan.device import EndDevice, Uplink

P_MC, P_FRAG, P_CLOCK, P_FMP = 200, 201, 202, 203

GEN_APP_KEY = bytes(range(1, 17))
APP_KEY = bytes(range(17, 33))
MC_KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
MC_ADDR = 0x01AB23CD


def p24(v: int) -> bytes:
    return bytes((v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF))


# --- TS003
def app_time_ans(corr: int, token: int) -> bytes:
    return b"\x01" + struct.pack("<iB", corr, token & 0x0F)


def periodicity_req(period: int) -> bytes:
    return bytes((0x02, period & 0x0F))


def force_resync(nb: int) -> bytes:
    return bytes((0x03, nb & 0x07))


# --- TS005
def mc_group_status_req(mask: int) -> bytes:
    return bytes((0x01, mask & 0x0F))


def encrypted_mc_key(mc_key: bytes = MC_KEY, *, gen_app_key: bytes | None = GEN_APP_KEY,
                     app_key: bytes | None = None) -> bytes:
    """What the server sends: aes128_decrypt(McKEKey, McKey)."""
    if app_key is not None:
        root = crypto.mc_root_key(app_key=app_key)
    else:
        root = crypto.mc_root_key(gen_app_key=gen_app_key)
    return crypto.aes128_decrypt(crypto.mc_ke_key(root), mc_key)


def mc_group_setup_req(gid: int, addr: int = MC_ADDR, key_enc: bytes | None = None,
                       fmin: int = 0, fmax: int = 0xFFFFFFFF) -> bytes:
    key_enc = encrypted_mc_key() if key_enc is None else key_enc
    return bytes((0x02, gid & 0x03)) + struct.pack("<I", addr) + key_enc + struct.pack(
        "<II", fmin, fmax)


def mc_group_delete_req(gid: int) -> bytes:
    return bytes((0x03, gid & 0x03))


def mc_class_c_req(gid: int, session_time: int, timeout: int, freq_hz: int = 869_525_000,
                   dr: int = 0) -> bytes:
    return bytes((0x04, gid)) + struct.pack("<I", session_time) + bytes((timeout & 0x0F,)) \
        + p24(freq_hz // 100) + bytes((dr,))


def mc_class_b_req(gid: int, session_time: int, timeout: int, periodicity: int,
                   freq_hz: int = 869_525_000, dr: int = 3) -> bytes:
    return bytes((0x05, gid)) + struct.pack("<I", session_time) + bytes(
        (((periodicity & 7) << 4) | (timeout & 0x0F),)) + p24(freq_hz // 100) + bytes((dr,))


# --- TS004
def frag_status_req(index: int, participants: bool = True) -> bytes:
    return bytes((0x01, ((index & 3) << 1) | (1 if participants else 0)))


def frag_setup_req(index: int, nb_frag: int, frag_size: int, *, mask: int = 0b0001,
                   algo: int = 0, block_ack_delay: int = 0, padding: int = 0,
                   descriptor: bytes = b"\x00\x00\x00\x00", version: int = 1,
                   ack_reception: bool = False, session_cnt: int = 0,
                   mic: bytes = b"\x00\x00\x00\x00") -> bytes:
    control = ((algo & 7) << 3) | (block_ack_delay & 7) | (0x40 if ack_reception else 0)
    out = bytes((0x02, ((index & 3) << 4) | (mask & 0x0F))) + struct.pack("<H", nb_frag) \
        + bytes((frag_size, control, padding)) + descriptor
    if version >= 2:
        out += struct.pack("<H", session_cnt) + mic
    return out


def frag_delete_req(index: int) -> bytes:
    return bytes((0x03, index & 3))


def block_received_ans(index: int) -> bytes:
    return bytes((0x04, index & 3))


def data_fragment(index: int, n: int, data: bytes) -> bytes:
    return b"\x08" + struct.pack("<H", ((index & 3) << 14) | (n & 0x3FFF)) + data


# --- TS006
def dev_version_req() -> bytes:
    return b"\x01"


def reboot_time_req(t: int) -> bytes:
    return b"\x02" + struct.pack("<I", t)


def reboot_countdown_req(c: int) -> bytes:
    return b"\x03" + p24(c)


def upgrade_image_req() -> bytes:
    return b"\x04"


def delete_image_req(version: int) -> bytes:
    return b"\x05" + struct.pack("<I", version)


# --- answers
def status_ans(payload: bytes, version: int) -> dict:
    """Parse one FragSessionStatusAns (with its CID)."""
    assert payload[0] == 0x01
    if version >= 2:
        st = payload[1]
        rai, missing = struct.unpack_from("<HB", payload, 2)
        return {"index": rai >> 14, "received": rai & 0x3FFF, "missing": missing,
                "memory_error": bool(st & 1), "mic_error": bool(st & 2),
                "no_session": bool(st & 4), "len": len(payload)}
    rai, missing, st = struct.unpack_from("<HBB", payload, 1)
    return {"index": rai >> 14, "received": rai & 0x3FFF, "missing": missing,
            "memory_error": bool(st & 1), "len": len(payload)}


# --- driving a device
def drain(dev: EndDevice, until: float, start: float | None = None) -> list[Uplink]:
    """Poll the device at each of its deadlines up to `until`; return what it sent."""
    out: list[Uplink] = []
    t = dev.next_deadline()
    guard = 0
    while t is not None and t <= until:
        out += dev.poll(t)
        nxt = dev.next_deadline()
        if nxt is not None and nxt <= t:
            guard += 1
            assert guard < 1000, "device does not advance"
        t = nxt
    return out


def on_port(ups: list[Uplink], port: int) -> list[bytes]:
    return [u.payload for u in ups if u.fport == port]


def session_time_after(dev: EndDevice, now: float, seconds: float) -> int:
    """A SessionTime `seconds` ahead by the device's own clock."""
    return int(math.floor(dev.local_time(now))) + int(seconds)
