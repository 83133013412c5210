"""Deliberate breakages of the maths, applied one at a time: each must make at least one fast test fail.

    python mutations/run.py                 # every mutation
    python mutations/run.py kl-direction    # some, by name
    python mutations/run.py --list

Each mutation replaces one exact piece of source text in a copy of the repository (the original is never
touched) and runs the fast tests named with it there. "caught" = those tests failed; "SURVIVED" = the code was
wrong and the tests still passed. The exit code is the number of survivors. Mutations are defined beside this
file (`distillation.py`, `compression.py`, …) as `MUTATIONS = [Mutation(...)]`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("distillation", "compression", "scale")


@dataclass(frozen=True)
class Mutation:
    name: str            # short id, e.g. "kl-direction"
    file: str            # path relative to the repo, e.g. "hfdistill/losses.py"
    old: str             # exact text that must occur exactly once in the file
    new: str             # what it becomes
    tests: tuple[str, ...]  # pytest node ids / files (fast tests) that must catch it
    why: str = ""        # the bug this stands for


def all_mutations() -> list[Mutation]:
    sys.path.insert(0, str(Path(__file__).parent))
    out: list[Mutation] = []
    for group in GROUPS:
        try:
            out += importlib.import_module(group).MUTATIONS
        except ModuleNotFoundError:
            continue
    return out


def apply(m: Mutation, repo: Path) -> None:
    path = repo / m.file
    text = path.read_text()
    if text.count(m.old) != 1:
        raise SystemExit(f"{m.name}: the text to replace occurs {text.count(m.old)} times in {m.file} (needs 1)")
    path.write_text(text.replace(m.old, m.new))


def run_one(m: Mutation, timeout: int) -> tuple[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"mut-{m.name}-") as tmp:
        repo = Path(tmp)
        for part in ("hfdistill", "tests", "recipes"):
            shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
        apply(m, repo)
        env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1"}
        # absolute: the tests run in the copy, where a relative ../shared/glue finds nothing (all skipped = "SURVIVED")
        env["HFDISTILL_GLUE_DIR"] = str(Path(os.environ.get("HFDISTILL_GLUE_DIR") or ROOT.parent / "shared" / "glue")
                                        .resolve())
        start = time.time()
        try:
            res = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                  *m.tests], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", time.time() - start
        if res.returncode == 0:
            return "SURVIVED", time.time() - start
        if res.returncode in (1,):  # tests failed: caught
            return "caught", time.time() - start
        return f"error (pytest exit {res.returncode})", time.time() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--timeout", type=int, default=900)
    a = ap.parse_args()
    muts = [m for m in all_mutations() if not a.names or m.name in a.names]
    if a.list:
        for m in muts:
            print(f"{m.name:32s} {m.file:36s} {m.why}")
        return 0
    survivors = 0
    print("| mutation | file | result | seconds |\n|---|---|---|---|", flush=True)
    for m in muts:
        result, secs = run_one(m, a.timeout)
        survivors += result != "caught"
        print(f"| {m.name} | {m.file} | {result} | {secs:.0f} |", flush=True)
    print(f"{len(muts) - survivors} of {len(muts)} caught")
    return survivors


if __name__ == "__main__":
    sys.exit(main())
