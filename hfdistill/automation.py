"""Re-run recipes when the Hub announces a new commit: the receiver of Hub webhooks (`hfdistill webhook serve`).

A watched repo is a base model (the local recipes whose `model:` is that repo id depend on it) or, when no local
recipe is built on it, a recipe repo (its `*.yaml` recipes are downloaded at the new commit and run). The Hub POSTs its webhook payload (`event`, `repo`,
`updatedRefs`, header `X-Webhook-Secret`; https://huggingface.co/docs/hub/webhooks); a new commit on `main` of a
watched repo becomes a job: its dependent recipes re-run (`hfdistill run RECIPE --force`) and republish.

- A request without the right secret gets 401 (constant-time comparison); anything but a commit to main of a
  watched repo is answered `ignored`.
- Duplicate deliveries are ignored: a job is keyed by repo and commit sha (`repo.headSha` / `updatedRefs`).
- Jobs run one at a time, in order, each recipe in its own process (`hfdistill run`), its output in a log file;
  a failing run is logged and the queue goes on.
- The queue is a JSON-lines file in the state folder, rewritten atomically on every change: a receiver killed
  mid-way restarts with its queued jobs, and a job that was running when it died runs again.

Light on purpose (no torch): recipes are read as YAML here and validated by the run that uses them.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from hfdistill.errors import HfdistillError, RecipeError
from hfdistill.hubserver.runner import bind, is_local_endpoint, local_endpoint_online
from hfdistill.publish.client import with_retries

SECRET_ENV = "HFDISTILL_WEBHOOK_SECRET"
QUEUE_FILE = "queue.jsonl"
MAIN_REF = "refs/heads/main"
MAX_BODY = 1 << 20  # a Hub payload is a few kB
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


@dataclass
class Job:
    """One new commit of a watched repo, and what became of the recipes that depend on it."""

    key: str                  # "<type>/<repo>@<sha>": duplicate deliveries share it
    repo: str
    repo_type: str
    sha: str
    received: str
    status: str = "queued"    # queued → running → done | failed
    started: int = 0          # times started (a run interrupted by a crash is started again)
    runs: list[dict[str, Any]] = field(default_factory=list)  # {recipe, exit, log, error}
    error: Optional[str] = None


class JobQueue:
    """The receiver's jobs, persisted as one JSON line each, the file rewritten atomically on every change."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._cond = threading.Condition()
        self.jobs: list[Job] = []
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    self.jobs.append(Job(**json.loads(line)))
        self.interrupted = [j for j in self.jobs if j.status == "running"]
        for job in self.interrupted:  # the receiver died while it ran: run it again
            job.status = "queued"
        self._save()

    def _save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.writelines(json.dumps(asdict(j)) + "\n" for j in self.jobs)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def add(self, job: Job) -> tuple[bool, int]:
        """Queue `job` unless a job with its key exists; returns (added, jobs waiting before it)."""
        with self._cond:
            if any(j.key == job.key for j in self.jobs):
                return False, 0
            ahead = sum(j.status in ("queued", "running") for j in self.jobs)
            self.jobs.append(job)
            self._save()
            self._cond.notify_all()
            return True, ahead

    def take(self, timeout: float) -> Optional[Job]:
        """The oldest queued job, marked running; None when none came within `timeout` seconds."""
        with self._cond:
            deadline = time.monotonic() + timeout
            while True:
                job = next((j for j in self.jobs if j.status == "queued"), None)
                if job is not None:
                    job.status, job.started = "running", job.started + 1
                    job.runs, job.error = [], None
                    self._save()
                    return job
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def finish(self, job: Job, error: Optional[str]) -> None:
        with self._cond:
            job.status, job.error = ("failed" if error else "done"), error
            self._save()
            self._cond.notify_all()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._cond:
            return [asdict(j) for j in self.jobs]


