"""``proxyota repo ...`` through proxyota.cli.main."""

from __future__ import annotations

import hashlib
import json
import stat

import pytest
from tuf.api.metadata import Metadata

from proxyota.cli import main
from proxyota.images import envelope, signing
from proxyota.images.tuf_repo import TufRepository, env_var
from proxyota.zigbee import otafile

HW = "669d8e58-f8b1-5858-826a-2ee7071abf7b"


@pytest.fixture(scope="module")
def vendor():
    return signing.generate_key()


def run(capsys, *argv):
    rc = main(list(map(str, argv)))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_repo_workflow(tmp_path, capsys, vendor):
    repo = tmp_path / "repo"
    rc, out, err = run(capsys, "repo", "init", repo, "--threshold", "timestamp=2",
                       "--expiry", "timestamp=0.5", "--expiry", "targets=30")
    assert rc == 0, err
    assert "timestamp: v1, threshold 2" in out and "1.root.json" in out
    assert "PRIVATE" not in out
    r = TufRepository(repo)
    ts = r.load("timestamp").signed
    assert (ts.expires - r.load("root").signed.expires).days < -300  # 12 h vs 365 days
    assert round((r.load("targets").signed.expires - ts.expires).total_seconds() / 3600) == 708

    img = tmp_path / "fw.img"
    img.write_bytes(envelope.build(b"fw" * 100, hw_class=HW, firmware_version=0x01020003,
                                   security_counter=4, private_key=vendor))
    rc, out, err = run(capsys, "repo", "add", repo, img, "--name", "lorawan/fw-1.2.3.img",
                       "--custom", "notes=first release", "--custom", "ticket=42", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["custom"] == {"kind": "envelope", "container": "envelope", "hw_classes": [HW],
                             "firmware_version": 0x01020003, "security_counter": 4,
                             "notes": "first release", "ticket": 42}
    assert doc["sha256"] == hashlib.sha256(img.read_bytes()).hexdigest()

    rc, out, err = run(capsys, "repo", "publish", repo, tmp_path / "www")
    assert rc == 1 and "unsigned changes are staged" in err

    rc, out, err = run(capsys, "repo", "sign", repo, "--json")
    assert rc == 0 and json.loads(out) == {"written": {"targets": 2, "snapshot": 2,
                                                       "timestamp": 2}}
    rc, out, _ = run(capsys, "repo", "sign", repo)
    assert rc == 0 and "nothing to sign" in out
    rc, out, _ = run(capsys, "repo", "sign", repo, "--role", "timestamp")
    assert out.strip() == "timestamp: v3"

    rc, out, err = run(capsys, "repo", "publish", repo, tmp_path / "www")
    assert rc == 0, err
    assert (tmp_path / "www" / "metadata" / "timestamp.json").is_file()
    assert Metadata.from_file(str(tmp_path / "www" / "metadata" / "timestamp.json")
                              ).signed.version == 3

    rc, out, err = run(capsys, "repo", "rotate-key", repo, "targets", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["written"] == {"root": 2, "targets": 3, "snapshot": 3, "timestamp": 4}
    assert doc["old_keyids"] != doc["new_keyids"]

    rc, out, err = run(capsys, "repo", "status", repo, "--json")
    status = json.loads(out)
    assert status["roles"]["root"]["version"] == 2
    assert status["roles"]["targets"]["keyids"] == doc["new_keyids"]
    assert list(status["targets"]) == ["lorawan/fw-1.2.3.img"]
    rc, out, err = run(capsys, "repo", "status", repo)
    assert "timestamp: v4" in out and "2/2 keys available" in out

    rc, out, err = run(capsys, "repo", "remove", repo, "--name", "lorawan/fw-1.2.3.img")
    assert rc == 0 and "staged removal" in out
    rc, out, err = run(capsys, "repo", "status", repo)
    assert "pending (unsigned): lorawan/fw-1.2.3.img" in out
    rc, out, err = run(capsys, "repo", "remove", repo, "--name", "nope")
    assert rc == 1 and "no target named 'nope'" in err


def test_repo_add_zigbee_and_delta(tmp_path, capsys, vendor):
    repo = tmp_path / "repo"
    assert run(capsys, "repo", "init", repo)[0] == 0
    ota = tmp_path / "plug.ota"
    ota.write_bytes(envelope.sign_zigbee_ota(
        otafile.build(0x1037, 0x0102, 0x0105, b"\x11" * 64).to_bytes(), vendor))
    rc, out, err = run(capsys, "repo", "add", repo, ota, "--name", "zigbee/plug.ota")
    assert rc == 0, err
    assert "zigbee-ota" in out and "zigbee:1037:0102" in out
    rc, out, err = run(capsys, "repo", "add", repo, ota, "--name", "zigbee/plug.delta",
                       "--kind", "delta", "--base-digest", "cd" * 32, "--json")
    assert rc == 0, err
    assert json.loads(out)["custom"]["base_digest"] == "cd" * 32
    rc, out, err = run(capsys, "repo", "add", repo, ota, "--name", "zigbee/x.ota",
                       "--custom", "file_version=7")
    assert rc == 1 and "file_version is 261 in its signed header" in err


def test_repo_errors(tmp_path, capsys):
    rc, _, err = run(capsys, "repo", "status", tmp_path / "none")
    assert rc == 1 and "not a proxyota TUF repository" in err
    rc, _, err = run(capsys, "repo", "init", tmp_path / "r", "--threshold", "mirror=2")
    assert rc == 1 and "ROLE one of root, targets, snapshot, timestamp" in err
    rc, _, err = run(capsys, "repo", "init", tmp_path / "r", "--expiry", "timestamp=soon")
    assert rc == 1 and "'soon' is not a number" in err
    assert not (tmp_path / "r").exists()
    assert run(capsys, "repo", "init", tmp_path / "r")[0] == 0
    rc, _, err = run(capsys, "repo", "init", tmp_path / "r")
    assert rc == 1 and "already holds a repository" in err
    (tmp_path / "x.bin").write_bytes(b"\x7fELF....")
    rc, _, err = run(capsys, "repo", "add", tmp_path / "r", tmp_path / "x.bin", "--name", "x")
    assert rc == 1 and "neither a proxyota image envelope" in err
    rc, _, err = run(capsys, "repo", "add", tmp_path / "r", tmp_path / "missing", "--name", "x")
    assert rc == 1 and "No such file" in err


def test_keys_dir_and_env_keys(tmp_path, capsys, monkeypatch, vendor):
    root_key = signing.generate_key()
    monkeypatch.setenv(env_var("root"), signing.private_key_pem(root_key).decode())
    keys = tmp_path / "secret-keys"
    rc, out, err = run(capsys, "repo", "init", tmp_path / "r", "--keys-dir", keys)
    assert rc == 0, err
    files = sorted(p.name.split("-")[0] for p in keys.glob("*.pem"))
    assert files == ["snapshot", "targets", "timestamp"]  # root's key came from the env
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in keys.glob("*.pem"))
    assert not (tmp_path / "r" / "keys").exists()
    assert run(capsys, "repo", "sign", tmp_path / "r", "--role", "root")[0] == 0
    monkeypatch.delenv(env_var("root"))
    rc, _, err = run(capsys, "repo", "sign", tmp_path / "r", "--role", "root")
    assert rc == 1 and "root needs 1 signature(s)" in err and env_var("root") in err
