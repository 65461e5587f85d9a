"""The emulated device's TS006 side and its A/B slots: image checks, scheduled reboots by
its own clock, DevVersion after reboot, rollback on a failed self-test."""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import replace

import pytest

from radio_emulators.lorawan.device import IDEAL, LBM, LORAMAC_NODE
from radio_emulators.lorawan.firmware import (DigestImageVerifier, ImageCheck, make_test_image,
                                              normalize_check)

from . import frames as F
from .bench import Bench, fragments, image_block

H = bytes.fromhex


def with_image(profile=IDEAL, *, version=5, hw=1, corrupt=False, **kw) -> Bench:
    """A device that received a complete image block by unicast fragments."""
    b = Bench(profile, fw_version=4, **kw)
    blk, m, pad = image_block(version, hw=hw, size=300, frag_size=30)
    if corrupt:
        blk = blk[:40] + bytes([blk[40] ^ 1]) + blk[41:]
    b.send(201, F.frag_setup_req(0, m, 30, padding=pad))
    for n, f in enumerate(fragments(blk, 30, 0, 1), start=1):
        b.send(201, F.data_fragment(0, n, f), window=0)
    return b


def upgrade_status(b: Bench) -> bytes:
    return b.send(203, F.upgrade_image_req())[0]


def test_dev_version_and_no_image():
    b = Bench(IDEAL, fw_version=0x01020304, hw_version=9)
    assert b.send(203, F.dev_version_req()) == [H("01" "04030201" "09000000")]
    assert upgrade_status(b) == H("0400")


@pytest.mark.parametrize("kw,status", [
    (dict(), H("0403" "05000000")),
    (dict(corrupt=True), H("0401")),
    (dict(hw=2), H("0402")),
])
def test_upgrade_image_status(kw, status):
    b = with_image(**kw)
    assert upgrade_status(b) == status


def test_scheduled_reboot_by_device_clock_installs_the_new_version():
    b = with_image(clock_offset=-20.0)            # the device clock is 20 s behind
    gps = int(b.t + 1) + 300                      # the server means 300 s from now
    ans = b.send(203, F.reboot_time_req(gps), window=1)
    assert ans == [H("02") + struct.pack("<I", 320)]   # the device counts 320 s
    true_reboot = b.dev.clock.true_at(gps)
    assert true_reboot == pytest.approx(gps + 20, abs=1e-6)   # 20 s late in true time
    b.advance(true_reboot - b.t - 1)
    assert b.dev.fw_version == 4 and b.dev.reboots == 0
    ups = b.advance(30)
    assert b.dev.reboots == 1 and b.dev.fw_version == 5 and b.dev.previous_version == 4
    assert [u.payload for u in ups if u.fport == 203] == [H("01" "05000000" "01000000")]
    assert upgrade_status(b) == H("0400")         # the slot was consumed
    assert b.send(203, F.dev_version_req())[0][1:5] == H("05000000")


def test_failed_self_test_rolls_back():
    b = with_image(self_test=lambda v: v != 5)
    assert b.send(203, F.reboot_countdown_req(60), window=1) == [H("033c0000")]
    ups = b.advance(120)
    assert b.dev.reboots == 1 and b.dev.rollbacks == 1
    assert b.dev.fw_version == 4
    assert [u.payload for u in ups if u.fport == 203] == [H("01" "04000000" "01000000")]
    assert b.dev.counters["boot.rollback"] == 1


def test_reboot_now_cancel_and_past():
    b = with_image()
    assert b.send(203, F.reboot_countdown_req(600), window=1) == [H("03580200")]
    assert b.send(203, F.reboot_countdown_req(0xFFFFFF), window=5) == [H("03ffffff")]
    b.advance(1000)
    assert b.dev.reboots == 0
    past = math.floor(b.dev.local_time(b.t)) - 10
    assert b.send(203, F.reboot_time_req(past)) == [H("0200000000")]
    assert b.send(203, F.reboot_time_req(past + 5000), window=1) != []
    assert b.send(203, F.reboot_time_req(0xFFFFFFFF)) == [H("02ffffffff")]
    assert b.dev.reboot_at is None
    assert b.send(203, F.reboot_time_req(0), window=10) == [H("01" "05000000" "01000000")]
    assert b.dev.reboots == 1 and b.dev.fw_version == 5           # rebooted at once


