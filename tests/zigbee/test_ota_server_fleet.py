"""'Update all': a fleet of simulated OTA clients against one server, in emulated time.

The clients speak through zigpy's own command schemas (they encode requests and parse
every reply with ``zigpy.zcl.clusters.general.Ota``), so they share no code with the
server's codec. The fleet mixes block and page (sleepy) clients, a node whose image
check fails once, a node that goes silent mid-download and later resumes, and more nodes
than download slots. Checked: the bound on concurrent downloads, one reply per request,
every node ends on the new image with the exact bytes, activation at one moment.
"""

from __future__ import annotations

import heapq
import random

from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import Ota

from proxyota.zigbee.ota_server import (
    CampaignPolicy,
    DeviceClassPolicy,
    OtaServer,
    Outcome,
    Reply,
    UpgradeTimePolicy,
)

from .test_ota_server import MFR, T0, TYPE, make_image

S = Ota.ServerCommandDefs
C = {c.id: c.schema for c in Ota.ClientCommandDefs}
DEFAULT_RESPONSE = foundation.GENERAL_COMMANDS[foundation.GeneralCommand.Default_Response].schema


class Client:
    """A minimal OTA client state machine (independent of proxyota's codec)."""

    def __init__(self, ieee: str, expected: bytes, *, page: bool = False, corrupt_once: bool = False,
                 silent_at: int | None = None, silent_for: float = 0.0, interval: float = 0.5) -> None:
        self.ieee, self.expected, self.page = ieee, expected, page
        self.corrupt_once, self.silent_at, self.silent_for = corrupt_once, silent_at, silent_for
        self.interval = interval
        self.version = 1
        self.state = "query"
        self.target: tuple[int, int, int, int] | None = None
        self.buffer = bytearray()
        self.offset = 0
        self.tsn = 0
        self.upgrade_times: list[int] = []
        self.log: list[str] = []

    # what to send now
    def request(self, now: float) -> tuple[int, bytes] | None:
        self.tsn = (self.tsn + 1) & 0xFF
        if self.state == "query":
            cmd = S.query_next_image.schema(field_control=1, manufacturer_code=MFR, image_type=TYPE,
                                            current_file_version=self.version, hardware_version=2)
            return S.query_next_image.id, cmd.serialize()
        mfr, itype, version, size = self.target  # type: ignore[misc]
        if self.state == "download":
            if self.silent_at is not None and self.offset >= self.silent_at:
                self.silent_at = None
                self.state = "silent"
                return None
            if self.page:
                cmd = S.image_page.schema(field_control=0, manufacturer_code=mfr, image_type=itype,
                                          file_version=version, file_offset=self.offset, maximum_data_size=64,
                                          page_size=256, response_spacing=100)
                return S.image_page.id, cmd.serialize()
            cmd = S.image_block.schema(field_control=0, manufacturer_code=mfr, image_type=itype,
                                       file_version=version, file_offset=self.offset, maximum_data_size=64)
            return S.image_block.id, cmd.serialize()
        if self.state == "end":
            ok = bytes(self.buffer) == self.expected and not self.corrupt_once
            self.corrupt_once = False
            status = foundation.Status.SUCCESS if ok else foundation.Status.INVALID_IMAGE
            cmd = S.upgrade_end.schema(status=status, manufacturer_code=mfr, image_type=itype, file_version=version)
            return S.upgrade_end.id, cmd.serialize()
        raise AssertionError(self.state)

    # a reply arrived; returns when to act next (None: wait for more replies)
    def receive(self, reply: Reply, now: float) -> float | None:
        if reply.general:
            parsed, rest = DEFAULT_RESPONSE.deserialize(reply.payload)
            assert rest == b"" and parsed.command_id == S.upgrade_end.id
            self.log.append("default_response")
            self.state, self.buffer, self.offset = "query", bytearray(), 0  # start again
            return now + 30
        parsed, rest = C[reply.command_id].deserialize(reply.payload)
        assert rest == b""
        if reply.command_id == 0x02:  # QueryNextImageResponse
            if parsed.status != foundation.Status.SUCCESS:
                self.state = "done"
                return None
            self.target = (parsed.manufacturer_code, parsed.image_type, parsed.file_version, parsed.image_size)
            self.state = "download"
            return now + 0.1
        if reply.command_id == 0x05:  # ImageBlockResponse
            if parsed.status == foundation.Status.WAIT_FOR_DATA:
                self.log.append("wait")
                delay = parsed.request_time - parsed.current_time if parsed.current_time else parsed.request_time
                return now + max(delay, 0.1)
            assert parsed.status == foundation.Status.SUCCESS, parsed
            start = parsed.file_offset
            self.buffer[start : start + len(parsed.image_data)] = parsed.image_data
            self.offset = max(self.offset, start + len(parsed.image_data)) if start <= self.offset else self.offset
            if self.offset >= self.target[3]:  # type: ignore[index]
                self.state = "end"
                return now + 31  # the image check
            if self.page:
                return None  # the rest of the page follows; the page timer asks for more
            return now + self.interval
        if reply.command_id == 0x07:  # UpgradeEndResponse
            self.upgrade_times.append(parsed.upgrade_time)
            delay = parsed.upgrade_time - parsed.current_time if parsed.current_time else parsed.upgrade_time
            self.version = self.target[2]  # type: ignore[index]
            self.state = "query"  # reboots into the new image at the upgrade time
            return now + delay + 5
        raise AssertionError(reply)


