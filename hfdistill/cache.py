"""`hfdistill cache`: what the teacher-output cache of a run folder holds, cleaning it, and pruning many runs.

Entries live in `<run>/.cache/teacher/<key>/` (see `hfdistill.distillation.teacher_cache`). An entry is *in use*
when a finished model's lineage.json names its key (the stage that read it) or an unfinished stage's work folder
notes it (`.work/<stage>/<task>/teacher_cache.json`, a stage that will resume); other entries are leftovers of
changed recipes — removing them costs only a recomputation when they are needed again. `prune` evicts them from
every run folder under a root, with the half-written folders of crashed passes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hfdistill.distillation.teacher_cache import NOTE_FILE
from hfdistill.errors import ModelError
from hfdistill.folder import LINEAGE_FILE


@dataclass(frozen=True)
class CacheEntry:
    key: str
    path: Path
    bytes: int
    examples: Optional[int]
    hidden_layers: list[int]
    used_by: list[str]          # `stage/task` of the finished models whose lineage names this entry

    @property
    def in_use(self) -> bool:
        return bool(self.used_by)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def entries(run_dir: Path) -> list[CacheEntry]:
    """Every teacher-cache entry of a run folder, with its size and the models that used it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ModelError(f"{run_dir}: run folder not found")
    root = run_dir / ".cache" / "teacher"
    lineages = {f"{p.parent.parent.name}/{p.parent.name}": p.read_text()
                for p in run_dir.glob(f"*/*/{LINEAGE_FILE}") if not p.parent.parent.name.startswith(".")}
    lineages.update({f"{p.parent.parent.name}/{p.parent.name} (unfinished)": p.read_text()
                     for p in run_dir.glob(f".work/*/*/{NOTE_FILE}")})
    out = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if not d.is_dir() or ".tmp-" in d.name:  # a pass in progress (or crashed): see `prune`
            continue
        meta = json.loads((d / "meta.json").read_text()) if (d / "meta.json").is_file() else {}
        out.append(CacheEntry(key=d.name, path=d, bytes=_size(d), examples=meta.get("num_examples"),
                              hidden_layers=list(meta.get("hidden_layers") or []),
                              used_by=sorted(k for k, text in lineages.items() if d.name in text)))
    return out


def clean(run_dir: Path, everything: bool = False) -> list[CacheEntry]:
    """Remove the entries no finished model uses (all of them with `everything`); returns what was removed."""
    removed = [e for e in entries(run_dir) if everything or not e.in_use]
    for e in removed:
        shutil.rmtree(e.path, ignore_errors=True)
    return removed


@dataclass
class PruneReport:
    root: Path
    run_dirs: list[Path]                                          # run folders found under root
    removed: list[Path] = field(default_factory=list)              # entries (and half-written passes) evicted
    kept: list[CacheEntry] = field(default_factory=list)           # entries still in use
    freed_bytes: int = 0
    dry_run: bool = False


def run_dirs_under(root: Path) -> list[Path]:
    """`root` itself when it is a run folder with a teacher cache, else every such folder below it."""
    root = Path(root)
    if not root.is_dir():
        raise ModelError(f"{root}: folder not found")
    found = []
    for here, dirs, _ in os.walk(root):
        if (Path(here) / ".cache" / "teacher").is_dir():
            found.append(Path(here))
            dirs[:] = []  # a run folder's own subfolders hold no other runs
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return found


def prune(root: Path, dry_run: bool = False, stale_after_s: float = 3600.0) -> PruneReport:
    """Evict, from every run folder under `root`, the cache entries no finished model and no unfinished stage
    refers to, and the temporary folders of teacher passes untouched for `stale_after_s` (crashed ones; a pass
    in progress keeps writing). `dry_run` only reports. Returns what was (or would be) removed and the bytes."""
    report = PruneReport(Path(root), run_dirs_under(root), dry_run=dry_run)
    now = time.time()
    for run_dir in report.run_dirs:
        for e in entries(run_dir):
            if e.in_use:
                report.kept.append(e)
                continue
            report.removed.append(e.path)
            report.freed_bytes += e.bytes
        for tmp in (run_dir / ".cache" / "teacher").glob("*.tmp-*"):
            files = [p for p in tmp.rglob("*") if p.is_file()]
            newest = max((p.stat().st_mtime for p in files), default=tmp.stat().st_mtime)
            if now - newest >= stale_after_s:
                report.removed.append(tmp)
                report.freed_bytes += sum(p.stat().st_size for p in files)
    if not dry_run:
        for path in report.removed:
            shutil.rmtree(path, ignore_errors=True)
    return report
