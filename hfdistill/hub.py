"""Publishing to and pulling from the Hub (or the embedded Hub) with huggingface_hub's `HfApi`.

One model folder = one repo = one commit (`create_commit` with every file), so a failure never leaves a
half-published repo. Unchanged files are skipped by the client's preupload check, so re-pushing an unchanged run
makes no commit. Parents are pushed before children so `base_model` links resolve. Tokens come only from
huggingface_hub's usual sources (HF_TOKEN, `hf auth login`) and never reach a message, a card or a log.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hfdistill.errors import HubError, ModelError

T = TypeVar("T")
EMBEDDED = "embedded"
RETRY_STATUS = (429, 500, 502, 503, 504)
RETRY_WAITS = (0.5, 1.5, 4.0)        # seconds before the 2nd, 3rd and 4th attempt
SKIP_FILES = (".gitattributes",)     # repo files a push never deletes
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


class PublishConfig(BaseModel):
    """The recipe's `publish:` section: where and how `hfdistill push` (and `run`) publish the models."""

    model_config = ConfigDict(extra="forbid")

    endpoint: Optional[str] = Field(
        default=None,
        description="Hub URL; `embedded` = the embedded Hub serving `storage` (no account needed); default: "
                    "huggingface_hub's endpoint (HF_ENDPOINT, else https://huggingface.co).")
    storage: Path = Field(default=Path("hub-storage"),
                          description="Folder of the embedded Hub when `endpoint: embedded` (relative to the "
                                      "current directory).")
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
        from hfdistill.cards import find_run_models

        models = find_run_models(run_dir)
        tasks = {m.task for m in models}
        out = {}
        for m in models:
            rid = self.repo_id_for(m.stage, m.task, m.lineage.get("recipe_name") or Path(run_dir).name,
                                   (m.lineage.get("stage_config") or {}).get("repo_id"), len(tasks), namespace)
            if rid:
                out[m.path] = rid
        return out


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
class MetricCheck:
    task: str
    metric: str
    claimed: float
    measured: Optional[float]
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.measured is not None and abs(self.measured - self.claimed) <= self.tolerance


@dataclass
class PullResult:
    repo_id: str
    revision: str
    commit: str
    path: Path
    files_checked: int
    hash_mismatches: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    checks: list[MetricCheck] = field(default_factory=list)
    verified: bool = False  # whether the evaluation was re-run

    @property
    def ok(self) -> bool:
        return not self.hash_mismatches and not self.missing_files and all(c.ok for c in self.checks)


# ------------------------------------------------------------------------------------------------- errors
def redact(text: str, token: Optional[str | bool] = None) -> str:
    """Remove anything that looks like a token from a message."""
    if isinstance(token, str) and token:
        text = text.replace(token, "***")
    text = re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)
    return re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else ""


def hub_error(exc: BaseException, action: str, token: Optional[str | bool] = None, attempts: int = 1) -> HubError:
    """A one-line HubError for any failure of a Hub call."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, RepositoryNotFoundError, \
        RevisionNotFoundError

    cause = exc
    while isinstance(cause, RuntimeError) and cause.__cause__ is not None and \
            not isinstance(cause, HfHubHTTPError):  # LFS upload errors wrap the HTTP error
        cause = cause.__cause__
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if isinstance(cause, HfHubHTTPError) and cause.response is not None:
        status = cause.response.status_code
        server = _first_line(getattr(cause, "server_message", "") or "")
        if status == 401:
            msg = ("not authenticated (401): log in with `hf auth login` or set HF_TOKEN to a token with write "
                   "access" + (f" ({server})" if server else ""))
        elif status == 403:
            msg = f"forbidden (403): your token may not write here ({server or 'no reason given'})"
        elif isinstance(cause, RevisionNotFoundError):
            msg = f"revision not found (404): {server or cause.response.url}"
        elif isinstance(cause, RepositoryNotFoundError) or status == 404:
            msg = f"not found (404): {server or 'no such repository or file'}"
        elif status in (409, 412):
            msg = f"conflict ({status}): {server or 'the repository changed meanwhile'}"
        elif status >= 500 or status == 429:
            msg = f"the Hub failed with HTTP {status}{tries}: {server or 'server error'}"
        else:
            msg = f"HTTP {status}: {server or _first_line(str(cause))}"
    elif isinstance(cause, httpx2.TimeoutException):
        msg = f"timed out{tries}"
    elif isinstance(cause, (httpx2.NetworkError, httpx2.RemoteProtocolError, httpx2.ProtocolError)):
        msg = f"connection failed{tries} ({type(cause).__name__}: {_first_line(str(cause)) or 'no detail'})"
    elif isinstance(cause, LocalTokenNotFoundError):
        msg = "no token found: log in with `hf auth login` or set HF_TOKEN"
    else:
        msg = f"{type(cause).__name__}: {_first_line(str(cause))}"
    err = HubError(redact(f"{action}: {msg}", token))
    err.status = getattr(getattr(cause, "response", None), "status_code", None)  # type: ignore[attr-defined]
    return err


def _retryable(exc: BaseException) -> bool:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    while isinstance(exc, RuntimeError) and exc.__cause__ is not None and not isinstance(exc, HfHubHTTPError):
        exc = exc.__cause__
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return exc.response.status_code in RETRY_STATUS
    return isinstance(exc, (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError))


def with_retries(fn: Callable[[], T], action: str, token: Optional[str | bool] = None,
                 waits: tuple[float, ...] = RETRY_WAITS, log: Callable[[str], None] = print) -> T:
    """Call `fn`, retrying 5xx/429/timeouts/dropped connections; any failure becomes a one-line HubError.

    Retrying a whole commit is safe: the repo either has the commit (the retry's preupload sees unchanged files
    and makes none) or has nothing of it (the server applies a commit all at once).
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except HubError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is reported as a HubError
            if attempt <= len(waits) and _retryable(exc):
                log(redact(f"  {action}: {_first_line(str(exc)) or type(exc).__name__}; retrying "
                           f"in {waits[attempt - 1]:g}s", token))
                time.sleep(waits[attempt - 1])
                continue
            raise hub_error(exc, action, token, attempt) from None  # the chain may hold request details


