"""proxyota.images.intake over real HTTP (aiohttp on 127.0.0.1): find, download, resume, cache."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from aiohttp import web
from tuf.api.metadata import Metadata

from proxyota.errors import InvalidArgument
from proxyota.images import envelope, signing
from proxyota.images.intake import Intake, IntakeResult, ResumingFetcher
from proxyota.images.policy import ImageKind
from proxyota.zigbee import otafile
from tests.images._tuf_server import HW, HW_OTHER, TufWorld, is_target


@pytest.fixture(scope="module")
def vendor():
    return signing.generate_key()


@pytest.fixture
async def world(tmp_path, vendor):
    async with TufWorld(tmp_path, vendor) as w:
        yield w


def target_requests(world):
    return world.server.requests_for(is_target)


async def test_fetches_only_served_hardware_classes(world):
    a = world.envelope(counter=1, seed=1)
    b = world.envelope(counter=2, version=2, seed=2)
    other = world.envelope(hw=HW_OTHER, seed=3)
    zb = envelope.sign_zigbee_ota(otafile.build(0x1037, 0x0102, 9, b"z" * 100).to_bytes(),
                                  world.vendor)
    for name, data in [("lorawan/a.img", a), ("lorawan/b.img", b), ("lorawan/other.img", other),
                       ("zigbee/plug.ota", zb)]:
        world.repo.add_target(data, name)
    world.repo.sign()
    world.repo.publish(world.www)

    intake = world.intake({HW})
    accepted = await intake.refresh_and_fetch()
    assert [i.name for i in accepted] == ["lorawan/a.img", "lorawan/b.img"]
    assert all(i.fetched for i in accepted)
    first = accepted[0]
    assert first.digest == hashlib.sha256(a).hexdigest() and first.length == len(a)
    assert first.kind == ImageKind.ENVELOPE
    assert first.custom["security_counter"] == 1 and first.meta.hw_classes == (HW,)
    assert first.metadata_expiry == world.repo.load("timestamp").signed.expires
    assert world.cache.get(first.digest) == a
    assert sorted(world.cache.digests()) == sorted(hashlib.sha256(x).hexdigest() for x in (a, b))
    assert intake.last_result.skipped == ["lorawan/other.img", "zigbee/plug.ota"]
    assert intake.last_result.rejected == []
    # images for other classes were never downloaded
    assert not any("other.img" in r.path or "plug.ota" in r.path for r in target_requests(world))

    # a second refresh finds them cached and downloads nothing
    n = len(target_requests(world))
    again = await intake.refresh_and_fetch()
    assert [i.name for i in again] == ["lorawan/a.img", "lorawan/b.img"]
    assert not any(i.fetched for i in again)
    assert len(target_requests(world)) == n

    # a Zigbee gateway picks up the OTA file by its zigbee:<mfr>:<type> class
    zb_intake = world.intake({"zigbee:1037:0102"}, state="zb-client")
    got = await zb_intake.refresh_and_fetch()
    assert [(i.name, i.kind) for i in got] == [("zigbee/plug.ota", ImageKind.ZIGBEE_OTA)]
    assert got[0].meta.manufacturer_code == 0x1037


async def test_resume_after_a_broken_download(world):
    data = world.add_and_publish("lorawan/big.img", world.envelope(size=1_000_000))
    world.server.break_after(is_target, 300_000, times=1)
    intake = world.intake({HW}, download_attempts=1)
    assert await intake.refresh_and_fetch() == []
    (rej,) = intake.last_result.rejected
    assert rej.reason == "download_failed" and rej.retryable
    assert rej.error.startswith("DownloadError") and "IncompleteRead" in rej.error
    assert world.cache.digests() == []
    assert isinstance(intake.fetcher, ResumingFetcher)
    url = world.server.targets_url + f"lorawan/{hashlib.sha256(data).hexdigest()}.big.img"
    assert intake.fetcher.partial_size(url) == 300_000

    accepted = await intake.refresh_and_fetch()
    assert [i.name for i in accepted] == ["lorawan/big.img"] and accepted[0].fetched
    assert world.cache.get(accepted[0].digest) == data
    first, second = target_requests(world)
    assert first.range is None and second.range == "bytes=300000-"
    total = world.server.bytes_sent(is_target)
    assert total == len(data) < 2 * len(data)
    assert intake.fetcher.partial_size(url) == 0  # cleaned up after success


async def test_resume_within_one_refresh(world):
    data = world.add_and_publish("big.img", world.envelope(size=400_000))
    world.server.break_after(is_target, 100_000, times=1)
    intake = world.intake({HW}, download_attempts=2)
    (img,) = await intake.refresh_and_fetch()
    assert world.cache.get(img.digest) == data
    assert [r.range for r in target_requests(world)] == [None, "bytes=100000-"]
    assert world.server.bytes_sent(is_target) == len(data)


async def test_server_without_range_support_restarts(world):
    data = world.add_and_publish("big.img", world.envelope(size=200_000))
    world.server.break_after(is_target, 50_000, times=1)

    async def ignore_range(request, path):
        world.server.requests[-1].sent += len(data)
        return web.Response(body=world.server._file(path))

    world.server.hook(is_target, ignore_range, times=1)
    intake = world.intake({HW}, download_attempts=2)
    (img,) = await intake.refresh_and_fetch()
    assert world.cache.get(img.digest) == data
    assert [r.range for r in target_requests(world)] == [None, "bytes=50000-"]


async def test_complete_partial_and_corrupt_partial(world):
    data = world.add_and_publish("x.img", world.envelope(size=50_000))
    intake = world.intake({HW})
    url = world.server.targets_url + f"{hashlib.sha256(data).hexdigest()}.x.img"
    part = intake.fetcher.partial_path(url)
    part.parent.mkdir(parents=True, exist_ok=True)
    # everything already on disk (e.g. a crash before verification): 416, nothing re-sent
    part.write_bytes(data)
    (img,) = await intake.refresh_and_fetch()
    assert world.cache.get(img.digest) == data
    assert [(r.range, r.sent) for r in target_requests(world)] == [(f"bytes={len(data)}-", 0)]
    assert not part.exists()

    # wrong bytes on disk: the hash check fails, the partial file is dropped, next time works
    world.cache.remove(img.digest)
    part.write_bytes(b"garbage" * 100)
    assert await intake.refresh_and_fetch() == []
    (rej,) = intake.last_result.rejected
    assert rej.reason == "verification_failed" and "LengthOrHashMismatchError" in rej.error
    assert not part.exists() and world.cache.digests() == []
    (img,) = await intake.refresh_and_fetch()
    assert world.cache.get(img.digest) == data


async def test_key_rotation_is_followed(world):
    world.add_and_publish("a.img", world.envelope(seed=1))
    intake = world.intake({HW})
    assert len(await intake.refresh_and_fetch()) == 1
    world.repo.rotate_key("targets")
    world.repo.rotate_key("timestamp")
    world.repo.rotate_key("root")
    world.add_and_publish("b.img", world.envelope(seed=2, counter=2))
    accepted = await intake.refresh_and_fetch()
    assert [i.name for i in accepted] == ["a.img", "b.img"]
    state_root = Metadata.from_bytes((world.tmp / "client" / "root.json").read_bytes())
    assert state_root.signed.version == 4
    fetched = [r.path for r in world.server.requests if "root.json" in r.path]
    assert {"metadata/2.root.json", "metadata/3.root.json", "metadata/4.root.json",
            "metadata/5.root.json"} <= set(fetched)


async def test_vendor_signature_checked_before_caching(world):
    intruder = signing.generate_key()
    good = world.envelope(seed=1)
    bad = envelope.build(b"evil" * 100, hw_class=HW, firmware_version=1, security_counter=1,
                         private_key=intruder)
    world.repo.add_target(good, "good.img")
    world.add_and_publish("bad.img", bad)
    intake = world.intake({HW})
    accepted = await intake.refresh_and_fetch()
    assert [i.name for i in accepted] == ["good.img"]
    (rej,) = intake.last_result.rejected
    assert rej.name == "bad.img" and rej.reason == "bad_signature" and not rej.retryable
    assert "not among the given keys" in rej.error
    assert world.cache.digests() == [hashlib.sha256(good).hexdigest()]


async def test_counter_floor_and_size_limit_skip_the_download(world):
    world.repo.add_target(world.envelope(counter=3, seed=1), "old.img")
    world.add_and_publish("new.img", world.envelope(counter=5, seed=2, size=5000))
    intake = world.intake({HW}, min_security_counters={HW.upper(): 4}, max_target_length=6000)
    accepted = await intake.refresh_and_fetch()
    assert [i.name for i in accepted] == ["new.img"]
    (rej,) = intake.last_result.rejected
    assert rej.reason == "security_counter_rollback" and "below 4" in rej.error
    small = world.intake({HW}, max_target_length=4000, state="small")
    assert [i.name for i in await small.refresh_and_fetch()] == ["old.img"]
    (rej,) = small.last_result.rejected
    assert rej.name == "new.img" and rej.reason == "too_large"
    # neither refused image was ever requested
    assert sorted(r.path for r in target_requests(world)) == sorted(
        f"targets/{i.digest}.{i.name}" for i in [*accepted, *small.last_result.accepted])


async def test_run_loop_and_constructor_checks(world, tmp_path):
    world.add_and_publish("a.img", world.envelope())
    intake = world.intake({HW})
    stop = asyncio.Event()
    results: list[IntakeResult] = []

    async def on_result(result):
        results.append(result)
        if len(results) == 2:
            stop.set()

    await asyncio.wait_for(intake.run(0.01, stop=stop, on_result=on_result), timeout=30)
    assert [len(r.accepted) for r in results] == [1, 1]
    assert results[0].accepted[0].fetched and not results[1].accepted[0].fetched

    with pytest.raises(InvalidArgument, match="trusted root"):
        Intake(tmp_path / "c", "http://x/", "http://x/", b"{}", world.cache, {HW})
    with pytest.raises(InvalidArgument, match="not root"):
        Intake(tmp_path / "c", "http://x/", "http://x/", world.repo.metadata_bytes("timestamp"),
               world.cache, {HW})
    with pytest.raises(InvalidArgument, match="hardware class"):
        Intake(tmp_path / "c", "http://x/", "http://x/", world.trusted_root, world.cache,
               {"not-a-class"})