def commit_of(payload: Any) -> tuple[str, str, str] | str:
    """(repo type, repo id, new main sha) of a Hub payload announcing commits to main; else why it is ignored."""
    if not isinstance(payload, dict) or not isinstance(payload.get("event"), dict) or \
            not isinstance(payload.get("repo"), dict):
        return "not a Hub webhook payload (no event/repo)"
    scope = str(payload["event"].get("scope", ""))
    if scope != "repo.content" and not scope.startswith("repo.content."):
        return f"event scope {scope!r} is not a change of content"
    repo = payload["repo"]
    name, kind = repo.get("name"), repo.get("type", "model")
    if not isinstance(name, str) or not _HUB_ID.match(name):
        return "repo.name is missing or not a repo id"
    refs = payload.get("updatedRefs")
    if isinstance(refs, list):
        main = [r for r in refs if isinstance(r, dict) and r.get("ref") == MAIN_REF]
        if not main:
            return "no new commit on main (only other refs changed)"
        sha = main[0].get("newSha")
        if not sha:
            return "main was deleted"
    else:
        sha = repo.get("headSha")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{7,64}", sha):
        return "no commit sha for main (updatedRefs / repo.headSha)"
    return str(kind), name, sha


def recipe_model(path: Path) -> str:
    """The `model:` a recipe file names (YAML only; the run validates the rest)."""
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict) or "stages" not in data:
        raise RecipeError(f"{path}: not a recipe (a YAML mapping with name:, tasks:, stages: …)")
    return str(data.get("model", "minilm-l6"))


