"""The cloud side: create and maintain a TUF repository of firmware images on disk (publisher).

A repository directory holds::

    repo.json              expiry per role (days) and where the keys are
    metadata/              every signed version: N.root.json, N.targets.json,
                           N.snapshot.json, N.timestamp.json
    targets/               the images under consistent-snapshot names (<sha256>.<name>)
    staged.json            target changes added but not signed yet (absent: none)
    keys/                  private keys (mode 0600, directory 0700), <role>-<keyid>.pem;
                           ``--keys-dir`` puts them anywhere else

Only ``metadata/`` and ``targets/`` are published (:meth:`TufRepository.publish` copies
them to a directory any static HTTP host can serve: ``metadata/N.root.json``,
``N.targets.json``, ``N.snapshot.json``, ``timestamp.json``, ``targets/<sha256>.<name>``);
private keys stay with the publisher and never reach a gateway, which ships only
``1.root.json`` (or a later root) as its trust anchor.

Roles and keys: root, targets, snapshot and timestamp each get ``threshold`` Ed25519 keys
(securesystemslib ``CryptoSigner``) and need that many signatures. Instead of key files a
role's private keys can come from the environment: ``PROXYOTA_TUF_<ROLE>_KEY`` holding
one or more PEM private keys (concatenated). Signing uses every available key of the role
and fails with :class:`MissingKeyError` when fewer than the threshold are available.

Versions only go up: every change writes the next version of a role; changing targets
writes a new snapshot (with the targets file's length and SHA-256) and a new timestamp
(with the snapshot's). Expiry is ``now + expiry_days[role]`` at signing time.
:meth:`TufRepository.rotate_key` replaces a role's keys in a new root version signed by
the old root keys and the new ones, so a client holding the old root follows
``N+1.root.json``; the rotated role is then re-signed with the new keys.

Each target carries custom metadata (:class:`proxyota.images.policy.ImageMeta`): read from
the envelope header (hardware class, firmware version, security counter, delta base) or
from the Zigbee OTA header (manufacturer code, image type, file version).
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    TOP_LEVEL_ROLE_NAMES,
    Metadata,
    MetaFile,
    Role,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from proxyota.fsutil import atomic_write
from proxyota.errors import DecodeError, InvalidArgument, ProxyotaError
from proxyota.images import envelope
from proxyota.images.policy import (
    CORE_FIELDS,
    BadTargetMetadata,
    Container,
    ImageKind,
    ImageMeta,
    normalize_hw_class,
    zigbee_hw_class,
)

ROLES = ("root", "targets", "snapshot", "timestamp")
DEFAULT_EXPIRY_DAYS: dict[str, float] = {"root": 365, "targets": 90, "snapshot": 7, "timestamp": 1}
MAX_THRESHOLD = 16
REPO_FORMAT = 1
ENV_KEY = "PROXYOTA_TUF_{role}_KEY"
_PEM = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----",
                  re.DOTALL)
_VERSIONED = re.compile(r"^([1-9][0-9]*)\.(root|targets|snapshot|timestamp)\.json$")
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._+-]*"
_TARGET_NAME = re.compile(rf"^{_SEGMENT}(/{_SEGMENT})*$")
_SERIALIZER = JSONSerializer(compact=False)

assert set(ROLES) == set(TOP_LEVEL_ROLE_NAMES)


class RepoError(ProxyotaError):
    """The repository directory is missing, inconsistent, or the operation is not possible."""


class MissingKeyError(RepoError):
    """Fewer private keys are available for a role than its threshold."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def env_var(role: str) -> str:
    return ENV_KEY.format(role=role.upper())


# --------------------------------------------------------------------------- small helpers


