"""Does a 2-process DDP run of finetune → distill → prune equal a 1-process run within noise? (issue 13)

The same small recipe (the packaged MiniLM, a few hundred SST-2 rows, short training, the full SST-2 dev set) runs
three times on this machine's CPU cores:
  1 process, seed 42  ·  1 process, seed 43 (the seed-to-seed noise)  ·  2 processes (`accelerate launch`), seed 42
The global batch is the same in every run (32 = 32 × 1 = 16 × 2), and so are the steps; the threads are split
between the processes (1 process: all cores; 2 processes: cores / 2 each). Prints each model's dev score side by
side with the differences, and each run's time.

    .venv/bin/python bench/ddp_check.py [--steps 40] [--train 640] [--work /tmp/hfdistill-ddp-check]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

GLOBAL_BATCH = 32


def recipe(work: Path, label: str, processes: int, seed: int, steps: int, train: int) -> Path:
    batch = GLOBAL_BATCH // processes
    r = {"name": f"ddp-{label}", "model": "minilm-l6", "tasks": ["sst2"], "seed": seed, "max_seq_length": 64,
         "max_train_samples": train, "latency_samples": 30, "output_dir": str(work / label),
         "stages": [
             {"name": "teacher", "kind": "finetune", "max_steps": steps, "batch_size": batch, "learning_rate": 1e-4},
             {"name": "student", "kind": "distill", "layers": [0, 2, 4], "max_steps": steps, "batch_size": batch,
              "learning_rate": 1e-4, "temperature": 2.0, "alpha_ce": 5.0, "alpha_hard": 2.0, "alpha_cos": 1.0},
             {"name": "pruned", "kind": "prune", "sparsity": 0.3, "iterations": 2, "num_examples": 128,
              "recover": {"max_steps": steps // 2, "batch_size": batch}}]}
    path = work / f"{label}.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def run(path: Path, processes: int) -> float:
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // processes)), "HF_HUB_OFFLINE": "1"}
    if processes == 1:
        cmd = [sys.executable, "-m", "hfdistill", "run", str(path), "--no-push"]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "hfdistill", "run", str(path), "--no-push"]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    (path.with_suffix(".log")).write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        sys.exit(f"{path.name}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return time.time() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps of finetune and distill (recover: half)")
    ap.add_argument("--train", type=int, default=640, help="SST-2 training rows")
    ap.add_argument("--work", type=Path, default=Path("/tmp/hfdistill-ddp-check"), help="scratch folder")
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    runs = [("1proc-seed42", 1, 42), ("1proc-seed43", 1, 43), ("2proc-seed42", 2, 42)]
    seconds, scores = {}, {}
    for label, n, seed in runs:
        seconds[label] = run(recipe(a.work, label, n, seed, a.steps, a.train), n)
        scores[label] = {s: json.loads((a.work / label / s / "sst2" / "metrics.json").read_text())["score"]
                         for s in ("teacher", "student", "pruned")}
        procs = {s: json.loads((a.work / label / s / "sst2" / "lineage.json").read_text())["processes"]
                 for s in ("teacher", "student", "pruned")}
        assert set(procs.values()) == {n}, procs
        print(f"{label}: {seconds[label]:.0f} s", flush=True)
    one, other, two = (scores[label] for label, _, _ in runs)
    print(f"\nSST-2 dev accuracy (872 rows), {a.train} train rows, {a.steps} steps, global batch {GLOBAL_BATCH}, "
          f"{os.cpu_count()} cores\n")
    print("| model | 1 process, seed 42 | 1 process, seed 43 | 2 processes, seed 42 | 2 proc − 1 proc | "
          "seed 43 − seed 42 |")
    print("|---|---|---|---|---|---|")
    for s in ("teacher", "student", "pruned"):
        print(f"| {s} | {one[s]:.4f} | {other[s]:.4f} | {two[s]:.4f} | {two[s] - one[s]:+.4f} | "
              f"{other[s] - one[s]:+.4f} |")
    print(f"| time (whole recipe) | {seconds[runs[0][0]]:.0f} s | {seconds[runs[1][0]]:.0f} s | "
          f"{seconds[runs[2][0]]:.0f} s | | |")


if __name__ == "__main__":
    main()
