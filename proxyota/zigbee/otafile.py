"""The Zigbee OTA upgrade file format (ZCL OTA Upgrade cluster, "OTA File Format").

A file is a little-endian header followed by tag/length/value sub-elements::

    magic u32 0x0BEEF11E | header_version u16 | header_length u16 | field_control u16 |
    manufacturer_code u16 | image_type u16 | file_version u32 | stack_version u16 |
    header_string 32 B | total_size u32                               (56 bytes)
    [security_credential_version u8]                    field_control bit 0
    [upgrade_file_destination EUI64]                    field_control bit 1
    [minimum_hardware_version u16, maximum_hardware_version u16]      bit 2
    sub-elements up to total_size: tag u16 | length u32 | data

Real files add variants this module keeps byte-exact: Telink's 0xF000 sub-element carries
two more bytes (``tag_info``) after its length that the length does not count; Hue "SBL"
images have an opaque body after the header (``body``); some files have bytes after
``total_size`` (``trailing``). Vendor containers around the file live in
:mod:`proxyota.zigbee.containers`.

``parse(data)`` returns an :class:`OTAFile`; ``OTAFile.to_bytes()`` gives the same bytes
back. ``header_length``, ``total_size`` and the defined ``field_control`` bits are always
computed from the content, so a built file is consistent by construction; parsing
rejects files whose stored values disagree.

The image integrity code (tag 0x0003) is an AES-MMO hash of the file up to that
sub-element. Files differ on whether the sub-element's own 6-byte tag/length header is
hashed; :meth:`OTAFile.verify_integrity` computes both and says which one matched.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from dataclasses import dataclass, field
from typing import Literal

from proxyota.errors import DecodeError, InvalidArgument
from proxyota.zigbee.aes_mmo import AesMmo

MAGIC = 0x0BEEF11E
MAGIC_BYTES = MAGIC.to_bytes(4, "little")
HEADER_VERSION = 0x0100
BASE_HEADER_LENGTH = 56
HEADER_STRING_LENGTH = 32
SUBELEMENT_HEADER_LENGTH = 6
TELINK_TAG_INFO_LENGTH = 2

FC_SECURITY_CREDENTIAL_VERSION = 0x0001
FC_DEVICE_SPECIFIC_FILE = 0x0002
FC_HARDWARE_VERSIONS = 0x0004
FC_DEFINED = FC_SECURITY_CREDENTIAL_VERSION | FC_DEVICE_SPECIFIC_FILE | FC_HARDWARE_VERSIONS

#: Zigbee stack version values of the header's stack_version field.
STACK_ZIGBEE_2006 = 0x0000
STACK_ZIGBEE_2007 = 0x0001
STACK_ZIGBEE_PRO = 0x0002
STACK_ZIGBEE_IP = 0x0003

#: Special image types.
IMAGE_TYPE_SECURITY_CREDENTIAL = 0xFFC0
IMAGE_TYPE_CONFIGURATION = 0xFFC1
IMAGE_TYPE_LOG = 0xFFC2
IMAGE_TYPE_WILDCARD = 0xFFFF

INTEGRITY_CODE_LENGTH = 16

IntegrityVariant = Literal["with-header", "without-header"]
INTEGRITY_VARIANTS: tuple[IntegrityVariant, ...] = ("with-header", "without-header")


class Tag(enum.IntEnum):
    """Sub-element tags defined by the ZCL OTA file format."""

    UPGRADE_IMAGE = 0x0000
    ECDSA_SIGNATURE_SUITE_1 = 0x0001
    ECDSA_CERTIFICATE_SUITE_1 = 0x0002
    IMAGE_INTEGRITY_CODE = 0x0003
    PICTURE_DATA = 0x0004
    ECDSA_SIGNATURE_SUITE_2 = 0x0005
    ECDSA_CERTIFICATE_SUITE_2 = 0x0006


#: Telink's AES-encrypted upgrade image, with the extra 2-byte tag_info.
TELINK_ENCRYPTED_TAG = 0xF000

_TAG_NAMES = {
    Tag.UPGRADE_IMAGE: "upgrade image",
    Tag.ECDSA_SIGNATURE_SUITE_1: "ECDSA signature (crypto suite 1)",
    Tag.ECDSA_CERTIFICATE_SUITE_1: "ECDSA signing certificate (crypto suite 1)",
    Tag.IMAGE_INTEGRITY_CODE: "image integrity code",
    Tag.PICTURE_DATA: "picture data",
    Tag.ECDSA_SIGNATURE_SUITE_2: "ECDSA signature (crypto suite 2)",
    Tag.ECDSA_CERTIFICATE_SUITE_2: "ECDSA signing certificate (crypto suite 2)",
}

#: Data lengths the format fixes for some tags.
EXPECTED_DATA_LENGTH = {
    Tag.ECDSA_SIGNATURE_SUITE_1: 8 + 42,
    Tag.ECDSA_CERTIFICATE_SUITE_1: 48,
    Tag.IMAGE_INTEGRITY_CODE: INTEGRITY_CODE_LENGTH,
    Tag.ECDSA_SIGNATURE_SUITE_2: 8 + 72,
    Tag.ECDSA_CERTIFICATE_SUITE_2: 74,
}


def tag_name(tag: int) -> str:
    """A readable name for a sub-element tag."""
    if tag in _TAG_NAMES:
        return _TAG_NAMES[Tag(tag)]
    if tag >= 0xF000:
        return "manufacturer specific"
    return "reserved"


def _check_uint(name: str, value: int, bits: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise InvalidArgument(f"{name} must be an unsigned {bits}-bit integer, got {value!r}")


@dataclass(frozen=True)
class EcdsaSignature:
    """Decoded data of an ECDSA signature sub-element (tag 0x0001 or 0x0005)."""

    suite: int
    signer_ieee: int
    signature: bytes


@dataclass(frozen=True)
class SubElement:
    """One tag/length/value sub-element.

    ``tag_info`` is set only for Telink's layout, where two manufacturer bytes (u16
    little-endian: INFO1 in the low byte, INFO2 = AES fill count in the high byte)
    follow the length and are not counted by it.
    """

    tag: int
    data: bytes
    tag_info: int | None = None

    def __post_init__(self) -> None:
        _check_uint("sub-element tag", self.tag, 16)
        if not isinstance(self.data, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"sub-element data must be bytes, got {type(self.data).__name__}")
        object.__setattr__(self, "data", bytes(self.data))
        _check_uint("sub-element length", len(self.data), 32)
        if self.tag_info is not None:
            _check_uint("sub-element tag_info", self.tag_info, 16)

    @property
    def name(self) -> str:
        if self.tag_info is not None:
            return "manufacturer specific (Telink encrypted image)"
        return tag_name(self.tag)

    @property
    def header_size(self) -> int:
        """Bytes before the data: tag, length and (Telink) tag_info."""
        return SUBELEMENT_HEADER_LENGTH + (TELINK_TAG_INFO_LENGTH if self.tag_info is not None else 0)

    @property
    def size(self) -> int:
        """Encoded size in bytes."""
        return self.header_size + len(self.data)

    def header_bytes(self) -> bytes:
        head = struct.pack("<HI", self.tag, len(self.data))
        if self.tag_info is not None:
            head += struct.pack("<H", self.tag_info)
        return head

    def to_bytes(self) -> bytes:
        return self.header_bytes() + self.data

    def problems(self) -> list[str]:
        """Deviations from the format that parsing tolerates."""
        expected = EXPECTED_DATA_LENGTH.get(self.tag)  # type: ignore[call-overload]
        if expected is not None and len(self.data) != expected:
            return [
                f"{self.name} (tag 0x{self.tag:04X}) has {len(self.data)} data bytes, expected {expected}"
            ]
        return []

    def ecdsa_signature(self) -> EcdsaSignature:
        """Decode an ECDSA signature sub-element (signer IEEE address + signature)."""
        suites = {Tag.ECDSA_SIGNATURE_SUITE_1: 1, Tag.ECDSA_SIGNATURE_SUITE_2: 2}
        if self.tag not in suites:
            raise InvalidArgument(f"tag 0x{self.tag:04X} is not an ECDSA signature sub-element")
        expected = EXPECTED_DATA_LENGTH[Tag(self.tag)]
        if len(self.data) != expected:
            raise DecodeError(
                f"signature data is {len(self.data)} bytes, expected {expected}",
                command=f"sub-element 0x{self.tag:04X}",
            )
        return EcdsaSignature(
            suite=suites[Tag(self.tag)],
            signer_ieee=int.from_bytes(self.data[:8], "little"),
            signature=self.data[8:],
        )


@dataclass(frozen=True)
class IntegrityResult:
    """Outcome of checking the image integrity code (tag 0x0003).

    ``status``: ``"absent"`` (no integrity sub-element), ``"malformed"`` (not 16 bytes),
    ``"ok"`` (one variant matched; see ``matched``) or ``"mismatch"``.
    """

    status: Literal["absent", "malformed", "ok", "mismatch"]
    stored: bytes | None = None
    with_header: bytes | None = None
    without_header: bytes | None = None
    matched: IntegrityVariant | None = None
    offset: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class _Reader:
    """Bounds-checked little-endian reads that raise DecodeError naming the field."""

    def __init__(self, data: bytes, command: str) -> None:
        self.data = data
        self.pos = 0
        self.command = command

    def take(self, size: int, field_name: str) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise DecodeError(
                f"truncated: {field_name} needs {size} bytes, only {len(self.data) - self.pos} left",
                command=self.command,
                offset=self.pos,
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def uint(self, size: int, field_name: str) -> int:
        return int.from_bytes(self.take(size, field_name), "little")


@dataclass
class OTAFile:
    """A Zigbee OTA upgrade file.

    Either ``subelements`` (the normal case) or ``body`` (an opaque body, as in Hue SBL
    images) holds what follows the header. ``trailing`` holds bytes after
    ``total_size`` that some real files carry; they are not part of the OTA image the
    server announces but are kept so the file round-trips.
    """

    manufacturer_code: int
    image_type: int
    file_version: int
    subelements: list[SubElement] = field(default_factory=list)
    header_string: bytes | str = b""
    stack_version: int = STACK_ZIGBEE_PRO
    header_version: int = HEADER_VERSION
    security_credential_version: int | None = None
    upgrade_file_destination: int | None = None
    minimum_hardware_version: int | None = None
    maximum_hardware_version: int | None = None
    field_control_reserved: int = 0
    body: bytes | None = None
    trailing: bytes = b""

    def __post_init__(self) -> None:
        if isinstance(self.header_string, str):
            self.header_string = self.header_string.encode("utf-8")
        self.header_string = bytes(self.header_string)
        if len(self.header_string) > HEADER_STRING_LENGTH:
            raise InvalidArgument(
                f"header_string is {len(self.header_string)} bytes, at most {HEADER_STRING_LENGTH} fit"
            )
        self.header_string = self.header_string.ljust(HEADER_STRING_LENGTH, b"\x00")
        self.subelements = list(self.subelements)
        self.trailing = bytes(self.trailing)
        if self.body is not None:
            self.body = bytes(self.body)
        self.validate()

    # -- derived header fields -------------------------------------------------------

    @property
    def field_control(self) -> int:
        fc = self.field_control_reserved
        if self.security_credential_version is not None:
            fc |= FC_SECURITY_CREDENTIAL_VERSION
        if self.upgrade_file_destination is not None:
            fc |= FC_DEVICE_SPECIFIC_FILE
        if self.minimum_hardware_version is not None:
            fc |= FC_HARDWARE_VERSIONS
        return fc

    @property
    def header_length(self) -> int:
        return _header_length_for(self.field_control)

    @property
    def body_length(self) -> int:
        if self.body is not None:
            return len(self.body)
        return sum(element.size for element in self.subelements)

    @property
    def total_size(self) -> int:
        """total_image_size: header plus sub-elements (trailing bytes excluded)."""
        return self.header_length + self.body_length

    @property
    def header_text(self) -> str:
        """The header string as text, up to the first NUL (undecodable bytes replaced)."""
        assert isinstance(self.header_string, bytes)
        return self.header_string.split(b"\x00", 1)[0].decode("utf-8", errors="replace")

    @property
    def layout(self) -> Literal["zigbee", "telink", "opaque"]:
        """Which body layout the file uses."""
        if self.body is not None:
            return "opaque"
        if any(element.tag_info is not None for element in self.subelements):
            return "telink"
        return "zigbee"

    # -- checks and encoding ---------------------------------------------------------

    def validate(self) -> None:
        """Raise InvalidArgument if a field is out of range or inconsistent."""
        _check_uint("manufacturer_code", self.manufacturer_code, 16)
        _check_uint("image_type", self.image_type, 16)
        _check_uint("file_version", self.file_version, 32)
        _check_uint("stack_version", self.stack_version, 16)
        _check_uint("header_version", self.header_version, 16)
        _check_uint("field_control_reserved", self.field_control_reserved, 16)
        if self.field_control_reserved & FC_DEFINED:
            raise InvalidArgument(
                "field_control_reserved must not set bits 0-2; they follow from the optional fields"
            )
        if self.security_credential_version is not None:
            _check_uint("security_credential_version", self.security_credential_version, 8)
        if self.upgrade_file_destination is not None:
            _check_uint("upgrade_file_destination", self.upgrade_file_destination, 64)
        if (self.minimum_hardware_version is None) != (self.maximum_hardware_version is None):
            raise InvalidArgument("minimum_hardware_version and maximum_hardware_version go together")
        if self.minimum_hardware_version is not None:
            _check_uint("minimum_hardware_version", self.minimum_hardware_version, 16)
            _check_uint("maximum_hardware_version", self.maximum_hardware_version, 16)  # type: ignore[arg-type]
        if self.body is not None and self.subelements:
            raise InvalidArgument("an OTA file has either sub-elements or an opaque body, not both")
        for element in self.subelements:
            if not isinstance(element, SubElement):
                raise InvalidArgument(f"sub-elements must be SubElement, got {type(element).__name__}")
        _check_uint("total_size", self.total_size, 32)

    def header_bytes(self) -> bytes:
        """The encoded header (header_length bytes)."""
        self.validate()
        out = bytearray(
            struct.pack(
                "<IHHHHHIH",
                MAGIC,
                self.header_version,
                self.header_length,
                self.field_control,
                self.manufacturer_code,
                self.image_type,
                self.file_version,
                self.stack_version,
            )
        )
        assert isinstance(self.header_string, bytes)
        out += self.header_string
        out += struct.pack("<I", self.total_size)
        if self.security_credential_version is not None:
            out.append(self.security_credential_version)
        if self.upgrade_file_destination is not None:
            out += self.upgrade_file_destination.to_bytes(8, "little")
        if self.minimum_hardware_version is not None:
            out += struct.pack("<HH", self.minimum_hardware_version, self.maximum_hardware_version)
        return bytes(out)

    def image_bytes(self) -> bytes:
        """The OTA image proper: header and sub-elements (total_size bytes), no trailing."""
        if self.body is not None:
            return self.header_bytes() + self.body
        return self.header_bytes() + b"".join(element.to_bytes() for element in self.subelements)

    def to_bytes(self) -> bytes:
        """The whole file, trailing bytes included."""
        return self.image_bytes() + self.trailing

    def problems(self) -> list[str]:
        """Deviations from the specification that parsing tolerates."""
        found = []
        if self.header_version != HEADER_VERSION:
            found.append(f"header_version is 0x{self.header_version:04X}, expected 0x{HEADER_VERSION:04X}")
        if self.field_control_reserved:
            found.append(f"field_control has reserved bits set: 0x{self.field_control_reserved:04X}")
        for element in self.subelements:
            found.extend(element.problems())
        integrity = [i for i, e in enumerate(self.subelements) if e.tag == Tag.IMAGE_INTEGRITY_CODE]
        if integrity and integrity[-1] != len(self.subelements) - 1:
            found.append("the image integrity code is not the last sub-element")
        if self.trailing:
            found.append(f"{len(self.trailing)} bytes follow total_size")
        return found

    def subelement_offsets(self) -> list[int]:
        """File offset of each sub-element's tag."""
        offsets = []
        position = self.header_length
        for element in self.subelements:
            offsets.append(position)
            position += element.size
        return offsets

    def find(self, tag: int) -> SubElement | None:
        """The first sub-element with ``tag``, if any."""
        for element in self.subelements:
            if element.tag == tag:
                return element
        return None

    @property
    def upgrade_image(self) -> bytes | None:
        element = self.find(Tag.UPGRADE_IMAGE)
        return None if element is None else element.data

    # -- integrity code --------------------------------------------------------------

    def verify_integrity(self) -> IntegrityResult:
        """Check the image integrity code against both hashing variants."""
        index = None
        for i, element in enumerate(self.subelements):
            if element.tag == Tag.IMAGE_INTEGRITY_CODE:
                index = i
        if index is None:
            return IntegrityResult(status="absent")
        element = self.subelements[index]
        offset = self.subelement_offsets()[index]
        if len(element.data) != INTEGRITY_CODE_LENGTH or element.tag_info is not None:
            return IntegrityResult(status="malformed", stored=element.data, offset=offset)
        image = self.image_bytes()
        without_header, with_header = _integrity_hashes(image, offset)
        matched: IntegrityVariant | None = None
        if element.data == with_header:
            matched = "with-header"
        elif element.data == without_header:
            matched = "without-header"
        return IntegrityResult(
            status="ok" if matched else "mismatch",
            stored=element.data,
            with_header=with_header,
            without_header=without_header,
            matched=matched,
            offset=offset,
        )

    def with_integrity_code(self, variant: IntegrityVariant = "without-header") -> OTAFile:
        """A copy whose last sub-element is a fresh image integrity code.

        Any existing integrity sub-element is dropped first. ``variant`` chooses whether
        the new sub-element's own 6-byte header is covered by the hash.
        """
        if variant not in INTEGRITY_VARIANTS:
            raise InvalidArgument(f"integrity variant must be one of {INTEGRITY_VARIANTS}, got {variant!r}")
        if self.body is not None:
            raise InvalidArgument("an OTA file with an opaque body cannot carry sub-elements")
        kept = [e for e in self.subelements if e.tag != Tag.IMAGE_INTEGRITY_CODE]
        placeholder = SubElement(Tag.IMAGE_INTEGRITY_CODE, bytes(INTEGRITY_CODE_LENGTH))
        draft = dataclasses.replace(self, subelements=[*kept, placeholder])
        offset = draft.subelement_offsets()[-1]
        without_header, with_header = _integrity_hashes(draft.image_bytes(), offset)
        code = with_header if variant == "with-header" else without_header
        return dataclasses.replace(self, subelements=[*kept, SubElement(Tag.IMAGE_INTEGRITY_CODE, code)])


