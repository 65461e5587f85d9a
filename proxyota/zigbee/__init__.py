"""Zigbee OTA: the OTA file format (``otafile``), AES-MMO (``aes_mmo``) and the vendor
containers real files come in (``containers``). The OTA cluster server and the zigpy
adapter build on these.
"""

from proxyota.zigbee.aes_mmo import AesMmo, aes_mmo_hash
from proxyota.zigbee.containers import Container, ContainerKind, parse_any
from proxyota.zigbee.otafile import IntegrityResult, OTAFile, SubElement, Tag, build, parse

__all__ = [
    "AesMmo",
    "Container",
    "ContainerKind",
    "IntegrityResult",
    "OTAFile",
    "SubElement",
    "Tag",
    "aes_mmo_hash",
    "build",
    "parse",
    "parse_any",
]
