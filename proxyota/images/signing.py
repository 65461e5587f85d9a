"""Vendor signing keys and the two signature schemes nodes verify: Ed25519 and ECDSA P-256.

The vendor signs; the gateway and the nodes only verify, so the gateway code path loads
**public** keys only (:func:`load_public_key` refuses a private key). Key material is
never printed or put in an error message; a private key file is written with mode 0600.

Signatures have one fixed size, 64 bytes, for both algorithms:

* Ed25519 (RFC 8032, PureEdDSA over the message): the standard 64-byte ``R || S``.
* ECDSA P-256 with SHA-256 (FIPS 186-5): ``r || s``, each a 32-byte **big-endian**
  integer (the IEEE P1363 / COSE ES256 / JWS encoding), not DER. Small crypto libraries
  (micro-ecc, tinycrypt, mbedTLS ``mbedtls_ecdsa_verify`` on raw ``r``/``s``) take this
  form directly. Signing is deterministic (RFC 6979), so builds are reproducible.

The key id is the first 8 bytes of SHA-256 of the raw public key: the 32-byte Ed25519
key, or the 65-byte uncompressed SEC1 point ``04 || X || Y`` for P-256. A node holding
several vendor keys picks the one whose id matches.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Union

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from proxyota.fsutil import atomic_write
from proxyota.errors import InvalidArgument, ProxyotaError

PrivateKey = Union[ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey]
PublicKey = Union[ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey]

SIGNATURE_SIZE = 64  # both algorithms: Ed25519 R||S, ECDSA P-256 r||s
KEY_ID_SIZE = 8
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

PRIVATE_KEY_FILE = "signing.pem"
PUBLIC_KEY_FILE = "signing.pub.pem"


class SignatureAlgorithm(enum.IntEnum):
    """Signature algorithm ids as carried in the envelope and the Zigbee sub-element."""

    ED25519 = 1
    ECDSA_P256_SHA256 = 2

    @property
    def label(self) -> str:
        return {1: "ed25519", 2: "ecdsa-p256"}[self.value]

    @classmethod
    def from_label(cls, label: str) -> SignatureAlgorithm:
        for alg in cls:
            if alg.label == label:
                return alg
        raise InvalidArgument(
            f"unknown signature algorithm {label!r}; expected one of "
            + ", ".join(a.label for a in cls)
        )


class VerificationError(ProxyotaError):
    """Well-formed bytes that must not be trusted (wrong key, altered content, bad signature)."""


class UnknownKeyError(VerificationError):
    """No given public key has the key id (or the algorithm) the signed object names."""


class BadSignatureError(VerificationError):
    """The signature does not verify over the signed bytes with the named key."""


# --------------------------------------------------------------------------- keys


def _check_private(key: object) -> PrivateKey:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise InvalidArgument(f"ECDSA keys must be on P-256, not {key.curve.name}")
        return key
    raise InvalidArgument(f"unsupported private key type {type(key).__name__}")


def _check_public(key: object) -> PublicKey:
    if isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey)):
        raise InvalidArgument("a private key was given where only a public key belongs")
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise InvalidArgument(f"ECDSA keys must be on P-256, not {key.curve.name}")
        return key
    raise InvalidArgument(f"unsupported public key type {type(key).__name__}")


def generate_key(algorithm: SignatureAlgorithm = SignatureAlgorithm.ED25519) -> PrivateKey:
    """A fresh private key for ``algorithm``."""
    if algorithm == SignatureAlgorithm.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == SignatureAlgorithm.ECDSA_P256_SHA256:
        return ec.generate_private_key(ec.SECP256R1())
    raise InvalidArgument(f"unknown signature algorithm {algorithm!r}")


def algorithm_of(key: PrivateKey | PublicKey) -> SignatureAlgorithm:
    """The signature algorithm a (private or public) key is used with."""
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return SignatureAlgorithm.ED25519
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if not isinstance(key.curve, ec.SECP256R1):
            raise InvalidArgument(f"ECDSA keys must be on P-256, not {key.curve.name}")
        return SignatureAlgorithm.ECDSA_P256_SHA256
    raise InvalidArgument(f"unsupported key type {type(key).__name__}")


def raw_public_key(key: PrivateKey | PublicKey) -> bytes:
    """Ed25519: the 32-byte key; P-256: the 65-byte uncompressed point ``04 || X || Y``."""
    if isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey)):
        key = key.public_key()
    key = _check_public(key)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def key_id(key: PrivateKey | PublicKey) -> bytes:
    """First 8 bytes of SHA-256 of :func:`raw_public_key`."""
    return hashlib.sha256(raw_public_key(key)).digest()[:KEY_ID_SIZE]


def public_key_from_raw(algorithm: SignatureAlgorithm, raw: bytes) -> PublicKey:
    """Rebuild a public key from its raw form (as a node stores it)."""
    try:
        if algorithm == SignatureAlgorithm.ED25519:
            return ed25519.Ed25519PublicKey.from_public_bytes(raw)
        if algorithm == SignatureAlgorithm.ECDSA_P256_SHA256:
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError as exc:
        raise InvalidArgument(f"not a valid raw {algorithm.name} public key: {exc}") from None
    raise InvalidArgument(f"unknown signature algorithm {algorithm!r}")


def private_key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (protect the file, not the bytes)."""
    return _check_private(key).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: PrivateKey | PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM of the public half of ``key``."""
    if isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey)):
        key = key.public_key()
    return _check_public(key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _read(source: Path | str | bytes, what: str) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), what
    path = Path(source)
    return path.read_bytes(), str(path)


def load_private_key(source: Path | str | bytes) -> PrivateKey:
    """A private key from a PEM file (path) or PEM bytes. Vendor side only."""
    data, name = _read(source, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise InvalidArgument(f"{name}: encrypted private keys are not supported") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidArgument(f"{name}: not a PEM private key (Ed25519 or P-256)") from None
    return _check_private(key)


def load_public_key(source: Path | str | bytes) -> PublicKey:
    """A public key from a PEM file (path) or PEM bytes; a private key is refused."""
    data, name = _read(source, "public key")
    if b"PRIVATE KEY" in data:
        raise InvalidArgument(f"{name}: is a private key; give the public key (.pub.pem)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidArgument(f"{name}: not a PEM public key (Ed25519 or P-256)") from None
    return _check_public(key)


def _write_file(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    """Write atomically with ``mode`` (never wider); refuse to replace unless ``overwrite``."""
    if path.exists() and not overwrite:
        raise InvalidArgument(f"{path} exists; refusing to overwrite it")
    atomic_write(path, data, mode=mode)


def write_key_pair(
    out_dir: Path | str,
    key: PrivateKey,
    *,
    overwrite: bool = False,
    private_name: str = PRIVATE_KEY_FILE,
    public_name: str = PUBLIC_KEY_FILE,
) -> tuple[Path, Path]:
    """Write ``signing.pem`` (mode 0600) and ``signing.pub.pem`` (0644) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    priv, pub = out / private_name, out / public_name
    if not overwrite:
        for p in (priv, pub):
            if p.exists():
                raise InvalidArgument(f"{p} exists; refusing to overwrite it")
    _write_file(priv, private_key_pem(key), 0o600, overwrite)
    _write_file(pub, public_key_pem(key), 0o644, overwrite)
    return priv, pub


