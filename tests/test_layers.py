"""The package's structure (DESIGN.md, "Layers"): imports only point down, each file imports at its
top, and no function is longer than a reader can hold in their head."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rrid"
MAX_FUNCTION_LINES = 80


def sources():
    return sorted(p for p in PACKAGE.rglob("*.py") if "authors_standin" not in p.parts)


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter's ``lint-imports`` on the package under ``root`` with the contract in its
    pyproject.toml (a fresh process: it reads the package from ``root``, not from this one)."""
    exe = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(exe), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_layers_contract_holds():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contract is not vacuous: the model importing the book (a layer far above) fails it,
    with a message that names both modules; so does a function-local import of it."""
    shutil.copytree(PACKAGE, tmp_path / "rrid", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    model = tmp_path / "rrid" / "model.py"
    model.write_text(model.read_text() + "\n\ndef _upward():\n    import rrid.book  # noqa: F401\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0 and "rrid.model is not allowed to import rrid.book" in done.stdout, done.stdout[-2000:]


def _local_imports(path: Path):
    """(line, text, commented) of every import inside a function of ``path``."""
    lines = path.read_text().splitlines()
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    text, above = lines[inner.lineno - 1], lines[inner.lineno - 2].strip()
                    local_rrid = isinstance(inner, ast.ImportFrom) and (inner.level > 0 or
                                                                        (inner.module or "").startswith("rrid"))
                    local_rrid |= isinstance(inner, ast.Import) and inner.names[0].name.startswith("rrid")
                    yield inner.lineno, text.strip(), local_rrid, "#" in text or above.startswith("#")


def test_imports_are_at_the_top_of_each_file():
    """No function-local import of rrid (they hid the cycles the layers now forbid); a third-party
    import inside a function only where an optional dependency is deferred on purpose, with a
    comment that says so."""
    rrid_local, unexplained = [], []
    for path in sources():
        for line, text, local_rrid, commented in _local_imports(path):
            where = f"{path.relative_to(ROOT)}:{line}: {text}"
            if local_rrid:
                rrid_local.append(where)
            elif not commented:
                unexplained.append(where)
    assert not rrid_local, "function-local rrid imports:\n" + "\n".join(rrid_local)
    assert not unexplained, "function-local imports without a comment saying why:\n" + "\n".join(unexplained)


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_is_longer_than_a_screen(path):
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: over {MAX_FUNCTION_LINES} lines: {long}"
