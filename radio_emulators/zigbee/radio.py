"""The emulated mesh as a zigpy radio library: `EmulatedControllerApplication`, a
`zigpy.application.ControllerApplication` whose "radio" is a `ZigbeeNetwork` in memory.

Use: `app = EmulatedControllerApplication(emulated_config("net1"), network=net)` (or
`register_network("net1", net)` and device path `emulated:net1`), then `await
app.startup()`. `add_emulated_devices()` gives zigpy the joined nodes as if loaded from its
database (endpoints, clusters, model/manufacturer, OTA current file version, initialized);
`interview_emulated_devices()` makes the nodes announce themselves so zigpy interviews them
over the mesh instead.

The abstract radio methods map onto the emulated coordinator:
- connect / disconnect: attach / detach as the network's host (a second host is refused);
- load_network_info / write_network_info / reset_network_info: the network's settings
  (PAN id, extended PAN id, channel, keys; NetworkNotFormed after a reset);
- start_network: registers zigpy's endpoints and creates the coordinator device;
- send_packet: zigpy's global request limiter, then `ZigbeeNetwork.host_send`; it returns
  when the emulated stack confirms (APS ACK with TransmitOptions.ACK, else the first hop,
  at once for broadcasts) and fails like bellows does: `DeliveryError` status 0x74
  MESSAGE_TOO_LONG for payloads over the APS limit ("Failed to enqueue message"), 0x66
  DELIVERY_FAILED when the frame was not confirmed ("Failed to deliver message"), and
  `TimeoutError` when no confirmation came within bellows' wait (3 s, 8 s with
  `extended_timeout`, emulated) -- the emulated stack keeps retrying meanwhile;
  ZDO requests to the coordinator itself are answered locally;
- permit_ncp / permit_with_link_key: open joining for the given time (nodes are
  created with the network, so nothing else happens); force_remove: the node leaves.
Inbound frames become `zigpy.types.ZigbeePacket`s handed to `packet_received` (and the
registered packet callbacks).

Time: zigpy's own timers (request timeouts, the OTA manager's stall timer, its sleeps,
the packet debouncer) run on the event loop's clock. With a `VirtualClock` only the mesh is
emulated and zigpy's timers stay real (they never fire during a fast run, and a lost reply
lets the mesh race ahead while zigpy waits); run everything on
`looptime.VirtualTimeEventLoop` with a `looptime.LoopClock` to put zigpy on the same
emulated timeline (what a zigpy-vs-proxyota comparison needs).
"""

from __future__ import annotations

import asyncio
import logging

import zigpy.application
import zigpy.config as conf
import zigpy.endpoint
import zigpy.exceptions
import zigpy.state
import zigpy.types as t
import zigpy.zdo.types as zdo_t
from zigpy.device import ZigbeeDevice

from radio_emulators.zigbee import zdo as zdo_codec
from radio_emulators.zigbee.aps import BROADCAST, GROUP, UNICAST, ApsFrame
from radio_emulators.zigbee.network import ZigbeeNetwork, lookup_network

__all__ = ["EmulatedControllerApplication", "emulated_config", "DEVICE_PATH_PREFIX",
           "EMBER_MESSAGE_TOO_LONG", "EMBER_DELIVERY_FAILED"]

LOGGER = logging.getLogger(__name__)
DEVICE_PATH_PREFIX = "emulated:"
EMBER_MESSAGE_TOO_LONG = 0x74
EMBER_DELIVERY_FAILED = 0x66
COORDINATOR_MANUFACTURER = "radio_emulators"
COORDINATOR_MODEL = "Emulated Zigbee coordinator"


def emulated_config(name: str = "default", **overrides) -> dict:
    """A zigpy config for the emulated radio: no database, zigpy's OTA providers, OTA
    broadcasts, topology scans, backups and watchdog off (nothing leaves the machine)."""
    cfg = {
        conf.CONF_DEVICE: {conf.CONF_DEVICE_PATH: DEVICE_PATH_PREFIX + name},
        conf.CONF_DATABASE: None,
        conf.CONF_OTA: {conf.CONF_OTA_ENABLED: False, conf.CONF_OTA_BROADCAST_ENABLED: False},
        conf.CONF_TOPO_SCAN_ENABLED: False,
        conf.CONF_NWK_BACKUP_ENABLED: False,
        conf.CONF_WATCHDOG_ENABLED: False,
    }
    cfg.update(overrides)
    return cfg