# --------------------------------------------------------------------------- sign / verify


def sign(private_key: PrivateKey, message: bytes) -> bytes:
    """The 64-byte signature of ``message`` (Ed25519 R||S, or ECDSA r||s big-endian)."""
    key = _check_private(private_key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    der = key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify_signature(public_key: PublicKey, message: bytes, signature: bytes) -> None:
    """Raise :class:`BadSignatureError` unless ``signature`` is valid for ``message``."""
    key = _check_public(public_key)
    if len(signature) != SIGNATURE_SIZE:
        raise BadSignatureError(
            f"signature is {len(signature)} bytes, expected {SIGNATURE_SIZE}"
        )
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
            return
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        if not (0 < r < P256_ORDER and 0 < s < P256_ORDER):
            raise BadSignatureError("ECDSA r or s out of range [1, n-1]")
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise BadSignatureError(
            f"{algorithm_of(key).label} signature does not verify with key "
            f"{key_id(key).hex()}"
        ) from None


def select_key(
    public_keys: PublicKey | Iterable[PublicKey],
    wanted_key_id: bytes,
    algorithm: SignatureAlgorithm,
) -> PublicKey:
    """The key among ``public_keys`` whose id and algorithm match, or :class:`UnknownKeyError`."""
    if isinstance(public_keys, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey)) or not (
        isinstance(public_keys, Iterable)
    ):
        public_keys = [public_keys]  # type: ignore[list-item]
    known = []
    for k in public_keys:  # type: ignore[union-attr]
        k = _check_public(k)
        kid = key_id(k)
        known.append(kid.hex())
        if kid == wanted_key_id:
            if algorithm_of(k) != algorithm:
                raise UnknownKeyError(
                    f"key {kid.hex()} is {algorithm_of(k).label}, "
                    f"but the signature is {algorithm.label}"
                )
            return k
    raise UnknownKeyError(
        f"signed with key id {wanted_key_id.hex()}, not among the given keys "
        f"({', '.join(known) or 'none'})"
    )
