"""A model folder: the unit every stage reads and writes.

A finished folder holds the model (`config.json`, weights as safetensors), the tokenizer, `metrics.json` and
`lineage.json`. Folders are built under a temporary name and renamed when complete, so a crash never leaves a
half-written model where a finished one is expected.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

LINEAGE_FILE = "lineage.json"
METRICS_FILE = "metrics.json"
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