def _write_atomic(path: Path, data: bytes, mode: int = 0o644, *, exclusive: bool = False) -> None:
    """Crash-safe write (see :mod:`proxyota.fsutil`); ``exclusive`` refuses an existing path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if exclusive and path.exists():
        raise RepoError(f"{path} already exists; refusing to overwrite a published version")
    try:
        atomic_write(path, data, mode=mode, exclusive=exclusive)
    except FileExistsError:
        raise RepoError(f"{path} already exists; refusing to overwrite a published version") from None


def check_target_name(name: str) -> str:
    """A target path: ``/``-separated segments of letters, digits and ``._+-`` (no ``..``)."""
    if not isinstance(name, str) or not _TARGET_NAME.match(name) or ".." in name.split("/"):
        raise InvalidArgument(
            f"target name {name!r}: use '/'-separated segments of letters, digits and ._+- "
            "(each starting with a letter or digit)"
        )
    if len(name) > 200:
        raise InvalidArgument(f"target name is {len(name)} characters, at most 200")
    return name


def hashed_target_path(name: str, sha256_hex: str) -> str:
    """The consistent-snapshot file name of a target: ``<dir>/<sha256>.<basename>``."""
    dirname, sep, basename = name.rpartition("/")
    return f"{dirname}{sep}{sha256_hex}.{basename}"


def parse_role_numbers(items: Iterable[str], what: str, *, integer: bool) -> dict[str, float]:
    """``["targets=2", "timestamp=0.5"]`` -> ``{"targets": 2, "timestamp": 0.5}``."""
    result: dict[str, float] = {}
    for item in items:
        role, sep, value = item.partition("=")
        role = role.strip().lower()
        if not sep or role not in ROLES:
            raise InvalidArgument(f"{what} {item!r}: expected ROLE=VALUE with ROLE one of "
                                  f"{', '.join(ROLES)}")
        try:
            number: float = int(value) if integer else float(value)
        except ValueError:
            raise InvalidArgument(f"{what} {item!r}: {value!r} is not a number") from None
        result[role] = number
    return result


def _signer_from_pem(pem: bytes, origin: str) -> CryptoSigner:
    try:
        private = load_pem_private_key(pem, password=None)
    except TypeError:
        raise RepoError(f"{origin}: encrypted private keys are not supported") from None
    except Exception as exc:  # cryptography raises several types here
        raise RepoError(f"{origin}: not a PEM private key ({type(exc).__name__})") from None
    try:
        return CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))  # type: ignore[arg-type]
    except Exception as exc:
        raise RepoError(f"{origin}: unsupported key type ({exc})") from None


def parse_custom_items(items: Iterable[str]) -> dict[str, Any]:
    """``["notes=hello", "security_counter=5", 'hw_classes=["..."]']``: JSON values, else text."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidArgument(f"custom metadata {item!r}: expected KEY=VALUE")
        try:
            result[key] = json.loads(value)
        except ValueError:
            result[key] = value
    return result


# --------------------------------------------------------------------------- the repository