def test_update_all_with_bounded_concurrency():
    image = make_image(2, size=3000, seed=7)
    expected = image.image_bytes()
    limit = 3
    at = T0 + 20_000
    classes = {"router": DeviceClassPolicy(90, 180), "sleepy": DeviceClassPolicy(600, 600)}
    srv = OtaServer([image.to_bytes()], CampaignPolicy(
        max_concurrent=limit, upgrade_time=UpgradeTimePolicy.at_gps(at), device_classes=classes,
        max_wait=120.0))
    clients = [Client(f"00:00:00:00:00:00:00:{i:02x}", expected) for i in range(9)]
    clients[1].corrupt_once = True
    clients[2].silent_at, clients[2].silent_for = 1500, 2000.0
    for c in clients[6:]:
        c.page = True
        srv.set_device_class(c.ieee, "sleepy")
    by_ieee = {c.ieee: c for c in clients}
    rng = random.Random(3)
    events = [(T0 + rng.uniform(0, 30), i, c.ieee) for i, c in enumerate(clients)]
    heapq.heapify(events)
    seq = len(events)
    max_active = steps = 0

    def deliver(actions, now):
        nonlocal seq
        for action in actions:
            if isinstance(action, Reply):
                nxt = by_ieee[action.ieee].receive(action, now)
                if nxt is not None:
                    seq += 1
                    heapq.heappush(events, (nxt, seq, action.ieee))

    while events:
        steps += 1
        assert steps < 20_000
        deadline = srv.next_deadline()
        if deadline is not None and deadline <= events[0][0]:
            deliver(srv.on_timer(deadline), deadline)
            continue
        now, _, ieee = heapq.heappop(events)
        client = by_ieee[ieee]
        if client.state == "silent":
            client.state = "query"  # back after a reboot, with its flash intact
            seq += 1
            heapq.heappush(events, (now + client.silent_for, seq, ieee))
            continue
        if client.state == "done":
            continue
        sent = client.request(now)
        if sent is None:
            seq += 1
            heapq.heappush(events, (now, seq, ieee))
            continue
        command_id, payload = sent
        actions = srv.handle(ieee, command_id, payload, client.tsn, now, aps_max_payload=82)
        answers = [a for a in actions if isinstance(a, Reply)]
        assert len(answers) == 1 and answers[0].tsn == client.tsn and answers[0].ieee == ieee
        max_active = max(max_active, len(srv.scheduler.active))
        assert len(srv.scheduler.active) <= limit
        deliver(actions, now)
        if client.page and client.state == "download" and not any(
                e[2] == ieee for e in events):
            seq += 1
            heapq.heappush(events, (now + 1.5, seq, ieee))  # ask for the next page

    assert max_active == limit
    for c in clients:
        assert c.state == "done" and c.version == 2, (c.ieee, c.state, c.log[-5:])
        assert bytes(c.buffer) == expected
        assert set(c.upgrade_times) == {c.upgrade_times[0]}
        node = srv.node(c.ieee)
        assert node.outcome is Outcome.VERIFIED
    # one activation moment for the whole campaign
    assert len({c.upgrade_times[-1] for c in clients}) == 1
    assert any("wait" in c.log for c in clients)
    corrupt = srv.node(clients[1].ieee)
    assert (corrupt.retries, corrupt.restarts) == (1, 1)
    silent = srv.node(clients[2].ieee)
    assert silent.retries == 1 and silent.resumed_from is not None and silent.resumed_from >= 1500
    report = srv.report()
    assert report["phases"] == {"done": len(clients)} and report["active"] == []
