"""Where the time of a pruned MiniLM goes at batch size 1 on CPU: embeddings, attention and FFN per layer, head,
and the rest (mask preparation, Python glue), for the teacher, 50 % pruned models and the 3-layer student.

    python bench/prune_profile.py                    # 1 thread, seq 64, the MRPC teacher of bench/layers.py
    python bench/prune_profile.py --teacher DIR --reps 300

Every model is timed on the same 64-token input (a real MRPC dev pair padded to 64), one example at a time, one
torch thread, in interleaved rounds (the load of other jobs hits every model alike); the median forward time is
reported. The per-part split comes from torch.profiler with a `record_function` range around each module
(forward hooks); "rest" is the model forward minus its parts. Variants:

    teacher              6 layers × 12 heads, FFN 1536
    global-50 / even-50  KL-pruned (the prune stage's importance, 256 train examples, 4 iterations), 50 % of heads
                         and FFN neurons removed by one global ranking / the same number in every layer
    global-50-m64        global ranking, what each layer keeps rounded to multiples of 64 (`multiple_of: 64`)
    global-50-headless-L5  global-50 with all heads of the last layer removed (as `min_heads_per_layer: 0`
                         allows): through the stock path (`-stock`: empty context → zero-width projection → bias
                         → LayerNorm) and as built now, skipping the empty attention block (`-skip`)
    student-3l           the 3-layer DistilBERT student (layers [0, 2, 4]) at initialisation
    student-3l-global-50 that student 50 % pruned (global), i.e. pruning the student instead of the teacher

Not a test: timings depend on the machine; the shapes and the split are what to read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEACHER = REPO / "runs" / "bench-distill-budget" / "mrpc" / "teacher" / "mrpc"


def parts_of(model) -> dict[str, torch.nn.Module]:
    """Label → module for the embeddings, each layer's attention and FFN, and the head."""
    base = getattr(model, "bert", None) or model.distilbert
    out = {"embeddings": base.embeddings}
    if hasattr(base, "encoder"):  # BERT
        for i, layer in enumerate(base.encoder.layer):
            out[f"L{i}.attention"] = layer.attention
            out[f"L{i}.ffn.in"] = layer.intermediate
            out[f"L{i}.ffn.out"] = layer.output
        if base.pooler is not None:
            out["head.pooler"] = base.pooler
        out["head.classifier"] = model.classifier
    else:  # DistilBERT: attention, then sa_layer_norm, ffn, output_layer_norm
        for i, layer in enumerate(base.transformer.layer):
            out[f"L{i}.attention"] = layer.attention
            out[f"L{i}.attention.ln"] = layer.sa_layer_norm
            out[f"L{i}.ffn.in"] = layer.ffn
            out[f"L{i}.ffn.out"] = layer.output_layer_norm
        out["head.pooler"] = model.pre_classifier
        out["head.classifier"] = model.classifier
    return out


def add_ranges(model) -> None:
    """A profiler range around every part's forward (hooks; harmless when no profiler runs)."""
    for label, module in parts_of(model).items():
        stack = []

        def pre(mod, args, label=label, stack=stack):
            rf = torch.autograd.profiler.record_function(label)
            rf.__enter__()
            stack.append(rf)

        def post(mod, args, out, stack=stack):
            stack.pop().__exit__(None, None, None)

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)


def split(model, inputs, reps: int) -> dict[str, float]:
    """Mean ms per forward for each part (attention, FFN, …) under torch.profiler, summed per category."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with torch.inference_mode():
        for _ in range(5):
            model(**inputs)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(reps):
                with record_function("model"):
                    model(**inputs)
    totals = {e.key: e.cpu_time_total / 1e3 / reps for e in prof.key_averages() if e.key == "model"
              or e.key in parts_of(model)}
    cats = {"embeddings": 0.0, "attention": 0.0, "ffn": 0.0, "head": 0.0}
    for key, ms in totals.items():
        if key == "model":
            continue
        cats["embeddings" if key == "embeddings" else "head" if key.startswith("head")
             else "attention" if ".attention" in key else "ffn"] += ms
    cats["rest"] = totals["model"] - sum(cats.values())
    cats["total"] = totals["model"]
    return cats


def timed(models: dict, inputs, reps: int, rounds: int) -> dict[str, float]:
    """Median ms per forward of each model, rounds interleaved."""
    runs = {name: [] for name in models}
    with torch.inference_mode():
        for m in models.values():
            for _ in range(10):
                m(**inputs_for(m, inputs))
        for _ in range(rounds):
            for name, m in models.items():
                x = inputs_for(m, inputs)
                for _ in range(reps // rounds):
                    t0 = time.perf_counter()
                    m(**x)
                    runs[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(v) for name, v in runs.items()}


class StockHeadlessAttention(torch.nn.Module):
    """The path before the skip: the empty context through the zero-width output projection (transformers'
    BertSelfOutput), as a layer with no heads ran until bench/RESULTS.md's issue-16 measurement."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, hidden_states, *args, **kwargs):
        return self.output(hidden_states.new_zeros(*hidden_states.shape[:-1], 0), hidden_states), None