# ------------------------------------------------------------------------------------------------- push
def _api(endpoint: Optional[str], token: Optional[str]):
    from hfdistill import __version__
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token, library_name="hfdistill", library_version=__version__)


@contextlib.contextmanager
def _lfs_uploads_unless_hf(endpoint: Optional[str]) -> Iterator[None]:
    """Upload through the LFS protocol to Hub-compatible servers other than huggingface.co (the embedded one
    included): they do not speak Xet, which huggingface_hub would otherwise pick whenever hf_xet is installed."""
    from huggingface_hub import constants

    host = urllib.parse.urlparse(endpoint or _default_endpoint()).hostname or ""
    if host == "huggingface.co" or host.endswith(".huggingface.co") or constants.HF_HUB_DISABLE_XET:
        yield
        return
    constants.HF_HUB_DISABLE_XET = True
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_XET = False


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
    api = _api(endpoint, token)
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

    with _lfs_uploads_unless_hf(endpoint):
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
    base = (endpoint or _default_endpoint()).rstrip("/")
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


def _default_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _publish_of(run_dir: Path) -> PublishConfig:
    """The `publish:` section of the run's recipe copy (defaults when it has none)."""
    recipe = run_dir / "recipe.yaml"
    data = (yaml.safe_load(recipe.read_text()) or {}) if recipe.is_file() else {}
    try:
        return PublishConfig(**(data.get("publish") or {}))
    except Exception as exc:
        raise HubError(f"{recipe}: publish: {_first_line(str(exc))}") from None


class embedded_hub:
    """Context manager: the embedded Hub on 127.0.0.1 (free port) serving `storage`, for one push."""

    def __init__(self, storage: Path):
        self.storage = Path(storage)
        self.running = None

    def __enter__(self) -> str:
        from hfdistill.hubserver import start_in_thread

        self.running = start_in_thread(self.storage)
        return self.running.url

    def __exit__(self, *exc: object) -> None:
        if self.running is not None:
            self.running.stop()


