"""Refreshing published models: regenerate each repo's card (README.md + metadata: model-index, tags, base_model,
label names) and plot from the records the repo holds (`lineage.json`, `metrics.json`, `config.json`), optionally
re-evaluating the model first, and commit only what changed — one commit per repo, none when nothing did.

A card's results table and plot show every model of its run on the same task, so a repo is refreshed together with
its run's other repos: the hfdistill repos of the same namespace and recipe (and, for default repo names
`<prefix>-<stage>-<task>`, the same prefix). They are rebuilt as a run folder of records in a temporary folder
(`<stage>/<task>/` with the records and empty stand-ins for the weights), and the cards are written by
`cards.write_card` exactly as a push writes them: a refresh after an unchanged push changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from hfdistill.errors import HubError
from hfdistill.folder import FRONT_FILE, LINEAGE_FILE, METRICS_FILE, write_json
from hfdistill.publish import cards
from hfdistill.publish.client import RETRY_WAITS, default_endpoint, hf_api, lfs_uploads_unless_hf, with_retries
from hfdistill.publish.pull import Evaluate, default_evaluate
from hfdistill.publish.push import MANIFEST, machine_paths
from hfdistill.schema import EMBEDDED, PublishConfig

#: The files a card is built from, downloaded from each repo of the run; every other file gets an empty stand-in
#: (a card only asks whether it exists: model.onnx, pruning_heatmap.png, …).
RECORD_FILES = (LINEAGE_FILE, METRICS_FILE, "config.json", "adapter_config.json", "adapter/adapter_config.json",
                MANIFEST, "README.md")
OUTPUTS = ("README.md", cards.PLOT_FILE)
HFDISTILL_TAG = "hfdistill"
PARETO_TAG = "pareto"        # cards.py tags the models on their run's Pareto front (front.json)


@dataclass
class RemoteModel:
    """One hfdistill repo as a refresh sees it: its head, its files (path → content hash) and its records."""

    repo_id: str
    sha: str
    files: dict[str, str]
    lineage: dict[str, Any]
    lfs: set[str] = field(default_factory=set)   # the files stored through LFS (hashed by sha256)
    folder: Optional[Path] = None

    @property
    def stage(self) -> str:
        return str(self.lineage.get("name") or self.repo_id.split("/")[-1])

    @property
    def task(self) -> str:
        return str(self.lineage.get("task") or "")

    @property
    def prefix(self) -> Optional[str]:
        """`ns/prefix` of a default repo name `ns/prefix-<stage>-<task>` (None for a custom name)."""
        suffix = f"-{self.stage}-{self.task}"
        return self.repo_id[:-len(suffix)] if self.repo_id.endswith(suffix) else None


@dataclass(frozen=True)
class RefreshResult:
    """What refreshing one repo did."""

    repo_id: str
    commit: str                      # the repo head afterwards
    changed: list[str] = field(default_factory=list)   # files the commit wrote or deleted; [] = no commit
    reevaluated: bool = False
    url: str = ""


def _hash(path: Path, lfs: bool) -> str:
    """A local file's content hash as the Hub's tree reports it: sha256 for an LFS file, the git blob id else."""
    data = path.read_bytes()
    if lfs:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Refresher:
    """The Hub calls of one refresh (one client, retries, one-line errors naming the repo)."""

    def __init__(self, endpoint: Optional[str], token: Optional[str | bool], log: Callable[[str], None],
                 retry_waits: tuple[float, ...]):
        self.api, self.endpoint, self.token = hf_api(endpoint, token), endpoint, token
        self.log, self.retry_waits = log, retry_waits

    def call(self, fn: Callable[[], Any], action: str) -> Any:
        return with_retries(fn, action, self.token, self.retry_waits, self.log)

    def author_repos(self, author: str) -> list[Any]:
        """The author's hfdistill models (ModelInfo with card data)."""
        return list(self.call(lambda: list(self.api.list_models(author=author, filter=HFDISTILL_TAG,
                                                                cardData=True)), f"refresh --author {author}"))

    def read(self, repo_id: str, sha: Optional[str] = None) -> RemoteModel:
        """A repo's head, tree and lineage; an error naming the repo when it is missing or not hfdistill's."""
        action = f"refresh {repo_id}"
        sha = sha or self.call(lambda: self.api.repo_info(repo_id).sha, action)
        tree = self.call(lambda: list(self.api.list_repo_tree(repo_id, revision=sha, recursive=True)), action)
        files = {e.path: (e.lfs.sha256 if getattr(e, "lfs", None) else e.blob_id) for e in tree
                 if hasattr(e, "blob_id")}
        if LINEAGE_FILE not in files:
            raise HubError(f"{action}: not an hfdistill model (the repo has no {LINEAGE_FILE})")
        return RemoteModel(repo_id, sha, files, {}, {e.path for e in tree if getattr(e, "lfs", None)})

    def download(self, model: RemoteModel, folder: Path, everything: bool = False) -> None:
        """The model's records (everything: all its files) into `folder`; empty stand-ins for the rest."""
        folder.mkdir(parents=True, exist_ok=True)
        action = f"refresh {model.repo_id}"
        if everything:
            from huggingface_hub import snapshot_download

            self.call(lambda: snapshot_download(model.repo_id, revision=model.sha, local_dir=folder,
                                                endpoint=self.endpoint, token=self.token), action)
        for path in model.files:
            target = folder / path
            if path.startswith(".") and path != MANIFEST:
                continue
            if path in RECORD_FILES and not everything:
                self.call(lambda: self.api.hf_hub_download(model.repo_id, path, revision=model.sha,
                                                           local_dir=folder), action)
            elif not target.exists() and path not in OUTPUTS:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
        try:
            model.lineage = json.loads((folder / LINEAGE_FILE).read_text())
        except ValueError:
            raise HubError(f"{action}: its {LINEAGE_FILE} is not valid JSON") from None
        model.folder = folder


