"""A test bench around one emulated device: an emulated clock that only moves forward,
unicast requests answered within a window, multicast fragments, image helpers."""

from __future__ import annotations

import hashlib

from radio_emulators.lorawan.device import LORAMAC_NODE, DeviceProfile, EndDevice, Uplink
from radio_emulators.lorawan.firmware import make_test_image
from radio_emulators.lorawan.fragdecoder import encode_fragments

from . import frames as F

T0 = 1_400_000_000.0
DEV_EUI = bytes.fromhex("0011223344556677")


class Bench:
    def __init__(self, profile: DeviceProfile = LORAMAC_NODE, **kw) -> None:
        kw.setdefault("gen_app_key", F.GEN_APP_KEY)
        kw.setdefault("strict_rx_windows", False)
        kw.setdefault("uplink_period", None)
        kw.setdefault("time_sync_at_boot", False)
        kw.setdefault("time_sync_period", None)
        self.dev = EndDevice(profile, kw.pop("dev_eui", DEV_EUI), now=T0, **kw)
        self.t = T0 + 10.0
        self.sent: list[Uplink] = []
        self.accepted: bool | None = None

    @property
    def version(self) -> int:
        return self.dev.profile.packages.get(3, 1)

    def advance(self, seconds: float) -> list[Uplink]:
        ups = F.drain(self.dev, self.t + seconds)
        self.t += seconds
        self.sent += ups
        return ups

    def send(self, port: int, payload: bytes, *, window: float = 120.0, **kw) -> list[bytes]:
        """A downlink now; the answers the device sends on that port within `window`."""
        self.t += 1.0
        self.accepted = self.dev.on_downlink(port, payload, self.t, **kw)
        return F.on_port(self.advance(window), port)

    def mc(self, port: int, payload: bytes, *, addr: int = F.MC_ADDR, dt: float = 1.0,
           **kw) -> bool:
        self.t += dt
        self.accepted = self.dev.on_downlink(port, payload, self.t, mc_addr=addr, **kw)
        return self.accepted

    def setup_group(self, gid: int = 0, addr: int = F.MC_ADDR, **kw) -> list[bytes]:
        return self.send(F.P_MC, F.mc_group_setup_req(gid, addr, **kw))

    def open_class_c(self, gid: int = 0, *, lead: float = 30.0, timeout: int = 14,
                     freq: int = 869_525_000, dr: int = 0, wait: bool = True) -> list[bytes]:
        """Class C session starting `lead` s ahead by the device clock; with `wait`, move
        the clock to just after the start (as seen by the device)."""
        st = F.session_time_after(self.dev, self.t + 1.0, lead)
        ans = self.send(F.P_MC, F.mc_class_c_req(gid, st, timeout, freq, dr), window=5.0)
        if wait:
            target = self.dev.clock.true_at(st) + 0.5
            if target > self.t:
                self.advance(target - self.t)
        return ans

    def stream(self, frags: list[bytes], order, *, index: int = 0, **kw) -> list[bool]:
        return [self.mc(F.P_FRAG, F.data_fragment(index, n, frags[n - 1]), **kw) for n in order]


def image_block(version: int, hw: int = 1, size: int = 1000, frag_size: int = 48,
                seed: int = 0) -> tuple[bytes, int, int]:
    """(padded block, NbFrag, padding) of a test image."""
    body = hashlib.sha256(bytes([seed])).digest() * (size // 32 + 1)
    img = make_test_image(body[:size], version, hw)
    pad = (-len(img)) % frag_size
    blk = img + bytes(pad)
    return blk, len(blk) // frag_size, pad


def fragments(block: bytes, frag_size: int, redundancy: int, version: int) -> list[bytes]:
    return encode_fragments(block, frag_size, redundancy, version)
