"""Scale (issue 13): the teacher pass sharded over processes, the cache estimate and budget, pruning old entries,
`hfdistill plan`, and the big GLUE tasks (MNLI, QQP) through their GLUE files."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hfdistill import cli, glue
from hfdistill.cache import prune
from hfdistill.distillation.teacher_cache import estimate, teacher_outputs
from tests.conftest import copy_tokenizer, make_tiny_bert

REPO = Path(__file__).resolve().parents[1]


def texts(n: int = 37):
    """Sentence pairs of varied lengths (sharding must cope with an odd count and uneven batches)."""
    import datasets

    words = "the cat sat on a mat while quick brown foxes jumped over lazy dogs near the river bank".split()
    s1 = [" ".join(words[: 3 + (7 * i) % 15]) for i in range(n)]
    s2 = [" ".join(words[(i % 5):(i % 5) + 2 + i % 6]) for i in range(n)]
    return datasets.Dataset.from_dict({"sentence1": s1, "sentence2": s2, "label": [i % 2 for i in range(n)]})


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, minilm_path) -> Path:
    """A tiny random BERT classifier (3 layers)."""
    return make_tiny_bert(tmp_path_factory.mktemp("teacher"), minilm_path, layers=3, with_head=True, seed=1)


# ------------------------------------------------------------------------------------- the sharded teacher pass
LAUNCHED = """
import sys
from pathlib import Path
import datasets
from accelerate import Accelerator
from hfdistill.distillation.teacher_cache import teacher_outputs
data = datasets.load_from_disk(sys.argv[2])
acc = Accelerator(cpu=True)
out = teacher_outputs(Path(sys.argv[1]), data, 24, Path(sys.argv[3]), with_hidden=[1, 3], batch_size=4,
                      accelerator=acc)
print(f"rank {acc.process_index}: {len(out)} examples, from_cache={out.from_cache}", flush=True)
"""


def test_two_processes_write_the_same_cache_as_one_and_share_the_work(teacher, tmp_path):
    data = texts()
    data.save_to_disk(str(tmp_path / "data"))
    (tmp_path / "launched.py").write_text(LAUNCHED)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(tmp_path / "launched.py"),
         str(teacher), str(tmp_path / "data"), str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0: 37 examples, from_cache=False" in proc.stdout and "rank 1: 37 examples" in proc.stdout

    one = teacher_outputs(teacher, data, 24, tmp_path / "one", with_hidden=[1, 3], batch_size=4)
    (entry,) = (tmp_path / "two" / "teacher").iterdir()
    assert entry.name == one.path.name  # same key: same teacher, data, length, layers, precision
    meta = json.loads((entry / "meta.json").read_text())
    # each process computed its share (10 batches of 4 → 5 each), none waited through the whole pass
    assert meta["processes"] == 2 and sorted(meta["examples_per_process"]) == [17, 20]
    two = teacher_outputs(teacher, data, 24, tmp_path / "two", with_hidden=[1, 3])
    assert two.from_cache
    assert torch.allclose(two.logits, one.logits, atol=1e-5)
    assert np.array_equal(two.offsets, one.offsets)
    assert np.allclose(np.asarray(two.hidden, dtype=np.float32), np.asarray(one.hidden, dtype=np.float32), atol=2e-3)
    assert not list((tmp_path / "two" / "teacher").glob("*.tmp-*"))


def test_one_process_cache_holds_the_teachers_own_outputs_per_example(teacher, tmp_path):
    """Sharding by sorted length must not mix examples up: each example's row is its own forward pass."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    data = texts(11)
    out = teacher_outputs(teacher, data, 24, tmp_path, with_hidden=[3], batch_size=3)
    model = AutoModelForSequenceClassification.from_pretrained(teacher).eval()
    tok = AutoTokenizer.from_pretrained(teacher)
    for i in (0, 4, 10):
        enc = tok(data["sentence1"][i], data["sentence2"][i], truncation=True, max_length=24, return_tensors="pt")
        with torch.no_grad():
            ref = model(**enc, output_hidden_states=True)
        assert torch.allclose(out.logits[i], ref.logits[0], atol=1e-5)
        n = enc["input_ids"].shape[1]
        got = out.hidden_batch([i], n)[0, :, 0].float()
        assert torch.allclose(got, ref.hidden_states[3][0], atol=2e-2)