def push_run(run_dir: Path, publish: Optional[PublishConfig] = None, *, token: Optional[str | bool] = None,
             endpoint: Optional[str] = None, log: Callable[[str], None] = print,
             retry_waits: tuple[float, ...] = RETRY_WAITS) -> list[PushResult]:
    """Refresh the cards, then push every model of the run, parents first; stops at the first failure.

    endpoint overrides `publish.endpoint` (e.g. a running embedded Hub's URL).
    """
    from hfdistill import cards

    run_dir = Path(run_dir).resolve()
    publish = publish or _publish_of(run_dir)
    models = _recipe_models(run_dir, cards.find_run_models(run_dir))
    if not models:
        raise ModelError(f"{run_dir}: no finished model folders (<stage>/<task>/ with lineage.json) to push")
    endpoint = endpoint or publish.endpoint
    if endpoint == EMBEDDED:
        if publish.repo_prefix is None:  # nobody to ask "who am I": the embedded Hub's namespace is `local`
            publish = publish.model_copy(update={"repo_prefix": "local"})
        with embedded_hub(publish.storage) as url:
            # The embedded Hub needs no token: never send the user's real one to it.
            results = push_run(run_dir, publish, token=False if token is None else token, endpoint=url, log=log,
                               retry_waits=retry_waits)
        log(f"Published {len(results)} model(s) to the embedded Hub in {Path(publish.storage).resolve()}.")
        log(f"Browse the cards: hfdistill hub serve --storage {publish.storage}  → http://127.0.0.1:8787/")
        return results

    ids = publish.planned_repo_ids(run_dir)
    if len(ids) < len(models):
        namespace = with_retries(lambda: _api(endpoint, token).whoami()["name"], "who am I on the Hub", token,
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


# ------------------------------------------------------------------------------------------------- pull
def claimed_results(readme: Path) -> list[tuple[str, str, str, float]]:
    """(task config, split, metric type, value) for each result in the card's model-index."""
    from huggingface_hub import ModelCard

    try:
        card = ModelCard.load(readme, ignore_metadata_errors=True)
    except Exception:
        return []
    return [(r.dataset_config or "", r.dataset_split or "", r.metric_type, float(r.metric_value))
            for r in (card.data.eval_results or []) if isinstance(r.metric_value, (int, float))]


def _measured_by_type(task: str, metrics: dict[str, float]) -> dict[tuple[str, str], float]:
    """Measured metrics keyed like the card's claims: (Hub metric type, GLUE split)."""
    from hfdistill.cards import METRIC_TYPES, glue_split

    return {(METRIC_TYPES.get(name, (name,))[0], glue_split(task, "dev", name)): float(value)
            for name, value in metrics.items() if isinstance(value, (int, float))}


def _default_evaluate(path: Path, task: str, lineage: dict[str, Any], glue_dir: Optional[Path] = None,
                      hub_dataset: Optional[str] = None) -> dict[str, float]:
    """Re-run the evaluation with the run's limits (GLUE data from `glue_dir`, else $HFDISTILL_GLUE_DIR, else
    `hub_dataset`/nyu-mll/glue)."""
    from hfdistill.evaluation import evaluate_folder

    data = lineage.get("data") or {}
    res = evaluate_folder(path, task, glue_dir=glue_dir, hub_dataset=hub_dataset,
                          max_samples=data.get("max_eval_samples"),
                          max_seq_length=data.get("max_seq_length") or 128, latency_samples=30)
    return res["metrics"]


def pull(repo_id: str, revision: Optional[str] = None, local_dir: Optional[Path] = None, verify: bool = False,
         tolerance: float = 0.005, endpoint: Optional[str] = None, token: Optional[str | bool] = None,
         evaluate: Optional[Callable[[Path, str, dict], dict[str, float]]] = None,
         log: Callable[[str], None] = print) -> PullResult:
    """Download a published model, check every file's hash against the Hub's tree, and with `verify` re-run
    the GLUE evaluation the card claims (|measured − claimed| ≤ tolerance, metrics as fractions).

    evaluate(path, task, lineage) → {metric name: value}; default: `hfdistill.evaluation.evaluate_folder`.
    """
    from huggingface_hub import snapshot_download

    from hfdistill.folder import read_json

    api = _api(endpoint, token)
    action = f"pull {repo_id}"
    commit = with_retries(lambda: api.repo_info(repo_id, revision=revision).sha, action, token, log=log)
    target = Path(local_dir) if local_dir else Path.cwd() / repo_id.split("/")[-1]
    path = Path(with_retries(lambda: snapshot_download(repo_id, revision=commit, local_dir=target,
                                                       endpoint=endpoint, token=token), action, token, log=log))
    check = with_retries(lambda: api.verify_repo_checksums(repo_id, revision=commit, local_dir=path), action,
                         token, log=log)
    result = PullResult(repo_id=repo_id, revision=revision or "main", commit=commit, path=path,
                        files_checked=check.checked_count,
                        hash_mismatches=[m.path for m in check.mismatches], missing_files=list(check.missing_paths))
    if verify:
        claims = claimed_results(path / "README.md")
        if not claims:
            raise HubError(f"{action}: the card claims no results (model-index), nothing to verify")
        lineage = read_json(path / "lineage.json") or {}
        evaluate = evaluate or _default_evaluate
        for task in sorted({t for t, _, _, _ in claims}):
            log(f"re-evaluating {repo_id} on GLUE {task} dev …")
            measured = _measured_by_type(task, evaluate(path, task, lineage))
            for t, split, mtype, value in claims:
                if t == task:
                    result.checks.append(MetricCheck(task, f"{mtype} ({split})" if split else mtype, value,
                                                     measured.get((mtype, split)), tolerance))
        result.verified = True
    return result


def iter_report(result: PullResult) -> Iterator[str]:
    """Human lines for `hfdistill pull`."""
    yield f"{result.repo_id} @ {result.commit[:10]} → {result.path} ({result.files_checked} files checked)"
    for p in result.hash_mismatches:
        yield f"  hash mismatch: {p}"
    for p in result.missing_files:
        yield f"  missing: {p}"
    for c in result.checks:
        measured = "not measured" if c.measured is None else f"{c.measured:.4f}"
        yield (f"  {c.task} {c.metric}: claimed {c.claimed:.4f}, measured {measured} "
               f"(±{c.tolerance:g}) {'ok' if c.ok else 'MISMATCH'}")
    yield "OK" if result.ok else "FAILED"


# ------------------------------------------------------------------------------------------------- CLI
def add_commands(sub: Any) -> None:
    """`hfdistill card | push | pull | hub serve` (wired into cli.py's subparsers)."""
    c = sub.add_parser("card", help="write the model card (README.md + size_vs_score.png) of a model folder")
    c.add_argument("model_dir")
    c.add_argument("--repo-id", help="the Hub repo id the card should name (default: planned from the recipe)")
    c.set_defaults(fn=_cmd_card)

    p = sub.add_parser("push", help="push every model of a run folder (cards refreshed, one commit per model)")
    p.add_argument("run_dir")
    p.add_argument("--endpoint", help="Hub URL or `embedded` (default: the recipe's publish.endpoint)")
    p.add_argument("--storage", help="embedded Hub folder (default: publish.storage)")
    p.add_argument("--repo-prefix")
    p.add_argument("--revision")
    p.add_argument("--tag")
    p.add_argument("--private", action="store_true", default=None)
    p.set_defaults(fn=_cmd_push)

    q = sub.add_parser("pull", help="download a published model, check its hashes, optionally re-evaluate it")
    q.add_argument("repo_id")
    q.add_argument("--revision")
    q.add_argument("--local-dir", help="download folder (default: ./<repo name>)")
    q.add_argument("--verify", action="store_true", help="re-run the GLUE evaluation the card claims")
    q.add_argument("--tolerance", type=float, default=0.005,
                   help="allowed |measured - claimed| per metric (fractions; default 0.005)")
    q.add_argument("--endpoint", help="Hub URL or `embedded` (default: HF_ENDPOINT / huggingface.co)")
    q.add_argument("--storage", default="hub-storage", help="embedded Hub folder for --endpoint embedded")
    q.add_argument("--glue-dir", help="GLUE folder for --verify (default $HFDISTILL_GLUE_DIR)")
    q.add_argument("--hub-dataset", help="datasets id with GLUE configs for --verify (e.g. nyu-mll/glue)")
    q.set_defaults(fn=_cmd_pull)

    h = sub.add_parser("hub", help="the embedded Hub-compatible server")
    hsub = h.add_subparsers(dest="hub_command", required=True)
    s = hsub.add_parser("serve", help="serve a local Hub (API + web page); writes need $HFDISTILL_HUB_TOKEN if set")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8787)
    s.add_argument("--storage", default="hub-storage")
    s.set_defaults(fn=_cmd_serve)


