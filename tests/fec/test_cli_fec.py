"""``proxyota fec encode|decode`` and ``proxyota demo`` through the real CLI entry point."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from proxyota.cli import main
from proxyota.cli.fec import parse_redundancy
from proxyota.errors import InvalidArgument


@pytest.fixture
def image(tmp_path: Path) -> Path:
    p = tmp_path / "fw.bin"
    p.write_bytes(random.Random(5).randbytes(5000))
    return p


@pytest.mark.parametrize("scheme,version", [("ts004", 1), ("ts004", 2), ("rs", 1)])
def test_encode_drop_decode(tmp_path: Path, image: Path, scheme: str, version: int) -> None:
    frags = tmp_path / "fw.frags"
    assert main(["fec", "encode", str(image), "--out", str(frags), "--frag-size", "50",
                 "--redundancy", "40%", "--scheme", scheme, "--version", str(version)]) == 0
    lines = frags.read_text().splitlines()
    assert lines[0].startswith("# proxyota-fec ")
    assert len(lines) == 1 + 100 + 40
    rng = random.Random(9)
    kept = [lines[0]] + [ln for ln in lines[1:] if rng.random() > 0.1]
    lossy = tmp_path / "lossy.frags"
    lossy.write_text("\n".join(kept) + "\n")
    out = tmp_path / "out.bin"
    assert main(["fec", "decode", str(lossy), "--out", str(out)]) == 0
    assert out.read_bytes() == image.read_bytes()


def test_decode_reports_incomplete(tmp_path: Path, image: Path, capsys) -> None:
    frags = tmp_path / "fw.frags"
    main(["fec", "encode", str(image), "--out", str(frags), "--frag-size", "50",
          "--redundancy", "0"])
    lines = frags.read_text().splitlines()
    (tmp_path / "short.frags").write_text("\n".join(lines[:-1]) + "\n")
    assert main(["fec", "decode", str(tmp_path / "short.frags"), "--out",
                 str(tmp_path / "x")]) == 1
    assert "incomplete" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_decode_rejects_bad_file(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.frags"
    bad.write_text("hello\n")
    assert main(["fec", "decode", str(bad), "--out", str(tmp_path / "x")]) == 1
    assert "fragment file" in capsys.readouterr().err


def test_redundancy_parsing() -> None:
    assert parse_redundancy("20%", 100) == 20
    assert parse_redundancy("20%", 101) == 21  # rounded up
    assert parse_redundancy("7", 100) == 7
    for bad in ("-1", "x", "-5%", ""):
        with pytest.raises(InvalidArgument):
            parse_redundancy(bad, 100)


def test_console_script_help() -> None:
    out = subprocess.run([sys.executable, "-m", "proxyota", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "fec" in out and "demo" in out


def test_demo_round_trip_small(capsys) -> None:
    assert main(["demo", "--image-size", "3000", "--receivers", "5", "--seed", "3",
                 "--lorawan-nodes", "0", "--zigbee-nodes", "0"]) == 0
    out = capsys.readouterr().out
    assert "byte for byte" in out


def test_demo_config_is_validated(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[demo]\nreceiverz = 3\n")
    assert main(["demo", "--config", str(bad)]) == 1
    assert "demo.receiverz" in capsys.readouterr().err
    bad.write_text("[demo]\nreceivers = 'many'\n")
    assert main(["demo", "--config", str(bad)]) == 1
    assert "demo.receivers" in capsys.readouterr().err


def test_shipped_demo_config_loads() -> None:
    from proxyota.cli.demo import load_settings

    repo = Path(__file__).resolve().parents[2]
    s = load_settings(str(repo / "configs" / "demo.toml"), {"receivers": 7})
    assert s.receivers == 7 and s.frag_size == 48 and s.loss_max == 0.30
