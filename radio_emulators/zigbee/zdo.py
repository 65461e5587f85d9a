"""The emulated node's ZDO (endpoint 0, profile 0x0000) requests and responses: what zigpy
sends when it interviews a joined device (Node_Desc_req, Active_EP_req, Simple_Desc_req),
address look-ups, bind and leave, and the node's Device_annce. A response uses the
request's cluster id | 0x8000 and starts with the request's transaction sequence number.

Node descriptor (13 bytes): logical type (b0-2) + flags, APS flags + frequency band (0x40 =
2.4 GHz), MAC capability flags, manufacturer code u16, maximum buffer size u8, maximum
incoming transfer size u16, server mask u16, maximum outgoing transfer size u16,
descriptor capability u8. Simple descriptor: endpoint u8, profile u16, device type u16,
version u8, input cluster count u8 + u16 list, output cluster count u8 + u16 list.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from radio_emulators.zigbee.zcl import FrameError

__all__ = [
    "ZDO", "ZdoStatus", "LogicalType", "MacCapability", "NodeDescriptor", "SimpleDescriptor",
    "node_desc_rsp", "active_ep_rsp", "simple_desc_rsp", "ieee_addr_rsp", "status_rsp",
    "device_annce", "parse_nwk_of_interest", "parse_simple_desc_req",
]


class ZDO:
    NWK_ADDR_REQ = 0x0000
    IEEE_ADDR_REQ = 0x0001
    NODE_DESC_REQ = 0x0002
    SIMPLE_DESC_REQ = 0x0004
    ACTIVE_EP_REQ = 0x0005
    MATCH_DESC_REQ = 0x0006
    DEVICE_ANNCE = 0x0013
    BIND_REQ = 0x0021
    UNBIND_REQ = 0x0022
    MGMT_LQI_REQ = 0x0031
    MGMT_RTG_REQ = 0x0032
    MGMT_LEAVE_REQ = 0x0034
    MGMT_PERMIT_JOINING_REQ = 0x0036
    MGMT_NWK_UPDATE_REQ = 0x0038
    RSP = 0x8000


class ZdoStatus:
    SUCCESS = 0x00
    INV_REQUESTTYPE = 0x80
    DEVICE_NOT_FOUND = 0x81
    INVALID_EP = 0x82
    NOT_ACTIVE = 0x83
    NOT_SUPPORTED = 0x84


class LogicalType:
    COORDINATOR = 0
    ROUTER = 1
    END_DEVICE = 2


class MacCapability:
    FFD = 0x02
    MAINS = 0x04
    RX_ON_WHEN_IDLE = 0x08
    ALLOCATE_ADDRESS = 0x80


@dataclass(frozen=True)
class NodeDescriptor:
    logical_type: int
    mac_capability: int
    manufacturer_code: int
    max_buffer_size: int = 82
    max_incoming_transfer: int = 82
    server_mask: int = 0
    max_outgoing_transfer: int = 82

    def encode(self) -> bytes:
        return struct.pack("<BBBHBHHHB", self.logical_type & 0x07, 0x40, self.mac_capability,
                           self.manufacturer_code, self.max_buffer_size, self.max_incoming_transfer,
                           self.server_mask, self.max_outgoing_transfer, 0)


@dataclass(frozen=True)
class SimpleDescriptor:
    endpoint: int
    profile: int
    device_type: int
    device_version: int
    input_clusters: tuple[int, ...]
    output_clusters: tuple[int, ...]

    def encode(self) -> bytes:
        out = struct.pack("<BHHB", self.endpoint, self.profile, self.device_type, self.device_version & 0x0F)
        out += bytes([len(self.input_clusters)]) + b"".join(struct.pack("<H", c) for c in self.input_clusters)
        out += bytes([len(self.output_clusters)]) + b"".join(struct.pack("<H", c) for c in self.output_clusters)
        return out


def parse_nwk_of_interest(payload: bytes, command: str) -> int:
    """Requests whose first field (after the tsn) is NWKAddrOfInterest u16."""
    if len(payload) < 2:
        raise FrameError("NWKAddrOfInterest truncated", command=command, offset=len(payload))
    return struct.unpack_from("<H", payload, 0)[0]


def parse_simple_desc_req(payload: bytes) -> tuple[int, int]:
    if len(payload) < 3:
        raise FrameError("truncated", command="Simple_Desc_req", offset=len(payload))
    nwk, ep = struct.unpack_from("<HB", payload, 0)
    return nwk, ep


def status_rsp(tsn: int, status: int) -> bytes:
    return bytes([tsn & 0xFF, status])


def node_desc_rsp(tsn: int, nwk: int, desc: NodeDescriptor) -> bytes:
    return bytes([tsn & 0xFF, ZdoStatus.SUCCESS]) + struct.pack("<H", nwk) + desc.encode()


def active_ep_rsp(tsn: int, nwk: int, endpoints: list[int]) -> bytes:
    return bytes([tsn & 0xFF, ZdoStatus.SUCCESS]) + struct.pack("<HB", nwk, len(endpoints)) + bytes(endpoints)


def simple_desc_rsp(tsn: int, nwk: int, desc: SimpleDescriptor | None) -> bytes:
    if desc is None:
        return bytes([tsn & 0xFF, ZdoStatus.NOT_ACTIVE]) + struct.pack("<HB", nwk, 0)
    body = desc.encode()
    return bytes([tsn & 0xFF, ZdoStatus.SUCCESS]) + struct.pack("<HB", nwk, len(body)) + body


def ieee_addr_rsp(tsn: int, ieee: bytes, nwk: int) -> bytes:
    """IEEE_addr_rsp / NWK_addr_rsp, single-device form: status, IEEE (LE), NWK."""
    return bytes([tsn & 0xFF, ZdoStatus.SUCCESS]) + bytes(ieee) + struct.pack("<H", nwk)


def device_annce(tsn: int, nwk: int, ieee: bytes, capability: int) -> bytes:
    return bytes([tsn & 0xFF]) + struct.pack("<H", nwk) + bytes(ieee) + bytes([capability])
