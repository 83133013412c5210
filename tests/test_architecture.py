"""The layers of docs/architecture.md hold: `lint-imports` keeps the `.importlinter` contracts, a deliberately
upward import breaks them, and hfdistill modules import each other at module level (no hidden local imports)."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

#: Function-local imports of hfdistill modules that are allowed, with the reason. Keep this short.
ALLOWED_LOCAL_IMPORTS: dict[str, str] = {}


def _lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    res = _lint(ROOT, ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "BROKEN" not in res.stdout and res.stdout.count("KEPT") >= 2


def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    """The contract is not vacuous: glue (a domain library) importing the pipeline is reported."""
    shutil.copytree(ROOT / "hfdistill", tmp_path / "hfdistill", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    glue = tmp_path / "hfdistill" / "glue.py"
    glue.write_text(glue.read_text() + "\n\ndef _upward():\n    from hfdistill import pipeline  # noqa\n")
    res = _lint(tmp_path, tmp_path)
    assert res.returncode != 0
    assert "hfdistill.glue -> hfdistill.pipeline" in res.stdout


def _local_hfdistill_imports() -> list[str]:
    found = []
    for path in sorted((ROOT / "hfdistill").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                    [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if any(n == "hfdistill" or n.startswith("hfdistill.") for n in names):
                    found.append(f"{path.relative_to(ROOT).as_posix()}:{fn.name}:{names[0]}")
    return found


def test_hfdistill_modules_are_imported_at_module_level():
    unexpected = [f for f in _local_hfdistill_imports() if f not in ALLOWED_LOCAL_IMPORTS]
    assert not unexpected, f"function-local hfdistill imports (move them to the top or state why): {unexpected}"