def _header_length_for(field_control: int) -> int:
    length = BASE_HEADER_LENGTH
    if field_control & FC_SECURITY_CREDENTIAL_VERSION:
        length += 1
    if field_control & FC_DEVICE_SPECIFIC_FILE:
        length += 8
    if field_control & FC_HARDWARE_VERSIONS:
        length += 4
    return length


def _integrity_hashes(image: bytes, offset: int) -> tuple[bytes, bytes]:
    """AES-MMO of image[:offset] and of image[:offset + 6], sharing the common prefix."""
    hasher = AesMmo(image[:offset])
    without_header = hasher.digest()
    hasher.update(image[offset : offset + SUBELEMENT_HEADER_LENGTH])
    return without_header, hasher.digest()


# -- parsing -------------------------------------------------------------------------


def _parse_header(data: bytes) -> tuple[dict, int, int]:
    """Decode the header: (fields for OTAFile, header_length, total_size)."""
    reader = _Reader(data, "OTA header")
    magic = reader.uint(4, "magic")
    if magic != MAGIC:
        raise DecodeError(
            f"bad magic 0x{magic:08X} (bytes {data[:4].hex(' ')}), expected 0x{MAGIC:08X} (1e f1 ee 0b)",
            command="OTA header",
            offset=0,
        )
    header_version = reader.uint(2, "header_version")
    header_length = reader.uint(2, "header_length")
    field_control = reader.uint(2, "field_control")
    fields: dict = {
        "header_version": header_version,
        "field_control_reserved": field_control & ~FC_DEFINED & 0xFFFF,
        "manufacturer_code": reader.uint(2, "manufacturer_code"),
        "image_type": reader.uint(2, "image_type"),
        "file_version": reader.uint(4, "file_version"),
        "stack_version": reader.uint(2, "stack_version"),
        "header_string": reader.take(HEADER_STRING_LENGTH, "header_string"),
    }
    total_size = reader.uint(4, "total_image_size")
    expected_length = _header_length_for(field_control)
    if header_length != expected_length:
        raise DecodeError(
            f"header_length is {header_length} but field_control 0x{field_control:04X} "
            f"implies {expected_length}",
            command="OTA header",
            offset=6,
        )
    if field_control & FC_SECURITY_CREDENTIAL_VERSION:
        fields["security_credential_version"] = reader.uint(1, "security_credential_version")
    if field_control & FC_DEVICE_SPECIFIC_FILE:
        fields["upgrade_file_destination"] = reader.uint(8, "upgrade_file_destination")
    if field_control & FC_HARDWARE_VERSIONS:
        fields["minimum_hardware_version"] = reader.uint(2, "minimum_hardware_version")
        fields["maximum_hardware_version"] = reader.uint(2, "maximum_hardware_version")
    if total_size < header_length:
        raise DecodeError(
            f"total_image_size {total_size} is smaller than header_length {header_length}",
            command="OTA header",
            offset=52,
        )
    if total_size > len(data):
        raise DecodeError(
            f"total_image_size mismatch: header says {total_size} bytes, file has {len(data)}",
            command="OTA header",
            offset=52,
        )
    return fields, header_length, total_size


