"""The frame the emulated mesh carries: an APS data frame (addressing, endpoints, profile,
cluster, payload) -- what a Zigbee stack hands to and receives from its application."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ApsFrame", "UNICAST", "BROADCAST", "GROUP", "BCAST_ALL", "BCAST_RX_ON",
           "BCAST_ROUTERS", "ZDO_PROFILE", "HA_PROFILE"]

UNICAST = "unicast"
BROADCAST = "broadcast"
GROUP = "group"
BCAST_ALL = 0xFFFF          # every device, sleepy ones through their parents
BCAST_RX_ON = 0xFFFD        # devices with the receiver on when idle
BCAST_ROUTERS = 0xFFFC      # routers and the coordinator
ZDO_PROFILE = 0x0000
HA_PROFILE = 0x0104


@dataclass(frozen=True)
class ApsFrame:
    src: int                # NWK address of the sender
    dst: int                # NWK address, broadcast address or group id
    profile: int
    cluster: int
    src_ep: int
    dst_ep: int
    payload: bytes
    mode: str = UNICAST
    counter: int = 0        # APS counter

    def accepts(self, rx_on: bool, router: bool) -> bool:
        """Whether a node of that kind takes this broadcast."""
        if self.mode != BROADCAST:
            return True
        if self.dst == BCAST_ALL:
            return True
        if self.dst == BCAST_RX_ON:
            return rx_on
        if self.dst == BCAST_ROUTERS:
            return router
        return False
