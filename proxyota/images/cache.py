"""Content-addressed image cache: SHA-256 names, atomic writes, re-verified reads, LRU + pins.

Layout under ``root``::

    objects/<sha256 hex>          one file per image, named by the SHA-256 of its bytes
    pins/<sha256 hex>.<owner id>  one small file per (image, owner) pin; holds the owner name
    tmp/                          temporary files (emptied when the cache is opened)
    index.json                    sizes and LRU order, replaced atomically; rebuilt from
                                  objects/ when missing or corrupt
    lock                          flock: one ImageCache per directory at a time

Writes go to ``tmp/``, are fsync'ed, renamed into place and the directory fsync'ed, so a
crash never leaves a file under its final name with other content. Every :meth:`get`
re-hashes the file; a corrupted file is evicted and :class:`CacheCorrupted` (a
:class:`CacheMiss`) tells the caller to fetch it again. When a :meth:`put` would exceed
``max_bytes``, the least recently used images that no owner has pinned are evicted; if
that cannot make room, :class:`CacheFull` is raised and nothing is written or evicted.
Pins are files, so they survive a lost index; the service still re-pins the images of
active campaigns (from its state store) on start, which is idempotent.

The API is synchronous file IO and thread-safe (one lock); the async service calls it
through ``asyncio.to_thread``. The LRU order uses a persisted logical counter, not a clock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from proxyota.fsutil import atomic_write, fsync_dir
from proxyota.errors import InvalidArgument, ProxyotaError

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PIN_NAME = re.compile(r"^([0-9a-f]{64})\.([0-9a-f]{32})$")
MAX_OWNER_LENGTH = 256


class CacheError(ProxyotaError):
    """Base of the cache's errors."""


class CacheMiss(CacheError):
    """The image is not in the cache (never stored, evicted, or lost): fetch it."""


class CacheCorrupted(CacheMiss):
    """The stored file no longer hashes to its name; it was evicted: fetch it again."""


class CacheFull(CacheError):
    """Pinned images leave no room for this one within max_bytes; nothing was written."""


class DigestMismatch(CacheError, InvalidArgument):
    """``put`` data does not hash to the expected SHA-256; nothing was written."""


class ImagePinned(CacheError):
    """The image is pinned by an owner and cannot be removed."""


def normalize_digest(digest: str | bytes) -> str:
    """A SHA-256 as 64 lowercase hex digits (accepts hex text or 32 raw bytes)."""
    if isinstance(digest, (bytes, bytearray, memoryview)):
        raw = bytes(digest)
        if len(raw) != 32:
            raise InvalidArgument(f"a SHA-256 digest is 32 bytes, got {len(raw)}")
        return raw.hex()
    if isinstance(digest, str):
        text = digest.strip().lower()
        if text.startswith("sha256:"):
            text = text[len("sha256:"):]
        if _HEX64.match(text):
            return text
    raise InvalidArgument(f"not a SHA-256 digest (64 hex digits): {digest!r}")


@dataclass
class _Entry:
    size: int
    used: int  # logical LRU clock value of the last put/get


