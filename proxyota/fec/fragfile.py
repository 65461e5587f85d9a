"""A plain-text fragment file, so FEC runs can be scripted and inspected with shell tools.

Line 1 is a header, then one line per fragment, ``N HEX`` (N is the 1-based counter)::

    # proxyota-fec scheme=ts004 version=1 nb_frag=4 frag_size=8 redundancy=2 length=30 sha256=…
    1 00112233…
    …

Dropping lines simulates lost fragments (``grep -v``, ``shuf | head``); ``proxyota fec decode``
rebuilds the file from whatever lines remain, and checks the length and SHA-256 recorded in the
header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from proxyota.errors import DecodeError

MAGIC = "# proxyota-fec"
SCHEMES = ("ts004", "rs")


@dataclass(frozen=True)
class FragHeader:
    scheme: str
    version: int
    nb_frag: int
    frag_size: int
    redundancy: int
    length: int
    sha256: str

    def line(self) -> str:
        return (
            f"{MAGIC} scheme={self.scheme} version={self.version} nb_frag={self.nb_frag} "
            f"frag_size={self.frag_size} redundancy={self.redundancy} length={self.length} "
            f"sha256={self.sha256}"
        )


def dump(header: FragHeader, fragments: Iterable[tuple[int, bytes]]) -> str:
    lines = [header.line()]
    lines.extend(f"{n} {payload.hex()}" for n, payload in fragments)
    return "\n".join(lines) + "\n"


def _header(line: str) -> FragHeader:
    if not line.startswith(MAGIC + " "):
        raise DecodeError(f"first line must start with {MAGIC!r}", command="fragment file", offset=0)
    fields: dict[str, str] = {}
    for item in line[len(MAGIC) :].split():
        key, sep, value = item.partition("=")
        if not sep:
            raise DecodeError(f"header item {item!r} is not key=value", command="fragment file")
        fields[key] = value
    try:
        header = FragHeader(
            scheme=fields["scheme"],
            version=int(fields["version"]),
            nb_frag=int(fields["nb_frag"]),
            frag_size=int(fields["frag_size"]),
            redundancy=int(fields["redundancy"]),
            length=int(fields["length"]),
            sha256=fields["sha256"],
        )
    except KeyError as exc:
        raise DecodeError(f"header lacks {exc.args[0]!r}", command="fragment file") from None
    except ValueError as exc:
        raise DecodeError(f"header has a bad number: {exc}", command="fragment file") from None
    if header.scheme not in SCHEMES:
        raise DecodeError(f"unknown scheme {header.scheme!r}", command="fragment file")
    return header


def load(text: str) -> tuple[FragHeader, list[tuple[int, bytes]]]:
    """Parse a fragment file; errors name the line."""
    lines = text.splitlines()
    if not lines:
        raise DecodeError("file is empty", command="fragment file")
    header = _header(lines[0])
    frags: list[tuple[int, bytes]] = []
    for lineno, line in enumerate(lines[1:], start=2):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        n_text, _, hex_text = line.partition(" ")
        try:
            n = int(n_text)
            payload = bytes.fromhex(hex_text)
        except ValueError:
            raise DecodeError(f"line {lineno} is not 'N HEX'", command="fragment file") from None
        frags.append((n, payload))
    return header, frags
