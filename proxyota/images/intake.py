"""The gateway's verified image intake: TUF refresh, find, download with resume, cache.

:class:`Intake` runs python-tuf's ngclient ``Updater`` (synchronous) in a worker thread
(``asyncio.to_thread``). One :meth:`Intake.refresh_and_fetch`:

1. refreshes the top-level metadata (root chain from the trusted root in the config, then
   timestamp, snapshot, targets: signatures, thresholds, versions, expiry, lengths and
   hashes are python-tuf's checks; any failure raises :class:`IntakeError` naming the tuf
   exception, e.g. ``ExpiredMetadataError``, and nothing is downloaded);
2. lists the targets, keeps those whose custom metadata names a hardware class this
   gateway serves (:class:`~proxyota.images.policy.ImageMeta`);
3. downloads each one not yet cached through :class:`ResumingFetcher`, which keeps the
   bytes of a broken download in a partial file and continues with an HTTP ``Range``
   request next time; python-tuf then checks length and SHA-256 over the whole file;
4. optionally verifies the vendor signature and that the signed header agrees with the
   TUF metadata (``vendor_keys``), then hands the bytes to the :class:`ImageCache`.

A target that fails (hash mismatch, endless data, bad custom metadata, ...) is not cached
and is reported in :attr:`Intake.last_result` (:class:`RejectedTarget`, with the error
type named); the other targets still go through. The metadata directory is the gateway's
TUF client state (trusted root history and the last timestamp / snapshot / targets,
which defeat rollback); private keys never come near it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import urllib3
from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata, TargetFile
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

import proxyota
from proxyota.errors import InvalidArgument, ProxyotaError
from proxyota.images.cache import CacheError, ImageCache
from proxyota.images.policy import (
    BadTargetMetadata,
    ImageKind,
    ImageMeta,
    check_image,
    normalize_hw_class,
)
from proxyota.images.signing import PublicKey

log = logging.getLogger(__name__)

DEFAULT_MAX_TARGET_LENGTH = 64 * 1024 * 1024
CHUNK_SIZE = 64 * 1024


class IntakeError(ProxyotaError):
    """The TUF metadata refresh failed; nothing was downloaded or cached.

    ``tuf_error`` is the python-tuf exception (also ``__cause__``), e.g.
    ``ExpiredMetadataError``, ``BadVersionNumberError``, ``UnsignedMetadataError``.
    """

    def __init__(self, message: str, tuf_error: BaseException | None = None):
        super().__init__(message)
        self.tuf_error = tuf_error


def describe_error(exc: BaseException) -> str:
    """``"LengthOrHashMismatchError: ..."``: the exception type named, with its message
    and the message of its cause (python-tuf wraps transport errors in DownloadError)."""
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({type(cause).__name__}: {cause})"
    return text


# --------------------------------------------------------------------------- fetcher


class ResumingFetcher(FetcherInterface):
    """A urllib3 ``FetcherInterface`` that resumes broken target downloads with HTTP Range.

    For URLs under ``resumable_prefix`` every received chunk is appended to a partial
    file in ``partial_dir`` (named by the URL's SHA-256). The next download of the same
    URL first asks for ``Range: bytes=<partial size>-``: on ``206`` with a matching
    ``Content-Range`` it yields the partial bytes and then the rest (python-tuf checks
    length and hashes over the whole); on ``200`` (no range support) it starts over;
    on ``416`` the partial file already holds everything. Never more than ``max_length``
    bytes are read or kept (endless-data attack): the download stops with
    ``DownloadLengthMismatchError`` and the caller discards the partial file
    (:meth:`discard_partial`), as it does after a hash mismatch.

    ``socket_timeout`` bounds the connect time and every gap between bytes;
    ``total_timeout`` (seconds, optional) bounds one whole request (slow-drip servers).
    """

    def __init__(
        self,
        partial_dir: Path | str,
        *,
        resumable_prefix: str | None = None,
        socket_timeout: float = 30.0,
        total_timeout: float | None = 600.0,
        chunk_size: int = CHUNK_SIZE,
        user_agent: str | None = None,
    ) -> None:
        self.partial_dir = Path(partial_dir)
        self.resumable_prefix = resumable_prefix
        self.socket_timeout = socket_timeout
        self.total_timeout = total_timeout
        self.chunk_size = chunk_size
        self.user_agent = user_agent or f"proxyota/{proxyota.__version__} python-tuf"
        self.last_url: str | None = None
        self._pool = urllib3.PoolManager(
            retries=urllib3.Retry(total=None, connect=2, read=0, redirect=3, status=0, other=0),
            timeout=urllib3.Timeout(connect=socket_timeout, read=socket_timeout,
                                    total=total_timeout),
        )

    # -- partial files ---------------------------------------------------------------

    def is_resumable(self, url: str) -> bool:
        return self.resumable_prefix is not None and url.startswith(self.resumable_prefix)

    def partial_path(self, url: str) -> Path:
        return self.partial_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:40]}.part"

    def partial_size(self, url: str) -> int:
        try:
            return self.partial_path(url).stat().st_size
        except FileNotFoundError:
            return 0

    def discard_partial(self, url: str | None) -> None:
        if url is not None:
            self.partial_path(url).unlink(missing_ok=True)

    # -- FetcherInterface ------------------------------------------------------------

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self._stream(url, None)

    @contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        """As FetcherInterface.download_file, but the length limit also bounds the stream."""
        self.last_url = url
        received = 0
        with tempfile.TemporaryFile() as temp_file:
            for chunk in self._stream(url, max_length):
                received += len(chunk)
                if received > max_length:
                    raise tuf_exc.DownloadLengthMismatchError(
                        f"{url}: more than the maximum allowed length of {max_length} bytes "
                        "(endless data?)")
                temp_file.write(chunk)
            temp_file.seek(0)
            yield temp_file

    def _stream(self, url: str, limit: int | None) -> Iterator[bytes]:
        try:
            yield from self._stream_unwrapped(url, limit)
        except tuf_exc.DownloadError:
            raise
        except urllib3.exceptions.TimeoutError as exc:
            raise tuf_exc.SlowRetrievalError(f"{url}: timed out ({exc})") from exc
        except urllib3.exceptions.MaxRetryError as exc:
            if isinstance(exc.reason, urllib3.exceptions.TimeoutError):
                raise tuf_exc.SlowRetrievalError(f"{url}: timed out") from exc
            raise tuf_exc.DownloadError(f"{url}: {exc.reason}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise tuf_exc.DownloadError(f"{url}: {describe_error(exc)}") from exc

    def _stream_unwrapped(self, url: str, limit: int | None) -> Iterator[bytes]:
        resumable = self.is_resumable(url)
        part = self.partial_path(url) if resumable else None
        have = self.partial_size(url) if resumable else 0
        if part is not None and limit is not None and have > limit:
            part.unlink(missing_ok=True)
            have = 0
        headers = {"User-Agent": self.user_agent, "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        response = self._pool.request("GET", url, headers=headers, preload_content=False,
                                      decode_content=False)
        complete = False
        try:
            status = response.status
            if have and status == 416:
                # nothing after our bytes: the partial file is the whole (tuf verifies it)
                complete = True
                yield from self._read_partial(part)  # type: ignore[arg-type]
                return
            if status >= 400:
                raise tuf_exc.DownloadHTTPError(f"{url}: HTTP {status}", status)
            if status == 206 and have:
                start = _content_range_start(response.headers.get("Content-Range"))
                if start != have:
                    self.discard_partial(url)
                    raise tuf_exc.DownloadError(
                        f"{url}: asked for bytes from {have}, the server sent a range starting "
                        f"at {start}; partial download discarded")
                mode = "ab"
                yield from self._read_partial(part)  # type: ignore[arg-type]
                received = have
            elif status == 200:
                mode, received = "wb", 0
            else:
                raise tuf_exc.DownloadHTTPError(f"{url}: unexpected HTTP {status}", status)
            sink = self._open_partial(part, mode) if part is not None else None
            try:
                for chunk in response.stream(self.chunk_size):
                    if not chunk:
                        continue
                    received += len(chunk)
                    if sink is not None and (limit is None or received <= limit):
                        sink.write(chunk)
                        sink.flush()
                    yield chunk
            finally:
                if sink is not None:
                    sink.close()
            complete = True
        finally:
            if complete:
                response.release_conn()
            else:  # an unread body must not go back to the pool
                response.close()

    def _open_partial(self, part: Path, mode: str) -> IO[bytes]:
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "ab" else os.O_TRUNC),
                     0o600)
        return os.fdopen(fd, "wb")

    def _read_partial(self, part: Path) -> Iterator[bytes]:
        with open(part, "rb") as f:
            while chunk := f.read(self.chunk_size):
                yield chunk


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    if not value or not value.startswith("bytes "):
        return None
    first = value[6:].split("-", 1)[0]
    return int(first) if first.isdigit() else None


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class AcceptedImage:
    """A verified image in the cache, with its TUF custom metadata."""

    name: str
    digest: str
    length: int
    kind: ImageKind
    meta: ImageMeta
    custom: Mapping[str, Any]
    metadata_expiry: datetime
    fetched: bool  # downloaded by this refresh (False: it was already cached)


@dataclass(frozen=True)
class RejectedTarget:
    name: str
    reason: str  # "download_failed" | "verification_failed" | "bad_metadata" | "policy" | ...
    error: str  # the error type named, with its message
    retryable: bool


@dataclass
class IntakeResult:
    accepted: list[AcceptedImage] = field(default_factory=list)
    rejected: list[RejectedTarget] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # targets for other hardware classes
    metadata_expiry: datetime | None = None


# --------------------------------------------------------------------------- intake


class Intake:
    """Pull verified images for ``hardware_classes`` from a TUF repository into ``cache``.

    ``trusted_root`` is the root metadata shipped in the gateway's configuration;
    ``metadata_dir`` holds the TUF client state between refreshes. ``download_dir``
    (default ``<metadata_dir>/downloads``) keeps partial downloads. ``vendor_keys``
    (optional) makes the intake also verify the vendor signature and the signed header
    against the TUF metadata before caching. ``min_security_counters`` maps a hardware
    class to the lowest counter worth fetching (images below it are not downloaded).
    """

    def __init__(
        self,
        metadata_dir: Path | str,
        metadata_base_url: str,
        targets_base_url: str,
        trusted_root: bytes,
        cache: ImageCache,
        hardware_classes: Iterable[str],
        *,
        fetcher: FetcherInterface | None = None,
        download_dir: Path | str | None = None,
        vendor_keys: Iterable[PublicKey] | None = None,
        min_security_counters: Mapping[str, int] | None = None,
        max_target_length: int = DEFAULT_MAX_TARGET_LENGTH,
        download_attempts: int = 2,
        retry_delay: float = 1.0,
        config: UpdaterConfig | None = None,
    ) -> None:
        if not isinstance(trusted_root, (bytes, bytearray)) or not trusted_root:
            raise InvalidArgument("trusted_root must be the root metadata bytes from the config")
        if download_attempts < 1:
            raise InvalidArgument("download_attempts must be >= 1")
        self.metadata_dir = Path(metadata_dir)
        self.metadata_base_url = _slash(metadata_base_url)
        self.targets_base_url = _slash(targets_base_url)
        self.trusted_root = bytes(trusted_root)
        self.cache = cache
        self.hardware_classes = frozenset(normalize_hw_class(c) for c in hardware_classes)
        self.download_dir = Path(download_dir) if download_dir else self.metadata_dir / "downloads"
        self.fetcher = fetcher if fetcher is not None else ResumingFetcher(
            self.download_dir, resumable_prefix=self.targets_base_url)
        self.vendor_keys = list(vendor_keys) if vendor_keys is not None else None
        self.min_security_counters = {normalize_hw_class(k): v
                                      for k, v in (min_security_counters or {}).items()}
        self.max_target_length = max_target_length
        self.download_attempts = download_attempts
        self.retry_delay = retry_delay
        self.config = config or UpdaterConfig()
        self.last_result: IntakeResult | None = None
        self._lock = threading.Lock()
        self._check_trusted_root()
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.download_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.download_dir.glob("*.verified"):
            stale.unlink(missing_ok=True)

    def _check_trusted_root(self) -> None:
        try:
            md = Metadata.from_bytes(self.trusted_root)
        except Exception as exc:  # python-tuf raises DeserializationError and others
            raise InvalidArgument(f"trusted root: not TUF metadata ({describe_error(exc)})") from None
        if md.signed.type != "root":
            raise InvalidArgument(f"trusted root: is {md.signed.type} metadata, not root")

    # ------------------------------------------------------------------ async API

    async def refresh_and_fetch(self) -> list[AcceptedImage]:
        """Refresh, download what is new, cache it; returns every accepted image.

        Raises :class:`IntakeError` if the metadata does not verify. Per-target failures
        are in :attr:`last_result` (``rejected``).
        """
        return (await self.refresh_and_fetch_result()).accepted

    async def refresh_and_fetch_result(self) -> IntakeResult:
        return await asyncio.to_thread(self.refresh_and_fetch_sync)

    async def run(
        self,
        interval: float,
        *,
        stop: asyncio.Event,
        on_result: Callable[[IntakeResult], Awaitable[None] | None] | None = None,
    ) -> None:
        """Refresh every ``interval`` seconds until ``stop`` is set (errors are logged)."""
        while not stop.is_set():
            try:
                result = await self.refresh_and_fetch_result()
            except IntakeError as exc:
                log.error("image intake: %s", exc)
            else:
                if on_result is not None:
                    outcome = on_result(result)
                    if asyncio.iscoroutine(outcome) or isinstance(outcome, Awaitable):
                        await outcome
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    # ------------------------------------------------------------------ worker thread

    def refresh_and_fetch_sync(self) -> IntakeResult:
        with self._lock:
            result = self._refresh_and_fetch()
            self.last_result = result
            return result

    def _refresh_and_fetch(self) -> IntakeResult:
        try:
            updater = Updater(
                str(self.metadata_dir),
                self.metadata_base_url,
                target_dir=str(self.download_dir),
                target_base_url=self.targets_base_url,
                fetcher=self.fetcher,
                config=self.config,
                bootstrap=self.trusted_root,
            )
            updater.refresh()
            names = self._target_names()
            expiry = self._metadata_expiry()
        except (tuf_exc.RepositoryError, tuf_exc.DownloadError) as exc:
            raise IntakeError(f"TUF metadata refresh failed: {describe_error(exc)}", exc) from exc
        result = IntakeResult(metadata_expiry=expiry)
        for name in names:
            try:
                info = updater.get_targetinfo(name)
            except (tuf_exc.RepositoryError, tuf_exc.DownloadError) as exc:
                result.rejected.append(RejectedTarget(name, "bad_metadata",
                                                      describe_error(exc), False))
                continue
            if info is None:
                continue
            self._intake_one(updater, info, expiry, result)
        for r in result.rejected:
            log.warning("image intake: rejected %s (%s): %s", r.name, r.reason, r.error)
        return result

    def _target_names(self) -> list[str]:
        """Target names of the targets metadata python-tuf just verified and stored."""
        md = Metadata.from_bytes((self.metadata_dir / "targets.json").read_bytes())
        return sorted(md.signed.targets)

    def _metadata_expiry(self) -> datetime:
        """The earliest expiry of the verified root, timestamp, snapshot and targets."""
        expiries = []
        for role in ("root", "timestamp", "snapshot", "targets"):
            md = Metadata.from_bytes((self.metadata_dir / f"{role}.json").read_bytes())
            expiries.append(md.signed.expires)
        return min(expiries)

    def _intake_one(self, updater: Updater, info: TargetFile, expiry: datetime,
                    result: IntakeResult) -> None:
        name = info.path
        digest = info.hashes.get("sha256")
        if not digest:
            result.rejected.append(RejectedTarget(
                name, "bad_metadata", "the target has no sha256 hash", False))
            return
        try:
            meta = ImageMeta.from_custom(name, info.custom, digest=digest, length=info.length)
        except BadTargetMetadata as exc:
            result.rejected.append(RejectedTarget(name, "bad_metadata", describe_error(exc), False))
            return
        served = [c for c in meta.hw_classes if c in self.hardware_classes]
        if not served:
            result.skipped.append(name)
            return
        floors = [self.min_security_counters[c] for c in served if c in self.min_security_counters]
        if floors and len(floors) == len(served) and meta.security_counter < min(floors):
            result.rejected.append(RejectedTarget(
                name, "security_counter_rollback",
                f"security counter {meta.security_counter} is below {min(floors)}, the lowest "
                f"counter the gateway accepts for {', '.join(served)}", False))
            return
        if info.length > self.max_target_length:
            result.rejected.append(RejectedTarget(
                name, "too_large", f"{info.length} bytes is more than the intake limit of "
                f"{self.max_target_length}", False))
            return
        accepted = AcceptedImage(name=name, digest=meta.digest, length=meta.length,
                                 kind=meta.kind, meta=meta, custom=dict(info.custom),
                                 metadata_expiry=expiry, fetched=False)
        if self.cache.contains(meta.digest):
            result.accepted.append(accepted)
            return
        data = self._download(updater, info, result)
        if data is None:
            return
        if self.vendor_keys is not None:
            refusals = check_image(meta, data, self.vendor_keys)
            if refusals:
                result.rejected.append(RejectedTarget(
                    name, refusals[0].reason.value, "; ".join(str(r) for r in refusals), False))
                return
        try:
            self.cache.put(data, expected_sha256=meta.digest)
        except CacheError as exc:
            result.rejected.append(RejectedTarget(name, "cache", describe_error(exc), True))
            return
        log.info("image intake: accepted %s (%s, %d bytes, sha256 %s)", name, meta.kind.value,
                 meta.length, meta.digest)
        result.accepted.append(replace(accepted, fetched=True))

    def _download(self, updater: Updater, info: TargetFile,
                  result: IntakeResult) -> bytes | None:
        name = info.path
        path = self.download_dir / f"{info.hashes['sha256']}.verified"
        resumes = isinstance(self.fetcher, ResumingFetcher)
        last_error = ""
        for attempt in range(self.download_attempts):
            if attempt:
                time.sleep(self.retry_delay)
            try:
                updater.download_target(info, filepath=str(path))
                data = path.read_bytes()
                if resumes:
                    self.fetcher.discard_partial(self.fetcher.last_url)  # type: ignore[attr-defined]
                return data
            except (tuf_exc.LengthOrHashMismatchError, tuf_exc.DownloadLengthMismatchError) as exc:
                # the bytes are wrong or endless: keep nothing, start from scratch next time
                if resumes:
                    self.fetcher.discard_partial(self.fetcher.last_url)  # type: ignore[attr-defined]
                result.rejected.append(RejectedTarget(
                    name, "verification_failed", describe_error(exc), False))
                return None
            except tuf_exc.DownloadError as exc:
                last_error = describe_error(exc)
                log.info("image intake: download of %s broke (attempt %d/%d): %s", name,
                         attempt + 1, self.download_attempts, last_error)
            finally:
                path.unlink(missing_ok=True)
        result.rejected.append(RejectedTarget(name, "download_failed", last_error, True))
        return None


def _slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"
