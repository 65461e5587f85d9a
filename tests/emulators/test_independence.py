"""The emulators are independent peers: nothing under radio_emulators/ may import proxyota
(a bug mirrored on both sides would otherwise pass every end-to-end test)."""

from __future__ import annotations

import ast
from pathlib import Path

import radio_emulators


def test_no_module_under_radio_emulators_imports_proxyota() -> None:
    root = Path(radio_emulators.__file__).parent
    offenders = []
    files = sorted(root.rglob("*.py"))
    assert files
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__"
            ):
                names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            for name in names:
                if name == "proxyota" or name.startswith("proxyota."):
                    offenders.append(f"{path.relative_to(root.parent)}:{node.lineno} imports {name}")
    assert not offenders, offenders
