"""Emulated Zigbee mesh as a zigpy radio library, with emulated OTA client devices. An
independent peer of proxyota: nothing here imports proxyota; it has its own OTA cluster
codec (`ota_codec`), OTA file checks (`otafile`) and AES-MMO (`aesmmo`).

Modules: `phy` (802.15.4 frame sizes, airtime, the campaign airtime bound), `topology`
(seeded coordinator/router/end-device tree), `mesh` (radio model: per-hop latency, loss
with MAC retries, APS retries, airtime per neighbourhood, sleepy indirect delivery,
broadcast), `devices` (profiles and quirk presets), `ota_client` (sans-IO device-side OTA
client), `node` (ZDO/ZCL responders, flash, faults), `network` (emulated-time runtime,
fault hooks, reports), `radio` (zigpy `ControllerApplication` over the network),
`looptime` (an asyncio loop on emulated time, so zigpy's own timers are emulated too).
"""

from radio_emulators.zigbee.aps import ApsFrame
from radio_emulators.zigbee.looptime import LoopClock, VirtualTimeEventLoop, run_virtual
from radio_emulators.zigbee.devices import END_DEVICE, PROFILES, ROUTER, SLEEPY, DeviceProfile, profile
from radio_emulators.zigbee.mesh import Mesh, MeshConfig, MeshStats, UnicastPlan
from radio_emulators.zigbee.network import (HostSendResult, NetworkReport, NetworkSettings, NodeReport,
                                            ZigbeeNetwork, lookup_network, register_network)
from radio_emulators.zigbee.node import EmulatedNode
from radio_emulators.zigbee.ota_client import OtaClient, OtaState, OtaStorage
from radio_emulators.zigbee.otafile import build_ota_image, verify_image
from radio_emulators.zigbee.phy import airtime_bound_s
from radio_emulators.zigbee.topology import Topology

__all__ = [
    "ApsFrame", "END_DEVICE", "PROFILES", "ROUTER", "SLEEPY", "DeviceProfile", "profile", "Mesh",
    "MeshConfig", "MeshStats", "UnicastPlan", "HostSendResult", "NetworkReport", "NetworkSettings",
    "NodeReport", "ZigbeeNetwork", "lookup_network", "register_network", "EmulatedNode", "OtaClient",
    "OtaState", "OtaStorage", "build_ota_image", "verify_image", "airtime_bound_s", "Topology",
    "EmulatedControllerApplication", "emulated_config", "LoopClock", "VirtualTimeEventLoop", "run_virtual",
]


def __getattr__(name: str):
    # radio.py imports zigpy; load it only when asked for
    if name in ("EmulatedControllerApplication", "emulated_config"):
        from radio_emulators.zigbee import radio
        return getattr(radio, name)
    raise AttributeError(name)
