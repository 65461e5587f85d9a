"""Service configuration: every bad key is refused with its section and name in the
message; secrets come from the environment and never show in repr; the example configs
validate."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from proxyota.images.signing import generate_key, public_key_pem
from proxyota.service.config import ConfigError, load_config, parse_config
from proxyota.service.logging import SecretRegistry

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PROXYOTA_API_TOKEN": "api-token-0123456789", "CHIRPSTACK_API_TOKEN": "cs-token-abcdef"}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    root = tmp_path / "root.json"
    root.write_text("{}")
    pub = tmp_path / "vendor.pub"
    pub.write_bytes(public_key_pem(generate_key()))
    keys = tmp_path / "keys.toml"
    keys.write_text('"0102030405060708" = {gen_app_key = "00112233445566778899aabbccddeeff"}\n')
    return {"root": str(root), "pub": str(pub), "keys": str(keys), "tmp": str(tmp_path)}


def base(files: dict[str, str]) -> dict[str, Any]:
    return {
        "service": {"state_db": f"{files['tmp']}/state.db"},
        "api": {"listen": "127.0.0.1:8710", "token_env": "PROXYOTA_API_TOKEN"},
        "images": {"tuf_repo_url": "http://127.0.0.1:9/repo", "trusted_root": files["root"],
                   "metadata_dir": f"{files['tmp']}/tuf", "cache_dir": f"{files['tmp']}/img",
                   "hardware_classes": ["669d8e58-f8b1-5858-826a-2ee7071abf7b"],
                   "vendor_keys": [files["pub"]]},
        "chirpstack": {"server": "127.0.0.1:8080", "api_token_env": "CHIRPSTACK_API_TOKEN",
                       "application_id": "5e0e1d64-7b2b-4a9d-9b7e-3f1f6c2a9d10",
                       "integration_listen": "127.0.0.1:8090"},
        "lorawan": {"multicast_dr": 5, "multicast_frequency": 869525000},
    }


def parse(doc: dict, env: dict | None = None) -> Any:
    return parse_config(doc, source="test.toml", env=ENV if env is None else env,
                        registry=SecretRegistry())


def test_base_config_parses(files: dict[str, str]) -> None:
    cfg = parse(base(files))
    assert cfg.api.listen.port == 8710 and cfg.api.listen.loopback
    assert cfg.api.require_token_for_reads is False
    assert cfg.images.metadata_url == "http://127.0.0.1:9/repo/metadata/"
    assert cfg.images.targets_url == "http://127.0.0.1:9/repo/targets/"
    assert cfg.chirpstack is not None and cfg.chirpstack.integration_path == "/integration"
    assert cfg.lorawan.values["dr"] == 5
    assert cfg.service.clock.kind == "real"
    # secrets: revealed on request only
    assert cfg.api.token.reveal() == ENV["PROXYOTA_API_TOKEN"]
    assert ENV["PROXYOTA_API_TOKEN"] not in repr(cfg)
    assert ENV["CHIRPSTACK_API_TOKEN"] not in repr(cfg) + str(cfg.summary())


def test_non_loopback_api_requires_token_for_reads(files: dict[str, str]) -> None:
    doc = base(files)
    doc["api"]["listen"] = "0.0.0.0:8710"
    assert parse(doc).api.require_token_for_reads is True
    doc["api"]["require_token_for_reads"] = False
    assert parse(doc).api.require_token_for_reads is False


def test_scaled_clock_and_defaults(files: dict[str, str]) -> None:
    doc = base(files)
    doc["service"]["clock"] = {"scaled": 200.0, "origin_unix": 1_700_000_000.0,
                               "origin_gps": 1_400_000_000.0}
    clock = parse(doc).service.clock
    assert (clock.kind, clock.rate, clock.origin_gps) == ("scaled", 200.0, 1_400_000_000.0)
    built = clock.build()
    assert built.rate == 200.0


def test_secrets_are_registered_for_redaction(files: dict[str, str]) -> None:
    registry = SecretRegistry()
    parse_config(base(files), source="t", env=ENV, registry=registry)
    assert ENV["PROXYOTA_API_TOKEN"] in registry
    assert ENV["CHIRPSTACK_API_TOKEN"] in registry


def _set(doc: dict, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()

BAD: list[tuple[str, Any, str]] = [
    ("service", _DELETE, "[service]: section is required"),
    ("servce", {}, "top level servce: unknown section (did you mean [service]?)"),
    ("service.state_dbb", "x", "[service] state_dbb: unknown key (did you mean 'state_db'?)"),
    ("service.state_db", 5, "[service] state_db: must be a non-empty string"),
    ("service.log_level", "loud", "[service] log_level: must be one of"),
    ("service.log_format", "xml", "[service] log_format"),
    ("service.shutdown_grace", 0, "[service] shutdown_grace: must be > 0"),
    ("service.clock", "fast", "[service] clock: must be \"real\" or a table"),
    ("service.clock", {"scaled": -1, "origin_unix": 0}, "[service] clock.scaled"),
    ("service.clock", {"scaled": 10, "origin_unix": "now"}, "[service] clock.origin_unix"),
    ("service.clock", {"scaled": 10, "speed": 2}, "[service] clock.speed: unknown key"),
    ("api", _DELETE, "[api]: section is required"),
    ("api.listen", "8080", "[api] listen: must be HOST:PORT"),
    ("api.listen", "127.0.0.1:70000", "[api] listen: port must be 0..65535"),
    ("api.token_env", "NOPE_NOT_SET", "[api] token_env: environment variable NOPE_NOT_SET is not set"),
    ("api.token_env", "bad name", "[api] token_env: must name an environment variable"),
    ("api.require_token_for_reads", "yes", "[api] require_token_for_reads: must be true or false"),
    ("api.max_body_bytes", 10, "[api] max_body_bytes: must be in 1024.."),
    ("api.tokn_env", "X", "[api] tokn_env: unknown key (did you mean 'token_env'?)"),
    ("images.tuf_repo_url", "ftp://example.com/", "[images] tuf_repo_url: must be an http:// or https:// URL"),
    ("images.tuf_repo_url", _DELETE, "[images] tuf_repo_url: is required"),
    ("images.trusted_root", "/nonexistent/root.json", "[images] trusted_root: file"),
    ("images.hardware_classes", [], "[images] hardware_classes: must name at least one"),
    ("images.hardware_classes", ["not-a-class"], "[images] hardware_classes"),
    ("images.vendor_keys", [], "[images] vendor_keys: must list at least one"),
    ("images.vendor_keys", ["/nonexistent.pub"], "[images] vendor_keys: file"),
    ("images.cache_max_bytes", "big", "[images] cache_max_bytes: must be an integer"),
    ("images.refresh_interval", -5, "[images] refresh_interval"),
    ("chirpstack.server", "nohost", "[chirpstack] server: must be HOST:PORT"),
    ("chirpstack.application_id", "app-1", "[chirpstack] application_id: must be a UUID"),
    ("chirpstack.api_token_env", "UNSET_TOKEN_VAR", "[chirpstack] api_token_env: environment variable"),
    ("chirpstack.integration_listen", "somewhere", "[chirpstack] integration_listen"),
    ("chirpstack.integration_path", "integration", "[chirpstack] integration_path: must start with '/'"),
    ("chirpstack.gateway_ids", ["xyz"], "[chirpstack] gateway_ids: each gateway id must be 16 hex"),
    ("chirpstack.class_c_scheduling_type", "SOON", "[chirpstack] class_c_scheduling_type"),
    ("chirpstack.device_keys", "file", "[chirpstack] device_keys_file: is required"),
    ("chirpstack.device_keys", "vault", "[chirpstack] device_keys: must be one of"),
    ("chirpstack.ca_cert", "/nonexistent.pem", "[chirpstack] ca_cert: file"),
    ("chirpstack.tls", "on", "[chirpstack] tls: must be true or false"),
    ("lorawan.multicast_dr", 99, "[lorawan] multicast_dr"),
    ("lorawan.multicast_frequency", 1, "[lorawan] multicast_frequency"),
    ("lorawan.dr", 5, "[lorawan] dr: unknown key (did you mean 'multicast_dr'?)"),
    ("lorawan.frag_size", 500, "[lorawan] frag_size: must be 1..239"),
    ("lorawan.region", "MARS", "[lorawan] region"),
    ("lorawan.device_class", "A", "[lorawan] device_class"),
    ("lorawan.frag_versions", [3], "[lorawan] frag_versions"),
    ("lorawan.timeouts", {"answer": -1}, "[lorawan] timeouts.answer"),
    ("lorawan.timeouts", {"anser": 10}, "[lorawan] timeouts.anser: unknown timeout"),
    ("lorawan.reboot", {"mode": "never"}, "[lorawan] reboot.mode"),
    ("lorawan.block_ack_delay", 9, "[lorawan] block_ack_delay"),
    ("lorawan.bogus", 1, "[lorawan] bogus: unknown option"),
    ("zigbee", {"enable": False}, "[zigbee] enable: unknown key"),
    ("zigbee", {"enabled": True, "radio": "cc2531"}, "[zigbee] radio: must be one of 'ezsp'"),
    ("zigbee", {"enabled": True, "radio": "znp"}, "[zigbee] radio: 'znp' needs the zigpy-znp package"),
    ("zigbee", {"enabled": True, "radio": "emulated", "device": "/dev/ttyUSB0"},
     "[zigbee] device: radio \"emulated\" needs device = \"emulated:NAME\""),
    ("zigbee", {"enabled": "yes"}, "[zigbee] enabled: must be true or false"),
    ("zigbee", {"enabled": True, "baudrate": 9}, "[zigbee] baudrate: must be in 1200..4000000"),
    ("zigbee", {"flow_control": "rts"}, "[zigbee] flow_control: must be one of"),
    ("zigbee", {"aps_max_payload": 200}, "[zigbee] aps_max_payload: must be in 20..127"),
    ("zigbee", {"open_timeout": 0}, "[zigbee] open_timeout: must be > 0"),
    ("zigbee", {"max_concurrent": 0}, "[zigbee] max_concurrent: max_concurrent must be an integer >= 1"),
    ("zigbee", {"max_concurrent": "4"}, "[zigbee] max_concurrent: must be download slots"),
    ("zigbee", {"notify": "shout"}, "[zigbee] notify: must be one of unicast, broadcast, none"),
    ("zigbee", {"upgrade_delay": -5}, "[zigbee] upgrade_delay: must be >= 0"),
    ("zigbee", {"max_block_size": 300}, "[zigbee] max_block_size: max_block_size must be an integer 1..255"),
    ("zigbee", {"min_wait": 60.0, "max_wait": 10.0}, "[zigbee] max_wait: max_wait must be >= 60.0"),
    ("zigbee", {"device_classes": {"sleepy": {"stall_timeout": -1}}},
     "[zigbee] device_classes.sleepy.stall_timeout: stall_timeout must be > 0"),
    ("zigbee", {"device_classes": {"sleepy": {"stall_timout": 60}}},
     "[zigbee] device_classes.sleepy.stall_timout: unknown field"),
    ("zigbee", {"device_classes": {"fridge": {}}}, "[zigbee] device_classes.fridge: unknown device class"),
    ("zigbee", {"stall_timeout": 30}, "[zigbee] stall_timeout: unknown key"),
    ("zigbee", {"max_concurent": 3}, "[zigbee] max_concurent: unknown key (did you mean 'max_concurrent'?)"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=[b[0] + ":" + str(i) for i, b in enumerate(BAD)])
def test_bad_key_is_named(files: dict[str, str], path: str, value: Any, message: str) -> None:
    doc = copy.deepcopy(base(files))
    _set(doc, path, value)
    with pytest.raises(ConfigError) as err:
        parse(doc)
    assert message in str(err.value)
    assert str(err.value).startswith("test.toml: ")


def test_short_api_token_refused(files: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"\[api\] token_env: the API token must be at least 16"):
        parse(base(files), env={**ENV, "PROXYOTA_API_TOKEN": "short"})


def test_keys_file_mode(files: dict[str, str]) -> None:
    doc = base(files)
    doc["chirpstack"].update(device_keys="file", device_keys_file=files["keys"])
    assert parse(doc).chirpstack.device_keys_file == Path(files["keys"])


def test_toml_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[service\nstate_db = 1\n")
    with pytest.raises(ConfigError, match="bad.toml: top level: not valid TOML"):
        load_config(bad, env=ENV)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", env=ENV)


def _with_local_files(doc: dict, files: dict[str, str]) -> dict:
    doc = copy.deepcopy(doc)
    doc["images"]["trusted_root"] = files["root"]
    doc["images"]["vendor_keys"] = [files["pub"]]
    return doc


def test_example_chirpstack_config_validates(files: dict[str, str]) -> None:
    doc = tomllib.loads((ROOT / "configs" / "chirpstack.toml").read_text())
    cfg = parse(_with_local_files(doc, files))
    assert cfg.chirpstack is not None and cfg.chirpstack.device_keys == "chirpstack"
    assert cfg.lorawan.values["frag_versions"] == [2, 1]
    assert cfg.lorawan.timeouts.answer == 600.0


def test_example_zigbee_config_validates(files: dict[str, str]) -> None:
    doc = tomllib.loads((ROOT / "configs" / "zigbee.toml").read_text())
    cfg = parse(_with_local_files(doc, files))
    z = cfg.zigbee
    assert z.enabled and z.radio == "ezsp" and z.device.startswith("/dev/serial/by-id/")
    assert z.baudrate == 115200 and z.flow_control is None and z.open_timeout == 60.0
    assert z.database == Path("/var/lib/proxyota/zigbee.db")
    assert z.defaults["max_concurrent"] == 4
    assert z.defaults["device_classes"]["sleepy"]["stall_timeout"] == 900.0
    assert cfg.chirpstack is None and cfg.images.hardware_classes == ("zigbee:117c:0101",)
    assert cfg.summary()["zigbee"]["radio"] == "ezsp"


def test_zigbee_section_defaults(files: dict[str, str]) -> None:
    assert parse(base(files)).zigbee.enabled is False
    doc = base(files)
    doc["zigbee"] = {"enabled": True, "flow_control": "hardware", "notify": "broadcast"}
    z = parse(doc).zigbee
    assert z.radio == "ezsp" and z.device == "auto" and z.flow_control == "hardware"
    assert z.database == Path(files["tmp"]) / "zigbee.db"  # next to the state database
    assert z.defaults == {"notify": "broadcast"}


def test_cli_check(files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    from proxyota.cli import main
    from tests.service.harness import write_toml

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    path = write_toml(tmp_path / "svc.toml", base(files))
    assert main(["serve", "--config", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert '"api": "127.0.0.1:8710"' in out and ENV["PROXYOTA_API_TOKEN"] not in out
    doc = base(files)
    doc["api"]["listen"] = "nope"
    write_toml(path, doc)
    assert main(["serve", "--config", str(path), "--check"]) == 1
    assert "[api] listen" in capsys.readouterr().err
