"""Emulated radio networks (ChirpStack + LoRa end devices, a Zigbee mesh) that stand in
for real hardware. Independent peers: nothing here imports proxyota's codecs, FEC or
session logic."""
