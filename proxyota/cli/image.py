"""``proxyota image``: build, verify and inspect signed image envelopes (scriptable)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from proxyota.errors import InvalidArgument, ProxyotaError
from proxyota.images import envelope, signing


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("image", help="signed firmware image envelopes")
    sub = parser.add_subparsers(dest="image_command", metavar="ACTION", required=True)

    build = sub.add_parser("build", help="wrap and sign a firmware payload")
    build.add_argument("--payload", required=True, type=Path, metavar="FILE",
                       help="firmware binary, or a delta patch with --base-*")
    build.add_argument("--hw-class", required=True, metavar="UUID",
                       help="hardware class id (UUID; see 'image class-id')")
    build.add_argument("--version", required=True, dest="firmware_version", metavar="N",
                       help="firmware version: u32 (42, 0x01020003) or MAJOR.MINOR.PATCH")
    build.add_argument("--security-counter", required=True, metavar="N",
                       help="anti-rollback counter (u32)")
    build.add_argument("--key", required=True, type=Path, metavar="signing.pem")
    build.add_argument("--out", required=True, type=Path, metavar="FILE.img")
    base = build.add_mutually_exclusive_group()
    base.add_argument("--base-digest", metavar="SHA256",
                      help="delta: SHA-256 (hex) of the base firmware the patch applies to")
    base.add_argument("--base-payload", type=Path, metavar="FILE",
                      help="delta: the base firmware binary (its SHA-256 is recorded)")
    build.set_defaults(func=_build)

    verify = sub.add_parser("verify", help="check an envelope's structure, digest and signature")
    verify.add_argument("--public-key", required=True, action="append", type=Path,
                        metavar="signing.pub.pem", help="vendor public key (repeatable)")
    verify.add_argument("--hw-class", metavar="UUID", help="also require this hardware class")
    verify.add_argument("--min-security-counter", metavar="N",
                        help="also require security_counter >= N")
    verify.add_argument("image", type=Path, metavar="FILE.img")
    verify.set_defaults(func=_verify)

    inspect = sub.add_parser("inspect", help="print the header fields (no signature check)")
    inspect.add_argument("image", type=Path, metavar="FILE.img")
    inspect.add_argument("--json", action="store_true", help="print a JSON object")
    inspect.set_defaults(func=_inspect)

    cid = sub.add_parser("class-id", help="derive a SUIT-style hardware class UUID")
    cid.add_argument("--vendor", required=True, metavar="DOMAIN", help="vendor domain name")
    cid.add_argument("--model", required=True, metavar="NAME", help="model / board name")
    cid.set_defaults(func=_class_id)


def _u32(text: str, name: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise InvalidArgument(f"{name} {text!r} is not an integer") from None
    if not 0 <= value <= envelope.U32_MAX:
        raise InvalidArgument(f"{name} must be 0..{envelope.U32_MAX}, got {value}")
    return value


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _build(args: argparse.Namespace) -> int:
    base_digest = None
    if args.base_digest is not None:
        try:
            base_digest = bytes.fromhex(args.base_digest)
        except ValueError:
            raise InvalidArgument(f"--base-digest {args.base_digest!r} is not hex") from None
    elif args.base_payload is not None:
        base_digest = hashlib.sha256(args.base_payload.read_bytes()).digest()
    key = signing.load_private_key(args.key)
    data = envelope.build(
        args.payload.read_bytes(),
        hw_class=envelope.parse_hw_class(args.hw_class),
        firmware_version=envelope.parse_version(args.firmware_version),
        security_counter=_u32(args.security_counter, "--security-counter"),
        private_key=key,
        base_digest=base_digest,
    )
    _write_atomically(args.out, data)
    env = envelope.parse(data)
    print(f"{args.out}: {len(data)} bytes, {env.payload_kind.name.lower()}, "
          f"version {envelope.version_to_semver(env.firmware_version)}, "
          f"security counter {env.security_counter}, key id {env.key_id.hex()}, "
          f"sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    keys = [signing.load_public_key(p) for p in args.public_key]
    want_class = envelope.parse_hw_class(args.hw_class) if args.hw_class else None
    min_counter = (_u32(args.min_security_counter, "--min-security-counter")
                   if args.min_security_counter is not None else None)
    data = args.image.read_bytes()
    try:
        env = envelope.verify(data, keys)
        if want_class is not None and env.hw_class != want_class:
            raise InvalidArgument(f"hardware class {env.hw_class}, expected {want_class}")
        if min_counter is not None and env.security_counter < min_counter:
            raise InvalidArgument(
                f"security counter {env.security_counter} < {min_counter} (rollback refused)")
    except ProxyotaError as exc:
        print(f"{args.image}: INVALID: {exc}", file=sys.stderr)
        return 1
    print(f"{args.image}: OK ({env.algorithm.label} key {env.key_id.hex()}, "
          f"hw class {env.hw_class}, version {envelope.version_to_semver(env.firmware_version)}, "
          f"security counter {env.security_counter}, {env.payload_kind.name.lower()})")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    env = envelope.parse(args.image.read_bytes())
    info = env.describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for name, value in info.items():
        print(f"{name.ljust(width)}  {value}")
    print("(signature not verified; use 'proxyota image verify')")
    return 0


def _class_id(args: argparse.Namespace) -> int:
    print(envelope.class_id(args.vendor, args.model))
    return 0
