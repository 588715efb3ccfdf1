"""The layers hold: the library never imports the thin Flower apps above it, the shop package
runs without Flower, and no library signature takes the whole config as ``Any``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "fedcl"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path", sorted(LIBRARY.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_the_library_never_imports_the_apps_above_it(path):
    upward = {n for n in _imports(path) if n.split(".")[0] in ("clients", "server")}

    assert not upward, f"{path.relative_to(ROOT)} imports {sorted(upward)}"


def test_the_shop_package_runs_without_flower():
    code = (
        "import sys, fedcl.shop.agent, fedcl.shop.ingest, fedcl.shop.store, fedcl.shop.replies; "
        "print(sorted(m for m in sys.modules if m == 'flwr' or m.startswith('flwr.')))"
    )

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "[]"


def test_no_library_function_takes_a_config_as_any():
    loose = []
    for path in sorted(LIBRARY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
                for a in args:
                    typed_any = isinstance(a.annotation, ast.Name) and a.annotation.id == "Any"
                    if typed_any and "cfg" in a.arg:
                        loose.append(f"{path.relative_to(ROOT)}:{node.lineno} {a.arg}")

    assert not loose, loose
