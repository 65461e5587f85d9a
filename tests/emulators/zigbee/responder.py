"""A tiny OTA server for the emulator tests, written with raw ZCL frames (struct.pack, not
the emulator's codec and not proxyota): it attaches to a `ZigbeeNetwork` as the
coordinator's host and answers QueryNextImage, ImageBlockRequest, ImagePageRequest and
UpgradeEndRequest for one image."""

from __future__ import annotations

import asyncio
import struct
from collections import defaultdict

from radio_emulators.zigbee.aps import ApsFrame

OTA = 0x0019
HA = 0x0104


def image_identity(image: bytes) -> tuple[int, int, int, int, tuple[int, int] | None]:
    fc, mfr, itype, ver = struct.unpack_from("<HHHI", image, 8)
    total = struct.unpack_from("<I", image, 52)[0]
    hw = struct.unpack_from("<HH", image, 56 + (1 if fc & 1 else 0) + (8 if fc & 2 else 0)) if fc & 4 else None
    return mfr, itype, ver, total, hw


class TinyOtaResponder:
    def __init__(self, network, image: bytes, *, block_cap: int = 255, upgrade_time: int = 0,
                 wait_for_data: tuple[int, int] | None = None, wait_block_period: int | None = None,
                 ack: bool = True, check_hardware: bool = True) -> None:
        self.network = network
        self.image = image
        self.mfr, self.itype, self.version, self.size, self.hw = image_identity(image)
        if not check_hardware:
            self.hw = None
        self.block_cap = block_cap
        self.upgrade_time = upgrade_time
        self.wait_for_data = wait_for_data          # (delay s, how many times per node)
        self.wait_block_period = wait_block_period
        self.ack = ack
        self.requests: dict[int, list[tuple[str, int, float]]] = defaultdict(list)
        self.end_status: dict[int, list[int]] = defaultdict(list)
        self.queries: dict[int, list[tuple[int, int | None]]] = defaultdict(list)
        self.query_answers: dict[int, list[int]] = defaultdict(list)
        self._waits: dict[int, int] = defaultdict(int)
        self._tsn = 0
        self.tasks: set[asyncio.Task] = set()

    def attach(self) -> None:
        self.network.attach_host(self.on_frame)

    def detach(self) -> None:
        self.network.detach_host()

    # -- frames ---------------------------------------------------------------------------
    def _zcl(self, command_id: int, tsn: int, payload: bytes, *, specific: bool = True) -> bytes:
        fc = (0x01 if specific else 0x00) | 0x08 | 0x10      # server->client, no default response
        return bytes([fc, tsn & 0xFF, command_id]) + payload

    def _send(self, node_nwk: int, dst_ep: int, payload: bytes) -> None:
        fut = self.network.host_send(ApsFrame(0, node_nwk, HA, OTA, 1, dst_ep, payload), ack=self.ack)
        task = asyncio.ensure_future(fut)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def on_frame(self, frame: ApsFrame) -> None:
        if frame.cluster != OTA or len(frame.payload) < 3:
            return
        fc, tsn, cmd = frame.payload[0], frame.payload[1], frame.payload[2]
        body = frame.payload[3:]
        if fc & 0x03 != 0x01 or fc & 0x08:
            return
        now = self.network.clock.now()
        node = frame.src
        if cmd == 0x01:                                   # QueryNextImageRequest
            qfc, mfr, itype, cur = struct.unpack_from("<BHHI", body, 0)
            hw = struct.unpack_from("<H", body, 9)[0] if qfc & 1 else None
            self.queries[node].append((cur, hw))
            ok = (mfr, itype) == (self.mfr, self.itype) and cur != self.version
            if ok and hw is not None and self.hw is not None and not self.hw[0] <= hw <= self.hw[1]:
                ok = False
            status = 0x00 if ok else 0x98
            self.query_answers[node].append(status)
            payload = bytes([status]) + (struct.pack("<HHII", self.mfr, self.itype, self.version, self.size)
                                         if ok else b"")
            self._send(node, frame.src_ep, self._zcl(0x02, tsn, payload))
        elif cmd == 0x03:                                 # ImageBlockRequest
            bfc, mfr, itype, ver, offset, maxsize = struct.unpack_from("<BHHIIB", body, 0)
            self.requests[node].append(("block", offset, now))
            if self.wait_for_data and self._waits[node] < self.wait_for_data[1]:
                self._waits[node] += 1
                payload = bytes([0x97]) + struct.pack("<II", 1000, 1000 + self.wait_for_data[0])
                if self.wait_block_period is not None:
                    payload += struct.pack("<H", self.wait_block_period)
                self._send(node, frame.src_ep, self._zcl(0x05, tsn, payload))
                return
            self._send(node, frame.src_ep, self._zcl(0x05, tsn, self._block(offset, maxsize)))
        elif cmd == 0x04:                                 # ImagePageRequest
            pfc, mfr, itype, ver, offset, maxsize, page, spacing = struct.unpack_from("<BHHIIBHH", body, 0)
            self.requests[node].append(("page", offset, now))
            task = asyncio.ensure_future(self._page(node, frame.src_ep, tsn, offset, maxsize, page, spacing))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif cmd == 0x06:                                 # UpgradeEndRequest
            status = body[0]
            self.end_status[node].append(status)
            self.requests[node].append(("end", status, now))
            if status == 0x00:
                payload = struct.pack("<HHIII", self.mfr, self.itype, self.version, 0, self.upgrade_time)
                self._send(node, frame.src_ep, self._zcl(0x07, tsn, payload))
            else:                                         # Default Response (cmd 0x06, status SUCCESS)
                self._send(node, frame.src_ep, self._zcl(0x0B, tsn, bytes([0x06, 0x00]), specific=False))

    def _block(self, offset: int, maxsize: int) -> bytes:
        data = self.image[offset:offset + min(maxsize, self.block_cap)]
        return bytes([0x00]) + struct.pack("<HHIIB", self.mfr, self.itype, self.version, offset, len(data)) + data

    async def _page(self, node: int, ep: int, tsn: int, offset: int, maxsize: int, page: int, spacing: int) -> None:
        clock = self.network.clock
        end = min(offset + page, self.size)
        while offset < end:
            n = min(maxsize, self.block_cap, end - offset)
            with clock.busy():
                self._send(node, ep, self._zcl(0x05, tsn, self._block(offset, n)))
            offset += n
            await clock.sleep(spacing / 1000.0)

    def send_upgrade_now(self, node: int, ep: int = 1) -> None:
        """An unsolicited UpgradeEndResponse (for nodes told to wait with 0xFFFFFFFF)."""
        self._tsn = (self._tsn + 1) & 0xFF
        payload = struct.pack("<HHIII", self.mfr, self.itype, self.version, 0, 0)
        with self.network.clock.busy():
            self._send(node, ep, self._zcl(0x07, self._tsn, payload))

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
