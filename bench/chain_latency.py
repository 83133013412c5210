"""Side-by-side CPU latency of every model of a run (batch size 1), timed interleaved so that load hits all alike.

The run's metrics.json latencies are measured one model at a time, minutes apart; on a shared machine the load
changes in between, so their ratios (the report's speed-ups) can be far off. This script loads every evaluated
model of each task and times them round-robin: in each round every model goes once over the same dev examples
(`hfdistill.evaluation.latency_ms`, one pass); a model's figure is the median of its per-round medians. It prints
one table: per-task median ms, the CPU time of full passes over the dev sets (median × dev examples, summed as in
`hfdistill report`'s Table 3) and the speed-up against the teacher.

    python bench/chain_latency.py runs/glue-chain                 # every task, 5 rounds × 50 examples, 1 thread
    python bench/chain_latency.py runs/glue-chain --tasks sst2 --rounds 3

Not a test: numbers depend on the machine and its load (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path


def main() -> None:
    from hfdistill import glue
    from hfdistill.evaluation import latency_ms
    from hfdistill.folder import find_run_models, task_teacher
    from hfdistill.models import load_model, load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--tasks", nargs="+", help="default: every task of the run")
    ap.add_argument("--glue-dir", type=Path, default=os.environ.get("HFDISTILL_GLUE_DIR"))
    ap.add_argument("--samples", type=int, default=50, help="dev examples per pass")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    models = [m for m in find_run_models(args.run_dir) if m.score is not None]
    tasks = args.tasks or list(dict.fromkeys(m.task for m in models))
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": args.threads,
                    "rounds": args.rounds, "samples": args.samples,
                    "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                             text=True).stdout.strip(), "tasks": {}}
    loads = [os.getloadavg()[0]]
    for task in tasks:
        ms = [m for m in models if m.task == task]
        teacher = task_teacher(ms)
        max_len = (teacher.lineage.get("data") or {}).get("max_seq_length") or 128
        data = glue.load_task(task, glue_dir=args.glue_dir, splits=("dev",))
        loaded = [(m, load_model(m.path), load_tokenizer(m.path)) for m in ms]
        rounds: dict[str, list[float]] = {m.stage: [] for m in ms}
        for _ in range(args.rounds):
            for m, model, tok in loaded:
                lat = latency_ms(model, tok, data.dev, max_len, args.samples, threads=args.threads, rounds=1)
                rounds[m.stage].append(lat["median"])
            loads.append(os.getloadavg()[0])
        result["tasks"][task] = {
            "teacher": teacher.stage, "dev_examples": len(data.dev),
            "median_ms": {s: statistics.median(v) for s, v in rounds.items()}, "round_medians": rounds}
        del loaded
        print(f"{task}: " + ", ".join(f"{s} {statistics.median(v):.2f} ms" for s, v in rounds.items()), flush=True)
    result["load_average"] = {"min": round(min(loads), 2), "max": round(max(loads), 2)}

    stages = list(dict.fromkeys(s for t in result["tasks"].values() for s in t["median_ms"]))
    teacher = next(iter(result["tasks"].values()))["teacher"]
    print(f"\nInterleaved CPU latency, batch size 1, {args.threads} thread(s), {args.rounds} rounds × "
          f"{args.samples} dev examples; load average {result['load_average']['min']}–"
          f"{result['load_average']['max']}; {result['date']}, commit {result['commit']}\n")
    print("| model | " + " | ".join(f"{t.upper()} ms" for t in tasks) + " | full dev passes (s) | speed-up |")
    print("|---|" + "---|" * len(tasks) + "---|---|")
    totals = {}
    for s in stages:
        if all(s in result["tasks"][t]["median_ms"] for t in tasks):
            totals[s] = sum(result["tasks"][t]["median_ms"][s] * result["tasks"][t]["dev_examples"]
                            for t in tasks) / 1000
    for s in stages:
        cells = [f"{result['tasks'][t]['median_ms'][s]:.2f}" if s in result["tasks"][t]["median_ms"] else "–"
                 for t in tasks]
        total = f"{totals[s]:.1f}" if s in totals else "–"
        speed = f"{totals[teacher] / totals[s]:.2f}×" if s in totals and teacher in totals else "–"
        print(f"| `{s}` | " + " | ".join(cells) + f" | {total} | {speed} |")
    result["full_pass_seconds"] = totals
    out = args.run_dir / "chain_latency.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n(written to {out})")


if __name__ == "__main__":
    main()
