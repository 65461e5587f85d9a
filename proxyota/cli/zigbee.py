"""``proxyota zigbee inspect FILE [--json]``: show a Zigbee OTA file's container, header,
sub-elements and integrity results.

Exit codes: 0 parsed and every check passed (or had nothing to check), 1 the file could
not be parsed, 3 parsed but the integrity code or a container check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from proxyota.zigbee.containers import Container, parse_any
from proxyota.zigbee.otafile import Tag

EXIT_CHECK_FAILED = 3


def describe(container: Container) -> dict:
    """A JSON-ready description of a parsed file."""
    ota = container.ota
    header = {
        "header_version": ota.header_version,
        "header_length": ota.header_length,
        "field_control": ota.field_control,
        "manufacturer_code": ota.manufacturer_code,
        "image_type": ota.image_type,
        "file_version": ota.file_version,
        "stack_version": ota.stack_version,
        "header_string": ota.header_text,
        "header_string_hex": bytes(ota.header_string).hex(),  # type: ignore[arg-type]
        "total_size": ota.total_size,
        "security_credential_version": ota.security_credential_version,
        "upgrade_file_destination": (
            None if ota.upgrade_file_destination is None else f"{ota.upgrade_file_destination:016x}"
        ),
        "minimum_hardware_version": ota.minimum_hardware_version,
        "maximum_hardware_version": ota.maximum_hardware_version,
    }
    base = container.ota_offset
    elements = []
    for index, (element, offset) in enumerate(zip(ota.subelements, ota.subelement_offsets(), strict=True)):
        item: dict = {
            "index": index,
            "tag": element.tag,
            "name": element.name,
            "offset": base + offset,
            "length": len(element.data),
        }
        if element.tag_info is not None:
            item["tag_info"] = element.tag_info
        if (
            element.tag in (Tag.ECDSA_SIGNATURE_SUITE_1, Tag.ECDSA_SIGNATURE_SUITE_2)
            and not element.problems()
        ):
            item["signer_ieee"] = f"{element.ecdsa_signature().signer_ieee:016x}"
        if element.tag == Tag.IMAGE_INTEGRITY_CODE:
            item["value"] = element.data.hex()
        problems = element.problems()
        if problems:
            item["problems"] = problems
        elements.append(item)
    result: dict = {
        "size": len(container.to_bytes()),
        "container": {
            "kind": container.kind.value,
            "ota_offset": base,
            "fields": container.fields,
            "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in container.checks],
        },
        "header": header,
        "layout": ota.layout,
        "subelements": elements,
        "body_length": None if ota.body is None else len(ota.body),
        "trailing_length": len(ota.trailing),
        "problems": ota.problems(),
    }
    if ota.body is None:
        integrity = ota.verify_integrity()
        result["integrity"] = {
            "status": integrity.status,
            "matched": integrity.matched,
            "stored": None if integrity.stored is None else integrity.stored.hex(),
            "with_header": None if integrity.with_header is None else integrity.with_header.hex(),
            "without_header": None if integrity.without_header is None else integrity.without_header.hex(),
        }
    else:
        result["integrity"] = {"status": "absent", "matched": None}
    return result


def _failed(report: dict) -> bool:
    return report["integrity"]["status"] in ("mismatch", "malformed") or any(
        check["status"] == "failed" for check in report["container"]["checks"]
    )


def _print_text(path: str, report: dict) -> None:
    out = sys.stdout
    header = report["header"]
    container = report["container"]
    print(f"file: {path} ({report['size']} bytes)", file=out)
    where = f" (OTA file at byte {container['ota_offset']})" if container["ota_offset"] else ""
    print(f"container: {container['kind']}{where}", file=out)
    for check in container["checks"]:
        print(f"  {check['name']}: {check['status']}  {check['detail']}", file=out)
    print("header:", file=out)
    print(f"  manufacturer_code:  0x{header['manufacturer_code']:04X}", file=out)
    print(f"  image_type:         0x{header['image_type']:04X}", file=out)
    print(f"  file_version:       0x{header['file_version']:08X}", file=out)
    print(f"  stack_version:      0x{header['stack_version']:04X}", file=out)
    print(f"  header_string:      {header['header_string']!r}", file=out)
    print(f"  header_version:     0x{header['header_version']:04X}", file=out)
    print(f"  header_length:      {header['header_length']}", file=out)
    print(f"  field_control:      0x{header['field_control']:04X}", file=out)
    print(f"  total_size:         {header['total_size']}", file=out)
    if header["security_credential_version"] is not None:
        print(f"  security_credential_version: {header['security_credential_version']}", file=out)
    if header["upgrade_file_destination"] is not None:
        print(f"  upgrade_file_destination:    {header['upgrade_file_destination']}", file=out)
    if header["minimum_hardware_version"] is not None:
        print(
            f"  hardware_version:   0x{header['minimum_hardware_version']:04X}"
            f"..0x{header['maximum_hardware_version']:04X}",
            file=out,
        )
    if report["body_length"] is not None:
        print(f"body: opaque, {report['body_length']} bytes", file=out)
    else:
        print(f"sub-elements ({report['layout']} layout):", file=out)
        for item in report["subelements"]:
            extra = f"  tag_info=0x{item['tag_info']:04X}" if "tag_info" in item else ""
            if "signer_ieee" in item:
                extra += f"  signer={item['signer_ieee']}"
            print(
                f"  #{item['index']} tag 0x{item['tag']:04X} {item['name']:<44} "
                f"offset {item['offset']:>8}  length {item['length']:>8}{extra}",
                file=out,
            )
    integrity = report["integrity"]
    status = integrity["status"]
    if status == "ok":
        status += f" (hash {integrity['matched'].replace('-', ' ')} of the integrity sub-element)"
    print(f"integrity: {status}", file=out)
    if report["trailing_length"]:
        print(f"trailing: {report['trailing_length']} bytes after total_size", file=out)
    for problem in report["problems"]:
        print(f"note: {problem}", file=out)


def _inspect(args: argparse.Namespace) -> int:
    data = Path(args.file).read_bytes()
    report = describe(parse_any(data))
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_text(args.file, report)
    return EXIT_CHECK_FAILED if _failed(report) else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("zigbee", help="Zigbee OTA files")
    sub = parser.add_subparsers(dest="zigbee_command", metavar="SUBCOMMAND", required=True)
    inspect = sub.add_parser(
        "inspect",
        help="show an OTA file's container, header, sub-elements and integrity",
        description="Exit 0 when every check passes, 1 when the file cannot be parsed, "
        "3 when the integrity code or a container check fails.",
    )
    inspect.add_argument("file", help="OTA file (plain, or in a vendor container)")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(func=_inspect)
