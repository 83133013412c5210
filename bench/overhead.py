"""Overhead of the distill stage over a bare PyTorch loop: the same steps, model, data, losses and batch size.

    python bench/overhead.py                        # 60 steps × 32 on MRPC, the teacher of bench/layers.py
    python bench/overhead.py --steps 100 --repeats 3

Both sides distil the MRPC teacher (runs/bench-distill-budget/mrpc/teacher/mrpc; any fine-tuned MiniLM classifier
folder with --teacher) into the default 3-layer student with the stage's default loss (T = 2, α_ce 5, α_hard 2,
α_cos 1, matched L_cos pairs) and optimiser (AdamW, linear warm-up/decay, clipping at 1.0), one torch thread:

    stage   hfdistill.stages.distill.run with a warm teacher cache: load the teacher, build the student, tokenise,
            read the cache, accelerate.prepare, the training loop (DataLoader + TaskCollator), save the folder
    bare    the same student built the same way, batches padded up front, teacher logits and hidden states as
            in-memory tensors (read once from the same cache, not timed), a plain `for` loop over them

Prints the wall times (median of --repeats, the two sides in ABBA order), the ratio stage / bare (target ≤ 1.10),
and where the stage's excess goes (cProfile of one stage run: cumulative seconds of its phases).
Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import cProfile
import math
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEACHER = REPO / "runs" / "bench-distill-budget" / "mrpc" / "teacher" / "mrpc"
WORK = Path("/tmp/hfdistill-bench-overhead")

#: cProfile entries (function name, file suffix) reported as the stage's phases
PHASES = [("train", "hfdistill/training.py", "training loop (all of it)"),
          ("loss_fn", "hfdistill/stages/distill.py", "  forward + loss (model, L_ce, L_hard, L_cos)"),
          ("backward", "accelerate/accelerator.py", "  backward"),
          ("step", "accelerate/optimizer.py", "  optimizer step (accelerate wrapper)"),
          ("clip_grad_norm_", "accelerate/accelerator.py", "  gradient clipping"),
          ("__next__", "torch/utils/data/dataloader.py", "  DataLoader: fetch + collate"),
          ("__call__", "hfdistill/stages/distill.py", "    TaskCollator (padding, cache rows)"),
          ("hidden_batch", "hfdistill/distillation/teacher_cache.py", "      cache: hidden-state rows"),
          ("prepare", "accelerate/accelerator.py", "  accelerate.prepare"),
          ("_save_checkpoint", "hfdistill/training.py", "  checkpoints"),
          ("teacher_outputs", "hfdistill/distillation/teacher_cache.py", "teacher cache lookup/open"),
          ("encode", "hfdistill/glue.py", "tokenisation"),
          ("load_teacher", "hfdistill/distillation/student.py", "load teacher"),
          ("build_student", "hfdistill/distillation/student.py", "build student"),
          ("_save", "hfdistill/stages/distill.py", "save model + tokenizer")]


def make_ctx(task_data, work: Path, seed: int):
    from hfdistill.pipeline import make_accelerator
    from hfdistill.stages.base import StageContext

    recipe = SimpleNamespace(max_seq_length=64, trust_remote_code=False, cache_budget_gb=None)
    return StageContext(recipe=recipe, task="mrpc", data=task_data, accelerator=make_accelerator(), run_dir=work,
                        cache_dir=work / ".cache", work_dir=work / ".work", seed=seed)


def stage_run(cfg, teacher_dir: Path, data, seed: int) -> float:
    from hfdistill.folder import ModelFolder
    from hfdistill.stages import distill

    ctx = make_ctx(data, WORK, seed)
    out = WORK / "out"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(ctx.work_dir, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    distill.run(cfg, ModelFolder(teacher_dir), ctx, out)
    return time.perf_counter() - t0


def bare_inputs(cfg, teacher_dir: Path, data, seed: int, steps: int):
    """Everything the bare loop needs, prepared outside its timing: padded batches in the stage's example order
    with the teacher's cached logits and hidden states."""
    from transformers import AutoTokenizer

    from hfdistill import glue
    from hfdistill.distillation.student import cosine_pairs, default_layers
    from hfdistill.distillation.teacher_cache import teacher_outputs
    from hfdistill.stages.distill import TaskCollator, training_texts

    layers = default_layers(6)
    pairs = cosine_pairs(layers, 6, cfg.cos_layers)
    t_idx = sorted({t for _, t in pairs})
    texts = training_texts(data, [])
    cache = teacher_outputs(teacher_dir, texts, 64, WORK / ".cache", with_hidden=t_idx)
    tok = AutoTokenizer.from_pretrained(str(teacher_dir))
    enc = glue.encode(texts, tok, 64, keep_idx=True)
    enc = enc.remove_columns([c for c in enc.column_names if c not in ("input_ids", "attention_mask", "labels", "idx")])
    collate = TaskCollator(tok.pad_token_id or 0, cache, False, [t_idx.index(t) for _, t in pairs])
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(enc), generator=g).tolist()
    rows = enc.to_list() if hasattr(enc, "to_list") else [enc[i] for i in range(len(enc))]
    batches = []
    for s in range(steps):
        ids = [order[(s * cfg.batch_size + k) % len(order)] for k in range(cfg.batch_size)]
        batches.append(collate([rows[i] for i in ids]))
    return batches, layers, pairs


