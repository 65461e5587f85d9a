"""Structured logging for the service that never prints a key or a token.

Every record leaving the service goes through one handler on the root logger with a
:class:`RedactingFilter` and either the :class:`JsonFormatter` (one JSON object per line:
``time``, ``level``, ``logger``, ``message``, the record's ``extra`` fields and ``exc``)
or a plain text formatter. Redaction happens in three ways, before formatting:

* every secret registered with :data:`SECRETS` (API tokens, device root keys, multicast
  keys: as given, and for byte strings as lower/upper-case hex, base64 and ``repr``) is
  replaced by
  ``[REDACTED]`` wherever it appears: message, arguments, extra fields, tracebacks;
* ``Bearer <anything>`` becomes ``Bearer [REDACTED]`` (a token we were never told about);
* an ``extra`` field whose name says it is secret (``key``, ``token``, ``secret``,
  ``password``, ``authorization``, ``*_key``...) is replaced whatever its value.

The service registers each secret as soon as it reads it (config, ChirpStack ``GetKeys``,
``os.urandom`` McKey), so a later log line cannot leak it even by accident.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
import threading
import time
from typing import IO, Any, Iterable

__all__ = [
    "SECRETS",
    "JsonFormatter",
    "RedactingFilter",
    "SecretRegistry",
    "redact",
    "setup_logging",
]

REDACTED = "[REDACTED]"
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
_SECRET_NAME = re.compile(r"(?i)(^|_)(key|keys|token|secret|password|passwd|authorization|auth)($|_)|"
                          r"(app|nwk|mc|gen)_?key")
#: attributes every LogRecord has; anything else on a record is an ``extra`` field
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


class SecretRegistry:
    """The secrets to strip from every log line (thread-safe, grows only)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, secret: str | bytes | bytearray | None) -> None:
        """Register a secret; bytes are registered as hex (both cases) and base64 too."""
        if secret is None:
            return
        forms: set[str] = set()
        if isinstance(secret, (bytes, bytearray, memoryview)):
            raw = bytes(secret)
            if not raw or not any(raw):
                return  # empty or all-zero: not a secret worth matching (and matches too much)
            forms |= {raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode(),
                      base64.urlsafe_b64encode(raw).decode().rstrip("="),
                      repr(raw)[2:-1]}  # what %r of the bytes shows
        else:
            text = str(secret)
            if len(text) < 4:
                return  # too short to redact without mangling ordinary words
            forms.add(text)
        with self._lock:
            new = forms - self._values
            if not new:
                return
            self._values |= new
            alternatives = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in alternatives))

    def __contains__(self, text: str) -> bool:
        return text in self._values

    def __len__(self) -> int:
        return len(self._values)

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
        return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)


#: the process-wide registry the service fills
SECRETS = SecretRegistry()


def redact(value: Any, registry: SecretRegistry = SECRETS) -> Any:
    """``value`` with secrets replaced (strings, and strings inside lists / dicts)."""
    if isinstance(value, str):
        return registry.redact(value)
    if isinstance(value, (bytes, bytearray)):
        return registry.redact(bytes(value).hex())
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and _SECRET_NAME.search(k) else redact(v, registry))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, registry) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return registry.redact(repr(value))


class RedactingFilter(logging.Filter):
    """Rewrite a record in place so no handler can format a secret out of it."""

    def __init__(self, registry: SecretRegistry = SECRETS) -> None:
        super().__init__()
        self.registry = registry

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad format string must not kill logging
            message = f"{record.msg!r} (unformattable: {type(exc).__name__})"
        record.msg = self.registry.redact(message)
        record.args = None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.registry.redact(text)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.registry.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.registry.redact(record.stack_info)
        for name in list(vars(record)):
            if name in _STANDARD_ATTRS:
                continue
            value = getattr(record, name)
            if _SECRET_NAME.search(name):
                setattr(record, name, REDACTED)
            else:
                setattr(record, name, redact(value, self.registry))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line (UTC wall time, level, logger, message, extra fields)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD_ATTRS and name not in doc:
                doc[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return json.dumps(doc, default=str, ensure_ascii=False, separators=(",", ":"))


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in sorted(extra.items()))
        return line


_HANDLER_MARK = "_proxyota_service_handler"


def setup_logging(
    level: str = "info",
    fmt: str = "json",
    *,
    stream: IO[str] | None = None,
    registry: SecretRegistry = SECRETS,
    quiet: Iterable[str] = ("aiohttp.access",),
) -> logging.Handler:
    """Install the service's handler on the root logger (replacing a previous one)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(RedactingFilter(registry))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    return handler
