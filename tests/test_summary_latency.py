"""The run summary (SUMMARY.md + summary.json) and latency figures that can be trusted (issue 15)."""

import json
import time

import pytest
import torch
import yaml

from hfdistill import summary
from hfdistill.evaluation import comparable, latency_ms, speedup


def _metrics(run, stage):
    return json.loads((run / stage / "sst2" / "metrics.json").read_text())


def test_summary_has_every_model_with_retention_and_speedup_against_teacher_and_parent(tiny_run):
    s = summary.write(tiny_run)
    rows = {r["model"]: r for r in s["tasks"]["sst2"]["models"]}
    assert list(rows) == ["teacher", "student", "student-8bit"] and s["tasks"]["sst2"]["teacher"] == "teacher"
    t, st, q = (_metrics(tiny_run, n) for n in rows)
    assert rows["student"]["retention_vs_teacher"] == pytest.approx(st["score"] / t["score"], abs=1e-4)
    assert rows["student-8bit"]["retention_vs_parent"] == pytest.approx(q["score"] / st["score"], abs=1e-4)
    assert rows["student"]["speedup_vs_teacher"] == pytest.approx(4.0 / 2.0)
    assert rows["student-8bit"]["speedup_vs_parent"] == pytest.approx(2.0 / 1.6)
    assert rows["student-8bit"]["speedup_vs_teacher"] == pytest.approx(4.0 / 1.6)
    assert "retention_vs_teacher" not in rows["teacher"]
    # 0.881/0.912 = 96.6 % < 97 %: not the fastest "that keeps the teacher's score"; the student (97.3 %) is
    assert s["tasks"]["sst2"]["use"] == {"most_accurate": "teacher", "fastest_keeping_97pct": "student",
                                         "smallest_keeping_97pct": "student"}
    md = (tiny_run / "SUMMARY.md").read_text()
    assert "| `student` | distill | 0.8870 | 97.3 % |" in md and "2.00×" in md
    assert 'student_8bit = AutoModelForSequenceClassification.from_pretrained("run/student-8bit/sst2")' in md
    assert json.loads((tiny_run / "summary.json").read_text()) == s


def test_no_speedup_between_latencies_measured_under_different_conditions(tiny_run):
    path = tiny_run / "student" / "sst2" / "metrics.json"
    m = json.loads(path.read_text())
    m["latency_ms"]["threads"] = 1  # the teacher was timed with 2 threads
    path.write_text(json.dumps(m))
    rows = {r["model"]: r for r in summary.summarize(tiny_run)["tasks"]["sst2"]["models"]}
    assert rows["student"]["speedup_vs_teacher"] is None and rows["student"]["speedup_vs_parent"] is None
    assert "| `student` | distill | 0.8870 | 97.3 % | 97.3 % | 1.04M | " in summary.render(summary.summarize(tiny_run))


class _Sleeper(torch.nn.Module):
    """A 'model' whose forward takes a known time: `slow_after` calls in, it becomes 10× slower."""

    def __init__(self, ms: float, slow_after: int = 10 ** 9):
        super().__init__()
        self.ms, self.slow_after, self.calls, self.threads_seen = ms, slow_after, 0, set()

    def forward(self, **_):
        self.calls += 1
        self.threads_seen.add(torch.get_num_threads())
        time.sleep(self.ms * (10 if self.calls > self.slow_after else 1) / 1000)


@pytest.fixture(scope="module")
def rows_and_tokenizer(glue_dir, minilm_path):
    from transformers import AutoTokenizer

    from hfdistill import glue

    data = glue.load_task("sst2", glue_dir=glue_dir, max_eval_samples=30, splits=("dev",))
    return data.dev, AutoTokenizer.from_pretrained(str(minilm_path))


def test_latency_uses_fixed_threads_warmup_and_several_passes(rows_and_tokenizer):
    rows, tok = rows_and_tokenizer
    before = torch.get_num_threads()
    model = _Sleeper(2.0)
    lat = latency_ms(model, tok, rows, 32, num_samples=30, threads=2, rounds=3)
    assert model.threads_seen == {2} and torch.get_num_threads() == before
    assert model.calls == 5 + 3 * 30  # warm-up, then every example in every pass
    assert lat["threads"] == 2 and lat["rounds"] == 3 and len(lat["pass_medians"]) == 3
    assert 2.0 <= lat["median"] < 4.0 and lat["max_seq_length"] == 32 and lat["cpu"]


def test_an_unstable_measurement_is_flagged(rows_and_tokenizer):
    rows, tok = rows_and_tokenizer
    lat = latency_ms(_Sleeper(1.0, slow_after=5 + 30), tok, rows, 32, num_samples=30, rounds=2)  # 2nd pass 10× slower
    assert lat["reliable"] is False and lat["spread"] > 0.5  # ≈ 1.6 on a quiet machine; sleeps stretch under load
    assert any("passes disagree" in w for w in lat["warnings"])


