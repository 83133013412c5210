"""Helpers for the embedded Hub tests (no tests here): a server in its own process, and a storage checker that reads
the on-disk layout directly, so it judges the server without trusting its code."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The server alone: a bare `hfdistill` package object skips hfdistill/__init__ (torch, transformers: ~6 s of
# imports), which the server never needs; hubserver imports nothing else of hfdistill at start.
SERVE = r"""
import sys, time, types
pkg = types.ModuleType("hfdistill"); pkg.__path__ = [sys.argv[1]]; sys.modules["hfdistill"] = pkg
from hfdistill.hubserver import start_in_thread
hub = start_in_thread(sys.argv[2])
print(hub.url, flush=True)
time.sleep(3600)
"""


class ServerProcess:
    """`python -c SERVE` on a storage folder; `.url` once it listens. Stop with `.kill()` (SIGKILL) or `.stop()`."""

    def __init__(self, storage: Path, env: dict[str, str] | None = None):
        self.proc = subprocess.Popen([sys.executable, "-c", SERVE, str(REPO / "hfdistill"), str(storage)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env={**os.environ, **(env or {})})
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), "the server process did not start"

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no cleanup of any kind runs
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()


def wait_for(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def storage_problems(root: Path) -> list[str]:
    """Everything a crash or a bug could leave wrong: every branch and tag points at a stored commit whose ancestors
    are stored, and every file of each ref's tree has its blob, with the sha256 and size the commit records."""
    problems = []
    for meta in sorted((root / "repos" / "models").glob("*/*/meta.json")):
        repo = meta.parent
        name = f"{repo.parent.name}/{repo.name}"
        try:
            refs = json.loads((repo / "refs.json").read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"{name}: refs.json unreadable: {exc}")
            continue
        for kind in ("branches", "tags"):
            for ref, cid in refs.get(kind, {}).items():
                commit, seen = cid, 0
                while commit and seen < 10_000:
                    path = repo / "commits" / f"{commit}.json"
                    if not path.is_file():
                        problems.append(f"{name} {kind}/{ref}: commit {commit} is missing")
                        break
                    data = json.loads(path.read_text())
                    if commit == cid:
                        for f, e in data["files"].items():
                            blob = root / "objects" / e["sha256"][:2] / e["sha256"]
                            if not blob.is_file() or hashlib.sha256(blob.read_bytes()).hexdigest() != e["sha256"] \
                                    or blob.stat().st_size != e["size"]:
                                problems.append(f"{name} {kind}/{ref}: {f} has no intact blob")
                    commit, seen = (data["parents"] or [None])[0], seen + 1
    return problems


def tmp_leftovers(root: Path) -> list[str]:
    """Entries of `tmp/` holding data (the lock files and empty folders of live or dead owners hold none)."""
    return sorted(str(p.relative_to(root)) for p in (root / "tmp").rglob("*") if p.is_file() and p.suffix != ".lock")
