"""The hash-chained audit log: hashing, append-only triggers, tamper detection, the CLI.

Tampering is done the way an attacker with the file would: plain sqlite3, dropping the
append-only triggers first.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyota.cli import main as cli_main
from proxyota.errors import InvalidArgument
from proxyota.store import AuditAnchor, InvalidRecord, SqliteStore
from proxyota.store.audit import make_record, verify_rows
from proxyota.store.base import GENESIS_HASH

from .conftest import DIGEST, StepClock

N = 8


def test_record_hash_matches_hand_computed_bytes():
    rec = make_record(None, "tuf", "image.accept", DIGEST, {"length": 1234, "hw": ["rev-a"]}, 1000)
    # the canonical record, written out by hand: sorted keys, no spaces, time as a float
    canonical = ('{"action":"image.accept","actor":"tuf","details":{"hw":["rev-a"],"length":1234},'
                 '"seq":1,"subject":"' + DIGEST + '","time":1000.0}').encode()
    assert rec.seq == 1 and rec.prev_hash == GENESIS_HASH == "0" * 64
    assert rec.hash == hashlib.sha256(bytes(32) + canonical).hexdigest()
    nxt = make_record(AuditAnchor(1, rec.hash), "planner", "campaign.start", "c1", None, 1001.5)
    canonical2 = b'{"action":"campaign.start","actor":"planner","details":{},"seq":2,"subject":"c1","time":1001.5}'
    assert nxt.prev_hash == rec.hash
    assert nxt.hash == hashlib.sha256(bytes.fromhex(rec.hash) + canonical2).hexdigest()
    assert verify_rows([rec.row(), nxt.row()]).ok


def test_anchor_parse():
    a = AuditAnchor.parse(f"12:{'AB' * 32}")
    assert (a.seq, a.hash, str(a)) == (12, "ab" * 32, f"12:{'ab' * 32}")
    for bad in ("12", "x:" + "ab" * 32, "0:" + "ab" * 32, "3:abc"):
        with pytest.raises(InvalidArgument):
            AuditAnchor.parse(bad)


async def make_log(path, n: int = N) -> AuditAnchor:
    async with SqliteStore(path, clock=StepClock()) as s:
        for i in range(1, n + 1):
            rec = await s.audit_append("planner", "campaign.step", "c1", {"i": i})
            assert rec.seq == i
        head = await s.audit_head()
        assert head == AuditAnchor(n, rec.hash)
        assert (await s.audit_verify(head)).ok
    return head


async def verify(path, anchor=None):
    s = SqliteStore(path, read_only=True)
    await s.open()
    try:
        return await s.audit_verify(anchor)
    finally:
        await s.close()


def make_log_sync(path, n: int = N) -> AuditAnchor:
    return asyncio.run(make_log(path, n))


def verify_sync(path, anchor=None):
    return asyncio.run(verify(path, anchor))


def tamper(path, *statements, params=()):
    raw = sqlite3.connect(path)
    raw.execute("DROP TRIGGER audit_log_no_update")
    raw.execute("DROP TRIGGER audit_log_no_delete")
    raw.execute("DROP TRIGGER audit_log_extends_chain")
    for sql in statements:
        raw.execute(sql, params) if "?" in sql else raw.execute(sql)
    raw.commit()
    raw.close()


def row(path, seq):
    with sqlite3.connect(path) as raw:
        return raw.execute("SELECT * FROM audit_log WHERE seq = ?", (seq,)).fetchone()


async def test_triggers_refuse_update_and_delete_and_forged_inserts(db_path):
    await make_log(db_path)
    raw = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only: UPDATE refused"):
            raw.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only: DELETE refused"):
            raw.execute("DELETE FROM audit_log WHERE seq = 8")
        r = row(db_path, 8)
        with pytest.raises(sqlite3.IntegrityError, match="extend the chain"):
            raw.execute("INSERT INTO audit_log VALUES (10, 1.0, 'a', 'b', 'c', '{}', ?, ?)", (r[7], "ee" * 32))
        with pytest.raises(sqlite3.IntegrityError, match="extend the chain"):
            raw.execute("INSERT INTO audit_log VALUES (9, 1.0, 'a', 'b', 'c', '{}', ?, ?)", ("00" * 32, "ee" * 32))
    finally:
        raw.close()
    assert (await verify(db_path)).ok


async def test_bad_audit_input_writes_nothing(store):
    with pytest.raises(InvalidRecord):
        await store.audit_append("ops", "x", "s", {"t": float("inf")})
    with pytest.raises(InvalidRecord):
        await store.audit_append("", "x", "s")
    assert await store.audit_head() is None


CASES = {
    "edited details": (["UPDATE audit_log SET details = '{\"i\":99}' WHERE seq = 3"], 3, "content does not match"),
    "edited actor": (["UPDATE audit_log SET actor = 'mallory' WHERE seq = 5"], 5, "content does not match"),
    "non-canonical details": (["UPDATE audit_log SET details = '{\"i\": 3}' WHERE seq = 3"], 3, "canonical"),
    "deleted middle": (["DELETE FROM audit_log WHERE seq = 4"], 4, "record 4 is missing"),
    "deleted first": (["DELETE FROM audit_log WHERE seq = 1"], 1, "record 1 is missing"),
    "deleted and renumbered": (["DELETE FROM audit_log WHERE seq = 4"]
                               + [f"UPDATE audit_log SET seq = {s - 1} WHERE seq = {s}" for s in range(5, N + 1)],
                               4, "prev_hash does not match"),
    "reordered (seqs swapped)": (["UPDATE audit_log SET seq = 100 WHERE seq = 3",
                                  "UPDATE audit_log SET seq = 3 WHERE seq = 4",
                                  "UPDATE audit_log SET seq = 4 WHERE seq = 100"], 3, "prev_hash does not match"),
    "appended with a broken link": (
        [f"INSERT INTO audit_log VALUES ({N + 1}, 1.0, 'm', 'forged', 'x', '{{}}', '{'11' * 32}', '{'22' * 32}')"],
        N + 1, "prev_hash"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampering_is_detected_at_the_first_bad_record(db_path, case, capsys):
    make_log_sync(db_path)
    statements, bad_seq, reason = CASES[case]
    tamper(db_path, *statements)
    result = verify_sync(db_path)
    assert not result.ok
    assert result.first_bad_seq == bad_seq
    assert reason in result.reason
    assert any("triggers missing" in n for n in result.notes)
    assert cli_main(["audit", "verify", "--db", str(db_path)]) == 1
    out = capsys.readouterr().out
    assert f"BROKEN at record {bad_seq}:" in out and "warning: append-only triggers missing" in out


def test_edited_record_with_recomputed_hash_breaks_the_next_link(db_path):
    make_log_sync(db_path)
    r = row(db_path, 3)
    forged = make_record(AuditAnchor(2, r[6]), "planner", "campaign.step", "c1", {"i": 333}, r[1])
    tamper(db_path, "UPDATE audit_log SET details = ?, hash = ? WHERE seq = 3",
           params=(forged.row()[5], forged.hash))
    result = verify_sync(db_path)
    assert (result.ok, result.first_bad_seq) == (False, 4)


def test_reordered_contents_detected(db_path):
    make_log_sync(db_path)
    r3, r4 = row(db_path, 3), row(db_path, 4)
    sql = "UPDATE audit_log SET time=?, actor=?, action=?, subject=?, details=?, prev_hash=?, hash=? WHERE seq=?"
    raw = sqlite3.connect(db_path)
    for t in ("audit_log_no_update", "audit_log_no_delete", "audit_log_extends_chain"):
        raw.execute(f"DROP TRIGGER {t}")
    raw.execute("UPDATE audit_log SET hash = 'x' WHERE seq = 4")  # hash is UNIQUE: step around it
    raw.execute(sql, (*r4[1:], 3))
    raw.execute(sql, (*r3[1:], 4))
    raw.commit()
    raw.close()
    result = verify_sync(db_path)
    assert (result.ok, result.first_bad_seq) == (False, 3)


def test_truncated_tail_needs_the_anchor(db_path, capsys):
    anchor = make_log_sync(db_path)
    tamper(db_path, f"DELETE FROM audit_log WHERE seq > {N - 2}")
    assert (verify_sync(db_path)).ok  # a shorter chain is still a valid chain...
    result = verify_sync(db_path, anchor)  # ...but not the one the anchor saw
    assert (result.ok, result.first_bad_seq) == (False, N - 1)
    assert "truncated" in result.reason
    assert cli_main(["audit", "verify", "--db", str(db_path), "--anchor", str(anchor)]) == 1
    assert f"BROKEN at record {N - 1}:" in capsys.readouterr().out


def test_rewritten_tail_detected_at_the_anchor(db_path):
    anchor = make_log_sync(db_path)
    rows = [row(db_path, s) for s in range(1, N + 1)]
    head = AuditAnchor(2, rows[1][7])
    statements = []
    for r in rows[2:]:  # edit record 3 and recompute every later hash: a consistent forgery
        details = {"i": 333} if r[0] == 3 else {"i": r[0]}
        forged = make_record(head, r[2], r[3], r[4], details, r[1])
        statements.append(f"UPDATE audit_log SET details = '{forged.row()[5]}', prev_hash = '{forged.prev_hash}', "
                          f"hash = '{forged.hash}' WHERE seq = {r[0]}")
        head = AuditAnchor(forged.seq, forged.hash)
    tamper(db_path, *statements)
    assert (verify_sync(db_path)).ok  # undetectable from the file alone
    result = verify_sync(db_path, anchor)
    assert (result.ok, result.first_bad_seq) == (False, N)
    assert "rewritten" in result.reason


def test_cli_intact_head_and_errors(db_path, capsys, tmp_path):
    anchor = make_log_sync(db_path)
    assert cli_main(["audit", "head", "--db", str(db_path)]) == 0
    assert capsys.readouterr().out.strip() == str(anchor)
    assert cli_main(["audit", "verify", "--db", str(db_path), "--anchor", str(anchor)]) == 0
    out = capsys.readouterr().out
    assert f"intact: {N} records" in out and "warning" not in out
    assert cli_main(["audit", "verify", "--db", str(db_path), "--anchor", "oops"]) == 1
    assert "SEQ:HASH" in capsys.readouterr().err
    assert cli_main(["audit", "verify", "--db", str(tmp_path / "none.db")]) == 1
    assert "no such database" in capsys.readouterr().err


def test_cli_entry_point_in_a_subprocess(db_path):
    make_log_sync(db_path)
    tamper(db_path, "UPDATE audit_log SET subject = 'c2' WHERE seq = 6")
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run([sys.executable, "-m", "proxyota", "audit", "verify", "--db", str(db_path)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "BROKEN at record 6:" in proc.stdout


# --------------------------------------------------------------------------- property


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def chains(draw):
    n = draw(st.integers(2, 10))
    rows, head = [], None
    for i in range(n):
        details = draw(st.dictionaries(st.text(max_size=5), json_values, max_size=3))
        rec = make_record(head, draw(st.sampled_from(["tuf", "planner", "ops"])), "act",
                          draw(st.text(max_size=6)), details, 1000.0 + i)
        head = AuditAnchor(rec.seq, rec.hash)
        rows.append(rec.row())
    return rows, head


@settings(derandomize=True, max_examples=150, deadline=None)
@given(chains(), st.sampled_from(["edit", "delete", "swap", "truncate", "none"]), st.data())
def test_verify_rows_finds_the_first_bad_record(chain, mutation, data):
    rows, anchor = chain
    n = len(rows)
    rows = [list(r) for r in rows]
    if mutation == "none":
        assert verify_rows(rows, anchor).ok
        return
    if mutation == "edit":
        i = data.draw(st.integers(0, n - 1))
        field = data.draw(st.sampled_from([1, 2, 3, 4, 5]))
        forged = '{"forged":true}' if rows[i][5] != '{"forged":true}' else "{}"
        rows[i][field] = {1: rows[i][1] + 1.0, 2: rows[i][2] + "!", 3: rows[i][3] + "!",
                          4: rows[i][4] + "!", 5: forged}[field]
        expected = i + 1
    elif mutation == "delete":
        i = data.draw(st.integers(0, n - 2))
        del rows[i]
        expected = i + 1
    elif mutation == "swap":
        i = data.draw(st.integers(0, n - 2))
        rows[i][1:], rows[i + 1][1:] = rows[i + 1][1:], rows[i][1:]
        expected = i + 1
    else:
        k = data.draw(st.integers(1, n - 1))
        rows = rows[:-k]
        assert verify_rows(rows).ok
        expected = n - k + 1
    result = verify_rows(rows, anchor)
    assert not result.ok
    assert result.first_bad_seq == expected, result.reason
