"""Emulated LoRaWAN radio: end devices with their own TS003/TS004/TS005/TS006 stack, the
radio channel between them and one gateway, and the PHY rules (regions, time on air, duty
cycle). An independent peer of proxyota: nothing here imports proxyota.

Modules: `phy` (regions, time on air, duty cycle, class A/B/C timing), `crypto` (multicast
keys, data-block MIC), `appcodec` (the device's frame codec), `fragdecoder` (its TS004 FEC
decoder), `firmware` (image checks), `channel` (loss models), `device` (the end device),
`network` (an event-driven radio network in emulated time).
"""

from radio_emulators.lorawan.channel import (Combined, Dead, GilbertElliott, IndependentLoss,
                                             JoinLate, Offline, Perfect)
from radio_emulators.lorawan.device import (IDEAL, LBM, LORAMAC_NODE, PROFILES, Battery,
                                            DeviceProfile, EndDevice, Uplink)
from radio_emulators.lorawan.firmware import DigestImageVerifier, ImageCheck, make_test_image
from radio_emulators.lorawan.fragdecoder import FragDecoder, encode_fragments, parity_line
from radio_emulators.lorawan.network import DownlinkTx, MulticastGroup, Network, UplinkEvent
from radio_emulators.lorawan.phy import EU868, US915, DutyCycle, lora_time_on_air, time_on_air

__all__ = [
    "Combined", "Dead", "GilbertElliott", "IndependentLoss", "JoinLate", "Offline", "Perfect",
    "IDEAL", "LBM", "LORAMAC_NODE", "PROFILES", "Battery", "DeviceProfile", "EndDevice",
    "Uplink", "DigestImageVerifier", "ImageCheck", "make_test_image", "FragDecoder",
    "encode_fragments", "parity_line", "DownlinkTx", "MulticastGroup", "Network", "UplinkEvent",
    "EU868", "US915", "DutyCycle", "lora_time_on_air", "time_on_air",
]
