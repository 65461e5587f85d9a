"""Image cache: content addressing, re-verified reads, LRU + pins, index rebuild, crash safety."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

import pytest

from proxyota.errors import InvalidArgument
from proxyota.images import cache as cache_mod
from proxyota.images.cache import (
    CacheCorrupted,
    CacheError,
    CacheFull,
    CacheMiss,
    DigestMismatch,
    ImageCache,
    ImagePinned,
)


def blob(tag: int, size: int = 100) -> bytes:
    return bytes([tag]) * size


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(tmp_path):
    c = ImageCache(tmp_path / "c", max_bytes=300)
    yield c
    c.close()


def reopen(c: ImageCache, max_bytes: int | None = None) -> ImageCache:
    c.close()
    return ImageCache(c.root, max_bytes or c.max_bytes)


def test_put_get_contains(cache):
    data = b"firmware image"
    digest = cache.put(data)
    assert digest == sha(data)
    assert cache.contains(digest) and digest in cache
    assert cache.contains(bytes.fromhex(digest)) and cache.contains("sha256:" + digest.upper())
    assert cache.get(digest) == data
    assert (cache.root / "objects" / digest).read_bytes() == data
    assert cache.put(data, expected_sha256=digest) == digest  # idempotent
    assert cache.total_bytes == len(data)
    assert not cache.contains(sha(b"other"))
    with pytest.raises(CacheMiss):
        cache.get(sha(b"other"))
    with pytest.raises(InvalidArgument):
        cache.get("xyz")


def test_expected_digest_mismatch_writes_nothing(cache):
    with pytest.raises(DigestMismatch):
        cache.put(b"data", expected_sha256=sha(b"different"))
    assert list((cache.root / "objects").iterdir()) == []
    assert list((cache.root / "tmp").iterdir()) == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "replace"])
def test_corrupted_file_is_detected_evicted_and_refetchable(cache, damage):
    data = blob(1)
    d = cache.put(data)
    path = cache.root / "objects" / d
    if damage == "flip":
        raw = bytearray(path.read_bytes())
        raw[50] ^= 0x01
        path.write_bytes(bytes(raw))
    elif damage == "truncate":
        path.write_bytes(data[:-1])
    else:
        path.write_bytes(blob(2))
    with pytest.raises(CacheCorrupted, match="fetch it again"):
        cache.get(d)
    assert not path.exists() and not cache.contains(d)
    with pytest.raises(CacheMiss):
        cache.get(d)
    cache.put(data, expected_sha256=d)  # the caller re-fetches
    assert cache.get(d) == data


def test_corrupted_error_is_a_miss(cache):
    assert issubclass(CacheCorrupted, CacheMiss)


def test_put_repairs_a_corrupted_copy(cache):
    d = cache.put(blob(1))
    (cache.root / "objects" / d).write_bytes(b"rot")
    assert cache.put(blob(1)) == d
    assert cache.get(d) == blob(1)


def test_file_deleted_behind_our_back_is_a_miss(cache):
    d = cache.put(blob(1))
    (cache.root / "objects" / d).unlink()
    assert not cache.contains(d)
    with pytest.raises(CacheMiss):
        cache.get(d)
    assert d not in cache.digests()


def test_lru_eviction_order(cache):
    a, b, c = (cache.put(blob(i)) for i in (1, 2, 3))
    cache.get(a)  # a becomes most recent: b is now least recently used
    d = cache.put(blob(4))
    assert not cache.contains(b)
    assert all(cache.contains(x) for x in (a, c, d))
    assert cache.digests() == [c, a, d]
    assert cache.total_bytes == 300


def test_eviction_makes_room_for_a_large_image(cache):
    small = [cache.put(blob(i, 50)) for i in range(1, 7)]  # 300 bytes
    big = cache.put(blob(9, 200))
    assert [cache.contains(s) for s in small] == [False] * 4 + [True] * 2
    assert cache.contains(big) and cache.total_bytes == 300


def test_pinned_images_are_never_evicted(cache):
    a, b, c = (cache.put(blob(i)) for i in (1, 2, 3))
    cache.pin(a, "campaign-1")
    d = cache.put(blob(4))  # evicts b (LRU among unpinned), not a
    assert cache.contains(a) and not cache.contains(b)
    cache.pin(c, "campaign-2")
    cache.pin(d, "campaign-2")
    before = sorted(os.listdir(cache.root / "objects"))
    with pytest.raises(CacheFull, match="pinned"):
        cache.put(blob(5))
    assert sorted(os.listdir(cache.root / "objects")) == before  # nothing written/evicted
    assert list((cache.root / "tmp").iterdir()) == []
    assert cache.pins(a) == {"campaign-1"} and cache.pins(d) == {"campaign-2"}
    assert cache.unpin(c, "campaign-2") and not cache.unpin(c, "campaign-2")
    e = cache.put(blob(5))
    assert not cache.contains(c) and cache.contains(e)


def test_several_owners_and_remove(cache):
    a = cache.put(blob(1))
    cache.pin(a, "c1")
    cache.pin(a, "c2")
    cache.pin(a, "c2")  # idempotent
    assert cache.pins(a) == {"c1", "c2"}
    cache.unpin(a, "c1")
    with pytest.raises(ImagePinned, match="c2"):
        cache.remove(a)
    cache.unpin(a, "c2")
    assert cache.pinned() == {}
    assert cache.remove(a) and not cache.remove(a)
    with pytest.raises(InvalidArgument):
        cache.pin(a, "")


def test_pin_before_fetch_protects_the_image(cache):
    data = blob(7)
    cache.pin(sha(data), "campaign")
    d = cache.put(data)
    for i in (1, 2, 3, 4):
        cache.put(blob(i))
    assert cache.contains(d)


def test_image_larger_than_cache(cache):
    with pytest.raises(CacheFull, match="exceeds"):
        cache.put(blob(1, 301))
    assert list((cache.root / "objects").iterdir()) == []


def test_state_survives_reopen(cache):
    a, b = cache.put(blob(1)), cache.put(blob(2))
    cache.get(a)
    cache.pin(b, "camp")
    c2 = reopen(cache)
    try:
        assert not c2.rebuilt_index
        assert c2.digests() == [b, a]
        assert c2.pins(b) == {"camp"}
        assert c2.get(a) == blob(1)
    finally:
        c2.close()


@pytest.mark.parametrize("damage", ["missing", "garbage", "wrong-schema", "truncated-json"])
def test_index_rebuilt_from_files(cache, damage):
    digests = [cache.put(blob(i)) for i in (1, 2, 3)]
    cache.pin(digests[0], "camp")
    # make the file order unambiguous: mtimes 1000, 2000, 3000 s
    for i, d in enumerate(digests):
        os.utime(cache.root / "objects" / d, ns=((i + 1) * 10**12, (i + 1) * 10**12))
    index = cache.root / "index.json"
    cache.close()
    if damage == "missing":
        index.unlink()
    elif damage == "garbage":
        index.write_bytes(b"\x00\xff not json")
    elif damage == "wrong-schema":
        index.write_text(json.dumps({"format": 1, "clock": 3, "entries": {"zz": {}}}))
    else:
        index.write_text(index.read_text()[:20])
    c2 = ImageCache(cache.root, 300)
    try:
        assert c2.rebuilt_index
        assert c2.digests() == digests
        assert c2.pins(digests[0]) == {"camp"}  # pins are files: they survive
        assert json.loads(index.read_text())["entries"].keys() == set(digests)
        c2.put(blob(4))  # evicts digests[1], the oldest unpinned
        assert c2.contains(digests[0]) and not c2.contains(digests[1])
    finally:
        c2.close()


def test_temp_files_cleaned_on_start(cache):
    tmp = cache.root / "tmp"
    (tmp / "abc.1234.tmp").write_bytes(b"half a write")
    (tmp / "index.json.99.tmp").write_bytes(b"{")
    c2 = reopen(cache)
    try:
        assert list(tmp.iterdir()) == []
    finally:
        c2.close()


def test_failed_put_leaves_no_file(cache, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(cache_mod.os, "replace", broken_replace)
    with pytest.raises(OSError):
        cache.put(blob(1))
    monkeypatch.undo()
    assert list((cache.root / "objects").iterdir()) == []
    assert list((cache.root / "tmp").iterdir()) == []
    assert not cache.contains(sha(blob(1)))


def test_crash_between_rename_and_index_save_is_reconciled(cache, monkeypatch):
    a = cache.put(blob(1))

    def crash(self):
        raise OSError("power cut")

    monkeypatch.setattr(ImageCache, "_save_index", crash)
    with pytest.raises(OSError):
        cache.put(blob(2))
    monkeypatch.undo()
    b = sha(blob(2))
    c2 = reopen(cache)
    try:
        assert not c2.rebuilt_index
        assert c2.digests() == [a, b]
        assert c2.get(b) == blob(2)
    finally:
        c2.close()


def test_put_order_is_write_fsync_rename_fsync_dir(cache, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(cache_mod.os, "fsync", fsync)
    monkeypatch.setattr(cache_mod.os, "replace", replace)
    d = cache.put(blob(1))
    monkeypatch.undo()
    final = str(cache.root / "objects" / d)
    i = next(k for k, e in enumerate(events) if e[0] == "replace" and e[2] == final)
    temp = events[i][1]
    assert temp.startswith(str(cache.root / "tmp"))
    assert ("fsync", temp) in events[:i]  # data durable before it gets its name
    assert ("fsync", str(cache.root / "objects")) in events[i + 1:]  # rename durable


def test_lowering_max_bytes_evicts_on_open(cache):
    a, b, c = (cache.put(blob(i)) for i in (1, 2, 3))
    cache.pin(a, "camp")
    c2 = reopen(cache, max_bytes=150)
    try:
        assert c2.contains(a) and not c2.contains(b) and not c2.contains(c)
    finally:
        c2.close()


def test_one_instance_per_directory(cache):
    with pytest.raises(CacheError, match="in use"):
        ImageCache(cache.root, 300)
    cache.close()
    with ImageCache(cache.root, 300) as again:
        assert again.total_bytes == 0


def test_bad_max_bytes(tmp_path):
    with pytest.raises(InvalidArgument):
        ImageCache(tmp_path, 0)


async def test_usable_from_asyncio_threads(tmp_path):
    with ImageCache(tmp_path / "c", max_bytes=10_000) as c:
        datas = [blob(i, 64) for i in range(20)]
        digests = await asyncio.gather(*(asyncio.to_thread(c.put, d) for d in datas))
        got = await asyncio.gather(*(asyncio.to_thread(c.get, d) for d in digests))
        assert got == datas
