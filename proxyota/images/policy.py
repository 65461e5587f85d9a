"""Checks before any airtime: may this image go to this node? (pure: bytes, facts and ``now`` in)

The gateway refuses, with one :class:`Refusal` per failed check and a per-node reason, an
image whose hardware class does not match the node (``hardware_mismatch``), whose
security counter is below the one the node runs (``security_counter_rollback``), whose
TUF metadata has expired (``metadata_expired``), whose vendor signature does not verify
(``bad_signature``), that the node cannot take (``wrong_kind``: a Zigbee OTA file for a
LoRaWAN node, a delta for a node without a patcher), or a delta whose base image is not
the one the node runs (``base_mismatch``). ``metadata_mismatch`` reports signed image
bytes that disagree with their TUF custom metadata (another hardware class, counter, ...).

This module also defines the TUF **custom metadata** of a target (:class:`ImageMeta`),
which the publisher (:mod:`proxyota.images.tuf_repo`) writes and the gateway's intake
(:mod:`proxyota.images.intake`) reads::

    "custom": {
      "kind": "envelope" | "zigbee-ota" | "delta",
      "container": "envelope" | "zigbee-ota",      # the file format of the bytes
      "hw_classes": ["<uuid>" | "zigbee:<mfr 4 hex>:<image type 4 hex>", ...],
      "firmware_version": u32, "security_counter": u32,
      "base_digest": "<sha256 hex>",                # deltas only
      "manufacturer_code": u16, "image_type": u16, "file_version": u32,  # Zigbee only
      ...                                           # any other key is kept as ``extra``
    }

Hardware classes are strings: a LoRaWAN class is the envelope's 16-byte class UUID in its
canonical text form; a Zigbee class defaults to ``zigbee:<manufacturer code>:<image type>``
(what a Zigbee node announces in its Query Next Image Request). For a Zigbee OTA file the
security counter defaults to its file version (Zigbee nodes order images by file version).
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from proxyota.errors import DecodeError, InvalidArgument
from proxyota.images import envelope
from proxyota.images.signing import PublicKey, VerificationError

U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ZIGBEE_CLASS = re.compile(r"^zigbee:([0-9a-f]{4}):([0-9a-f]{4})$")


class Reason(str, enum.Enum):
    """Why an image may not go to a node."""

    HARDWARE_MISMATCH = "hardware_mismatch"
    SECURITY_COUNTER_ROLLBACK = "security_counter_rollback"
    METADATA_EXPIRED = "metadata_expired"
    BAD_SIGNATURE = "bad_signature"
    WRONG_KIND = "wrong_kind"
    BASE_MISMATCH = "base_mismatch"
    METADATA_MISMATCH = "metadata_mismatch"

    def __str__(self) -> str:
        return self.value


class ImageKind(str, enum.Enum):
    ENVELOPE = "envelope"  # a full image in a LoRaWAN envelope
    ZIGBEE_OTA = "zigbee-ota"  # a Zigbee OTA upgrade file
    DELTA = "delta"  # a patch against a base image (digest in base_digest)

    def __str__(self) -> str:
        return self.value


class Container(str, enum.Enum):
    ENVELOPE = "envelope"
    ZIGBEE_OTA = "zigbee-ota"

    def __str__(self) -> str:
        return self.value


class BadTargetMetadata(InvalidArgument):
    """A target's TUF custom metadata is missing a field or has one of the wrong shape."""


@dataclass(frozen=True)
class Refusal:
    reason: Reason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


@dataclass(frozen=True)
class NodeFacts:
    """What the gateway knows about one node.

    ``security_counter`` is the anti-rollback counter the node runs (for a Zigbee node:
    its current file version); ``running_digest`` the SHA-256 (hex) of its running full
    image, needed to offer it a delta. ``transport`` ("lorawan" / "zigbee") lets the
    check refuse the other technology's file format; ``None`` skips that check.
    """

    hw_class: str
    running_version: int | None
    security_counter: int
    running_digest: str | None = None
    transport: Literal["lorawan", "zigbee"] | None = None
    supports_delta: bool = True


