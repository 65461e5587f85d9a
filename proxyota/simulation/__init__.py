"""Simulations: proxyota's gateway code run end to end against the emulated radios of
``radio_emulators`` on an emulated clock, reporting what a real network would take.

``zigbee``: an OTA campaign through the zigpy adapter against the emulated Zigbee mesh
(``proxyota simulate zigbee``). ``lorawan``: a FUOTA campaign through ChirpStack's APIs
against the emulated ChirpStack and end devices. The modules import zigpy, the emulators
and the network stacks only when used.
"""

from __future__ import annotations

__all__ = ["lorawan", "zigbee"]
