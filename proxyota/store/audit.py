"""The hash-chained, append-only audit log: how records are hashed and how a chain is checked.

Backend independent (pure functions over stored rows). Each record is
``(seq, time, actor, action, subject, details, prev_hash, hash)`` with::

    canonical = canonical JSON of {"action", "actor", "details", "seq", "subject", "time"}
                (sorted keys, no whitespace, ASCII; time as a float, details an object)
    hash      = SHA-256(bytes.fromhex(prev_hash) || canonical.encode("ascii"))

``seq`` counts from 1 without gaps and the first ``prev_hash`` is 64 zeros
(:data:`GENESIS_HASH`). :class:`ChainVerifier` walks the rows in seq order and reports the
first bad one:

* an edited record: its content no longer gives its hash (or details are not canonical);
* a deleted record: a seq gap, or (renumbered) a ``prev_hash`` that does not link;
* a reordered record: its seq is part of its hash and of the next record's link;
* a truncated tail: only against an anchor (the head's seq and hash, kept outside the
  database), since the remaining records still form a valid chain;
* a rewritten tail (an attacker recomputing every later hash): again only against an
  anchor, reported at the anchor's seq.

The database adds its own guard (SQLite triggers refuse UPDATE/DELETE, see
:mod:`.migrations`), and the code has no update or delete path; the chain is what still
detects tampering by someone who drops the triggers and edits the file.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from proxyota.store.base import (
    GENESIS_HASH,
    AuditAnchor,
    AuditRecord,
    AuditVerification,
    InvalidRecord,
    _check_id,
    canonical_json,
)

__all__ = ["canonical_record", "record_hash", "make_record", "ChainVerifier", "verify_rows"]


def canonical_record(seq: int, time: float, actor: str, action: str, subject: str, details: Any) -> bytes:
    """The bytes hashed after ``prev_hash`` (``details`` as the decoded JSON object)."""
    return canonical_json(
        {"action": action, "actor": actor, "details": details, "seq": seq, "subject": subject,
         "time": float(time)},
        "audit record",
    ).encode("ascii")


def record_hash(prev_hash: str, seq: int, time: float, actor: str, action: str, subject: str,
                details: Any) -> str:
    return hashlib.sha256(
        bytes.fromhex(prev_hash) + canonical_record(seq, time, actor, action, subject, details)
    ).hexdigest()


def make_record(head: AuditAnchor | None, actor: str, action: str, subject: str,
                details: Mapping[str, Any] | None, time: float) -> AuditRecord:
    """The record that extends the chain whose last record is ``head`` (None: empty log)."""
    _check_id(actor, "audit actor")
    _check_id(action, "audit action")
    if not isinstance(subject, str):
        raise InvalidRecord(f"audit subject must be a string, got {subject!r}")
    details = {} if details is None else details
    if not isinstance(details, Mapping):
        raise InvalidRecord(f"audit details must be a dict, got {type(details).__name__}")
    details = json.loads(canonical_json(dict(details), "audit details"))  # checked deep copy
    if isinstance(time, bool) or not isinstance(time, (int, float)) or not math.isfinite(time):
        raise InvalidRecord(f"audit time must be a finite number, got {time!r}")
    seq = 1 if head is None else head.seq + 1
    prev = GENESIS_HASH if head is None else head.hash
    time = float(time)
    return AuditRecord(seq, time, actor, action, subject, details, prev,
                       record_hash(prev, seq, time, actor, action, subject, details))


def _is_hex64(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


class ChainVerifier:
    """Feed stored rows in seq order; :meth:`finish` gives the verdict.

    A row is ``(seq, time, actor, action, subject, details_json, prev_hash, hash)``.
    """

    def __init__(self, anchor: AuditAnchor | None = None):
        self.anchor = anchor
        self.records = 0
        self._expected = 1
        self._prev = GENESIS_HASH
        self._head: AuditAnchor | None = None
        self._bad: tuple[int, str] | None = None
        self._anchor_seen = False

    @property
    def failed(self) -> bool:
        return self._bad is not None

    def feed(self, row: Sequence[Any]) -> bool:
        """Check one row; False once the chain is broken (later rows are ignored)."""
        if self._bad is not None:
            return False
        problem = self._check(row)
        if problem is not None:
            self._bad = problem
            return False
        seq, digest = row[0], row[7]
        self.records += 1
        self._expected = seq + 1
        self._prev = digest
        self._head = AuditAnchor(seq, digest)
        if self.anchor is not None and seq == self.anchor.seq:
            self._anchor_seen = True
            if digest != self.anchor.hash:
                self._bad = (seq, f"record {seq} does not match the anchor hash: the log was "
                                  f"rewritten at or before record {seq}")
                return False
        return True

    def _check(self, row: Sequence[Any]) -> tuple[int, str] | None:
        n = self._expected
        try:
            seq, time, actor, action, subject, details_json, prev_hash, digest = row
        except (TypeError, ValueError):
            return n, f"record {n}: malformed row"
        if isinstance(seq, bool) or not isinstance(seq, int):
            return n, f"record {n}: malformed seq {seq!r}"
        if seq > n:
            missing = f"record {n} is missing" if seq == n + 1 else f"records {n}..{seq - 1} are missing"
            return n, f"{missing} (deleted; next record is {seq})"
        if seq < n:
            return n, f"record {seq} appears again or out of order where record {n} was expected"
        if not (isinstance(time, (int, float)) and not isinstance(time, bool) and math.isfinite(time)) \
                or not all(isinstance(v, str) for v in (actor, action, subject, details_json)) \
                or not _is_hex64(prev_hash) or not _is_hex64(digest):
            return seq, f"record {seq}: malformed field (edited)"
        if prev_hash != self._prev:
            before = "the genesis hash" if seq == 1 else f"the hash of record {seq - 1}"
            return seq, (f"record {seq}: prev_hash does not match {before} (chain broken: a "
                         f"record was deleted, inserted or reordered, or record {seq - 1} was altered)")
        try:
            details = json.loads(details_json)
            canonical = canonical_json(details, "details")
        except (ValueError, InvalidRecord):
            return seq, f"record {seq}: details are not valid JSON (edited)"
        if canonical != details_json:
            return seq, f"record {seq}: details are not in canonical form (edited)"
        if record_hash(prev_hash, seq, time, actor, action, subject, details) != digest:
            return seq, f"record {seq}: content does not match its hash (edited)"
        return None

    def finish(self) -> AuditVerification:
        if self._bad is None and self.anchor is not None and not self._anchor_seen:
            last = self._head.seq if self._head else 0
            self._bad = (last + 1, f"the log ends at record {last} but the anchor is record "
                                   f"{self.anchor.seq}: records {last + 1}..{self.anchor.seq} "
                                   f"were removed (truncated)")
        if self._bad is not None:
            seq, reason = self._bad
            return AuditVerification(False, self.records, seq, reason, self._head)
        return AuditVerification(True, self.records, None, None, self._head)


def verify_rows(rows: Iterable[Sequence[Any]], anchor: AuditAnchor | None = None) -> AuditVerification:
    """Verify a whole chain given as stored rows in seq order."""
    verifier = ChainVerifier(anchor)
    for row in rows:
        if not verifier.feed(row):
            break
    return verifier.finish()
