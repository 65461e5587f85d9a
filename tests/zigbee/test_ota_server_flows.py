"""OTA server over time: page trains paced by ResponseSpacing, stall detection per device
class, ImageNotify repeats, WAIT_FOR_DATA from the fleet scheduler and MinimumBlockPeriod,
resume after a node or a gateway restart."""

from __future__ import annotations

import json

import pytest
from zigpy.zcl.clusters.general import Ota

from proxyota.zigbee.ota_server import (
    CampaignPolicy,
    DeviceClassPolicy,
    Notify,
    OtaServer,
    Phase,
    ServerState,
)
from proxyota.zigbee.zcl_ota import (
    ImageBlockResponse,
    ImagePageRequest,
    Status,
    UpgradeEndRequest,
    zcl_utc_time,
)

from .test_ota_server import (
    MFR,
    NODE,
    OTHER,
    T0,
    TYPE,
    answer,
    block,
    decoded,
    download,
    logs,
    make_image,
    qni,
    replies,
    send,
    server,
)

THIRD = "00:11:22:33:44:55:66:99"


# -- ImagePage -------------------------------------------------------------------------


def page(offset=0, size=50, page_size=200, spacing=250) -> ImagePageRequest:
    return ImagePageRequest(MFR, TYPE, 2, offset, size, page_size, spacing)


def test_page_train_paced_by_response_spacing():
    image = make_image(2, size=1000)
    srv = server(image)
    first = send(srv, page(), T0, tsn=42)
    (r0,) = replies(first)
    assert decoded(r0).file_offset == 0 and r0.tsn == 42
    assert srv.next_deadline() == pytest.approx(T0 + 0.25)
    assert replies(srv.on_timer(T0 + 0.2)) == []
    times, offsets = [], []
    now = T0
    while srv.next_deadline() is not None and srv.next_deadline() < T0 + 10:
        now = srv.next_deadline()
        for reply in replies(srv.on_timer(now)):
            assert reply.tsn == 42
            resp = decoded(reply)
            times.append(now)
            offsets.append(resp.file_offset)
            assert resp.image_data == image.image_bytes()[resp.file_offset : resp.file_offset + 50]
    assert offsets == [50, 100, 150]
    assert times == pytest.approx([T0 + 0.25, T0 + 0.5, T0 + 0.75])
    node = srv.node(NODE)
    assert node.served == [[0, 200]] and node.blocks_served == 4 and node.phase is Phase.DOWNLOADING


def test_late_timer_sends_every_due_block_and_the_page_stops_at_the_image_end():
    image = make_image(2, size=500)
    srv = server(image)
    offset = image.total_size - 120
    send(srv, page(offset, 50, 400, 100), T0)
    blocks = [decoded(r) for r in replies(srv.on_timer(T0 + 5))]
    assert [b.file_offset for b in blocks] == [offset + 50, offset + 100]
    assert len(blocks[-1].image_data) == 20
    assert srv.node(NODE).phase is Phase.DOWNLOADED and srv.next_deadline() > T0 + 5


def test_a_new_request_cancels_the_page_train():
    srv = server(make_image(2, size=1000))
    send(srv, page(spacing=1000), T0)
    send(srv, block(50), T0 + 0.5)
    assert replies(srv.on_timer(T0 + 10)) == []


def test_sleepy_node_downloads_by_pages():
    image = make_image(2, size=700)
    srv = server(image)
    srv.set_device_class(NODE, "sleepy")
    data, offset, now = bytearray(), 0, T0
    while offset < image.total_size:
        sent = replies(send(srv, page(offset, 64, 256, 50), now))
        while (deadline := srv.next_deadline()) is not None and deadline < now + 2:
            sent += replies(srv.on_timer(deadline))
        for reply in sent:
            resp = decoded(reply)
            data[resp.file_offset : resp.file_offset + len(resp.image_data)] = resp.image_data
        offset = len(data)
        now += 30  # the sleepy node wakes up for the next page
    assert bytes(data) == image.image_bytes()
    assert srv.node(NODE).phase is Phase.DOWNLOADED


# -- stalls ----------------------------------------------------------------------------


