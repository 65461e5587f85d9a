"""The device-side OTA client state machine on its own (sans-IO: commands and timers in,
commands out, explicit time)."""

from __future__ import annotations

import random

import pytest

from radio_emulators.zigbee import ota_codec as oc
from radio_emulators.zigbee.devices import PROFILES, ROUTER, SLEEPY
from radio_emulators.zigbee.ota_client import Activate, OtaClient, OtaState, OtaStorage, Send
from radio_emulators.zigbee.otafile import build_ota_image

IMAGE = build_ota_image(0x1234, 0x0001, 2, bytes(range(200)), hardware_versions=(1, 3))
SIZE = len(IMAGE)


def new_client(profile=ROUTER, storage=None, version=1):
    client = OtaClient(profile, storage or OtaStorage(), current_file_version=version, rng=random.Random(1))
    client.start(0.0)
    return client


def sent(actions):
    return [a.command for a in actions if isinstance(a, Send)]


def offer(client, now=10.0):
    """Run the query and answer SUCCESS; returns the first download request."""
    [query] = sent(client.on_timer(client.deadline))
    return sent(client.handle(oc.QueryNextImageResponse(0, 0x1234, 1, 2, SIZE), now))


def block(offset, n=64):
    return oc.ImageBlockResponse(0, 0x1234, 1, 2, offset, IMAGE[offset:offset + n])


def test_query_carries_hardware_version_when_the_profile_has_one():
    client = new_client()
    assert client.state == OtaState.IDLE and client.deadline == ROUTER.first_query_delay_s
    [q] = sent(client.on_timer(5.0))
    assert q == oc.QueryNextImageRequest(0x1234, 1, 1, 1)
    assert client.state == OtaState.QUERYING
    [q2] = sent(new_client(ROUTER.with_(hardware_version=None)).on_timer(5.0))
    assert q2.hardware_version is None and q2.encode()[0] == 0


def test_no_image_goes_idle_until_the_query_interval():
    client = new_client()
    client.on_timer(5.0)
    client.handle(oc.QueryNextImageResponse(0x98), 5.2)
    assert client.state == OtaState.IDLE and client.deadline == pytest.approx(5.2 + ROUTER.query_interval_s)