class Receiver:
    """Receives Hub webhooks, queues the jobs, and runs them one at a time in a background thread."""

    def __init__(self, recipes: list[Path], watch: list[str], state_dir: Path, secret: str, *,
                 endpoint: Optional[str] = None, token: Optional[str] = None,
                 command: Optional[list[str]] = None, log: Callable[[str], None] = print):
        if not secret:
            raise HfdistillError(f"a webhook secret is required: pass --secret or set {SECRET_ENV} (the Hub sends "
                                 f"it in X-Webhook-Secret; without it anyone could start runs)")
        self.recipes = {Path(r).resolve(): recipe_model(Path(r)) for r in recipes}
        hub_models = [m for m in self.recipes.values() if _HUB_ID.match(m) and not Path(m).exists()]
        self.watch = list(dict.fromkeys(list(watch) or hub_models))
        if not self.watch:
            raise HfdistillError("nothing to watch: pass --watch REPO (a base model or recipe repo), or recipes "
                                 "whose model: is a Hub repo id")
        for w in self.watch:
            if not _HUB_ID.match(w):
                raise HfdistillError(f"--watch {w!r}: not a repo id (namespace/name)")
        self.state_dir = Path(state_dir)
        self.queue = JobQueue(self.state_dir / QUEUE_FILE)
        self._secret = secret.encode()
        self.endpoint, self.token = endpoint, token
        self.command = list(command or [sys.executable, "-m", "hfdistill", "run"])
        self.log = log
        self._stop = threading.Event()
        self._worker: Optional[threading.Thread] = None
        self._child: Optional[subprocess.Popen] = None

    # ---- receiving ----------------------------------------------------------------------------------------------
    def authorized(self, given: Optional[str]) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self._secret)

    def receive(self, secret: Optional[str], body: bytes) -> tuple[int, dict[str, Any]]:
        """Answer one delivery: (HTTP status, JSON body)."""
        if not self.authorized(secret):
            return 401, {"error": "invalid or missing X-Webhook-Secret"}
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, {"error": "the body is not JSON"}
        found = commit_of(payload)
        if isinstance(found, str):
            return 200, {"status": "ignored", "reason": found}
        kind, repo, sha = found
        if repo not in self.watch:
            return 200, {"status": "ignored", "reason": f"{repo} is not watched"}
        job = Job(key=f"{kind}/{repo}@{sha}", repo=repo, repo_type=kind, sha=sha,
                  received=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        added, ahead = self.queue.add(job)
        if not added:
            self.log(f"webhook: {repo}@{sha[:8]}: duplicate delivery, ignored")
            return 200, {"status": "duplicate", "key": job.key}
        self.log(f"webhook: {repo}@{sha[:8]}: queued ({ahead} job(s) ahead)")
        return 202, {"status": "queued", "key": job.key, "ahead": ahead}

    # ---- running ------------------------------------------------------------------------------------------------
    def recipes_for(self, job: Job) -> list[Path]:
        """The recipes a new commit of `job.repo` re-runs: the local recipes built on it (a base model); for a
        watched repo that no local recipe is built on (a recipe repo), the recipes stored in it."""
        found = [path for path, model in self.recipes.items() if model == job.repo]
        return found or self._stored_recipes(job)

    def _stored_recipes(self, job: Job) -> list[Path]:
        """Recipe files (`*.yaml` with `stages:`) of the repo at the job's commit, downloaded into the state folder
        (one folder per repo: runs of successive commits share their run folders)."""
        from huggingface_hub import HfApi

        folder = self.state_dir / "recipes" / job.repo_type / job.repo
        api = HfApi(endpoint=self.endpoint, token=self.token, library_name="hfdistill")

        def download() -> list[str]:
            files = [f for f in api.list_repo_files(job.repo, repo_type=job.repo_type, revision=job.sha)
                     if f.endswith((".yaml", ".yml")) and "/" not in f]
            for f in files:
                api.hf_hub_download(job.repo, f, repo_type=job.repo_type, revision=job.sha, local_dir=folder)
            return files

        with local_endpoint_online(self.endpoint):  # retried like every Hub call; a failure is one line
            files = with_retries(download, f"recipes of {job.repo}@{job.sha[:8]}", self.token, log=self.log)
        out = []
        for f in files:
            try:
                recipe_model(folder / f)
            except RecipeError:
                continue  # another YAML file (a config, a CI file)
            out.append(folder / f)
        return out

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.endpoint:
            env["HF_ENDPOINT"] = self.endpoint
            if is_local_endpoint(self.endpoint):
                env["HF_HUB_OFFLINE"] = "0"  # a Hub on this machine is not the internet (as hub.py reasons)
        return env

    def run_job(self, job: Job) -> Optional[str]:
        """Run every recipe of the job, one after the other; the first failure's one-line reason, or None."""
        try:
            recipes = self.recipes_for(job)
        except HfdistillError as e:  # the recipe repo could not be read: this job fails, the queue goes on
            return str(e)
        if not recipes:
            self.log(f"webhook: {job.repo}@{job.sha[:8]}: no recipe depends on it")
            return None
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        errors = []
        for recipe in recipes:
            log_path = logs / f"{job.repo.replace('/', '--')}-{job.sha[:8]}-{job.started}-{recipe.stem}.log"
            self.log(f"webhook: {job.repo}@{job.sha[:8]}: running {recipe} (log: {log_path})")
            with open(log_path, "w") as out:
                self._child = subprocess.Popen([*self.command, str(recipe), "--force"], stdout=out,
                                               stderr=subprocess.STDOUT, env=self._env(), cwd=recipe.parent)
                code = self._child.wait()
                self._child = None
            if self._stop.is_set():
                raise _Stopped()
            error = None
            if code != 0:
                lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
                error = f"{recipe.name} failed (exit {code}): {lines[-1].strip() if lines else 'no output'}"
                errors.append(error)
            job.runs.append({"recipe": str(recipe), "exit": code, "log": str(log_path), "error": error})
            self.log(f"webhook: {job.repo}@{job.sha[:8]}: " + (error or f"{recipe.name} re-ran"))
        return "; ".join(errors) or None

    def _work(self) -> None:
        while not self._stop.is_set():
            job = self.queue.take(timeout=0.5)
            if job is None:
                continue
            try:
                error = self.run_job(job)
            except _Stopped:
                return  # stays `running` in the file: it runs again after a restart
            except Exception as e:  # noqa: BLE001 - a broken job must not stop the queue
                error = f"{type(e).__name__}: {e}"
            self.queue.finish(job, error)

    def start(self) -> None:
        for job in self.queue.interrupted:
            self.log(f"webhook: {job.repo}@{job.sha[:8]}: interrupted by a restart, queued again")
        waiting = sum(j.status == "queued" for j in self.queue.jobs)
        if waiting:
            self.log(f"webhook: {waiting} queued job(s) from {self.queue.path}")
        self._worker = threading.Thread(target=self._work, daemon=True, name="webhook-jobs")
        self._worker.start()

    def stop(self) -> None:
        self._stop.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.terminate()
        if self._worker is not None:
            self._worker.join(timeout=30)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until no job is queued or running (tests); False on timeout."""
        deadline = time.monotonic() + timeout
        while any(j["status"] in ("queued", "running") for j in self.queue.snapshot()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    # ---- HTTP ---------------------------------------------------------------------------------------------------
    def app(self):
        """The receiver's web app: POST /webhook (the Hub's deliveries), GET /jobs (the queue; needs the secret)."""
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        def secret_of(request: Request) -> Optional[str]:
            return request.headers.get("x-webhook-secret") or request.query_params.get("secret")

        async def webhook(request: Request) -> JSONResponse:
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY:
                    return JSONResponse({"error": "payload too large"}, status_code=413)
            status, answer = self.receive(secret_of(request), body)
            return JSONResponse(answer, status_code=status)

        async def jobs(request: Request) -> JSONResponse:
            if not self.authorized(secret_of(request)):
                return JSONResponse({"error": "invalid or missing X-Webhook-Secret"}, status_code=401)
            return JSONResponse({"watch": self.watch, "jobs": self.queue.snapshot()})

        return Starlette(routes=[Route("/webhook", webhook, methods=["POST"]), Route("/jobs", jobs)])


class _Stopped(Exception):
    """The receiver is stopping while a run was in progress."""


@dataclass
class RunningReceiver:
    url: str
    receiver: Receiver
    _server: Any
    _thread: threading.Thread

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.receiver.stop()


def start_in_thread(receiver: Receiver, host: str = "127.0.0.1", port: int = 0) -> RunningReceiver:
    """Serve `receiver` on host:port (0: a free port) from a background thread and start its worker (tests)."""
    import uvicorn

    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(receiver.app(), log_level="critical", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="webhook-http")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the webhook receiver did not start on {host}:{port}")
        time.sleep(0.02)
    receiver.start()
    return RunningReceiver(f"http://{host}:{sock.getsockname()[1]}", receiver, server, thread)


def serve(receiver: Receiver, host: str = "127.0.0.1", port: int = 8788) -> None:
    """Serve `receiver` in the foreground until interrupted (`hfdistill webhook serve`)."""
    import uvicorn

    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"Webhook receiver on http://{shown}:{sock.getsockname()[1]}/webhook  (state: "
          f"{receiver.state_dir.resolve()})", flush=True)
    for repo in receiver.watch:
        built = [p.name for p, m in receiver.recipes.items() if m == repo]
        print(f"  watching {repo} → " + (", ".join(built) if built else "the recipes stored in it"), flush=True)
    receiver.start()
    try:
        uvicorn.Server(uvicorn.Config(receiver.app(), log_level="warning", lifespan="off")).run(sockets=[sock])
    finally:
        receiver.stop()


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m hfdistill.automation`: the receiver without the rest of hfdistill (no torch at start)."""
    p = argparse.ArgumentParser(prog="python -m hfdistill.automation", description=__doc__.splitlines()[0])
    p.add_argument("--recipe", action="append", default=[], help="a recipe to re-run (repeatable)")
    p.add_argument("--watch", action="append", default=[], help="a repo id to watch (repeatable)")
    p.add_argument("--state-dir", default="webhook-state", help="queue and logs folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=8788, help="port (0: a free one)")
    p.add_argument("--endpoint", help="the Hub the watched repos live on (default HF_ENDPOINT)")
    p.add_argument("--command", help="how to run a recipe (default: this Python -m hfdistill run)")
    a = p.parse_args(argv)
    try:
        receiver = Receiver([Path(r) for r in a.recipe], a.watch, Path(a.state_dir),
                            os.environ.get(SECRET_ENV, ""), endpoint=a.endpoint,
                            command=shlex.split(a.command) if a.command else None)
        serve(receiver, a.host, a.port)
    except HfdistillError as e:
        print(f"hfdistill: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
