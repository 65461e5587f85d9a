"""Hypothesis strategies for OTA files (spec layout, Telink layout, optional header fields)."""

from __future__ import annotations

from hypothesis import strategies as st

from proxyota.zigbee.otafile import FC_DEFINED, TELINK_ENCRYPTED_TAG, OTAFile, SubElement

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)

spec_subelements = st.builds(SubElement, tag=u16, data=st.binary(max_size=48))
telink_subelements = st.builds(
    SubElement, tag=st.just(TELINK_ENCRYPTED_TAG), data=st.binary(max_size=48), tag_info=u16
)


@st.composite
def ota_files(draw, *, telink: bool | None = None, trailing: bool = True) -> OTAFile:
    """Valid OTA files; ``telink`` True forces at least one Telink 0xF000 element,
    False forbids them, None mixes."""
    hardware = draw(st.none() | st.tuples(u16, u16))
    if telink is None:
        telink = draw(st.booleans())
    elements = draw(st.lists(spec_subelements, max_size=4))
    if telink:
        position = draw(st.integers(0, len(elements)))
        elements.insert(position, draw(telink_subelements))
    return OTAFile(
        manufacturer_code=draw(u16),
        image_type=draw(u16),
        file_version=draw(u32),
        stack_version=draw(u16),
        header_version=draw(st.sampled_from([0x0100, 0x0100, 0x0200])),
        header_string=draw(st.binary(max_size=32)),
        field_control_reserved=draw(u16) & ~FC_DEFINED & draw(st.sampled_from([0, 0, 0xFFFF])),
        security_credential_version=draw(st.none() | u8),
        upgrade_file_destination=draw(st.none() | u64),
        minimum_hardware_version=None if hardware is None else hardware[0],
        maximum_hardware_version=None if hardware is None else hardware[1],
        subelements=elements,
        trailing=draw(st.binary(max_size=8)) if trailing else b"",
    )
