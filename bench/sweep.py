"""Sweep benchmark (not a test): one sweep run folder against the same recipes run one by one, timed side by side.

The recipe is the quickstart's (recipes/quickstart.yaml: MiniLM-L6 fine-tuned on SST-2, distilled, quantized to
int8-cpu) plus a prune stage, swept over student layers × pruning sparsity × {fp32, int8-cpu}:

    nice -n 5 python bench/sweep.py                                  # layers 2 3 4 × sparsity 0 0.3 0.5 × 2
    nice -n 5 python bench/sweep.py --layers 2 4 --sparsity 0 0.5    # the set measured on the shared 2-core box

Side A runs the sweep in one run folder (the teacher, its cache and every shared student/pruned model made once).
Side B runs each variant as its own recipe in its own run folder (teacher and cache recomputed every time).
Both sides use the same budget, stages, seeds and data, do not publish, and write cards and summaries; the
script prints the timing table, the dev score of every variant on both sides (they should agree: sharing changes
no model) and the sweep's Pareto front. Target (issue 14): A ≥ 1.5× faster end to end than B.

Budget (both sides): `--train-samples` rows of SST-2 train (quickstart: 9600), teacher `--steps` and student
`--student-steps` steps (quickstart: 300 each), prune `--prune-iterations` iterations on `--prune-examples`
examples; full SST-2 dev.
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

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HFDISTILL_GLUE_DIR", str(REPO.parent / "shared" / "glue"))
sys.path.insert(0, str(REPO))


def base_recipe(a: argparse.Namespace, name: str, out: Path) -> dict:
    quick = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text())
    teacher, student, quant = quick["stages"]
    student = {k: v for k, v in student.items() if k != "layers"}  # num_layers is swept (spread evenly)
    return {"name": name, "seed": quick["seed"], "model": quick["model"], "tasks": quick["tasks"],
            "max_seq_length": quick["max_seq_length"], "max_train_samples": a.train_samples,
            "output_dir": str(out),
            "stages": [{**teacher, "max_steps": a.steps},
                       {**student, "max_steps": a.student_steps or a.steps},
                       {"name": "pruned", "kind": "prune", "sparsity": 0.3, "iterations": a.prune_iterations,
                        "num_examples": a.prune_examples},
                       {**quant, "name": "quant"}]}


def matrix(a: argparse.Namespace) -> dict:
    return {"student.num_layers": a.layers, "pruned.sparsity": a.sparsity, "quant.method": a.quant}


def one_by_one(a: argparse.Namespace, variant_values: dict, out: Path) -> dict:
    """The variant as a plain recipe of its own: teacher → student → [pruned] → [quant]."""
    r = base_recipe(a, "single", out)
    teacher, student, pruned, quant = r["stages"]
    student = {**student, "num_layers": variant_values["student.num_layers"]}
    stages = [teacher, student]
    if variant_values["pruned.sparsity"]:
        stages.append({**pruned, "sparsity": variant_values["pruned.sparsity"]})
    if variant_values["quant.method"] != "none":
        stages.append({**quant, "method": variant_values["quant.method"]})
    return {**r, "stages": stages}


def timed_run(recipe: dict, path: Path, log: Path) -> float:
    """Run a recipe in a fresh process (as `hfdistill run` would) and return its wall seconds."""
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    start = time.time()
    with open(log, "a") as fh:
        subprocess.run([sys.executable, "-m", "hfdistill", "run", str(path), "--no-push"], check=True, stdout=fh,
                       stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    return time.time() - start


def leaf_scores(run_dir: Path) -> dict[str, float]:
    from hfdistill.folder import find_run_models

    return {m.stage: m.score for m in find_run_models(run_dir)}


def main(a: argparse.Namespace) -> None:
    from hfdistill.recipe import parse_recipe
    from hfdistill.sweeps import compute_front

    work = a.work.resolve()
    if work.exists() and not a.keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "bench.log"
    sweep_recipe = {**base_recipe(a, "sweep", work / "sweep"), "sweep": matrix(a)}
    expanded = parse_recipe(sweep_recipe, REPO)
    variants = expanded.variants
    print(f"{len(variants)} variants, {len(expanded.stages)} stages in the sweep run folder; "
          f"one by one: {sum(len(v.stages) for v in variants)} stages in {len(variants)} run folders", flush=True)

    t_sweep = timed_run(sweep_recipe, work / "sweep.yaml", log)
    print(f"A. sweep, one run folder: {t_sweep / 60:.1f} min", flush=True)
    t_single, single_scores = 0.0, {}
    for i, v in enumerate(variants):
        out = work / f"single-{i:02d}"
        t = timed_run(one_by_one(a, v.values, out), work / f"single-{i:02d}.yaml", log)
        t_single += t
        leaf = v.stages[-1]
        single_scores[v.name] = (leaf, list(leaf_scores(out).values())[-1])
        print(f"B. {v.name}: {t / 60:.1f} min (total {t_single / 60:.1f})", flush=True)

    sweep_scores = leaf_scores(work / "sweep")
    caches = len(list((work / "sweep" / ".cache" / "teacher").glob("*/meta.json")))
    single_caches = sum(len(list(p.glob(".cache/teacher/*/meta.json"))) for p in work.glob("single-*"))
    print("\n| side | run folders | stages run | teachers trained | teacher-cache entries | wall min |")
    print("|---|---|---|---|---|---|")
    print(f"| A. sweep | 1 | {len(expanded.stages)} | 1 | {caches} | {t_sweep / 60:.1f} |")
    print(f"| B. one by one | {len(variants)} | {sum(len(v.stages) for v in variants)} | {len(variants)} | "
          f"{single_caches} | {t_single / 60:.1f} |")
    print(f"\nspeed-up A vs B: {t_single / t_sweep:.2f}× (target ≥ 1.5×)\n")
    print("| variant | model | dev score, sweep | dev score, one by one |")
    print("|---|---|---|---|")
    for v in variants:
        leaf, s = single_scores[v.name]
        print(f"| {v.name} | `{leaf}` | {sweep_scores.get(leaf, float('nan')):.4f} | {s:.4f} |")
    print()
    print(compute_front(work / "sweep").table())
    (work / "timings.json").write_text(json.dumps({"sweep_s": t_sweep, "one_by_one_s": t_single,
                                                   "variants": len(variants)}, indent=2))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 3, 4], help="student num_layers values")
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.0, 0.3, 0.5], help="pruning sparsities")
    ap.add_argument("--quant", nargs="+", default=["none", "int8-cpu"],
                    help="quantize methods (`none` = keep fp32; the fp32 models are on the front either way)")
    ap.add_argument("--train-samples", type=int, default=2000, help="max_train_samples (quickstart: 9600)")
    ap.add_argument("--steps", type=int, default=100, help="teacher max_steps (quickstart: 300)")
    ap.add_argument("--student-steps", type=int, help="student max_steps (default: --steps; quickstart: 300)")
    ap.add_argument("--prune-iterations", type=int, default=4, help="prune iterations (default stage: 8)")
    ap.add_argument("--prune-examples", type=int, default=512, help="prune num_examples (default stage: 1024)")
    ap.add_argument("--threads", type=int, default=1, help="OMP threads per run (1 on a shared machine)")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench-sweep", help="work folder (wiped)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (finished stages are skipped)")
    args = ap.parse_args()
    main(args)
