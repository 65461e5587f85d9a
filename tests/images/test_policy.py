"""proxyota.images.policy: the pure checks before any airtime, and the TUF custom metadata schema."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyota.errors import InvalidArgument
from proxyota.images import envelope, signing
from proxyota.images.policy import (
    BadTargetMetadata,
    Container,
    ImageKind,
    ImageMeta,
    NodeFacts,
    Reason,
    check,
    normalize_hw_class,
    zigbee_hw_class,
)
from proxyota.zigbee import otafile

HW = "669d8e58-f8b1-5858-826a-2ee7071abf7b"
HW_OTHER = "0b0f1c3e-0000-5000-8000-000000000001"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
LATER = NOW + timedelta(days=1)


@pytest.fixture(scope="module")
def key():
    return signing.generate_key()


def full_image(key, *, hw=HW, version=0x01020003, counter=5, payload=b"firmware" * 50):
    data = envelope.build(payload, hw_class=hw, firmware_version=version,
                          security_counter=counter, private_key=key)
    return data, ImageMeta(name="lorawan/fw.img", digest=hashlib.sha256(data).hexdigest(),
                           length=len(data), kind="envelope", container="envelope",
                           hw_classes=(hw,), firmware_version=version, security_counter=counter)


def node(**kw):
    facts = dict(hw_class=HW, running_version=0x01020002, security_counter=5,
                 transport="lorawan")
    facts.update(kw)
    return NodeFacts(**facts)


def reasons(refusals):
    return [r.reason for r in refusals]


def test_a_good_image_passes(key):
    data, meta = full_image(key)
    assert check(meta, node(), NOW, metadata_expiry=LATER, image=data,
                 vendor_keys=[key.public_key()]) == []


def test_each_refusal_alone(key):
    data, meta = full_image(key)
    keys = [key.public_key()]
    ok = dict(metadata_expiry=LATER, image=data, vendor_keys=keys)

    r = check(meta, node(hw_class=HW_OTHER), NOW, **ok)
    assert reasons(r) == [Reason.HARDWARE_MISMATCH]
    assert HW in r[0].detail and HW_OTHER in r[0].detail

    r = check(meta, node(security_counter=6), NOW, **ok)
    assert reasons(r) == [Reason.SECURITY_COUNTER_ROLLBACK]
    assert "5" in r[0].detail and "6" in r[0].detail
    # equal counter is fine (several versions may share one)
    assert check(meta, node(security_counter=5), NOW, **ok) == []

    r = check(meta, node(), LATER, **ok)  # expiry is inclusive, as in python-tuf
    assert reasons(r) == [Reason.METADATA_EXPIRED]
    assert check(meta, node(), LATER - timedelta(seconds=1), **ok) == []

    other = signing.generate_key()
    r = check(meta, node(), NOW, metadata_expiry=LATER, image=data,
              vendor_keys=[other.public_key()])
    assert reasons(r) == [Reason.BAD_SIGNATURE] and "not among the given keys" in r[0].detail

    r = check(meta, node(transport="zigbee"), NOW, **ok)
    assert reasons(r) == [Reason.WRONG_KIND]


def test_refusals_accumulate_per_node(key):
    data, meta = full_image(key)
    r = check(meta, node(hw_class=HW_OTHER, security_counter=9), LATER + timedelta(days=1),
              metadata_expiry=LATER, image=data, vendor_keys=[key.public_key()])
    assert set(reasons(r)) == {Reason.HARDWARE_MISMATCH, Reason.SECURITY_COUNTER_ROLLBACK,
                               Reason.METADATA_EXPIRED}
    assert all(str(x).startswith(x.reason.value + ": ") for x in r)


def test_signature_is_checked_fail_closed(key):
    data, meta = full_image(key)
    assert reasons(check(meta, node(), NOW, metadata_expiry=LATER)) == [Reason.BAD_SIGNATURE]
    assert reasons(check(meta, node(), NOW, metadata_expiry=LATER, image=data)) == [
        Reason.BAD_SIGNATURE]
    assert reasons(check(meta, node(), NOW, metadata_expiry=LATER, image=data,
                         vendor_keys=[])) == [Reason.BAD_SIGNATURE]
    # a single key (not a list) is accepted
    assert check(meta, node(), NOW, metadata_expiry=LATER, image=data,
                 vendor_keys=key.public_key()) == []


def test_altered_bytes(key):
    data, meta = full_image(key)
    tampered = bytearray(data)
    tampered[envelope.HEADER_SIZE + 3] ^= 1  # a payload byte
    r = check(meta, node(), NOW, metadata_expiry=LATER, image=bytes(tampered),
              vendor_keys=[key.public_key()])
    assert set(reasons(r)) == {Reason.BAD_SIGNATURE, Reason.METADATA_MISMATCH}
    r = check(meta, node(), NOW, metadata_expiry=LATER, image=b"not an envelope",
              vendor_keys=[key.public_key()])
    assert Reason.BAD_SIGNATURE in reasons(r)
    assert any("not a valid image envelope" in x.detail for x in r)


def test_header_must_agree_with_tuf_metadata(key):
    """A correctly signed envelope listed in TUF under another class or counter is refused."""
    data, meta = full_image(key, counter=3)
    lying = ImageMeta(**{**meta.__dict__, "security_counter": 7, "hw_classes": (HW_OTHER, HW)})
    r = check(lying, node(hw_class=HW_OTHER, security_counter=7), NOW, metadata_expiry=LATER,
              image=data, vendor_keys=[key.public_key()])
    assert reasons(r) == [Reason.METADATA_MISMATCH]
    assert "security counter 3 (metadata: 7)" in r[0].detail


def test_delta_base_and_kind(key):
    base_image = b"base firmware" * 40
    base = hashlib.sha256(base_image).digest()
    data = envelope.build(b"patch", hw_class=HW, firmware_version=2, security_counter=5,
                          private_key=key, base_digest=base)
    meta = ImageMeta(name="d.img", digest=hashlib.sha256(data).hexdigest(), length=len(data),
                     kind=ImageKind.DELTA, container=Container.ENVELOPE, hw_classes=(HW,),
                     firmware_version=2, security_counter=5, base_digest=base.hex())
    ok = dict(metadata_expiry=LATER, image=data, vendor_keys=[key.public_key()])
    assert check(meta, node(running_digest=base.hex()), NOW, **ok) == []
    assert check(meta, node(running_digest="sha256:" + base.hex().upper()), NOW, **ok) == []
    r = check(meta, node(running_digest="00" * 32), NOW, **ok)
    assert reasons(r) == [Reason.BASE_MISMATCH] and base.hex() in r[0].detail
    assert reasons(check(meta, node(), NOW, **ok)) == [Reason.BASE_MISMATCH]
    r = check(meta, node(running_digest=base.hex(), supports_delta=False), NOW, **ok)
    assert reasons(r) == [Reason.WRONG_KIND]
    # TUF says full image, the signed header says delta
    full_meta = ImageMeta(**{**meta.__dict__, "kind": ImageKind.ENVELOPE, "base_digest": None})
    r = check(full_meta, node(), NOW, **ok)
    assert reasons(r) == [Reason.METADATA_MISMATCH] and "payload kind delta" in r[0].detail


def test_zigbee_image(key):
    ota = otafile.build(0x1037, 0x0102, 0x00000105, b"\xaa" * 200).to_bytes()
    signed = envelope.sign_zigbee_ota(ota, key)
    cls = zigbee_hw_class(0x1037, 0x0102)
    meta = ImageMeta(name="zb.ota", digest=hashlib.sha256(signed).hexdigest(),
                     length=len(signed), kind="zigbee-ota", container="zigbee-ota",
                     hw_classes=(cls,), firmware_version=0x105, security_counter=0x105,
                     manufacturer_code=0x1037, image_type=0x0102, file_version=0x105)
    zb_node = NodeFacts(hw_class="ZIGBEE:1037:0102", running_version=0x104,
                        security_counter=0x104, transport="zigbee")
    ok = dict(metadata_expiry=LATER, image=signed, vendor_keys=[key.public_key()])
    assert check(meta, zb_node, NOW, **ok) == []
    assert reasons(check(meta, node(), NOW, **ok)) == [Reason.HARDWARE_MISMATCH,
                                                       Reason.WRONG_KIND]
    # an unsigned OTA file: fail closed
    unsigned = ImageMeta(**{**meta.__dict__, "digest": hashlib.sha256(ota).hexdigest(),
                            "length": len(ota)})
    r = check(unsigned, zb_node, NOW, metadata_expiry=LATER, image=ota,
              vendor_keys=[key.public_key()])
    assert reasons(r) == [Reason.BAD_SIGNATURE]
    # a newer node: rollback by file version
    r = check(meta, NodeFacts(cls, 0x200, 0x200, transport="zigbee"), NOW, **ok)
    assert reasons(r) == [Reason.SECURITY_COUNTER_ROLLBACK]


def test_times_must_be_aware(key):
    data, meta = full_image(key)
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        check(meta, node(), NOW.replace(tzinfo=None), metadata_expiry=LATER)


def test_hw_class_normalisation():
    assert normalize_hw_class(HW.upper()) == HW
    assert normalize_hw_class("urn:uuid:" + HW) == HW
    assert normalize_hw_class("Zigbee:1037:0102") == "zigbee:1037:0102"
    for bad in ("zigbee:1037", "zigbee:10370:1", "not-a-uuid", str(uuid.UUID(int=0))):
        with pytest.raises(InvalidArgument):
            normalize_hw_class(bad)


def test_custom_metadata_round_trip_and_errors(key):
    _, meta = full_image(key)
    meta = ImageMeta(**{**meta.__dict__, "extra": {"notes": "hello"}})
    custom = meta.custom()
    assert custom["notes"] == "hello" and custom["kind"] == "envelope"
    again = ImageMeta.from_custom(meta.name, custom, digest=meta.digest, length=meta.length)
    assert again == meta and again.extra == {"notes": "hello"}
    for broken, message in [
        (None, "no custom metadata"),
        ({**custom, "kind": "exe"}, "kind 'exe'"),
        ({k: v for k, v in custom.items() if k != "security_counter"}, "lacks security_counter"),
        ({**custom, "security_counter": -1}, "security_counter must be"),
        ({**custom, "security_counter": True}, "security_counter must be"),
        ({**custom, "hw_classes": []}, "at least one"),
        ({**custom, "hw_classes": HW}, "must be a list"),
        ({**custom, "kind": "delta"}, "base_digest"),
        ({**custom, "base_digest": "ab" * 32}, "only for deltas"),
        ({**custom, "manufacturer_code": 1}, "only for Zigbee"),
        ({**custom, "container": "zigbee-ota"}, "needs container 'envelope'"),
    ]:
        with pytest.raises(BadTargetMetadata, match=message):
            ImageMeta.from_custom("t", broken, digest=meta.digest, length=meta.length)


@settings(max_examples=60, derandomize=True)
@given(st.dictionaries(st.sampled_from(["kind", "container", "hw_classes", "firmware_version",
                                        "security_counter", "base_digest", "manufacturer_code",
                                        "image_type", "file_version", "x"]),
                       st.one_of(st.none(), st.integers(-2, 2**33), st.text(max_size=70),
                                 st.lists(st.text(max_size=40), max_size=3), st.booleans())))
def test_arbitrary_custom_metadata_is_accepted_or_refused_cleanly(custom):
    try:
        meta = ImageMeta.from_custom("t", custom, digest="ab" * 32, length=1)
    except BadTargetMetadata as exc:
        assert str(exc).startswith("target 't': ")
    else:
        assert ImageMeta.from_custom("t", meta.custom(), digest="ab" * 32, length=1) == meta
