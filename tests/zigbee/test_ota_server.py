"""OTA server: every command and status path (query, block, notify, end, specific file,
errors), one reply per request, replies parsed by zigpy's schemas too."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import Ota

from proxyota.errors import InvalidArgument
from proxyota.zigbee import otafile
from proxyota.zigbee.ota_server import (
    CampaignPolicy,
    DeviceClassPolicy,
    Log,
    Notify,
    OtaServer,
    Outcome,
    Phase,
    Reply,
    ServerState,
    UpgradeTimePolicy,
)
from proxyota.zigbee.zcl_ota import (
    DEFAULT_RESPONSE_COMMAND_ID,
    DefaultResponse,
    ImageBlockRequest,
    ImageBlockResponse,
    ImageNotify,
    ImagePageRequest,
    QueryNextImageRequest,
    QueryNextImageResponse,
    QuerySpecificFileRequest,
    QuerySpecificFileResponse,
    Status,
    UpgradeEndRequest,
    UpgradeEndResponse,
    decode_response,
    eui64_from_str,
    zcl_utc_time,
)

T0 = 1_400_000_000.0  # GPS seconds (2024)
MFR, TYPE = 0x1234, 0x0001
NODE = "00:11:22:33:44:55:66:77"
OTHER = "00:11:22:33:44:55:66:88"


def make_image(version: int = 2, size: int = 600, *, mfr: int = MFR, itype: int = TYPE, seed: int = 1, **header):
    payload = random.Random(seed + version).randbytes(size)
    return otafile.build(mfr, itype, version, payload, **header)


def server(*images, **policy) -> OtaServer:
    return OtaServer(list(images) or [make_image()], CampaignPolicy(**policy) if policy else None)


def send(srv: OtaServer, cmd, now: float = T0, *, ieee: str = NODE, tsn: int = 7, aps: int = 82, **kw) -> list:
    return srv.handle(ieee, cmd.command_id, cmd.to_bytes(), tsn, now, aps_max_payload=aps, **kw)


def replies(actions) -> list[Reply]:
    return [a for a in actions if isinstance(a, Reply)]


def decoded(reply: Reply):
    if reply.general:
        assert reply.command_id == DEFAULT_RESPONSE_COMMAND_ID
        return DefaultResponse.from_bytes(reply.payload)
    return decode_response(reply.command_id, reply.payload)


def answer(actions):
    """The one reply to a request, decoded (and parsed by zigpy as a cross-check)."""
    found = replies(actions)
    assert len(found) == 1, found
    zigpy_check(found[0])
    return decoded(found[0])


def zigpy_check(reply: Reply) -> None:
    if reply.general:
        schema = foundation.GENERAL_COMMANDS[foundation.GeneralCommand.Default_Response].schema
    else:
        schema = next(c for c in Ota.ClientCommandDefs if c.id == reply.command_id).schema
    parsed, rest = schema.deserialize(reply.payload)
    assert rest == b""
    assert parsed.serialize() == reply.payload


def logs(actions, event: str | None = None) -> list[Log]:
    return [a for a in actions if isinstance(a, Log) and (event is None or a.event == event)]


def qni(version: int = 1, hw: int | None = None, mfr: int = MFR, itype: int = TYPE) -> QueryNextImageRequest:
    return QueryNextImageRequest(mfr, itype, version, hw)


def block(offset: int, size: int = 64, version: int = 2, **kw) -> ImageBlockRequest:
    return ImageBlockRequest(MFR, TYPE, version, offset, size, **kw)


def download(srv: OtaServer, now: float, *, ieee: str = NODE, version: int = 2, start: int = 0,
             step: float = 1.0, size: int = 64, stop: int | None = None) -> tuple[bytes, float]:
    """Pull blocks from ``start`` to the end (or ``stop``); returns the data and the time."""
    data, offset = b"", start
    image_size = srv._images[(MFR, TYPE, version)].size
    end = image_size if stop is None else stop
    while offset < end:
        resp = answer(send(srv, block(offset, size, version), now, ieee=ieee))
        assert resp.status == Status.SUCCESS, resp
        assert resp.file_offset == offset
        data += resp.image_data
        offset += len(resp.image_data)
        now += step
    return data, now


# -- QueryNextImage --------------------------------------------------------------------


def test_query_offers_the_newer_image():
    image = make_image(2)
    srv = server(image)
    resp = answer(send(srv, qni(1)))
    assert resp == QueryNextImageResponse(Status.SUCCESS, MFR, TYPE, 2, image.total_size)
    node = srv.node(NODE)
    assert node.phase is Phase.OFFERED and node.file_version == 2 and node.current_file_version == 1


def test_newest_matching_image_is_chosen():
    srv = server(make_image(2), make_image(5), make_image(3), make_image(9, itype=7))
    assert answer(send(srv, qni(1))).file_version == 5


@pytest.mark.parametrize("hw, offered", [(0, False), (1, True), (2, True), (3, True), (4, False), (None, True)])
def test_hardware_version_range(hw, offered):
    srv = server(make_image(2, minimum_hardware_version=1, maximum_hardware_version=3))
    actions = send(srv, qni(1, hw))
    resp = answer(actions)
    if offered:
        assert resp.status == Status.SUCCESS
    else:
        assert resp == QueryNextImageResponse(Status.NO_IMAGE_AVAILABLE)
        assert logs(actions, "no_image")[0].detail["reason"] == "hardware"
        assert f"hardware version {hw} out of range 1..3" in logs(actions, "no_image")[0].detail["detail"]


def test_hardware_version_required_by_policy():
    srv = server(make_image(2, minimum_hardware_version=1, maximum_hardware_version=3), require_hardware_version=True)
    assert answer(send(srv, qni(1))).status == Status.NO_IMAGE_AVAILABLE
    assert answer(send(srv, qni(1, 2))).status == Status.SUCCESS


def test_downgrade_refused_unless_allowed():
    old = make_image(1)
    srv = server(old)
    actions = send(srv, qni(2))
    assert answer(actions).status == Status.NO_IMAGE_AVAILABLE
    assert logs(actions, "no_image")[0].detail["reason"] == "downgrade"
    # a block request for the older file is refused too
    assert answer(send(srv, block(0, version=1), T0 + 1)) == ImageBlockResponse.abort()
    allowed = server(old, allow_downgrade=True)
    assert answer(send(allowed, qni(2))) == QueryNextImageResponse(Status.SUCCESS, MFR, TYPE, 1, old.total_size)
    assert answer(send(allowed, block(0, version=1), T0 + 1)).status == Status.SUCCESS


def test_up_to_date_node_is_done():
    srv = server(make_image(2))
    actions = send(srv, qni(2))
    assert answer(actions).status == Status.NO_IMAGE_AVAILABLE
    assert logs(actions, "no_image")[0].detail["reason"] == "up_to_date"
    node = srv.node(NODE)
    assert node.phase is Phase.DONE and node.outcome is Outcome.UP_TO_DATE


def test_unknown_manufacturer_or_type():
    srv = server(make_image(2))
    assert answer(send(srv, qni(1, mfr=0x9999))).status == Status.NO_IMAGE_AVAILABLE
    assert answer(send(srv, qni(1, itype=0x0002))).status == Status.NO_IMAGE_AVAILABLE


def test_device_specific_file_only_for_its_node():
    srv = server(make_image(2, upgrade_file_destination=eui64_from_str(OTHER)))
    assert answer(send(srv, qni(1))).status == Status.NO_IMAGE_AVAILABLE
    assert answer(send(srv, qni(1), ieee=OTHER)).status == Status.SUCCESS
    assert answer(send(srv, block(0), ieee=NODE)) == ImageBlockResponse.abort()


def test_campaign_targets():
    srv = server(make_image(2), targets={OTHER})
    assert answer(send(srv, qni(1))).status == Status.NO_IMAGE_AVAILABLE
    assert answer(send(srv, block(0))) == ImageBlockResponse.abort()
    assert answer(send(srv, qni(1), ieee=OTHER)).status == Status.SUCCESS


# -- ImageBlock ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "client_max, aps, mfr_specific, policy, expected",
    [
        (64, 82, False, {}, 64),  # the client's maximum fits
        (100, 82, False, {}, 65),  # 82 - 3 (ZCL header) - 14
        (100, 82, True, {}, 63),  # 5-byte ZCL header with a manufacturer code
        (255, 100, False, {}, 83),
        (100, 82, False, {"max_block_size": 32}, 32),
        (100, 82, False, {"manufacturer_block_caps": {MFR: 40}}, 40),
        (10, 82, False, {"manufacturer_block_caps": {MFR: 40}}, 10),
    ],
)
def test_block_size_is_capped(client_max, aps, mfr_specific, policy, expected):
    srv = server(make_image(2, size=1000), **policy)
    actions = send(srv, block(0, client_max), aps=aps, manufacturer_specific=mfr_specific)
    resp = answer(actions)
    assert len(resp.image_data) == expected
    header = 5 if mfr_specific else 3
    assert header + len(replies(actions)[0].payload) <= aps


def test_known_vendor_cap_by_default():
    image = make_image(2, mfr=4474)
    srv = OtaServer([image])
    resp = answer(send(srv, ImageBlockRequest(4474, TYPE, 2, 0, 64)))
    assert len(resp.image_data) == 40  # Insta: zigpy caps it at 40


def test_blocks_reassemble_the_image_and_the_last_one_is_short():
    image = make_image(2, size=600)
    srv = server(image)
    data, _ = download(srv, T0)
    assert data == image.image_bytes()
    node = srv.node(NODE)
    assert node.phase is Phase.DOWNLOADED
    assert node.served == [[0, image.total_size]] and node.coverage() == image.total_size
    assert node.blocks_served == -(-image.total_size // 64)


def test_block_for_unknown_image_is_aborted():
    srv = server(make_image(2))
    actions = send(srv, block(0, version=3))
    assert answer(actions) == ImageBlockResponse.abort()
    assert "no such image" in logs(actions, "abort")[0].detail["reason"]


# -- malformed and unsupported ---------------------------------------------------------


def _state(srv):
    return srv.state.to_dict()


@pytest.mark.parametrize(
    "command_id, payload",
    [
        (0x01, b"\x01\x34\x12\x01\x00\x01\x00\x00\x00"),  # hardware version announced, missing
        (0x01, b""),
        (0x03, bytes.fromhex("00 3412 0100 02000000 00000000")),  # no maximum_data_size
        (0x03, bytes.fromhex("01 3412 0100 02000000 00000000 40 0011")),  # EUI64 cut short
        (0x04, bytes.fromhex("00 3412 0100 02000000 00000000 40 0001")),  # no response_spacing
        (0x06, b""),
        (0x06, b"\x00\x34\x12"),  # SUCCESS needs the image id
        (0x08, b"\x00" * 17),
    ],
)
def test_undecodable_payload_gets_malformed_command(command_id, payload):
    srv = server(make_image(2))
    send(srv, qni(1))  # some state to keep
    before = _state(srv)
    actions = srv.handle(NODE, command_id, payload, 9, T0 + 1, aps_max_payload=82)
    resp = answer(actions)
    assert resp == DefaultResponse(command_id, Status.MALFORMED_COMMAND)
    assert replies(actions)[0].tsn == 9 and replies(actions)[0].general
    assert _state(srv) == before


@pytest.mark.parametrize(
    "cmd",
    [
        block(600 + 100),  # offset past the image
        block(0, size=0),  # maximum_data_size 0
        ImagePageRequest(MFR, TYPE, 2, 0, 64, 0, 10),  # page_size 0
        ImagePageRequest(MFR, TYPE, 2, 5000, 64, 100, 10),
    ],
)
def test_impossible_requests_get_malformed_command(cmd):
    srv = server(make_image(2, size=600))
    send(srv, qni(1))
    before = _state(srv)
    assert answer(send(srv, cmd, T0 + 1)) == DefaultResponse(cmd.command_id, Status.MALFORMED_COMMAND)
    assert _state(srv) == before


@pytest.mark.parametrize("command_id", [0x00, 0x02, 0x05, 0x07, 0x09, 0x0A, 0xFF])
def test_other_commands_are_unsupported(command_id):
    srv = server()
    actions = srv.handle(NODE, command_id, b"\x00" * 12, 3, T0, aps_max_payload=82)
    assert answer(actions) == DefaultResponse(command_id, Status.UNSUP_CLUSTER_COMMAND)
    assert srv.state.nodes == {}


def test_bad_driver_arguments_raise():
    srv = server()
    with pytest.raises(InvalidArgument):
        srv.handle(NODE, 1, qni().to_bytes(), 3, T0, aps_max_payload=17)  # no room for one byte
    with pytest.raises(InvalidArgument):
        srv.handle(NODE, 1, qni().to_bytes(), 256, T0, aps_max_payload=82)
    with pytest.raises(InvalidArgument):
        srv.handle("", 1, qni().to_bytes(), 3, T0, aps_max_payload=82)
    with pytest.raises(InvalidArgument):
        srv.handle(NODE, 1, qni().to_bytes(), 3, float("inf"), aps_max_payload=82)
    with pytest.raises(InvalidArgument):
        OtaServer([make_image(2), make_image(2)])
    with pytest.raises(InvalidArgument):
        CampaignPolicy(default_device_class="nope")
    with pytest.raises(InvalidArgument):
        UpgradeTimePolicy("absolute")


# -- UpgradeEnd ------------------------------------------------------------------------


def finish(srv: OtaServer, now: float, ieee: str = NODE, status: int = Status.SUCCESS, version: int = 2):
    return send(srv, UpgradeEndRequest(status, MFR, TYPE, version), now, ieee=ieee)


def test_upgrade_end_success_now_in_utc():
    srv = server(make_image(2))
    send(srv, qni(1))
    _, now = download(srv, T0 + 1)
    actions = finish(srv, now)
    resp = answer(actions)
    assert resp == UpgradeEndResponse(MFR, TYPE, 2, zcl_utc_time(now), zcl_utc_time(now))
    node = srv.node(NODE)
    assert node.phase is Phase.UPGRADING and node.outcome is Outcome.UPGRADED and node.upgrade_at == now
    # after the switch the node reports the new version: verified
    actions = send(srv, qni(2), now + 40)
    assert logs(actions, "verified")
    assert answer(actions).status == Status.NO_IMAGE_AVAILABLE
    assert srv.node(NODE).outcome is Outcome.VERIFIED and srv.node(NODE).phase is Phase.DONE


def test_upgrade_end_relative_time_reference():
    srv = server(make_image(2), upgrade_time=UpgradeTimePolicy.after(120), time_reference="relative")
    send(srv, qni(1))
    _, now = download(srv, T0 + 1)
    assert answer(finish(srv, now)) == UpgradeEndResponse(MFR, TYPE, 2, 0, 120)


def test_upgrade_end_delay():
    srv = server(make_image(2), upgrade_time=UpgradeTimePolicy.after(3600))
    _, now = download(srv, T0)
    resp = answer(finish(srv, now))
    assert resp.upgrade_time - resp.current_time == 3600
    assert srv.node(NODE).upgrade_at == now + 3600


def test_synchronised_activation_is_the_same_moment_for_the_campaign():
    at = T0 + 86_400
    srv = server(make_image(2), upgrade_time=UpgradeTimePolicy.at_gps(at))
    _, t1 = download(srv, T0, ieee=NODE)
    _, t2 = download(srv, t1 + 500, ieee=OTHER)
    r1, r2 = answer(finish(srv, t1, NODE)), answer(finish(srv, t2, OTHER))
    assert r1.upgrade_time == r2.upgrade_time == zcl_utc_time(at)
    assert r1.current_time != r2.current_time
    import datetime as dt

    from proxyota.clock import gps_to_unix

    when = dt.datetime.fromtimestamp(gps_to_unix(at), dt.timezone.utc)
    assert UpgradeTimePolicy.at_utc(when).at == pytest.approx(at)


def test_wait_for_upgrade_command_then_release():
    srv = server(make_image(2), upgrade_time=UpgradeTimePolicy.wait_for_command())
    _, now = download(srv, T0)
    resp = answer(finish(srv, now))
    assert resp.upgrade_time == 0xFFFFFFFF
    assert srv.node(NODE).phase is Phase.AWAITING_COMMAND
    actions = srv.release_upgrade(now + 100)
    unsolicited = replies(actions)
    assert len(unsolicited) == 1 and unsolicited[0].tsn is None and unsolicited[0].ieee == NODE
    zigpy_check(unsolicited[0])
    released = decoded(unsolicited[0])
    assert released.upgrade_time == released.current_time == zcl_utc_time(now + 100)
    assert srv.node(NODE).phase is Phase.UPGRADING
    # a node finishing after the release activates at once
    _, later = download(srv, now + 200, ieee=OTHER)
    late = answer(finish(srv, later, OTHER))
    assert late.upgrade_time == late.current_time == zcl_utc_time(later)
    with pytest.raises(InvalidArgument):
        srv.release_upgrade(later, [NODE])


@pytest.mark.parametrize("status", [Status.INVALID_IMAGE, Status.ABORT, Status.FAILURE])
def test_upgrade_end_failure_gets_default_response_success(status):
    srv = server(make_image(2))
    send(srv, qni(1))
    _, now = download(srv, T0 + 1)
    actions = finish(srv, now, status=status)
    assert answer(actions) == DefaultResponse(0x06, Status.SUCCESS)
    node = srv.node(NODE)
    assert node.retries == 1 and node.phase is Phase.IDLE and node.outcome is None
    assert status.name in node.reason
    assert srv.scheduler.active == ()


def test_upgrade_end_failure_with_status_only():
    srv = server(make_image(2))
    send(srv, qni(1))
    actions = srv.handle(NODE, 0x06, b"\x95", 4, T0 + 1, aps_max_payload=82)
    assert answer(actions) == DefaultResponse(0x06, Status.SUCCESS)
    assert srv.node(NODE).retries == 1


def test_require_more_image_is_not_a_failure():
    srv = server(make_image(2))
    _, now = download(srv, T0)
    assert answer(finish(srv, now, status=Status.REQUIRE_MORE_IMAGE)) == DefaultResponse(0x06, Status.SUCCESS)
    assert srv.node(NODE).retries == 0 and srv.node(NODE).phase is Phase.IDLE


def test_upgrade_end_for_an_image_not_served_is_aborted():
    srv = server(make_image(2))
    assert answer(finish(srv, T0, version=9)) == DefaultResponse(0x06, Status.ABORT)


def test_corrupted_image_is_downloaded_again_from_zero():
    image = make_image(2)
    srv = server(image)
    send(srv, qni(1))
    _, now = download(srv, T0 + 1)
    finish(srv, now, status=Status.INVALID_IMAGE)  # the node's integrity check failed
    assert answer(send(srv, qni(1), now + 30)).status == Status.SUCCESS
    actions = send(srv, block(0), now + 31)
    assert logs(actions, "restarted")
    data, now = download(srv, now + 31)
    assert data == image.image_bytes()
    assert answer(finish(srv, now)).file_version == 2
    node = srv.node(NODE)
    assert (node.retries, node.restarts, node.outcome) == (1, 1, Outcome.UPGRADED)
    assert node.bytes_served == 2 * image.total_size + 64  # the extra block asked at now + 31


def test_gives_up_after_max_retries_with_reason():
    srv = server(make_image(2), max_retries=2)
    now = T0
    for attempt in range(3):
        send(srv, qni(1), now)
        _, now = download(srv, now)
        actions = finish(srv, now, status=Status.INVALID_IMAGE)
        now += 10
    assert logs(actions, "failed")
    node = srv.node(NODE)
    assert node.phase is Phase.FAILED and node.outcome is Outcome.FAILED
    assert "gave up after 3 failed attempts" in node.reason and "INVALID_IMAGE" in node.reason
    assert answer(send(srv, qni(1), now)).status == Status.NO_IMAGE_AVAILABLE
    assert answer(send(srv, block(0), now)) == ImageBlockResponse.abort()
    srv.reset_node(NODE)
    assert answer(send(srv, qni(1), now)).status == Status.SUCCESS


def test_node_not_activated_counts_a_retry():
    srv = server(make_image(2))
    send(srv, qni(1))
    _, now = download(srv, T0 + 1)
    finish(srv, now)
    # "reaches 100 % but nothing changes": still the old version long after activation
    actions = send(srv, qni(1), now + 1000)
    assert logs(actions, "retry") and "still running 0x00000001" in srv.node(NODE).reason
    assert answer(actions).status == Status.SUCCESS  # offered again
    assert srv.node(NODE).retries == 1


# -- QuerySpecificFile -----------------------------------------------------------------


def test_query_specific_file():
    config = make_image(5, itype=0xFFC1, upgrade_file_destination=eui64_from_str(NODE))
    srv = server(make_image(2), config)
    req = QuerySpecificFileRequest(eui64_from_str(NODE), MFR, 0xFFC1, 5, 0x0002)
    assert answer(send(srv, req)) == QuerySpecificFileResponse(Status.SUCCESS, MFR, 0xFFC1, 5, config.total_size)
    assert srv.node(NODE).phase is Phase.OFFERED
    resp = answer(send(srv, ImageBlockRequest(MFR, 0xFFC1, 5, 0, 50), T0 + 1))
    assert resp.image_data == config.image_bytes()[:50]
    other = QuerySpecificFileRequest(eui64_from_str(OTHER), MFR, 0xFFC1, 5, 0x0002)
    assert answer(send(srv, other, ieee=OTHER)) == QuerySpecificFileResponse(Status.NO_IMAGE_AVAILABLE)
    missing = QuerySpecificFileRequest(eui64_from_str(NODE), MFR, 0xFFC1, 6, 0x0002)
    assert answer(send(srv, missing)) == QuerySpecificFileResponse(Status.NO_IMAGE_AVAILABLE)


# -- ImageNotify -----------------------------------------------------------------------


def test_unicast_notify_makes_the_node_query_at_once():
    srv = server(make_image(2))
    actions = srv.notify(T0, NODE)
    (notify,) = [a for a in actions if isinstance(a, Notify)]
    assert notify.ieee == NODE and ImageNotify.from_bytes(notify.payload) == ImageNotify(0, 100)
    assert Ota.ClientCommandDefs.image_notify.schema.deserialize(notify.payload)[0].query_jitter == 100
    assert srv.node(NODE).phase is Phase.NOTIFIED and srv.node(NODE).notifies == 1


def test_broadcast_notify_with_query_jitter():
    srv = server(make_image(2), make_image(4), make_image(3, itype=9), query_jitter=20)
    notifies = [a for a in srv.notify(T0) if isinstance(a, Notify)]
    assert all(n.ieee is None for n in notifies)
    assert [ImageNotify.from_bytes(n.payload) for n in notifies] == [
        ImageNotify(3, 20, MFR, TYPE, 4), ImageNotify(3, 20, MFR, 9, 3)
    ]
    one = [a for a in srv.notify(T0, payload_type=1, query_jitter=5) if isinstance(a, Notify)]
    assert [ImageNotify.from_bytes(n.payload) for n in one] == [ImageNotify(1, 5, MFR)]
    with pytest.raises(InvalidArgument):
        srv.notify(T0, query_jitter=0)


def test_replies_echo_the_request_tsn():
    srv = server(make_image(2))
    for tsn, cmd in ((11, qni(1)), (12, block(0)), (13, UpgradeEndRequest(Status.ABORT))):
        (reply,) = replies(send(srv, cmd, tsn=tsn))
        assert reply.tsn == tsn


def test_device_class_policy_is_validated():
    with pytest.raises(InvalidArgument):
        DeviceClassPolicy(stall_timeout=0, verify_timeout=10)
    srv = server()
    with pytest.raises(InvalidArgument):
        srv.set_device_class(NODE, "fridge")


# -- robustness --------------------------------------------------------------------------

_nodes = st.sampled_from([NODE, OTHER, "00:11:22:33:44:55:66:99"])
_valid = st.one_of(
    st.builds(qni, st.integers(0, 4), st.none() | st.integers(0, 5)),
    st.builds(block, st.integers(0, 700), st.integers(0, 255), st.integers(1, 3)),
    st.builds(lambda o, n, sp: ImagePageRequest(MFR, TYPE, 2, o, 64, n, sp),
              st.integers(0, 700), st.integers(0, 400), st.integers(0, 500)),
    st.builds(lambda s: UpgradeEndRequest(s, MFR, TYPE, 2),
              st.sampled_from([Status.SUCCESS, Status.INVALID_IMAGE, Status.ABORT, Status.REQUIRE_MORE_IMAGE])),
    st.builds(lambda v: QuerySpecificFileRequest(1, MFR, TYPE, v, 2), st.integers(1, 3)),
)
_step = st.tuples(
    _nodes,
    st.floats(0, 400),
    st.one_of(_valid.map(lambda c: (c.command_id, c.to_bytes())),
              st.tuples(st.integers(0, 12), st.binary(max_size=30))),
    st.integers(0, 255),
    st.booleans(),  # run the timer first
)


@settings(derandomize=True, deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_step, max_size=40), st.integers(1, 2))
def test_any_command_stream_gets_one_reply_each_and_a_restorable_state(steps, limit):
    image = make_image(2, size=600)
    policy = CampaignPolicy(max_concurrent=limit, min_block_period_ms=1000)
    srv = OtaServer([image], policy)
    now = T0
    for ieee, dt_, (command_id, payload), tsn, timer in steps:
        now += dt_
        if timer:
            for action in srv.on_timer(now):
                assert isinstance(action, (Reply, Notify, Log))
        before = srv.state.to_dict()
        actions = srv.handle(ieee, command_id, payload, tsn, now, aps_max_payload=82)
        answers = replies(actions)
        assert all(r.tsn == tsn and r.ieee == ieee for r in answers)
        if command_id == 0x04 and len(answers) > 1:  # a page train's first blocks (spacing 0)
            assert all(decoded(r).status == Status.SUCCESS for r in answers)
        else:
            (reply,) = answers
            response = decoded(reply)
            if isinstance(response, DefaultResponse) and response.status in (
                    Status.MALFORMED_COMMAND, Status.UNSUP_CLUSTER_COMMAND):
                assert srv.state.to_dict() == before
        assert len(srv.scheduler.active) <= limit
        deadline = srv.next_deadline()
        assert deadline is None or deadline >= now - 1e6
        saved = json.loads(json.dumps(srv.state.to_dict()))
        assert ServerState.from_dict(saved).to_dict() == saved


def test_a_query_for_another_image_type_does_not_verify_the_served_file():
    srv = server(make_image(2), make_image(2, itype=0x0002))
    send(srv, qni(1))
    _, now = download(srv, T0 + 1)
    finish(srv, now)
    # a multi-image device asks about its other image type, which runs version 2 already
    actions = send(srv, qni(2, itype=0x0002), now + 1)
    assert not logs(actions, "verified")
    assert srv.node(NODE).phase is Phase.UPGRADING
    assert logs(send(srv, qni(2), now + 2), "verified")