def test_stall_timeout_depends_on_the_device_class():
    classes = {"router": DeviceClassPolicy(60, 120), "sleepy": DeviceClassPolicy(900, 900)}
    srv = server(make_image(2, size=1000), device_classes=classes)
    srv.set_device_class(OTHER, "sleepy")
    send(srv, block(0), T0, ieee=NODE)
    send(srv, block(0), T0, ieee=OTHER)
    assert srv.next_deadline() == T0 + 60
    assert srv.on_timer(T0 + 59) == []
    actions = srv.on_timer(T0 + 60)
    assert logs(actions, "retry")[0].ieee == NODE
    node, sleepy = srv.node(NODE), srv.node(OTHER)
    assert node.phase is Phase.STALLED and node.retries == 1 and "device class router" in node.reason
    assert sleepy.phase is Phase.DOWNLOADING
    assert srv.scheduler.active == (OTHER,)
    assert srv.next_deadline() == T0 + 900
    srv.on_timer(T0 + 900)
    assert sleepy.phase is Phase.STALLED


def test_verification_pause_after_the_last_block_is_not_a_stall():
    # the fixed 30 s timeout of zigpy fails EFR32 nodes that check the image for ~31 s
    srv = server(make_image(2, size=300))
    _, now = download(srv, T0)
    last = now - 1
    assert srv.on_timer(last + 89) == [] and srv.node(NODE).phase is Phase.DOWNLOADED
    assert srv.on_timer(last + 179) == []
    actions = srv.on_timer(last + 180)
    assert "no UpgradeEndRequest for 180" in logs(actions, "retry")[0].detail["reason"]


def test_stalled_node_is_served_when_it_comes_back():
    image = make_image(2, size=1000)
    srv = server(image)
    _, now = download(srv, T0, stop=320)
    srv.on_timer(now + 1000)
    assert srv.node(NODE).phase is Phase.STALLED
    actions = send(srv, block(320), now + 2000)
    assert answer(actions).file_offset == 320
    assert logs(actions, "resumed")[0].detail == {"offset": 320, "coverage": 320}
    node = srv.node(NODE)
    assert node.phase is Phase.DOWNLOADING and node.resumed_from == 320 and node.retries == 1
    data, _ = download(srv, now + 2001, start=384)
    assert node.coverage() == image.total_size


def test_waiting_node_that_never_returns_is_marked_stalled_without_a_retry():
    srv = server(make_image(2, size=1000), max_concurrent=1)
    send(srv, block(0), T0, ieee=NODE)
    wait = answer(send(srv, block(0), T0, ieee=OTHER))
    assert wait.status == Status.WAIT_FOR_DATA
    srv.on_timer(T0 + 10_000)
    other = srv.node(OTHER)
    assert other.phase is Phase.STALLED and other.retries == 0
    assert srv.scheduler.waiting == ()


def test_sleepy_nodes_get_image_notify_again():
    classes = {"router": DeviceClassPolicy(60, 120),
               "sleepy": DeviceClassPolicy(900, 900, notify_interval=3600, max_notifies=3)}
    srv = server(make_image(2), device_classes=classes)
    srv.set_device_class(NODE, "sleepy")
    srv.notify(T0, NODE)
    srv.notify(T0, OTHER)
    assert srv.next_deadline() == T0 + 3600
    again = [a for a in srv.on_timer(T0 + 3600) if isinstance(a, Notify)]
    assert [n.ieee for n in again] == [NODE]
    srv.on_timer(T0 + 7200)
    assert srv.node(NODE).notifies == 3 and srv.next_deadline() is None
    # once it queries, no more repeats
    srv2 = server(make_image(2), device_classes=classes)
    srv2.set_device_class(NODE, "sleepy")
    srv2.notify(T0, NODE)
    send(srv2, qni(1), T0 + 100)
    assert [a for a in srv2.on_timer(T0 + 3600) if isinstance(a, Notify)] == []


# -- WAIT_FOR_DATA ---------------------------------------------------------------------


def test_nodes_beyond_max_concurrent_are_told_to_wait():
    image = make_image(2, size=1000)
    srv = server(image, max_concurrent=1, min_block_period_ms=0)
    send(srv, block(0), T0, ieee=NODE)
    actions = send(srv, block(0), T0 + 1, ieee=OTHER)
    wait = answer(actions)  # zigpy parses it (current layout, with minimum_block_period)
    assert wait.status == Status.WAIT_FOR_DATA and wait.minimum_block_period == 0
    assert wait.current_time == zcl_utc_time(T0 + 1)
    # the queue head waits about one download (1062 B at the expected 47 B/s)
    due = T0 + image.total_size / 47.0
    assert wait.request_time == zcl_utc_time(due)
    assert srv.node(OTHER).phase is Phase.WAITING and srv.node(OTHER).wait_until == pytest.approx(due)
    assert logs(actions, "wait_for_data")[0].detail["position"] == 0
    # the first finishes: the waiter is served when it comes back
    _, now = download(srv, T0 + 2, start=64, ieee=NODE)
    answer(send(srv, UpgradeEndRequest(Status.SUCCESS, MFR, TYPE, 2), now, ieee=NODE))
    assert answer(send(srv, block(0), now + 1, ieee=OTHER)).status == Status.SUCCESS


