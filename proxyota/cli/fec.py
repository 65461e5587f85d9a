"""``proxyota fec encode|decode``: fragment a file with FEC, and rebuild it from what survives."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from proxyota.errors import InvalidArgument
from proxyota.fec import blocks, fragfile


def parse_redundancy(text: str, nb_frag: int) -> int:
    """``"20%"`` of NbFrag (rounded up) or a plain count of coded fragments."""
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            if pct < 0:
                raise ValueError
            return -int(-pct * nb_frag // 100)
        value = int(text)
        if value < 0:
            raise ValueError
        return value
    except ValueError:
        raise InvalidArgument(
            f"--redundancy must be a count or a percentage like 20%, got {text!r}"
        ) from None


def _codec(scheme: str):
    if scheme == "ts004":
        from proxyota.fec import ts004

        return ts004
    from proxyota.fec import rs

    return rs


def _encode(args: argparse.Namespace) -> int:
    data = Path(args.input).read_bytes()
    if not data:
        raise InvalidArgument(f"{args.input} is empty")
    blocks.check_frag_size(args.frag_size)
    nb = blocks.nb_frag(len(data), args.frag_size)
    redundancy = parse_redundancy(args.redundancy, nb)
    codec = _codec(args.scheme)
    if args.scheme == "ts004":
        frags = codec.encode(data, args.frag_size, redundancy, version=args.version)
    else:
        frags = codec.encode(data, args.frag_size, redundancy)
    header = fragfile.FragHeader(
        scheme=args.scheme,
        version=args.version if args.scheme == "ts004" else 1,
        nb_frag=nb,
        frag_size=args.frag_size,
        redundancy=redundancy,
        length=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    text = fragfile.dump(header, enumerate(frags, start=1))
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        print(
            f"{args.input}: {len(data)} bytes -> {nb} fragments of {args.frag_size} bytes "
            f"+ {redundancy} coded ({args.scheme}"
            f"{' v' + str(args.version) if args.scheme == 'ts004' else ''}) -> {args.out}",
            file=sys.stderr,
        )
    return 0


def _decode(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.input == "-" else Path(args.input).read_text()
    header, frags = fragfile.load(text)
    codec = _codec(header.scheme)
    if header.scheme == "ts004":
        dec = codec.Decoder(header.nb_frag, header.frag_size, version=header.version)
    else:
        dec = codec.Decoder(header.nb_frag, header.frag_size, header.redundancy)
    for n, payload in frags:
        if dec.push(n, payload):
            break
    if not dec.complete:
        print(
            f"incomplete: {dec.received} distinct fragments of {header.nb_frag} needed "
            f"(rank {getattr(dec, 'rank', '?')}); send more coded fragments",
            file=sys.stderr,
        )
        return 1
    data = dec.data[: header.length]
    digest = hashlib.sha256(data).hexdigest()
    if digest != header.sha256:
        print(f"decoded block does not match the header's sha256 ({digest})", file=sys.stderr)
        return 1
    if args.out == "-":
        sys.stdout.buffer.write(data)
    else:
        Path(args.out).write_bytes(data)
    print(
        f"complete after {dec.received} fragments (NbFrag {header.nb_frag}, overhead "
        f"{dec.received - header.nb_frag}); sha256 ok; {len(data)} bytes -> {args.out}",
        file=sys.stderr,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fec", help="FEC-fragment a file and decode it back")
    sub = parser.add_subparsers(dest="fec_command", metavar="SUBCOMMAND", required=True)

    enc = sub.add_parser("encode", help="file -> fragment file (one 'N HEX' line per fragment)")
    enc.add_argument("input", help="file to fragment")
    enc.add_argument("--out", "-o", default="-", help="fragment file to write (default stdout)")
    enc.add_argument("--frag-size", type=int, default=48, help="bytes per fragment (1..255)")
    enc.add_argument("--redundancy", default="20%",
                     help="coded fragments: a count, or a percentage of NbFrag (default 20%%)")
    enc.add_argument("--version", type=int, choices=(1, 2), default=1,
                     help="TS004 parity matrix version (ts004 scheme only)")
    enc.add_argument("--scheme", choices=fragfile.SCHEMES, default="ts004",
                     help="ts004 = LoRa Alliance parity code (FragAlgo 0); rs = Reed-Solomon")
    enc.set_defaults(func=_encode)

    dec = sub.add_parser("decode", help="fragment file (lines may be missing) -> file")
    dec.add_argument("input", help="fragment file, or - for stdin")
    dec.add_argument("--out", "-o", required=True, help="file to write, or - for stdout")
    dec.set_defaults(func=_decode)
