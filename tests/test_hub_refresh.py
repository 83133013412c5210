"""`hfdistill refresh`: published cards regenerated from the records in their repos, through the unmodified
huggingface_hub client and the embedded Hub — no commit when nothing changed, exactly the README when the card
code changed, the metrics too when re-evaluated, one-line errors naming the repo."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import HfApi

from hfdistill.cli import main
from hfdistill.errors import HubError
from hfdistill.evaluation import evaluate_folder
from hfdistill.hub import push_run
from hfdistill.publish import cards
from hfdistill.publish.refresh import refresh
from hfdistill.schema import PublishConfig

FAST = (0.05, 0.05)
QUIET = {"log": lambda _m: None, "progress": False, "retry_waits": FAST}
REPOS = [f"me/tiny-{s}-sst2" for s in ("teacher", "student", "student-8bit")]


def _state(api):
    """repo → (number of commits, {path: content id})."""
    return {r: (len(api.list_repo_commits(r)),
                {f.path: f.blob_id for f in api.list_repo_tree(r, recursive=True) if hasattr(f, "blob_id")})
            for r in REPOS}


def test_refresh_commits_nothing_when_unchanged_and_exactly_the_readme_when_the_card_code_changed(published_hub,
                                                                                                monkeypatch):
    api = HfApi(endpoint=published_hub.url)
    before = _state(api)
    results = refresh(REPOS[1:2], endpoint=published_hub.url, **QUIET)
    assert [(r.repo_id, r.changed) for r in results] == [(REPOS[1], [])]
    assert _state(api) == before  # the card rebuilt from the repos' records is byte-identical to the pushed one

    monkeypatch.setitem(cards.KIND_TAGS, "distill", "knowledge-distillation")  # new card code: the distill tag
    results = {r.repo_id: r.changed for r in refresh([], author="me", endpoint=published_hub.url, **QUIET)}
    assert results == {REPOS[0]: [], REPOS[1]: ["README.md"], REPOS[2]: []}
    after = _state(api)
    assert after[REPOS[1]][0] == before[REPOS[1]][0] + 1  # one commit
    changed = {p for p in after[REPOS[1]][1] if after[REPOS[1]][1][p] != before[REPOS[1]][1].get(p)}
    assert changed == {"README.md"}
    assert {r: after[r] for r in (REPOS[0], REPOS[2])} == {r: before[r] for r in (REPOS[0], REPOS[2])}
    info = api.model_info(REPOS[1])
    assert "knowledge-distillation" in info.tags and "distillation" not in info.tags
    assert info.card_data.base_model == REPOS[0] and info.card_data.eval_results[0].metric_value == 0.887

    again = refresh([], author="me", endpoint=published_hub.url, **QUIET)
    assert all(r.changed == [] for r in again) and _state(api) == after


def test_cards_published_without_the_hfdistill_metadata_gain_it_and_keep_their_pareto_tag(published_hub,
                                                                                         monkeypatch):
    (published_hub.run / "front.json").write_text(json.dumps({"tasks": {"sst2": {"front": ["student"]}}}))
    with monkeypatch.context() as m:  # the card code before the `hfdistill:` block existed
        m.setattr(cards, "summary_metadata", lambda *a, **k: {})
        push_run(published_hub.run, PublishConfig(repo_prefix="me/tiny"), endpoint=published_hub.url,
                 log=lambda _m: None)
    api = HfApi(endpoint=published_hub.url)
    assert api.model_info(REPOS[2]).card_data.to_dict().get("hfdistill") is None
    results = refresh(REPOS, endpoint=published_hub.url, **QUIET)
    assert [r.changed for r in results] == [["README.md"]] * 3
    facts = api.model_info(REPOS[2]).card_data.to_dict()["hfdistill"]
    assert facts["parent"] == REPOS[1] and facts["teacher"] == REPOS[0] and facts["latency_ms"] == 1.6
    assert facts["retention"] == round(0.881 / 0.912, 4) and facts["params"] == 1_040_000
    assert "pareto" in api.model_info(REPOS[1]).tags and "pareto" not in api.model_info(REPOS[0]).tags


def test_reevaluate_commits_new_metrics_with_the_card(published_hub, glue_dir):
    api = HfApi(endpoint=published_hub.url)
    before = _state(api)[REPOS[1]]

    def evaluate(path, task, lineage, max_samples):  # pull --verify's evaluation, with fewer latency runs
        return evaluate_folder(path, task, glue_dir=glue_dir, max_samples=max_samples, max_seq_length=64,
                               latency_samples=2)

    (r,) = refresh(REPOS[1:2], endpoint=published_hub.url, reevaluate=True, evaluate=evaluate, max_samples=8, **QUIET)
    assert r.reevaluated and set(r.changed) == {"metrics.json", "README.md", "size_vs_score.png"}
    metrics = json.loads(open(api.hf_hub_download(REPOS[1], "metrics.json")).read())
    assert metrics["num_examples"] == 8 and metrics["metrics"]["accuracy"] in {i / 8 for i in range(9)}
    assert metrics["task"] == "sst2" and metrics["data_source"]  # fields the evaluation does not write are kept
    claim = api.model_info(REPOS[1]).card_data.eval_results[0].metric_value
    assert claim == round(metrics["metrics"]["accuracy"], 6)
    after = _state(api)[REPOS[1]]
    assert after[0] == before[0] + 1 and after[1]["model.safetensors"] == before[1]["model.safetensors"]


def test_missing_repos_and_bad_tokens_are_one_line_errors_naming_the_repo(published_hub, monkeypatch,
                                                                         capsys):
    with pytest.raises(HubError, match=r"^refresh me/nope: not found \(404\)"):
        refresh(["me/nope"], endpoint=published_hub.url, **QUIET)
    assert main(["refresh", "me/nope", "--endpoint", published_hub.url, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hfdistill: error: refresh me/nope: not found (404)") and err.count("\n") == 1

    api = HfApi(endpoint=published_hub.url)
    before = _state(api)
    monkeypatch.setitem(cards.KIND_TAGS, "distill", "knowledge-distillation")
    with pytest.raises(HubError, match=r"^refresh me/tiny-student-sst2: not authenticated \(401\)"):
        refresh(REPOS[1:2], endpoint=published_hub.url, token="hf_wrongTokenWrongToken", **QUIET)
    assert _state(api) == before
