"""Publishing a run's model folders: one model folder = one repo = one commit.

`create_commit` with every file, so a failure never leaves a half-published repo. Unchanged files are skipped by
the client's preupload check, so re-pushing an unchanged run makes no commit. Parents are pushed before children
so `base_model` links resolve. `endpoint: embedded` is resolved one layer up (`hfdistill.hub`), which starts the
embedded server and passes its URL here.

A push never deletes what it did not write: each commit records the files hfdistill wrote in `MANIFEST`, and a
later push deletes only those of them that vanished locally. A repo that already holds other files and no
hfdistill lineage is refused unless forced.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from hfdistill import glue
from hfdistill.errors import HubError, ModelError
from hfdistill.folder import (LINEAGE_FILE, METRICS_FILE, RunModel, find_run_models, public_paths, public_source,
                              read_json, write_json)
from hfdistill.publish import cards
from hfdistill.publish.client import (RETRY_WAITS, default_endpoint, first_line, hf_api, lfs_uploads_unless_hf,
                                      token_for_recipe_endpoint, with_retries)
from hfdistill.schema import EMBEDDED, PublishConfig

SKIP_FILES = (".gitattributes",)     # repo files a push never deletes
MANIFEST = ".hfdistill-files.json"   # the files hfdistill wrote in the repo (a later push may delete only these)
TEXT_SUFFIXES = (".json", ".md", ".yaml", ".yml", ".txt")


@dataclass(frozen=True)
class PushResult:
    """What one model's push did."""

    folder: Path
    repo_id: str
    commit: str          # the repo head after the push
    changed: bool        # False: the content was already there, no commit was made
    url: str             # the model's page
    tag: Optional[str] = None


@dataclass(frozen=True)
class PlannedPush:
    """What a push would do for one model (`push --dry-run`): nothing is written, locally or on the Hub."""

    key: str             # stage/task
    repo_id: str
    url: str
    files: list[str]     # the files of the commit (the card is refreshed first; the manifest is added)


def _local_files(folder: Path) -> list[str]:
    """The files a push publishes: every file except hidden ones and the README.md peft writes beside an adapter
    (a template naming the local folder it was saved from; the model card is the top README.md)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                  and not (p.name == "README.md" and p.parent != folder))


def push_folder(folder: Path, repo_id: str, *, endpoint: Optional[str] = None, token: Optional[str | bool] = None,
                private: bool = False, make_private: bool = False, force: bool = False, revision: str = "main",
                tag: Optional[str] = None, commit_message: Optional[str] = None, log: Callable[[str], None] = print,
                retry_waits: tuple[float, ...] = RETRY_WAITS) -> PushResult:
    """Publish one folder as one commit of `repo_id`.

    Files that vanished locally are deleted in that commit only if an earlier hfdistill push wrote them. An
    existing repo with files but no hfdistill lineage is refused unless `force`; `private` on an existing public
    repo is refused unless `make_private`, which makes the repo private before the commit.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    folder = Path(folder)
    api = hf_api(endpoint, token)
    files = _local_files(folder)
    if not files:
        raise ModelError(f"{folder}: nothing to push")
    call = lambda fn, what: with_retries(fn, f"{what} {repo_id}", token, retry_waits, log)  # noqa: E731

    private = private or make_private
    call(lambda: api.create_repo(repo_id, private=private, exist_ok=True), "create repo")
    if private and call(lambda: api.repo_info(repo_id).private, "read") is not True:
        if not make_private:
            raise HubError(f"push {repo_id}: the repo exists and is public, so `private` cannot keep this commit "
                           f"private; make the repo private with --make-private (make_private=True) or drop "
                           f"`private`")
        call(lambda: api.update_repo_settings(repo_id, private=True), "make private")
        log(f"{repo_id}: made private")
    if revision != "main":
        call(lambda: api.create_branch(repo_id, branch=revision, exist_ok=True), "create branch on")
    before = call(lambda: api.repo_info(repo_id, revision=revision).sha, "read")
    owned = _written_by_hfdistill(api, repo_id, revision, force, call)
    manifest = (json.dumps({"written_by": "hfdistill", "files": files}, indent=1) + "\n").encode()

    def commit() -> str:
        remote = set(api.list_repo_files(repo_id, revision=revision)) - set(SKIP_FILES) - {MANIFEST}
        ops: list[Any] = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=folder / f) for f in files]
        ops.append(CommitOperationAdd(path_in_repo=MANIFEST, path_or_fileobj=manifest))
        ops += [CommitOperationDelete(path_in_repo=f) for f in sorted((remote & owned) - set(files))]
        kept = sorted(remote - owned - set(files))
        if kept:
            log(f"  {repo_id}: keeping {len(kept)} file(s) hfdistill did not write: {', '.join(kept[:5])}"
                + (" …" if len(kept) > 5 else ""))
        info = api.create_commit(repo_id, ops, commit_message=commit_message or f"hfdistill: {folder.name}",
                                 revision=revision)
        return info.oid

    with lfs_uploads_unless_hf(endpoint):
        head = call(commit, "push to")
    changed = head != before
    if tag:
        refs = call(lambda: api.list_repo_refs(repo_id), "read tags of")
        current = {t.name: t.target_commit for t in refs.tags}
        if tag not in current:
            call(lambda: api.create_tag(repo_id, tag=tag, revision=head), "tag")
        elif current[tag] != head:
            raise HubError(f"tag {repo_id}: pushed commit {head[:10]}, but tag '{tag}' already exists on commit "
                           f"{current[tag][:10]}; choose a new `publish.tag`")
    base = (endpoint or default_endpoint()).rstrip("/")
    return PushResult(folder=folder, repo_id=repo_id, commit=head, changed=changed, url=f"{base}/{repo_id}",
                      tag=tag)