def bare_run(cfg, teacher_dir: Path, batches, layers, pairs, seed: int) -> float:
    """A plain PyTorch loop: build the student as the stage does, then forward, loss, backward, clip, step."""
    from transformers import get_linear_schedule_with_warmup

    from hfdistill.distillation.student import build_student, load_teacher
    from hfdistill.losses import task_distillation_loss

    t0 = time.perf_counter()
    teacher = load_teacher(teacher_dir)
    student, _ = build_student(teacher, layers=layers, architecture="distilbert", seed=seed)
    del teacher
    torch.manual_seed(seed)
    is_norm = lambda n, p: p.ndim < 2 or "LayerNorm" in n or "layer_norm" in n  # noqa: E731 (as the stage)
    decay = [p for n, p in student.named_parameters() if not is_norm(n, p)]
    no_decay = [p for n, p in student.named_parameters() if is_norm(n, p)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.learning_rate)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * len(batches)), len(batches))
    weights = cfg.loss_weights()
    s_idx = [s for s, _ in pairs]
    student.train()
    for b in batches:
        out = student(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
        loss, _ = task_distillation_loss(out.logits, b["teacher_logits"], b["labels"], weights,
                                         [out.hidden_states[i] for i in s_idx],
                                         [b["teacher_hidden"][:, :, k].float() for k in range(len(pairs))],
                                         b["attention_mask"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.max_grad_norm)
        opt.step()
        opt.zero_grad()
        sched.step()
    student.eval()
    return time.perf_counter() - t0


def phases(stats: pstats.Stats) -> list[tuple[str, float, int]]:
    out = []
    for name, suffix, label in PHASES:
        cum, calls = 0.0, 0
        for (file, _, func), (cc, nc, tt, ct, callers) in stats.stats.items():
            if func == name and file.endswith(suffix):
                cum, calls = cum + ct, calls + nc
        out.append((label, cum, calls))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, default=DEFAULT_TEACHER)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    os.environ.setdefault("HFDISTILL_GLUE_DIR", str(REPO.parent / "shared" / "glue"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(REPO))
    torch.set_num_threads(1)
    from hfdistill import glue
    from hfdistill.stages.distill import DistillConfig

    data = glue.load_task("mrpc")
    cfg = DistillConfig(name="student", kind="distill", architecture="distilbert", layers=[0, 2, 4],
                        max_steps=args.steps, batch_size=args.batch_size, log_every=10 ** 6)
    print(f"warm-up stage run of 2 steps (writes the teacher cache under {WORK} when absent)", flush=True)
    stage_run(cfg.model_copy(update={"max_steps": 2}), args.teacher, data, args.seed)
    batches, layers, pairs = bare_inputs(cfg, args.teacher, data, args.seed, args.steps)
    times = {"stage": [], "bare": []}
    for r in range(args.repeats):  # ABBA order: a load that rises or falls over the runs favours neither side
        for side in (("bare", "stage") if r % 2 == 0 else ("stage", "bare")):
            times[side].append(bare_run(cfg, args.teacher, batches, layers, pairs, args.seed) if side == "bare"
                               else stage_run(cfg, args.teacher, data, args.seed))
        print(f"repeat {r + 1}: bare {times['bare'][-1]:.1f} s, stage {times['stage'][-1]:.1f} s", flush=True)
    prof = cProfile.Profile()
    prof.enable()
    profiled = stage_run(cfg, args.teacher, data, args.seed)
    prof.disable()
    stats = pstats.Stats(prof)

    med = {k: statistics.median(v) for k, v in times.items()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')} UTC, commit {commit} + working tree, torch {torch.__version__}, "
          f"1 thread, {os.cpu_count()} shared cores (load average {os.getloadavg()[0]:.1f}); MRPC, {args.steps} "
          f"steps × {args.batch_size}, 3-layer DistilBERT student, median of {args.repeats} runs each, in ABBA order\n")
    print("| path | wall s (each run) | median s | ms per step |")
    print("|---|---|---|---|")
    for k in ("bare", "stage"):
        print(f"| {k} | {' / '.join(f'{t:.1f}' for t in times[k])} | {med[k]:.1f} | "
              f"{1e3 * med[k] / args.steps:.0f} |")
    ratio = med["stage"] / med["bare"]
    print(f"\nratio stage / bare = {ratio:.3f} (target ≤ 1.10: {'met' if ratio <= 1.10 else 'NOT met'})\n")
    print(f"Where the stage's time goes (cProfile of one more stage run, {profiled:.1f} s under the profiler):\n")
    print("| phase | cumulative s | calls |")
    print("|---|---|---|")
    for label, cum, calls in phases(stats):
        print(f"| {label} | {cum:.2f} | {calls} |")
    if not math.isfinite(ratio):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
