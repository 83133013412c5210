"""Run a recipe: for each task, each stage in order, parent folder → stage → evaluated model folder.

The run folder is the whole state. A stage whose folder is complete and was made from the same inputs (stage
config, parent, data limits) is skipped on a re-run; a changed stage re-runs, and so do its descendants.
Under `accelerate launch` every process trains; only the main process writes files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from hfdistill import glue, hub, summary, sweeps
from hfdistill.errors import RecipeError
from hfdistill.evaluation import clearly_above_baseline, evaluate_model
from hfdistill.folder import (FRONT_FILE, LINEAGE_FILE, METRICS_FILE, ModelFolder, is_complete, make_readable,
                              public_name, public_paths, public_source, read_json, remove_empty_parents,
                              replace_folder, tmp_path_for, write_json)
from hfdistill.models import load_model, load_tokenizer
from hfdistill.publish import cards
from hfdistill.publish.client import with_retries
from hfdistill.recipe import Recipe, load_recipe
from hfdistill.schema import PACKAGED_MODELS
from hfdistill.stages import REGISTRY, StageContext
from hfdistill.version import __version__


@dataclass
class StageResult:
    name: str
    task: str
    path: Path
    skipped: bool
    metrics: dict[str, Any] = field(default_factory=dict)


def make_accelerator(mixed_precision: Optional[str] = None):
    """One Accelerator per process: CPU unless a GPU is present; seedable sampler for resumable data order.

    `mixed_precision` (the recipe's no|fp16|bf16) wins over `accelerate launch --mixed_precision`; None takes the
    launcher's (else `no`). fp16 on CPU is refused: accelerate would accept it and silently train in fp32.
    """
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

    cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    wanted = (mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION") or "no").lower()
    source = "the recipe's mixed_precision" if mixed_precision else "accelerate launch --mixed_precision"
    if wanted == "fp16" and cpu:
        raise RecipeError(f"mixed_precision: fp16 needs a GPU and this run is on CPU ({source}); use bf16 (which "
                          f"runs on CPU) or no")
    try:
        return Accelerator(cpu=cpu, mixed_precision=mixed_precision,
                           dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
                           kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    except ValueError as e:
        if "already been initialized" not in str(e):
            raise
        raise RecipeError(f"mixed_precision: {wanted}: this Python process already runs accelerate with "
                          f"mixed_precision {AcceleratorState().mixed_precision!r} (one setting per process); run "
                          f"the recipe in a new process") from None


def resolve_base_model(recipe: Recipe) -> Path:
    """The base model as a local folder (a Hub id is downloaded with huggingface_hub's cache)."""
    spec = recipe.base_model_path()
    if Path(spec).is_dir():
        return Path(spec)
    from huggingface_hub import snapshot_download

    # retried like every Hub call (5xx, 429 after its Retry-After); a failure is one line: 404, 401, rate limit…
    return Path(with_retries(lambda: snapshot_download(spec, allow_patterns=["*.json", "*.safetensors", "*.bin",
                                                                             "*.txt", "*.model"]),
                             f"model {spec!r}: download from the Hub"))


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run(recipe: Recipe | str | Path, force: bool = False, publish: Optional[bool] = None,
        accelerator: Any = None) -> list[StageResult]:
    """Run every stage of the recipe for every task; returns one StageResult per (stage, task)."""
    from accelerate.utils import set_seed

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    accelerator = accelerator or make_accelerator(recipe.mixed_precision)
    if recipe.mixed_precision and accelerator.mixed_precision != recipe.mixed_precision:
        raise RecipeError(f"mixed_precision: the recipe asks for {recipe.mixed_precision} but the accelerator "
                          f"passed in runs {accelerator.mixed_precision!r}")
    main = accelerator.is_main_process
    run_dir = Path(recipe.output_dir)
    base = resolve_base_model(recipe)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_recipe_copy(recipe, run_dir / "recipe.yaml")
    accelerator.wait_for_everyone()

    results: list[StageResult] = []
    targets: dict[str, dict[str, Any]] = {}  # the `target:` outcome per task
    for task_name in recipe.tasks:
        data = glue.load_task(task_name, glue_dir=recipe.resolved_glue_dir(), hub_dataset=recipe.hub_dataset,
                              max_train_samples=recipe.max_train_samples, max_eval_samples=recipe.max_eval_samples,
                              seed=recipe.seed)
        keys: dict[str, str] = {}
        folders: dict[str, Path] = {}
        tracker = sweeps.TargetTracker(recipe, task_name)
        for i, cfg in enumerate(recipe.stages):
            if task_name in targets:  # a model met the recipe's target: the remaining variants are not explored
                break
            cfg = cfg.for_task(task_name)  # the stage's `per_task` overrides for this task applied
            parent_name = recipe.parent_of(i)
            parent_path = base if parent_name is None else folders[parent_name]
            parent_key = recipe.model if parent_name is None else keys[parent_name]
            out = run_dir / cfg.name / task_name
            extra = [keys[cfg.student_from]] if getattr(cfg, "student_from", None) else []  # a second input
            # The recipe's precision changes the models (a launcher's, like the number of processes, is only
            # recorded); unset, it leaves the keys of earlier runs as they were.
            extra += [recipe.mixed_precision] if recipe.mixed_precision else []
            key = _key(cfg.identity(), parent_key, task_name, recipe.max_train_samples, recipe.max_eval_samples,
                       recipe.max_seq_length, recipe.seed, data.source, *extra)
            keys[cfg.name], folders[cfg.name] = key, out
            if not force and is_complete(out) and (read_json(out / LINEAGE_FILE) or {}).get("stage_key") == key:
                if main:
                    print(f"[{task_name}] {cfg.name}: complete, skipped ({out})", flush=True)
                results.append(StageResult(cfg.name, task_name, out, True, read_json(out / METRICS_FILE) or {}))
                _track(tracker, cfg.name, out, targets, main)
                continue

            work_dir = run_dir / ".work" / cfg.name / task_name
            ctx = StageContext(recipe=recipe, task=task_name, data=data, accelerator=accelerator, run_dir=run_dir,
                               cache_dir=run_dir / ".cache", work_dir=work_dir, seed=recipe.seed,
                               stage_folders=dict(folders),
                               siblings=recipe.siblings_of(i, task_name))
            tmp = tmp_path_for(out)
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                # Checkpoints resume only the same stage inputs: a changed recipe or --force starts afresh.
                old_key = (read_json(work_dir / "stage_key.json") or {}).get("key")
                if old_key is not None and (force or old_key != key):
                    print(f"[{task_name}] {cfg.name}: discarding the checkpoint of an earlier attempt ("
                          f"{'--force' if force else 'the stage or its inputs changed since'})", flush=True)
                if force or old_key != key:
                    shutil.rmtree(work_dir, ignore_errors=True)
                work_dir.mkdir(parents=True, exist_ok=True)
                write_json(work_dir / "stage_key.json", {"key": key})
                (run_dir / ".cache").mkdir(exist_ok=True)
                why = ""
                if is_complete(out):
                    why = " (re-run: --force)" if force else \
                        " (re-run: the recipe entry, its parent or the data changed since this folder was made)"
                print(f"[{task_name}] {cfg.name}: {cfg.kind} from "
                      f"{parent_name or recipe.model} → {out}{why}", flush=True)
            accelerator.wait_for_everyone()
            started = time.time()
            try:
                set_seed(recipe.seed)
                info = REGISTRY[cfg.kind].run(cfg, ModelFolder(parent_path), ctx, tmp)
                accelerator.wait_for_everyone()
                if main and not (info or {}).get("not_evaluated"):
                    name_labels(tmp, data.task)
                accelerator.wait_for_everyone()
                metrics = None
                if not (info or {}).get("not_evaluated"):  # e.g. a masked-LM model has no task head to score
                    # dev scoring on the accelerator's device, sharded over the processes; latency: CPU, main
                    model = load_model(tmp, trust_remote_code=recipe.trust_remote_code, device=accelerator.device)
                    metrics = evaluate_model(model, load_tokenizer(tmp), data, max_seq_length=recipe.max_seq_length,
                                             latency_samples=recipe.latency_samples, accelerator=accelerator,
                                             model_dir=tmp, latency_threads=recipe.latency_threads,
                                             trust_remote_code=recipe.trust_remote_code)
                    for w in (metrics.get("latency_ms") or {}).get("warnings") or []:
                        print(f"[{task_name}] {cfg.name}: warning: latency may be unreliable: {w}", flush=True)
                    if main and clearly_above_baseline(metrics) is False:
                        majority = metrics["majority_baseline"]
                        print(f"[{task_name}] {cfg.name}: warning: dev score {metrics['score']:.4f} is not clearly "
                              f"above the majority-class baseline {majority['score']:.4f}: this model is no better "
                              f"than guessing (train longer, or try another learning rate)", flush=True)
                    del model
                if main:
                    # lineage.json and metrics.json are published: local inputs are named by public_name, never
                    # by their absolute paths (the stage key above still uses those, so resuming is unchanged)
                    source = public_source(data.source, data.task.folder)
                    if metrics is not None:
                        write_json(tmp / METRICS_FILE, {**metrics, "data_source": source})
                    write_json(tmp / LINEAGE_FILE, {
                        "name": cfg.name, "kind": cfg.kind, "task": task_name,
                        "parent": public_model(recipe) if parent_name is None else os.path.relpath(parent_path, out),
                        "parent_kind": "base" if parent_name is None else "stage",
                        "parent_stage": parent_name,
                        "base_model": public_model(recipe),
                        "recipe_name": recipe.name, "recipe_hash": recipe.recipe_hash(), "stage_key": key,
                        "stage_config": public_paths(cfg.run_facts()),
                        "recipe_stage": public_paths(cfg.model_dump(mode="json", by_alias=True, exclude_unset=True)),
                        "info": public_paths(info or {}),
                        "data": {"source": source, "train_examples": len(data.train) if data.train else 0,
                                 "max_train_samples": recipe.max_train_samples,
                                 "max_eval_samples": recipe.max_eval_samples,
                                 "max_seq_length": recipe.max_seq_length},
                        "seconds": round(time.time() - started, 1),
                        "processes": accelerator.num_processes,
                        **({"mixed_precision": ctx.mixed_precision} if ctx.mixed_precision else {}),
                        "hfdistill_version": __version__,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    })
                    make_readable(tmp)
                    replace_folder(tmp, out)
                    shutil.rmtree(work_dir, ignore_errors=True)  # checkpoints are spent once the folder is done
                    remove_empty_parents(work_dir.parent, stop=run_dir)
                    print(f"[{task_name}] {cfg.name}: " + (f"score {metrics['score']:.4f} {_fmt_metrics(metrics)}"
                          if metrics else f"not evaluated ({info['not_evaluated']})") + f" → {out}", flush=True)
                accelerator.wait_for_everyone()
            except BaseException:
                if main:
                    shutil.rmtree(tmp, ignore_errors=True)
                raise
            results.append(StageResult(cfg.name, task_name, out, False, read_json(out / METRICS_FILE) or {}))
            _track(tracker, cfg.name, out, targets, main)
        if recipe.target is not None and task_name not in targets:
            targets[task_name] = tracker.outcome()
            if main:
                print(sweeps.target_line(task_name, targets[task_name]), flush=True)

    if main:
        _finish(recipe, run_dir, results, publish, targets)
    accelerator.wait_for_everyone()
    return results


def public_model(recipe: Recipe) -> str:
    """The base model as lineage.json names it: the packaged short name, the Hub id, or a local folder's
    `public_name` (its absolute path stays in the run's own recipe.yaml, which is not published)."""
    if recipe.model in PACKAGED_MODELS or not os.path.isabs(recipe.model):
        return recipe.model
    return public_name(recipe.model)


def name_labels(folder: Path, task: glue.Task) -> None:
    """Write the task's class names into a classifier's config.json (id2label/label2id).

    Stages name the classes by the values in the GLUE files, which are `0`/`1` for SST-2, CoLA, MRPC, QQP and
    WNLI; a reader of the card and a user of the model's pipeline should see `negative`/`positive` instead.
    Regression heads, models with another number of outputs and other heads (masked LM) are left alone.
    """
    path = Path(folder) / "config.json"
    config = read_json(path)
    names = task.class_names
    if not config or task.is_regression or not names or len(config.get("id2label") or {}) != len(names):
        return
    if any(not a.endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        return
    config["id2label"] = {str(i): n for i, n in enumerate(names)}
    config["label2id"] = {n: i for i, n in enumerate(names)}
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _fmt_metrics(metrics: dict) -> str:
    m = " ".join(f"{k}={v:.4f}" for k, v in metrics["metrics"].items())
    lat = metrics.get("latency_ms") or {}
    return f"({m}; {metrics['params'] / 1e6:.1f}M params; {lat.get('median', float('nan')):.1f} ms bs1)"


def _write_recipe_copy(recipe: Recipe, path: Path) -> None:
    # the stages as run: a sweep is written out expanded (its variants are the stages), so the copy reloads as is
    data = recipe.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"sweep"})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)


