"""A model folder: the unit every stage reads and writes.

A finished folder holds the model (`config.json`, weights as safetensors), the tokenizer, `metrics.json` and
`lineage.json`. Folders are built under a temporary name and renamed when complete, so a crash never leaves a
half-written model where a finished one is expected.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from hfdistill.errors import ModelError

LINEAGE_FILE = "lineage.json"
METRICS_FILE = "metrics.json"
FRONT_FILE = "front.json"  # in a run folder: the Pareto front of its models per task (hfdistill.sweeps)
# What a user downloads to run the model: weights and adapters, not side files such as pruning scores.
WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "adapter_model.safetensors", "*.onnx",
                   "*.onnx.data", "pytorch_model*.bin")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def weight_files(path: Path) -> list[Path]:
    """The weight files of a model folder (recursively, e.g. an adapter subfolder included)."""
    return sorted(p for p in Path(path).rglob("*") if p.is_file() and not p.name.startswith(".")
                  and any(fnmatch.fnmatch(p.name, pat) for pat in WEIGHT_PATTERNS))


def disk_bytes(path: Path) -> int:
    """Bytes of the weight files on disk: what a user downloads to run the model."""
    return sum(p.stat().st_size for p in weight_files(path))


@dataclass(frozen=True)
class ModelFolder:
    """A finished model folder written by a stage (or a base model folder, which has no lineage)."""

    path: Path

    @property
    def config(self) -> dict[str, Any]:
        return read_json(self.path / "config.json") or {}

    @property
    def lineage(self) -> dict[str, Any]:
        return read_json(self.path / LINEAGE_FILE) or {}

    @property
    def metrics(self) -> dict[str, Any]:
        return read_json(self.path / METRICS_FILE) or {}

    @property
    def name(self) -> str:
        return self.lineage.get("name", self.path.name)

    def is_complete(self) -> bool:
        return is_complete(self.path)


def is_complete(path: Path) -> bool:
    """A stage folder is complete when it was renamed into place with its lineage written last."""
    path = Path(path)
    return path.is_dir() and (path / LINEAGE_FILE).is_file() and (path / "config.json").is_file()


def tmp_path_for(final: Path) -> Path:
    final = Path(final)
    return final.with_name(f".{final.name}.tmp")


@contextlib.contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success replace `final` with it, on failure delete it."""
    final = Path(final)
    tmp = tmp_path_for(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_folder(tmp, final)


def make_readable(path: Path) -> None:
    """Give every file under `path` normal permissions (0644 under the usual umask): some writers (safetensors
    via a temporary file) leave 0600, which other users of a shared run folder or server cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [Path(path), *Path(path).rglob("*")]:
        if not p.is_symlink():
            p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def remove_empty_parents(path: Path, stop: Path) -> None:
    """Remove `path` and its parents up to (not including) `stop` while they are empty folders."""
    path, stop = Path(path), Path(stop)
    while path != stop and stop in path.parents:
        try:
            path.rmdir()
        except OSError:  # not empty, or gone
            if path.exists():
                return
        path = path.parent


def replace_folder(tmp: Path, final: Path) -> None:
    """Move a finished temporary folder into place, replacing an older `final` (never leaving neither)."""
    tmp, final = Path(tmp), Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


# ------------------------------------------------------------------------------------------ public names
def public_name(path: Path | str, parts: int = 1) -> str:
    """A local file or folder as published: its last `parts` path parts and a short content hash, e.g.
    `glue/SST-2@3f2a9c1e`. Cards, lineage.json and metrics.json are pushed to a Hub, where an absolute path would
    reveal the publisher's machine (user names, folders) and mean nothing to a reader; the hash still tells two
    different inputs apart."""
    path = Path(path)
    name = "/".join(path.parts[-parts:]) if parts > 0 else path.name
    files = sorted(p for p in path.rglob("*") if p.is_file() and not any(
        q.startswith(".") for q in p.relative_to(path).parts)) if path.is_dir() else [path]
    stats = tuple((p.relative_to(path).as_posix() if path.is_dir() else p.name, p.stat().st_size,
                   p.stat().st_mtime_ns) for p in files)
    return f"{name}@{_content_hash(str(path), stats)}"


@functools.lru_cache(maxsize=256)
def _content_hash(path: str, stats: tuple) -> str:
    """sha256 over the files' relative names and contents (cached while sizes and mtimes stay the same)."""
    root, h = Path(path), hashlib.sha256()
    for rel, _, _ in stats:
        h.update(rel.encode() + b"\0")
        with open(root / rel if root.is_dir() else root, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()[:8]


def public_source(source: str, subfolder: str) -> str:
    """A task's data as published: `hub:<dataset>` as it is, a local GLUE folder by the task's `subfolder` in it
    (e.g. `glue/SST-2@3f2a9c1e`)."""
    if not source or not os.path.isabs(source) or not Path(source).is_dir():
        return source
    return public_name(Path(source) / subfolder, parts=2)


def public_paths(value: Any) -> Any:
    """`value` (JSON-like) with every string that is an absolute path of an existing file or folder replaced by
    its `public_name` (stage configs name text files; a stage's facts may name its inputs)."""
    if isinstance(value, dict):
        return {k: public_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public_paths(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value) and os.path.exists(value):
        return public_name(value)
    return value


# ------------------------------------------------------------------------------------------ a run's models
@dataclass(frozen=True)
class RunModel:
    """One finished model folder of a run (`run/<stage>/<task>/`)."""

    path: Path
    lineage: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def stage(self) -> str:
        return self.lineage.get("name", self.path.parent.name)

    @property
    def task(self) -> str:
        return self.lineage.get("task") or self.metrics.get("task") or self.path.name

    @property
    def kind(self) -> str:
        return self.lineage.get("kind", "")

    @property
    def key(self) -> str:
        return f"{self.stage}/{self.task}"

    @property
    def score(self) -> Optional[float]:
        s = self.metrics.get("score")
        return float(s) if isinstance(s, (int, float)) else None


def load_model_folder(path: Path) -> RunModel:
    path = Path(path).resolve()
    if not is_complete(path):
        raise ModelError(f"{path} is not a finished model folder (needs config.json and {LINEAGE_FILE})")
    return RunModel(path, read_json(path / LINEAGE_FILE) or {}, read_json(path / METRICS_FILE) or {})


def find_run_models(run_dir: Path) -> list[RunModel]:
    """Every finished `run/<stage>/<task>/` folder, parents before children."""
    run_dir = Path(run_dir).resolve()
    found = [load_model_folder(p) for p in sorted(run_dir.glob("*/*"))
             if not p.parent.name.startswith(".") and not p.name.startswith(".") and is_complete(p)]
    by_path = {m.path: m for m in found}
    ordered: list[RunModel] = []

    def visit(m: RunModel, seen: tuple[Path, ...] = ()) -> None:
        if m in ordered or m.path in seen:
            return
        parent = parent_path(m)
        if parent is not None and parent in by_path:
            visit(by_path[parent], seen + (m.path,))
        ordered.append(m)

    for m in found:
        visit(m)
    return ordered


def parent_path(model: RunModel) -> Optional[Path]:
    """The parent model folder, when the parent is a stage of the same run (lineage `parent` is relative)."""
    if model.lineage.get("parent_kind") != "stage" or not model.lineage.get("parent"):
        return None
    for base in (model.path, model.path.parent.parent):
        candidate = (base / model.lineage["parent"]).resolve()
        if is_complete(candidate):
            return candidate
    return None


def run_dir_of(model: RunModel) -> Optional[Path]:
    """`run/` for a folder at `run/<stage>/<task>/` (None for a folder outside a run)."""
    run_dir = model.path.parent.parent
    return run_dir if (model.path.parent.name == model.stage and model.path.name == model.task) else None


def task_teacher(models: list[RunModel]) -> Optional[RunModel]:
    """A task's reference for retention and speed-ups (run summary, cards): the first evaluated model made
    directly from the base model, else the first evaluated one."""
    for m in models:
        if m.lineage.get("parent_kind") == "base" and m.score is not None:
            return m
    return next((m for m in models if m.score is not None), None)