def _readme(model: RemoteModel) -> str:
    path = model.folder / "README.md"
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def _family(target: RemoteModel, candidates: list[RemoteModel]) -> list[RemoteModel]:
    """The repos of the target's run: same namespace and recipe, and the same prefix when the names have one."""
    ns = target.repo_id.split("/")[0]
    out = {}
    for c in candidates:
        if c.repo_id.split("/")[0] != ns or c.lineage.get("recipe_name") != target.lineage.get("recipe_name"):
            continue
        if target.prefix is not None and c.prefix is not None and c.prefix != target.prefix:
            continue
        out.setdefault((c.stage, c.task), c)
    out[(target.stage, target.task)] = target
    return list(out.values())


def refresh(repo_ids: list[str], *, author: Optional[str] = None, endpoint: Optional[str] = None,
            token: Optional[str | bool] = None, reevaluate: bool = False, evaluate: Optional[Evaluate] = None,
            max_samples: Optional[int] = None, card_endpoint: Optional[str] = None,
            log: Callable[[str], None] = print, progress: bool = True,
            retry_waits: tuple[float, ...] = RETRY_WAITS) -> list[RefreshResult]:
    """Regenerate the cards of published hfdistill models (`repo_ids`, or every hfdistill model of `author`)
    from the records in their repos, and push one commit per repo whose card, plot or metrics changed.

    reevaluate: download each model and re-run its GLUE evaluation first (`evaluate`, default the evaluation of
    `pull --verify`, on the first `max_samples` dev examples or all of them); its new metrics.json is committed
    with the card. card_endpoint: `embedded` writes the embedded Hub's how-to note into the cards (default: keep
    what each card says now).
    """
    from tqdm.auto import tqdm

    if progress and log is print:  # log lines above the progress bar, not through it
        log = tqdm.write
    hub = Refresher(endpoint, token, log, retry_waits)
    if not repo_ids and not author:
        raise HubError("refresh: name the repos to refresh, or --author")
    if author:
        repo_ids = list(dict.fromkeys([*repo_ids, *(m.id for m in hub.author_repos(author))]))
        if not repo_ids:
            raise HubError(f"refresh --author {author}: no hfdistill models found")
    evaluate = evaluate or default_evaluate
    results = []
    with tempfile.TemporaryDirectory(prefix="hfdistill-refresh-") as tmp:
        records = Path(tmp) / "records"
        targets = [hub.read(r) for r in repo_ids]
        for i, t in enumerate(targets):
            hub.download(t, records / f"t{i}")
        # the other hfdistill repos of the targets' namespaces and recipes: the runs the tables and plots span
        candidates: dict[str, RemoteModel] = {t.repo_id: t for t in targets}
        recipes = {t.lineage.get("recipe_name") for t in targets}
        for ns in sorted({t.repo_id.split("/")[0] for t in targets}):
            for info in hub.author_repos(ns):
                facts = (info.card_data.to_dict() if info.card_data else {}).get("hfdistill") or {}
                if info.id in candidates or (facts.get("recipe") and facts["recipe"] not in recipes):
                    continue
                m = hub.read(info.id, getattr(info, "sha", None))
                hub.download(m, records / f"c{len(candidates)}")
                candidates[info.id] = m
        with tqdm(targets, desc="refresh", unit="repo", disable=not progress) as bar:
            for target in bar:
                bar.set_postfix_str(target.repo_id)
                results.append(_refresh_one(hub, target, _family(target, list(candidates.values())), Path(tmp),
                                            len(results), reevaluate, evaluate, max_samples, card_endpoint))
    return results


