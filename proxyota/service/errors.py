"""The error a service request is refused with (:class:`ApiError`): an HTTP status, the
offending field and a message, which the API turns into its JSON error body."""

from __future__ import annotations

from typing import Any

from proxyota.errors import ProxyotaError

__all__ = ["ApiError"]


class ApiError(ProxyotaError):
    """A request the service refuses: HTTP ``status``, the offending ``field`` if any."""

    def __init__(self, status: int, message: str, *, field: str | None = None,
                 details: Any = None) -> None:
        self.status = status
        self.field = field
        self.message = message
        self.details = details
        super().__init__(f"{field}: {message}" if field else message)
