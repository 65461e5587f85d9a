"""The ``proxyota`` command line.

Each sub-command group lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with the parsed
arguments, returning the exit code). Modules are discovered automatically, so adding a
command group never edits this file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from proxyota import __version__
from proxyota.errors import ProxyotaError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxyota",
        description="Gateway for proxy firmware updates of LoRaWAN and Zigbee nodes.",
    )
    parser.add_argument("--version", action="version", version=f"proxyota {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except ProxyotaError as exc:
        print(f"proxyota: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"proxyota: error: {exc}", file=sys.stderr)
        return 1