def _refresh_one(hub: Refresher, target: RemoteModel, family: list[RemoteModel], tmp: Path, n: int,
                 reevaluate: bool, evaluate: Evaluate, max_samples: Optional[int],
                 card_endpoint: Optional[str]) -> RefreshResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    action = f"refresh {target.repo_id}"
    run = tmp / f"run{n}"
    for m in family:  # the run folder of records: <stage>/<task>/
        shutil.copytree(m.folder, run / m.stage / m.task, ignore=shutil.ignore_patterns(*OUTPUTS, ".cache"))
    folder = run / target.stage / target.task
    old_card = _readme(target)
    old_meta = cards.card_metadata(old_card)
    front: dict[str, Any] = {}
    for m in family:  # a run's front.json is not published: the cards' `pareto` tags say who is on the front
        tags = cards.card_metadata(_readme(m)).get("tags") or []
        if PARETO_TAG in (tags if isinstance(tags, list) else [tags]):
            front.setdefault(m.task, {"front": []})["front"].append(m.stage)
    if front:
        write_json(run / FRONT_FILE, {"tasks": front})
    recipe = {"name": target.lineage.get("recipe_name") or "hfdistill", "stages": []}
    if old_meta.get("license"):
        recipe["license"] = old_meta["license"]  # the license the card has (from its recipe or base model)
    (run / "recipe.yaml").write_text(json.dumps(recipe))
    written = list(OUTPUTS)
    if reevaluate:
        shutil.rmtree(folder)
        hub.download(RemoteModel(target.repo_id, target.sha, target.files, {}), folder, everything=True)
        hub.log(f"re-evaluating {target.repo_id} on GLUE {target.task} …")
        record = evaluate(folder, target.task, target.lineage, max_samples)
        old = json.loads((target.folder / METRICS_FILE).read_text()) if METRICS_FILE in target.files else {}
        write_json(folder / METRICS_FILE, {**old, **record})
        written.append(METRICS_FILE)
    ids = {(run / m.stage / m.task).resolve(): m.repo_id for m in family}
    endpoint = card_endpoint if card_endpoint is not None else \
        (EMBEDDED if cards.written_for_embedded(old_card) else None)
    cards.write_card(folder, repo_ids=ids, publish=PublishConfig(endpoint=endpoint))
    leaks = machine_paths(folder, [tmp])
    if leaks:
        raise HubError(f"{action}: {leaks[0][0]} names the local path {leaks[0][1]}; refusing to publish it")

    lfs = target.lfs
    ops: list[Any] = []
    changed = []
    for path in written:
        local = folder / path
        if local.is_file():
            if target.files.get(path) != _hash(local, path in lfs):
                ops.append(CommitOperationAdd(path_in_repo=path, path_or_fileobj=local))
                changed.append(path)
    manifest = json.loads((target.folder / MANIFEST).read_text()) if MANIFEST in target.files else None
    owned = set((manifest or {}).get("files") or [])
    for path in written:
        if not (folder / path).is_file() and path in target.files and path in owned:  # e.g. a plot with no points
            ops.append(CommitOperationDelete(path_in_repo=path))
            changed.append(path)
    if manifest is not None:
        files = sorted((owned | {p for p in written if (folder / p).is_file()})
                       - {p for p in written if not (folder / p).is_file()})
        if files != sorted(owned):
            data = (json.dumps({**manifest, "files": files}, indent=1) + "\n").encode()
            ops.append(CommitOperationAdd(path_in_repo=MANIFEST, path_or_fileobj=data))
            changed.append(MANIFEST)
    base = (hub.endpoint or default_endpoint()).rstrip("/")
    if not ops:
        hub.log(f"{target.repo_id}: up to date")
        return RefreshResult(target.repo_id, target.sha, [], reevaluate, f"{base}/{target.repo_id}")
    what = ", ".join(changed)
    with lfs_uploads_unless_hf(hub.endpoint):
        info = hub.call(lambda: hub.api.create_commit(
            target.repo_id, ops, commit_message=f"hfdistill refresh: {what}", parent_commit=target.sha), action)
    hub.log(f"{target.repo_id}: {what} → {info.oid[:10]}")
    return RefreshResult(target.repo_id, info.oid, changed, reevaluate, f"{base}/{target.repo_id}")
