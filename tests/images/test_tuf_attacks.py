"""TUF attacks against the gateway's intake, over real HTTP: each is rejected with the
python-tuf error named, and nothing reaches the image cache."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import shutil
import types

import pytest
import urllib3
import tuf.ngclient._internal.trusted_metadata_set as tuf_trusted_set
from securesystemslib.signer import CryptoSigner
from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata

from proxyota.images import signing
from proxyota.images.intake import IntakeError, ResumingFetcher
from proxyota.images.policy import NodeFacts, Reason, check
from tests.images._tuf_server import HW, HW_OTHER, RepoServer, TufWorld, is_target

TIMESTAMP = "metadata/timestamp.json"


@pytest.fixture(scope="module")
def vendor():
    return signing.generate_key()


@pytest.fixture
async def world(tmp_path, vendor):
    async with TufWorld(tmp_path, vendor, thresholds={"timestamp": 2}) as w:
        yield w


def resign(md_bytes: bytes, signers, *, bump: int = 1, mutate=None) -> bytes:
    md = Metadata.from_bytes(md_bytes)
    md.signed.version += bump
    if mutate:
        mutate(md.signed)
    md.signatures.clear()
    for s in signers:
        md.sign(s, append=True)
    return md.to_bytes()


async def refresh_fails(intake, error_type):
    with pytest.raises(IntakeError) as info:
        await intake.refresh_and_fetch()
    assert isinstance(info.value.tuf_error, error_type)
    assert isinstance(info.value.__cause__, error_type)
    assert error_type.__name__ in str(info.value)
    return info.value


async def test_tampered_target(world):
    data = world.add_and_publish("fw.img", world.envelope(size=20_000))

    def flip(path):
        tampered = bytearray(data)
        tampered[5000] ^= 0x01
        return bytes(tampered)

    world.server.serve_bytes(is_target, flip)
    intake = world.intake({HW})
    assert await intake.refresh_and_fetch() == []
    (rej,) = intake.last_result.rejected
    assert rej.reason == "verification_failed" and not rej.retryable
    assert rej.error.startswith("LengthOrHashMismatchError")
    assert world.cache.digests() == []
    assert not any(intake.download_dir.glob("*.part"))  # nothing kept to resume from


async def test_expired_metadata_published(tmp_path, vendor):
    """A mirror serving metadata whose timestamp has expired (already expired when published)."""
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)
    async with TufWorld(tmp_path, vendor, clock=lambda: past) as w:
        w.add_and_publish("fw.img", w.envelope())
        err = await refresh_fails(w.intake({HW}), tuf_exc.ExpiredMetadataError)
        assert "timestamp.json is expired" in str(err)
        assert w.cache.digests() == []
        assert not w.server.requests_for(is_target)


async def test_freeze_attack_with_an_advanced_clock(world, monkeypatch):
    """The client synced; later the mirror keeps serving the same (now expired) metadata."""
    world.add_and_publish("fw.img", world.envelope())
    intake = world.intake({HW}, vendor_keys=None)
    assert [i.name for i in await intake.refresh_and_fetch()] == ["fw.img"]
    world.cache.remove(hashlib.sha256(world.envelope()).hexdigest())
    n_requests = len(world.server.requests_for(is_target))

    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return later

    monkeypatch.setattr(tuf_trusted_set, "datetime",
                        types.SimpleNamespace(datetime=Frozen, timezone=dt.timezone))
    await refresh_fails(intake, tuf_exc.ExpiredMetadataError)
    assert world.cache.digests() == []
    assert len(world.server.requests_for(is_target)) == n_requests


async def test_metadata_version_rollback(world):
    """The repository withdrew a vulnerable image; a mirror replays the older state."""
    old = world.add_and_publish("vulnerable.img", world.envelope(counter=1, seed=1))
    shutil.copytree(world.www, world.tmp / "www-v2")  # the state that still lists it
    world.repo.remove_target("vulnerable.img")
    world.add_and_publish("fixed.img", world.envelope(counter=2, seed=2))
    intake = world.intake({HW})
    assert [i.name for i in await intake.refresh_and_fetch()] == ["fixed.img"]
    before = world.cache.digests()

    world.server.root = world.tmp / "www-v2"
    err = await refresh_fails(intake, tuf_exc.BadVersionNumberError)
    assert "timestamp version 2 must be >= 3" in str(err)
    assert world.cache.digests() == before
    assert hashlib.sha256(old).hexdigest() not in world.cache

    # only the timestamp replayed: same answer
    world.server.root = world.www
    old_ts = (world.tmp / "www-v2" / TIMESTAMP).read_bytes()
    world.server.serve_bytes(lambda p: p == TIMESTAMP, lambda p: old_ts)
    await refresh_fails(intake, tuf_exc.BadVersionNumberError)


def timestamp_signers(world):
    root = world.repo.root()
    return world.repo._available_signers("timestamp", root)


async def test_forged_timestamp_signature(world):
    world.add_and_publish("fw.img", world.envelope())
    current = (world.www / TIMESTAMP).read_bytes()
    attacker = [CryptoSigner.generate_ed25519(), CryptoSigner.generate_ed25519()]
    world.server.serve_bytes(lambda p: p == TIMESTAMP, lambda p: resign(current, attacker))
    err = await refresh_fails(world.intake({HW}), tuf_exc.UnsignedMetadataError)
    assert "timestamp was signed by 0/2 keys" in str(err)
    assert world.cache.digests() == []


async def test_under_threshold_timestamp(world):
    world.add_and_publish("fw.img", world.envelope())
    current = (world.www / TIMESTAMP).read_bytes()
    legit = timestamp_signers(world)
    assert len(legit) == 2 == world.repo.root().roles["timestamp"].threshold
    # one legitimate key out of the threshold of two
    world.server.serve_bytes(lambda p: p == TIMESTAMP, lambda p: resign(current, legit[:1]))
    err = await refresh_fails(world.intake({HW}), tuf_exc.UnsignedMetadataError)
    assert "timestamp was signed by 1/2 keys" in str(err)
    # a valid signature over other content (edited after signing) does not count either
    def edited(path):
        md = Metadata.from_bytes(current)
        md.signed.expires += dt.timedelta(days=30)
        return md.to_bytes()

    world.server.clear_hooks()
    world.server.serve_bytes(lambda p: p == TIMESTAMP, edited)
    await refresh_fails(world.intake({HW}, state="c2"), tuf_exc.UnsignedMetadataError)
    assert world.cache.digests() == []


async def test_forged_root_rotation(world):
    """A mirror offers 2.root.json that hands every role to the attacker."""
    world.add_and_publish("fw.img", world.envelope())
    attacker = CryptoSigner.generate_ed25519()

    def take_over(root):
        for role in root.roles.values():
            role.keyids = [attacker.public_key.keyid]
            role.threshold = 1
        root.keys = {attacker.public_key.keyid: attacker.public_key}

    forged = resign(world.repo.metadata_bytes("root", 1), [attacker], mutate=take_over)
    world.server.serve_bytes(lambda p: p == "metadata/2.root.json", lambda p: forged)
    err = await refresh_fails(world.intake({HW}), tuf_exc.UnsignedMetadataError)
    assert "root was signed by 0/1 keys" in str(err)
    assert world.cache.digests() == []


async def test_target_for_another_hardware_class(world):
    world.add_and_publish("other.img", world.envelope(hw=HW_OTHER))
    intake = world.intake({HW})
    assert await intake.refresh_and_fetch() == []
    assert intake.last_result.skipped == ["other.img"]
    assert world.cache.digests() == [] and not world.server.requests_for(is_target)


async def test_tuf_metadata_lying_about_the_hardware_class(world):
    """A compromised targets key lists an envelope for another class under ours: the
    vendor-signed header disagrees, the intake refuses it."""
    data = world.envelope(hw=HW_OTHER)
    world.repo.add_target(data, "fw.img")
    staged = world.repo.staged()
    staged["fw.img"]["custom"]["hw_classes"] = [HW]
    world.repo._write_staged(staged)
    world.repo.sign()
    world.repo.publish(world.www)
    intake = world.intake({HW})
    assert await intake.refresh_and_fetch() == []
    (rej,) = intake.last_result.rejected
    assert rej.reason == "metadata_mismatch" and HW_OTHER in rej.error
    assert world.cache.digests() == []


async def test_lower_security_counter(world):
    world.add_and_publish("old.img", world.envelope(counter=3))
    # the intake skips it when the gateway's floor for the class is higher ...
    intake = world.intake({HW}, min_security_counters={HW: 4})
    assert await intake.refresh_and_fetch() == []
    assert intake.last_result.rejected[0].reason == "security_counter_rollback"
    assert world.cache.digests() == [] and not world.server.requests_for(is_target)
    # ... and the policy refuses it for a node that runs counter 4
    fetched = await world.intake({HW}, state="c2").refresh_and_fetch()
    (img,) = fetched
    refusals = check(img.meta, NodeFacts(HW, 7, 4), dt.datetime.now(dt.timezone.utc),
                     metadata_expiry=img.metadata_expiry, image=world.cache.get(img.digest),
                     vendor_keys=[world.vendor.public_key()])
    assert [r.reason for r in refusals] == [Reason.SECURITY_COUNTER_ROLLBACK]


async def test_endless_target(world):
    data = world.add_and_publish("fw.img", world.envelope(size=10_000))
    world.server.endless(is_target)
    intake = world.intake({HW})
    assert await intake.refresh_and_fetch() == []
    (rej,) = intake.last_result.rejected
    assert rej.error.startswith("DownloadLengthMismatchError") and not rej.retryable
    assert f"maximum allowed length of {len(data)}" in rej.error
    assert world.cache.digests() == []
    assert not any(intake.download_dir.glob("*.part"))
    # the client hung up long before the server's safety cap
    assert world.server.bytes_sent(is_target) < 32 * 1024 * 1024


async def test_endless_timestamp(world):
    world.add_and_publish("fw.img", world.envelope())
    world.server.endless(lambda p: p == TIMESTAMP)
    err = await refresh_fails(world.intake({HW}), tuf_exc.DownloadLengthMismatchError)
    assert "maximum allowed length of 16384" in str(err)
    assert world.cache.digests() == [] and not world.server.requests_for(is_target)


async def test_server_fixture_ranges(tmp_path):
    """The fixture itself answers ranges like a static host."""
    (tmp_path / "f").write_bytes(bytes(range(100)))
    server = RepoServer(tmp_path)
    base = await server.start()
    http = urllib3.PoolManager()
    try:
        def get(headers):
            return http.request("GET", f"{base}/f", headers=headers)

        r = await asyncio.to_thread(get, {"Range": "bytes=90-"})
        assert r.status == 206 and r.data == bytes(range(90, 100))
        assert r.headers["Content-Range"] == "bytes 90-99/100"
        r = await asyncio.to_thread(get, {"Range": "bytes=100-"})
        assert r.status == 416
        r = await asyncio.to_thread(get, {})
        assert r.status == 200 and len(r.data) == 100
        r = await asyncio.to_thread(get, {})
        assert r.status == 200
        assert (await asyncio.to_thread(http.request, "GET", f"{base}/../etc/passwd")).status == 404
    finally:
        http.clear()
        await server.close()


async def test_fetcher_never_keeps_more_than_the_limit(world):
    """Endless data into a resumable download: the partial file stays within max_length."""
    world.server.endless(is_target)
    fetcher = ResumingFetcher(world.tmp / "partials", resumable_prefix=world.server.targets_url)
    url = world.server.targets_url + "whatever.img"

    def download():
        with fetcher.download_file(url, 100_000):
            pass

    with pytest.raises(tuf_exc.DownloadLengthMismatchError, match="100000"):
        await asyncio.to_thread(download)
    assert 0 < fetcher.partial_size(url) <= 100_000
    fetcher.discard_partial(url)
    assert fetcher.partial_size(url) == 0
