"""Benchmark: teacher vs distilled student on the shared GLUE tasks with train data (not a test).

    python bench/distill.py                                   # runs recipes/distilbert-glue.yaml, then measures
    python bench/distill.py --max-steps 100 --max-train-samples 3200 --tasks sst2 mrpc   # a reduced run
    python bench/distill.py --ablation --recipe recipes/distilbert-ablation.yaml         # Table-4-style ablation

Prints dev scores per task, the GLUE macro score, retention (student / teacher macro), params, disk bytes,
CPU latency at batch size 1 and the speed-up — every number measured in this process, on this machine.
Target: a student with half the layers keeps >= 98% of the teacher's macro score and is >= 1.9x faster.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _load_recipe(args):
    import yaml

    from hfdistill.recipe import parse_recipe

    path = Path(args.recipe)
    data = yaml.safe_load(path.read_text())
    if args.tasks:
        data["tasks"] = args.tasks
    if args.max_train_samples:
        data["max_train_samples"] = args.max_train_samples
    if args.max_steps:
        for st in data["stages"]:
            st["max_steps"] = args.max_steps
    if args.output_dir:
        data["output_dir"] = str(Path(args.output_dir).resolve())
    return parse_recipe(data, base_dir=path.parent)


def _measure(folder: Path, data, recipe) -> dict:
    from hfdistill.evaluation import evaluate_model
    from hfdistill.models import load_model, load_tokenizer

    model = load_model(folder)
    return evaluate_model(model, load_tokenizer(folder), data, max_seq_length=recipe.max_seq_length,
                          latency_samples=recipe.latency_samples, model_dir=folder)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(REPO / "recipes" / "distilbert-glue.yaml"))
    p.add_argument("--tasks", nargs="*")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--max-train-samples", type=int)
    p.add_argument("--output-dir")
    p.add_argument("--teacher", default="teacher", help="stage name of the teacher")
    p.add_argument("--student", help="stage name of the student (default: the last distill stage)")
    p.add_argument("--ablation", action="store_true", help="compare every distill stage with the first one")
    args = p.parse_args(argv)
    os.environ.setdefault("HFDISTILL_GLUE_DIR", str(REPO.parent / "shared" / "glue"))

    import torch

    from hfdistill import glue
    from hfdistill.pipeline import run

    recipe = _load_recipe(args)
    run(recipe, publish=False)  # skips every stage already complete in the run folder
    run_dir = Path(recipe.output_dir)
    distills = [s.name for s in recipe.stages if s.kind == "distill"]
    compared = distills if args.ablation else [args.student or distills[-1]]
    names = [args.teacher] + compared

    results: dict[str, dict[str, dict]] = {n: {} for n in names}
    for task in recipe.tasks:
        data = glue.load_task(task, glue_dir=recipe.resolved_glue_dir(), max_eval_samples=recipe.max_eval_samples)
        for n in names:  # measured one after the other in this process, same threads
            results[n][task] = _measure(run_dir / n / task, data, recipe)

    def macro(n):
        return glue.macro_score({t: m["score"] for t, m in results[n].items()})

    def mean(n, key):
        vals = [m[key] if key != "latency" else m["latency_ms"]["median"] for m in results[n].values()]
        return sum(vals) / len(vals)

    tasks = list(recipe.tasks)
    print(f"\n# hfdistill distillation benchmark — {run_dir.name}, {torch.get_num_threads()} CPU threads, "
          f"max_seq_length {recipe.max_seq_length}, dev sets\n")
    print("| model | " + " | ".join(tasks) + " | macro | retention | params | disk bytes | latency ms bs1 | "
          "speed-up |")
    print("|---" * (len(tasks) + 7) + "|")
    base_macro, base_lat = macro(args.teacher), mean(args.teacher, "latency")
    for n in names:
        scores = " | ".join(f"{100 * results[n][t]['score']:.1f}" for t in tasks)
        print(f"| {n} | {scores} | {macro(n):.1f} | {100 * macro(n) / base_macro:.1f}% | "
              f"{int(mean(n, 'params')):,} | {int(mean(n, 'disk_bytes')):,} | {mean(n, 'latency'):.2f} | "
              f"{base_lat / mean(n, 'latency'):.2f}x |")
    if args.ablation:
        ref = compared[0]
        print(f"\n## Ablation (difference in GLUE macro score from `{ref}`, as in DistilBERT's Table 4)\n")
        print("| variant | macro | Δ macro |")
        print("|---|---|---|")
        for n in compared:
            print(f"| {n} | {macro(n):.2f} | {macro(n) - macro(ref):+.2f} |")
    else:
        student = compared[0]
        ok_score = macro(student) >= 0.98 * base_macro
        ok_speed = base_lat / mean(student, "latency") >= 1.9
        print(f"\nretention {100 * macro(student) / base_macro:.1f}% (target >= 98%: {'met' if ok_score else 'not met'})"
              f", speed-up {base_lat / mean(student, 'latency'):.2f}x (target >= 1.9x: "
              f"{'met' if ok_speed else 'not met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
