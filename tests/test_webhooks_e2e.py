"""The whole webhook loop on this machine, nothing stood in for: a commit to a "base model" repo on the embedded Hub
→ the Hub's webhook → the receiver queues it → `hfdistill run` re-runs the tiny recipe built on that repo → a new
commit on the published repo. Then the same for a recipe stored in a watched recipe repo."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from huggingface_hub import HfApi

from hfdistill.automation import Receiver, start_in_thread
from hfdistill.hubserver import start_in_thread as start_hub
from hfdistill.hubserver.webhooks import WebhookTarget
from tests.conftest import make_tiny_bert

SECRET = "e2e-s3cret"


def _tiny_recipe(name: str, hub_url: str) -> dict:
    return {"name": name, "model": "local/base", "tasks": ["sst2"], "max_seq_length": 32, "max_train_samples": 32,
            "max_eval_samples": 32, "latency_samples": 30,
            "stages": [{"name": "teacher", "kind": "finetune", "max_steps": 2, "batch_size": 16}],
            "publish": {"endpoint": hub_url, "repo_prefix": f"local/{name}"}}


def _wait_jobs(receiver: Receiver, statuses: list[str], timeout: float = 600) -> list[dict]:
    deadline = time.monotonic() + timeout
    while [j["status"] for j in receiver.queue.snapshot()] != statuses:
        jobs = receiver.queue.snapshot()
        if time.monotonic() > deadline or any(j["status"] == "failed" for j in jobs):
            logs = [open(r["log"]).read()[-3000:] for j in jobs for r in j["runs"]]
            raise AssertionError(f"jobs {[(j['status'], j['error']) for j in jobs]} != {statuses}\n{logs}")
        time.sleep(0.2)
    return receiver.queue.snapshot()


@pytest.mark.slow
def test_a_new_base_model_commit_reruns_and_republishes_the_recipes_built_on_it(tmp_path, hub_env, glue_dir,
                                                                               minilm_path, monkeypatch):
    monkeypatch.setenv("HFDISTILL_GLUE_DIR", str(glue_dir))
    recipe = tmp_path / "auto.yaml"
    recipe.write_text(yaml.safe_dump(_tiny_recipe("auto", "http://127.0.0.1:1")))  # the Hub's port comes below
    receiver = Receiver([recipe], ["local/base", "local/recipes"], tmp_path / "state", SECRET, log=print)
    running = start_in_thread(receiver)
    hub = start_hub(tmp_path / "hub", webhooks=(
        WebhookTarget(running.url + "/webhook", SECRET, ("local/base", "local/recipes")),))
    receiver.endpoint = hub.url
    try:
        recipe.write_text(yaml.safe_dump(_tiny_recipe("auto", hub.url)))
        api = HfApi(endpoint=hub.url)
        api.create_repo("local/base")
        first = api.upload_folder(folder_path=make_tiny_bert(tmp_path / "base-v1", minilm_path, seed=0),
                                  repo_id="local/base").oid
        [job] = _wait_jobs(receiver, ["done"])
        assert job["sha"] == first and job["runs"][0]["exit"] == 0
        published = "local/auto-teacher-sst2"
        commits = [c.commit_id for c in api.list_repo_commits(published)]
        lineage = json.loads(open(api.hf_hub_download(published, "lineage.json")).read())
        assert lineage["base_model"] == "local/base"

        # a new commit of the base model: the recipe runs again (forced: the id did not change) and republishes
        second = api.upload_folder(folder_path=make_tiny_bert(tmp_path / "base-v2", minilm_path, seed=1),
                                   repo_id="local/base").oid
        _wait_jobs(receiver, ["done", "done"])
        again = [c.commit_id for c in api.list_repo_commits(published)]
        assert len(again) == len(commits) + 1 and again[1:] == commits
        assert receiver.queue.snapshot()[1]["sha"] == second

        # a recipe stored in a watched recipe repo runs at the commit that changed it
        api.create_repo("local/recipes")
        stored = yaml.safe_dump(_tiny_recipe("stored", hub.url))
        sha = api.upload_file(path_or_fileobj=stored.encode(), path_in_repo="stored.yaml", repo_id="local/recipes").oid
        jobs = _wait_jobs(receiver, ["done", "done", "done"])
        assert jobs[2]["repo"] == "local/recipes" and jobs[2]["sha"] == sha
        assert jobs[2]["runs"][0]["recipe"].endswith("stored.yaml")
        assert api.list_repo_commits("local/stored-teacher-sst2")
    finally:
        running.stop()
        hub.stop()
