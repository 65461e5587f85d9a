"""``proxyota radios list [--json] [--all]``: serial ports (pyserial
``serial.tools.list_ports.comports()``) with USB VID:PID, manufacturer, product and a guess of
the Zigbee radio type of known coordinator sticks, i.e. what to put in the radio
configuration (``radio``, ``port``, ``baudrate``).

The guess matches a fingerprint table (:data:`FINGERPRINTS`): USB VID:PID plus, where one
VID:PID is shared by several sticks, a pattern over the manufacturer / product strings and
the ``/dev/serial/by-id`` names. VID:PID 10c4:ea60 (Silicon Labs CP210x USB-UART bridge) is
on EZSP sticks (SkyConnect / ZBT-1, ZBDongle-E CP variant, SLZB-07) and on Z-Stack sticks
(ZBDongle-P, slae.sh, SLZB-06p*) alike, so without a telling string it stays "unknown".
Facts from zigbee-herdsman ``src/adapter/adapterDiscovery.ts`` (USB fingerprints) and Home
Assistant's ZHA / SkyConnect USB matchers; a guess is a hint, not a probe: nothing is opened.
Ports without USB information (on-board UARTs) are listed only with ``--all``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

__all__ = ["FINGERPRINTS", "Fingerprint", "describe_port", "list_radios", "register"]

BY_ID_DIR = Path("/dev/serial/by-id")


@dataclass(frozen=True)
class Fingerprint:
    radio: str  # proxyota / zigpy radio type: ezsp, znp, deconz, zigate
    name: str
    vid: int
    pid: int
    pattern: str | None = None  # regex over manufacturer, product, description, by-id names
    baudrate: int | None = None
    source: str = "zigbee-herdsman adapterDiscovery.ts"


_HERDSMAN = "zigbee-herdsman adapterDiscovery.ts"
_ZHA = "Home Assistant ZHA manifest (usb matchers)"

#: Known coordinator sticks. More specific entries (with a pattern) win over VID:PID-only ones.
FINGERPRINTS: tuple[Fingerprint, ...] = (
    # Silicon Labs EmberZNet (EZSP): bellows
    Fingerprint("ezsp", "Home Assistant SkyConnect / Connect ZBT-1", 0x10C4, 0xEA60,
                r"skyconnect|connect[ _]zbt-1|nabu[ _]casa", 115200),
    Fingerprint("ezsp", "Sonoff ZBDongle-E (Zigbee 3.0 USB Dongle Plus V2)", 0x1A86, 0x55D4,
                r"sonoff|itead", 115200),
    Fingerprint("ezsp", "Sonoff ZBDongle-E (CP2102N variant)", 0x10C4, 0xEA60, r"sonoff.*plus[ _]v2", 115200),
    Fingerprint("ezsp", "Sonoff Dongle Max (ZBDongle-M, MG24)", 0x10C4, 0xEA60, r"sonoff.*max", 115200),
    Fingerprint("ezsp", "SMLIGHT SLZB-07", 0x10C4, 0xEA60, r"slzb-07(?!p)", 115200),
    Fingerprint("ezsp", "Nortek HUSBZB-1 (Zigbee interface)", 0x10C4, 0x8A2A, r"zigbee", 57600, _ZHA),
    # Texas Instruments Z-Stack (ZNP): zigpy-znp
    Fingerprint("znp", "Sonoff ZBDongle-P (Zigbee 3.0 USB Dongle Plus, CC2652P)", 0x10C4, 0xEA60,
                r"sonoff.*plus(?![ _]v2)", 115200),
    Fingerprint("znp", "slae.sh CC2652RB stick", 0x10C4, 0xEA60, r"slae\.sh|cc2652rb", 115200),
    Fingerprint("znp", "SMLIGHT SLZB-06p7 / SLZB-06p10 / SLZB-07p7", 0x10C4, 0xEA60, r"slzb-0[67]p", 115200),
    Fingerprint("znp", "TubesZB coordinator", 0x10C4, 0xEA60, r"tubeszb", 115200),
    Fingerprint("znp", "TubesZB coordinator", 0x1A86, 0x7523, r"tubeszb", 115200),
    Fingerprint("znp", "ZigStar coordinator", 0x1A86, 0x7523, r"zigstar", 115200),
    Fingerprint("znp", "Electrolama zig-a-zig-ah (zzh)", 0x1A86, 0x7523, r"zig-?a-?zig-?ah|electrolama|zzh",
                115200, _ZHA),
    Fingerprint("znp", "Electrolama zzh", 0x0403, 0x6015, r"electrolama", 115200),
    Fingerprint("znp", "Texas Instruments CC2538", 0x0451, 0x16C8, None, 115200),
    Fingerprint("znp", "Texas Instruments CC2531", 0x0451, 0x16A8, None, 115200),
    Fingerprint("znp", "Texas Instruments LaunchPad (CC26x2 / CC1352)", 0x0451, 0xBEF3, None, 115200),
    # dresden elektronik deCONZ: zigpy-deconz
    Fingerprint("deconz", "dresden elektronik ConBee II", 0x1CF1, 0x0030, None, 38400),
    Fingerprint("deconz", "dresden elektronik ConBee III", 0x0403, 0x6015, r"conbee|dresden", 115200),
    # ZiGate: zigpy-zigate
    Fingerprint("zigate", "ZiGate (PL2303)", 0x067B, 0x2303, r"zigate", 115200),
    Fingerprint("zigate", "ZiGate (CP2102)", 0x10C4, 0xEA60, r"zigate", 115200),
    Fingerprint("zigate", "ZiGate+ V2", 0x0403, 0x6015, r"zigate", 115200),
)

#: VID:PID of generic USB-UART bridges: never guessed from the IDs alone.
GENERIC_BRIDGES = {
    (0x10C4, 0xEA60): "Silicon Labs CP210x USB-UART bridge",
    (0x1A86, 0x7523): "WCH CH340 USB-UART bridge",
    (0x1A86, 0x55D4): "WCH CH9102 USB-UART bridge",
    (0x0403, 0x6015): "FTDI FT231X USB-UART bridge",
    (0x067B, 0x2303): "Prolific PL2303 USB-UART bridge",
}


def _by_id_links(directory: Path = BY_ID_DIR) -> dict[str, list[str]]:
    """Real device path -> its stable /dev/serial/by-id names."""
    out: dict[str, list[str]] = {}
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return out
    for entry in entries:
        try:
            target = os.path.realpath(entry)
        except OSError:
            continue
        out.setdefault(target, []).append(str(entry))
    return out


def guess(vid: int | None, pid: int | None, text: str) -> Fingerprint | None:
    """The fingerprint of a port, or None."""
    if vid is None or pid is None:
        return None
    text = text.lower()
    plain: Fingerprint | None = None
    for fp in FINGERPRINTS:
        if (fp.vid, fp.pid) != (vid, pid):
            continue
        if fp.pattern is None:
            plain = plain or fp
        elif re.search(fp.pattern, text):
            return fp
    return plain


def describe_port(port: Any, links: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """A JSON-ready description of one pyserial ``ListPortInfo``, with the guess."""
    links = links if links is not None else {}
    device = getattr(port, "device", None)
    by_id = links.get(os.path.realpath(device), []) if device else []
    vid, pid = getattr(port, "vid", None), getattr(port, "pid", None)
    strings = [getattr(port, name, None) for name in ("manufacturer", "product", "description", "hwid")]
    text = " ".join(s for s in [*strings, *(Path(p).name for p in by_id)] if s)
    fp = guess(vid, pid, text)
    out: dict[str, Any] = {
        "port": device,
        "by_id": by_id,
        "vid_pid": None if vid is None or pid is None else f"{vid:04x}:{pid:04x}",
        "manufacturer": getattr(port, "manufacturer", None),
        "product": getattr(port, "product", None),
        "description": getattr(port, "description", None),
        "serial_number": getattr(port, "serial_number", None),
        "radio": None if fp is None else fp.radio,
        "adapter": None if fp is None else fp.name,
        "baudrate": None if fp is None else fp.baudrate,
        "source": None if fp is None else fp.source,
    }
    if fp is None and vid is not None and (vid, pid) in GENERIC_BRIDGES:
        out["note"] = f"{GENERIC_BRIDGES[(vid, pid)]}: used by several sticks, radio type unknown"
    return out


def list_radios(*, include_all: bool = False, ports: Iterable[Any] | None = None,
                links: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """Describe the serial ports (USB ones unless ``include_all``)."""
    if ports is None:
        from serial.tools import list_ports

        ports = list_ports.comports()
    links = _by_id_links() if links is None else links
    out = []
    for port in sorted(ports, key=lambda p: getattr(p, "device", "") or ""):
        if not include_all and getattr(port, "vid", None) is None:
            continue
        out.append(describe_port(port, links))
    return out


def _list(args: argparse.Namespace) -> int:
    radios = list_radios(include_all=args.all)
    if args.json:
        json.dump(radios, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not radios:
        print("no USB serial ports found" + ("" if args.all else " (--all lists every serial port)"))
        return 0
    for r in radios:
        path = r["by_id"][0] if r["by_id"] else r["port"]
        ids = r["vid_pid"] or "no USB ids"
        strings = " / ".join(s for s in (r["manufacturer"], r["product"] or r["description"]) if s)
        print(f"{r['port']}  {ids}  {strings}")
        if r["by_id"]:
            print(f"    stable path: {r['by_id'][0]}")
        if r["radio"]:
            print(f"    looks like: {r['adapter']} -> radio = \"{r['radio']}\", port = \"{path}\", "
                  f"baudrate = {r['baudrate']}")
        elif r.get("note"):
            print(f"    {r['note']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("radios", help="Zigbee coordinator radios on this machine")
    sub = parser.add_subparsers(dest="radios_command", metavar="SUBCOMMAND", required=True)
    lst = sub.add_parser("list", help="serial ports with USB ids and a guess of the radio type",
                         description="List serial ports (pyserial) with VID:PID, strings and, for known "
                         "Zigbee sticks, the radio type to configure. Nothing is opened.")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.add_argument("--all", action="store_true", help="include ports without USB information")
    lst.set_defaults(func=_list)
