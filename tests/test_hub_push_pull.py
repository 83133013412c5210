"""Publishing a run and pulling it back through the real huggingface_hub client and the embedded Hub:
one commit per model, idempotent re-push, tags and branches, retries, clean errors, no token leaks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from huggingface_hub import HfApi, metadata_load
from pydantic import ValidationError

from hfdistill.errors import HubError
from hfdistill.hub import push_run
from hfdistill.publish.pull import pull
from hfdistill.publish.push import push_folder
from hfdistill.schema import PublishConfig
from tests.hub_fixtures import METRICS

FAST = (0.05, 0.05)  # retry waits for tests
STAGES = ["teacher", "student", "student-8bit"]


def _repo(stage: str) -> str:
    return f"local/tiny-{stage}-sst2"


def _push(run, hub, **kw):
    return push_run(run, PublishConfig(repo_prefix="local/tiny", **kw), endpoint=hub.url, retry_waits=FAST)


def test_push_run_publishes_every_model_parents_first_with_card_plot_and_metrics(tiny_run, hub_server):
    results = _push(tiny_run, hub_server)
    assert [r.repo_id for r in results] == [_repo(s) for s in STAGES]
    assert all(r.changed for r in results)
    api = HfApi(endpoint=hub_server.url)
    files = api.list_repo_files(_repo("student-8bit"))
    assert {"README.md", "size_vs_score.png", "metrics.json", "lineage.json", "config.json",
            "model.safetensors", "tokenizer.json"} <= set(files)
    for stage in STAGES:  # one commit per model on top of the repo's initial commit
        assert [c.title for c in api.list_repo_commits(_repo(stage))][0] == f"hfdistill: {stage}/sst2 of tinyrun"
        assert len(api.list_repo_commits(_repo(stage))) == 2
    card = api.model_info(_repo("student-8bit")).card_data
    assert card.base_model == _repo("student") and api.model_info(card.base_model).id == _repo("student")
    assert card.eval_results[0].metric_value == METRICS["student-8bit"][0]


def test_repush_unchanged_makes_no_commit_and_a_changed_model_commits_and_tags(tiny_run, hub_server):
    first = _push(tiny_run, hub_server, tag="v1")
    again = _push(tiny_run, hub_server, tag="v1")
    assert [r.changed for r in again] == [False, False, False]
    assert [r.commit for r in again] == [r.commit for r in first]

    metrics = tiny_run / "student-8bit" / "sst2" / "metrics.json"
    m = json.loads(metrics.read_text())
    m["metrics"]["accuracy"] = m["score"] = 0.9
    metrics.write_text(json.dumps(m))
    changed = _push(tiny_run, hub_server, tag="v2")
    assert [r.changed for r in changed] == [True, True, True]  # every card's plot shows the changed score
    refs = HfApi(endpoint=hub_server.url).list_repo_refs(_repo("student-8bit"))
    tags = {t.name: t.target_commit for t in refs.tags}
    assert tags == {"v1": first[2].commit, "v2": changed[2].commit} and tags["v1"] != tags["v2"]

    m["metrics"]["accuracy"] = m["score"] = 0.7
    metrics.write_text(json.dumps(m))
    with pytest.raises(HubError, match="tag 'v2' already exists"):
        _push(tiny_run, hub_server, tag="v2")


def test_push_to_a_branch_leaves_main_alone(tiny_run, hub_server):
    (res, *_) = _push(tiny_run, hub_server, revision="dev")
    api = HfApi(endpoint=hub_server.url)
    assert api.model_info(res.repo_id, revision="dev").sha == res.commit
    assert "README.md" not in api.list_repo_files(res.repo_id, revision="main")


def test_pull_checks_hashes_and_from_pretrained_loads_from_the_server(tiny_run, hub_server, tmp_path,
                                                                     monkeypatch):
    import huggingface_hub.constants as c
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _push(tiny_run, hub_server)
    res = pull(_repo("student"), local_dir=tmp_path / "pulled", endpoint=hub_server.url)
    assert res.ok and res.files_checked >= 8 and res.commit == HfApi(endpoint=hub_server.url).model_info(
        _repo("student")).sha
    assert (res.path / "model.safetensors").read_bytes() == \
        (tiny_run / "student" / "sst2" / "model.safetensors").read_bytes()

    # transformers takes the endpoint from huggingface_hub's constants, fixed at import from HF_ENDPOINT:
    # point them at the embedded Hub (the env-var route is test_from_pretrained_with_hf_endpoint_env)
    monkeypatch.setattr(c, "ENDPOINT", hub_server.url)
    monkeypatch.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE", hub_server.url + "/{repo_id}/resolve/{revision}/{filename}")
    tok = AutoTokenizer.from_pretrained(_repo("student-8bit"))
    model = AutoModelForSequenceClassification.from_pretrained(_repo("student-8bit"))
    assert model(**tok("good movie", return_tensors="pt")).logits.shape == (1, 2)
    assert model.config.id2label[1] == "positive"


@pytest.mark.slow
def test_from_pretrained_with_hf_endpoint_env(tiny_run, hub_server, hub_env):
    """What a user does: HF_ENDPOINT in the environment of a fresh interpreter."""
    push_folder(tiny_run / "student" / "sst2", _repo("student"), endpoint=hub_server.url, retry_waits=FAST)
    code = ("from transformers import AutoModelForSequenceClassification as M, AutoTokenizer as T; "
            f"r='{_repo('student')}'; t=T.from_pretrained(r); m=M.from_pretrained(r); "
            "print(tuple(m(**t('good movie', return_tensors='pt')).logits.shape))")
    env = {**os.environ, **hub_env, "HF_ENDPOINT": hub_server.url, "HF_HUB_OFFLINE": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("(1, 2)")


def test_push_without_a_valid_token_is_a_clean_401_and_the_token_never_leaks(tiny_run, hub_server, monkeypatch,
                                                                             capsys):
    secret = "hf_superSecretValue0123456789abcdef"
    monkeypatch.setenv("HF_TOKEN", secret)
    with pytest.raises(HubError) as e:
        _push(tiny_run, hub_server)
    msg = str(e.value)
    assert "401" in msg and "\n" not in msg and secret not in msg and e.value.__cause__ is None
    out = capsys.readouterr()
    assert secret not in out.out + out.err
    assert all(secret not in p.read_text() for p in tiny_run.rglob("README.md"))
    assert HfApi(endpoint=hub_server.url).list_models() == [] or not list(HfApi(endpoint=hub_server.url)
                                                                            .list_models())


def test_a_5xx_on_the_first_commit_is_retried_and_publishes_once(tiny_run, hub_server):
    fault = hub_server.faults.add("POST", r"/commit/", status=503, times=1)
    res = push_folder(tiny_run / "teacher" / "sst2", "local/t", endpoint=hub_server.url, retry_waits=FAST,
                      log=lambda m: None)
    assert fault.hits == 1 and res.changed
    assert len(HfApi(endpoint=hub_server.url).list_repo_commits("local/t")) == 2


def test_a_dropped_connection_mid_upload_is_retried(tiny_run, hub_server):
    fault = hub_server.faults.add("PUT", r"/_lfs/", drop=True, times=1)
    res = push_folder(tiny_run / "student" / "sst2", "local/s", endpoint=hub_server.url, retry_waits=FAST)
    assert fault.hits == 1 and res.changed
    files = HfApi(endpoint=hub_server.url).list_repo_tree("local/s")
    assert {f.path: f.size for f in files}["model.safetensors"] == \
        (tiny_run / "student" / "sst2" / "model.safetensors").stat().st_size


def test_a_failing_hub_leaves_no_half_published_repo(tiny_run, hub_server):
    hub_server.faults.add("POST", r"/commit/", status=503, times=100)
    with pytest.raises(HubError, match=r"HTTP 503 after 3 attempts"):
        push_folder(tiny_run / "teacher" / "sst2", "local/t", endpoint=hub_server.url, retry_waits=FAST,
                    log=lambda m: None)
    assert HfApi(endpoint=hub_server.url).list_repo_files("local/t") == [".gitattributes"]


def test_a_409_is_a_clean_error_without_retry(tiny_run, hub_server):
    fault = hub_server.faults.add("POST", r"/commit/", status=409, times=5)
    with pytest.raises(HubError) as e:
        push_folder(tiny_run / "teacher" / "sst2", "local/t", endpoint=hub_server.url, retry_waits=FAST)
    assert "conflict (409)" in str(e.value) and fault.hits == 1
    assert HfApi(endpoint=hub_server.url).list_repo_files("local/t") == [".gitattributes"]


def test_embedded_endpoint_publishes_into_a_local_folder_and_says_where_to_browse(tiny_run, tmp_path, hub_env):
    lines: list[str] = []
    pub = PublishConfig(endpoint="embedded", storage=tmp_path / "store")
    results = push_run(tiny_run, pub, log=lines.append)
    assert [r.repo_id for r in results] == [f"local/tinyrun-{s}-sst2" for s in STAGES]
    assert (tmp_path / "store" / "repos" / "models" / "local" / "tinyrun-student-sst2" / "refs.json").is_file()
    assert any("hfdistill hub serve --storage" in ln for ln in lines)
    readme = next(tiny_run.glob("student/sst2/README.md"))
    assert metadata_load(readme)["base_model"] == "local/tinyrun-teacher-sst2"


def test_publish_config_refuses_tokens_and_bad_values():
    with pytest.raises(ValidationError, match="token"):
        PublishConfig(token="hf_x")
    with pytest.raises(ValidationError, match="endpoint"):
        PublishConfig(endpoint="ftp://x")
    assert PublishConfig(repo_prefix="me").repo_id_for("s", "sst2", "r", None, 1, None) == "me/r-s-sst2"
    assert PublishConfig().repo_id_for("s", "cola", "r", "org/x-{task}", 2, None) == "org/x-cola"
    assert PublishConfig().repo_id_for("s", "cola", "r", "org/x", 2, None) == "org/x-cola"


def test_cli_card_push_and_pull(tiny_run, hub_server, tmp_path, capsys):
    from hfdistill.cli import build_parser

    parser = build_parser()
    run = lambda *argv: (lambda a: a.fn(a))(parser.parse_args([str(x) for x in argv]))  # noqa: E731

    assert run("card", tiny_run / "student" / "sst2", "--repo-id", "me/cli-student") == 0
    assert 'from_pretrained("me/cli-student")' in (tiny_run / "student" / "sst2" / "README.md").read_text()
    assert run("push", tiny_run, "--endpoint", hub_server.url, "--repo-prefix", "local/cli") == 0
    assert run("pull", "local/cli-teacher-sst2", "--endpoint", hub_server.url, "--local-dir", tmp_path / "p") == 0
    out = capsys.readouterr().out
    assert "3 of 3 model(s) changed" in out and out.strip().endswith("OK")
