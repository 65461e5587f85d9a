"""``proxyota keys``: create and identify vendor signing keys (never prints key material)."""

from __future__ import annotations

import argparse
from pathlib import Path

from proxyota.images import signing


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keys", help="vendor signing keys (Ed25519 / ECDSA P-256)")
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    gen = sub.add_parser(
        "generate",
        help="create a key pair: DIR/signing.pem (mode 0600) and DIR/signing.pub.pem",
    )
    gen.add_argument("--out", required=True, type=Path, metavar="DIR")
    gen.add_argument(
        "--algorithm",
        choices=[a.label for a in signing.SignatureAlgorithm],
        default=signing.SignatureAlgorithm.ED25519.label,
        help="signature algorithm (default: ed25519)",
    )
    gen.add_argument("--force", action="store_true", help="overwrite existing key files")
    gen.set_defaults(func=_generate)

    ident = sub.add_parser("id", help="print the algorithm and key id of a PEM key file")
    ident.add_argument("key", type=Path, metavar="KEY.pem")
    ident.set_defaults(func=_id)


def _generate(args: argparse.Namespace) -> int:
    algorithm = signing.SignatureAlgorithm.from_label(args.algorithm)
    key = signing.generate_key(algorithm)
    priv, pub = signing.write_key_pair(args.out, key, overwrite=args.force)
    print(f"private key: {priv} (mode 0600; keep it with the vendor, never on a gateway)")
    print(f"public key:  {pub}")
    print(f"algorithm:   {algorithm.label}")
    print(f"key id:      {signing.key_id(key).hex()}")
    return 0


def _id(args: argparse.Namespace) -> int:
    data = args.key.read_bytes()
    if b"PRIVATE KEY" in data:
        key = signing.load_private_key(data)
    else:
        key = signing.load_public_key(data)
    print(f"algorithm: {signing.algorithm_of(key).label}")
    print(f"key id:    {signing.key_id(key).hex()}")
    return 0