# ------------------------------------------------------------------------------------- estimate and budget
def test_estimate_is_within_two_percent_of_the_entry_written(teacher, tmp_path):
    data = texts(60)
    est = estimate(teacher, data, 24, with_hidden=[1, 2, 3])
    out = teacher_outputs(teacher, data, 24, tmp_path, with_hidden=[1, 2, 3])
    real = sum(p.stat().st_size for p in out.path.iterdir())
    assert abs(est.bytes - real) / real < 0.02, (est.bytes, real)
    assert est.hidden_layers == 3 and est.hidden_size == 32 and est.rows == 60
    assert est.tokens == int(out.offsets[-1])  # every row sampled here: the token count is exact
    # on a sample of the rows the estimate stays close
    assert abs(estimate(teacher, data, 24, with_hidden=[1, 2, 3], sample=20).bytes - real) / real < 0.25


@pytest.fixture(scope="module")
def tiny_bert3(tmp_path_factory, minilm_path) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("base3"), minilm_path, layers=3)


SCALE_STAGES = [
    {"name": "teacher", "kind": "finetune", "epochs": 2, "batch_size": 4},
    # matched pairs of layers [0, 2] store 2 teacher hidden states: ≈ 12 kB, over the 10 kB budget
    {"name": "student", "kind": "distill", "layers": [0, 2], "epochs": 1, "batch_size": 4},
    # `last` stores one: ≈ 6 kB, within it
    {"name": "student-last", "kind": "distill", "from": "teacher", "layers": [0, 2], "cos_layers": "last",
     "max_steps": 3, "batch_size": 2},
]


@pytest.fixture(scope="module")
def scale_run(tiny_bert3, fixture_glue_dir, tmp_path_factory):
    """One small MNLI run (6 train rows) with a 10 kB teacher-cache budget; returns (recipe dict, stdout)."""
    import contextlib
    import io

    from hfdistill.pipeline import run
    from hfdistill.recipe import parse_recipe

    root = tmp_path_factory.mktemp("scale")
    recipe = {"name": "scale", "model": str(tiny_bert3), "tasks": ["mnli"], "glue_dir": str(fixture_glue_dir),
              "output_dir": str(root / "run"), "max_seq_length": 32, "latency_samples": 30,
              "cache_budget_gb": 1e-5, "stages": SCALE_STAGES,
              "publish": {"endpoint": "embedded", "repo_prefix": "me/sc"}}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run(parse_recipe(recipe, base_dir=root), publish=False)
    return recipe, out.getvalue()


def _lineage(recipe: dict, stage: str) -> dict:
    return json.loads((Path(recipe["output_dir"]) / stage / "mnli" / "lineage.json").read_text())


def test_over_budget_distill_says_so_and_computes_teacher_hidden_states_online(scale_run):
    recipe, out = scale_run
    lines = [line for line in out.splitlines() if "] student:" in line and "teacher cache" in line]
    assert lines[0].startswith("[mnli] student: teacher cache ≈ ") and "2 hidden layers × 32 × 2 B" in lines[0]
    assert lines[0].endswith("budget 10.0 kB (cache_budget_gb)")
    assert "exceeds the budget: teacher hidden states are computed online during training" in lines[1]
    assert len(lines) == 2  # one line for the estimate, one for the fallback
    facts = _lineage(recipe, "student")["info"]["teacher_cache"]
    assert facts["budget_fallback"] is True and facts["hidden"] is False and facts["budget_bytes"] == 10_000
    assert facts["estimate_bytes"] > 10_000
    entry = Path(recipe["output_dir"]) / ".cache" / "teacher" / facts["key"]
    assert not (entry / "hidden.npy").exists()  # logits only: nothing near the estimate was written


def test_within_budget_distill_caches_hidden_states_and_the_estimate_holds(scale_run):
    recipe, out = scale_run
    assert "student-last: teacher cache ≈ " in out and "student-last: the teacher cache exceeds" not in out
    # its sibling `student` aligns teacher layers [1, 3]: the shared entry would not fit, so only its own [3]
    assert re.search(r"student-last: a shared teacher cache for every sibling student's layers \[1, 3\] "
                     r"\(≈ 1\d\.\d kB\) exceeds the budget: caching this stage's layers only", out), out
    facts = _lineage(recipe, "student-last")["info"]["teacher_cache"]
    assert facts["hidden"] is True and facts["budget_fallback"] is False
    entry = Path(recipe["output_dir"]) / ".cache" / "teacher" / facts["key"]
    real = sum(p.stat().st_size for p in entry.iterdir())
    assert (entry / "hidden.npy").is_file() and abs(facts["estimate_bytes"] - real) / real < 0.05  # 6 kB in all


# ------------------------------------------------------------------------------------- pruning old entries
def fake_entry(run: Path, key: str, size: int, age_s: float = 0) -> Path:
    d = run / ".cache" / "teacher" / key
    d.mkdir(parents=True)
    (d / "hidden.npy").write_bytes(b"x" * size)
    if ".tmp-" not in key:
        (d / "meta.json").write_text(json.dumps({"num_examples": 3, "hidden_layers": [1]}))
    if age_s:
        for p in d.iterdir():
            os.utime(p, (time.time() - age_s, time.time() - age_s))
    return d