# --------------------------------------------------------------------------- hardware classes


def zigbee_hw_class(manufacturer_code: int, image_type: int) -> str:
    """The default hardware class of a Zigbee OTA image: ``zigbee:<mfr>:<type>`` (hex)."""
    _check_int("manufacturer_code", manufacturer_code, U16_MAX, BadTargetMetadata)
    _check_int("image_type", image_type, U16_MAX, BadTargetMetadata)
    return f"zigbee:{manufacturer_code:04x}:{image_type:04x}"


def normalize_hw_class(text: str) -> str:
    """Canonical text of a hardware class id: a UUID, or ``zigbee:XXXX:YYYY`` (hex)."""
    if not isinstance(text, str):
        raise InvalidArgument(f"hardware class must be text, got {type(text).__name__}")
    value = text.strip().lower()
    m = _ZIGBEE_CLASS.match(value)
    if m:
        return value
    if value.startswith("zigbee:"):
        raise InvalidArgument(
            f"hardware class {text!r}: a Zigbee class is zigbee:<manufacturer code>:<image type> "
            "with 4 hex digits each"
        )
    return str(envelope.parse_hw_class(value))


# --------------------------------------------------------------------------- TUF custom metadata

CORE_FIELDS = (
    "kind",
    "container",
    "hw_classes",
    "firmware_version",
    "security_counter",
    "base_digest",
    "manufacturer_code",
    "image_type",
    "file_version",
)


