"""``proxyota repo``: create and maintain the cloud TUF repository of firmware images.

Publisher side only: the role keys live in the repository's keys directory (or in
``PROXYOTA_TUF_<ROLE>_KEY`` environment variables) and never go to a gateway. Output is
one line per fact, or JSON with ``--json``; key material is never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from proxyota.images import tuf_repo
from proxyota.images.policy import ImageKind
from proxyota.images.tuf_repo import TufRepository


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "repo", help="TUF repository of firmware images (publisher side)",
        description="Create and maintain a TUF repository (python-tuf) of signed images.")
    sub = parser.add_subparsers(dest="repo_command", metavar="ACTION", required=True)

    init = sub.add_parser("init", help="create a repository: role keys and version 1 metadata")
    init.add_argument("dir", type=Path, metavar="DIR")
    init.add_argument("--threshold", action="append", default=[], metavar="ROLE=N",
                      help="signatures needed for ROLE (that many keys are made; default 1)")
    init.add_argument("--expiry", action="append", default=[], metavar="ROLE=DAYS",
                      help="metadata lifetime (defaults: root 365, targets 90, snapshot 7, "
                           "timestamp 1)")
    init.add_argument("--keys-dir", type=Path, metavar="PATH",
                      help="where private keys go (default DIR/keys); "
                           "PROXYOTA_TUF_<ROLE>_KEY (PEM) supplies a role's keys instead")
    init.add_argument("--json", action="store_true")
    init.set_defaults(func=_init)

    add = sub.add_parser("add", help="stage an image (envelope or Zigbee OTA file) as a target")
    add.add_argument("dir", type=Path, metavar="DIR")
    add.add_argument("file", type=Path, metavar="FILE")
    add.add_argument("--name", required=True, help="target path, e.g. lorawan/ls100-1.2.3.img")
    add.add_argument("--custom", action="append", default=[], metavar="KEY=VALUE",
                     help="extra custom metadata (VALUE parsed as JSON when it is JSON)")
    add.add_argument("--hw-class", action="append", default=[], metavar="ID",
                     help="hardware class (UUID or zigbee:MFR:TYPE); read from an envelope")
    add.add_argument("--kind", choices=[k.value for k in ImageKind],
                     help="default: from the file's header")
    add.add_argument("--base-digest", metavar="SHA256",
                     help="delta: SHA-256 (hex) of the base image (read from a delta envelope)")
    add.add_argument("--json", action="store_true")
    add.set_defaults(func=_add)

    remove = sub.add_parser("remove", help="stage the removal of a target")
    remove.add_argument("dir", type=Path, metavar="DIR")
    remove.add_argument("--name", required=True)
    remove.set_defaults(func=_remove)

    sign = sub.add_parser("sign", help="bump and sign what changed (targets, snapshot, timestamp)")
    sign.add_argument("dir", type=Path, metavar="DIR")
    sign.add_argument("--role", action="append", default=[], choices=tuf_repo.ROLES,
                      help="also re-sign ROLE with a new version (e.g. timestamp, to renew it)")
    sign.add_argument("--json", action="store_true")
    sign.set_defaults(func=_sign)

    publish = sub.add_parser("publish", help="write metadata/ and targets/ for a static host")
    publish.add_argument("dir", type=Path, metavar="DIR")
    publish.add_argument("out", type=Path, metavar="OUT")
    publish.add_argument("--json", action="store_true")
    publish.set_defaults(func=_publish)

    rotate = sub.add_parser("rotate-key", help="replace a role's keys in a new root version")
    rotate.add_argument("dir", type=Path, metavar="DIR")
    rotate.add_argument("role", choices=tuf_repo.ROLES)
    rotate.add_argument("--new-key", action="append", default=[], type=Path, metavar="PEM",
                        help="use this private key (repeatable; default: generate)")
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(func=_rotate)

    status = sub.add_parser("status", help="versions, expiry, keys, targets, pending changes")
    status.add_argument("dir", type=Path, metavar="DIR")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)


def _emit(args: argparse.Namespace, doc: dict, lines: list[str]) -> int:
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        for line in lines:
            print(line)
    return 0


def _init(args: argparse.Namespace) -> int:
    thresholds = {r: int(n) for r, n in tuf_repo.parse_role_numbers(
        args.threshold, "--threshold", integer=True).items()}
    expiry = tuf_repo.parse_role_numbers(args.expiry, "--expiry", integer=False)
    repo = TufRepository.init(args.dir, thresholds=thresholds, expiry_days=expiry,
                              keys_dir=args.keys_dir)
    status = repo.status()
    lines = [f"created TUF repository {repo.path} (consistent snapshots)",
             f"keys: {repo.keys_dir} (keep them off the gateways)"]
    for role, info in status["roles"].items():
        lines.append(f"{role}: v{info['version']}, threshold {info['threshold']}, "
                     f"expires {info['expires']}, keys {', '.join(info['keyids'])}")
    lines.append(f"trusted root for gateways: {repo.metadata_dir / '1.root.json'}")
    return _emit(args, status, lines)


def _add(args: argparse.Namespace) -> int:
    repo = TufRepository(args.dir)
    meta = repo.add_target(args.file, args.name,
                           custom=tuf_repo.parse_custom_items(args.custom),
                           hw_classes=args.hw_class, kind=args.kind,
                           base_digest=args.base_digest)
    doc = {"name": meta.name, "length": meta.length, "sha256": meta.digest,
           "custom": meta.custom()}
    lines = [f"staged {meta.name}: {meta.kind.value}, {meta.length} bytes, sha256 {meta.digest}",
             f"hardware classes: {', '.join(meta.hw_classes)}",
             f"firmware version {meta.firmware_version}, "
             f"security counter {meta.security_counter}",
             "run 'proxyota repo sign' to publish the change"]
    if meta.base_digest:
        lines.insert(2, f"delta against base {meta.base_digest}")
    return _emit(args, doc, lines)


def _remove(args: argparse.Namespace) -> int:
    repo = TufRepository(args.dir)
    if not repo.remove_target(args.name):
        print(f"proxyota: error: no target named {args.name!r}", file=sys.stderr)
        return 1
    print(f"staged removal of {args.name}; run 'proxyota repo sign' to publish it")
    return 0


def _sign(args: argparse.Namespace) -> int:
    repo = TufRepository(args.dir)
    written = repo.sign(args.role)
    lines = [f"{role}: v{version}" for role, version in written.items()] or [
        "nothing to sign: no staged changes (use --role to renew a role)"]
    return _emit(args, {"written": written}, lines)


def _publish(args: argparse.Namespace) -> int:
    repo = TufRepository(args.dir)
    files = repo.publish(args.out)
    lines = [f"published {repo.path} to {args.out}: {len(files)} file(s) written"]
    return _emit(args, {"written": [str(f) for f in files]}, lines)


def _rotate(args: argparse.Namespace) -> int:
    repo = TufRepository(args.dir)
    old = list(repo.root().roles[args.role].keyids)
    written = repo.rotate_key(args.role, new_keys=[p.read_bytes() for p in args.new_key])
    new = list(repo.root().roles[args.role].keyids)
    lines = [f"{args.role} keys {', '.join(old)} -> {', '.join(new)}"]
    lines += [f"{role}: v{version}" for role, version in written.items()]
    return _emit(args, {"written": written, "old_keyids": old, "new_keyids": new}, lines)


def _status(args: argparse.Namespace) -> int:
    repo = TufRepository(args.dir)
    status = repo.status()
    lines = []
    for role, info in status["roles"].items():
        flag = " EXPIRED" if info["expired"] else ""
        lines.append(f"{role}: v{info['version']}, expires {info['expires']}{flag}, "
                     f"{info['keys_available']}/{info['threshold']} keys available")
    for name, t in status["targets"].items():
        lines.append(f"target {name}: {t['length']} bytes, sha256 {t['sha256']}")
    if status["pending"]:
        lines.append(f"pending (unsigned): {', '.join(status['pending'])}")
    return _emit(args, status, lines)