def _cmd_card(a: Any) -> int:
    from hfdistill.cards import load_model_folder, run_dir_of, write_card

    model = load_model_folder(Path(a.model_dir))
    run_dir = run_dir_of(model)
    publish = _publish_of(run_dir) if run_dir is not None else None
    print(write_card(model.path, repo_ids={model.path: a.repo_id} if a.repo_id else None, publish=publish))
    return 0


def _cmd_push(a: Any) -> int:
    run_dir = Path(a.run_dir)
    publish = _publish_of(run_dir)
    overrides = {k: v for k, v in {"endpoint": a.endpoint, "storage": a.storage, "repo_prefix": a.repo_prefix,
                                   "revision": a.revision, "tag": a.tag, "private": a.private}.items()
                 if v is not None}
    try:
        publish = PublishConfig(**{**publish.model_dump(exclude_unset=True), **overrides})
    except Exception as exc:
        raise HubError(f"push: {_first_line(str(exc))}") from None
    results = push_run(run_dir, publish)
    print(f"{sum(r.changed for r in results)} of {len(results)} model(s) changed")
    return 0


def _cmd_pull(a: Any) -> int:
    evaluate = functools.partial(_default_evaluate, glue_dir=Path(a.glue_dir) if a.glue_dir else None,
                                 hub_dataset=a.hub_dataset)
    kwargs = dict(revision=a.revision, local_dir=Path(a.local_dir) if a.local_dir else None, verify=a.verify,
                  tolerance=a.tolerance, evaluate=evaluate)
    if a.endpoint == EMBEDDED:
        with embedded_hub(Path(a.storage)) as url:
            result = pull(a.repo_id, endpoint=url, **kwargs)
    else:
        result = pull(a.repo_id, endpoint=a.endpoint, **kwargs)
    for line in iter_report(result):
        print(line)
    return 0 if result.ok else 1


def _cmd_serve(a: Any) -> int:
    from hfdistill.hubserver import serve

    serve(a.host, a.port, Path(a.storage), os.environ.get("HFDISTILL_HUB_TOKEN") or None)
    return 0