def unskip_empty_attention(model) -> int:
    """Put the stock path back into every BERT layer without heads; returns how many."""
    n = 0
    for layer in model.bert.encoder.layer:
        if layer.attention.output.dense.in_features == 0:
            layer.attention = StockHeadlessAttention(layer.attention.output)
            n += 1
    return n


def inputs_for(model, enc) -> dict:
    """The tokenizer output without token_type_ids for a model that has none (DistilBERT)."""
    return {k: v for k, v in enc.items() if k != "token_type_ids" or hasattr(model, "bert")}


def build_variants(teacher_dir: Path, score_examples: int, iterations: int) -> dict:
    from transformers import AutoTokenizer

    from hfdistill import glue, pruning
    from hfdistill.distillation.student import build_student, load_teacher
    from hfdistill.stages.prune import scoring_batches

    teacher = load_teacher(teacher_dir)
    tok = AutoTokenizer.from_pretrained(str(teacher_dir))
    data = glue.load_task("mrpc", max_train_samples=score_examples, seed=42)
    batches = scoring_batches(data.train, tok, 64, 32, False)
    heads0, ffn0 = pruning.layer_sizes(teacher)

    def masks(model, sparsity, even=False, multiple_of=1, batches=batches):
        h0, f0 = pruning.layer_sizes(model)
        res = pruning.iterative_prune(
            model, batches, head_target=pruning.resolve_target("target_heads", None, sparsity, h0, even),
            ffn_target=pruning.resolve_target("target_ffn", None, sparsity, f0, even), iterations=iterations,
            multiple_of=multiple_of)
        return res.head_masks, res.ffn_masks

    def prune(model, *args, **kw):
        return pruning.build_pruned_model(model, *masks(model, *args, **kw)).eval()

    student, _ = build_student(teacher, layers=[0, 2, 4], architecture="distilbert")
    student.requires_grad_(False)
    variants = {"teacher": teacher,
                "global-50": prune(teacher, 0.5),
                "even-50": prune(teacher, 0.5, even=True),
                "global-50-m64": prune(teacher, 0.5, multiple_of=64),
                "student-3l": student,
                "student-3l-global-50": prune(student, 0.5,
                                              batches=[{k: v for k, v in b.items() if k != "token_type_ids"}
                                                       for b in batches])}
    # the global-50 masks with the last layer's attention removed entirely: as built today, and with the empty
    # attention block skipped
    heads, ffn = masks(teacher, 0.5)
    heads = [*heads[:-1], torch.zeros_like(heads[-1])]
    variants["global-50-headless-L5-stock"] = pruning.build_pruned_model(teacher, heads, ffn).eval()
    assert unskip_empty_attention(variants["global-50-headless-L5-stock"]) == 1
    variants["global-50-headless-L5-skip"] = pruning.build_pruned_model(teacher, heads, ffn).eval()
    return variants, tok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, default=DEFAULT_TEACHER, help="fine-tuned MiniLM classifier folder")
    ap.add_argument("--reps", type=int, default=200, help="timed forwards per model")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--score-examples", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=4)
    args = ap.parse_args(argv)
    os.environ.setdefault("HFDISTILL_GLUE_DIR", str(REPO.parent / "shared" / "glue"))
    sys.path.insert(0, str(REPO))
    from hfdistill import glue, pruning

    torch.set_num_threads(1)
    variants, tok = build_variants(args.teacher, args.score_examples, args.iterations)
    torch.set_num_threads(1)
    dev = glue.load_task("mrpc").dev
    enc = tok(dev["sentence1"][0], dev["sentence2"][0], padding="max_length", max_length=64, truncation=True,
              return_tensors="pt")
    for m in variants.values():
        add_ranges(m)
    ms = timed(variants, enc, args.reps, args.rounds)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')} UTC, commit {commit} + working tree, torch {torch.__version__}, "
          f"1 thread, bs 1, seq 64, {args.reps} forwards per model in {args.rounds} interleaved rounds, load "
          f"average {os.getloadavg()[0]:.1f}\n")
    print("| model | heads per layer | FFN per layer | params (M) | median ms | speed-up | embeddings | attention "
          "| FFN | head | rest | attention+FFN per layer (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, m in variants.items():
        heads, ffn = pruning.layer_sizes(m)
        s = split(m, inputs_for(m, enc), max(20, args.reps // 4))
        per_layer = (s["attention"] + s["ffn"]) / len(heads)
        pct = {k: f"{100 * s[k] / s['total']:.0f} %" for k in ("embeddings", "attention", "ffn", "head", "rest")}
        print(f"| {name} | {heads} | {ffn} | {sum(p.numel() for p in m.parameters()) / 1e6:.2f} | {ms[name]:.2f} | "
              f"{ms['teacher'] / ms[name]:.2f}× | {pct['embeddings']} | {pct['attention']} | {pct['ffn']} | "
              f"{pct['head']} | {pct['rest']} | {per_layer:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