def _track(tracker: sweeps.TargetTracker, stage: str, out: Path, targets: dict[str, dict[str, Any]],
           main: bool) -> None:
    """Tell the target tracker a stage is done; record (and announce) the outcome once a model meets the target."""
    hit = tracker.done(stage, out)
    if hit is not None:
        targets[tracker.task] = hit
        if main:
            print(sweeps.target_line(tracker.task, hit), flush=True)


def _finish(recipe: Recipe, run_dir: Path, results: list[StageResult], publish: Optional[bool],
            targets: Optional[dict[str, dict[str, Any]]] = None) -> None:
    """The Pareto front (sweeps), cards for every model of the run (the plot spans all of them), the run
    summary, then publishing."""
    front = None
    if recipe.sweep or recipe.target or (run_dir / FRONT_FILE).is_file():
        front = sweeps.write_front(run_dir, targets)  # before the cards: models on the front get a `pareto` tag
    for r in results:
        cards.write_card(r.path, publish=recipe.publish)
    summary.write(run_dir)
    print((run_dir / summary.SUMMARY_MD).read_text(), flush=True)
    if front is not None:
        print(front.table(), flush=True)
    print(f"Summary: {run_dir / summary.SUMMARY_MD} (and {summary.SUMMARY_JSON})", flush=True)
    if recipe.publish is not None and publish is not False:
        hub.push_run(run_dir, recipe.publish)