def test_prune_evicts_unreferenced_entries_of_every_run_under_a_root(tmp_path, capsys):
    a, b = tmp_path / "runs" / "a", tmp_path / "runs" / "nested" / "b"
    used = fake_entry(a, "u" * 32, 1000)
    (a / "student" / "sst2").mkdir(parents=True)
    (a / "student" / "sst2" / "lineage.json").write_text(json.dumps({"info": {"teacher_cache": {"key": "u" * 32}}}))
    stale = fake_entry(a, "s" * 32, 3000)
    resuming = fake_entry(b, "r" * 32, 500)  # an unfinished stage will read it when it resumes
    (b / ".work" / "student" / "mnli").mkdir(parents=True)
    (b / ".work" / "student" / "mnli" / "teacher_cache.json").write_text(json.dumps({"keys": ["r" * 32]}))
    crashed = fake_entry(b, "c" * 32 + ".tmp-99", 700, age_s=7200)
    running = fake_entry(b, "d" * 32 + ".tmp-98", 900)  # a pass writing now

    evicted = sum(f.stat().st_size for d in (stale, crashed) for f in d.iterdir())  # 3000 + 700 + meta.json
    dry = prune(tmp_path / "runs", dry_run=True)
    assert sorted(dry.run_dirs) == sorted([a, b]) and dry.freed_bytes == evicted and stale.exists()
    report = prune(tmp_path / "runs")
    assert sorted(report.removed) == sorted([stale, crashed]) and report.freed_bytes == evicted
    assert used.exists() and resuming.exists() and running.exists() and not stale.exists() and not crashed.exists()

    assert cli.main(["cache", str(tmp_path / "runs"), "--prune"]) == 0
    out = capsys.readouterr().out
    assert "2 run folders, 0 unreferenced cache entries evicted, 2 in use kept; freed 0 B" in out


# ------------------------------------------------------------------------------------- MNLI and QQP
@pytest.mark.parametrize("task", ["mnli", "qqp"])
def test_big_tasks_load_from_glue_files_and_score_with_the_real_metrics(task, fixture_glue_dir, minilm_path,
                                                                       tmp_path):
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from hfdistill.evaluation import evaluate_model, predict
    from hfdistill.models import load_model

    data = glue.load_task(task, fixture_glue_dir)
    torch.manual_seed(5)
    path = tmp_path / "m"
    BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64,
                                             num_labels=data.task.num_labels)).save_pretrained(path)
    copy_tokenizer(minilm_path, path)
    model, tok = load_model(path), AutoTokenizer.from_pretrained(path)
    m = evaluate_model(model, tok, data, max_seq_length=32, latency_samples=30, model_dir=path)
    preds, labels = predict(model, tok, data.dev, data.task, 32, 8, None)
    gold = [r[-1] if task == "mnli" else r[5] for r in glue._rows(fixture_glue_dir / data.task.folder / "dev"
                                                                    f"{'_matched' if task == 'mnli' else ''}.tsv")[1:]]
    names = data.task.labels
    assert labels.tolist() == [names.index(g) for g in gold]  # the GLUE label column, mapped to class ids
    assert m["num_examples"] == len(data.dev) and m["metrics"]["accuracy"] == round(accuracy_score(labels, preds), 6)
    if task == "mnli":
        mm_p, mm_y = predict(model, tok, data.extra_dev["dev_mismatched"], data.task, 32, 8, None)
        assert m["metrics"]["accuracy_mismatched"] == round(accuracy_score(mm_y, mm_p), 6)
        assert m["score"] == m["metrics"]["accuracy"]  # matched only
    else:
        assert m["metrics"]["f1"] == round(f1_score(labels, preds), 6)
        assert m["score"] == round((m["metrics"]["accuracy"] + m["metrics"]["f1"]) / 2, 6)


# ------------------------------------------------------------------------------------- hfdistill plan
def test_steps_formula_is_the_training_loops():
    from hfdistill.planning import steps_for
    from hfdistill.training import TrainingArgs

    assert steps_for(1000, TrainingArgs(batch_size=32, epochs=3)) == 3 * 32           # ceil(1000/32) = 32
    assert steps_for(1000, TrainingArgs(batch_size=32, epochs=3), processes=2) == 3 * 16
    assert steps_for(1000, TrainingArgs(batch_size=32, epochs=3), processes=3) == 3 * 11   # ceil(32/3)
    assert steps_for(1000, TrainingArgs(batch_size=32, epochs=0.5, gradient_accumulation_steps=4)) == 4
    assert steps_for(10 ** 6, TrainingArgs(batch_size=32, max_steps=7)) == 7


