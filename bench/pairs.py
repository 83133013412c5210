"""Pair tasks: which student keeps most of the teacher on MRPC (and WNLI)? Folded vs kept token types, DistilBERT
(ReLU) vs BERT (tanh pooler) head, more steps from the teacher cache.

    python bench/pairs.py --init                 # at initialisation: agreement with the teacher, no training
    python bench/pairs.py --tasks mrpc --seeds 1 2 3 --epochs 2 4    # train the variants, print the table

Teacher: MRPC reuses bench/layers.py's fine-tuned MiniLM (runs/bench-distill-budget/mrpc/teacher/mrpc) when it
exists; otherwise (and for WNLI) the packaged MiniLM is fine-tuned here first (`TEACHER`). Students keep layers
[0, 2, 4] and are distilled with the distill stage's defaults (T = 2, α_ce 5, α_hard 2, α_cos 1, matched L_cos),
batch 32, lr 1e-4, one run folder per seed: runs/bench-pairs/<task>-s<seed>/. Variants:

    distilbert-fold  architecture: distilbert  (the old default: ReLU head, segment B loses its type vector)
    bert-fold        architecture: bert, token_types: fold  (teacher's head, one token type)
    bert-keep        architecture: bert, token_types: keep  (teacher's head and token types)

Not a test: numbers depend on the machine and the budget. Run one at a time, niced, on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN_ROOT = REPO / "runs" / "bench-pairs"
OLD_TEACHER = REPO / "runs" / "bench-distill-budget" / "mrpc" / "teacher" / "mrpc"
LAYERS = [0, 2, 4]
VARIANTS = {"distilbert-fold": {"architecture": "distilbert", "token_types": "fold"},
            "bert-fold": {"architecture": "bert", "token_types": "fold"},
            "bert-keep": {"architecture": "bert", "token_types": "keep"}}
TEACHER = {"name": "teacher", "kind": "finetune", "epochs": 3, "batch_size": 16, "learning_rate": 1.5e-4,
           "log_every": 50, "checkpoint_every": 1000}
STUDENT = {"kind": "distill", "layers": LAYERS, "batch_size": 32, "learning_rate": 1.0e-4, "log_every": 50,
           "checkpoint_every": 1000}


def setup() -> None:
    os.environ.setdefault("HFDISTILL_GLUE_DIR", str(REPO.parent / "shared" / "glue"))
    sys.path.insert(0, str(REPO))


def teacher_dir(task: str) -> Path:
    if task == "mrpc" and (OLD_TEACHER / "model.safetensors").is_file():
        return OLD_TEACHER
    return RUN_ROOT / f"{task}-teacher" / "teacher" / task


def run_recipe(name: str, task: str, model: str, seed: int, stages: list[dict]) -> None:
    from hfdistill.pipeline import run
    from hfdistill.recipe import parse_recipe

    recipe = {"name": name, "model": model, "seed": seed, "max_seq_length": 64, "latency_samples": 30,
              "tasks": [task], "output_dir": str(RUN_ROOT / name), "stages": stages}
    run(parse_recipe(recipe, base_dir=REPO), publish=False)


def variant_name(variant: str, epochs: float) -> str:
    return f"{variant}-e{epochs:g}"


def run_students(task: str, epochs: list[float], seeds: list[int], variants: list[str]) -> float:
    """Fine-tune the teacher if needed, then run (or skip, when complete) every student of `task`, one run folder
    per seed (the recipe's seed); returns the minutes."""
    start = time.time()
    tdir = teacher_dir(task)
    if not (tdir / "model.safetensors").is_file():
        run_recipe(f"{task}-teacher", task, "minilm-l6", 42, [TEACHER])
    for seed in seeds:
        stages = [{**STUDENT, **VARIANTS[v], "name": variant_name(v, e), "from": "model", "epochs": e}
                  for e in epochs for v in variants]
        run_recipe(f"{task}-s{seed}", task, str(tdir), seed, stages)
    return (time.time() - start) / 60


def score(task: str, stage: str, seed: int) -> float:
    m = json.loads((RUN_ROOT / f"{task}-s{seed}" / stage / task / "metrics.json").read_text())
    return 100 * m["score"]


# ---------------------------------------------------------------------------------------------------- at init
def init_table(tasks: list[str]) -> None:
    """Every variant straight from the teacher (no training), with 3 and with all 6 layers: dev score, agreement
    with the teacher's predictions, largest logit difference, and how well the student's margin z1 − z0 follows
    the teacher's (Pearson r: what a regression task such as STS-B would score against the teacher)."""
    import torch
    from transformers import AutoTokenizer

    from hfdistill import glue
    from hfdistill.distillation.student import build_student, load_teacher, student_input_names

    print("| task | student | layers | dev score | same prediction as teacher | max abs logit diff | Pearson r of "
          "the margin z1 − z0 with the teacher's |")
    print("|---|---|---|---|---|---|---|")
    for task in tasks:
        tdir = teacher_dir(task)
        if not (tdir / "model.safetensors").is_file():
            print(f"| {task} | (no teacher yet: train first) | | | | |")
            continue
        data = glue.load_task(task)
        teacher = load_teacher(tdir)
        tok = AutoTokenizer.from_pretrained(str(tdir))
        enc = tok(list(data.dev["sentence1"]), list(data.dev["sentence2"]), truncation=True, max_length=64,
                  padding=True, return_tensors="pt")
        labels = list(data.dev["label"])

        @torch.no_grad()
        def logits(model):
            keep = student_input_names(model) if model is not teacher else list(enc.keys())
            return model(**{k: v for k, v in enc.items() if k in keep}).logits

        t = logits(teacher)

        def row(name, layers, z):
            pred = z.argmax(-1).numpy()
            sc = glue.task_score(task, glue.compute_metrics(task, pred, labels))
            same = (z.argmax(-1) == t.argmax(-1)).float().mean().item()
            margin_s, margin_t = z[:, 1] - z[:, 0], t[:, 1] - t[:, 0]  # a regression-like output: the margin
            r = torch.corrcoef(torch.stack([margin_s, margin_t]))[0, 1].item()
            print(f"| {task} | {name} | {layers} | {100 * sc:.2f} | {100 * same:.1f} % | "
                  f"{(z - t).abs().max().item():.4f} | {r:.3f} |", flush=True)

        row("teacher", "all 6", t)
        for layers in (LAYERS, list(range(teacher.config.num_hidden_layers))):
            for name, v in VARIANTS.items():
                student, _ = build_student(teacher, layers=layers, architecture=v["architecture"],
                                           token_types=v["token_types"])
                row(name, layers if len(layers) < 6 else "all 6", logits(student))


# ---------------------------------------------------------------------------------------------------- trained
def train_table(tasks: list[str], epochs: list[float], seeds: list[int], variants: list[str], minutes) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')} UTC, commit {commit} + working tree, {os.cpu_count()} shared CPU "
          f"cores; students: layers {LAYERS}, batch {STUDENT['batch_size']}, lr {STUDENT['learning_rate']:g}, "
          f"seeds {seeds}; wall {', '.join(f'{t} {m:.0f} min' for t, m in minutes.items())}\n")
    print("| task | student | epochs | score per seed | median | retention (median / teacher) |")
    print("|---|---|---|---|---|---|")
    for task in tasks:
        teacher = 100 * json.loads((teacher_dir(task) / "metrics.json").read_text())["score"]
        print(f"| {task} | teacher | – | {teacher:.2f} | {teacher:.2f} | 100.0 % |")
        for e in epochs:
            for v in variants:
                s = [score(task, variant_name(v, e), seed) for seed in seeds]
                med = statistics.median(s)
                print(f"| {task} | {v} | {e:g} | {' / '.join(f'{x:.2f}' for x in s)} | {med:.2f} | "
                      f"{100 * med / teacher:.1f} % |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["mrpc", "wnli"])
    ap.add_argument("--init", action="store_true", help="only the at-initialisation table")
    ap.add_argument("--epochs", nargs="+", type=float, default=[2.0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    setup()
    import torch

    torch.set_num_threads(args.threads)
    if args.init:
        init_table(args.tasks)
        return 0
    minutes = {t: run_students(t, args.epochs, args.seeds, args.variants) for t in args.tasks}
    train_table(args.tasks, args.epochs, args.seeds, args.variants, minutes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
