"""IEEE 802.15.4 (2.4 GHz O-QPSK) frame sizes, airtime and MAC timing used by the emulated
mesh, and the airtime lower bound an OTA campaign is compared with.

Facts (IEEE 802.15.4-2006 and Zigbee PRO): 250 kbit/s, i.e. 32 us per byte, 16 us per
symbol; a PPDU carries 6 bytes of PHY overhead (4 preamble, 1 SFD, 1 length) and at most
127 bytes of PSDU; a MAC ACK is a 5-byte PSDU sent aTurnaroundTime (12 symbols, 192 us)
after the frame; a sender waits macAckWaitDuration (54 symbols, 864 us) for it; CSMA-CA
backs off a random number of unit periods (20 symbols, 320 us) in [0, 2^BE - 1], BE from
macMinBE = 3, and checks the channel for 8 symbols (128 us); macMaxFrameRetries = 3.

A unicast data frame between neighbours carries: MAC header 9 bytes (frame control 2,
sequence 1, PAN id 2, short destination 2, short source 2) + FCS 2; NWK header 8 bytes
(frame control 2, destination 2, source 2, radius 1, sequence 1); NWK security: auxiliary
header 14 bytes (control 1, frame counter 4, source IEEE 8, key sequence 1) + MIC 4; APS
header 8 bytes (frame control 1, destination endpoint 1, cluster 2, profile 2, source
endpoint 1, APS counter 1). That is 45 bytes of headers in the 127-byte PSDU, which leaves
the well-known 82 bytes for the APS payload (ZCL header + command) without APS
fragmentation. (Source routing and APS encryption would shrink it; not modelled.)
An APS ACK is an 8-byte NWK header, 18 bytes of NWK security and a 7-byte APS ack header
(frame control, destination endpoint, cluster, profile, source endpoint, counter) plus the
MAC header: 11 + 8 + 18 + 7 = 44-byte PSDU. A MAC data request (a sleepy end device's
poll) is a 10-byte MAC command frame + FCS = 12 bytes (short addresses, PAN compression).
"""

from __future__ import annotations

import math

__all__ = [
    "BITRATE", "BYTE_S", "PHY_OVERHEAD", "MAX_PSDU", "MAC_OVERHEAD", "NWK_OVERHEAD",
    "APS_OVERHEAD", "MAX_APS_PAYLOAD", "ACK_PSDU", "APS_ACK_PSDU", "POLL_PSDU", "TURNAROUND_S",
    "ACK_WAIT_S", "BACKOFF_UNIT_S", "CCA_S", "frame_airtime", "data_psdu", "airtime_bound_s",
    "ota_frame_sizes",
]

BITRATE = 250_000
BYTE_S = 8 / BITRATE                  # 32 us
PHY_OVERHEAD = 6
MAX_PSDU = 127
MAC_OVERHEAD = 11
NWK_OVERHEAD = 8 + 14 + 4
APS_OVERHEAD = 8
MAX_APS_PAYLOAD = MAX_PSDU - MAC_OVERHEAD - NWK_OVERHEAD - APS_OVERHEAD   # 82
ACK_PSDU = 5
APS_ACK_PSDU = MAC_OVERHEAD + NWK_OVERHEAD + 7
POLL_PSDU = 12
SYMBOL_S = 16e-6
TURNAROUND_S = 12 * SYMBOL_S          # 192 us
ACK_WAIT_S = 54 * SYMBOL_S            # 864 us
BACKOFF_UNIT_S = 20 * SYMBOL_S        # 320 us
CCA_S = 8 * SYMBOL_S                  # 128 us

# ZCL header (frame control, tsn, command) + OTA command fields
ZCL_HEADER = 3
BLOCK_RSP_FIELDS = 14                 # status, mfr, type, version, offset, data length
BLOCK_REQ_FIELDS = 18                 # field control, mfr, type, version, offset, max size


def frame_airtime(psdu_bytes: int) -> float:
    """Seconds on air of one PPDU with `psdu_bytes` of PSDU."""
    return (PHY_OVERHEAD + psdu_bytes) * BYTE_S


def data_psdu(aps_payload: int) -> int:
    """PSDU size of a data frame carrying `aps_payload` bytes of APS payload."""
    return MAC_OVERHEAD + NWK_OVERHEAD + APS_OVERHEAD + aps_payload


def ota_frame_sizes(block_size: int) -> tuple[int, int]:
    """APS payload bytes of (ImageBlockResponse with `block_size` data bytes,
    ImageBlockRequest)."""
    return ZCL_HEADER + BLOCK_RSP_FIELDS + block_size, ZCL_HEADER + BLOCK_REQ_FIELDS


def _exchange_s(psdu: int) -> float:
    """A frame and its MAC ACK on one hop, no backoff."""
    return frame_airtime(psdu) + TURNAROUND_S + frame_airtime(ACK_PSDU)


def airtime_bound_s(image_bytes: int, *, hops: int | list[int] = 1,
                    block_size: int = MAX_APS_PAYLOAD - ZCL_HEADER - BLOCK_RSP_FIELDS,
                    request_per_block: bool = True) -> float:
    """A lower bound, in seconds, on the time to deliver an image of `image_bytes` to
    nodes at the given hop counts (one int = one node), from channel time alone.

    Each block costs, on every hop of its path, one ImageBlockResponse carrying
    `block_size` bytes (default: the most an unfragmented 82-byte APS payload holds, 65)
    and, with `request_per_block`, the ImageBlockRequest that asked for it, each with its
    MAC ACK and turnaround -- no CSMA backoff, no loss, no processing, no APS ACKs, no
    polls. Two constraints, the bound is the larger:

    - the coordinator's radio is half-duplex and takes part in the first hop of every
      frame of every node: the sum over nodes of blocks x per-hop cost;
    - one node's download is stop-and-wait (a block is requested after the previous one
      arrived), so its blocks cross its hops one after another: blocks x hops x per-hop
      cost for the deepest node.

    Usable throughput at 250 kbit/s is thus about block_size / per-hop cost (~ 14 kB/s at
    65-byte blocks for one hop, before any real-world overhead); a measured makespan
    divided by this bound says how close a server gets to what the channel allows.
    """
    if image_bytes <= 0:
        return 0.0
    if block_size <= 0:
        raise ValueError("block_size must be > 0")
    per_node_hops = [hops] if isinstance(hops, int) else list(hops)
    if not per_node_hops or min(per_node_hops) < 1:
        raise ValueError("hops must be >= 1 for every node")
    blocks = math.ceil(image_bytes / block_size)
    rsp, req = ota_frame_sizes(block_size)
    per_hop = _exchange_s(data_psdu(rsp)) + (_exchange_s(data_psdu(req)) if request_per_block else 0.0)
    coordinator = blocks * per_hop * len(per_node_hops)
    chain = blocks * per_hop * max(per_node_hops)
    return max(coordinator, chain)
