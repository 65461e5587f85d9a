"""Firmware images as the emulated end device checks them before it installs one.

The gateway's signed image envelope is defined elsewhere (proxyota/images/) and the
emulator may not import it; the device therefore takes a pluggable verifier
`image_verifier(image_bytes) -> ImageCheck` (a 3- or 4-tuple is accepted too). The default,
`DigestImageVerifier`, understands a small test format made by `make_test_image`:

    "EMUFW1" | version u32 | hw_version u32 | body length u32 | body | SHA-256(all before)

or, when given `expected_digests`, accepts exactly the blocks whose SHA-256 was provisioned
(mapped to the version they install). The envelope check can be plugged in later with the
same call shape.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Callable, Mapping, NamedTuple, Union

__all__ = ["ImageCheck", "make_test_image", "DigestImageVerifier", "ImageVerifier",
           "normalize_check", "TEST_IMAGE_MAGIC"]

TEST_IMAGE_MAGIC = b"EMUFW1"
_HEAD = struct.Struct("<6sIII")


class ImageCheck(NamedTuple):
    ok: bool
    version: int | None
    reason: str
    wrong_hw: bool = False


ImageVerifier = Callable[[bytes], Union[ImageCheck, tuple]]


def normalize_check(result: ImageCheck | tuple) -> ImageCheck:
    """Accept an ImageCheck, an (ok, version, reason) or (ok, version, reason, wrong_hw)."""
    if isinstance(result, ImageCheck):
        return result
    if isinstance(result, tuple) and len(result) in (3, 4):
        return ImageCheck(bool(result[0]), result[1], str(result[2]),
                          bool(result[3]) if len(result) == 4 else False)
    raise TypeError("an image verifier must return (ok, version, reason[, wrong_hw])")


def make_test_image(body: bytes, version: int, hw_version: int) -> bytes:
    """A firmware image in the emulator's test format (see the module docstring)."""
    blob = _HEAD.pack(TEST_IMAGE_MAGIC, version & 0xFFFFFFFF, hw_version & 0xFFFFFFFF,
                      len(body)) + bytes(body)
    return blob + hashlib.sha256(blob).digest()


class DigestImageVerifier:
    """The default device-side image check (a digest, not a signature)."""

    def __init__(self, hw_version: int, expected_digests: Mapping[bytes, int] | None = None):
        self.hw_version = hw_version
        self.expected = dict(expected_digests) if expected_digests else None

    def __call__(self, image: bytes) -> ImageCheck:
        if self.expected is not None:
            version = self.expected.get(hashlib.sha256(image).digest())
            if version is None:
                return ImageCheck(False, None, "digest not provisioned")
            return ImageCheck(True, version, "provisioned digest")
        if len(image) < _HEAD.size + 32:
            return ImageCheck(False, None, "too short for a test image")
        magic, version, hw, length = _HEAD.unpack_from(image)
        if magic != TEST_IMAGE_MAGIC:
            return ImageCheck(False, None, "not a test image (bad magic)")
        if _HEAD.size + length + 32 != len(image):
            return ImageCheck(False, None, "length field does not match the image")
        if hashlib.sha256(image[:-32]).digest() != image[-32:]:
            return ImageCheck(False, None, "digest mismatch")
        if hw != self.hw_version:
            return ImageCheck(False, version, f"image for hardware {hw}, device is "
                                              f"{self.hw_version}", wrong_hw=True)
        return ImageCheck(True, version, "digest ok")
