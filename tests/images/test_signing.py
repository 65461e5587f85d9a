"""Keys and signatures: RFC 8032 / RFC 6979 vectors, PEM files, key ids, refusals."""

from __future__ import annotations

import hashlib
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from proxyota.errors import InvalidArgument
from proxyota.images import signing
from proxyota.images.signing import BadSignatureError, SignatureAlgorithm, UnknownKeyError

# RFC 8032 section 7.1, TEST 1 and TEST 2 (secret key, public key, message, signature).
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]

# RFC 6979 appendix A.2.5: ECDSA P-256, SHA-256, deterministic k. r || s big-endian.
RFC6979_X = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
RFC6979_UX = "60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6"
RFC6979_UY = "7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299"
RFC6979 = [
    (
        b"sample",
        "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716"
        "f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8",
    ),
    (
        b"test",
        "f1abb023518351cd71d881567b1ea663ed3efcf6c5132b354f28d3b0b7d38367"
        "019f4113742a2b14bd25926b49c649155f267e60d3814b4c0cc84250e46f0083",
    ),
]


def rfc6979_key() -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(RFC6979_X, ec.SECP256R1())


@pytest.mark.parametrize("secret, public, message, signature", RFC8032)
def test_ed25519_rfc8032_vectors(secret, public, message, signature):
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    assert signing.raw_public_key(key).hex() == public
    sig = signing.sign(key, bytes.fromhex(message))
    assert sig.hex() == signature
    signing.verify_signature(key.public_key(), bytes.fromhex(message), sig)
    with pytest.raises(BadSignatureError):
        signing.verify_signature(key.public_key(), bytes.fromhex(message) + b"x", sig)


@pytest.mark.parametrize("message, signature", RFC6979)
def test_ecdsa_p256_rfc6979_vectors_raw_r_s(message, signature):
    key = rfc6979_key()
    assert signing.raw_public_key(key).hex() == "04" + RFC6979_UX + RFC6979_UY
    sig = signing.sign(key, message)
    assert len(sig) == 64
    assert sig.hex() == signature  # deterministic (RFC 6979), fixed r||s, not DER
    signing.verify_signature(key.public_key(), message, sig)
    # a verifier accepts the other valid s (n - s) too: no low-S rule
    s = int.from_bytes(sig[32:], "big")
    signing.verify_signature(
        key.public_key(), message, sig[:32] + (signing.P256_ORDER - s).to_bytes(32, "big")
    )


def test_ecdsa_rejects_out_of_range_and_wrong_length():
    pub = rfc6979_key().public_key()
    for bad in (bytes(64), b"\x00" * 32 + b"\x01" * 32,
                signing.P256_ORDER.to_bytes(32, "big") + b"\x01" * 32):
        with pytest.raises(BadSignatureError):
            signing.verify_signature(pub, b"sample", bad)
    with pytest.raises(BadSignatureError, match="63 bytes"):
        signing.verify_signature(pub, b"sample", bytes(63))


def test_key_id_is_sha256_prefix_of_raw_public_key():
    ed = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC8032[0][0]))
    assert signing.key_id(ed) == hashlib.sha256(bytes.fromhex(RFC8032[0][1])).digest()[:8]
    assert signing.key_id(ed).hex() == "21fe31dfa154a261"
    p = rfc6979_key()
    raw = bytes.fromhex("04" + RFC6979_UX + RFC6979_UY)
    assert signing.key_id(p) == hashlib.sha256(raw).digest()[:8]
    assert signing.key_id(p.public_key()) == signing.key_id(p)
    assert signing.public_key_from_raw(SignatureAlgorithm.ECDSA_P256_SHA256, raw).public_numbers() \
        == p.public_key().public_numbers()


@pytest.mark.parametrize("alg", list(SignatureAlgorithm))
def test_pem_round_trip_and_file_modes(tmp_path, alg):
    key = signing.generate_key(alg)
    priv, pub = signing.write_key_pair(tmp_path / "k", key)
    assert priv.name == "signing.pem" and pub.name == "signing.pub.pem"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    loaded = signing.load_private_key(priv)
    public = signing.load_public_key(pub)
    assert signing.algorithm_of(loaded) == alg == signing.algorithm_of(public)
    assert signing.key_id(loaded) == signing.key_id(key) == signing.key_id(public)
    sig = signing.sign(loaded, b"m")
    signing.verify_signature(public, b"m", sig)
    assert sorted((tmp_path / "k").iterdir()) == sorted([priv, pub])  # no temp files left
    with pytest.raises(InvalidArgument, match="refusing to overwrite"):
        signing.write_key_pair(tmp_path / "k", signing.generate_key(alg))
    assert signing.key_id(signing.load_private_key(priv)) == signing.key_id(key)
    signing.write_key_pair(tmp_path / "k", signing.generate_key(alg), overwrite=True)
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert signing.key_id(signing.load_private_key(priv)) != signing.key_id(key)


def test_public_key_loader_refuses_private_keys_and_garbage(tmp_path):
    key = signing.generate_key()
    pem = signing.private_key_pem(key)
    with pytest.raises(InvalidArgument, match="is a private key") as exc:
        signing.load_public_key(pem)
    assert pem.decode() not in str(exc.value)
    with pytest.raises(InvalidArgument, match="not a PEM public key"):
        signing.load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(InvalidArgument, match="not a PEM private key"):
        signing.load_private_key(b"garbage")
    with pytest.raises(InvalidArgument, match="P-256"):
        signing.algorithm_of(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(InvalidArgument, match="private key was given"):
        signing.verify_signature(key, b"m", bytes(64))  # type: ignore[arg-type]


def test_select_key_by_id_and_algorithm():
    a, b = signing.generate_key(), signing.generate_key(SignatureAlgorithm.ECDSA_P256_SHA256)
    keys = [a.public_key(), b.public_key()]
    p256 = SignatureAlgorithm.ECDSA_P256_SHA256
    assert signing.select_key(keys, signing.key_id(b), p256) is keys[1]
    assert signing.select_key(keys[0], signing.key_id(a), SignatureAlgorithm.ED25519) is keys[0]
    with pytest.raises(UnknownKeyError, match="not among"):
        signing.select_key(keys, b"\x00" * 8, SignatureAlgorithm.ED25519)
    with pytest.raises(UnknownKeyError, match="is ed25519"):
        signing.select_key(keys, signing.key_id(a), SignatureAlgorithm.ECDSA_P256_SHA256)