@dataclass(frozen=True)
class ImageMeta:
    """One TUF target as the gateway sees it: its custom metadata plus length and SHA-256."""

    name: str
    digest: str
    length: int
    kind: ImageKind
    container: Container
    hw_classes: tuple[str, ...]
    firmware_version: int
    security_counter: int
    base_digest: str | None = None
    manufacturer_code: int | None = None
    image_type: int | None = None
    file_version: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _enum(ImageKind, self.kind, "kind"))
        object.__setattr__(self, "container", _enum(Container, self.container, "container"))
        digest = _digest("digest", self.digest)
        object.__setattr__(self, "digest", digest)
        _check_int("length", self.length, None, BadTargetMetadata)
        if isinstance(self.hw_classes, str) or not isinstance(self.hw_classes, Iterable):
            raise BadTargetMetadata("hw_classes must be a list of hardware class ids")
        classes = []
        for c in self.hw_classes:
            try:
                classes.append(normalize_hw_class(c))
            except InvalidArgument as exc:
                raise BadTargetMetadata(f"hw_classes: {exc}") from None
        if not classes:
            raise BadTargetMetadata("hw_classes must name at least one hardware class")
        object.__setattr__(self, "hw_classes", tuple(dict.fromkeys(classes)))
        _check_int("firmware_version", self.firmware_version, U32_MAX, BadTargetMetadata)
        _check_int("security_counter", self.security_counter, U32_MAX, BadTargetMetadata)
        if self.kind == ImageKind.ENVELOPE and self.container != Container.ENVELOPE:
            raise BadTargetMetadata("kind 'envelope' needs container 'envelope'")
        if self.kind == ImageKind.ZIGBEE_OTA and self.container != Container.ZIGBEE_OTA:
            raise BadTargetMetadata("kind 'zigbee-ota' needs container 'zigbee-ota'")
        if self.kind == ImageKind.DELTA:
            if self.base_digest is None:
                raise BadTargetMetadata("a delta must name base_digest (SHA-256 of its base image)")
            object.__setattr__(self, "base_digest", _digest("base_digest", self.base_digest))
        elif self.base_digest is not None:
            raise BadTargetMetadata(f"base_digest is only for deltas, not kind {self.kind.value!r}")
        zigbee = (self.manufacturer_code, self.image_type, self.file_version)
        if self.container == Container.ZIGBEE_OTA:
            if None in zigbee:
                raise BadTargetMetadata(
                    "a Zigbee OTA target needs manufacturer_code, image_type and file_version"
                )
            _check_int("manufacturer_code", self.manufacturer_code, U16_MAX, BadTargetMetadata)
            _check_int("image_type", self.image_type, U16_MAX, BadTargetMetadata)
            _check_int("file_version", self.file_version, U32_MAX, BadTargetMetadata)
        elif zigbee != (None, None, None):
            raise BadTargetMetadata(
                "manufacturer_code / image_type / file_version are only for Zigbee OTA targets"
            )
        object.__setattr__(self, "extra", dict(self.extra))
        clash = set(self.extra) & set(CORE_FIELDS)
        if clash:
            raise BadTargetMetadata(f"extra metadata must not repeat {sorted(clash)}")

    @property
    def is_delta(self) -> bool:
        return self.kind == ImageKind.DELTA

    def custom(self) -> dict[str, Any]:
        """The JSON object stored as the target's ``custom`` metadata."""
        doc: dict[str, Any] = dict(self.extra)
        doc.update(
            kind=self.kind.value,
            container=self.container.value,
            hw_classes=list(self.hw_classes),
            firmware_version=self.firmware_version,
            security_counter=self.security_counter,
        )
        if self.base_digest is not None:
            doc["base_digest"] = self.base_digest
        if self.container == Container.ZIGBEE_OTA:
            doc.update(
                manufacturer_code=self.manufacturer_code,
                image_type=self.image_type,
                file_version=self.file_version,
            )
        return doc

    @classmethod
    def from_custom(cls, name: str, custom: Any, *, digest: str, length: int) -> ImageMeta:
        """Validate a target's ``custom`` object; raises :class:`BadTargetMetadata`."""
        if not isinstance(custom, Mapping):
            raise BadTargetMetadata(f"target {name!r}: no custom metadata object")
        doc = dict(custom)
        try:
            missing = [k for k in ("kind", "hw_classes", "firmware_version", "security_counter")
                       if k not in doc]
            if missing:
                raise BadTargetMetadata(f"custom metadata lacks {', '.join(missing)}")
            kind = _enum(ImageKind, doc.pop("kind"), "kind")
            container = doc.pop("container", None)
            if container is None:
                if kind == ImageKind.DELTA:
                    raise BadTargetMetadata("a delta must name its container")
                container = kind.value
            hw = doc.pop("hw_classes")
            if not isinstance(hw, list):
                raise BadTargetMetadata("hw_classes must be a list")
            return cls(
                name=name,
                digest=digest,
                length=length,
                kind=kind,
                container=container,
                hw_classes=tuple(hw),
                firmware_version=doc.pop("firmware_version"),
                security_counter=doc.pop("security_counter"),
                base_digest=doc.pop("base_digest", None),
                manufacturer_code=doc.pop("manufacturer_code", None),
                image_type=doc.pop("image_type", None),
                file_version=doc.pop("file_version", None),
                extra=doc,
            )
        except BadTargetMetadata as exc:
            raise BadTargetMetadata(f"target {name!r}: {exc}") from None


def _enum(enum_type: type[enum.Enum], value: Any, name: str) -> Any:
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum_type)  # type: ignore[attr-defined]
        raise BadTargetMetadata(f"{name} {value!r} is not one of {allowed}") from None


def _digest(name: str, value: Any) -> str:
    if isinstance(value, str) and _HEX64.match(value.strip().lower()):
        return value.strip().lower()
    raise BadTargetMetadata(f"{name} must be a SHA-256 as 64 hex digits, got {value!r}")


def _check_int(name: str, value: Any, maximum: int | None, error: type[Exception]) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or (
        maximum is not None and value > maximum
    ):
        bound = f"0..{maximum}" if maximum is not None else ">= 0"
        raise error(f"{name} must be an integer {bound}, got {value!r}")


# --------------------------------------------------------------------------- the checks


