"""``proxyota serve --config FILE``: run the gateway service (see :mod:`proxyota.service`).

``--check`` validates the configuration (every section and key, secrets present in the
environment, files readable) and prints what would run, without starting anything.
Exits 0 after a clean shutdown (SIGTERM / SIGINT), 1 on a configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json


def _run(args: argparse.Namespace) -> int:
    from proxyota.service.config import load_config

    config = load_config(args.config)
    if args.check:
        print(json.dumps(config.summary(), indent=2, default=str))
        return 0
    from proxyota.service.app import Service
    from proxyota.service.logging import setup_logging

    setup_logging(config.service.log_level, config.service.log_format)
    return asyncio.run(Service(config).run())


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the gateway service (intake, campaigns, HTTP API)",
        description="Run the proxyota gateway service: TUF image intake, LoRaWAN campaigns "
                    "through ChirpStack, Zigbee campaigns through a zigpy coordinator, and "
                    "the HTTP API, configured by a TOML file.")
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="service configuration (TOML), e.g. configs/chirpstack.toml")
    parser.add_argument("--check", action="store_true",
                        help="validate the configuration, print a summary and exit")
    parser.set_defaults(func=_run)