class ImageCache:
    """A bounded, content-addressed store of image files. See the module docstring."""

    def __init__(self, root: Path | str, max_bytes: int):
        if not isinstance(max_bytes, int) or max_bytes <= 0:
            raise InvalidArgument(f"max_bytes must be a positive integer, got {max_bytes!r}")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._objects = self.root / "objects"
        self._pins_dir = self.root / "pins"
        self._tmp = self.root / "tmp"
        self._index_path = self.root / "index.json"
        self._lock = threading.RLock()
        for d in (self.root, self._objects, self._pins_dir, self._tmp):
            d.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise CacheError(f"{self.root} is in use by another ImageCache") from None
        self._entries: dict[str, _Entry] = {}
        self._clock = 0
        self._pins: dict[str, set[str]] = {}
        self.rebuilt_index = False
        self._clean_tmp()
        self._load_index()
        self._load_pins()
        self._enforce_budget()

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        with self._lock:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> ImageCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # release the flock if the owner forgot to close
        try:
            self.close()
        except Exception:
            pass

    def _clean_tmp(self) -> None:
        for p in self._tmp.iterdir():
            try:
                if p.is_dir() and not p.is_symlink():
                    continue
                p.unlink()
            except FileNotFoundError:
                pass

    def _load_index(self) -> None:
        try:
            doc = json.loads(self._index_path.read_text("utf-8"))
            if doc.get("format") != INDEX_FORMAT:
                raise ValueError("unknown index format")
            clock = doc["clock"]
            entries = {}
            for digest, e in doc["entries"].items():
                if not _HEX64.match(digest):
                    raise ValueError(f"bad digest {digest!r}")
                size, used = e["size"], e["used"]
                if not (isinstance(size, int) and isinstance(used, int) and size >= 0):
                    raise ValueError("bad entry")
                entries[digest] = _Entry(size, used)
            if not isinstance(clock, int):
                raise ValueError("bad clock")
            self._entries, self._clock = entries, max([clock, *(e.used for e in entries.values())])
        except FileNotFoundError:
            self._rebuild_index("missing")
            return
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            self._rebuild_index(f"corrupt ({exc})")
            return
        self._reconcile()

    def _scan_objects(self) -> dict[str, os.stat_result]:
        found = {}
        for p in self._objects.iterdir():
            if _HEX64.match(p.name) and p.is_file():
                found[p.name] = p.stat()
            else:
                log.warning("image cache: ignoring unexpected file %s", p)
        return found

    def _rebuild_index(self, why: str) -> None:
        files = self._scan_objects()
        if files or why != "missing":
            log.warning("image cache: index %s, rebuilding it from %s", why, self._objects)
            self.rebuilt_index = True
        order = sorted(files, key=lambda d: (files[d].st_mtime_ns, d))
        self._entries = {d: _Entry(files[d].st_size, i + 1) for i, d in enumerate(order)}
        self._clock = len(order)
        self._save_index()

    def _reconcile(self) -> None:
        """Make the index agree with objects/ after a crash between a rename and an index save."""
        files = self._scan_objects()
        changed = False
        for digest in list(self._entries):
            if digest not in files:
                del self._entries[digest]
                changed = True
        for digest in sorted(files, key=lambda d: (files[d].st_mtime_ns, d)):
            size = files[digest].st_size
            entry = self._entries.get(digest)
            if entry is None:
                self._clock += 1
                self._entries[digest] = _Entry(size, self._clock)
                changed = True
            elif entry.size != size:
                entry.size = size
                changed = True
        if changed:
            self._save_index()

    def _load_pins(self) -> None:
        for p in self._pins_dir.iterdir():
            m = _PIN_NAME.match(p.name)
            if not m:
                continue
            try:
                owner = p.read_text("utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if _owner_id(owner) != m.group(2):
                continue
            self._pins.setdefault(m.group(1), set()).add(owner)

    def _save_index(self) -> None:
        doc = {
            "format": INDEX_FORMAT,
            "clock": self._clock,
            "entries": {
                d: {"size": e.size, "used": e.used} for d, e in sorted(self._entries.items())
            },
        }
        atomic_write(self._index_path, json.dumps(doc, indent=1).encode(), tmp_dir=self._tmp)

    # ------------------------------------------------------------------ queries

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(e.size for e in self._entries.values())

    def digests(self) -> list[str]:
        """Cached digests, least recently used first."""
        with self._lock:
            return sorted(self._entries, key=lambda d: self._entries[d].used)

    def contains(self, digest: str | bytes) -> bool:
        d = normalize_digest(digest)
        with self._lock:
            return d in self._entries and (self._objects / d).is_file()

    __contains__ = contains

    def size_of(self, digest: str | bytes) -> int:
        d = normalize_digest(digest)
        with self._lock:
            if d not in self._entries:
                raise CacheMiss(f"image {d} is not cached")
            return self._entries[d].size

    def pins(self, digest: str | bytes) -> frozenset[str]:
        d = normalize_digest(digest)
        with self._lock:
            return frozenset(self._pins.get(d, ()))

    def pinned(self) -> dict[str, frozenset[str]]:
        with self._lock:
            return {d: frozenset(o) for d, o in self._pins.items() if o}

    # ------------------------------------------------------------------ put / get

    def put(self, data: bytes, expected_sha256: str | bytes | None = None) -> str:
        """Store ``data``; returns its SHA-256 (hex). Evicts LRU unpinned images if needed."""
        data = bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        if expected_sha256 is not None:
            want = normalize_digest(expected_sha256)
            if want != digest:
                raise DigestMismatch(f"data hashes to {digest}, expected {want}; nothing stored")
        with self._lock:
            path = self._objects / digest
            entry = self._entries.get(digest)
            if entry is not None and self._file_ok(path, digest):
                self._touch(digest)
                self._save_index()
                return digest
            victims = self._plan_room(len(data), exclude=digest)
            atomic_write(path, data, tmp_dir=self._tmp)
            self._clock += 1
            self._entries[digest] = _Entry(len(data), self._clock)
            for v in victims:
                self._drop(v)
            self._save_index()
            return digest

    def get(self, digest: str | bytes) -> bytes:
        """The image's bytes, re-verified. Raises :class:`CacheMiss` / :class:`CacheCorrupted`."""
        d = normalize_digest(digest)
        with self._lock:
            if d not in self._entries:
                raise CacheMiss(f"image {d} is not cached")
            try:
                data = (self._objects / d).read_bytes()
            except FileNotFoundError:
                del self._entries[d]
                self._save_index()
                raise CacheMiss(
                    f"image {d} vanished from {self._objects}; fetch it again"
                ) from None
            actual = hashlib.sha256(data).hexdigest()
            if actual != d:
                self._drop(d)
                self._save_index()
                log.warning("image cache: %s was corrupted (hashes to %s); evicted", d, actual)
                raise CacheCorrupted(
                    f"image {d} was corrupted on disk (it hashes to {actual}); "
                    "it was evicted: fetch it again"
                )
            self._touch(d)
            self._save_index()
            return data

    def remove(self, digest: str | bytes) -> bool:
        """Evict one image explicitly; refused while pinned. Returns whether it was cached."""
        d = normalize_digest(digest)
        with self._lock:
            if self._pins.get(d):
                raise ImagePinned(f"image {d} is pinned by {', '.join(sorted(self._pins[d]))}")
            if d not in self._entries:
                return False
            self._drop(d)
            self._save_index()
            return True

    # ------------------------------------------------------------------ pins

    def pin(self, digest: str | bytes, owner: str) -> None:
        """Keep ``digest`` from eviction while ``owner`` (e.g. a campaign id) uses it.

        Idempotent; the image need not be cached yet (a campaign pins before fetching).
        """
        d = normalize_digest(digest)
        _check_owner(owner)
        with self._lock:
            if owner in self._pins.get(d, ()):
                return
            atomic_write(self._pin_path(d, owner), owner.encode("utf-8"), tmp_dir=self._tmp)
            self._pins.setdefault(d, set()).add(owner)

    def unpin(self, digest: str | bytes, owner: str) -> bool:
        """Drop ``owner``'s pin; returns whether it existed."""
        d = normalize_digest(digest)
        _check_owner(owner)
        with self._lock:
            owners = self._pins.get(d)
            if not owners or owner not in owners:
                return False
            try:
                self._pin_path(d, owner).unlink()
            except FileNotFoundError:
                pass
            fsync_dir(self._pins_dir)
            owners.discard(owner)
            if not owners:
                del self._pins[d]
            return True

    # ------------------------------------------------------------------ internals

    def _pin_path(self, digest: str, owner: str) -> Path:
        return self._pins_dir / f"{digest}.{_owner_id(owner)}"

    def _file_ok(self, path: Path, digest: str) -> bool:
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest() == digest
        except FileNotFoundError:
            return False

    def _touch(self, digest: str) -> None:
        self._clock += 1
        self._entries[digest].used = self._clock

    def _drop(self, digest: str) -> None:
        self._entries.pop(digest, None)
        try:
            (self._objects / digest).unlink()
        except FileNotFoundError:
            pass

    def _plan_room(self, size: int, exclude: str) -> list[str]:
        """The LRU unpinned digests to evict so ``size`` more bytes fit, or CacheFull."""
        if size > self.max_bytes:
            raise CacheFull(
                f"image of {size} bytes exceeds the cache size ({self.max_bytes} bytes)"
            )
        used = sum(e.size for d, e in self._entries.items() if d != exclude)
        victims: list[str] = []
        for d in sorted(self._entries, key=lambda d: self._entries[d].used):
            if used + size <= self.max_bytes:
                break
            if d == exclude or self._pins.get(d):
                continue
            victims.append(d)
            used -= self._entries[d].size
        if used + size > self.max_bytes:
            pinned = sum(e.size for d, e in self._entries.items() if self._pins.get(d))
            raise CacheFull(
                f"no room for {size} bytes: cache holds {used} bytes after evicting every "
                f"unpinned image ({pinned} bytes pinned by active campaigns, limit "
                f"{self.max_bytes}); nothing was written"
            )
        return victims

    def _enforce_budget(self) -> None:
        """On open (e.g. after max_bytes was lowered): evict unpinned LRU images, best effort."""
        total = self.total_bytes
        if total <= self.max_bytes:
            return
        for d in self.digests():
            if total <= self.max_bytes:
                break
            if self._pins.get(d):
                continue
            total -= self._entries[d].size
            self._drop(d)
        self._save_index()


def _owner_id(owner: str) -> str:
    return hashlib.sha256(owner.encode("utf-8")).hexdigest()[:32]


def _check_owner(owner: str) -> None:
    if not isinstance(owner, str) or not owner or len(owner) > MAX_OWNER_LENGTH:
        raise InvalidArgument(
            f"pin owner must be a non-empty string of <= {MAX_OWNER_LENGTH} characters"
        )
    try:
        owner.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument("pin owner must be valid UTF-8 text") from None