def check(
    image_meta: ImageMeta,
    node: NodeFacts,
    now: datetime,
    *,
    metadata_expiry: datetime,
    image: bytes | None = None,
    vendor_keys: PublicKey | Iterable[PublicKey] | None = None,
) -> list[Refusal]:
    """Every reason not to send ``image_meta`` to ``node`` at ``now`` (empty: go ahead).

    ``metadata_expiry`` is the earliest expiry of the TUF metadata the image was accepted
    under. The vendor signature is checked on ``image`` (the bytes that will go on air)
    with ``vendor_keys``; without either the answer is ``bad_signature`` (fail closed).
    """
    refusals: list[Refusal] = []
    if _aware(now, "now") >= _aware(metadata_expiry, "metadata_expiry"):
        refusals.append(Refusal(
            Reason.METADATA_EXPIRED,
            f"the TUF metadata for {image_meta.name!r} expired at "
            f"{metadata_expiry.isoformat()} (now {now.isoformat()}); refresh the repository",
        ))
    refusals.extend(check_node(image_meta, node))
    refusals.extend(check_image(image_meta, image, vendor_keys))
    return refusals


def check_node(image_meta: ImageMeta, node: NodeFacts) -> list[Refusal]:
    """The node-specific checks: hardware class, counter, kind, delta base."""
    refusals: list[Refusal] = []
    name = image_meta.name
    try:
        node_class = normalize_hw_class(node.hw_class)
    except InvalidArgument as exc:
        node_class = None
        refusals.append(Refusal(Reason.HARDWARE_MISMATCH, f"node hardware class: {exc}"))
    if node_class is not None and node_class not in image_meta.hw_classes:
        refusals.append(Refusal(
            Reason.HARDWARE_MISMATCH,
            f"{name!r} is for hardware class {', '.join(image_meta.hw_classes)}; "
            f"the node is {node_class}",
        ))
    if image_meta.security_counter < node.security_counter:
        refusals.append(Refusal(
            Reason.SECURITY_COUNTER_ROLLBACK,
            f"{name!r} has security counter {image_meta.security_counter}, below the "
            f"node's {node.security_counter}",
        ))
    if node.transport == "lorawan" and image_meta.container != Container.ENVELOPE:
        refusals.append(Refusal(
            Reason.WRONG_KIND, f"{name!r} is a {image_meta.container.value} file; "
            "a LoRaWAN node takes an image envelope"))
    if node.transport == "zigbee" and image_meta.container != Container.ZIGBEE_OTA:
        refusals.append(Refusal(
            Reason.WRONG_KIND, f"{name!r} is a {image_meta.container.value} file; "
            "a Zigbee node takes a Zigbee OTA file"))
    if image_meta.is_delta:
        if not node.supports_delta:
            refusals.append(Refusal(
                Reason.WRONG_KIND, f"{name!r} is a delta; the node cannot apply patches"))
        running = (node.running_digest or "").strip().lower()
        if running.startswith("sha256:"):
            running = running[len("sha256:"):]
        if not running:
            refusals.append(Refusal(
                Reason.BASE_MISMATCH,
                f"{name!r} is a delta against {image_meta.base_digest}; the digest of the "
                "node's running image is unknown"))
        elif running != image_meta.base_digest:
            refusals.append(Refusal(
                Reason.BASE_MISMATCH,
                f"{name!r} is a delta against {image_meta.base_digest}; the node runs "
                f"{running}"))
    return refusals


