"""``proxyota keys`` and ``proxyota image`` through proxyota.cli.main."""

from __future__ import annotations

import hashlib
import json
import stat

import pytest

from proxyota.cli import main
from proxyota.images import envelope as E
from proxyota.images import signing

HW = "669d8e58-f8b1-5858-826a-2ee7071abf7b"


@pytest.fixture
def keys(tmp_path, capsys):
    assert main(["keys", "generate", "--out", str(tmp_path / "keys")]) == 0
    capsys.readouterr()
    return tmp_path / "keys" / "signing.pem", tmp_path / "keys" / "signing.pub.pem"


def build(tmp_path, key, payload=b"tiny", out="fw.img", extra=()):
    (tmp_path / "payload.bin").write_bytes(payload)
    img = tmp_path / out
    rc = main(["image", "build", "--payload", str(tmp_path / "payload.bin"), "--hw-class", HW,
               "--version", "1.2.3", "--security-counter", "7", "--key", str(key),
               "--out", str(img), *extra])
    assert rc == 0
    return img


def test_keys_generate_never_prints_key_material(tmp_path, capsys):
    assert main(["keys", "generate", "--out", str(tmp_path / "k")]) == 0
    out = capsys.readouterr()
    priv, pub = tmp_path / "k" / "signing.pem", tmp_path / "k" / "signing.pub.pem"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    key = signing.load_private_key(priv)
    assert signing.algorithm_of(key) == signing.SignatureAlgorithm.ED25519
    text = out.out + out.err
    assert signing.key_id(key).hex() in out.out
    assert "BEGIN" not in text
    raw_private = key.private_bytes_raw().hex()  # type: ignore[union-attr]
    assert raw_private not in text and signing.raw_public_key(key).hex() not in text
    # refuses to overwrite, unless --force
    assert main(["keys", "generate", "--out", str(tmp_path / "k")]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert signing.key_id(signing.load_private_key(priv)) == signing.key_id(key)
    assert main(["keys", "generate", "--out", str(tmp_path / "k"), "--force",
                 "--algorithm", "ecdsa-p256"]) == 0
    assert signing.algorithm_of(signing.load_public_key(pub)).label == "ecdsa-p256"
    capsys.readouterr()
    assert main(["keys", "id", str(pub)]) == 0
    assert signing.key_id(signing.load_public_key(pub)).hex() in capsys.readouterr().out


def test_build_verify_inspect(tmp_path, capsys, keys):
    priv, pub = keys
    img = build(tmp_path, priv, b"firmware bytes")
    capsys.readouterr()
    assert main(["image", "verify", "--public-key", str(pub), str(img)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["image", "inspect", str(img), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for name, _offset, _size in E.HEADER_LAYOUT:
        assert name in info
    assert info["hw_class"] == HW
    assert info["firmware_version"] == 0x01020003 and info["firmware_version_semver"] == "1.2.3"
    assert info["security_counter"] == 7 and info["payload_kind"] == "full"
    assert info["payload_length"] == 14 and info["base_digest"] is None
    assert info["payload_digest"] == hashlib.sha256(b"firmware bytes").hexdigest()
    assert info["key_id"] == signing.key_id(signing.load_public_key(pub)).hex()
    assert info["envelope_sha256"] == hashlib.sha256(img.read_bytes()).hexdigest()
    assert main(["image", "inspect", str(img)]) == 0
    assert "security_counter" in capsys.readouterr().out


def test_build_delta(tmp_path, capsys, keys):
    priv, pub = keys
    (tmp_path / "base.bin").write_bytes(b"old firmware")
    img = build(tmp_path, priv, b"patch", extra=["--base-payload", str(tmp_path / "base.bin")])
    env = E.verify(img.read_bytes(), signing.load_public_key(pub))
    assert env.is_delta and env.base_digest == hashlib.sha256(b"old firmware").digest()
    img2 = build(tmp_path, priv, b"patch", out="d2.img",
                 extra=["--base-digest", hashlib.sha256(b"old firmware").hexdigest()])
    assert img2.read_bytes() == img.read_bytes()  # Ed25519: deterministic


def test_verify_rejects_every_altered_byte(tmp_path, capsys, keys):
    priv, pub = keys
    img = build(tmp_path, priv, b"fw")
    good = img.read_bytes()
    bad = tmp_path / "bad.img"
    for i in range(len(good)):
        tampered = bytearray(good)
        tampered[i] ^= 0x01
        bad.write_bytes(bytes(tampered))
        assert main(["image", "verify", "--public-key", str(pub), str(bad)]) == 1, i
        err = capsys.readouterr().err
        assert "INVALID" in err and len(err.strip()) > len(str(bad)) + 10, (i, err)


def test_verify_wrong_key_truncated_and_policy(tmp_path, capsys, keys):
    priv, pub = keys
    img = build(tmp_path, priv)
    main(["keys", "generate", "--out", str(tmp_path / "other")])
    capsys.readouterr()
    assert main(["image", "verify", "--public-key", str(tmp_path / "other" / "signing.pub.pem"),
                 str(img)]) == 1
    assert "key id" in capsys.readouterr().err
    # several keys: the right one is picked by key id
    assert main(["image", "verify", "--public-key", str(tmp_path / "other" / "signing.pub.pem"),
                 "--public-key", str(pub), str(img)]) == 0
    capsys.readouterr()
    truncated = tmp_path / "t.img"
    truncated.write_bytes(img.read_bytes()[:-1])
    assert main(["image", "verify", "--public-key", str(pub), str(truncated)]) == 1
    assert "truncated" in capsys.readouterr().err
    garbage = tmp_path / "g.img"
    garbage.write_bytes(b"not an envelope")
    assert main(["image", "verify", "--public-key", str(pub), str(garbage)]) == 1
    assert "magic" in capsys.readouterr().err
    assert main(["image", "verify", "--public-key", str(priv), str(img)]) == 1
    assert "private key" in capsys.readouterr().err
    assert main(["image", "verify", "--public-key", str(pub), "--hw-class",
                 "00000000-0000-0000-0000-000000000001", str(img)]) == 1
    assert "hardware class" in capsys.readouterr().err
    assert main(["image", "verify", "--public-key", str(pub), "--min-security-counter", "8",
                 str(img)]) == 1
    assert "rollback" in capsys.readouterr().err
    assert main(["image", "verify", "--public-key", str(pub), "--hw-class", HW,
                 "--min-security-counter", "7", str(img)]) == 0
    assert main(["image", "inspect", str(garbage)]) == 1
    assert "magic" in capsys.readouterr().err


def test_build_argument_errors(tmp_path, capsys, keys):
    priv, _ = keys
    (tmp_path / "p.bin").write_bytes(b"x")
    base = ["image", "build", "--payload", str(tmp_path / "p.bin"), "--key", str(priv),
            "--out", str(tmp_path / "o.img"), "--security-counter", "1"]
    assert main([*base, "--hw-class", "nope", "--version", "1"]) == 1
    assert "not a UUID" in capsys.readouterr().err
    assert main([*base, "--hw-class", HW, "--version", "1.2"]) == 1
    assert "MAJOR.MINOR.PATCH" in capsys.readouterr().err
    assert main([*base, "--hw-class", HW, "--version", "1", "--base-digest", "zz"]) == 1
    assert not (tmp_path / "o.img").exists()


def test_class_id(capsys):
    assert main(["image", "class-id", "--vendor", "example.com", "--model", "LS-100 rev B"]) == 0
    assert capsys.readouterr().out.strip() == HW