@pytest.mark.parametrize(
    "policy, client_period, expected_len, expected_period",
    [
        ({"wait_for_data_layout": "spec"}, None, 11, 0),
        ({"wait_for_data_layout": "legacy"}, 0, 9, None),
        ({"wait_for_data_layout": "auto"}, None, 9, None),
        ({"wait_for_data_layout": "auto"}, 0, 11, 0),
    ],
)
def test_wait_for_data_layouts(policy, client_period, expected_len, expected_period):
    srv = server(make_image(2, size=1000), max_concurrent=1, **policy)
    send(srv, block(0), T0, ieee=NODE)
    (reply,) = replies(send(srv, block(0, minimum_block_period=client_period), T0, ieee=OTHER))
    assert len(reply.payload) == expected_len
    assert ImageBlockResponse.from_bytes(reply.payload).minimum_block_period == expected_period


def test_relative_wait_for_data():
    srv = server(make_image(2, size=1000), max_concurrent=1, time_reference="relative", max_wait=120,
                 expected_throughput=1.0)  # a slow mesh: the wait is bounded by max_wait
    send(srv, block(0), T0, ieee=NODE)
    wait = answer(send(srv, block(0), T0 + 5, ieee=OTHER))
    assert (wait.current_time, wait.request_time) == (0, 120)


def _probe(srv, ieee, now, period):
    return answer(send(srv, block(0, minimum_block_period=period), now, ieee=ieee))


def test_minimum_block_period_unit_probe_seconds_client():
    srv = server(make_image(2, size=1000), min_block_period_ms=2000)
    first = _probe(srv, NODE, T0, 0)
    assert first.status == Status.WAIT_FOR_DATA and first.minimum_block_period == 60  # the probe
    # back after ~60 s: it counts seconds; told 2 (s)
    second = _probe(srv, NODE, T0 + 60, 60)
    assert srv.node(NODE).mbp_unit == "s"
    assert second.status == Status.WAIT_FOR_DATA and second.minimum_block_period == 2
    assert _probe(srv, NODE, T0 + 62, 2).status == Status.SUCCESS


def test_minimum_block_period_unit_probe_milliseconds_client():
    srv = server(make_image(2, size=1000), min_block_period_ms=2000)
    _probe(srv, NODE, T0, 0)
    second = _probe(srv, NODE, T0 + 0.06, 60)  # back after 60 ms
    assert srv.node(NODE).mbp_unit == "ms" and second.minimum_block_period == 2000
    assert _probe(srv, NODE, T0 + 2.1, 2000).status == Status.SUCCESS


def test_mesh_busy_raises_the_period_for_running_downloads():
    srv = server(make_image(2, size=1000))
    assert _probe(srv, NODE, T0, 0).status == Status.SUCCESS  # no pacing asked
    srv.set_min_block_period(5000)
    assert _probe(srv, NODE, T0 + 1, 0).minimum_block_period == 60  # find its unit first
    told = _probe(srv, NODE, T0 + 61, 60)
    assert told.minimum_block_period == 5
    srv.set_min_block_period(None)  # back to the policy's 0
    assert _probe(srv, NODE, T0 + 70, 5).minimum_block_period == 0


def test_legacy_client_asking_too_early_is_paced():
    srv = server(make_image(2, size=1000), min_block_period_ms=5000)
    assert answer(send(srv, block(0), T0)).status == Status.SUCCESS
    early = answer(send(srv, block(64), T0 + 1))
    assert early.status == Status.WAIT_FOR_DATA
    assert early.request_time == zcl_utc_time(T0 + 5) and early.minimum_block_period == 5
    assert answer(send(srv, block(64), T0 + 5)).status == Status.SUCCESS


# -- resume ----------------------------------------------------------------------------


