"""The Python API: what every `hfdistill` command does, callable from Python (`import hfdistill; hfdistill.run(…)`).

The CLI (`hfdistill.cli`) only parses arguments, calls these and prints what they return.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, Optional

from hfdistill import automation
from hfdistill import cache as teacher_cache_admin
from hfdistill import glue, hub, pipeline, planning
from hfdistill import sweeps
from hfdistill import reports as run_report
from hfdistill.cache import CacheEntry
from hfdistill.errors import DataError, HubError, RecipeError
from hfdistill.evaluation import evaluate_folder
from hfdistill.folder import ModelFolder, load_model_folder, run_dir_of
from hfdistill.hubserver.webhooks import WebhookTarget
from hfdistill.publish import cards
from hfdistill.publish.client import first_line
from hfdistill.publish.collection import CollectionResult
from hfdistill.publish.leaderboard import Leaderboard
from hfdistill.publish.pull import PullResult, default_evaluate
from hfdistill.publish.push import publish_config_of
from hfdistill.publish.refresh import RefreshResult
from hfdistill.recipe import Recipe, load_recipe, reference_markdown, with_sweep
from hfdistill.schema import PublishConfig


def run(recipe: Recipe | str | Path, force: bool = False, publish: Optional[bool] = None,
        accelerator: Any = None) -> list[pipeline.StageResult]:
    """Run a recipe (path or Recipe): every stage for every task, resuming from the run folder; publish when
    the recipe has `publish:` (unless publish=False)."""
    return pipeline.run(recipe, force=force, publish=publish, accelerator=accelerator)


def sweep(recipe: Recipe | str | Path, matrix: Optional[dict[str, list[Any]]] = None, *,
          target: Optional[dict[str, float]] = None, force: bool = False, publish: Optional[bool] = None,
          accelerator: Any = None) -> sweeps.Front:
    """Run a recipe's sweep (`matrix`, e.g. {"student.num_layers": [2, 3]}, and `target`, e.g. {"retention":
    0.98}, replace the recipe's `sweep:`/`target:`): one run folder, shared stages run once, finished ones
    skipped; publish as `run` does. Returns the Pareto front per task (`.table()`, `.tasks`, `.targets`)."""
    recipe = with_sweep(recipe, matrix, target)
    if not recipe.sweep:
        raise RecipeError(f"{recipe.name}: the recipe has no `sweep:`; give one (or matrix=)")
    pipeline.run(recipe, force=force, publish=publish, accelerator=accelerator)
    return sweeps.compute_front(Path(recipe.output_dir))


def front(run_dir: str | Path, plot: bool = True) -> sweeps.Front:
    """The Pareto front (dev score ↑, CPU latency ↓, disk ↓) of a run folder's models per task: writes front.json
    and front-<task>.png (plot=False: no plot) into the run folder; cards written afterwards (`card`, `push`)
    tag the models on it `pareto`."""
    if not Path(run_dir).is_dir():
        raise DataError(f"{run_dir}: run folder not found")
    return sweeps.write_front(Path(run_dir), plot=plot)


def validate(recipe_path: str | Path) -> Recipe:
    """Validate a recipe file; raises RecipeError naming the field path on the first problem."""
    return load_recipe(recipe_path)


def evaluate(model_dir: str | Path, task: Optional[str] = None, *, max_seq_length: Optional[int] = None,
             **kwargs: Any) -> dict[str, Any]:
    """Evaluate a model folder on a GLUE task's dev set (metrics, size, CPU latency): the metrics.json record.

    task and max_seq_length default to what the folder's metrics.json / lineage.json record (a folder this tool
    wrote), else max_seq_length 128; a folder that records no task needs `task`."""
    folder = ModelFolder(Path(model_dir))
    task = task or folder.metrics.get("task") or folder.lineage.get("task")
    if not task:
        raise DataError(f"{model_dir}: the folder records no GLUE task (no metrics.json/lineage.json): pass --task")
    if max_seq_length is None:
        max_seq_length = (folder.lineage.get("data") or {}).get("max_seq_length") or 128
    return evaluate_folder(Path(model_dir), task, max_seq_length=max_seq_length, **kwargs)


def card(model_dir: str | Path, repo_id: Optional[str] = None, publish: Optional[PublishConfig] = None) -> Path:
    """Write the model card (README.md + plot) of a model folder; repo_id names the repo the card should link
    (default: planned from the run's recipe). Returns the card's path."""
    model = load_model_folder(Path(model_dir))
    run_dir = run_dir_of(model)
    if publish is None and run_dir is not None:
        publish = publish_config_of(run_dir)
    return cards.write_card(model.path, repo_ids={model.path: repo_id} if repo_id else None, publish=publish)


def push(run_dir: str | Path, publish: Optional[PublishConfig] = None, *, endpoint: Optional[str] = None,
         token: Optional[str | bool] = None, force: bool = False, make_private: bool = False,
         dry_run: bool = False, log: Callable[[str], None] = print, **overrides: Any) -> list[Any]:
    """Push every model of a run folder (cards refreshed, one commit per model, parents first).

    publish: the settings (default: the run's recipe `publish:`); overrides (storage, repo_prefix, revision, tag,
    private) replace single fields of it. endpoint: your choice of Hub (URL or `embedded`), overriding
    `publish.endpoint`. token: passed to the client; an endpoint that only the recipe names gets your own token
    only with token=True (or a token here or in $HFDISTILL_PUBLISH_TOKEN). force: push into an existing repo
    hfdistill did not make (its files are kept). make_private: make an existing public repo private first
    (`private` alone refuses such a repo). dry_run: return the planned pushes (`PlannedPush`: repo, URL, files)
    and write nothing, not even the local cards.
    """
    run_dir = Path(run_dir)
    publish = publish or publish_config_of(run_dir.resolve())
    fields = {k: v for k, v in overrides.items() if v is not None}
    if fields:
        try:
            publish = PublishConfig(**{**publish.model_dump(exclude_unset=True), **fields})
        except Exception as exc:
            raise HubError(f"push: {first_line(str(exc))}") from None
    if endpoint is not None:
        try:
            endpoint = PublishConfig(endpoint=endpoint).endpoint
        except Exception as exc:
            raise HubError(f"push: {first_line(str(exc))}") from None
    return hub.push_run(run_dir, publish, token=token, endpoint=endpoint, force=force, make_private=make_private,
                        log=log, dry_run=dry_run)


def pull(repo_id: str, *, endpoint: Optional[str] = None, storage: str | Path = "hub-storage",
         glue_dir: Optional[str | Path] = None, hub_dataset: Optional[str] = None, **kwargs: Any) -> PullResult:
    """Download a published model and check its files' hashes; verify=True re-runs the GLUE evaluation its
    card claims on the full dev split (max_samples=N: its first N rows; data from glue_dir, else
    $HFDISTILL_GLUE_DIR, else hub_dataset) and fails on a claim more than `tolerance` above the measurement.
    `endpoint="embedded"` reads the embedded Hub in `storage`."""
    if "evaluate" not in kwargs:
        kwargs["evaluate"] = functools.partial(default_evaluate, glue_dir=Path(glue_dir) if glue_dir else None,
                                               hub_dataset=hub_dataset)
    if kwargs.get("local_dir") is not None:
        kwargs["local_dir"] = Path(kwargs["local_dir"])
    return hub.pull(repo_id, endpoint=endpoint, storage=Path(storage), **kwargs)


def serve(host: str = "127.0.0.1", port: int = 8787, storage: str | Path = "hub-storage",
          token: Optional[str] = None, orgs: tuple[str, ...] = (), create: bool = False,
          webhook: Optional[str] = None, webhook_secret: Optional[str] = None,
          webhook_watch: tuple[str, ...] = ()) -> None:
    """Serve the embedded Hub (API + web page); writes need `token` (default $HFDISTILL_HUB_TOKEN) when set, and
    then go only to the namespace `local` and `orgs`. A folder holding no Hub is refused unless `create`.
    webhook: a URL to POST the Hub's webhook payload to after each commit (in the background), with
    `webhook_secret` (default $HFDISTILL_WEBHOOK_SECRET) in X-Webhook-Secret, for the repos in `webhook_watch`
    (default: every repo)."""
    targets = (WebhookTarget(webhook, webhook_secret or os.environ.get(automation.SECRET_ENV) or None,
                             tuple(webhook_watch)),) if webhook else ()
    hub.serve(host, port, Path(storage), token or os.environ.get("HFDISTILL_HUB_TOKEN") or None, orgs=tuple(orgs),
              create=create, webhooks=targets)


def webhook_serve(recipes: list[str | Path] = (), watch: list[str] = (), *, secret: Optional[str] = None,
                  state_dir: str | Path = "webhook-state", host: str = "127.0.0.1", port: int = 8788,
                  endpoint: Optional[str] = None, command: Optional[list[str]] = None) -> None:
    """Serve the webhook receiver until interrupted: a new commit on main of a watched repo (a base model, or a
    repo holding recipes) re-runs the recipes built on it (`model:` = that repo id) or stored in it, one job at a
    time, and republishes them. secret: what the Hub sends in X-Webhook-Secret (default $HFDISTILL_WEBHOOK_SECRET;
    required). watch: repo ids (default: the Hub ids the recipes' `model:` names). state_dir: the persistent queue
    and the runs' logs. endpoint: the Hub of the watched repos (default HF_ENDPOINT). command: how a recipe runs
    (default `python -m hfdistill run`; the recipe and --force are appended)."""
    receiver = automation.Receiver([Path(r) for r in recipes], list(watch), Path(state_dir),
                                   secret or os.environ.get(automation.SECRET_ENV, ""), endpoint=endpoint,
                                   command=command)
    automation.serve(receiver, host, port)


def refresh(repo_ids: str | list[str] = (), *, author: Optional[str] = None, endpoint: Optional[str] = None,
            storage: str | Path = "hub-storage", reevaluate: bool = False, max_samples: Optional[int] = None,
            glue_dir: Optional[str | Path] = None, hub_dataset: Optional[str] = None,
            **kwargs: Any) -> list[RefreshResult]:
    """Regenerate the cards and metadata (model-index, tags, base_model, labels) of published hfdistill models —
    `repo_ids`, or every one of `author` — from the metrics.json/lineage.json in their repos, and push one commit
    per repo where something changed (none otherwise). reevaluate=True downloads each model and re-runs the
    evaluation of `pull --verify` first (its first `max_samples` dev rows, else all; data as in `pull`).
    `endpoint="embedded"` works on the embedded Hub in `storage`. Returns a `RefreshResult` per repo."""
    repo_ids = [repo_ids] if isinstance(repo_ids, str) else list(repo_ids)
    if "evaluate" not in kwargs:
        kwargs["evaluate"] = functools.partial(default_evaluate, glue_dir=Path(glue_dir) if glue_dir else None,
                                               hub_dataset=hub_dataset)
    return hub.refresh(repo_ids, author=author, endpoint=endpoint, storage=Path(storage), reevaluate=reevaluate,
                       max_samples=max_samples, **kwargs)


def collection(run_dirs: str | Path | list[str | Path], title: Optional[str] = None, *,
               endpoint: Optional[str] = None, storage: Optional[str | Path] = None,
               **kwargs: Any) -> CollectionResult:
    """Gather the published models of a run folder (or several: a sweep's) into a Hub collection, in stage order,
    with a note on each (score, size, latency); a re-run updates the notes and order, never duplicates items.
    title: default the recipe's `publish.collection`, else the recipe name; endpoint/storage/repo_prefix (where
    the models were pushed) default to the first run's `publish:`."""
    dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(d) for d in run_dirs]
    return hub.collection(dirs, title, endpoint=endpoint, storage=Path(storage) if storage else None, **kwargs)


def leaderboard(author: str, *, endpoint: Optional[str] = None, storage: str | Path = "hub-storage",
                out_dir: Optional[str | Path] = None, push: Optional[str] = None, **kwargs: Any) -> Leaderboard:
    """Every hfdistill model of `author` in one table from their cards' metadata (task scores, macro score,
    params, disk, latency, parent, retention vs. the teacher); out_dir: write README.md + leaderboard.png there;
    push: also commit them to that repo (one commit, none when unchanged)."""
    return hub.leaderboard(author, endpoint=endpoint, storage=Path(storage),
                           out_dir=Path(out_dir) if out_dir else None, push=push, **kwargs)


def cache(run_dir: str | Path, clean: bool = False, everything: bool = False) -> list[CacheEntry]:
    """The teacher-output cache of a run folder (entries, sizes, the models that used them); clean=True removes
    the entries no finished model uses (everything=True: all) and returns those."""
    if clean or everything:
        return teacher_cache_admin.clean(Path(run_dir), everything=everything)
    return teacher_cache_admin.entries(Path(run_dir))


def report(run_dir: str | Path, ablation: Optional[str | Path] = None, plots: bool = True) -> Path:
    """Write the run's report (RUN_DIR/report/report.md: Tables 1, 3 and 4 of the DistilBERT paper, the targets,
    plots), copy it into every task teacher's folder and relink their cards; returns the path of report.md.
    ablation: a Table 4 file ({variant: {task: [score per seed]}}) when the run folder has no ablation.json."""
    return run_report.write(Path(run_dir), ablation=Path(ablation) if ablation else None, plots=plots)


def plan(recipe: Recipe | str | Path, processes: Optional[int] = None) -> planning.Plan:
    """What a recipe's run will do, doing none of it: per task and stage the parent, the optimizer steps, the
    teacher cache's size on disk and whether the cache budget falls back to online teacher hidden states, a rough
    time and the repo it publishes to (`processes`: default $WORLD_SIZE, else 1)."""
    return planning.plan(recipe, processes=processes)


def prune_cache(root: str | Path, dry_run: bool = False) -> teacher_cache_admin.PruneReport:
    """Evict the teacher-cache entries that no run folder under `root` refers to (no finished model's lineage, no
    unfinished stage), and crashed passes' folders; reports the run folders, what was removed and the bytes
    freed (dry_run: removes nothing)."""
    return teacher_cache_admin.prune(Path(root), dry_run=dry_run)


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
