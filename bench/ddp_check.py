"""Does a 2-process DDP run of finetune → distill → prune equal a 1-process run within noise? (issue 13)

The same small recipe (the packaged MiniLM, a few hundred SST-2 rows, short training, the full SST-2 dev set) runs
on this machine's CPU cores with 1 process and with 2 (`accelerate launch`), both seed 42, and with `--noise` also
1 process with seed 43 (the seed-to-seed noise the difference is to be compared with). The global batch is the
same in every run (32 = 32 × 1 = 16 × 2), and so are the steps; the threads are split between the processes
(1 process: all cores; 2 processes: cores / 2 each). Prints each model's dev score side by side with the
differences and the dev set's binomial standard error, and each run's time (the stages' own seconds from
lineage.json, so a run resumed after an interruption still counts its finished stages).

    .venv/bin/python bench/ddp_check.py [--steps 40] [--train 640] [--noise] [--fresh] [--work DIR]

A run folder already complete under --work is reused (a re-run of the script resumes); --fresh starts over.
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


def recipe(work: Path, label: str, processes: int, seed: int, steps: int, train: int, lr: float) -> Path:
    batch = GLOBAL_BATCH // processes
    r = {"name": f"ddp-{label}", "model": "minilm-l6", "tasks": ["sst2"], "seed": seed, "max_seq_length": 64,
         "max_train_samples": train, "latency_samples": 30, "output_dir": str(work / label),
         "stages": [
             {"name": "teacher", "kind": "finetune", "max_steps": steps, "batch_size": batch, "learning_rate": lr},
             {"name": "student", "kind": "distill", "layers": [0, 2, 4], "max_steps": steps, "batch_size": batch,
              "learning_rate": 1e-4, "temperature": 2.0, "alpha_ce": 5.0, "alpha_hard": 2.0, "alpha_cos": 1.0},
             {"name": "pruned", "kind": "prune", "sparsity": 0.3, "iterations": 2, "num_examples": 64,
              "recover": {"max_steps": steps // 2, "batch_size": batch}}]}
    path = work / f"{label}.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def run(path: Path, processes: int) -> None:
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // processes)), "HF_HUB_OFFLINE": "1"}
    if processes == 1:
        cmd = [sys.executable, "-m", "hfdistill", "run", str(path), "--no-push"]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "hfdistill", "run", str(path), "--no-push"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    with open(path.with_suffix(".log"), "a") as log:
        log.write(proc.stdout + proc.stderr)
    if proc.returncode:
        sys.exit(f"{path.name}: exit {proc.returncode}\n{proc.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps of finetune and distill (recover: half)")
    ap.add_argument("--train", type=int, default=640, help="SST-2 training rows")
    ap.add_argument("--lr", type=float, default=3e-4, help="the teacher's learning rate (the student's: 1e-4)")
    ap.add_argument("--noise", action="store_true", help="also run 1 process with seed 43 (seed-to-seed noise)")
    ap.add_argument("--fresh", action="store_true", help="delete the work folder first")
    ap.add_argument("--work", type=Path, default=Path("/tmp/hfdistill-ddp-check"), help="scratch folder")
    a = ap.parse_args()
    if a.fresh:
        shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True, exist_ok=True)
    runs = [("1proc-seed42", 1, 42), ("2proc-seed42", 2, 42)] + ([("1proc-seed43", 1, 43)] if a.noise else [])
    stages = ("teacher", "student", "pruned")
    seconds, scores = {}, {}
    for label, n, seed in runs:
        start = time.time()
        run(recipe(a.work, label, n, seed, a.steps, a.train, a.lr), n)
        folders = [a.work / label / s / "sst2" for s in stages]
        lineage = [json.loads((f / "lineage.json").read_text()) for f in folders]
        assert {lin["processes"] for lin in lineage} == {n}, label
        seconds[label] = sum(lin["seconds"] for lin in lineage)
        scores[label] = {s: json.loads((f / "metrics.json").read_text()) for s, f in zip(stages, folders)}
        print(f"{label}: stages {seconds[label]:.0f} s (this call {time.time() - start:.0f} s)", flush=True)
    one, two = scores["1proc-seed42"], scores["2proc-seed42"]
    n_dev = one["teacher"]["num_examples"]
    print(f"\nSST-2 dev accuracy ({n_dev} rows), {a.train} train rows, {a.steps} steps, global batch "
          f"{GLOBAL_BATCH}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}\n")
    noise = "1proc-seed43" in scores
    print("| model | 1 process | 2 processes | 2 − 1 | ± 1 s.e. (dev) |" + (" seed 43, 1 process | seed 43 − 42 |"
                                                                       if noise else ""))
    print("|---|---|---|---|---|" + ("---|---|" if noise else ""))
    for s in stages:
        p1, p2 = one[s]["score"], two[s]["score"]
        se = (p1 * (1 - p1) / n_dev) ** 0.5
        row = f"| {s} | {p1:.4f} | {p2:.4f} | {p2 - p1:+.4f} | {se:.4f} |"
        if noise:
            p3 = scores["1proc-seed43"][s]["score"]
            row += f" {p3:.4f} | {p3 - p1:+.4f} |"
        print(row)
    print(f"| time (stages, s) | {seconds['1proc-seed42']:.0f} | {seconds['2proc-seed42']:.0f} | | |"
          + (f" {seconds['1proc-seed43']:.0f} | |" if noise else ""))


if __name__ == "__main__":
    main()
