"""The finetune stage and the pipeline around it: real training, evaluation, atomic folders, skip/resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hfdistill.folder import ModelFolder
from hfdistill.pipeline import run


def write_recipe(path: Path, **over) -> Path:
    r = {"name": "ft", "model": "minilm-l6", "tasks": ["sst2"], "max_seq_length": 64,
         "max_train_samples": 400, "max_eval_samples": 200, "output_dir": str(path.parent / "run"),
         "stages": [{"name": "teacher", "kind": "finetune", "epochs": 8, "batch_size": 16,
                     "learning_rate": 1e-3, "warmup_ratio": 0.0, "log_every": 50}]}
    r.update(over)
    path.write_text(yaml.safe_dump(r))
    return path


def test_tiny_bert_finetune_beats_the_majority_class(tiny_bert, glue_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HFDISTILL_GLUE_DIR", str(glue_dir))
    results = run(write_recipe(tmp_path / "r.yaml", model=str(tiny_bert), max_eval_samples=None))
    (res,) = results
    folder = ModelFolder(res.path)
    m = folder.metrics
    dev_labels = [int(line.split("\t")[1]) for line in (glue_dir / "SST-2/dev.tsv").read_text().splitlines()[1:]]
    majority = max(sum(dev_labels), len(dev_labels) - sum(dev_labels)) / len(dev_labels)
    assert m["num_examples"] == 872
    assert m["metrics"]["accuracy"] > majority + 0.03, (m, majority)
    # the folder is complete: weights as safetensors, tokenizer, metrics, lineage
    names = {p.name for p in res.path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.json", "lineage.json"} <= names
    assert not any(n.endswith(".bin") for n in names)
    lin = folder.lineage
    assert lin["kind"] == "finetune" and lin["parent_kind"] == "base" and lin["info"]["train_examples"] == 400
    assert m["latency_ms"]["num_samples"] >= 30 and m["latency_ms"]["median"] > 0
    assert m["params"] > 0 and m["disk_bytes"] == (res.path / "model.safetensors").stat().st_size


def test_rerun_skips_complete_stages_and_reruns_changed_ones(tiny_bert, glue_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HFDISTILL_GLUE_DIR", str(glue_dir))
    stages = [{"name": "teacher", "kind": "finetune", "max_steps": 3, "batch_size": 8},
              {"name": "again", "kind": "finetune", "max_steps": 2, "batch_size": 8}]
    recipe = write_recipe(tmp_path / "r.yaml", model=str(tiny_bert), max_train_samples=64, max_eval_samples=40,
                          stages=stages, latency_samples=30)
    first = run(recipe)
    assert [r.skipped for r in first] == [False, False]
    assert ModelFolder(first[1].path).lineage["parent"] == os.path.join("..", "..", "teacher", "sst2")
    stamp = (first[0].path / "model.safetensors").stat().st_mtime_ns

    second = run(recipe)
    assert [r.skipped for r in second] == [True, True]
    assert (first[0].path / "model.safetensors").stat().st_mtime_ns == stamp
    assert "teacher: complete, skipped" in capsys.readouterr().out

    stages[0]["repo_id"] = "someone/teacher"  # where it is published does not change the model: still skipped
    stages[0]["log_every"] = 7
    assert [r.skipped for r in run(write_recipe(recipe, model=str(tiny_bert), max_train_samples=64,
                                                max_eval_samples=40, stages=stages, latency_samples=30))] == [True, True]

    stages[1]["max_steps"] = 3  # change the second stage only
    third = run(write_recipe(recipe, model=str(tiny_bert), max_train_samples=64, max_eval_samples=40,
                             stages=stages, latency_samples=30))
    assert [r.skipped for r in third] == [True, False]
    assert ModelFolder(third[1].path).lineage["info"]["steps"] == 3

    forced = run(recipe, force=True)
    assert [r.skipped for r in forced] == [False, False]
    assert not list(tmp_path.glob("run/**/.*.tmp"))


def test_a_failing_stage_leaves_no_model_folder(tiny_bert, glue_dir, tmp_path, monkeypatch):
    """Bad input mid-run (a corrupt weights file in the parent) fails cleanly; no half-written folder."""
    import shutil

    from hfdistill.errors import HfdistillError

    monkeypatch.setenv("HFDISTILL_GLUE_DIR", str(glue_dir))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bert, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    recipe = write_recipe(tmp_path / "r.yaml", model=str(broken), max_train_samples=32, max_eval_samples=30)
    with pytest.raises(HfdistillError, match="cannot load"):
        run(recipe)
    assert not (tmp_path / "run" / "teacher" / "sst2").exists()
    assert not (tmp_path / "run" / "teacher" / ".sst2.tmp").exists()


def test_lora_finetune_is_merged_into_a_plain_model(tiny_bert, glue_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HFDISTILL_GLUE_DIR", str(glue_dir))
    stages = [{"name": "lora", "kind": "finetune", "max_steps": 4, "batch_size": 8, "learning_rate": 1e-3,
               "lora": {"r": 4, "alpha": 8, "target_modules": ["query", "value"]}}]
    (res,) = run(write_recipe(tmp_path / "r.yaml", model=str(tiny_bert), max_train_samples=64,
                              max_eval_samples=30, stages=stages))
    names = {p.name for p in res.path.iterdir()}
    assert "adapter_config.json" not in names
    from safetensors import safe_open

    with safe_open(str(res.path / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora" in k for k in keys)
    assert ModelFolder(res.path).lineage["info"]["lora"]["r"] == 4


def test_minilm_finetune_on_an_sst2_slice_learns(glue_dir, tmp_path, monkeypatch):
    """The real packaged MiniLM, briefly fine-tuned, is far above chance (kept in CI: ~1 min)."""
    monkeypatch.setenv("HFDISTILL_GLUE_DIR", str(glue_dir))
    stages = [{"name": "teacher", "kind": "finetune", "max_steps": 60, "batch_size": 16, "learning_rate": 3e-4}]
    (res,) = run(write_recipe(tmp_path / "r.yaml", max_train_samples=640, max_eval_samples=200, stages=stages))
    assert ModelFolder(res.path).metrics["metrics"]["accuracy"] >= 0.75


def test_eval_cli_prints_metrics_size_and_latency(tiny_bert, glue_dir, tmp_path):
    from transformers import AutoTokenizer, BertForSequenceClassification

    m = BertForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
    m.save_pretrained(tmp_path / "m")
    AutoTokenizer.from_pretrained(str(tiny_bert)).save_pretrained(tmp_path / "m")
    proc = subprocess.run([sys.executable, "-m", "hfdistill", "eval", str(tmp_path / "m"), "--task", "mrpc",
                           "--glue-dir", str(glue_dir), "--max-samples", "40", "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert set(res["metrics"]) == {"accuracy", "f1"} and res["num_examples"] == 40
    assert res["score"] == pytest.approx((res["metrics"]["accuracy"] + res["metrics"]["f1"]) / 2, abs=1e-5)
    assert res["latency_ms"]["num_samples"] >= 30 and res["latency_ms"]["threads"] >= 1
    bad = subprocess.run([sys.executable, "-m", "hfdistill", "eval", str(tmp_path / "nope"), "--task", "mrpc",
                          "--glue-dir", str(glue_dir)], capture_output=True, text=True)
    assert bad.returncode == 2 and "model folder not found" in bad.stderr


def test_checkpoints_of_a_changed_stage_are_not_resumed(tiny_bert, glue_dir, tmp_path, monkeypatch):
    """A checkpoint left by an interrupted run of *different* stage inputs is discarded, not resumed."""
    monkeypatch.setenv("HFDISTILL_GLUE_DIR", str(glue_dir))
    stale = tmp_path / "run" / ".work" / "teacher" / "sst2"
    (stale / "checkpoints" / "step_0000002").mkdir(parents=True)
    (stale / "checkpoints" / "step_0000002" / "hfdistill_state.json").write_text('{"step": 2}')
    (stale / "stage_key.json").write_text('{"key": "from-an-older-recipe"}')
    stages = [{"name": "teacher", "kind": "finetune", "max_steps": 3, "batch_size": 8}]
    (res,) = run(write_recipe(tmp_path / "r.yaml", model=str(tiny_bert), max_train_samples=32,
                              max_eval_samples=30, stages=stages))
    info = ModelFolder(res.path).lineage["info"]
    assert info["resumed_from_step"] == 0 and info["steps"] == 3
    assert not stale.exists()  # spent once the folder is complete
