"""ChirpStackClient against in-test grpc.aio servicers on 127.0.0.1 ephemeral ports."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import socket

import grpc
import pytest
from chirpstack_api.api import device_pb2, multicast_group_pb2
from chirpstack_api.common import common_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from proxyota.chirpstack import (
    ChirpStackClient,
    ChirpStackError,
    DeviceKeys,
    DeviceQueueItem,
    MulticastQueueItem,
    RetryPolicy,
)
from proxyota.clock import gps_to_unix
from proxyota.errors import InvalidArgument, ProxyotaError
from radio_emulators.clock import VirtualClock

from .support import FakeChirpStack, RecordingClock

DEV = "0102030405060708"
GROUP = "6a3b7a1e-0000-4000-8000-000000000001"
APP = "17c82e96-be03-4f38-aef3-f83d48582d97"
K1 = bytes(range(16))
K2 = bytes(range(16, 32))
FAST = RetryPolicy(max_attempts=4, initial=0.5, max_backoff=3.0, multiplier=2.0, jitter=0.1, seed=7)


@pytest.fixture
def clock() -> RecordingClock:
    return RecordingClock()


@pytest.fixture
async def cs(clock: RecordingClock):
    fake = await FakeChirpStack(lambda: clock.depth).start()
    client = ChirpStackClient(f"127.0.0.1:{fake.port}", "s3cret-token", clock=clock, retry=FAST,
                              timeout=5.0)
    try:
        yield fake, client
    finally:
        await client.close()
        await fake.stop()


async def test_every_call_sends_the_bearer_token_and_holds_busy(cs, clock) -> None:
    fake, client = cs
    fake.rec.responses["GetKeys"] = device_pb2.GetDeviceKeysResponse(
        device_keys=device_pb2.DeviceKeys(dev_eui=DEV, nwk_key=K1.hex()))
    await client.get_device(DEV)
    await client.enqueue_multicast(GROUP, 201, b"\x08\x01\x00")
    await client.get_device_keys(DEV)
    assert len(fake.rec.calls) == 3
    for _name, _req, md, depth in fake.rec.calls:
        assert md["authorization"] == "Bearer s3cret-token"
        assert depth == 1  # the client was inside clock.busy() while the server handled it
    assert clock.depth == 0 and clock.sleeps == []


async def test_create_multicast_group_request_fields(cs) -> None:
    fake, client = cs
    gid = await client.create_multicast_group(
        application_id=APP, name="fuota-1", mc_addr=0x01ABCDEF, mc_nwk_s_key=K1,
        mc_app_s_key=K2, group_type="B", dr=3, frequency=869_525_000,
        class_b_ping_slot_periodicity=5, class_c_scheduling_type="GPS_TIME", region="us915",
        f_cnt=12,
    )
    assert gid == GROUP
    (req,) = fake.rec.requests("Create")
    assert req == multicast_group_pb2.CreateMulticastGroupRequest(
        multicast_group=multicast_group_pb2.MulticastGroup(
            name="fuota-1", application_id=APP, region=common_pb2.US915, mc_addr="01abcdef",
            mc_nwk_s_key=K1.hex(), mc_app_s_key=K2.hex(), f_cnt=12,
            group_type=multicast_group_pb2.CLASS_B, dr=3, frequency=869_525_000,
            class_b_ping_slot_periodicity=5, class_c_scheduling_type=multicast_group_pb2.GPS_TIME,
        )
    )
    await client.create_multicast_group(
        application_id=APP, name="c", mc_addr=0xFFFFFFFF, mc_nwk_s_key=K2, mc_app_s_key=K1,
        group_type="C", dr=0, frequency=869_525_000,
    )
    g = fake.rec.requests("Create")[1].multicast_group
    assert (g.mc_addr, g.group_type, g.class_c_scheduling_type, g.region, g.f_cnt) == (
        "ffffffff", multicast_group_pb2.CLASS_C, multicast_group_pb2.DELAY, common_pb2.EU868, 0)


async def test_multicast_group_calls_request_fields(cs) -> None:
    fake, client = cs
    await client.add_device_to_multicast_group(GROUP, DEV.upper())
    await client.remove_device_from_multicast_group(GROUP, DEV)
    await client.add_gateway_to_multicast_group(GROUP, "0016C001F153A14C")
    assert await client.enqueue_multicast(GROUP, 201, b"\x08\x00\x01abc") == 7
    await client.enqueue_multicast(GROUP, 200, b"\x01\x0f", f_cnt=99)
    await client.flush_multicast_queue(GROUP)
    await client.delete_multicast_group(GROUP)
    r = fake.rec
    assert r.requests("AddDevice") == [multicast_group_pb2.AddDeviceToMulticastGroupRequest(
        multicast_group_id=GROUP, dev_eui=DEV)]
    assert r.requests("RemoveDevice") == [
        multicast_group_pb2.RemoveDeviceFromMulticastGroupRequest(multicast_group_id=GROUP,
                                                                  dev_eui=DEV)]
    assert r.requests("AddGateway") == [multicast_group_pb2.AddGatewayToMulticastGroupRequest(
        multicast_group_id=GROUP, gateway_id="0016c001f153a14c")]
    e1, e2 = r.requests("Enqueue")
    assert e1 == multicast_group_pb2.EnqueueMulticastGroupQueueItemRequest(
        queue_item=multicast_group_pb2.MulticastGroupQueueItem(
            multicast_group_id=GROUP, f_port=201, data=b"\x08\x00\x01abc"))
    assert (e2.queue_item.f_port, e2.queue_item.data, e2.queue_item.f_cnt) == (200, b"\x01\x0f", 99)
    assert not e1.queue_item.HasField("expires_at")
    assert r.requests("FlushQueue") == [
        multicast_group_pb2.FlushMulticastGroupQueueRequest(multicast_group_id=GROUP)]
    assert r.requests("Delete") == [multicast_group_pb2.DeleteMulticastGroupRequest(id=GROUP)]
    assert [c[0] for c in r.calls] == ["AddDevice", "RemoveDevice", "AddGateway", "Enqueue",
                                       "Enqueue", "FlushQueue", "Delete"]


async def test_list_multicast_queue_converts_items(cs) -> None:
    fake, client = cs
    exp = Timestamp(seconds=1_700_000_000, nanos=500_000_000)
    fake.rec.responses["ListQueue"] = multicast_group_pb2.ListMulticastGroupQueueResponse(items=[
        multicast_group_pb2.MulticastGroupQueueItem(multicast_group_id=GROUP, f_cnt=5, f_port=201,
                                                    data=b"\x08\x01"),
        multicast_group_pb2.MulticastGroupQueueItem(multicast_group_id=GROUP, f_cnt=6, f_port=201,
                                                    data=b"\x08\x02", expires_at=exp),
    ])
    items = await client.list_multicast_queue(GROUP)
    assert items[0] == MulticastQueueItem(GROUP, 5, 201, b"\x08\x01", None)
    assert items[1].f_cnt == 6 and gps_to_unix(items[1].expires_at) == pytest.approx(1_700_000_000.5)
    assert fake.rec.requests("ListQueue") == [
        multicast_group_pb2.ListMulticastGroupQueueRequest(multicast_group_id=GROUP)]


async def test_device_calls_request_fields_and_results(cs) -> None:
    fake, client = cs
    fake.rec.responses["Get"] = device_pb2.GetDeviceResponse(
        device=device_pb2.Device(dev_eui=DEV, name="node-1", description="d", application_id=APP,
                                 device_profile_id="dp-1", join_eui="70B3D57ED0000000",
                                 tags={"site": "a"}, variables={"v": "1"}),
        last_seen_at=Timestamp(seconds=1_700_000_000),
        device_status=device_pb2.DeviceStatus(margin=7, external_power_source=False,
                                              battery_level=88.5),
        class_enabled=common_pb2.CLASS_C,
    )
    info = await client.get_device(DEV.upper())
    assert fake.rec.requests("Get") == [device_pb2.GetDeviceRequest(dev_eui=DEV)]
    assert (info.dev_eui, info.name, info.application_id, info.device_profile_id) == (
        DEV, "node-1", APP, "dp-1")
    assert (info.join_eui, info.class_enabled, info.margin, info.battery_level) == (
        "70b3d57ed0000000", "CLASS_C", 7, 88.5)
    assert info.tags == {"site": "a"} and info.variables == {"v": "1"}
    assert gps_to_unix(info.last_seen_at) == pytest.approx(1_700_000_000)

    # battery level -1 = unavailable; no device_status at all -> None everywhere
    fake.rec.responses["Get"] = device_pb2.GetDeviceResponse(
        device=device_pb2.Device(dev_eui=DEV), device_status=device_pb2.DeviceStatus(
            margin=-3, battery_level=-1))
    info = await client.get_device(DEV)
    assert (info.margin, info.battery_level, info.external_power_source) == (-3, None, False)
    fake.rec.responses["Get"] = device_pb2.GetDeviceResponse(device=device_pb2.Device(dev_eui=DEV))
    info = await client.get_device(DEV)
    assert (info.margin, info.battery_level, info.last_seen_at) == (None, None, None)

    expires = 1_400_000_123.25  # GPS seconds
    qid = await client.enqueue_device(DEV, 202, b"\x01\x00", confirmed=True, expires_at=expires)
    assert qid == "11111111-2222-4333-8444-555555555555"
    await client.enqueue_device(DEV, 203, b"\x01")
    (e1, e2) = fake.rec.requests("DeviceEnqueue")
    unix = gps_to_unix(expires)
    assert e1 == device_pb2.EnqueueDeviceQueueItemRequest(queue_item=device_pb2.DeviceQueueItem(
        dev_eui=DEV, f_port=202, data=b"\x01\x00", confirmed=True,
        expires_at=Timestamp(seconds=int(unix), nanos=250_000_000)))
    assert e2 == device_pb2.EnqueueDeviceQueueItemRequest(queue_item=device_pb2.DeviceQueueItem(
        dev_eui=DEV, f_port=203, data=b"\x01"))

    await client.flush_device_queue(DEV)
    assert fake.rec.requests("DeviceFlushQueue") == [device_pb2.FlushDeviceQueueRequest(dev_eui=DEV)]

    fake.rec.responses["GetQueue"] = device_pb2.GetDeviceQueueItemsResponse(total_count=1, result=[
        device_pb2.DeviceQueueItem(id="q1", dev_eui=DEV, f_port=200, data=b"\x02", is_pending=True,
                                   f_cnt_down=4, confirmed=True)])
    assert await client.get_device_queue(DEV) == [DeviceQueueItem(
        id="q1", dev_eui=DEV, f_port=200, data=b"\x02", confirmed=True, is_pending=True,
        f_cnt_down=4)]
    assert fake.rec.requests("GetQueue") == [device_pb2.GetDeviceQueueItemsRequest(dev_eui=DEV)]


async def test_get_device_keys(cs) -> None:
    fake, client = cs
    fake.rec.responses["GetKeys"] = device_pb2.GetDeviceKeysResponse(device_keys=device_pb2.DeviceKeys(
        dev_eui=DEV, nwk_key=K1.hex().upper(), app_key="0" * 32, gen_app_key=K2.hex()))
    keys = await client.get_device_keys(DEV)
    assert keys == DeviceKeys(nwk_key=K1, app_key=bytes(16), gen_app_key=K2)
    assert K1.hex() not in repr(keys)  # keys never end up in logs via repr
    assert fake.rec.requests("GetKeys") == [device_pb2.GetDeviceKeysRequest(dev_eui=DEV)]

    fake.rec.responses["GetKeys"] = device_pb2.GetDeviceKeysResponse(device_keys=device_pb2.DeviceKeys(
        dev_eui=DEV, nwk_key=K1.hex(), app_key="", gen_app_key="0" * 32))
    keys = await client.get_device_keys(DEV)
    assert keys.gen_app_key is None and keys.app_key == bytes(16)

    fake.rec.responses["GetKeys"] = device_pb2.GetDeviceKeysResponse(device_keys=device_pb2.DeviceKeys(
        dev_eui=DEV, nwk_key="zz" * 16))
    with pytest.raises(ChirpStackError) as ei:
        await client.get_device_keys(DEV)
    assert (ei.value.code, ei.value.call, ei.value.dev_eui) == ("BAD_RESPONSE",
                                                                "DeviceService.GetKeys", DEV)


def _expected_backoffs(policy: RetryPolicy, n: int) -> list[float]:
    rng = random.Random(policy.seed)
    return [policy.backoff(i, rng) for i in range(1, n + 1)]


async def test_retry_on_unavailable_then_success_backs_off_outside_busy(cs, clock) -> None:
    fake, client = cs
    fake.rec.failures["Enqueue"] = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED]
    assert await client.enqueue_multicast(GROUP, 201, b"\x08\x00\x01") == 7
    assert [c[0] for c in fake.rec.calls] == ["Enqueue"] * 3
    assert all(c[3] == 1 for c in fake.rec.calls)
    assert [s for s, _ in clock.sleeps] == pytest.approx(_expected_backoffs(FAST, 2))
    assert [d for _, d in clock.sleeps] == [0, 0]  # backoff waits are not busy
    # exponential with bounded jitter
    assert 0.45 <= clock.sleeps[0][0] <= 0.55 and 0.9 <= clock.sleeps[1][0] <= 1.1


async def test_give_up_after_max_attempts_names_call_and_device(cs, clock) -> None:
    fake, client = cs
    fake.rec.failures["DeviceEnqueue"] = [grpc.StatusCode.UNAVAILABLE] * 10
    with pytest.raises(ChirpStackError) as ei:
        await client.enqueue_device(DEV, 200, b"\x01\x0f")
    err = ei.value
    assert isinstance(err, ProxyotaError)
    assert (err.call, err.dev_eui, err.code, err.attempts) == (
        "DeviceService.Enqueue", DEV, "UNAVAILABLE", 4)
    assert str(err).startswith(f"DeviceService.Enqueue for device {DEV}: UNAVAILABLE: scripted")
    assert "gave up after 4 attempts" in str(err)
    assert len(fake.rec.calls) == 4
    backoffs = [s for s, _ in clock.sleeps]
    assert backoffs == pytest.approx(_expected_backoffs(FAST, 3))
    assert backoffs[2] <= FAST.max_backoff * (1 + FAST.jitter)


async def test_not_found_is_not_retried(cs, clock) -> None:
    fake, client = cs
    fake.rec.failures["Enqueue"] = [grpc.StatusCode.NOT_FOUND]
    with pytest.raises(ChirpStackError) as ei:
        await client.enqueue_multicast(GROUP, 201, b"\x08")
    assert str(ei.value) == (
        f"MulticastGroupService.Enqueue for group {GROUP}: NOT_FOUND: scripted NOT_FOUND for Enqueue")
    assert (ei.value.group_id, ei.value.dev_eui, ei.value.attempts) == (GROUP, None, 1)
    assert len(fake.rec.calls) == 1 and clock.sleeps == []


async def test_resource_exhausted_retried_only_when_configured(clock) -> None:
    fake = await FakeChirpStack(lambda: clock.depth).start()
    try:
        plain = ChirpStackClient(f"127.0.0.1:{fake.port}", "t", clock=clock, retry=FAST)
        fake.rec.failures["Get"] = [grpc.StatusCode.RESOURCE_EXHAUSTED]
        with pytest.raises(ChirpStackError) as ei:
            await plain.get_device(DEV)
        assert ei.value.code == "RESOURCE_EXHAUSTED" and len(fake.rec.calls) == 1
        await plain.close()

        policy = RetryPolicy(retry_codes=frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED"}))
        retrying = ChirpStackClient(f"127.0.0.1:{fake.port}", "t", clock=clock, retry=policy)
        fake.rec.failures["Get"] = [grpc.StatusCode.RESOURCE_EXHAUSTED]
        await retrying.get_device(DEV)
        assert len(fake.rec.calls) == 3
        await retrying.close()
    finally:
        await fake.stop()


async def test_real_deadline_is_retried(cs, clock) -> None:
    fake, _ = cs
    client = ChirpStackClient(f"127.0.0.1:{fake.port}", "t", clock=clock, retry=FAST, timeout=0.2)
    fake.rec.delay["FlushQueue"] = [1.0]  # first attempt outlives the 0.2 s deadline
    await client.flush_multicast_queue(GROUP)
    assert len(fake.rec.requests("FlushQueue")) == 2 and len(clock.sleeps) == 1
    await client.close()


async def test_unreachable_server_gives_unavailable(clock) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ChirpStackClient(f"127.0.0.1:{port}", "t", clock=clock,
                              retry=RetryPolicy(max_attempts=2, initial=1.0, jitter=0.0))
    with pytest.raises(ChirpStackError) as ei:
        await client.flush_device_queue(DEV)
    assert (ei.value.code, ei.value.call, ei.value.attempts) == (
        "UNAVAILABLE", "DeviceService.FlushQueue", 2)
    assert clock.sleeps == [(1.0, 0)]
    await client.close()


async def test_backoff_moves_virtual_time() -> None:
    """With the emulators' VirtualClock, the backoff wait is virtual: time advances by
    exactly the backoff sum, and the server saw every attempt while busy() was held."""
    clock = VirtualClock(1_000.0)
    fake = await FakeChirpStack(lambda: clock.in_flight).start()
    policy = RetryPolicy(max_attempts=5, initial=30.0, max_backoff=100.0, jitter=0.2, seed=3)
    client = ChirpStackClient(f"127.0.0.1:{fake.port}", "t", clock=clock, retry=policy)
    fake.rec.failures["AddDevice"] = [grpc.StatusCode.UNAVAILABLE] * 3
    try:
        await asyncio.wait_for(client.add_device_to_multicast_group(GROUP, DEV), 10)
    finally:
        await client.close()
        await fake.stop()
    assert clock.now() == pytest.approx(1_000.0 + sum(_expected_backoffs(policy, 3)))
    assert [c[3] for c in fake.rec.calls] == [1, 1, 1, 1]


async def test_closed_client_refuses_calls(cs) -> None:
    fake, client = cs
    await client.close()
    with pytest.raises(ChirpStackError) as ei:
        await client.get_device(DEV)
    assert ei.value.code == "CLOSED" and fake.rec.calls == []


BAD_CALLS = [
    ("enqueue_multicast", (GROUP, 0, b"x"), {}),
    ("enqueue_multicast", (GROUP, 224, b"x"), {}),
    ("enqueue_multicast", (GROUP, 201, "text"), {}),
    ("enqueue_multicast", (GROUP, 201, bytes(243)), {}),
    ("enqueue_multicast", (GROUP, 201, b"x"), {"f_cnt": -1}),
    ("enqueue_multicast", ("", 201, b"x"), {}),
    ("enqueue_device", ("01020304050607", 200, b"x"), {}),
    ("enqueue_device", ("01020304050607zz", 200, b"x"), {}),
    ("enqueue_device", (DEV, True, b"x"), {}),
    ("enqueue_device", (DEV, 200, b"x"), {"expires_at": "tomorrow"}),
    ("get_device", (0x0102030405060708,), {}),
    ("add_gateway_to_multicast_group", (GROUP, "gw"), {}),
]
GOOD_GROUP = dict(application_id=APP, name="g", mc_addr=1, mc_nwk_s_key=K1, mc_app_s_key=K2,
                  group_type="C", dr=5, frequency=869_525_000)
BAD_GROUPS = [
    {"mc_addr": -1}, {"mc_addr": 1 << 32}, {"mc_nwk_s_key": bytes(15)}, {"mc_app_s_key": "00" * 16},
    {"group_type": "A"}, {"dr": 16}, {"dr": -1}, {"frequency": 869.525}, {"frequency": 869_525},
    {"frequency": 0}, {"class_b_ping_slot_periodicity": 8}, {"class_c_scheduling_type": "NOW"},
    {"region": "EU999"}, {"f_cnt": 1 << 32}, {"application_id": ""}, {"name": ""},
]


@pytest.mark.parametrize("method,args,kwargs", BAD_CALLS)
async def test_bad_arguments_rejected_before_any_rpc(cs, method, args, kwargs) -> None:
    fake, client = cs
    with pytest.raises(InvalidArgument):
        await getattr(client, method)(*args, **kwargs)
    assert fake.rec.calls == []


@pytest.mark.parametrize("override", BAD_GROUPS, ids=lambda o: next(iter(o)))
async def test_bad_group_arguments_rejected_before_any_rpc(cs, override) -> None:
    fake, client = cs
    with pytest.raises(InvalidArgument):
        await client.create_multicast_group(**{**GOOD_GROUP, **override})
    assert fake.rec.calls == []


async def test_class_b_hopping_frequency_zero_allowed(cs) -> None:
    fake, client = cs
    await client.create_multicast_group(**{**GOOD_GROUP, "group_type": "B", "frequency": 0})
    assert fake.rec.requests("Create")[0].multicast_group.frequency == 0


def test_constructor_and_policy_validation() -> None:
    clock = RecordingClock()
    for kwargs in ({"timeout": 0}, {"root_certificates": b"pem"}, {"retry": None}):
        with pytest.raises(InvalidArgument):
            ChirpStackClient("127.0.0.1:1", "t", clock=clock, **kwargs)
    with pytest.raises(InvalidArgument):
        ChirpStackClient("127.0.0.1:1", "", clock=clock)
    for kwargs in ({"max_attempts": 0}, {"multiplier": 0.5}, {"jitter": 2},
                   {"retry_codes": frozenset({"NOPE"})}, {"initial": -1}):
        with pytest.raises(InvalidArgument):
            RetryPolicy(**kwargs)


# -- TLS ---------------------------------------------------------------------------------


def _self_signed() -> tuple[bytes, bytes]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


async def test_tls_with_self_signed_certificate(clock) -> None:
    key_pem, cert_pem = _self_signed()
    creds = grpc.ssl_server_credentials([(key_pem, cert_pem)])
    fake = await FakeChirpStack(lambda: clock.depth, credentials=creds).start()
    try:
        client = ChirpStackClient(f"127.0.0.1:{fake.port}", "tls-token", clock=clock, tls=True,
                                  root_certificates=cert_pem, retry=FAST)
        await client.get_device(DEV)
        assert fake.rec.calls[0][2]["authorization"] == "Bearer tls-token"
        await client.close()

        # without trusting the certificate the handshake fails: UNAVAILABLE, no request seen
        untrusting = ChirpStackClient(f"127.0.0.1:{fake.port}", "t", clock=clock, tls=True,
                                      retry=RetryPolicy(max_attempts=1))
        with pytest.raises(ChirpStackError) as ei:
            await untrusting.get_device(DEV)
        assert ei.value.code == "UNAVAILABLE" and len(fake.rec.calls) == 1
        await untrusting.close()

        # a plaintext client cannot talk to the TLS server either
        plain = ChirpStackClient(f"127.0.0.1:{fake.port}", "t", clock=clock,
                                 retry=RetryPolicy(max_attempts=1))
        with pytest.raises(ChirpStackError):
            await plain.get_device(DEV)
        await plain.close()
    finally:
        await fake.stop()