def test_node_restart_resumes_from_its_offset():
    image = make_image(2, size=1000)
    srv = server(image)
    send(srv, qni(1), T0)
    first, now = download(srv, T0 + 1, stop=448)
    # the node reboots, queries again and continues from where its flash ends
    assert answer(send(srv, qni(1), now + 60)).status == Status.SUCCESS
    actions = send(srv, block(448), now + 61)
    assert logs(actions, "resumed")
    rest, now = download(srv, now + 61, start=448)
    assert first + rest == image.image_bytes()
    node = srv.node(NODE)
    assert node.resumed_from == 448 and node.restarts == 0 and node.coverage() == image.total_size
    assert node.bytes_served == image.total_size + 64


def test_node_reboot_mid_download_from_zero_is_served():
    image = make_image(2, size=1000)
    srv = server(image)
    _, now = download(srv, T0, stop=512)
    actions = send(srv, block(0), now + 5)  # rebooted and lost its buffer
    assert answer(actions).file_offset == 0
    assert logs(actions, "restarted")[0].detail == {"restarts": 1, "coverage": 512}
    node = srv.node(NODE)
    assert node.restarts == 1 and node.resumed_from == 0 and node.position == 64
    assert node.served == [[0, 512]]


def test_gateway_restart_continues_from_the_state_dict():
    image = make_image(2, size=1000)
    policy = dict(max_concurrent=1)
    srv = server(image, **policy)
    send(srv, qni(1), T0)
    _, now = download(srv, T0 + 1, stop=320)
    wait = answer(send(srv, block(0), now, ieee=OTHER))
    assert wait.status == Status.WAIT_FOR_DATA
    before = srv.node(NODE).report()
    saved = json.dumps(srv.state.to_dict())

    # the gateway process dies; a new one is built from the stored state
    again = OtaServer([image.to_bytes()], CampaignPolicy(**policy), ServerState.from_dict(json.loads(saved)))
    assert again.state.to_dict() == json.loads(saved)
    assert again.node(NODE).report() == before
    assert again.scheduler.active == (NODE,) and again.scheduler.waiting == (OTHER,)
    assert again.next_deadline() == srv.next_deadline()
    # the node never noticed: it continues, the other still waits for the slot
    assert answer(send(again, block(320), now + 1)).file_offset == 320
    assert answer(send(again, block(0), now + 2, ieee=OTHER)).status == Status.WAIT_FOR_DATA
    rest, now = download(again, now + 2, start=384)
    node = again.node(NODE)
    assert node.coverage() == image.total_size and node.resumed_from is None
    assert node.throughput() == pytest.approx(node.attempt_bytes / (node.last_time - node.attempt_start))
    answer(send(again, UpgradeEndRequest(Status.SUCCESS, MFR, TYPE, 2), now))
    assert answer(send(again, block(0), now + 1, ieee=OTHER)).status == Status.SUCCESS


def test_progress_figures():
    image = make_image(2, size=1000)
    srv = server(image)
    _, now = download(srv, T0, stop=500, step=2.0)  # 64 B every 2 s
    node = srv.node(NODE)
    assert node.throughput() == pytest.approx(512 / 14)
    assert node.eta() == pytest.approx((image.total_size - 512) / (512 / 14))
    report = srv.report()
    assert report["nodes"][NODE]["progress"] == pytest.approx(512 / image.total_size, abs=1e-4)
    assert report["active"] == [NODE] and report["phases"] == {"downloading": 1}


def test_invalid_state_dicts_are_rejected():
    from proxyota.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        ServerState.from_dict({"format": 99})
    with pytest.raises(InvalidArgument):
        ServerState.from_dict({"format": 1, "nodes": {NODE: {"ieee": NODE, "colour": 1}}})
    with pytest.raises(InvalidArgument):
        ServerState.from_dict({"format": 1, "nodes": {NODE: {"ieee": NODE, "phase": "dancing"}}})


def test_zigpy_reads_every_wait_for_data_we_send_by_default():
    srv = server(make_image(2, size=1000), max_concurrent=1)
    send(srv, block(0), T0, ieee=NODE)
    (reply,) = replies(send(srv, block(0), T0, ieee=THIRD))
    parsed, rest = Ota.ClientCommandDefs.image_block_response.schema.deserialize(reply.payload)
    assert rest == b"" and parsed.status == Status.WAIT_FOR_DATA