def _parse_subelements(data: bytes, start: int, end: int, telink: bool) -> list[SubElement]:
    elements: list[SubElement] = []
    position = start
    while position < end:
        index = len(elements)
        left = end - position
        if left < SUBELEMENT_HEADER_LENGTH:
            raise DecodeError(
                f"truncated sub-element: {left} bytes left before total_image_size {end}, "
                f"a sub-element header needs {SUBELEMENT_HEADER_LENGTH}",
                command=f"sub-element #{index}",
                offset=position,
            )
        tag, length = struct.unpack_from("<HI", data, position)
        tag_info = None
        data_start = position + SUBELEMENT_HEADER_LENGTH
        if telink and tag == TELINK_ENCRYPTED_TAG:
            if data_start + TELINK_TAG_INFO_LENGTH > end:
                raise DecodeError(
                    "truncated sub-element: Telink tag_info runs past total_image_size",
                    command=f"sub-element #{index} (tag 0x{tag:04X})",
                    offset=data_start,
                )
            (tag_info,) = struct.unpack_from("<H", data, data_start)
            data_start += TELINK_TAG_INFO_LENGTH
        data_end = data_start + length
        if data_end > end:
            raise DecodeError(
                f"truncated sub-element: length {length} runs {data_end - end} bytes past "
                f"total_image_size {end}",
                command=f"sub-element #{index} (tag 0x{tag:04X} {tag_name(tag)})",
                offset=position + 2,
            )
        elements.append(SubElement(tag, data[data_start:data_end], tag_info))
        position = data_end
    return elements


