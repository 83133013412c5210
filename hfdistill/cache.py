"""`hfdistill cache`: what the teacher-output cache of a run folder holds, and cleaning it.

Entries live in `<run>/.cache/teacher/<key>/` (see `hfdistill.distillation.teacher_cache`). An entry is *in use*
when a finished model's lineage.json names its key (the stage that read it); other entries are leftovers of
changed recipes or unfinished stages — removing them costs only a recomputation when they are needed again.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

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
    out = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if not d.is_dir():
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
