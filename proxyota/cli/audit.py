"""``proxyota audit verify|head``: check the state store's hash-chained audit log.

``verify`` exits 0 when the chain is intact and 1 naming the first bad record. Give it the
anchor (``SEQ:HASH`` printed by ``head`` and kept somewhere else: a remote log, a ticket)
to also detect records removed from the end or a rewritten tail. The database is opened
read-only and never migrated.
"""

from __future__ import annotations

import argparse
import asyncio

from proxyota.store import AuditAnchor, SqliteStore


async def _verify(db: str, anchor: AuditAnchor | None) -> int:
    store = SqliteStore(db, read_only=True)
    await store.open()
    try:
        result = await store.audit_verify(anchor)
    finally:
        await store.close()
    for note in result.notes:
        print(f"warning: {note}")
    if result.ok:
        head = f", head {result.head}" if result.head else ""
        against = f", matches anchor {anchor.seq}" if anchor else ""
        print(f"audit log intact: {result.records} records{head}{against}")
        return 0
    print(f"audit log BROKEN at record {result.first_bad_seq}: {result.reason}")
    print(f"({result.records} records before it verified)")
    return 1


async def _head(db: str) -> int:
    store = SqliteStore(db, read_only=True)
    await store.open()
    try:
        head = await store.audit_head()
    finally:
        await store.close()
    print(head if head is not None else "empty")
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    anchor = AuditAnchor.parse(args.anchor) if args.anchor else None
    return asyncio.run(_verify(args.db, anchor))


def _run_head(args: argparse.Namespace) -> int:
    return asyncio.run(_head(args.db))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("audit", help="check the state store's audit log",
                                   description="Check the state store's hash-chained audit log.")
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    verify = sub.add_parser("verify", help="verify the hash chain (exit 1 at the first bad record)")
    verify.add_argument("--db", required=True, metavar="FILE", help="state store database")
    verify.add_argument("--anchor", metavar="SEQ:HASH",
                        help="chain head recorded earlier (detects a truncated or rewritten tail)")
    verify.set_defaults(func=_run_verify)

    head = sub.add_parser("head", help="print the chain head SEQ:HASH (keep it as an anchor)")
    head.add_argument("--db", required=True, metavar="FILE", help="state store database")
    head.set_defaults(func=_run_head)
