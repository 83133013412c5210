"""Publishing a run's model folders: one model folder = one repo = one commit.

`create_commit` with every file, so a failure never leaves a half-published repo. Unchanged files are skipped by
the client's preupload check, so re-pushing an unchanged run makes no commit. Parents are pushed before children
so `base_model` links resolve. `endpoint: embedded` is resolved one layer up (`hfdistill.hub`), which starts the
embedded server and passes its URL here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from hfdistill.errors import HubError, ModelError
from hfdistill.folder import find_run_models
from hfdistill.publish import cards
from hfdistill.publish.client import (RETRY_WAITS, default_endpoint, first_line, hf_api, lfs_uploads_unless_hf,
                                      with_retries)
from hfdistill.schema import EMBEDDED, PublishConfig

SKIP_FILES = (".gitattributes",)     # repo files a push never deletes


@dataclass(frozen=True)
class PushResult:
    """What one model's push did."""

    folder: Path
    repo_id: str
    commit: str          # the repo head after the push
    changed: bool        # False: the content was already there, no commit was made
    url: str             # the model's page
    tag: Optional[str] = None


def _local_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def push_folder(folder: Path, repo_id: str, *, endpoint: Optional[str] = None, token: Optional[str | bool] = None,
                private: bool = False, revision: str = "main", tag: Optional[str] = None,
                commit_message: Optional[str] = None, log: Callable[[str], None] = print,
                retry_waits: tuple[float, ...] = RETRY_WAITS) -> PushResult:
    """Publish one folder as one commit of `repo_id` (files that vanished locally are deleted in that commit)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    folder = Path(folder)
    api = hf_api(endpoint, token)
    files = _local_files(folder)
    if not files:
        raise ModelError(f"{folder}: nothing to push")
    call = lambda fn, what: with_retries(fn, f"{what} {repo_id}", token, retry_waits, log)  # noqa: E731

    call(lambda: api.create_repo(repo_id, private=private, exist_ok=True), "create repo")
    if revision != "main":
        call(lambda: api.create_branch(repo_id, branch=revision, exist_ok=True), "create branch on")
    before = call(lambda: api.repo_info(repo_id, revision=revision).sha, "read")

    def commit() -> str:
        remote = set(api.list_repo_files(repo_id, revision=revision))
        ops: list[Any] = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=folder / f) for f in files]
        ops += [CommitOperationDelete(path_in_repo=f) for f in sorted(remote - set(files)) if f not in SKIP_FILES]
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


def _recipe_models(run_dir: Path, models: list) -> list:
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
             endpoint: Optional[str] = None, log: Callable[[str], None] = print,
             retry_waits: tuple[float, ...] = RETRY_WAITS) -> list[PushResult]:
    """Refresh the cards, then push every model of the run, parents first; stops at the first failure.

    endpoint overrides `publish.endpoint` (e.g. a running embedded Hub's URL).
    """
    run_dir = Path(run_dir).resolve()
    publish = publish or publish_config_of(run_dir)
    models = _recipe_models(run_dir, find_run_models(run_dir))
    if not models:
        raise ModelError(f"{run_dir}: no finished model folders (<stage>/<task>/ with lineage.json) to push")
    endpoint = endpoint or publish.endpoint
    if endpoint == EMBEDDED:  # a caller bug, not a user error: hfdistill.hub starts the server and passes its URL
        raise ValueError("push_run needs the embedded Hub's URL; use hfdistill.hub.push_run for `embedded`")
    ids = publish.planned_repo_ids(run_dir)
    if len(ids) < len(models):
        namespace = with_retries(lambda: hf_api(endpoint, token).whoami()["name"], "who am I on the Hub", token,
                                 retry_waits, log)
        ids = publish.planned_repo_ids(run_dir, namespace=namespace)
    if len(set(ids.values())) < len(ids):
        raise HubError("publish: two models map to the same repo id; give stages distinct `repo_id`s")
    results = []
    for m in models:
        cards.write_card(m.path, repo_ids=ids, publish=publish)
        r = push_folder(m.path, ids[m.path], endpoint=endpoint, token=token, private=publish.private,
                        revision=publish.revision, tag=publish.tag,
                        commit_message=publish.commit_message or
                        f"hfdistill: {m.key} of {m.lineage.get('recipe_name', run_dir.name)}",
                        log=log, retry_waits=retry_waits)
        log(f"{m.key} → {r.url} @ {r.commit[:10]} ({'new commit' if r.changed else 'unchanged'})")
        results.append(r)
    return results