class TufRepository:
    """A TUF repository directory (see the module docstring). Open with ``TufRepository(path)``.

    ``clock`` gives the signing time (UTC datetime); ``environ`` is where
    ``PROXYOTA_TUF_<ROLE>_KEY`` variables are looked up (default ``os.environ``).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], datetime] = utcnow,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self.environ = os.environ if environ is None else environ
        config_path = self.path / "repo.json"
        try:
            config = json.loads(config_path.read_text("utf-8"))
        except FileNotFoundError:
            raise RepoError(f"{self.path} is not a proxyota TUF repository (no repo.json); "
                            "create one with 'proxyota repo init'") from None
        except ValueError as exc:
            raise RepoError(f"{config_path}: not valid JSON ({exc})") from None
        if not isinstance(config, dict) or config.get("format") != REPO_FORMAT:
            raise RepoError(f"{config_path}: unknown repository format")
        expiry = config.get("expiry_days", {})
        self.expiry_days = {r: float(expiry.get(r, DEFAULT_EXPIRY_DAYS[r])) for r in ROLES}
        keys_dir = Path(config.get("keys_dir", "keys"))
        self.keys_dir = keys_dir if keys_dir.is_absolute() else self.path / keys_dir
        self.metadata_dir = self.path / "metadata"
        self.targets_dir = self.path / "targets"
        self.staged_path = self.path / "staged.json"
        if not self.metadata_dir.is_dir() or self.version("root") == 0:
            raise RepoError(f"{self.path}: no signed root metadata in {self.metadata_dir}")

    # ------------------------------------------------------------------ creation

    @classmethod
    def init(
        cls,
        path: Path | str,
        *,
        thresholds: Mapping[str, int] | None = None,
        expiry_days: Mapping[str, float] | None = None,
        keys_dir: Path | str | None = None,
        clock: Callable[[], datetime] = utcnow,
        environ: Mapping[str, str] | None = None,
    ) -> TufRepository:
        """Create a repository: role keys, then version 1 of root, targets, snapshot, timestamp.

        A role whose ``PROXYOTA_TUF_<ROLE>_KEY`` variable is set uses those keys (at least
        its threshold of them); otherwise ``threshold`` fresh Ed25519 keys are written to
        the keys directory (0600).
        """
        root_path = Path(path)
        environ = os.environ if environ is None else environ
        thresholds = dict(thresholds or {})
        expiry = dict(DEFAULT_EXPIRY_DAYS)
        for role, days in (expiry_days or {}).items():
            if role not in ROLES:
                raise InvalidArgument(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
            if not days > 0:
                raise InvalidArgument(f"expiry of {role} must be > 0 days, got {days}")
            expiry[role] = float(days)
        for role, n in thresholds.items():
            if role not in ROLES:
                raise InvalidArgument(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_THRESHOLD:
                raise InvalidArgument(f"threshold of {role} must be 1..{MAX_THRESHOLD}, got {n!r}")
        if (root_path / "repo.json").exists():
            raise RepoError(f"{root_path} already holds a repository (repo.json exists)")
        if root_path.exists() and any(root_path.iterdir()):
            raise RepoError(f"{root_path} exists and is not empty; give a new directory")
        keys_path = Path(keys_dir) if keys_dir is not None else root_path / "keys"

        # every key first (env keys parsed, new ones generated), before anything is written
        role_signers: dict[str, list[CryptoSigner]] = {}
        generated: list[tuple[str, CryptoSigner]] = []
        for role in ROLES:
            threshold = thresholds.get(role, 1)
            env_pem = environ.get(env_var(role))
            if env_pem:
                signers = _signers_from_env(env_pem.encode(), env_var(role))
                if len(signers) < threshold:
                    raise MissingKeyError(
                        f"{env_var(role)} holds {len(signers)} key(s); the {role} threshold "
                        f"is {threshold}")
            else:
                signers = [CryptoSigner.generate_ed25519() for _ in range(threshold)]
                generated.extend((role, s) for s in signers)
            role_signers[role] = signers

        root_path.mkdir(parents=True, exist_ok=True)
        (root_path / "metadata").mkdir()
        (root_path / "targets").mkdir()
        for role, signer in generated:
            _write_key_file(keys_path, role, signer)
        config = {
            "format": REPO_FORMAT,
            "expiry_days": expiry,
            "keys_dir": str(keys_path) if keys_dir is not None else "keys",
        }

        now = clock()
        root = Root(expires=now + timedelta(days=expiry["root"]), consistent_snapshot=True)
        for role in ROLES:
            root.roles[role] = Role([], thresholds.get(role, 1))
            for signer in role_signers[role]:
                root.add_key(signer.public_key, role)
        md = Metadata(root)
        for signer in role_signers["root"]:
            md.sign(signer, append=True)
        root.verify_delegate(Root.type, md.signed_bytes, md.signatures)
        _write_atomic(root_path / "metadata" / "1.root.json", md.to_bytes(_SERIALIZER),
                      exclusive=True)
        _write_atomic(root_path / "repo.json",
                      json.dumps(config, indent=2, sort_keys=True).encode() + b"\n")
        repo = cls(root_path, clock=clock, environ=environ)
        repo._sign_roles({"targets"}, include_staged=False, initial=True)
        return repo

    # ------------------------------------------------------------------ reading state

    def version(self, role: str) -> int:
        """The newest signed version of ``role`` (0 if none)."""
        best = 0
        for p in self.metadata_dir.iterdir():
            m = _VERSIONED.match(p.name)
            if m and m.group(2) == role:
                best = max(best, int(m.group(1)))
        return best

    def metadata_bytes(self, role: str, version: int | None = None) -> bytes:
        version = self.version(role) if version is None else version
        try:
            return (self.metadata_dir / f"{version}.{role}.json").read_bytes()
        except FileNotFoundError:
            raise RepoError(f"{role} version {version} does not exist in {self.metadata_dir}") from None

    def load(self, role: str, version: int | None = None) -> Metadata[Any]:
        return Metadata.from_bytes(self.metadata_bytes(role, version))

    def root(self) -> Root:
        return self.load("root").signed  # type: ignore[no-any-return]

    def trusted_root(self) -> bytes:
        """The newest root metadata, the trust anchor a gateway's config ships."""
        return self.metadata_bytes("root")

    def targets(self) -> dict[str, TargetFile]:
        """The signed targets (not the staged changes)."""
        return dict(self.load("targets").signed.targets)

    def staged(self) -> dict[str, dict[str, Any]] | None:
        """The target map with unsigned changes, or None when nothing is staged."""
        try:
            doc = json.loads(self.staged_path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise RepoError(f"{self.staged_path}: not valid JSON ({exc})") from None
        targets = doc.get("targets") if isinstance(doc, dict) else None
        if not isinstance(targets, dict):
            raise RepoError(f"{self.staged_path}: no 'targets' object")
        return targets

    def _signed_target_map(self) -> dict[str, dict[str, Any]]:
        return {name: tf.to_dict() for name, tf in self.targets().items()}

    def pending_changes(self) -> list[str]:
        """Names of targets added, replaced or removed since the last signed targets."""
        staged = self.staged()
        if staged is None:
            return []
        signed = self._signed_target_map()
        return sorted(n for n in set(staged) | set(signed) if staged.get(n) != signed.get(n))

    def status(self) -> dict[str, Any]:
        """Versions, expiry, thresholds, key availability, targets and pending changes."""
        root = self.root()
        roles = {}
        for role in ROLES:
            md = self.load(role)
            keyids = root.roles[role].keyids
            available = {s.public_key.keyid for s in self._available_signers(role)}
            roles[role] = {
                "version": md.signed.version,
                "expires": md.signed.expires.isoformat(),
                "expired": md.signed.is_expired(self.clock()),
                "threshold": root.roles[role].threshold,
                "keyids": list(keyids),
                "keys_available": sum(1 for k in keyids if k in available),
            }
        return {
            "path": str(self.path),
            "consistent_snapshot": bool(root.consistent_snapshot),
            "roles": roles,
            "targets": {n: {"length": t.length, "sha256": t.hashes.get("sha256"),
                            "custom": t.custom} for n, t in sorted(self.targets().items())},
            "pending": self.pending_changes(),
        }

    # ------------------------------------------------------------------ keys

    def _key_files(self) -> Iterator[tuple[Path, str]]:
        if not self.keys_dir.is_dir():
            return
        for p in sorted(self.keys_dir.glob("*.pem")):
            role, _, rest = p.stem.partition("-")
            if role in ROLES and rest:
                yield p, rest

    def _available_signers(self, role: str, root: Root | None = None) -> list[CryptoSigner]:
        """Every private key we can find whose key id ``root`` lists for ``role``."""
        root = root or self.root()
        wanted = list(root.roles[role].keyids)
        found: dict[str, CryptoSigner] = {}
        for path, keyid in self._key_files():
            if keyid in wanted and keyid not in found:
                signer = _signer_from_pem(path.read_bytes(), str(path))
                if signer.public_key.keyid == keyid:
                    found[keyid] = signer
        for r in ROLES:
            pem = self.environ.get(env_var(r))
            if not pem:
                continue
            for signer in _signers_from_env(pem.encode(), env_var(r)):
                kid = signer.public_key.keyid
                if kid in wanted and kid not in found:
                    found[kid] = signer
        return [found[k] for k in wanted if k in found]

    def _signers(self, role: str, delegator: Root) -> list[CryptoSigner]:
        signers = self._available_signers(role, delegator)
        threshold = delegator.roles[role].threshold
        if len(signers) < threshold:
            raise MissingKeyError(
                f"{role} needs {threshold} signature(s) but only {len(signers)} of its "
                f"{len(delegator.roles[role].keyids)} key(s) are available (key files in "
                f"{self.keys_dir}, or PEM keys in {env_var(role)})"
            )
        return signers

    # ------------------------------------------------------------------ targets

    def add_target(
        self,
        file: Path | str | bytes,
        name: str,
        *,
        custom: Mapping[str, Any] | None = None,
        hw_classes: Iterable[str] = (),
        kind: str | None = None,
        base_digest: str | None = None,
    ) -> ImageMeta:
        """Stage an image (an envelope or a Zigbee OTA file) as target ``name``.

        The custom metadata is read from the file's header; ``custom`` adds other keys or
        (for Zigbee files) sets the hardware classes / security counter. Values that
        contradict a signed header are refused. The change is published by :meth:`sign`.
        """
        check_target_name(name)
        data = bytes(file) if isinstance(file, (bytes, bytearray, memoryview)) else Path(
            file).read_bytes()
        origin = "the data" if isinstance(file, (bytes, bytearray, memoryview)) else str(file)
        meta = describe_image(data, name, origin=origin, custom=custom or {},
                              hw_classes=hw_classes, kind=kind, base_digest=base_digest)
        stored = self.targets_dir / hashed_target_path(name, meta.digest)
        if not (stored.is_file() and hashlib.sha256(stored.read_bytes()).hexdigest() == meta.digest):
            _write_atomic(stored, data)
        target = TargetFile(meta.length, {"sha256": meta.digest}, name,
                            {"custom": meta.custom()})
        with self._locked():
            staged = self.staged()
            if staged is None:
                staged = self._signed_target_map()
            staged[name] = target.to_dict()
            self._write_staged(staged)
        return meta

    def remove_target(self, name: str) -> bool:
        """Stage the removal of target ``name``; returns whether it existed."""
        with self._locked():
            staged = self.staged()
            if staged is None:
                staged = self._signed_target_map()
            existed = staged.pop(name, None) is not None
            if existed:
                self._write_staged(staged)
            return existed

    def _write_staged(self, staged: dict[str, dict[str, Any]]) -> None:
        doc = {"format": REPO_FORMAT, "targets": staged}
        _write_atomic(self.staged_path, json.dumps(doc, indent=1, sort_keys=True).encode())

    # ------------------------------------------------------------------ signing

    def sign(self, roles: Iterable[str] = ()) -> dict[str, int]:
        """Bump and sign what changed: staged targets, then snapshot and timestamp.

        ``roles`` forces new versions of those roles too (e.g. ``["timestamp"]`` to extend
        its expiry, ``["root"]`` to re-sign root). Returns ``{role: new version}``; empty
        when nothing changed.
        """
        wanted = set(roles)
        unknown = wanted - set(ROLES)
        if unknown:
            raise InvalidArgument(f"unknown role(s) {sorted(unknown)} (roles: {', '.join(ROLES)})")
        with self._locked():
            return self._sign_roles(wanted, include_staged=True)

    def _sign_roles(self, forced: set[str], *, include_staged: bool,
                    initial: bool = False) -> dict[str, int]:
        now = self.clock()
        written: dict[str, int] = {}
        root = self.root()
        if "root" in forced:
            new_root = copy.deepcopy(root)
            new_root.version = root.version + 1
            new_root.expires = now + timedelta(days=self.expiry_days["root"])
            signers = self._signers("root", root)
            self._write_root(new_root, [signers])
            written["root"] = new_root.version
            root = new_root

        staged = self.staged() if include_staged else None
        targets_changed = staged is not None and staged != self._signed_target_map()
        if initial or targets_changed or "targets" in forced:
            signers = self._signers("targets", root)
            if initial:
                targets = Targets(version=1)
            else:
                targets = self.load("targets").signed
                targets.version += 1
            if targets_changed and staged is not None:
                try:
                    targets.targets = {n: TargetFile.from_dict(copy.deepcopy(d), n)
                                       for n, d in staged.items()}
                except (KeyError, ValueError, TypeError) as exc:
                    raise RepoError(f"{self.staged_path}: malformed target ({exc})") from None
            targets.expires = now + timedelta(days=self.expiry_days["targets"])
            written["targets"] = self._write_signed(targets, root, signers)
        if written.get("targets") or "snapshot" in forced:
            signers = self._signers("snapshot", root)
            tv = self.version("targets")
            snapshot = Snapshot(version=1) if initial else self.load("snapshot").signed
            if not initial:
                snapshot.version += 1
            snapshot.meta["targets.json"] = MetaFile.from_data(
                tv, self.metadata_bytes("targets", tv), ["sha256"])
            snapshot.expires = now + timedelta(days=self.expiry_days["snapshot"])
            written["snapshot"] = self._write_signed(snapshot, root, signers)
        if written.get("snapshot") or "timestamp" in forced:
            signers = self._signers("timestamp", root)
            sv = self.version("snapshot")
            timestamp = Timestamp(version=1) if initial else self.load("timestamp").signed
            if not initial:
                timestamp.version += 1
            timestamp.snapshot_meta = MetaFile.from_data(
                sv, self.metadata_bytes("snapshot", sv), ["sha256"])
            timestamp.expires = now + timedelta(days=self.expiry_days["timestamp"])
            written["timestamp"] = self._write_signed(timestamp, root, signers)
        if staged is not None:  # signed now, or identical to what is signed
            self.staged_path.unlink(missing_ok=True)
        return written

    def _write_signed(self, signed: Signed, root: Root, signers: list[CryptoSigner]) -> int:
        md = Metadata(signed)
        for signer in signers:
            md.sign(signer, append=True)
        try:
            root.verify_delegate(signed.type, md.signed_bytes, md.signatures)
        except UnsignedMetadataError as exc:
            raise MissingKeyError(f"{signed.type} v{signed.version}: {exc}") from None
        _write_atomic(self.metadata_dir / f"{signed.version}.{signed.type}.json",
                      md.to_bytes(_SERIALIZER), exclusive=True)
        return signed.version

    def _write_root(self, new_root: Root, signer_sets: list[list[CryptoSigner]],
                    verifiers: Iterable[Root] = ()) -> None:
        md = Metadata(new_root)
        seen = set()
        for signers in signer_sets:
            for signer in signers:
                if signer.public_key.keyid not in seen:
                    seen.add(signer.public_key.keyid)
                    md.sign(signer, append=True)
        try:
            for verifier in (*verifiers, new_root):
                verifier.verify_delegate(Root.type, md.signed_bytes, md.signatures)
        except UnsignedMetadataError as exc:
            raise MissingKeyError(f"root v{new_root.version}: {exc}") from None
        _write_atomic(self.metadata_dir / f"{new_root.version}.root.json",
                      md.to_bytes(_SERIALIZER), exclusive=True)

    # ------------------------------------------------------------------ key rotation

    def rotate_key(self, role: str, *, new_keys: Iterable[bytes] = ()) -> dict[str, int]:
        """Replace every key of ``role`` (same count and threshold) in a new root version.

        The new root is signed by the current root keys (a threshold of them) and, when
        ``role`` is root, by the new root keys too, so clients follow ``N+1.root.json``.
        ``new_keys`` are PEM private keys to use (default: fresh Ed25519 keys); either way
        they are written to the keys directory (0600) and the replaced key files move to
        ``<keys>/retired/``. A rotated
        targets / snapshot / timestamp role is re-signed with its new keys at once.
        """
        if role not in ROLES:
            raise InvalidArgument(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        with self._locked():
            old_root = self.root()
            old_ids = list(old_root.roles[role].keyids)
            threshold = old_root.roles[role].threshold
            new_signers = [_signer_from_pem(pem, f"new key {i + 1}")
                           for i, pem in enumerate(new_keys)]
            if not new_signers:
                new_signers = [CryptoSigner.generate_ed25519()
                               for _ in range(max(threshold, len(old_ids)))]
            if len(new_signers) < threshold:
                raise InvalidArgument(f"{role} has threshold {threshold}; give at least "
                                      f"{threshold} new keys")
            if any(s.public_key.keyid in old_ids for s in new_signers):
                raise InvalidArgument(f"a new key is already a {role} key")
            old_root_signers = self._signers("root", old_root)
            if role != "root":
                # the rotated role is re-signed right after; check its other inputs now
                for other in ("snapshot", "timestamp"):
                    if ROLES.index(other) > ROLES.index(role):
                        self._signers(other, old_root)

            new_root = copy.deepcopy(old_root)
            new_root.version = old_root.version + 1
            new_root.expires = self.clock() + timedelta(days=self.expiry_days["root"])
            for keyid in old_ids:
                new_root.revoke_key(keyid, role)
            for signer in new_signers:
                new_root.add_key(signer.public_key, role)
            for signer in new_signers:  # written first: a crash must not lose a key in use
                _write_key_file(self.keys_dir, role, signer)
            sets = [old_root_signers] + ([new_signers] if role == "root" else [])
            self._write_root(new_root, sets, verifiers=[old_root])
            written = {"root": new_root.version}
            self._retire_keys(role, old_ids, new_root)
            if role != "root":
                written.update(self._sign_roles({role}, include_staged=False))
            return written

    def _retire_keys(self, role: str, keyids: list[str], root: Root) -> None:
        still_used = {k for r in ROLES for k in root.roles[r].keyids}
        retired = self.keys_dir / "retired"
        for path, keyid in list(self._key_files()):
            if keyid in keyids and keyid not in still_used and path.name.startswith(f"{role}-"):
                retired.mkdir(mode=0o700, exist_ok=True)
                os.replace(path, retired / path.name)

    # ------------------------------------------------------------------ publishing

    def publish(self, out: Path | str, *, allow_pending: bool = False) -> list[Path]:
        """Copy ``metadata/`` and ``targets/`` into ``out`` for a static HTTP host.

        Consistent-snapshot files (``N.root.json``, ``N.targets.json``, ``N.snapshot.json``,
        ``targets/<sha256>.<name>``) never change once written, so they are copied first;
        ``timestamp.json`` (and ``root.json``, the newest root, for humans) last, so a
        client never sees a timestamp naming files that are not there yet. Refused while
        target changes are staged but unsigned, or when the current metadata has expired.
        Returns the files written.
        """
        out = Path(out)
        if not allow_pending and self.pending_changes():
            raise RepoError(f"unsigned changes are staged ({', '.join(self.pending_changes())}); "
                            "run 'proxyota repo sign' first")
        now = self.clock()
        expired = [self.load(role).signed for role in ROLES]
        expired = [s for s in expired if s.is_expired(now)]
        if expired:
            raise RepoError(
                "expired: " + ", ".join(f"{s.type} v{s.version} (at {s.expires.isoformat()})"
                                        for s in expired)
                + "; run 'proxyota repo sign " + " ".join(f"--role {s.type}" for s in expired)
                + "' first")
        target, keys = out.resolve(), self.keys_dir.resolve()
        if target == self.path.resolve() or target == keys or keys in target.parents or (
                target in keys.parents):
            raise InvalidArgument(
                f"refusing to publish into {out}: it is the repository itself or it contains "
                f"(or lies inside) the private keys directory {self.keys_dir}")
        written: list[Path] = []

        def copy_if_changed(src: Path, dst: Path) -> None:
            data = src.read_bytes()
            try:
                if dst.read_bytes() == data:
                    return
            except FileNotFoundError:
                pass
            _write_atomic(dst, data)
            written.append(dst)

        for src in sorted(self.targets_dir.rglob("*")):
            if src.is_file() and not src.name.startswith("."):
                copy_if_changed(src, out / "targets" / src.relative_to(self.targets_dir))
        for role in ("root", "targets", "snapshot"):
            for version in range(1, self.version(role) + 1):
                src = self.metadata_dir / f"{version}.{role}.json"
                if src.exists():
                    copy_if_changed(src, out / "metadata" / src.name)
        copy_if_changed(self.metadata_dir / f"{self.version('root')}.root.json",
                        out / "metadata" / "root.json")
        copy_if_changed(self.metadata_dir / f"{self.version('timestamp')}.timestamp.json",
                        out / "metadata" / "timestamp.json")
        return written

    # ------------------------------------------------------------------ locking

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


# --------------------------------------------------------------------------- keys on disk


def _signers_from_env(pem_blob: bytes, origin: str) -> list[CryptoSigner]:
    blocks = _PEM.findall(pem_blob)
    if not blocks:
        raise RepoError(f"{origin} is set but holds no PEM private key")
    return [_signer_from_pem(b, f"{origin} key {i + 1}") for i, b in enumerate(blocks)]


def _write_key_file(keys_dir: Path, role: str, signer: CryptoSigner) -> Path:
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(keys_dir, 0o700)
    path = keys_dir / f"{role}-{signer.public_key.keyid}.pem"
    _write_atomic(path, signer.private_bytes, 0o600, exclusive=True)
    return path


# --------------------------------------------------------------------------- image description


def describe_image(
    data: bytes,
    name: str,
    *,
    origin: str = "the file",
    custom: Mapping[str, Any] | None = None,
    hw_classes: Iterable[str] = (),
    kind: str | None = None,
    base_digest: str | None = None,
) -> ImageMeta:
    """The custom metadata of ``data``: from its envelope or Zigbee OTA header, plus ``custom``.

    Raises :class:`InvalidArgument` naming the conflict when a given value contradicts
    the header, or when ``data`` is neither an envelope nor a Zigbee OTA file.
    """
    custom = dict(custom or {})
    digest = hashlib.sha256(data).hexdigest()
    given_classes = [normalize_hw_class(c) for c in hw_classes]
    if "hw_classes" in custom:
        extra_classes = custom.pop("hw_classes")
        if isinstance(extra_classes, str):
            extra_classes = [extra_classes]
        if not isinstance(extra_classes, list):
            raise InvalidArgument("custom hw_classes must be a list of hardware class ids")
        given_classes += [normalize_hw_class(c) for c in extra_classes]
    if kind is None:
        kind = custom.pop("kind", None)
    elif "kind" in custom and custom.pop("kind") != kind:
        raise InvalidArgument("--kind and custom kind disagree")
    if base_digest is None:
        base_digest = custom.pop("base_digest", None)
    elif "base_digest" in custom and str(custom.pop("base_digest")).lower() != base_digest.lower():
        raise InvalidArgument("--base-digest and custom base_digest disagree")
    if base_digest is not None:
        base_digest = str(base_digest).strip().lower()
    if kind is not None:
        try:
            kind = ImageKind(kind).value
        except ValueError:
            raise InvalidArgument(
                f"kind {kind!r} is not one of {', '.join(k.value for k in ImageKind)}") from None
    custom.pop("container", None)

    def conflict(field_name: str, header_value: Any) -> None:
        if field_name in custom and custom[field_name] != header_value:
            raise InvalidArgument(
                f"{origin}: {field_name} is {header_value!r} in its signed header; "
                f"custom metadata says {custom[field_name]!r}")
        custom.pop(field_name, None)

    if data[:4] == envelope.MAGIC:
        try:
            env = envelope.parse(data)
        except DecodeError as exc:
            raise InvalidArgument(f"{origin}: {exc}") from None
        header_class = str(env.hw_class)
        for c in given_classes:
            if c != header_class:
                raise InvalidArgument(
                    f"{origin}: the envelope is for hardware class {header_class}, not {c}")
        conflict("firmware_version", env.firmware_version)
        conflict("security_counter", env.security_counter)
        for zb in ("manufacturer_code", "image_type", "file_version"):
            if zb in custom:
                raise InvalidArgument(f"{origin}: {zb} is only for Zigbee OTA files")
        header_kind = ImageKind.DELTA if env.is_delta else ImageKind.ENVELOPE
        if kind is not None and kind != header_kind.value:
            raise InvalidArgument(f"{origin}: the envelope header says {header_kind.value}, "
                                  f"not {kind}")
        header_base = env.base_digest.hex() if env.base_digest is not None else None
        if base_digest is not None and base_digest != header_base:
            raise InvalidArgument(
                f"{origin}: the envelope names base image {header_base}, not {base_digest}"
                if header_base else f"{origin}: a full-image envelope has no base digest")
        fields: dict[str, Any] = dict(
            kind=header_kind, container=Container.ENVELOPE, hw_classes=(header_class,),
            firmware_version=env.firmware_version, security_counter=env.security_counter,
            base_digest=header_base)
    elif data[:4] == envelope.ZIGBEE_OTA_MAGIC:
        from proxyota.zigbee import otafile

        try:
            ota = otafile.parse(data)
        except (DecodeError, InvalidArgument) as exc:
            raise InvalidArgument(f"{origin}: {exc}") from None
        conflict("manufacturer_code", ota.manufacturer_code)
        conflict("image_type", ota.image_type)
        conflict("file_version", ota.file_version)
        conflict("firmware_version", ota.file_version)
        if kind == ImageKind.ENVELOPE.value:
            raise InvalidArgument(f"{origin} is a Zigbee OTA file, not an envelope")
        if kind == ImageKind.DELTA.value and base_digest is None:
            raise InvalidArgument(f"{origin}: a delta needs --base-digest (SHA-256 of its base)")
        if kind != ImageKind.DELTA.value and base_digest is not None:
            raise InvalidArgument("--base-digest is only for --kind delta")
        fields = dict(
            kind=ImageKind.DELTA if kind == ImageKind.DELTA.value else ImageKind.ZIGBEE_OTA,
            container=Container.ZIGBEE_OTA,
            hw_classes=tuple(given_classes) or (
                zigbee_hw_class(ota.manufacturer_code, ota.image_type),),
            firmware_version=ota.file_version,
            security_counter=custom.pop("security_counter", ota.file_version),
            base_digest=base_digest, manufacturer_code=ota.manufacturer_code,
            image_type=ota.image_type, file_version=ota.file_version)
    else:
        raise InvalidArgument(
            f"{origin} is neither a proxyota image envelope (magic {envelope.MAGIC!r}) nor a "
            f"Zigbee OTA file (magic {envelope.ZIGBEE_OTA_MAGIC.hex()}); sign it first "
            "('proxyota image build')")
    leftover = set(custom) & set(CORE_FIELDS)
    if leftover:
        raise InvalidArgument(f"{origin}: custom {sorted(leftover)} cannot be set here")
    try:
        return ImageMeta(name=name, digest=digest, length=len(data), extra=custom, **fields)
    except BadTargetMetadata as exc:
        raise InvalidArgument(f"{origin}: {exc}") from None