def test_full_download_verify_end_and_activate():
    client = new_client()
    [req] = offer(client)
    assert isinstance(req, oc.ImageBlockRequest) and req.file_offset == 0 and req.maximum_data_size == 64
    offset, now = 0, 10.0
    while offset < SIZE:
        now += 0.1
        out = sent(client.handle(block(offset), now))
        offset = min(offset + 64, SIZE)
        if offset < SIZE:
            assert out == [oc.ImageBlockRequest(0x1234, 1, 2, offset, 64)]
    assert client.state == OtaState.VERIFYING and client.deadline == pytest.approx(now + ROUTER.verify_time_s)
    [end] = sent(client.on_timer(client.deadline))
    assert end == oc.UpgradeEndRequest(0, 0x1234, 1, 2)
    assert client.handle(oc.UpgradeEndResponse(0x1234, 1, 2, 0, 0), now + 1) == [Activate(2)]
    assert client.stats.blocks == -(-SIZE // 64) and client.stats.bytes == SIZE


def test_upgrade_time_in_the_future_and_wait_forever():
    client = new_client(storage=OtaStorage())
    offer(client)
    client.storage.data[:] = IMAGE
    client._enter(OtaState.VERIFYING, 20.0)
    client.on_timer(20.0)
    assert client.handle(oc.UpgradeEndResponse(0x1234, 1, 2, 1000, 1060), 21.0) == []
    assert client.state == OtaState.WAITING_UPGRADE and client.deadline == pytest.approx(81.0)
    assert client.handle(oc.UpgradeEndResponse(0x1234, 1, 2, 0, 0xFFFFFFFF), 22.0) == []
    assert client.state == OtaState.WAITING_COMMAND
    [again] = sent(client.on_timer(client.deadline))                # asks again much later
    assert again.status == 0
    assert client.handle(oc.UpgradeEndResponse(0xFFFF, 0xFFFF, 0xFFFFFFFF, 0, 0), 5000.0) == [Activate(2)]


def test_no_end_response_applies_after_retries():
    client = new_client()
    offer(client)
    client.storage.data[:] = IMAGE
    client._enter(OtaState.VERIFYING, 20.0)
    actions = client.on_timer(20.0)
    for _ in range(ROUTER.end_request_retries):
        actions = client.on_timer(client.deadline)
        assert [type(c) for c in sent(actions)] == [oc.UpgradeEndRequest]
    assert client.on_timer(client.deadline) == [Activate(2)]
    assert client.stats.applied_without_response == 1


@pytest.mark.parametrize("with_period", [True, False])
def test_wait_for_data_both_layouts(with_period):
    client = new_client()
    offer(client)
    rsp = oc.ImageBlockResponse(0x97, current_time=100, request_time=104,
                                minimum_block_period=3 if with_period else None)
    assert client.handle(rsp, 11.0) == []
    assert client.deadline == pytest.approx(15.0) and client.stats.wait_for_data == 1
    [again] = sent(client.on_timer(15.0))
    assert again.file_offset == 0
    assert client.block_period_s == (3.0 if with_period else 0.0)
    if with_period:                                          # the next request respects the period
        client.handle(block(0), 15.2)
        assert client.deadline == pytest.approx(18.0)


def test_min_block_period_units_and_quirk():
    legacy = new_client(PROFILES["legacy-ms-period"])
    offer(legacy)
    legacy.handle(oc.ImageBlockResponse(0x97, current_time=0, request_time=0, minimum_block_period=2000), 11.0)
    assert legacy.block_period_s == pytest.approx(2.0)
    [req] = sent(legacy.on_timer(legacy.deadline))
    assert req.minimum_block_period == 2000                 # reported back in its own unit
    fast = new_client(PROFILES["ignores-min-block-period"])
    offer(fast)
    fast.handle(oc.ImageBlockResponse(0x97, current_time=0, request_time=1, minimum_block_period=5), 11.0)
    fast.on_timer(12.0)
    assert sent(fast.handle(block(0), 12.1))[0].file_offset == 64  # at once, period ignored


def test_abort_keeps_the_partial_image_and_resumes():
    storage = OtaStorage()
    client = new_client(storage=storage)
    offer(client)
    client.handle(block(0), 10.5)
    client.handle(oc.ImageBlockResponse(0x95), 11.0)
    assert client.state == OtaState.IDLE and storage.offset == 64
    client.on_timer(client.deadline)
    [req] = sent(client.handle(oc.QueryNextImageResponse(0, 0x1234, 1, 2, SIZE), client.deadline))
    assert req.file_offset == 64 and client.stats.resumes == 1


def test_resume_after_reboot_from_flash():
    storage = OtaStorage()
    client = new_client(storage=storage)
    offer(client)
    client.handle(block(0), 10.5)
    client.handle(block(64), 10.6)
    rebooted = new_client(storage=storage)                   # RAM lost, flash kept
    assert [r.file_offset for r in offer(rebooted, 30.0)] == [128]


def test_out_of_order_and_foreign_blocks_ignored():
    client = new_client()
    offer(client)
    assert client.handle(block(64), 10.5) == []
    assert client.handle(oc.ImageBlockResponse(0, 0x1234, 1, 9, 0, IMAGE[:64]), 10.6) == []
    assert client.handle(oc.ImageBlockResponse(0, 0x1234, 1, 2, 0, IMAGE[:65]), 10.7) == []   # > max size
    assert client.stats.ignored_blocks == 3 and client.storage.offset == 0


def test_timeouts_retry_then_give_up():
    client = new_client()
    offer(client)
    for k in range(ROUTER.max_block_retries):
        [req] = sent(client.on_timer(client.deadline))
        assert req.file_offset == 0
    assert sent(client.on_timer(client.deadline)) == []
    assert client.state == OtaState.IDLE and client.stats.timeouts == ROUTER.max_block_retries + 1


def test_page_requests_for_sleepy_profile():
    client = new_client(SLEEPY)
    [page] = offer(client)
    assert page == oc.ImagePageRequest(0x1234, 1, 2, 0, 48, 256, 200)
    assert sent(client.handle(block(0, 48), 10.2)) == []     # more of the page to come
    assert sent(client.handle(block(96, 48), 10.4)) == []    # gap: ignored
    [again] = sent(client.on_timer(client.deadline))         # page timeout: re-request from the gap
    assert again.file_offset == 48


def test_header_naming_another_image_is_rejected():
    other = build_ota_image(0x1234, 0x0001, 3, bytes(200))
    client = new_client()
    offer(client)
    out = sent(client.handle(oc.ImageBlockResponse(0, 0x1234, 1, 2, 0, other[:64]), 10.5))
    assert out == [oc.UpgradeEndRequest(0x96, 0x1234, 1, 2)]
    assert client.state == OtaState.IDLE and client.storage.offset == 0 and client.stats.header_rejects == 1


def test_hardware_version_outside_image_range_rejected_by_node():
    client = new_client(PROFILES["hw-out-of-range"])
    offer(client)
    out = sent(client.handle(block(0), 10.5))
    assert out[0].status == 0x96 and "hardware version 9" in client.last_reject


def test_corrupted_image_is_rejected_at_verification():
    client = new_client()
    offer(client)
    bad = bytearray(IMAGE)
    bad[150] ^= 1
    client.storage.data[:] = bad
    client._enter(OtaState.VERIFYING, 20.0)
    [end] = sent(client.on_timer(20.0))
    assert end.status == 0x96 and client.stats.integrity_failures == 1
    assert client.storage.offset == 0 and client.deadline == pytest.approx(20.0 + ROUTER.invalid_image_retry_s)


def test_image_notify_filters_and_jitter():
    client = new_client()
    client.handle(oc.ImageNotify(1, 100, 0x9999), 1.0)                        # other manufacturer
    assert client.deadline == ROUTER.first_query_delay_s
    client.handle(oc.ImageNotify(3, 100, 0x1234, 1, 1), 1.0)                  # same version
    assert client.deadline == ROUTER.first_query_delay_s
    client.handle(oc.ImageNotify(0, 100), 1.0)
    assert 1.0 <= client.deadline <= 1.0 + ROUTER.notify_delay_max_s