class EmulatedControllerApplication(zigpy.application.ControllerApplication):
    DISPLAY_NAME = "Emulated Zigbee mesh"
    DESCRIPTION = "In-memory Zigbee mesh with emulated OTA client devices (radio_emulators)"

    #: how long send_packet waits for the stack's confirmation (bellows' messageSentHandler
    #: wait: MESSAGE_SEND_TIMEOUT_MAINS / _BATTERY), emulated seconds
    SEND_TIMEOUT_S = 3.0
    SEND_TIMEOUT_EXTENDED_S = 8.0

    def __init__(self, config: dict, *, network: ZigbeeNetwork | None = None) -> None:
        super().__init__(config)
        self._network_given = network
        self._network: ZigbeeNetwork | None = None
        self._endpoint_descriptors: dict[int, zdo_t.SimpleDescriptor] = {}
        self.permit_until: float = 0.0

    # -- the emulated radio ---------------------------------------------------------------------
    @property
    def network(self) -> ZigbeeNetwork:
        if self._network is None:
            raise zigpy.exceptions.ControllerException("emulated radio is not connected")
        return self._network

    def _find_network(self) -> ZigbeeNetwork:
        if self._network_given is not None:
            return self._network_given
        path = self.config[conf.CONF_DEVICE][conf.CONF_DEVICE_PATH]
        if not path.startswith(DEVICE_PATH_PREFIX):
            raise zigpy.exceptions.ControllerException(
                f"device path {path!r} is not an emulated network ({DEVICE_PATH_PREFIX}<name>)")
        try:
            return lookup_network(path[len(DEVICE_PATH_PREFIX):])
        except LookupError as exc:
            raise zigpy.exceptions.ControllerException(str(exc)) from exc

    async def connect(self) -> None:
        net = self._find_network()
        if net.host_attached:
            raise zigpy.exceptions.ControllerException("the emulated coordinator already has a host")
        net.attach_host(self._frame_from_mesh)
        self._network = net

    async def disconnect(self) -> None:
        if self._network is not None:
            self._network.detach_host()
            self._network = None

    async def load_network_info(self, *, load_devices: bool = False) -> None:
        net = self.network
        s = net.settings
        if not s.formed:
            raise zigpy.exceptions.NetworkNotFormed("the emulated network is not formed")
        coord_ieee = t.EUI64(net.topology.coordinator.ieee)
        self.state.node_info = zigpy.state.NodeInfo(
            nwk=t.NWK(0x0000), ieee=coord_ieee, logical_type=zdo_t.LogicalType.Coordinator,
            model=COORDINATOR_MODEL, manufacturer=COORDINATOR_MANUFACTURER, version="1.0")
        info = zigpy.state.NetworkInfo(
            extended_pan_id=t.ExtendedPanId(s.extended_pan_id), pan_id=t.PanId(s.pan_id),
            nwk_update_id=s.nwk_update_id, nwk_manager_id=t.NWK(0x0000), channel=s.channel,
            channel_mask=t.Channels.from_channel_list([s.channel]), security_level=5,
            network_key=zigpy.state.Key(key=t.KeyData(s.network_key), tx_counter=s.frame_counter,
                                        rx_counter=0, seq=s.network_key_seq),
            tc_link_key=zigpy.state.Key(key=t.KeyData(s.tc_link_key), tx_counter=0, rx_counter=0, seq=0,
                                        partner_ieee=coord_ieee),
            source="radio_emulators.zigbee", metadata={"emulated": {"nodes": len(net.nodes)}})
        if load_devices:
            for node in net.nodes.values():
                info.nwk_addresses[t.EUI64(node.ieee)] = t.NWK(node.nwk)
                if node.mesh_node.parent == 0:
                    info.children.append(t.EUI64(node.ieee))
        self.state.network_info = info

    async def write_network_info(self, *, network_info: zigpy.state.NetworkInfo,
                                 node_info: zigpy.state.NodeInfo) -> None:
        s = self.network.settings
        s.pan_id = int(network_info.pan_id)
        s.extended_pan_id = bytes(network_info.extended_pan_id)
        s.channel = int(network_info.channel)
        s.network_key = bytes(network_info.network_key.key)
        s.network_key_seq = int(network_info.network_key.seq)
        s.frame_counter = int(network_info.network_key.tx_counter)
        s.tc_link_key = bytes(network_info.tc_link_key.key)
        s.nwk_update_id = int(network_info.nwk_update_id)
        s.formed = True

    async def reset_network_info(self) -> None:
        self.network.settings.formed = False

    async def start_network(self) -> None:
        await self.load_network_info(load_devices=False)
        await self.register_endpoints()
        ieee = self.state.node_info.ieee
        dev = self.devices.get(ieee)
        if dev is None:
            dev = self.add_device(ieee=ieee, nwk=t.NWK(0x0000))
        dev.node_desc = zdo_t.NodeDescriptor.deserialize(self._coordinator_node_descriptor())[0]
        for desc in self._endpoint_descriptors.values():
            ep = dev.endpoints.get(desc.endpoint) or dev.add_endpoint(desc.endpoint)
            ep.profile_id = desc.profile
            ep.device_type = desc.device_type
            for cid in desc.input_clusters:
                ep.add_input_cluster(cid)
            for cid in desc.output_clusters:
                ep.add_output_cluster(cid)
            ep.status = zigpy.endpoint.Status.ZDO_INIT
        dev.manufacturer = COORDINATOR_MANUFACTURER
        dev.model = COORDINATOR_MODEL

    def _coordinator_node_descriptor(self) -> bytes:
        return zdo_codec.NodeDescriptor(zdo_codec.LogicalType.COORDINATOR, 0x8F, 0x1234).encode()

    async def force_remove(self, dev: ZigbeeDevice) -> None:
        try:
            node = self.network.node_by_ieee(bytes(dev.ieee))
        except KeyError:
            return
        with self.network.clock.busy():
            node.leave()

    async def add_endpoint(self, descriptor: zdo_t.SimpleDescriptor) -> None:
        self._endpoint_descriptors[int(descriptor.endpoint)] = descriptor

    async def permit_ncp(self, time_s: int = 60) -> None:
        self.permit_until = self.network.clock.now() + time_s

    async def permit_with_link_key(self, node: t.EUI64, link_key: t.KeyData, time_s: int = 60) -> None:
        await self.permit(time_s)

    # -- sending ------------------------------------------------------------------------------------
    def _to_frame(self, packet: t.ZigbeePacket) -> ApsFrame:
        dst = packet.dst
        mode = UNICAST
        if dst.addr_mode == t.AddrMode.NWK:
            address = int(dst.address)
        elif dst.addr_mode == t.AddrMode.IEEE:
            try:
                address = self.network.node_by_ieee(bytes(dst.address)).nwk
            except KeyError:
                raise zigpy.exceptions.DeliveryError(f"Unknown IEEE address {dst.address}") from None
        elif dst.addr_mode == t.AddrMode.Group:
            address, mode = int(dst.address), GROUP
        else:
            address, mode = int(dst.address), BROADCAST
        return ApsFrame(0x0000, address, int(packet.profile_id), int(packet.cluster_id), int(packet.src_ep or 0),
                        int(packet.dst_ep or 0), bytes(packet.data.serialize()), mode)

    async def send_packet(self, packet: t.ZigbeePacket) -> None:
        net = self.network
        frame = self._to_frame(packet)
        async with self._limit_concurrency(priority=packet.priority):
            if frame.mode == UNICAST and frame.dst == 0x0000:
                self._loopback(frame)
                return
            ack = frame.mode == UNICAST and t.TransmitOptions.ACK in packet.tx_options
            with net.clock.busy():
                try:
                    fut = net.host_send(frame, ack=ack)
                except ValueError as exc:
                    raise zigpy.exceptions.DeliveryError(
                        f"Failed to enqueue message: MESSAGE_TOO_LONG ({exc})", EMBER_MESSAGE_TOO_LONG) from None
                except LookupError as exc:
                    raise zigpy.exceptions.DeliveryError(
                        f"Failed to deliver message: {exc}", EMBER_DELIVERY_FAILED) from None
            timeout = self.SEND_TIMEOUT_EXTENDED_S if packet.extended_timeout else self.SEND_TIMEOUT_S
            result = await self._confirmation(fut, timeout)
            if frame.mode == UNICAST and not result.success:
                raise zigpy.exceptions.DeliveryError(
                    "Failed to deliver message: DELIVERY_FAILED", EMBER_DELIVERY_FAILED)

    async def _confirmation(self, fut: asyncio.Future, timeout: float):
        sleeper = asyncio.ensure_future(self.network.clock.sleep(timeout))
        try:
            await asyncio.wait({fut, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
        if not fut.done():
            raise TimeoutError(f"no confirmation from the emulated stack within {timeout} s")
        return fut.result()

    def _loopback(self, frame: ApsFrame) -> None:
        """ZDO requests zigpy sends to the coordinator itself."""
        if frame.profile != 0 or frame.dst_ep != 0 or not frame.payload or frame.cluster & 0x8000:
            return
        tsn = frame.payload[0]
        z = zdo_codec.ZDO
        if frame.cluster == z.NODE_DESC_REQ:
            rsp = bytes([tsn, 0]) + b"\x00\x00" + self._coordinator_node_descriptor()
        elif frame.cluster == z.ACTIVE_EP_REQ:
            eps = sorted(self._endpoint_descriptors)
            rsp = bytes([tsn, 0, 0, 0, len(eps)]) + bytes(eps)
        elif frame.cluster == z.IEEE_ADDR_REQ or frame.cluster == z.NWK_ADDR_REQ:
            rsp = zdo_codec.ieee_addr_rsp(tsn, self.network.topology.coordinator.ieee, 0)
        else:
            rsp = zdo_codec.status_rsp(tsn, zdo_codec.ZdoStatus.NOT_SUPPORTED)
        reply = ApsFrame(0x0000, 0x0000, 0, frame.cluster | 0x8000, 0, 0, rsp)
        asyncio.get_running_loop().call_soon(self._frame_from_mesh, reply)

    # -- receiving ----------------------------------------------------------------------------------
    def _frame_from_mesh(self, frame: ApsFrame) -> None:
        if frame.mode == BROADCAST:
            dst = t.AddrModeAddress(addr_mode=t.AddrMode.Broadcast, address=t.BroadcastAddress(frame.dst))
        else:
            dst = t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0x0000))
        hops = 0
        if frame.src != 0x0000 and self._network is not None and self._network.topology.has_nwk(frame.src):
            hops = self._network.topology.by_nwk(frame.src).depth
        packet = t.ZigbeePacket(
            src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(frame.src)), src_ep=frame.src_ep,
            dst=dst, dst_ep=frame.dst_ep, tsn=frame.counter, profile_id=frame.profile,
            cluster_id=frame.cluster, data=t.SerializableBytes(frame.payload),
            lqi=max(40, 255 - 40 * hops), rssi=-40 - 10 * hops)
        self.notify_packet_callbacks(packet)
        self.packet_received(packet)

    # -- devices ------------------------------------------------------------------------------------
    def add_emulated_devices(self) -> list[ZigbeeDevice]:
        """Make zigpy know every node as an initialized device (as if loaded from its
        database): node descriptor, endpoint 1 with its clusters, model, manufacturer and
        the OTA cluster's current file version."""
        out = []
        for node in self.network.nodes.values():
            if node.left:
                continue
            ieee = t.EUI64(node.ieee)
            dev = self.devices.get(ieee)
            if dev is None or not isinstance(dev, ZigbeeDevice):
                dev = self.add_device(ieee=ieee, nwk=t.NWK(node.nwk))
            dev.nwk = t.NWK(node.nwk)
            dev.node_desc = zdo_t.NodeDescriptor.deserialize(node.node_descriptor().encode())[0]
            sd = node.simple_descriptor()
            ep = dev.endpoints.get(sd.endpoint) or dev.add_endpoint(sd.endpoint)
            ep.profile_id = sd.profile
            ep.device_type = sd.device_type
            for cid in sd.input_clusters:
                ep.add_input_cluster(cid)
            for cid in sd.output_clusters:
                ep.add_output_cluster(cid)
            ep.status = zigpy.endpoint.Status.ZDO_INIT
            basic = ep.in_clusters[0x0000]
            basic.update_attribute(0x0004, node.profile.manufacturer)
            basic.update_attribute(0x0005, node.profile.model)
            dev.manufacturer = node.profile.manufacturer
            dev.model = node.profile.model
            ep.out_clusters[0x0019].update_attribute(0x0002, node.current_file_version)
            self.device_initialized(dev)
            out.append(self.devices[ieee])
        return out

    async def interview_emulated_devices(self, *, timeout_s: float = 900.0, step_s: float = 1.0) -> bool:
        """Nodes announce themselves (Device_annce); zigpy interviews them over the mesh.
        True when every node's zigpy device is initialized within `timeout_s` emulated s."""
        net = self.network
        with net.clock.busy():
            net.announce_all()
        deadline = net.clock.now() + timeout_s

        def done() -> bool:
            for node in net.nodes.values():
                dev = self.devices.get(t.EUI64(node.ieee))
                if dev is None or not dev.is_initialized or dev.initializing or dev.model is None:
                    return False
            return True

        while not done():
            if net.clock.now() >= deadline:
                return False
            await net.clock.sleep(step_s)
        return True
