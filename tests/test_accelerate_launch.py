"""`accelerate launch` with two CPU processes: data-parallel training, one writer, a clean end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from hfdistill.folder import ModelFolder


def test_two_process_accelerate_launch_runs_a_recipe(tiny_bert, glue_dir, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "ddp", "model": str(tiny_bert), "tasks": ["mrpc"], "glue_dir": str(glue_dir),
        "max_seq_length": 64, "max_train_samples": 64, "max_eval_samples": 41, "latency_samples": 30,
        "output_dir": str(tmp_path / "run"),
        "stages": [{"name": "teacher", "kind": "finetune", "max_steps": 4, "batch_size": 8, "log_every": 1}]}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "hfdistill", "run", str(recipe)],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run" / "teacher" / "mrpc"
    folder = ModelFolder(out)
    assert folder.is_complete()
    m = folder.metrics
    # 41 dev rows sharded over 2 processes and gathered without duplicates
    assert m["num_examples"] == 41
    assert folder.lineage["info"]["steps"] == 4 and folder.lineage["processes"] == 2
    # one writer: a single completion line, no leftovers
    assert proc.stdout.count("teacher: score") == 1
    assert not list((tmp_path / "run").rglob(".*.tmp"))
    assert json.loads((out / "metrics.json").read_text())["latency_ms"]["num_samples"] == 30
