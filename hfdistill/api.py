"""The Python API: what every `hfdistill` command does, callable from Python (`import hfdistill; hfdistill.run(…)`).

The CLI (`hfdistill.cli`) only parses arguments, calls these and prints what they return.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, Optional

from hfdistill import glue, hub, pipeline
from hfdistill.errors import DataError, HubError
from hfdistill.evaluation import evaluate_folder
from hfdistill.folder import load_model_folder, run_dir_of
from hfdistill.publish import cards
from hfdistill.publish.client import first_line
from hfdistill.publish.pull import PullResult, default_evaluate
from hfdistill.publish.push import PushResult, publish_config_of
from hfdistill.recipe import Recipe, load_recipe, reference_markdown
from hfdistill.schema import PublishConfig


def run(recipe: Recipe | str | Path, force: bool = False, publish: Optional[bool] = None,
        accelerator: Any = None) -> list[pipeline.StageResult]:
    """Run a recipe (path or Recipe): every stage for every task, resuming from the run folder; publish when
    the recipe has `publish:` (unless publish=False)."""
    return pipeline.run(recipe, force=force, publish=publish, accelerator=accelerator)


def validate(recipe_path: str | Path) -> Recipe:
    """Validate a recipe file; raises RecipeError naming the field path on the first problem."""
    return load_recipe(recipe_path)


def evaluate(model_dir: str | Path, task: str, **kwargs: Any) -> dict[str, Any]:
    """Evaluate a model folder on a GLUE task's dev set (metrics, size, CPU latency): the metrics.json record."""
    return evaluate_folder(Path(model_dir), task, **kwargs)


def card(model_dir: str | Path, repo_id: Optional[str] = None, publish: Optional[PublishConfig] = None) -> Path:
    """Write the model card (README.md + plot) of a model folder; repo_id names the repo the card should link
    (default: planned from the run's recipe). Returns the card's path."""
    model = load_model_folder(Path(model_dir))
    run_dir = run_dir_of(model)
    if publish is None and run_dir is not None:
        publish = publish_config_of(run_dir)
    return cards.write_card(model.path, repo_ids={model.path: repo_id} if repo_id else None, publish=publish)


def push(run_dir: str | Path, publish: Optional[PublishConfig] = None, *, log: Callable[[str], None] = print,
         **overrides: Any) -> list[PushResult]:
    """Push every model of a run folder (cards refreshed, one commit per model, parents first).

    publish: the settings (default: the run's recipe `publish:`); overrides (endpoint, storage, repo_prefix,
    revision, tag, private) replace single fields of it; `token=` is passed to the client.
    """
    run_dir = Path(run_dir)
    token = overrides.pop("token", None)
    publish = publish or publish_config_of(run_dir.resolve())
    fields = {k: v for k, v in overrides.items() if v is not None}
    if fields:
        try:
            publish = PublishConfig(**{**publish.model_dump(exclude_unset=True), **fields})
        except Exception as exc:
            raise HubError(f"push: {first_line(str(exc))}") from None
    return hub.push_run(run_dir, publish, token=token, log=log)


def pull(repo_id: str, *, endpoint: Optional[str] = None, storage: str | Path = "hub-storage",
         glue_dir: Optional[str | Path] = None, hub_dataset: Optional[str] = None, **kwargs: Any) -> PullResult:
    """Download a published model and check its files' hashes; verify=True re-runs the GLUE evaluation its
    card claims (data from glue_dir, else $HFDISTILL_GLUE_DIR, else hub_dataset). `endpoint="embedded"` reads
    the embedded Hub in `storage`."""
    if "evaluate" not in kwargs:
        kwargs["evaluate"] = functools.partial(default_evaluate, glue_dir=Path(glue_dir) if glue_dir else None,
                                               hub_dataset=hub_dataset)
    if kwargs.get("local_dir") is not None:
        kwargs["local_dir"] = Path(kwargs["local_dir"])
    return hub.pull(repo_id, endpoint=endpoint, storage=Path(storage), **kwargs)


def serve(host: str = "127.0.0.1", port: int = 8787, storage: str | Path = "hub-storage",
          token: Optional[str] = None) -> None:
    """Serve the embedded Hub (API + web page); writes need `token` (default $HFDISTILL_HUB_TOKEN) when set."""
    hub.serve(host, port, Path(storage), token or os.environ.get("HFDISTILL_HUB_TOKEN") or None)


def check_data(glue_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """Row counts per GLUE task and split, and malformed rows (glue_dir default $HFDISTILL_GLUE_DIR)."""
    glue_dir = glue_dir or os.environ.get("HFDISTILL_GLUE_DIR")
    if not glue_dir:
        raise DataError("no GLUE folder: pass --glue-dir or set HFDISTILL_GLUE_DIR")
    if not Path(glue_dir).is_dir():
        raise DataError(f"{glue_dir}: folder not found")
    return glue.check_glue_dir(Path(glue_dir))


def recipe_reference() -> str:
    """The recipe field reference (Markdown), generated from the documented recipe models."""
    return reference_markdown()
