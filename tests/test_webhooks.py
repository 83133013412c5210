"""Hub webhooks: the embedded Hub sends the Hub's payload after commits; the receiver (`hfdistill.automation`)
checks the secret, ignores duplicates, queues jobs, runs them one at a time, survives a failing run and a kill.

The Hub, the payloads, the HTTP on both sides, the queue and its file are the real ones; what a job runs is a
small script standing in for `hfdistill run` (it records each call and can fail), so these tests take seconds.
The real recipe run through the whole loop is `test_webhooks_e2e.py`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from hfdistill.automation import QUEUE_FILE, Receiver, commit_of, start_in_thread
from hfdistill.errors import HfdistillError
from hfdistill.hubserver import start_in_thread as start_hub
from hfdistill.hubserver.webhooks import WebhookTarget, commit_payload

SECRET = "webhook-s3cret"
RUNNER = """
import os, sys, time
from pathlib import Path
recipe, flag = Path(sys.argv[1]), sys.argv[2]
time.sleep(float(os.environ.get("RUN_SECONDS", "0")))
with open(os.environ["RUNS_LOG"], "a") as f:
    f.write(f"{recipe.name} {flag} {os.environ.get('HF_ENDPOINT')}\\n")
fail = Path(os.environ["RUNS_LOG"]).with_name("fail-next")
if fail.exists():
    fail.unlink()
    print("hfdistill: error: model 'local/base': cannot download from the Hub", file=sys.stderr)
    sys.exit(2)
