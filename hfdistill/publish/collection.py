"""A run's models as a Hub collection: every published model of one run (or of several: a sweep) in stage order,
each with a note giving its score, size and latency.

Idempotent: the collection is found by its title in the owner's namespace (`create_collection(exists_ok=True)`), a
model already in it gets its note and position updated instead of a second item, and items that are not models of
these runs are left alone. The models must be pushed first (`hfdistill push`): the Hub refuses items it does not have.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import yaml

from hfdistill.errors import HubError, ModelError
from hfdistill.folder import RunModel, find_run_models, parent_path, task_teacher
from hfdistill.publish.cards import fmt_bytes, fmt_params
from hfdistill.publish.client import RETRY_WAITS, hf_api, with_retries
from hfdistill.publish.push import publish_config_of, recipe_models
from hfdistill.schema import PublishConfig

MAX_NOTE = 500  # characters (the Hub's limit)


@dataclass(frozen=True)
class CollectionResult:
    """What `collection` did: the collection's slug and URL, and per model whether it was added or updated."""

    slug: str
    url: str
    title: str
    added: list[str]        # repo ids added to the collection
    updated: list[str]      # repo ids whose note or position changed
    unchanged: list[str]


def note(model: RunModel, teacher: Optional[RunModel]) -> str:
    """`stage (kind), TASK score 0.8870 · 1.04M params · 2.0 MB · 2.00 ms (CPU, bs 1) · 97.3 % of teacher`."""
    m = model.metrics
    parts = [f"{model.stage} ({model.kind}), {model.task.upper()} " +
             (f"score {model.score:.4f}" if model.score is not None else "not evaluated")]
    if fmt_params(m.get("params")):
        parts.append(f"{fmt_params(m.get('params'))} params")
    if fmt_bytes(m.get("disk_bytes")):
        parts.append(str(fmt_bytes(m.get("disk_bytes"))))
    lat = (m.get("latency_ms") or {}).get("median")
    if isinstance(lat, (int, float)):
        parts.append(f"{lat:.2f} ms (CPU, bs 1)")
    if teacher is not None and teacher.path != model.path and teacher.score and model.score is not None:
        parts.append(f"{100 * model.score / teacher.score:.1f} % of {teacher.stage}")
    return " · ".join(parts)[:MAX_NOTE]


def stage_order(run_dir: Path, models: list[RunModel]) -> list[RunModel]:
    """The run's models in the recipe's stage order (parents before children), task by task within a stage."""
    recipe = run_dir / "recipe.yaml"
    data = (yaml.safe_load(recipe.read_text()) or {}) if recipe.is_file() else {}
    stages = [s.get("name") for s in data.get("stages") or [] if isinstance(s, dict)]
    depth = {}
    for m in models:  # find_run_models lists parents first
        p = parent_path(m)
        depth[m.path] = depth.get(p, -1) + 1 if p else 0
    return sorted(models, key=lambda m: (stages.index(m.stage) if m.stage in stages else len(stages),
                                         depth[m.path], m.stage, m.task))


def collection(run_dirs: list[Path], title: Optional[str] = None, *, publish: Optional[PublishConfig] = None,
               endpoint: Optional[str] = None, token: Optional[str | bool] = None, private: bool = False,
               log: Callable[[str], None] = print, progress: bool = True,
               retry_waits: tuple[float, ...] = RETRY_WAITS) -> CollectionResult:
    """Gather the published models of `run_dirs` into the collection `title` (default: `publish.collection`, else
    the first run's recipe name) in the owner's namespace — the namespace of the models' repos."""
    from tqdm.auto import tqdm

    api = hf_api(endpoint, token)
    call = lambda fn, what: with_retries(fn, what, token, retry_waits, log)  # noqa: E731
    ordered: list[tuple[RunModel, str, str]] = []  # (model, repo id, note)
    namespace = None
    for run_dir in run_dirs:
        run_dir = Path(run_dir).resolve()
        config = publish or publish_config_of(run_dir)
        models = recipe_models(run_dir, find_run_models(run_dir))
        if not models:
            raise ModelError(f"{run_dir}: no finished model folders (<stage>/<task>/ with lineage.json)")
        ids = config.planned_repo_ids(run_dir)
        if len(ids) < len(models):
            namespace = namespace or call(lambda: api.whoami()["name"], "who am I on the Hub")
            ids = config.planned_repo_ids(run_dir, namespace=namespace)
        title = title or config.collection or models[0].lineage.get("recipe_name") or run_dir.name
        teachers = {task: task_teacher([m for m in models if m.task == task]) for task in {m.task for m in models}}
        ordered += [(m, ids[m.path], note(m, teachers[m.task])) for m in stage_order(run_dir, models)]
    owner = ordered[0][1].split("/")[0]
    action = f"collection '{title}'"
    coll = call(lambda: api.create_collection(title, namespace=owner, private=private, exists_ok=True), action)
    slug = coll.slug
    current = {i.item_id: i for i in coll.items if i.item_type == "model"}
    added, updated, unchanged = [], [], []
    with tqdm(ordered, desc="collection", unit="model", disable=not progress) as bar:
        for _model, repo_id, text in bar:
            if repo_id in current:
                item = current[repo_id]
                if item.note != text:
                    call(lambda: api.update_collection_item(slug, item.item_object_id, note=text),
                         f"{action}: update {repo_id}")
                    updated.append(repo_id)
                else:
                    unchanged.append(repo_id)
                continue
            try:
                call(lambda: api.add_collection_item(slug, repo_id, "model", note=text), f"{action}: add {repo_id}")
            except HubError as exc:
                if getattr(exc, "status", None) == 404:
                    raise HubError(f"{action}: {repo_id} is not on the Hub: push the run first (hfdistill push)") \
                        from None
                raise
            added.append(repo_id)
    # stage order: the run's models first, in order; a position is changed only where it differs
    coll = call(lambda: api.get_collection(slug), action)
    order = [r for _, r, _ in ordered]
    items = sorted(coll.items, key=lambda i: i.position)
    want = [i for r in order for i in items if i.item_id == r] + [i for i in items if i.item_id not in order]
    for pos, item in enumerate(want):
        if [i.item_object_id for i in items].index(item.item_object_id) != pos:
            call(lambda: api.update_collection_item(slug, item.item_object_id, position=pos),
                 f"{action}: move {item.item_id}")
            items.remove(item)
            items.insert(pos, item)
            if item.item_id in unchanged:
                unchanged.remove(item.item_id)
                updated.append(item.item_id)
    log(f"collection {slug}: {len(added)} added, {len(updated)} updated, {len(unchanged)} unchanged → {coll.url}")
    return CollectionResult(slug, coll.url, title, added, updated, unchanged)