def test_comparable_requires_the_same_conditions():
    a = {"device": "cpu", "latency_ms": {"median": 10.0, "threads": 1, "batch_size": 1, "max_seq_length": 64,
                                         "num_samples": 50, "cpu": "X"}}
    b = json.loads(json.dumps(a))
    b["latency_ms"]["median"] = 5.0
    assert comparable(a, b) and speedup(a, b) == pytest.approx(2.0)
    for key, value in (("threads", 2), ("max_seq_length", 128), ("cpu", "Y")):
        c = json.loads(json.dumps(b))
        c["latency_ms"][key] = value
        assert not comparable(a, c) and speedup(a, c) is None


def test_a_real_run_writes_its_summary(tmp_path, tiny_bert, glue_dir):
    from hfdistill.pipeline import run

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "s", "model": str(tiny_bert), "tasks": ["sst2"], "glue_dir": str(glue_dir), "max_train_samples": 64,
        "max_eval_samples": 40, "max_seq_length": 32, "latency_samples": 30, "stages": [
            {"name": "teacher", "kind": "finetune", "max_steps": 4, "batch_size": 16,
             "per_task": {"sst2": {"max_steps": 3}, "mrpc": {"max_steps": 9}}},
            {"name": "student", "kind": "distill", "max_steps": 2, "batch_size": 16}]}))
    run(recipe, publish=False)
    s = json.loads((tmp_path / "runs" / "s" / "summary.json").read_text())
    rows = {r["model"]: r for r in s["tasks"]["sst2"]["models"]}
    assert set(rows) == {"teacher", "student"} and rows["student"]["parent"] == "teacher"
    assert rows["student"]["latency_threads"] == 1
    lineage = json.loads((tmp_path / "runs" / "s" / "teacher" / "sst2" / "lineage.json").read_text())
    assert lineage["info"]["steps"] == 3 and lineage["stage_config"]["max_steps"] == 3  # the per-task override
    assert 0.5 <= rows["teacher"]["majority_baseline"] < 0.7  # SST-2's first 40 dev rows are close to balanced
    assert rows["teacher"]["clearly_above_baseline"] in (True, False)
    assert (tmp_path / "runs" / "s" / "SUMMARY.md").read_text().startswith("# Run `s`")


def test_majority_baseline_and_its_margin():
    import numpy as np

    from hfdistill import glue
    from hfdistill.evaluation import clearly_above_baseline, majority_baseline

    labels = np.array([1] * 60 + [0] * 40)
    b = majority_baseline(glue.TASKS["sst2"], labels)
    assert b == {"label": 1, "score": 0.6, "margin": pytest.approx(2 * (0.6 * 0.4 / 100) ** 0.5, abs=1e-6)}
    mrpc = majority_baseline(glue.TASKS["mrpc"], labels)  # accuracy 0.6 and F1 of always "1" = 0.75
    assert mrpc["score"] == pytest.approx((0.6 + 0.75) / 2)
    assert majority_baseline(glue.TASKS["cola"], labels)["score"] == 0.0
    assert majority_baseline(glue.TASKS["stsb"], np.array([1.0, 2.0])) is None
    assert clearly_above_baseline({"score": 0.70, "majority_baseline": b}) is True
    assert clearly_above_baseline({"score": 0.65, "majority_baseline": b}) is False  # 0.6 + 0.098 > 0.65
    assert clearly_above_baseline({"score": 0.65}) is None


def test_a_model_no_better_than_the_majority_class_is_flagged_everywhere(tiny_run, capsys):
    from hfdistill.publish.cards import write_card

    path = tiny_run / "student" / "sst2" / "metrics.json"
    m = json.loads(path.read_text())
    m["majority_baseline"] = {"label": 1, "score": 0.87, "margin": 0.034}  # 0.887 < 0.87 + 0.034
    path.write_text(json.dumps(m))
    s = summary.write(tiny_run)
    rows = {r["model"]: r for r in s["tasks"]["sst2"]["models"]}
    assert rows["student"]["clearly_above_baseline"] is False and rows["teacher"]["clearly_above_baseline"] is None
    assert s["tasks"]["sst2"]["use"]["fastest_keeping_97pct"] != "student"
    md = (tiny_run / "SUMMARY.md").read_text()
    assert "0.8870 ⚠ ≈ majority class" in md and "`student` did not clearly beat that baseline" in md
    assert "Not clearly better than guessing" in write_card(tiny_run / "student" / "sst2").read_text()
    assert "Not clearly better than guessing" not in write_card(tiny_run / "teacher" / "sst2").read_text()
