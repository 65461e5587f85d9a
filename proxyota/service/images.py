"""The service's image catalogue: TUF intake polling, accepted images in the store, and
what a campaign needs before any airtime (metadata, expiry, verified bytes).

An image is *usable* by a campaign when the store has it as accepted (written by the
intake after python-tuf verified it, together with an ``image.accepted`` audit record)
and the cache still holds its bytes (re-verified on every read). The store keeps, as the
image's ``custom`` object::

    {"target": "<TUF target name>", "tuf": {<the target's TUF custom metadata>},
     "metadata_expiry": "<ISO 8601 UTC: earliest expiry of the TUF metadata>"}

``metadata_expiry`` is refreshed on every intake refresh, so a policy check made later
sees the newest expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from proxyota.errors import DecodeError, InvalidArgument
from proxyota.images import envelope
from proxyota.images.cache import CacheError, ImageCache
from proxyota.images.intake import AcceptedImage, Intake, IntakeError, IntakeResult
from proxyota.images.policy import BadTargetMetadata, ImageMeta
from proxyota.images.signing import PublicKey
from proxyota.store import ImageRecord, Store, UnknownImage

__all__ = ["ImageCatalog", "UsableImage", "ImageNotUsable", "IMAGE_ACCEPTED"]

log = logging.getLogger("proxyota.service.images")

IMAGE_ACCEPTED = "image.accepted"


class ImageNotUsable(InvalidArgument):
    """The image is known but cannot go on air (evicted, corrupted, bad metadata)."""


@dataclass(frozen=True)
class UsableImage:
    record: ImageRecord
    meta: ImageMeta
    metadata_expiry: datetime
    data: bytes


class ImageCatalog:
    """Accepted images: the store's records, the cache's bytes, the intake loop."""

    def __init__(self, store: Store, cache: ImageCache, vendor_keys: list[PublicKey], *,
                 intake: Intake | None = None, refresh_interval: float = 300.0,
                 clock: Callable[[], float] | None = None) -> None:
        self.store = store
        self.cache = cache
        self.vendor_keys = list(vendor_keys)
        self.intake = intake
        self.refresh_interval = refresh_interval
        self.clock = clock
        self.refreshes = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------------ intake

    async def refresh(self) -> IntakeResult | None:
        """One TUF refresh + fetch; accepted images go to the store. None on failure."""
        if self.intake is None:
            return None
        try:
            result = await self.intake.refresh_and_fetch_result()
        except IntakeError as exc:
            self.last_error = str(exc)
            log.error("image intake failed: %s", exc)
            return None
        self.last_error = None
        self.refreshes += 1
        for image in result.accepted:
            await self.accept(image)
        for rejected in result.rejected:
            log.warning("image intake rejected %s (%s): %s", rejected.name, rejected.reason,
                        rejected.error)
        return result

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh now and every ``refresh_interval`` (real) seconds until ``stop``."""
        while not stop.is_set():
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must survive anything one refresh does
                log.exception("image intake refresh crashed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.refresh_interval)

    async def accept(self, image: AcceptedImage) -> ImageRecord:
        """Record an image the intake verified (audited the first time)."""
        custom = {
            "target": image.name,
            "tuf": dict(image.custom),
            "metadata_expiry": image.metadata_expiry.isoformat(),
        }
        now = self.clock() if self.clock else None
        async with self.store.transaction():
            try:
                await self.store.get_image(image.digest)
                new = False
            except UnknownImage:
                new = True
            record = await self.store.put_image(image.digest, image.length, image.kind.value,
                                                custom, now=now)
            if new:
                await self.store.audit_append(
                    "intake", IMAGE_ACCEPTED, image.digest,
                    {"target": image.name, "length": image.length, "kind": image.kind.value,
                     "firmware_version": image.meta.firmware_version,
                     "security_counter": image.meta.security_counter,
                     "hw_classes": list(image.meta.hw_classes)}, now=now)
        if new:
            log.info("image accepted", extra={"digest": image.digest, "target": image.name,
                                              "length": image.length})
        return record

    # ------------------------------------------------------------------ reading

    @staticmethod
    def _meta(record: ImageRecord) -> tuple[ImageMeta, datetime]:
        custom = record.custom
        try:
            meta = ImageMeta.from_custom(str(custom.get("target", record.digest)),
                                         custom.get("tuf"), digest=record.digest,
                                         length=record.length)
            expiry = datetime.fromisoformat(str(custom["metadata_expiry"]))
        except (BadTargetMetadata, KeyError, ValueError, TypeError) as exc:
            raise ImageNotUsable(f"image {record.digest}: stored metadata unusable: {exc}") from None
        return meta, expiry

    def view(self, record: ImageRecord) -> dict[str, Any]:
        """The JSON view of an accepted image."""
        out: dict[str, Any] = {
            "digest": record.digest,
            "length": record.length,
            "kind": record.kind,
            "accepted_at": record.accepted_at,
            "target": record.custom.get("target"),
            "metadata_expiry": record.custom.get("metadata_expiry"),
            "cached": self.cache.contains(record.digest),
            "pinned_by": sorted(self.cache.pins(record.digest)),
        }
        try:
            meta, _ = self._meta(record)
        except ImageNotUsable as exc:
            out["error"] = str(exc)
            return out
        out.update(firmware_version=meta.firmware_version, security_counter=meta.security_counter,
                   hw_classes=list(meta.hw_classes), container=meta.container.value)
        return out

    async def list(self) -> list[dict[str, Any]]:
        return [self.view(r) for r in await self.store.list_images()]

    async def inspect(self, digest: str) -> dict[str, Any]:
        """The view plus the signed header of the cached bytes (raises UnknownImage)."""
        record = await self.store.get_image(digest)
        out = self.view(record)
        if out["cached"] and record.kind != "zigbee-ota":
            try:
                data = await asyncio.to_thread(self.cache.get, record.digest)
                header = envelope.parse(data).describe()
                out["envelope"] = header
            except (CacheError, DecodeError, InvalidArgument) as exc:
                out["envelope_error"] = str(exc)
        return out

    async def usable(self, digest: str) -> UsableImage:
        """Everything a campaign needs; UnknownImage / ImageNotUsable otherwise."""
        record = await self.store.get_image(digest)
        meta, expiry = self._meta(record)
        try:
            data = await asyncio.to_thread(self.cache.get, record.digest)
        except CacheError as exc:
            raise ImageNotUsable(f"image {record.digest} is accepted but not usable: {exc}") from None
        return UsableImage(record, meta, expiry, data)
