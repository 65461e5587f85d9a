"""Build an emulated LoRaWAN network for a FUOTA campaign in a few lines: N devices of the
given stack profiles with seeded keys, loss channels and dead devices, ready to hand to
`EmulatedChirpStack`.

    cn = build_campaign_network(50, losses=0.1, dead=2, seed=7, start=clock.now())
    cs = EmulatedChirpStack(cn.network, clock, api_token=..., integration_url=...,
                            application_id=..., device_keys=cn.keys)
"""

from __future__ import annotations

import math
import random
import struct
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence, Union

from radio_emulators.lorawan.channel import (ChannelModel, Combined, Dead, GilbertElliott,
                                             IndependentLoss, Perfect)
from radio_emulators.lorawan.chirpstack_core import DeviceKeys
from radio_emulators.lorawan.device import PROFILES, DeviceProfile, EndDevice
from radio_emulators.lorawan.firmware import ImageVerifier
from radio_emulators.lorawan.network import Network
from radio_emulators.lorawan.phy import EU868, REGIONS, Region

__all__ = ["CampaignNetwork", "build_campaign_network", "dev_eui_for"]

LossSpec = Union[float, Sequence[float], Callable[[int, random.Random], ChannelModel], None]


@dataclass
class CampaignNetwork:
    network: Network
    devices: list[EndDevice]
    keys: dict[bytes, DeviceKeys]          # DevEUI -> keys (as ChirpStack's GetKeys gives)
    dead: set[bytes] = field(default_factory=set)

    @property
    def dev_euis(self) -> list[bytes]:
        return [d.dev_eui for d in self.devices]


def dev_eui_for(i: int, base: int = 0x70B3D57ED0000000) -> bytes:
    return struct.pack(">Q", base + i)


def _channel(spec: LossSpec, i: int, rng: random.Random, burst: float | None) -> ChannelModel:
    if spec is None:
        return Perfect()
    if callable(spec):
        return spec(i, rng)
    p = float(spec[i]) if isinstance(spec, Sequence) else float(spec)
    if p <= 0.0:
        return Perfect()
    if burst is not None and burst > 1.0:
        return GilbertElliott.from_mean(p, burst, random.Random(rng.getrandbits(64)))
    return IndependentLoss(p, random.Random(rng.getrandbits(64)))


def build_campaign_network(
        n_devices: int, *, losses: LossSpec = 0.0, uplink_losses: LossSpec = 0.0,
        burst: float | None = None, dead: int | Iterable[int] = 0,
        dead_at: float = -math.inf, seed: int = 0, region: Region | str = EU868,
        dr: int | None = None, profiles: Sequence[DeviceProfile | str] = ("loramac-node",),
        image_verifier: ImageVerifier | None = None, start: float = 1_400_000_000.0,
        mac_version: str = "1.0.4", fw_version: int = 1, hw_version: int = 1,
        uplink_period: float | None = 3600.0, clock_offset: float = 0.0,
        clock_drift_ppm: float = 0.0, gateway_duty_cycle: bool = True,
        eui_base: int = 0x70B3D57ED0000000, **device_kw) -> CampaignNetwork:
    """N devices on one gateway, reproducible from `seed`.

    losses / uplink_losses: a loss probability for all devices, one per device, or a
        factory (index, rng) -> ChannelModel; with `burst` (> 1 frames) the losses are
        Gilbert-Elliott bursts of that mean length.
    dead: how many devices (chosen at random) or which indices are dead from `dead_at`.
    profiles: stack profiles (DeviceProfile or name in PROFILES), assigned round-robin.
    clock_offset / clock_drift_ppm: spread: each device draws uniformly in +-value.
    Other keywords go to every EndDevice (e.g. time_sync_at_boot, self_test)."""
    if n_devices < 0:
        raise ValueError("n_devices must be >= 0")
    if isinstance(region, str):
        region = REGIONS[region]
    profs = [PROFILES[p] if isinstance(p, str) else p for p in profiles]
    if not profs:
        raise ValueError("give at least one device profile")
    rng = random.Random(seed)
    if isinstance(dead, int):
        if not 0 <= dead <= n_devices:
            raise ValueError("dead must be between 0 and n_devices")
        dead_idx = set(rng.sample(range(n_devices), dead))
    else:
        dead_idx = set(dead)
        if any(not 0 <= i < n_devices for i in dead_idx):
            raise ValueError("dead index out of range")
    net = Network(region, start=start, gateway_duty_cycle=gateway_duty_cycle)
    devices: list[EndDevice] = []
    keys: dict[bytes, DeviceKeys] = {}
    dead_euis: set[bytes] = set()
    one_one = mac_version.startswith("1.1")
    for i in range(n_devices):
        eui = dev_eui_for(i, eui_base)
        root = bytes(rng.getrandbits(8) for _ in range(16))
        nwk = bytes(rng.getrandbits(8) for _ in range(16))
        k = DeviceKeys(nwk_key=nwk, app_key=root if one_one else None,
                       gen_app_key=None if one_one else root)
        kw = dict(device_kw)
        if image_verifier is not None:
            kw["image_verifier"] = image_verifier
        dev = EndDevice(profs[i % len(profs)], eui,
                        gen_app_key=None if one_one else root,
                        app_key=root if one_one else None, mac_version=mac_version,
                        fw_version=fw_version, hw_version=hw_version, region=region,
                        uplink_dr=dr, now=start,
                        clock_offset=rng.uniform(-clock_offset, clock_offset),
                        clock_drift_ppm=rng.uniform(-clock_drift_ppm, clock_drift_ppm),
                        uplink_period=uplink_period, rng=random.Random(rng.getrandbits(64)),
                        **kw)
        down = _channel(losses, i, rng, burst)
        up = _channel(uplink_losses, i, rng, burst)
        if i in dead_idx:
            down = Combined(down, Dead(dead_at))
            dead_euis.add(eui)
        net.add_device(dev, downlink=down, uplink=up)
        devices.append(dev)
        keys[eui] = k
    return CampaignNetwork(net, devices, keys, dead_euis)
