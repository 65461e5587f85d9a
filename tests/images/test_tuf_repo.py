"""proxyota.images.tuf_repo: the publisher, checked by python-tuf's own client (Updater)."""

from __future__ import annotations

import hashlib
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata, Root
from tuf.ngclient import FetcherInterface, Updater

from proxyota.errors import InvalidArgument
from proxyota.images import envelope, signing
from proxyota.images.policy import ImageMeta, zigbee_hw_class
from proxyota.images.tuf_repo import (
    MissingKeyError,
    RepoError,
    TufRepository,
    env_var,
    hashed_target_path,
)
from proxyota.zigbee import otafile

HW = "669d8e58-f8b1-5858-826a-2ee7071abf7b"
T0 = datetime(2031, 3, 1, 8, 0, tzinfo=timezone.utc)


class DirFetcher(FetcherInterface):
    """Serves a published directory to python-tuf's Updater without HTTP."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.urls: list[str] = []

    def _fetch(self, url: str):
        self.urls.append(url)
        path = self.root / url.removeprefix("http://repo/")
        if not path.is_file():
            raise tuf_exc.DownloadHTTPError(f"{url}: 404", 404)
        return iter([path.read_bytes()])


def client(out: Path, trusted_root: bytes, state: Path) -> tuple[Updater, DirFetcher]:
    state.mkdir(parents=True, exist_ok=True)
    fetcher = DirFetcher(out)
    updater = Updater(str(state), "http://repo/metadata/", str(state / "dl"),
                      "http://repo/targets/", fetcher=fetcher, bootstrap=trusted_root)
    return updater, fetcher


def client_targets(out: Path, trusted_root: bytes, state: Path) -> dict:
    updater, _ = client(out, trusted_root, state)
    updater.refresh()
    names = Metadata.from_bytes((state / "targets.json").read_bytes()).signed.targets
    return {n: updater.get_targetinfo(n) for n in names}


@pytest.fixture(scope="module")
def vendor():
    return signing.generate_key()


def lorawan_image(vendor, *, counter=3, version=0x01000000, base=None, payload=b"fw" * 300):
    return envelope.build(payload, hw_class=HW, firmware_version=version,
                          security_counter=counter, private_key=vendor, base_digest=base)


def zigbee_image(vendor, version=0x105):
    ota = otafile.build(0x1037, 0x0102, version, b"\x55" * 300).to_bytes()
    return envelope.sign_zigbee_ota(ota, vendor)


@pytest.fixture
def repo(tmp_path):
    return TufRepository.init(tmp_path / "repo", thresholds={"timestamp": 2}, clock=lambda: T0)


def test_init_layout_keys_thresholds_expiry(repo, tmp_path):
    meta = repo.path / "metadata"
    assert sorted(p.name for p in meta.iterdir()) == [
        "1.root.json", "1.snapshot.json", "1.targets.json", "1.timestamp.json"]
    root = repo.root()
    assert root.consistent_snapshot is True
    assert root.roles["timestamp"].threshold == 2 and len(root.roles["timestamp"].keyids) == 2
    for role in ("root", "targets", "snapshot"):
        assert root.roles[role].threshold == 1 and len(root.roles[role].keyids) == 1
    # every key is Ed25519, every role has its own keys
    assert {k.scheme for k in root.keys.values()} == {"ed25519"}
    assert len(root.keys) == 5
    # expiry = signing time + the role's default lifetime
    days = {"root": 365, "targets": 90, "snapshot": 7, "timestamp": 1}
    for role, d in days.items():
        assert repo.load(role).signed.expires == T0 + timedelta(days=d)
        assert repo.load(role).signed.version == 1
    # key files: 0600 in a 0700 directory outside metadata/ and targets/
    keys = sorted(repo.keys_dir.glob("*.pem"))
    assert len(keys) == 5
    assert stat.S_IMODE(repo.keys_dir.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)
    assert {k.name.split("-", 1)[1][:-4] for k in keys} == set(root.keys)
    # published output holds no key material
    repo.publish(tmp_path / "www")
    published = [p for p in (tmp_path / "www").rglob("*") if p.is_file()]
    assert published and not any(b"PRIVATE KEY" in p.read_bytes() for p in published)
    assert {p.parent.name for p in published} <= {"metadata", "targets"}


def test_init_refusals(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(RepoError, match="not empty"):
        TufRepository.init(tmp_path / "full")
    with pytest.raises(InvalidArgument, match="threshold of targets"):
        TufRepository.init(tmp_path / "r", thresholds={"targets": 0})
    with pytest.raises(InvalidArgument, match="unknown role"):
        TufRepository.init(tmp_path / "r", expiry_days={"mirror": 3})
    with pytest.raises(InvalidArgument, match="must be > 0"):
        TufRepository.init(tmp_path / "r", expiry_days={"timestamp": 0})
    assert not (tmp_path / "r").exists()
    with pytest.raises(RepoError, match="not a proxyota TUF repository"):
        TufRepository(tmp_path / "full")


def test_add_sign_publish_seen_by_python_tuf_client(repo, vendor, tmp_path):
    img = lorawan_image(vendor, counter=7, version=0x01020003)
    meta = repo.add_target(img, "lorawan/ls100-1.2.3.img", custom={"notes": "fixes #12"})
    assert meta.custom() == {"kind": "envelope", "container": "envelope", "hw_classes": [HW],
                             "firmware_version": 0x01020003, "security_counter": 7,
                             "notes": "fixes #12"}
    assert repo.pending_changes() == ["lorawan/ls100-1.2.3.img"]
    with pytest.raises(RepoError, match="unsigned changes"):
        repo.publish(tmp_path / "www")
    assert repo.sign() == {"targets": 2, "snapshot": 2, "timestamp": 2}
    assert repo.pending_changes() == [] and not repo.staged_path.exists()
    assert repo.sign() == {}  # nothing changed: no new versions
    repo.publish(tmp_path / "www")
    digest = hashlib.sha256(img).hexdigest()
    stored = tmp_path / "www" / "targets" / "lorawan" / f"{digest}.ls100-1.2.3.img"
    assert stored.read_bytes() == img
    names = {p.name for p in (tmp_path / "www" / "metadata").iterdir()}
    assert {"1.root.json", "root.json", "timestamp.json", "2.snapshot.json",
            "2.targets.json"} <= names
    assert not any(n.endswith(".timestamp.json") and n != "timestamp.json" for n in names)

    targets = client_targets(tmp_path / "www", repo.metadata_bytes("root", 1), tmp_path / "c")
    info = targets["lorawan/ls100-1.2.3.img"]
    assert info.length == len(img) and info.hashes == {"sha256": digest}
    assert ImageMeta.from_custom(info.path, info.custom, digest=digest, length=info.length) == meta
    # and the image downloads under its hash-prefixed name
    updater, fetcher = client(tmp_path / "www", repo.metadata_bytes("root", 1), tmp_path / "c")
    path = updater.download_target(updater.get_targetinfo("lorawan/ls100-1.2.3.img"))
    assert Path(path).read_bytes() == img
    assert fetcher.urls[-1].endswith(f"targets/lorawan/{digest}.ls100-1.2.3.img")


def test_snapshot_and_timestamp_pin_lengths_and_hashes(repo, vendor):
    repo.add_target(lorawan_image(vendor), "a.img")
    repo.sign()
    snap = repo.load("snapshot").signed
    tmeta = snap.meta["targets.json"]
    assert tmeta.version == 2
    assert tmeta.length == len(repo.metadata_bytes("targets", 2))
    assert tmeta.hashes == {"sha256": hashlib.sha256(repo.metadata_bytes("targets", 2)).hexdigest()}
    ts = repo.load("timestamp").signed
    assert ts.snapshot_meta.version == 2
    assert ts.snapshot_meta.hashes == {
        "sha256": hashlib.sha256(repo.metadata_bytes("snapshot", 2)).hexdigest()}
    # the timestamp carries both of its threshold's signatures
    assert len(repo.load("timestamp").signatures) == 2


def test_forced_roles_bump_only_what_they_must(repo, tmp_path):
    later = T0 + timedelta(hours=20)
    repo.clock = lambda: later
    assert repo.sign(["timestamp"]) == {"timestamp": 2}
    assert repo.load("timestamp").signed.expires == later + timedelta(days=1)
    assert repo.load("timestamp").signed.snapshot_meta.version == 1
    assert repo.sign(["snapshot"]) == {"snapshot": 2, "timestamp": 3}
    assert repo.sign(["root"]) == {"root": 2}
    assert repo.version("targets") == 1
    with pytest.raises(InvalidArgument, match="unknown role"):
        repo.sign(["mirror"])


def test_zigbee_and_delta_targets(repo, vendor):
    zb = zigbee_image(vendor)
    meta = repo.add_target(zb, "zigbee/plug.ota")
    assert meta.kind.value == "zigbee-ota"
    assert (meta.manufacturer_code, meta.image_type, meta.file_version) == (0x1037, 0x0102, 0x105)
    assert meta.hw_classes == (zigbee_hw_class(0x1037, 0x0102),) == ("zigbee:1037:0102",)
    assert meta.security_counter == meta.firmware_version == 0x105
    meta = repo.add_target(zb, "zigbee/plug2.ota", custom={"security_counter": 4},
                           hw_classes=[HW])
    assert meta.security_counter == 4 and meta.hw_classes == (HW,)

    base = hashlib.sha256(b"the base image").digest()
    delta = lorawan_image(vendor, base=base, payload=b"patch")
    meta = repo.add_target(delta, "lorawan/delta.img")
    assert meta.kind.value == "delta" and meta.base_digest == base.hex()
    assert repo.add_target(delta, "lorawan/delta2.img", kind="delta",
                           base_digest=base.hex()).is_delta
    meta = repo.add_target(zb, "zigbee/plug.delta", kind="delta", base_digest="ab" * 32)
    assert meta.is_delta and meta.container.value == "zigbee-ota"
    repo.sign()
    custom = repo.targets()["lorawan/delta.img"].custom
    assert custom["kind"] == "delta" and custom["base_digest"] == base.hex()


@pytest.mark.parametrize("kwargs, message", [
    (dict(hw_classes=["0b0f1c3e-0000-5000-8000-000000000001"]), "is for hardware class"),
    (dict(custom={"security_counter": 9}), "security_counter is 3 in its signed header"),
    (dict(custom={"firmware_version": 1}), "firmware_version"),
    (dict(kind="delta"), "header says envelope, not delta"),
    (dict(base_digest="ab" * 32), "has no base digest"),
    (dict(custom={"manufacturer_code": 1}), "only for Zigbee"),
])
def test_add_refuses_contradictions(repo, vendor, kwargs, message):
    with pytest.raises(InvalidArgument, match=message):
        repo.add_target(lorawan_image(vendor), "x.img", **kwargs)
    assert repo.staged() is None


def test_add_refuses_bad_files_and_names(repo, vendor, tmp_path):
    with pytest.raises(InvalidArgument, match="neither a proxyota image envelope"):
        repo.add_target(b"MZ\x90\x00 some binary", "x.bin")
    with pytest.raises(InvalidArgument, match="truncated"):
        repo.add_target(lorawan_image(vendor)[:-10], "x.img")
    with pytest.raises(InvalidArgument, match="needs --base-digest"):
        repo.add_target(zigbee_image(vendor), "x.ota", kind="delta")
    for name in ("../x.img", "/abs.img", "a//b", ".hidden", "a b", ""):
        with pytest.raises(InvalidArgument, match="target name"):
            repo.add_target(lorawan_image(vendor), name)
    assert repo.staged() is None and not any(repo.targets_dir.rglob("*.x.bin"))


def test_remove_target(repo, vendor):
    repo.add_target(lorawan_image(vendor), "a.img")
    repo.add_target(lorawan_image(vendor, counter=4), "b.img")
    repo.sign()
    assert repo.remove_target("a.img") is True
    assert repo.remove_target("nope.img") is False
    assert repo.pending_changes() == ["a.img"]
    assert repo.sign()["targets"] == 3
    assert list(repo.targets()) == ["b.img"]


def test_missing_keys_are_named_and_nothing_is_written(repo):
    for p in repo.keys_dir.glob("timestamp-*.pem"):
        p.unlink()
        break
    before = sorted(p.name for p in repo.metadata_dir.iterdir())
    with pytest.raises(MissingKeyError, match=r"timestamp needs 2 signature\(s\) but only 1"):
        repo.sign(["timestamp"])
    assert sorted(p.name for p in repo.metadata_dir.iterdir()) == before


def test_keys_from_environment(tmp_path):
    key = signing.generate_key()
    pem = signing.private_key_pem(key).decode()
    env = {env_var("targets"): pem}
    repo = TufRepository.init(tmp_path / "r", environ=env)
    assert not list(repo.keys_dir.glob("targets-*.pem"))
    assert len(list(repo.keys_dir.glob("*.pem"))) == 3
    repo.add_target(lorawan_image(signing.generate_key()), "a.img")
    assert repo.sign()["targets"] == 2
    # the same repository without the variable cannot sign targets
    repo2 = TufRepository(tmp_path / "r", environ={})
    repo2.add_target(lorawan_image(signing.generate_key(), counter=9), "b.img")
    with pytest.raises(MissingKeyError, match="PROXYOTA_TUF_TARGETS_KEY"):
        repo2.sign()
    with pytest.raises(MissingKeyError, match="holds 1 key"):
        TufRepository.init(tmp_path / "r2", thresholds={"targets": 2}, environ=env)


@pytest.mark.parametrize("role", ["targets", "timestamp", "root"])
def test_rotate_key_is_followed_by_the_client(repo, vendor, tmp_path, role):
    trusted = repo.metadata_bytes("root", 1)
    repo.add_target(lorawan_image(vendor), "a.img")
    repo.sign()
    repo.publish(tmp_path / "www")
    assert "a.img" in client_targets(tmp_path / "www", trusted, tmp_path / "c")

    old_root = repo.root()
    old_ids = list(old_root.roles[role].keyids)
    written = repo.rotate_key(role)
    assert written["root"] == 2
    new_root = repo.root()
    new_ids = new_root.roles[role].keyids
    assert len(new_ids) == len(old_ids) and not set(new_ids) & set(old_ids)
    assert not set(old_ids) & set(new_root.keys)
    # N+1.root.json verifies under the old root (and under itself)
    md = repo.load("root", 2)
    old_root.verify_delegate(Root.type, md.signed_bytes, md.signatures)
    new_root.verify_delegate(Root.type, md.signed_bytes, md.signatures)
    if role == "root":
        assert set(md.signatures) == set(old_ids) | set(new_ids)
    else:
        assert repo.load(role).signed.version == written[role]
        assert set(repo.load(role).signatures) == set(new_ids)
    # old private keys are retired, the new ones are 0600 files
    retired = {p.name.split("-", 1)[1][:-4] for p in (repo.keys_dir / "retired").glob("*.pem")}
    assert retired == set(old_ids)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600
               for k in new_ids for p in repo.keys_dir.glob(f"*-{k}.pem"))

    repo.add_target(lorawan_image(vendor, counter=4), "b.img")
    repo.sign(["root"] if role == "root" else [])  # root v3: signed by the new root key alone
    repo.publish(tmp_path / "www")
    # a client that trusted only root v1 (and already synced once) follows the rotation
    assert set(client_targets(tmp_path / "www", trusted, tmp_path / "c")) == {"a.img", "b.img"}
    state_root = Metadata.from_bytes((tmp_path / "c" / "root.json").read_bytes())
    assert state_root.signed.version == repo.version("root")
    # and so does a fresh one
    assert set(client_targets(tmp_path / "www", trusted, tmp_path / "fresh")) == {"a.img", "b.img"}


def test_rotate_with_given_key_and_refusals(repo):
    key = signing.generate_key()
    written = repo.rotate_key("snapshot", new_keys=[signing.private_key_pem(key)])
    assert written == {"root": 2, "snapshot": 2, "timestamp": 2}
    with pytest.raises(InvalidArgument, match="already a snapshot key"):
        repo.rotate_key("snapshot", new_keys=[signing.private_key_pem(key)])
    with pytest.raises(InvalidArgument, match="give at least 2"):
        repo.rotate_key("timestamp", new_keys=[signing.private_key_pem(signing.generate_key())])
    for p in repo.keys_dir.glob("root-*.pem"):
        p.unlink()
    with pytest.raises(MissingKeyError, match="root needs 1"):
        repo.rotate_key("targets")
    assert repo.version("root") == 2


def test_expiry_follows_the_clock_and_publish_refuses_expired(tmp_path):
    past = (datetime.now(timezone.utc) - timedelta(days=30)).replace(microsecond=0)
    repo = TufRepository.init(tmp_path / "r", clock=lambda: past)
    assert repo.load("timestamp").signed.expires == past + timedelta(days=1)
    repo.publish(tmp_path / "www")  # still valid at the repository's own time
    now_repo = TufRepository(tmp_path / "r")
    assert now_repo.status()["roles"]["timestamp"]["expired"] is True
    with pytest.raises(RepoError, match=r"expired: snapshot v1 .*, timestamp v1 .*"
                                        r"--role snapshot --role timestamp"):
        now_repo.publish(tmp_path / "www2")
    assert now_repo.sign(["timestamp"]) == {"timestamp": 2}
    with pytest.raises(RepoError, match=r"expired: snapshot v1 \(at"):
        now_repo.publish(tmp_path / "www2")
    assert now_repo.sign(["snapshot"]) == {"snapshot": 2, "timestamp": 3}
    now_repo.publish(tmp_path / "www2")
    # python-tuf's client agrees: the first output is expired, the second is fine
    with pytest.raises(tuf_exc.ExpiredMetadataError):
        client_targets(tmp_path / "www", repo.metadata_bytes("root", 1), tmp_path / "c1")
    assert client_targets(tmp_path / "www2", repo.metadata_bytes("root", 1), tmp_path / "c2") == {}


def test_publish_keeps_keys_out_of_the_web_root(repo, tmp_path):
    with pytest.raises(InvalidArgument, match="private keys"):
        repo.publish(repo.keys_dir)
    with pytest.raises(InvalidArgument, match="private keys"):
        repo.publish(tmp_path)  # the repository (and its keys) would lie inside
    with pytest.raises(InvalidArgument):
        repo.publish(repo.path)
    first = repo.publish(tmp_path / "www")
    assert repo.publish(tmp_path / "www") == []  # idempotent: nothing rewritten
    assert first[-1].name == "timestamp.json"  # written last


def test_signed_versions_are_never_rewritten(repo, vendor):
    def snapshot_files():
        return {p.name: p.read_bytes() for p in repo.metadata_dir.iterdir()}

    before = snapshot_files()
    repo.add_target(lorawan_image(vendor), "a.img")
    repo.sign()
    repo.rotate_key("targets")
    repo.sign(["timestamp", "root"])
    after = snapshot_files()
    assert all(after[name] == data for name, data in before.items())
    assert len(after) == len(before) + 9


def test_hashed_target_path():
    assert hashed_target_path("a/b/c.img", "ff") == "a/b/ff.c.img"
    assert hashed_target_path("c.img", "ff") == "ff.c.img"
