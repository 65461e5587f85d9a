"""Structured logging never prints a registered secret, a bearer token or a secret-named
field, whatever way it reaches the record (message, arguments, extra, traceback)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from proxyota.service.logging import JsonFormatter, RedactingFilter, SecretRegistry, redact, setup_logging

KEY = bytes.fromhex("8f1e2d3c4b5a69788796a5b4c3d2e1f0")
TOKEN = "svc-token-5d8e2f7a9b1c"


@pytest.fixture
def capture() -> tuple[logging.Logger, io.StringIO, SecretRegistry]:
    registry = SecretRegistry()
    registry.add(KEY)
    registry.add(TOKEN)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(registry))
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("proxyota.test.redaction")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream, registry


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_registered_secrets_never_appear(capture) -> None:
    logger, stream, _ = capture
    logger.info("key %s token %s", KEY.hex(), TOKEN)
    logger.info("upper %s", KEY.hex().upper())
    logger.info("bytes repr %r", KEY)
    logger.info("in a dict", extra={"detail": {"payload": "00" + KEY.hex() + "ff", "n": 3}})
    logger.warning("list", extra={"items": [TOKEN, 1]})
    try:
        raise ValueError(f"bad key {KEY.hex()}")
    except ValueError:
        logger.exception("failed with %s", TOKEN)
    text = stream.getvalue()
    assert KEY.hex() not in text and KEY.hex().upper() not in text and TOKEN not in text
    out = lines(stream)
    assert out[2]["message"] == "bytes repr b'[REDACTED]'"
    assert out[0]["message"] == "key [REDACTED] token [REDACTED]"
    assert out[3]["detail"] == {"payload": "00[REDACTED]ff", "n": 3}
    assert out[4]["items"] == ["[REDACTED]", 1]
    assert "[REDACTED]" in out[5]["exc"] and out[5]["level"] == "error"


def test_bearer_and_secret_named_fields(capture) -> None:
    logger, stream, _ = capture
    logger.info("header Authorization: Bearer abc.def-unknown")
    logger.info("fields", extra={"mc_key": "anything", "api_token": "x", "gen_app_key": "y",
                                 "dev_eui": "70b3d57ed0000001", "keys": {"nwk_key": "z"}})
    out = lines(stream)
    assert out[0]["message"] == "header Authorization: Bearer [REDACTED]"
    assert out[1]["mc_key"] == out[1]["api_token"] == out[1]["gen_app_key"] == "[REDACTED]"
    assert out[1]["keys"] == "[REDACTED]"
    assert out[1]["dev_eui"] == "70b3d57ed0000001"


def test_base64_form_of_a_key_is_redacted(capture) -> None:
    import base64

    logger, stream, _ = capture
    logger.info("b64 %s", base64.b64encode(KEY).decode())
    assert base64.b64encode(KEY).decode() not in stream.getvalue()


def test_registry_ignores_trivial_values() -> None:
    reg = SecretRegistry()
    reg.add(b"")
    reg.add(bytes(16))  # ChirpStack's "unset" key
    reg.add("ab")
    reg.add(None)
    assert len(reg) == 0
    assert reg.redact("00000000000000000000000000000000 ab") == "00000000000000000000000000000000 ab"


def test_redact_nested_values() -> None:
    reg = SecretRegistry()
    reg.add(TOKEN)
    assert redact({"a": [TOKEN, {"token": "x"}], "b": 1.5}, reg) == {
        "a": ["[REDACTED]", {"token": "[REDACTED]"}], "b": 1.5}


def test_setup_logging_installs_one_redacting_handler() -> None:
    reg = SecretRegistry()
    reg.add(TOKEN)
    stream = io.StringIO()
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        setup_logging("info", "text", stream=stream, registry=reg)
        setup_logging("info", "json", stream=stream, registry=reg)  # replaces, not adds
        ours = [h for h in root.handlers if h not in before]
        assert len(ours) == 1
        logging.getLogger("proxyota.anything").info("token=%s", TOKEN)
        logging.getLogger("proxyota.anything").debug("hidden at info level")
        assert TOKEN not in stream.getvalue()
        assert json.loads(stream.getvalue().splitlines()[-1])["message"] == "token=[REDACTED]"
        assert "hidden" not in stream.getvalue()
    finally:
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)
        root.setLevel(level)
