"""The project's own exception hierarchy.

Every piece of bad input (a frame, a file, an API call, a config) is reported with one of
these, naming what is wrong; callers can catch ``ProxyotaError`` for all of them.
"""


class ProxyotaError(Exception):
    """Base of every error proxyota raises on purpose."""


class InvalidArgument(ProxyotaError, ValueError):
    """An argument given to an API is out of range or of the wrong shape."""


class DecodeError(ProxyotaError, ValueError):
    """Bytes could not be decoded: truncated, reserved value, unknown command.

    ``command`` names the command (or structure) being decoded and ``offset`` the byte
    offset in the payload where decoding failed, when known.
    """

    def __init__(self, message: str, *, command: str | None = None, offset: int | None = None):
        self.command = command
        self.offset = offset
        where = []
        if command is not None:
            where.append(command)
        if offset is not None:
            where.append(f"byte {offset}")
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")