print("done")
"""


@pytest.fixture
def runner(tmp_path, monkeypatch) -> list[str]:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    monkeypatch.setenv("RUNS_LOG", str(tmp_path / "runs.txt"))
    return [sys.executable, str(script)]


def _recipe(folder: Path, name: str, model: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nmodel: {model}\ntasks: [sst2]\nstages: [{{name: t, kind: finetune}}]\n")
    return path


def _runs(tmp_path: Path) -> list[str]:
    log = tmp_path / "runs.txt"
    return log.read_text().splitlines() if log.is_file() else []


def _post(url: str, payload, secret: str | None = SECRET) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"X-Webhook-Secret": secret} if secret else {})}
    req = urllib.request.Request(url + "/webhook", data=json.dumps(payload).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def loop(tmp_path, hub_env, runner):
    """Receiver (recipe built on local/base) ← webhooks ← embedded Hub watching local/base."""
    recipe = _recipe(tmp_path, "distil-base", "local/base")
    _recipe(tmp_path, "other", "local/other-base")  # not watched: never runs
    receiver = Receiver([recipe], ["local/base"], tmp_path / "state", SECRET, command=runner, log=lambda m: None)
    running = start_in_thread(receiver)
    hub = start_hub(tmp_path / "hub", webhooks=(WebhookTarget(running.url + "/webhook", SECRET, ("local/base",)),))
    receiver.endpoint = hub.url
    api = HfApi(endpoint=hub.url)
    api.create_repo("local/base")
    yield hub, running, api
    running.stop()
    hub.stop()


def _commit(api: HfApi, repo: str, text: str) -> str:
    return api.upload_file(path_or_fileobj=text.encode(), path_in_repo="README.md", repo_id=repo).oid


def test_a_commit_to_a_watched_base_model_reruns_its_recipe_once_even_if_delivered_twice(loop, tmp_path):
    hub, running, api = loop
    sha = _commit(api, "local/base", "v1")
    _wait(lambda: len(_runs(tmp_path)) == 1 and running.receiver.wait_idle(0), what="the run")
    assert _runs(tmp_path) == [f"distil-base.yaml --force {hub.url}"]  # the base model's Hub, re-run forced

    sender = hub.app.state.hub.webhooks
    assert sender.wait_idle()
    [delivery] = sender.delivered
    assert delivery.status == 202 and delivery.payload["repo"]["headSha"] == sha
    assert delivery.payload["updatedRefs"][0]["ref"] == "refs/heads/main"
    assert delivery.payload["updatedRefs"][0]["newSha"] == sha
    # the Hub redelivers (a replay, a lost answer): the same commit is not run twice
    assert _post(running.url, delivery.payload) == (200, {"status": "duplicate", "key": f"model/local/base@{sha}"})
    [job] = running.receiver.queue.snapshot()
    assert job["status"] == "done" and job["sha"] == sha and len(job["runs"]) == 1
    time.sleep(0.3)
    assert len(_runs(tmp_path)) == 1

    # commits to unwatched repos and to other branches send nothing or are ignored
    api.create_repo("local/other-base")
    _commit(api, "local/other-base", "x")
    api.create_branch("local/base", branch="dev")
    api.upload_file(path_or_fileobj=b"dev", path_in_repo="README.md", repo_id="local/base", revision="dev")
    assert sender.wait_idle()
    assert [d.status for d in sender.delivered] == [202, 200]  # the dev commit: delivered, answered "ignored"
    assert running.receiver.wait_idle(5) and len(_runs(tmp_path)) == 1


def test_a_request_without_the_right_secret_gets_401_and_queues_nothing(loop, tmp_path):
    hub, running, _ = loop
    payload = commit_payload(hub.url, "local/base", False, "refs/heads/main", None, "a" * 40, "a" * 40, "w")
    assert _post(running.url, payload, secret="wrong")[0] == 401
    assert _post(running.url, payload, secret=None)[0] == 401
    assert running.receiver.queue.snapshot() == []
    assert _post(running.url, payload)[0] == 202  # the same payload with the secret is taken
    assert running.receiver.wait_idle(30) and len(_runs(tmp_path)) == 1
    with pytest.raises(urllib.error.HTTPError) as e:  # the queue is not public either
        urllib.request.urlopen(running.url + "/jobs", timeout=10)
    assert e.value.code == 401
    req = urllib.request.Request(running.url + "/jobs", headers={"X-Webhook-Secret": SECRET})
    listed = json.loads(urllib.request.urlopen(req, timeout=10).read())
    assert listed["watch"] == ["local/base"] and [j["sha"] for j in listed["jobs"]] == ["a" * 40]


def test_a_failing_run_is_logged_and_the_next_commit_still_runs(loop, tmp_path):
    hub, running, api = loop
    (tmp_path / "fail-next").touch()
    bad = _commit(api, "local/base", "broken")
    _wait(lambda: [j["status"] for j in running.receiver.queue.snapshot()] == ["failed"], what="the failure")
    good = _commit(api, "local/base", "fixed")
    _wait(lambda: [j["status"] for j in running.receiver.queue.snapshot()] == ["failed", "done"], what="the rerun")
    failed, done = running.receiver.queue.snapshot()
    assert (failed["sha"], done["sha"]) == (bad, good)
    assert failed["error"] == "distil-base.yaml failed (exit 2): hfdistill: error: model 'local/base': cannot " \
                              "download from the Hub"
    assert "cannot download" in Path(failed["runs"][0]["log"]).read_text()  # the whole output is kept
    assert done["error"] is None and len(_runs(tmp_path)) == 2


def test_a_delivery_that_names_no_commit_to_main_is_ignored():
    content = {"event": {"action": "update", "scope": "repo.content"}, "repo": {"type": "model", "name": "a/b"}}
    assert commit_of({**content, "updatedRefs": [{"ref": "refs/heads/main", "oldSha": None, "newSha": "ab12cd34"}]}) \
        == ("model", "a/b", "ab12cd34")
    assert "other refs" in commit_of({**content, "updatedRefs": [{"ref": "refs/tags/v1", "newSha": "ab12cd34"}]})
    assert "deleted" in commit_of({**content, "updatedRefs": [{"ref": "refs/heads/main", "newSha": None}]})
    assert commit_of({**content, "repo": {"name": "a/b", "headSha": "ab12cd34"}}) == ("model", "a/b", "ab12cd34")
    assert "scope" in commit_of({**content, "event": {"action": "create", "scope": "discussion"}})
    assert "not a Hub webhook" in commit_of(["a list"])


def test_the_receiver_needs_a_secret_and_something_to_watch(tmp_path):
    recipe = _recipe(tmp_path, "r", "minilm-l6")
    with pytest.raises(HfdistillError, match="secret is required"):
        Receiver([recipe], ["local/base"], tmp_path / "s", "")
    with pytest.raises(HfdistillError, match="nothing to watch"):
        Receiver([recipe], [], tmp_path / "s", SECRET)
    with pytest.raises(HfdistillError, match="recipe file not found"):
        Receiver([tmp_path / "missing.yaml"], ["local/base"], tmp_path / "s", SECRET)


def test_queued_jobs_survive_a_killed_receiver_and_run_after_the_restart(tmp_path, runner):
    recipe = _recipe(tmp_path, "distil-base", "local/base")
    state = tmp_path / "state"

    def start(run_seconds: str) -> tuple[subprocess.Popen, str]:
        env = {**os.environ, "HFDISTILL_WEBHOOK_SECRET": SECRET, "RUN_SECONDS": run_seconds}
        proc = subprocess.Popen([sys.executable, "-m", "hfdistill.automation", "--recipe", str(recipe),
                                 "--state-dir", str(state), "--port", "0", "--command", " ".join(runner)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)  # its own process group: the kill takes its runs too
        first = proc.stdout.readline()
        assert first.startswith("Webhook receiver on http://127.0.0.1:"), first + proc.stdout.read()
        return proc, first.split()[3].removesuffix("/webhook")

    proc, url = start(run_seconds="60")  # a run that is still going when the receiver dies
    one, two = ("1" * 40, "2" * 40)
    for sha in (one, two):
        payload = commit_payload("http://hub", "local/base", False, "refs/heads/main", None, sha, sha, "w")
        assert _post(url, payload)[0] == 202
    jobs = lambda: [json.loads(ln) for ln in (state / QUEUE_FILE).read_text().splitlines()]  # noqa: E731
    _wait(lambda: [j["status"] for j in jobs()] == ["running", "queued"], what="the first run to start")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [j["status"] for j in jobs()] == ["running", "queued"] and _runs(tmp_path) == []

    proc, url = start(run_seconds="0")
    try:
        _wait(lambda: [j["status"] for j in jobs()] == ["done", "done"], what="both jobs after the restart")
        assert [j["sha"] for j in jobs()] == [one, two] and [j["started"] for j in jobs()] == [2, 1]
        assert len(_runs(tmp_path)) == 2
        payload = commit_payload("http://hub", "local/base", False, "refs/heads/main", None, one, one, "w")
        assert _post(url, payload)[1]["status"] == "duplicate"  # what was done before the kill is remembered
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_an_unreachable_webhook_target_never_delays_or_fails_a_commit(tmp_path, hub_env):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/webhook"
    hub = start_hub(tmp_path / "hub", webhooks=(WebhookTarget(dead, SECRET, ()),))
    try:
        sender = hub.app.state.hub.webhooks
        sender.waits = (0.2, 0.2)
        api = HfApi(endpoint=hub.url)
        api.create_repo("local/base")
        started = time.monotonic()
        sha = _commit(api, "local/base", "v1")
        assert time.monotonic() - started < 5 and api.model_info("local/base").sha == sha
        assert sender.wait_idle()
        [delivery] = sender.delivered
        assert delivery.status is None and "Connection refused" in delivery.error
    finally:
        hub.stop()


def test_a_watched_recipe_repo_runs_the_recipes_stored_in_it_at_the_new_commit(tmp_path, hub_env, runner):
    receiver = Receiver([], ["local/recipes"], tmp_path / "state", SECRET, command=runner, log=lambda m: None)
    running = start_in_thread(receiver)
    hub = start_hub(tmp_path / "hub", webhooks=(WebhookTarget(running.url + "/webhook", SECRET, ()),))
    receiver.endpoint = hub.url
    try:
        api = HfApi(endpoint=hub.url)
        api.create_repo("local/recipes")
        recipe = "name: stored\nmodel: local/base\ntasks: [sst2]\nstages: [{name: t, kind: finetune}]\n"
        api.upload_file(path_or_fileobj=b"a: 1\n", path_in_repo="not-a-recipe.yaml", repo_id="local/recipes")
        sha = api.upload_file(path_or_fileobj=recipe.encode(), path_in_repo="stored.yaml", repo_id="local/recipes").oid
        _wait(lambda: [j["status"] for j in receiver.queue.snapshot()] == ["done", "done"], what="both commits")
        stored = tmp_path / "state" / "recipes" / "model" / "local" / "recipes" / "stored.yaml"
        assert receiver.queue.snapshot()[1]["sha"] == sha and stored.read_text() == recipe  # at that commit
        assert _runs(tmp_path) == [f"stored.yaml --force {hub.url}"]  # the first commit held no recipe

        # a repo that cannot be read fails its job in one line; the receiver goes on
        ghost = commit_payload(hub.url, "local/recipes", False, "refs/heads/main", None, "f" * 40, "f" * 40, "w")
        assert _post(running.url, ghost)[0] == 202
        _wait(lambda: receiver.queue.snapshot()[-1]["status"] == "failed", what="the failed job")
        error = receiver.queue.snapshot()[-1]["error"]
        assert error.startswith("recipes of local/recipes@ffffffff: revision not found (404)") and "\n" not in error
    finally:
        running.stop()
        hub.stop()
