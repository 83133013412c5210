"""The reduced budget bench/layers.py and bench/general.py share (about one hour on a shared 2-core machine).

Each task runs in its own process with one torch thread (on a machine shared with other work, one thread per
process is several times faster than two threads fighting for the cores), the two tasks side by side. Both scripts
use the same run folder per task, so the teacher (the packaged MiniLM fine-tuned on the task) is trained once and
reused, with its teacher-output cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN_ROOT = REPO / "runs" / "bench-distill-budget"
TASKS = ["sst2", "mrpc"]
DEV_SIZE = {"sst2": 872, "mrpc": 408}

BASE = {"model": "minilm-l6", "seed": 42, "max_seq_length": 64, "max_train_samples": 4800, "latency_samples": 30}
# MRPC (3,668 pairs) needs more passes than SST-2 to beat its majority class (68.4% of dev)
TEACHER = {"sst2": {"name": "teacher", "kind": "finetune", "max_steps": 300, "batch_size": 16,
                    "learning_rate": 1.0e-4, "log_every": 50, "checkpoint_every": 100},
           "mrpc": {"name": "teacher", "kind": "finetune", "max_steps": 250, "batch_size": 16,
                    "learning_rate": 1.5e-4, "log_every": 50, "checkpoint_every": 100}}
STUDENT = {"kind": "distill", "from": "teacher", "max_steps": 150, "batch_size": 16, "learning_rate": 1.0e-4,
           "log_every": 50, "checkpoint_every": 1000}


def setup() -> None:
    os.environ.setdefault("HFDISTILL_GLUE_DIR", str(REPO.parent / "shared" / "glue"))
    sys.path.insert(0, str(REPO))


def run_task(name: str, task: str, stages: list[dict]) -> None:
    """Run (or skip, when complete) the teacher and `stages` for one task in this process, one thread."""
    import torch

    from hfdistill.pipeline import run as run_recipe
    from hfdistill.recipe import parse_recipe

    torch.set_num_threads(1)
    start = time.time()
    recipe = {"name": name, **BASE, "tasks": [task], "output_dir": str(RUN_ROOT / task),
              "stages": [TEACHER[task], *stages]}
    run_recipe(parse_recipe(recipe, base_dir=REPO), publish=False)
    print(f"\n{name}/{task}: done in {(time.time() - start) / 60:.1f} min", flush=True)


def run_all(script: str, tasks: list[str]) -> float:
    """This script once per task, side by side, one thread each; returns the wall minutes."""
    start = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    procs = []
    for task in tasks:
        RUN_ROOT.mkdir(parents=True, exist_ok=True)
        log = open(RUN_ROOT / f"{Path(script).stem}.{task}.log", "w")
        procs.append(subprocess.Popen([sys.executable, script, "--task", task], env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a task run failed ({codes}): see {RUN_ROOT}/{Path(script).stem}.<task>.log")
    return (time.time() - start) / 60


def result(stage: str, task: str) -> dict:
    folder = RUN_ROOT / task / stage / task
    metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else {}
    return {"metrics": metrics, "info": json.loads((folder / "lineage.json").read_text())["info"]}


def score(stage: str, task: str) -> float:
    return 100 * result(stage, task)["metrics"]["score"]


def header(title: str, minutes: float) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    t = ", ".join(f"{k} {TEACHER[k]['max_steps']} steps at lr {TEACHER[k]['learning_rate']:g}" for k in TASKS)
    return (f"## {title}\n\n{time.strftime('%Y-%m-%d %H:%M')}, commit {commit} + working tree, {os.cpu_count()} CPU "
            f"cores shared with other work, one torch thread per task, the tasks side by side; {minutes:.0f} min "
            f"wall. max_seq_length {BASE['max_seq_length']}, at most {BASE['max_train_samples']} training rows; "
            f"teacher (batch 16): {t}; each student {STUDENT['max_steps']} steps × {STUDENT['batch_size']}, seed "
            f"{BASE['seed']}. One dev example = {100 / DEV_SIZE['sst2']:.2f} points on SST-2, "
            f"{100 / DEV_SIZE['mrpc']:.2f} points of MRPC accuracy.\n")


def task_arg(argv=None):
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--task", choices=TASKS)
    p.add_argument("--tasks", nargs="*", default=TASKS)
    return p.parse_args(argv)