def test_plan_predicts_the_runs_steps_cache_sizes_fallback_and_repos(scale_run, tmp_path, capsys):
    from hfdistill.planning import plan
    from hfdistill.recipe import parse_recipe

    recipe, _ = scale_run
    p = plan(parse_recipe(recipe, base_dir=Path(recipe["output_dir"]).parent))
    by = {s.stage: s for s in p.stages}
    assert [s.stage for s in p.stages] == ["teacher", "student", "student-last"]
    for name in by:  # steps equal what the run did
        info = _lineage(recipe, name)["info"]
        assert by[name].steps == info["steps"], name
    assert (by["teacher"].steps, by["student"].steps, by["student-last"].steps) == (4, 2, 3)  # 6 rows, batch 4
    assert by["student"].parent == "teacher" and by["student-last"].parent == "teacher"
    assert by["student"].budget_fallback is True and by["student-last"].budget_fallback is False
    assert by["student"].teacher_cache_hidden_layers == 0 and by["student-last"].teacher_cache_hidden_layers == 1
    for name in ("student", "student-last"):  # the cache each wrote, within 5 % (its meta.json within 100 B)
        key = _lineage(recipe, name)["info"]["teacher_cache"]["key"]
        real = sum(f.stat().st_size for f in (Path(recipe["output_dir"]) / ".cache" / "teacher" / key).iterdir())
        assert abs(by[name].teacher_cache_bytes - real) < max(100, 0.05 * real), (name, by[name], real)
    assert by["student-last"].repo_id == "me/sc-student-last-mnli"
    assert by["teacher"].layers == 3 and by["student"].layers == 2 and all(s.seconds > 0 for s in p.stages)

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**recipe, "cache_budget_gb": 1.0}))
    capsys.readouterr()
    assert cli.main(["plan", str(path), "--processes", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["processes"] == 2 and data["budget_bytes"] == 10 ** 9
    assert [s["steps"] for s in data["stages"]] == [2, 1, 3]  # per process: ceil(ceil(6/4)/2) batches
    assert [s["budget_fallback"] for s in data["stages"]] == [None, False, False]
    assert not list(Path(recipe["output_dir"]).parent.glob("runs"))  # planning wrote nothing


def test_mnli_and_qqp_load_through_hub_dataset_in_nyu_mll_glue_layout(tmp_path):
    """`hub_dataset:` with nyu-mll/glue's configs and split names (MNLI: validation_matched/_mismatched,
    test_matched; no plain `validation`), here a local folder that `datasets.load_dataset` reads the same way."""
    splits = {"mnli": ("train", "validation_matched", "validation_mismatched", "test_matched"),
              "qqp": ("train", "validation", "test")}
    cols = {"mnli": ("premise", "hypothesis"), "qqp": ("question1", "question2")}
    readme = ["---", "configs:"]
    for task, names in splits.items():
        readme += [f"- config_name: {task}", "  data_files:"]
        for split in names:
            readme += [f"  - split: {split}", f"    path: {task}/{split}.jsonl"]
            (tmp_path / task).mkdir(exist_ok=True)
            rows = [{cols[task][0]: f"{split} first {i}", cols[task][1]: f"second {i}",
                     "label": -1 if split.startswith("test") else i % (3 if task == "mnli" else 2), "idx": i}
                    for i in range(5 if split == "train" else 3)]
            (tmp_path / task / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "README.md").write_text("\n".join(readme + ["---", ""]))

    mnli = glue.load_task("mnli", hub_dataset=str(tmp_path))
    assert list(mnli.dev["sentence1"]) == [f"validation_matched first {i}" for i in range(3)]
    assert list(mnli.dev["label"]) == [0, 1, 2] and len(mnli.train) == 5
    assert list(mnli.extra_dev["dev_mismatched"]["sentence1"])[0] == "validation_mismatched first 0"
    assert list(mnli.test["label"]) == [-1, -1, -1] and mnli.source == f"hub:{tmp_path}"
    qqp = glue.load_task("qqp", hub_dataset=str(tmp_path))
    assert list(qqp.dev["sentence2"]) == ["second 0", "second 1", "second 2"] and list(qqp.dev["label"]) == [0, 1, 0]
    m = glue.compute_metrics("mnli", np.array([0, 1, 1]), np.array(mnli.dev["label"]),
                             mismatched=(np.array([0, 0, 0]), np.array(mnli.extra_dev["dev_mismatched"]["label"])))
    assert m == {"accuracy": 2 / 3, "accuracy_mismatched": 1 / 3}
