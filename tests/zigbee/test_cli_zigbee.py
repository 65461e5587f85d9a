"""``proxyota zigbee inspect``: text and JSON output, exit codes."""

from __future__ import annotations

import json

from proxyota.cli import main
from proxyota.zigbee.containers import wrap_ikea, wrap_third_reality
from proxyota.zigbee.otafile import build

from .conftest import SHARED_OTA_DIR, UBISYS


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["zigbee", "inspect", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_inspect_text_real_file(capsys, ubisys):
    code, out, _ = run(capsys, str(SHARED_OTA_DIR / UBISYS))
    assert code == 0
    assert "container: plain" in out
    assert "manufacturer_code:  0x10F2" in out
    assert "hardware_version:   0x0000..0x0005" in out
    assert "tag 0xF7BD manufacturer specific" in out
    assert "tag 0x0000 upgrade image" in out and "length   113920" in out
    assert "integrity: ok (hash without header of the integrity sub-element)" in out


def test_inspect_json_real_file(capsys, real_file):
    name, data = real_file
    code, out, _ = run(capsys, str(SHARED_OTA_DIR / name), "--json")
    report = json.loads(out)
    assert code == 0
    assert report["size"] == len(data)
    assert report["container"]["kind"] == "plain"
    assert report["header"]["total_size"] == len(data)
    assert report["subelements"][-1]["name"] == "image integrity code"
    assert report["subelements"][-1]["value"] == data[-16:].hex()
    assert report["integrity"]["status"] == "ok"
    expected = "with-header" if name.startswith("128b") else "without-header"
    assert report["integrity"]["matched"] == expected


def test_inspect_container_and_failed_integrity(capsys, tmp_path):
    ota = build(0x117C, 0x2101, 3, b"fw" * 5000, integrity="without-header", header_string="EBL x")
    good = tmp_path / "good.ota.signed"
    good.write_bytes(wrap_ikea(ota))
    code, out, _ = run(capsys, str(good))
    assert code == 0
    assert "container: ikea-ngis (OTA file at byte 72)" in out
    assert "sha256 block hashes: ok" in out

    tampered = bytearray(ota.to_bytes())
    tampered[200] ^= 1
    bad = tmp_path / "bad.ota"
    bad.write_bytes(bytes(tampered))
    code, out, _ = run(capsys, str(bad), "--json")
    assert code == 3
    assert json.loads(out)["integrity"]["status"] == "mismatch"

    broken_container = bytearray(wrap_third_reality(ota))
    broken_container[0] ^= 1
    path = tmp_path / "tr.ota"
    path.write_bytes(bytes(broken_container))
    code, out, _ = run(capsys, str(path))
    assert code == 3 and "sha512: failed" in out


def test_inspect_errors(capsys, tmp_path):
    junk = tmp_path / "junk.ota"
    junk.write_bytes(b"this is not an OTA file at all")
    code, _, err = run(capsys, str(junk))
    assert code == 1 and "bad magic" in err
    code, _, err = run(capsys, str(tmp_path / "missing.ota"))
    assert code == 1 and "missing.ota" in err