def _written_by_hfdistill(api: Any, repo_id: str, revision: str, force: bool, call: Callable) -> set[str]:
    """The repo's files an earlier hfdistill push wrote (its MANIFEST): the only files a push may delete.

    A repo holding files but neither a manifest nor an hfdistill lineage.json was made by hand or another tool:
    refused unless `force` (then its files are kept, those of the same name overwritten)."""
    remote = set(call(lambda: api.list_repo_files(repo_id, revision=revision), "read")) - set(SKIP_FILES)
    if MANIFEST in remote:
        return set((_remote_json(api, repo_id, MANIFEST, revision, call) or {}).get("files") or [])
    if not remote or force:
        return set()
    if LINEAGE_FILE in remote and "stage_key" in (_remote_json(api, repo_id, LINEAGE_FILE, revision, call) or {}):
        return set()  # pushed by an hfdistill that kept no manifest: nothing is known to be ours, nothing deleted
    shown = ", ".join(sorted(remote)[:3]) + (" …" if len(remote) > 3 else "")
    raise HubError(f"push {repo_id}: the repo already holds files that hfdistill did not write ({shown}) and no "
                   f"hfdistill lineage.json; refusing to push into it (--force / force=True pushes anyway, keeping "
                   f"those files)")


def _remote_json(api: Any, repo_id: str, path: str, revision: str, call: Callable) -> Optional[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        local = call(lambda: api.hf_hub_download(repo_id, path, revision=revision, local_dir=tmp), "read")
        try:
            data = json.loads(Path(local).read_text(encoding="utf-8"))
        except ValueError:
            return None
    return data if isinstance(data, dict) else None


def machine_paths(folder: Path, paths: list[Path]) -> list[tuple[str, str]]:
    """(file, path) for each text file of `folder` that names one of `paths` (absolute local paths)."""
    needles = sorted({str(p) for p in paths if p and os.path.isabs(str(p)) and str(p) != os.sep}, key=len,
                     reverse=True)
    found = []
    for rel in _local_files(folder):
        if not rel.endswith(TEXT_SUFFIXES):
            continue
        text = (folder / rel).read_text(encoding="utf-8", errors="replace")
        hit = next((n for n in needles if n in text), None)
        if hit:
            found.append((rel, hit))
    return found


def recipe_models(run_dir: Path, models: list) -> list:
    """Only the folders of the stages and tasks the run's recipe still has (not leftovers of renamed stages)."""
    recipe = run_dir / "recipe.yaml"
    if not recipe.is_file():
        return models
    data = yaml.safe_load(recipe.read_text()) or {}
    stages = {s.get("name") for s in data.get("stages") or [] if isinstance(s, dict)}
    tasks = set(data.get("tasks") or [])
    if not stages or not tasks:  # a recipe copy without stages (hand-made run folder): push what is there
        return models
    return [m for m in models if m.stage in stages and m.task in tasks]


def publish_config_of(run_dir: Path) -> PublishConfig:
    """The `publish:` section of the run's recipe copy (defaults when it has none)."""
    recipe = run_dir / "recipe.yaml"
    data = (yaml.safe_load(recipe.read_text()) or {}) if recipe.is_file() else {}
    try:
        return PublishConfig(**(data.get("publish") or {}))
    except Exception as exc:
        raise HubError(f"{recipe}: publish: {first_line(str(exc))}") from None


def push_run(run_dir: Path, publish: Optional[PublishConfig] = None, *, token: Optional[str | bool] = None,
             endpoint: Optional[str] = None, force: bool = False, make_private: bool = False,
             log: Callable[[str], None] = print, retry_waits: tuple[float, ...] = RETRY_WAITS,
             dry_run: bool = False) -> list[Any]:
    """Refresh the cards, then push every model of the run, parents first; stops at the first failure.

    dry_run: return what would be pushed (`PlannedPush` per model) and write nothing — not even the local cards
    (the namespace may still be asked of the Hub with `whoami`, a read).

    endpoint: the user's choice, overriding `publish.endpoint` (e.g. `--endpoint`, a running embedded Hub's URL).
    An endpoint that only the recipe names gets no token unless asked (see `token_for_recipe_endpoint`).
    """
    run_dir = Path(run_dir).resolve()
    publish = publish or publish_config_of(run_dir)
    models = recipe_models(run_dir, find_run_models(run_dir))
    if not models:
        raise ModelError(f"{run_dir}: no finished model folders (<stage>/<task>/ with lineage.json) to push")
    if endpoint is None and publish.endpoint not in (None, EMBEDDED):
        token = token_for_recipe_endpoint(publish.endpoint, token, log)
    endpoint = endpoint or publish.endpoint
    if endpoint == EMBEDDED and not dry_run:  # a caller bug: hfdistill.hub starts the server and passes its URL
        raise ValueError("push_run needs the embedded Hub's URL; use hfdistill.hub.push_run for `embedded`")
    ids = publish.planned_repo_ids(run_dir)
    if len(ids) < len(models):
        namespace = with_retries(lambda: hf_api(endpoint, token).whoami()["name"], "who am I on the Hub", token,
                                 retry_waits, log)
        ids = publish.planned_repo_ids(run_dir, namespace=namespace)
    if len(set(ids.values())) < len(ids):
        raise HubError("publish: two models map to the same repo id; give stages distinct `repo_id`s")
    base = f"embedded Hub in {Path(publish.storage).resolve()}:" if endpoint == EMBEDDED else \
        (endpoint or default_endpoint()).rstrip("/")
    if dry_run:
        return [PlannedPush(m.key, ids[m.path], f"{base}/{ids[m.path]}",
                            sorted(set(_local_files(m.path)) | {"README.md", cards.PLOT_FILE, MANIFEST}))
                for m in models]
    own = publish_config_of(run_dir)
    own_prefix = own.repo_prefix or ("local" if own.endpoint == EMBEDDED else None)
    if publish.repo_prefix != own_prefix or \
            (endpoint is not None and own.endpoint not in (None, EMBEDDED) and endpoint != own.endpoint):
        log(f"note: the cards in {run_dir} are rewritten for this destination, not the one the run's recipe names "
            f"(`hfdistill card` rewrites them for the recipe's)")
    local = _local_inputs(run_dir)
    results = []
    for m in models:
        _public_records(m)
        cards.write_card(m.path, repo_ids=ids, publish=publish)
        leaks = machine_paths(m.path, local)
        if leaks:
            raise HubError(f"push {ids[m.path]}: {m.key}/{leaks[0][0]} names the local path {leaks[0][1]}; "
                           f"refusing to publish a path of this machine")
        r = push_folder(m.path, ids[m.path], endpoint=endpoint, token=token, private=publish.private,
                        make_private=make_private, force=force, revision=publish.revision, tag=publish.tag,
                        commit_message=publish.commit_message or
                        f"hfdistill: {m.key} of {m.lineage.get('recipe_name', run_dir.name)}",
                        log=log, retry_waits=retry_waits)
        log(f"{m.key} → {r.url} @ {r.commit[:10]} ({'new commit' if r.changed else 'unchanged'})")
        results.append(r)
    return results


def _public_records(model: RunModel) -> None:
    """Runs made before lineage.json and metrics.json named local inputs by `public_name` recorded absolute paths
    there: rewrite those records before they are published (the stage key, which resuming compares, is kept)."""
    task = glue.TASKS.get(model.task)
    for name in (LINEAGE_FILE, METRICS_FILE):
        record = read_json(model.path / name)
        if not isinstance(record, dict):
            continue
        fixed = dict(record)
        if isinstance(fixed.get("data"), dict) and fixed["data"].get("source"):
            fixed["data"] = {**fixed["data"], "source": public_source(str(fixed["data"]["source"]),
                                                                      task.folder if task else "")}
        if fixed.get("data_source"):
            fixed["data_source"] = public_source(str(fixed["data_source"]), task.folder if task else "")
        fixed = public_paths(fixed)
        if fixed != record:
            write_json(model.path / name, fixed)


def _local_inputs(run_dir: Path) -> list[Path]:
    """The run folder and the local inputs its recipe copy names (base model, GLUE folder): what no published
    file may mention (lineage.json names them by `public_name`)."""
    recipe = run_dir / "recipe.yaml"
    data = (yaml.safe_load(recipe.read_text()) or {}) if recipe.is_file() else {}
    paths = [run_dir] + [Path(str(data[k])) for k in ("model", "glue_dir") if data.get(k)]
    if os.environ.get("HFDISTILL_GLUE_DIR"):
        paths.append(Path(os.environ["HFDISTILL_GLUE_DIR"]).resolve())
    return [p for p in paths if p.is_absolute()]
