"""``proxyota lorawan``: decode and encode LoRaWAN application-layer frames (TS003-TS006).

    proxyota lorawan decode --fport 201 --uplink [--version 2] [--lenient] 0100c48001
    proxyota lorawan encode --fport 201 --downlink --version 2 '[{"command": ...}]'
    echo '[...]' | proxyota lorawan encode --fport 200 --downlink -

``decode`` prints a JSON list of command objects (see :mod:`proxyota.lorawan.applayer`);
``encode`` takes the same list (from the argument, or stdin when it is ``-``) and prints
the FRMPayload as hex.
"""

from __future__ import annotations

import argparse
import json
import sys

from proxyota.errors import InvalidArgument
from proxyota.lorawan.applayer import DOWNLINK, UPLINK, decode, encode_commands, from_json, to_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lorawan", help="decode/encode LoRaWAN application-layer frames (TS003-TS006)")
    sub = parser.add_subparsers(dest="lorawan_command", metavar="COMMAND")
    parser.set_defaults(func=lambda _args: _usage(parser))

    dec = sub.add_parser("decode", help="hex FRMPayload -> JSON list of commands")
    _frame_options(dec)
    dec.add_argument("--lenient", action="store_true", help="ignore RFU bits (the specs' receiver rule)")
    dec.add_argument("hex", metavar="HEX", help="the FRMPayload in hex (spaces, ':' and a 0x prefix allowed)")
    dec.set_defaults(func=_decode)

    enc = sub.add_parser("encode", help="JSON list of commands -> hex FRMPayload")
    _frame_options(enc)
    enc.add_argument("json", metavar="JSON", help="a JSON list of command objects, or - to read stdin")
    enc.set_defaults(func=_encode)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _frame_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fport", type=int, required=True, help="200 multicast setup, 201 fragmentation, "
                   "202 clock sync, 203 firmware management")
    way = p.add_mutually_exclusive_group(required=True)
    way.add_argument("--uplink", dest="direction", action="store_const", const=UPLINK)
    way.add_argument("--downlink", dest="direction", action="store_const", const=DOWNLINK)
    p.add_argument("--version", dest="package_version", type=int, choices=(1, 2), default=1,
                   help="package version (default 1)")


def _parse_hex(text: str) -> bytes:
    cleaned = "".join(text.split()).replace(":", "")
    if cleaned[:2].lower() == "0x":
        cleaned = cleaned[2:]
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise InvalidArgument(f"not a hex string: {text!r}") from None


def _decode(args: argparse.Namespace) -> int:
    payload = _parse_hex(args.hex)
    commands = decode(args.fport, args.direction, payload, args.package_version, strict=not args.lenient)
    print(json.dumps([to_json(c) for c in commands], indent=2))
    return 0


def _encode(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.json == "-" else args.json
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"invalid JSON: {exc}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InvalidArgument("expected a JSON list of command objects")
    commands = [
        from_json(item, fport=args.fport, direction=args.direction, version=args.package_version)
        for item in data
    ]
    print(encode_commands(commands).hex())
    return 0