def test_reboot_countdown_zero_is_immediate_without_image():
    b = Bench(LBM)
    b.send(203, F.reboot_countdown_req(0), window=10)
    assert b.dev.reboots == 1 and b.dev.fw_version == 1
    assert b.dev.counters["boot.same-image"] == 1


def test_reboot_clears_sessions_but_keeps_groups():
    b = with_image()
    b.setup_group(0)
    b.open_class_c(0)
    b.send(201, F.frag_setup_req(1, 10, 10))
    b.send(203, F.reboot_countdown_req(0), window=5)
    assert 0 in b.dev.mc_groups and b.dev.mc_groups[0].session is None
    assert b.dev.frag_sessions == {}


def test_delete_image():
    assert with_image(corrupt=True).send(203, F.delete_image_req(5)) == [H("0501")]
    b = with_image()
    assert b.send(203, F.delete_image_req(6)) == [H("0502")]
    assert b.send(203, F.delete_image_req(5)) == [H("0500")]
    assert upgrade_status(b) == H("0400")


def test_stack_without_ts006_reboots_by_itself():
    prof = replace(LORAMAC_NODE, packages={1: 1, 2: 1, 3: 1}, auto_reboot_after_image=30.0)
    b = with_image(prof, uplink_period=600.0)
    assert b.send(203, F.dev_version_req()) == []
    b.advance(700)
    assert b.dev.fw_version == 5
    app = [u.payload for u in b.sent if u.fport == 2]
    assert struct.unpack("<IBH", app[-1])[0] == 5           # visible in the app uplinks


def test_fmp_by_multicast_only_if_the_profile_accepts_it():
    b = Bench(LBM)
    b.setup_group(0)
    b.open_class_c(0)
    b.mc(203, F.dev_version_req())
    assert [u for u in b.advance(30) if u.fport == 203] == []
    b2 = Bench(LBM, fmp_multicast=True)
    b2.setup_group(0)
    b2.open_class_c(0)
    b2.mc(203, F.dev_version_req())
    assert [u.payload for u in b2.advance(30) if u.fport == 203] == [H("01" "01000000"
                                                                        "01000000")]


def test_default_verifier():
    img = make_test_image(b"firmware", 3, 7)
    v = DigestImageVerifier(7)
    assert v(img) == ImageCheck(True, 3, "digest ok")
    assert v(img[:-1] + bytes([img[-1] ^ 1])).reason == "digest mismatch"
    assert DigestImageVerifier(8)(img).wrong_hw
    assert not v(b"EMUFW0" + img[6:]).ok
    assert not v(b"short").ok
    assert not v(img + b"\x00").ok
    prov = DigestImageVerifier(1, {hashlib.sha256(b"blob").digest(): 42})
    assert prov(b"blob") == ImageCheck(True, 42, "provisioned digest")
    assert not prov(b"other").ok
    assert normalize_check((True, 9, "ok")) == ImageCheck(True, 9, "ok")
    with pytest.raises(TypeError):
        normalize_check("yes")


def test_pluggable_verifier_sees_the_unpadded_block():
    seen = []

    def verifier(block: bytes):
        seen.append(block)
        return (True, 77, "envelope ok")

    b = Bench(IDEAL, image_verifier=verifier)
    data = b"\x42" * 95
    b.send(201, F.frag_setup_req(0, 10, 10, padding=5))
    for n, f in enumerate(fragments(data + bytes(5), 10, 0, 1), start=1):
        b.send(201, F.data_fragment(0, n, f), window=0)
    assert seen == [data]
    assert upgrade_status(b) == H("0403" "4d000000")
