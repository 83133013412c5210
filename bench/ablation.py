"""Table 4 of the DistilBERT paper on this machine: which part of the triple loss matters (not a test).

    python bench/ablation.py                       # 3 seeds × SST-2, MRPC, CoLA; writes bench/ablation.json
    python bench/ablation.py --seeds 2 --out /tmp/s2.json &      # or seeds in parallel processes, then
    python bench/ablation.py --collect             # gather the finished run folders into bench/ablation.json
    hfdistill report runs/glue-chain --ablation bench/ablation.json     # Table 4 of the headline report

Per seed, one run folder (runs/bench-ablation/s<seed>/) and one recipe, per task (the recipe's seed changes every
random draw: masking, initialisation, batch order):

    mlm-head          the packaged MiniLM (headless) + a masked-LM head fitted on the task's text, encoder frozen
    general-<v>       a 3-layer DistilBERT student distilled from it on the same text (`objective: mlm`), one per
                      variant v of the loss: α_ce·L_ce + α_mlm·L_mlm + α_cos·L_cos with one term removed, or the
                      triple loss from random weights instead of the teacher's layers
    ft-<v>            general-<v> fine-tuned on the task's labels (the paper's downstream fine-tuning)

The ft-<v> dev scores of every seed go to bench/ablation.json ({variant: {task: [score per seed]}, "_meta": …}),
the file `hfdistill report` reads for Table 4 (medians over seeds with their range; Δ = macro minus the triple
loss's). The budget is small (one run of the three tasks per seed takes about 20 minutes on one CPU thread), so the
students are far below the teacher, and differences smaller than the seeds' spread (or than one dev example: 0.11
points on SST-2, 0.25 on MRPC) are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HFDISTILL_GLUE_DIR", str(REPO.parent / "shared" / "glue"))

# variant name (the paper's Table 4 rows) → the general-distillation stage's fields that differ from the triple loss
VARIANTS = {
    "triple loss": {},
    "∅ - L_cos - L_mlm": {"alpha_ce": 0.0},
    "L_ce - ∅ - L_mlm": {"alpha_cos": 0.0},
    "L_ce - L_cos - ∅": {"alpha_mlm": 0.0},
    "triple loss + random init": {"init": "random"},
}
SLUG = {"triple loss": "triple", "∅ - L_cos - L_mlm": "no-ce", "L_ce - ∅ - L_mlm": "no-cos",
        "L_ce - L_cos - ∅": "no-mlm", "triple loss + random init": "random-init"}


def recipe(a: argparse.Namespace, seed: int, out: Path) -> dict:
    stages = [{"name": "mlm-head", "kind": "finetune", "objective": "mlm", "text_source": "train",
               "trainable": "head", "max_steps": a.head_steps, "batch_size": 16, "learning_rate": 1.0e-3,
               "checkpoint_every": 1000}]
    for v, fields in VARIANTS.items():
        stages.append({"name": f"general-{SLUG[v]}", "kind": "distill", "from": "mlm-head", "objective": "mlm",
                       "text_source": "train", "temperature": 2.0, "alpha_ce": 5.0, "alpha_mlm": 2.0,
                       "alpha_cos": 1.0, "max_steps": a.general_steps, "batch_size": 16, "learning_rate": 5.0e-4,
                       "checkpoint_every": 1000, **fields})
    for v in VARIANTS:
        stages.append({"name": f"ft-{SLUG[v]}", "kind": "finetune", "from": f"general-{SLUG[v]}",
                       "max_steps": a.finetune_steps, "batch_size": 32, "learning_rate": 1.0e-4,
                       "checkpoint_every": 1000})
    return {"name": f"ablation-s{seed}", "seed": seed, "model": "minilm-l6", "tasks": a.tasks,
            "max_seq_length": 64, "max_train_samples": a.train_samples, "latency_samples": 30,
            "output_dir": str(out), "stages": stages}


def scores(run_dir: Path) -> dict[str, dict[str, float]]:
    from hfdistill.folder import find_run_models

    out: dict[str, dict[str, float]] = {}
    for m in find_run_models(run_dir):
        if m.stage.startswith("ft-") and m.score is not None:
            out.setdefault(m.stage, {})[m.task] = float(m.score)
    return out


def main(a: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    table: dict[str, dict[str, list[float]]] = {v: {t: [] for t in a.tasks} for v in VARIANTS}
    done: list[int] = []
    missing: list[str] = []
    for seed in a.seeds:
        out = a.work / f"s{seed}"
        out.mkdir(parents=True, exist_ok=True)
        path = out.parent / f"s{seed}.yaml"
        path.write_text(yaml.safe_dump(recipe(a, seed, out), sort_keys=False, allow_unicode=True))
        start = time.time()
        if not a.collect:
            with open(a.work / f"bench-s{seed}.log", "a") as fh:
                subprocess.run([sys.executable, "-m", "hfdistill", "run", str(path), "--no-push"], check=True,
                               stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                               env={**os.environ, "OMP_NUM_THREADS": str(a.threads)})
        got = scores(out)
        for t in a.tasks:  # a seed counts for a task once every variant has it (--collect on an unfinished run)
            if all(t in got.get(f"ft-{SLUG[v]}", {}) for v in VARIANTS):
                for v in VARIANTS:
                    table[v][t].append(got[f"ft-{SLUG[v]}"][t])
            else:
                missing.append(f"{t}/seed {seed}")
        done.append(seed)
        print(f"seed {seed}: {(time.time() - start) / 60:.1f} min", flush=True)
        result = {**table, "_meta": {
            "seeds": done, "tasks": a.tasks, "missing": missing, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "budget": {"train_samples": a.train_samples, "mlm_head_steps": a.head_steps,
                       "general_steps": a.general_steps, "finetune_steps": a.finetune_steps},
            "note": (f"General distillation on each task's own text ({a.general_steps} steps × 16, max "
                     f"{a.train_samples} rows), then {a.finetune_steps} fine-tuning steps × 32: a budget far below the "
                     f"paper's, so every student is far below the teacher. Seeds {done}: a difference smaller than "
                     f"the range over seeds, or than one dev example (0.11 points on SST-2, 0.25 on MRPC), is noise."
                     + (f" Not finished (left out): {', '.join(missing)}." if missing else ""))}}
        a.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--tasks", nargs="+", default=["sst2", "mrpc", "cola"])
    ap.add_argument("--train-samples", type=int, default=2000, help="max_train_samples per task")
    ap.add_argument("--head-steps", type=int, default=50, help="masked-LM head fitting steps (× 16)")
    ap.add_argument("--general-steps", type=int, default=60, help="general distillation steps (× 16)")
    ap.add_argument("--finetune-steps", type=int, default=60, help="fine-tuning steps on the task (× 32)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench-ablation")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "ablation.json")
    ap.add_argument("--collect", action="store_true",
                    help="run nothing: gather the finished run folders of --seeds (seeds run in parallel processes, "
                         "each with its own --out, are joined this way)")
    main(ap.parse_args())
