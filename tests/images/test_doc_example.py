"""docs/image-envelope.md must match the code: layout table and the worked hex examples."""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from proxyota.images import envelope as E
from proxyota.images import signing

DOC = Path(__file__).resolve().parents[2] / "docs" / "image-envelope.md"

# RFC 8032 section 7.1 TEST 1 key pair: the fixed test key of the worked examples.
RFC8032_TEST1_SECRET = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
RFC8032_TEST1_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC8032_TEST1_SECRET))


def doc_text() -> str:
    return DOC.read_text("utf-8")


def hex_block(marker: str) -> bytes:
    """Bytes of the ```text block after ``<!-- example:MARKER -->``; offsets are checked."""
    m = re.search(rf"<!-- example:{marker} -->\s*```text\n(.*?)```", doc_text(), re.S)
    assert m, f"example {marker} not found in {DOC}"
    out = bytearray()
    for line in m.group(1).splitlines():
        offset, hexpart, _label = (part.strip() for part in line.split("|", 2))
        assert int(offset, 16) == len(out), f"offset column wrong at {line!r}"
        out += bytes.fromhex(hexpart)
    return bytes(out)


def test_doc_header_table_matches_layout():
    m = re.search(r"<!-- header-layout:begin -->(.*?)<!-- header-layout:end -->", doc_text(), re.S)
    assert m
    rows = []
    for line in m.group(1).strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append((cells[2], int(cells[0]), int(cells[1])))
    assert tuple(rows) == E.HEADER_LAYOUT


def test_doc_full_example_bytes():
    doc = hex_block("full")
    built = E.build(
        b"Hello, LoRaWAN!\n",
        hw_class=E.class_id("example.com", "LS-100 rev B"),
        firmware_version=E.version_from_semver("1.2.3"),
        security_counter=7,
        private_key=KEY,
    )
    assert doc == built
    assert len(doc) == 188
    assert hashlib.sha256(doc).hexdigest() in doc_text()
    assert str(E.class_id("example.com", "LS-100 rev B")) in doc_text()
    assert signing.key_id(KEY).hex() in doc_text()
    public = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(RFC8032_TEST1_PUBLIC))
    env = E.verify(doc, public)
    assert env.payload == b"Hello, LoRaWAN!\n" and env.base_digest is None


def test_doc_delta_example_bytes():
    doc = hex_block("delta")
    full = E.parse(hex_block("full"))
    built = E.build(
        b"delta-patch\n",
        hw_class=full.hw_class,
        firmware_version=E.version_from_semver("1.2.4"),
        security_counter=7,
        private_key=KEY,
        base_digest=full.payload_digest,
    )
    assert doc == built
    assert hashlib.sha256(doc).hexdigest() in doc_text()
    env = E.verify(doc, KEY.public_key())
    assert env.is_delta and env.base_digest == hashlib.sha256(b"Hello, LoRaWAN!\n").digest()


def test_doc_zigbee_example_bytes():
    doc = hex_block("zigbee")
    body = struct.pack("<HI", 0x0000, 16) + b"Hello, Zigbee!!\n"
    header = struct.pack("<IHHHHHIH32sI", 0x0BEEF11E, 0x0100, 56, 0, 0x1234, 0x0001,
                         0x01020003, 0x0002, b"proxyota example".ljust(32, b"\0"),
                         56 + len(body))
    assert doc == E.sign_zigbee_ota(header + body, KEY)
    assert E.verify_zigbee_ota(doc, KEY.public_key()).key_id == signing.key_id(KEY)


@pytest.mark.parametrize("tag", ["0xF519"])
def test_doc_names_the_zigbee_tag(tag):
    assert int(tag, 16) == E.ZIGBEE_SIGNATURE_TAG
    assert f"**Tag `{tag}`**" in doc_text()
    assert 0xF000 <= E.ZIGBEE_SIGNATURE_TAG <= 0xFFFF
    assert E.ZIGBEE_SIGNATURE_TAG not in (0xF000, 0xF7BD, 0xFF01, 0xFFBE, 0xFFBF)
