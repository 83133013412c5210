"""Sweep benchmark (not a test): one sweep run folder against the same recipes run one by one, timed side by side.

The recipe is the quickstart's (recipes/quickstart.yaml: MiniLM-L6 fine-tuned on SST-2, distilled, quantized to
int8-cpu) plus a prune stage, swept over student layers × pruning sparsity × {fp32, int8-cpu}:

    nice -n 5 python bench/sweep.py                                  # layers 2 3 4 × sparsity 0 0.3 0.5 × 2
    python bench/sweep.py --sides A --single-sample 1                # the sweep only (a first call)…
    python bench/sweep.py --sides B --single-sample 1 --keep         # …then one variant one by one, the rest modelled

Side A runs the sweep in one run folder (the teacher, its cache and every shared student/pruned model made once).
Side B runs each variant as its own recipe in its own run folder (teacher and cache recomputed every time).
Both sides use the same budget, stages, seeds and data, do not publish, and write cards and summaries; the
script prints the timing table, the dev score of every variant on both sides (they should agree: sharing changes
no model) and the sweep's Pareto front. Target (issue 14): A ≥ 1.5× faster end to end than B.

Budget (both sides; the defaults are the quickstart's): `--train-samples` rows of SST-2 train (9600), teacher
`--steps` and student `--student-steps` steps (300 each), prune `--prune-iterations` iterations on
`--prune-examples` examples (8 on 1,024, recipes/sweep.yaml); full SST-2 dev.

Side B in full is 18 runs of its own (18 teachers): hours on 2 CPU cores. `--single-sample K` runs K of them and
models the others from side A's per-stage seconds (lineage.json: the same computations) plus what a run of its own
adds, measured on the K: a teacher pass for its student and the per-process overhead. Each measured variant also
prints its modelled time, as a check of the model.
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


def stage_seconds(run_dir: Path) -> dict[str, dict]:
    """Per stage (first task): its own seconds from lineage.json and the teacher-cache pass inside it."""
    out = {}
    for lineage in run_dir.glob("*/*/lineage.json"):
        lin = json.loads(lineage.read_text())
        cache = (lin.get("info") or {}).get("teacher_cache") or {}
        out[lineage.parent.parent.name] = {"seconds": float(lin.get("seconds") or 0.0),
                                           "cache_seconds": float(cache.get("seconds") or 0.0),
                                           "cache_reused": bool(cache.get("reused"))}
    return out


def sample_of(n: int, k: int) -> list[int]:
    """k variant indices spread over 0..n-1 (k = 1: the middle one; k = 0 or ≥ n: all)."""
    if k <= 0 or k >= n:
        return list(range(n))
    if k == 1:
        return [n // 2]
    return sorted({round(j * (n - 1) / (k - 1)) for j in range(k)})


def main(a: argparse.Namespace) -> None:
    from hfdistill.recipe import parse_recipe
    from hfdistill.sweeps import compute_front

    work = a.work.resolve()
    if work.exists() and not a.keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "bench.log"
    timings_file = work / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    sweep_recipe = {**base_recipe(a, "sweep", work / "sweep"), "sweep": matrix(a)}
    expanded = parse_recipe(sweep_recipe, REPO)
    variants = expanded.variants
    print(f"{len(variants)} variants, {len(expanded.stages)} stages in the sweep run folder; "
          f"one by one: {sum(len(v.stages) for v in variants)} stages in {len(variants)} run folders", flush=True)

    if "A" in a.sides:
        timings["sweep_s"] = timed_run(sweep_recipe, work / "sweep.yaml", log)
        timings_file.write_text(json.dumps(timings, indent=2))
    t_sweep = timings["sweep_s"]
    print(f"A. sweep, one run folder: {t_sweep / 60:.1f} min", flush=True)
    measured = timings.setdefault("single_s", {})
    single_scores: dict[str, tuple[str, float]] = {}
    chosen = sample_of(len(variants), a.single_sample)
    for i, v in enumerate(variants):
        out = work / f"single-{i:02d}"
        if "B" in a.sides and i in chosen and v.name not in measured:
            measured[v.name] = timed_run(one_by_one(a, v.values, out), work / f"single-{i:02d}.yaml", log)
            timings_file.write_text(json.dumps(timings, indent=2))
            print(f"B. {v.name}: {measured[v.name] / 60:.1f} min (measured)", flush=True)
        if v.name in measured:
            single_scores[v.name] = (v.stages[-1], list(leaf_scores(out).values())[-1])

    # Side B for the variants not run one by one: the same stages' own seconds, measured in side A's run folder
    # (the same computations: one teacher, one student per depth, …), plus what a run of its own adds — a teacher
    # pass over the training rows for its student (side A pays it once for all students) and the per-process
    # overhead (start-up, data loading) — both measured on the variants that did run one by one.
    a_sec = stage_seconds(work / "sweep")
    overheads, passes = [], []
    for i, v in enumerate(variants):
        if v.name in measured:
            b_sec = stage_seconds(work / f"single-{i:02d}")
            overheads.append(measured[v.name] - sum(x["seconds"] for x in b_sec.values()))
            passes += [x["cache_seconds"] for x in b_sec.values() if x["cache_seconds"] and not x["cache_reused"]]
    union_pass = max(x["cache_seconds"] for x in a_sec.values())
    one_pass = sum(passes) / len(passes) if passes else union_pass
    overhead = sum(overheads) / len(overheads) if overheads else 0.0

    def modelled(v) -> float:
        total = overhead
        for stage in v.stages:
            x = a_sec[stage]
            total += x["seconds"] - x["cache_seconds"] + (one_pass if stage.startswith("student") else 0.0)
        return total

    per_variant = {v.name: (measured[v.name], "measured") if v.name in measured else (modelled(v), "modelled")
                   for v in variants}
    t_single = sum(t for t, _ in per_variant.values())
    sweep_scores = leaf_scores(work / "sweep")
    caches = len(list((work / "sweep" / ".cache" / "teacher").glob("*/meta.json")))
    print(f"\nper run of its own: overhead {overhead:.0f} s, teacher pass {one_pass:.0f} s "
          f"(side A's one pass over the union of layers: {union_pass:.0f} s)")
    for v in variants:
        t, how = per_variant[v.name]
        check = ""
        if how == "measured":
            check = f" (modelled from side A: {modelled(v) / 60:.1f} min)"
        print(f"B. {v.name}: {t / 60:.1f} min, {how}{check}")
    print("\n| side | run folders | stages run | teachers trained | teacher passes | wall min |")
    print("|---|---|---|---|---|---|")
    print(f"| A. sweep | 1 | {len(expanded.stages)} | 1 | {caches} | {t_sweep / 60:.1f} |")
    print(f"| B. one by one | {len(variants)} | {sum(len(v.stages) for v in variants)} | {len(variants)} | "
          f"{len(variants)} | {t_single / 60:.1f} ({len(measured)} of {len(variants)} measured) |")
    print(f"\nspeed-up A vs B: {t_single / t_sweep:.2f}× (target ≥ 1.5×)\n")
    print("| variant | model | dev score, sweep | dev score, one by one |")
    print("|---|---|---|---|")
    for v in variants:
        if v.name in single_scores:
            leaf, s_ = single_scores[v.name]
            print(f"| {v.name} | `{leaf}` | {sweep_scores.get(leaf, float('nan')):.4f} | {s_:.4f} |")
    print()
    print(compute_front(work / "sweep").table())
    timings.update({"one_by_one_s": t_single, "variants": len(variants), "per_variant": per_variant,
                    "overhead_s": overhead, "one_pass_s": one_pass, "union_pass_s": union_pass})
    timings_file.write_text(json.dumps(timings, indent=2))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 3, 4], help="student num_layers values")
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.0, 0.3, 0.5], help="pruning sparsities")
    ap.add_argument("--quant", nargs="+", default=["none", "int8-cpu"],
                    help="quantize methods (`none` = keep fp32; the fp32 models are on the front either way)")
    ap.add_argument("--train-samples", type=int, default=9600, help="max_train_samples (quickstart: 9600)")
    ap.add_argument("--steps", type=int, default=300, help="teacher max_steps (quickstart: 300)")
    ap.add_argument("--student-steps", type=int, help="student max_steps (default: --steps; quickstart: 300)")
    ap.add_argument("--prune-iterations", type=int, default=8, help="prune iterations (recipes/sweep.yaml: 8)")
    ap.add_argument("--prune-examples", type=int, default=1024, help="prune num_examples (stage default: 1024)")
    ap.add_argument("--sides", default="AB", help="A (the sweep), B (one by one) or AB; with --keep, a later call "
                                                  "adds side B to a finished side A")
    ap.add_argument("--single-sample", type=int, default=0,
                    help="run only this many variants one by one (spread over the matrix; 1: the middle one) and "
                         "model the others from side A's stage seconds plus the measured per-run extras (0: all)")
    ap.add_argument("--threads", type=int, default=1, help="OMP threads per run (1 on a shared machine)")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench-sweep", help="work folder (wiped)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (finished stages are skipped)")
    args = ap.parse_args()
    main(args)