def parse(data: bytes, *, opaque_body: bool = False) -> OTAFile:
    """Decode an OTA file; raises DecodeError naming the field and offset.

    Sub-elements are read in the specified layout; if that fails and Telink's 0xF000
    layout fits, that is used instead (the order zigpy uses). ``opaque_body=True`` keeps
    everything after the header as one opaque body (Hue SBL images).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidArgument(f"OTA file data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    fields, header_length, total_size = _parse_header(data)
    trailing = data[total_size:]
    if opaque_body:
        return OTAFile(body=data[header_length:total_size], trailing=trailing, **fields)
    try:
        elements = _parse_subelements(data, header_length, total_size, telink=False)
    except DecodeError as spec_error:
        try:
            elements = _parse_subelements(data, header_length, total_size, telink=True)
        except DecodeError:
            raise spec_error from None
        if not any(e.tag_info is not None for e in elements):
            raise spec_error from None
    return OTAFile(subelements=elements, trailing=trailing, **fields)


def build(
    manufacturer_code: int,
    image_type: int,
    file_version: int,
    image: bytes | None = None,
    *,
    subelements: list[SubElement] | tuple[SubElement, ...] = (),
    integrity: IntegrityVariant | None = None,
    **header: object,
) -> OTAFile:
    """Build an OTA file: an upgrade-image sub-element from ``image`` (if given), then
    ``subelements``, then (if ``integrity`` names a variant) an image integrity code.

    ``header`` takes the other OTAFile fields (header_string, stack_version,
    security_credential_version, upgrade_file_destination, minimum/maximum_hardware_version).
    """
    elements = []
    if image is not None:
        elements.append(SubElement(Tag.UPGRADE_IMAGE, image))
    elements.extend(subelements)
    ota = OTAFile(
        manufacturer_code=manufacturer_code,
        image_type=image_type,
        file_version=file_version,
        subelements=elements,
        **header,  # type: ignore[arg-type]
    )
    if integrity is not None:
        ota = ota.with_integrity_code(integrity)
    return ota
