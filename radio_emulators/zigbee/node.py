"""An emulated Zigbee node: its ZDO and ZCL responders (what zigpy's interview and
attribute reads need), its OTA client, its flash (which survives reboots), its sleepy
polling, and the fault hooks (reboot, a corrupted block, power off).

Synchronous: the network calls `receive(frame, now)` and `on_timer(now)` and the node
hands frames back through `network.node_send(...)` and asks to be woken at
`deadline`. Endpoint 1 (Home Automation profile) holds the Basic and Identify servers
(+ Power Configuration on battery devices) and the OTA Upgrade client.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Protocol

from radio_emulators.zigbee import ota_codec as oc
from radio_emulators.zigbee import zcl, zdo
from radio_emulators.zigbee.aps import (BCAST_RX_ON, BROADCAST, HA_PROFILE, UNICAST, ZDO_PROFILE,
                                        ApsFrame)
from radio_emulators.zigbee.devices import DeviceProfile
from radio_emulators.zigbee.ota_client import (Activate, ClientStats, Offer, OtaClient, OtaState,
                                               OtaStorage, Send)
from radio_emulators.zigbee.topology import MeshNode
from radio_emulators.zigbee.zcl import DataType, Status, ZclFrame

__all__ = ["EmulatedNode", "NodeStats", "BASIC", "IDENTIFY", "POWER_CONFIGURATION", "OTA"]

BASIC = 0x0000
POWER_CONFIGURATION = 0x0001
IDENTIFY = 0x0003
OTA = oc.OTA_CLUSTER
ENDPOINT = 1


class NodeNetwork(Protocol):
    def node_send(self, node: "EmulatedNode", frame: ApsFrame, *, ack: bool) -> None: ...
    def node_rearm(self, node: "EmulatedNode") -> None: ...


@dataclass
class NodeStats:
    reboots: int = 0
    corrupted_blocks: int = 0
    activated_at: float | None = None
    version_reported_at: float | None = None
    versions: list[int] = field(default_factory=list)
    ota: ClientStats = field(default_factory=ClientStats)
    block_offsets: list[int] = field(default_factory=list)   # offsets of the blocks received
    frames_in: int = 0
    frames_out: int = 0


class EmulatedNode:
    def __init__(self, mesh_node: MeshNode, profile: DeviceProfile, network: NodeNetwork, *,
                 seed: int = 0, coordinator_ieee: bytes = b"\xff" * 8) -> None:
        if profile.sleepy != mesh_node.sleepy:
            profile = profile.with_(sleepy=mesh_node.sleepy)
        self.mesh_node = mesh_node
        self.profile = profile
        self.network = network
        self.rng = random.Random((seed << 20) ^ mesh_node.index)
        self.coordinator_ieee = coordinator_ieee
        self.current_file_version = profile.file_version
        self.storage = OtaStorage()
        self.stats = NodeStats(versions=[profile.file_version])
        self.client: OtaClient | None = None
        self.alive = False
        self.left = False
        self.boot_until: float | None = None
        self.last_tx = float("-inf")
        self.poll_phase = self.rng.uniform(0.0, profile.poll_period_s)
        self.server_nwk = 0x0000
        self.server_ep = ENDPOINT
        self.server_known = False
        self._tsn = self.rng.randrange(256)
        self._aps = self.rng.randrange(256)
        self._blocks_delivered = 0
        self._corrupt_at: set[int] = set()
        if profile.corrupt_block_index:
            self._corrupt_at.add(profile.corrupt_block_index)
        self._quirk_rebooted = False
        self._announce_on_boot = False
        self._sha256: dict[Offer, bytes] = {}
        self._activated_version: int | None = None

    # -- identity ----------------------------------------------------------------------------
    @property
    def nwk(self) -> int:
        return self.mesh_node.nwk

    @property
    def ieee(self) -> bytes:
        return self.mesh_node.ieee

    @property
    def is_router(self) -> bool:
        return self.mesh_node.is_router

    @property
    def sleepy(self) -> bool:
        return self.mesh_node.sleepy

    @property
    def battery(self) -> bool:
        return not self.mesh_node.is_router

    def node_descriptor(self) -> zdo.NodeDescriptor:
        if self.is_router:
            cap, ltype = 0x8E, zdo.LogicalType.ROUTER
        elif self.sleepy:
            cap, ltype = 0x80, zdo.LogicalType.END_DEVICE
        else:
            cap, ltype = 0x8C, zdo.LogicalType.END_DEVICE
        return zdo.NodeDescriptor(ltype, cap, self.profile.manufacturer_code)

    def simple_descriptor(self) -> zdo.SimpleDescriptor:
        inputs = (BASIC, POWER_CONFIGURATION, IDENTIFY) if self.battery else (BASIC, IDENTIFY)
        return zdo.SimpleDescriptor(ENDPOINT, HA_PROFILE, self.profile.device_type, 1, inputs, (OTA,))

    @property
    def capability(self) -> int:
        return self.node_descriptor().mac_capability

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def deadline(self) -> float | None:
        if self.left:
            return None
        if self.boot_until is not None:
            return self.boot_until
        if self.alive and self.client is not None:
            return self.client.deadline
        return None

    def power_on(self, now: float, *, boot_s: float | None = None, announce: bool = False) -> None:
        """Start booting: the node is deaf for the boot time, then runs."""
        if self.left:
            return
        self.alive = False
        self.client = None
        self.boot_until = now + (self.profile.boot_time_s if boot_s is None else boot_s)
        self._announce_on_boot = announce
        self.network.node_rearm(self)

    def start(self, now: float) -> None:
        """Already running at t = now (the network's initial state): no boot delay."""
        self.boot_until = None
        self._boot_done(now, announce=False)

    def _boot_done(self, now: float, *, announce: bool) -> None:
        self.boot_until = None
        self.alive = True
        self._tsn = self.rng.randrange(256)
        self.client = OtaClient(self.profile, self.storage, current_file_version=self.current_file_version,
                                rng=self.rng, stats=self.stats.ota, expected_sha256=self._sha256.get)
        self._run(self.client.start(now), now)
        if announce:
            self.announce(now)
        self.network.node_rearm(self)

    def power_off(self) -> None:
        self.alive = False
        self.client = None
        self.boot_until = None
        self.network.node_rearm(self)

    def reboot(self, now: float, *, down_s: float | None = None) -> None:
        """Lose RAM (timers, pending requests), keep flash, boot again."""
        if self.left:
            return
        self.stats.reboots += 1
        self.power_on(now, boot_s=down_s, announce=True)

    def leave(self) -> None:
        self.left = True
        self.power_off()

    def announce(self, now: float) -> None:
        payload = zdo.device_annce(self._next_tsn(), self.nwk, self.ieee, self.capability)
        self._send(ApsFrame(self.nwk, BCAST_RX_ON, ZDO_PROFILE, zdo.ZDO.DEVICE_ANNCE, 0, 0, payload,
                            mode=BROADCAST), now, ack=False)

    def on_timer(self, now: float) -> None:
        if self.left:
            return
        if self.boot_until is not None:
            if now >= self.boot_until:
                self._boot_done(now, announce=self._announce_on_boot)
            return
        if self.alive and self.client is not None:
            self._run(self.client.on_timer(now), now)
        self.network.node_rearm(self)

    # -- faults / provisioning --------------------------------------------------------------------
    def corrupt_block(self, k: int) -> None:
        """The k-th image block delivered from now on (1 = the next) gets one byte flipped."""
        if k < 1:
            raise ValueError("k must be >= 1")
        self._corrupt_at.add(self._blocks_delivered + k)

    def provision_sha256(self, manufacturer_code: int, image_type: int, file_version: int,
                         image_size: int, digest: bytes) -> None:
        """An out-of-band digest the node checks its next image of that identity against."""
        self._sha256[Offer(manufacturer_code, image_type, file_version, image_size)] = bytes(digest)

    # -- sleepy polling -------------------------------------------------------------------------------
    def next_poll(self, t: float) -> float | None:
        """The first data poll at or after t (None when the node is not running). Long polls
        every `poll_period_s`; short polls every `fast_poll_s` for `fast_poll_window_s` after
        each transmission and throughout an active OTA exchange (query, download, end)."""
        if not self.alive:
            return None
        p = self.profile
        slow = self.poll_phase + math.ceil((t - self.poll_phase) / p.poll_period_s) * p.poll_period_s
        in_ota = self.client is not None and self.client.state in (
            OtaState.QUERYING, OtaState.DOWNLOADING, OtaState.ENDING)
        if t <= self.last_tx + p.fast_poll_window_s or in_ota:
            anchor = self.last_tx if math.isfinite(self.last_tx) else self.poll_phase
            fast = anchor + max(0, math.ceil((t - anchor) / p.fast_poll_s)) * p.fast_poll_s
            return max(t, min(slow, fast))
        return max(t, slow)

    # -- sending ----------------------------------------------------------------------------------------
    def _next_tsn(self) -> int:
        self._tsn = (self._tsn + 1) & 0xFF
        return self._tsn

    def _send(self, frame: ApsFrame, now: float, *, ack: bool) -> None:
        self._aps = (self._aps + 1) & 0xFF
        frame = ApsFrame(frame.src, frame.dst, frame.profile, frame.cluster, frame.src_ep, frame.dst_ep,
                         frame.payload, frame.mode, self._aps)
        self.last_tx = now
        self.stats.frames_out += 1
        self.network.node_send(self, frame, ack=ack)

    def _send_ota(self, command, now: float) -> None:
        ddr = not isinstance(command, oc.UpgradeEndRequest)
        payload = ZclFrame(command.command_id, self._next_tsn(), command.encode(), cluster_specific=True,
                           server_to_client=False, disable_default_response=ddr).encode()
        if isinstance(command, oc.QueryNextImageRequest) and self._activated_version is not None \
                and command.current_file_version == self._activated_version \
                and self.stats.version_reported_at is None:
            self.stats.version_reported_at = now
        self._send(ApsFrame(self.nwk, self.server_nwk, HA_PROFILE, OTA, ENDPOINT, self.server_ep, payload),
                   now, ack=self.profile.aps_ack)

    def _reply(self, request: ApsFrame, payload: bytes, now: float, *, cluster: int | None = None) -> None:
        if request.mode != UNICAST:
            return
        self._send(ApsFrame(self.nwk, request.src, request.profile,
                            request.cluster if cluster is None else cluster, request.dst_ep,
                            request.src_ep, payload), now, ack=self.profile.aps_ack)

    def _run(self, actions: list, now: float) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._send_ota(action.command, now)
            elif isinstance(action, Activate):
                self._activate(action.file_version, now)
                return
        self._maybe_quirk_reboot(now)

    def _activate(self, version: int, now: float) -> None:
        self.current_file_version = version
        self._activated_version = version
        self.stats.activated_at = now
        self.stats.versions.append(version)
        self.storage.reset(None)
        self.stats.reboots += 1
        self.power_on(now, announce=True)

    def _maybe_quirk_reboot(self, now: float) -> None:
        frac = self.profile.reboot_at_fraction
        o = self.storage.offer
        if frac is None or self._quirk_rebooted or o is None or not o.image_size:
            return
        if self.storage.offset / o.image_size >= frac and self.client and self.client.state == OtaState.DOWNLOADING:
            self._quirk_rebooted = True
            self.reboot(now)

    # -- receiving ------------------------------------------------------------------------------------
    def receive(self, frame: ApsFrame, now: float) -> None:
        if not self.alive or self.left:
            return
        self.stats.frames_in += 1
        if frame.dst_ep == 0 and frame.profile == ZDO_PROFILE:
            self._receive_zdo(frame, now)
        elif frame.dst_ep in (ENDPOINT, 0xFF):
            self._receive_zcl(frame, now)
        self.network.node_rearm(self)

    def _receive_zdo(self, frame: ApsFrame, now: float) -> None:
        data = frame.payload
        if not data or frame.cluster & zdo.ZDO.RSP:
            return
        tsn, body = data[0], data[1:]
        c = zdo.ZDO
        try:
            if frame.cluster == c.NODE_DESC_REQ:
                rsp = zdo.node_desc_rsp(tsn, self.nwk, self.node_descriptor())
            elif frame.cluster == c.ACTIVE_EP_REQ:
                rsp = zdo.active_ep_rsp(tsn, self.nwk, [ENDPOINT])
            elif frame.cluster == c.SIMPLE_DESC_REQ:
                _, ep = zdo.parse_simple_desc_req(body)
                rsp = zdo.simple_desc_rsp(tsn, self.nwk, self.simple_descriptor() if ep == ENDPOINT else None)
            elif frame.cluster in (c.IEEE_ADDR_REQ, c.NWK_ADDR_REQ):
                rsp = zdo.ieee_addr_rsp(tsn, self.ieee, self.nwk)
            elif frame.cluster in (c.BIND_REQ, c.UNBIND_REQ, c.MGMT_PERMIT_JOINING_REQ):
                rsp = zdo.status_rsp(tsn, zdo.ZdoStatus.SUCCESS)
            elif frame.cluster == c.MGMT_LEAVE_REQ:
                self._reply(frame, zdo.status_rsp(tsn, zdo.ZdoStatus.SUCCESS), now,
                            cluster=frame.cluster | c.RSP)
                self.leave()
                return
            elif frame.cluster == c.DEVICE_ANNCE:
                return
            else:
                rsp = zdo.status_rsp(tsn, zdo.ZdoStatus.NOT_SUPPORTED)
        except zcl.FrameError:
            return
        self._reply(frame, rsp, now, cluster=frame.cluster | c.RSP)

    def _receive_zcl(self, frame: ApsFrame, now: float) -> None:
        try:
            z = ZclFrame.decode(frame.payload)
        except zcl.FrameError:
            return
        cluster = frame.cluster
        if cluster not in self.simple_descriptor().input_clusters + (OTA,):
            if not z.disable_default_response and frame.mode == UNICAST:
                self._default_rsp(frame, z, 0xC3, now)          # UNSUPPORTED_CLUSTER
            return
        if not z.cluster_specific:
            self._receive_global(frame, z, now)
            return
        if cluster == OTA and z.server_to_client:
            try:
                cmd = oc.decode_ota(z.command_id, z.payload, server_to_client=True)
            except zcl.FrameError:
                if not z.disable_default_response:
                    self._default_rsp(frame, z, Status.MALFORMED_COMMAND, now)
                return
            self.server_nwk, self.server_ep, self.server_known = frame.src, frame.src_ep, True
            if isinstance(cmd, oc.ImageBlockResponse) and cmd.status == Status.SUCCESS:
                cmd = self._link_faults(cmd)
            if self.client is not None:
                self._run(self.client.handle(cmd, now), now)
            return
        if not z.disable_default_response and frame.mode == UNICAST:
            status = Status.SUCCESS if cluster == IDENTIFY else Status.UNSUP_CLUSTER_COMMAND
            self._default_rsp(frame, z, status, now)

    def _link_faults(self, cmd: oc.ImageBlockResponse) -> oc.ImageBlockResponse:
        self._blocks_delivered += 1
        self.stats.block_offsets.append(cmd.file_offset)
        if self._blocks_delivered in self._corrupt_at and cmd.image_data:
            self._corrupt_at.discard(self._blocks_delivered)
            self.stats.corrupted_blocks += 1
            data = bytearray(cmd.image_data)
            data[len(data) // 2] ^= 0x5A
            return oc.ImageBlockResponse(cmd.status, cmd.manufacturer_code, cmd.image_type, cmd.file_version,
                                         cmd.file_offset, bytes(data))
        return cmd

    def _default_rsp(self, frame: ApsFrame, z: ZclFrame, status: int, now: float) -> None:
        payload = ZclFrame(zcl.GLOBAL.DEFAULT_RSP, z.tsn, zcl.default_response(z.command_id, status),
                           cluster_specific=False, server_to_client=not z.server_to_client,
                           disable_default_response=True, manufacturer=z.manufacturer).encode()
        self._reply(frame, payload, now)

    def _receive_global(self, frame: ApsFrame, z: ZclFrame, now: float) -> None:
        g = zcl.GLOBAL
        if z.command_id == g.READ_ATTRIBUTES:
            try:
                ids = zcl.parse_read_attributes(z.payload)
            except zcl.FrameError:
                self._default_rsp(frame, z, Status.MALFORMED_COMMAND, now)
                return
            table = self.attributes(frame.cluster)
            records = []
            for a in ids:
                if a in table and z.manufacturer is None:
                    type_id, value = table[a]
                    records.append((a, Status.SUCCESS, type_id, value))
                else:
                    records.append((a, Status.UNSUPPORTED_ATTRIBUTE, None, None))
            rsp, cmd = zcl.read_attributes_response(records), g.READ_ATTRIBUTES_RSP
        elif z.command_id == g.WRITE_ATTRIBUTES:
            try:
                writes = zcl.parse_write_attributes(z.payload)
            except zcl.FrameError:
                self._default_rsp(frame, z, Status.MALFORMED_COMMAND, now)
                return
            table = self.attributes(frame.cluster)
            failures = [(a, Status.READ_ONLY if a in table else Status.UNSUPPORTED_ATTRIBUTE)
                        for a, _, _ in writes]
            rsp, cmd = zcl.write_attributes_response(failures), g.WRITE_ATTRIBUTES_RSP
        elif z.command_id == g.CONFIGURE_REPORTING:
            rsp, cmd = bytes([Status.UNSUP_GENERAL_COMMAND]), g.CONFIGURE_REPORTING_RSP
        elif z.command_id == g.DEFAULT_RSP or z.command_id % 2 == 1:
            return                                            # responses
        else:
            if not z.disable_default_response:
                self._default_rsp(frame, z, Status.UNSUP_GENERAL_COMMAND, now)
            return
        payload = ZclFrame(cmd, z.tsn, rsp, cluster_specific=False, server_to_client=not z.server_to_client,
                           disable_default_response=True, manufacturer=z.manufacturer).encode()
        self._reply(frame, payload, now)

    # -- attributes --------------------------------------------------------------------------------------
    def attributes(self, cluster: int) -> dict[int, tuple[int, object]]:
        p = self.profile
        if cluster == BASIC:
            return {
                0x0000: (DataType.UINT8, 8),
                0x0001: (DataType.UINT8, self.current_file_version & 0xFF),
                0x0002: (DataType.UINT8, 2),
                0x0003: (DataType.UINT8, (p.hardware_version or 0) & 0xFF),
                0x0004: (DataType.CHAR_STRING, p.manufacturer),
                0x0005: (DataType.CHAR_STRING, p.model),
                0x0006: (DataType.CHAR_STRING, "20240101"),
                0x0007: (DataType.ENUM8, 0x03 if self.battery else 0x01),
                0x4000: (DataType.CHAR_STRING, f"0x{self.current_file_version:08X}"),
            }
        if cluster == OTA:
            c = self.client
            o = self.storage.offer
            period = 0
            if c is not None and p.min_block_period_unit_s:
                period = min(0xFFFF, int(round(c.block_period_s / p.min_block_period_unit_s)))
            return {
                0x0000: (DataType.EUI64, self.coordinator_ieee if self.server_known else b"\xff" * 8),
                0x0001: (DataType.UINT32, self.storage.offset),
                0x0002: (DataType.UINT32, self.current_file_version),
                0x0003: (DataType.UINT16, p.stack_version),
                0x0004: (DataType.UINT32, o.file_version if o is not None and self.storage.complete else 0xFFFFFFFF),
                0x0006: (DataType.ENUM8, c.image_upgrade_status if c is not None else 0),
                0x0007: (DataType.UINT16, p.manufacturer_code),
                0x0008: (DataType.UINT16, p.image_type),
                0x0009: (DataType.UINT16, period),
            }
        if cluster == POWER_CONFIGURATION and self.battery:
            return {0x0020: (DataType.UINT8, 30), 0x0021: (DataType.UINT8, 200)}
        return {}