def check_image(
    image_meta: ImageMeta,
    image: bytes | None,
    vendor_keys: PublicKey | Iterable[PublicKey] | None,
) -> list[Refusal]:
    """Node-independent checks of the bytes: vendor signature, and header vs TUF metadata."""
    name = image_meta.name
    if image is None:
        return [Refusal(Reason.BAD_SIGNATURE,
                        f"no image bytes given for {name!r}: the signature was not verified")]
    keys = _key_list(vendor_keys)
    if not keys:
        return [Refusal(Reason.BAD_SIGNATURE,
                        f"no vendor public key configured: cannot verify {name!r}")]
    image = bytes(image)
    refusals: list[Refusal] = []
    actual = hashlib.sha256(image).hexdigest()
    if actual != image_meta.digest:
        refusals.append(Refusal(
            Reason.METADATA_MISMATCH,
            f"the bytes of {name!r} hash to {actual}, TUF metadata says {image_meta.digest}"))
    if image_meta.container == Container.ENVELOPE:
        refusals.extend(_check_envelope(image_meta, image, keys))
    else:
        refusals.extend(_check_zigbee(image_meta, image, keys))
    return refusals


def _key_list(vendor_keys: PublicKey | Iterable[PublicKey] | None) -> list[PublicKey]:
    if vendor_keys is None:
        return []
    if isinstance(vendor_keys, (list, tuple, set, frozenset)):
        return list(vendor_keys)
    if isinstance(vendor_keys, Iterable) and not isinstance(vendor_keys, (bytes, str)):
        return list(vendor_keys)
    return [vendor_keys]  # type: ignore[list-item]


def _check_envelope(meta: ImageMeta, image: bytes, keys: list[PublicKey]) -> list[Refusal]:
    name = meta.name
    try:
        env = envelope.verify(image, keys)
    except DecodeError as exc:
        return [Refusal(Reason.BAD_SIGNATURE, f"{name!r} is not a valid image envelope: {exc}")]
    except (VerificationError, InvalidArgument) as exc:
        return [Refusal(Reason.BAD_SIGNATURE, f"{name!r}: {exc}")]
    found = []
    if str(env.hw_class) not in meta.hw_classes:
        found.append(f"hardware class {env.hw_class} (metadata: {', '.join(meta.hw_classes)})")
    if env.firmware_version != meta.firmware_version:
        found.append(f"firmware version {env.firmware_version} "
                     f"(metadata: {meta.firmware_version})")
    if env.security_counter != meta.security_counter:
        found.append(f"security counter {env.security_counter} "
                     f"(metadata: {meta.security_counter})")
    if env.is_delta != meta.is_delta:
        found.append(f"payload kind {env.payload_kind.name.lower()} (metadata: {meta.kind.value})")
    elif env.is_delta and env.base_digest is not None and env.base_digest.hex() != meta.base_digest:
        found.append(f"base digest {env.base_digest.hex()} (metadata: {meta.base_digest})")
    return [Refusal(Reason.METADATA_MISMATCH,
                    f"the signed envelope {name!r} says " + "; ".join(found))] if found else []


def _check_zigbee(meta: ImageMeta, image: bytes, keys: list[PublicKey]) -> list[Refusal]:
    from proxyota.zigbee import otafile  # the Zigbee package is only needed for Zigbee images

    name = meta.name
    try:
        envelope.verify_zigbee_ota(image, keys)
    except DecodeError as exc:
        return [Refusal(Reason.BAD_SIGNATURE, f"{name!r}: no valid vendor signature: {exc}")]
    except (VerificationError, InvalidArgument) as exc:
        return [Refusal(Reason.BAD_SIGNATURE, f"{name!r}: {exc}")]
    try:
        ota = otafile.parse(image)
    except (DecodeError, InvalidArgument) as exc:
        return [Refusal(Reason.METADATA_MISMATCH, f"{name!r} is not a valid OTA file: {exc}")]
    found = []
    for field_name in ("manufacturer_code", "image_type", "file_version"):
        if getattr(ota, field_name) != getattr(meta, field_name):
            found.append(f"{field_name} {getattr(ota, field_name)} "
                         f"(metadata: {getattr(meta, field_name)})")
    return [Refusal(Reason.METADATA_MISMATCH,
                    f"the OTA header of {name!r} says " + "; ".join(found))] if found else []


def _aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidArgument(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument(f"{name} must be timezone-aware (UTC), got {value.isoformat()}")
    return value
