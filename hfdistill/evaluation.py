"""Evaluate any model on a GLUE dev set: metrics, task score, size, and CPU latency at batch size 1.

The result is the `metrics.json` written beside every model the pipeline produces (schema in DESIGN.md).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hfdistill import glue
from hfdistill.folder import disk_bytes
from hfdistill.models import check_model_dir, formats, load_model, load_tokenizer

LATENCY_WARMUP = 5
LATENCY_ROUNDS = 3          # passes over the timed examples; their medians give the spread
LATENCY_THREADS = 1         # default: one intra-op thread (stable on a shared machine, like a bs1 CPU server)
UNRELIABLE_SPREAD = 0.15    # round medians further apart than this (relative) make a figure unreliable
#: What must be equal for two latency figures to be compared (a speed-up is computed only then).
LATENCY_CONDITIONS = ("device", "cpu", "threads", "batch_size", "max_seq_length", "num_samples")


def count_params(model: Any) -> int:
    """Logical parameter count (4-bit packed weights counted as the values they hold)."""
    if hasattr(model, "num_parameters"):
        return int(model.num_parameters())
    return int(sum(p.numel() for p in model.parameters()))


def weight_bytes(model: Any) -> int:
    """Bytes the model's weights take in memory, quantization state included (`get_memory_footprint` misses the
    4-bit absmax and maps): `hfdistill.models.formats.weight_bytes`."""
    if hasattr(model, "parameters") or hasattr(model, "weight_bytes"):
        return formats.weight_bytes(model)
    return int(model.get_memory_footprint())


def _collator(tokenizer):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, return_tensors="pt")


@torch.inference_mode()
def predict(model: Any, tokenizer: Any, dataset: Any, task: glue.Task, max_seq_length: int,
            batch_size: int = 32, accelerator: Any = None, desc: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """Predictions (class ids, or scores for regression) and labels for `dataset` (GLUE columns), computed where
    the model is (CPU or GPU). With an accelerator of several processes each scores a shard (whole batches, the
    same as one process makes) and `gather_for_metrics` joins them in order, dropping the padding duplicates."""
    encoded = glue.encode(dataset, tokenizer, max_seq_length)
    loader = DataLoader(encoded, batch_size=batch_size, collate_fn=_collator(tokenizer))
    distributed = accelerator is not None and accelerator.num_processes > 1
    if distributed:
        loader = accelerator.prepare_data_loader(loader, device_placement=False)  # batches go to the model below
    device = formats.model_device(model)
    preds, labels = [], []
    main = accelerator is None or accelerator.is_local_main_process
    for batch in tqdm(loader, desc=desc, disable=not main, dynamic_ncols=True, mininterval=2.0):
        y = batch.pop("labels")
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
        p = logits.squeeze(-1) if task.is_regression else logits.argmax(-1)
        if distributed:  # the collective runs on the accelerator's device (NCCL needs GPU tensors)
            p, y = accelerator.gather_for_metrics((p.to(accelerator.device), y.to(accelerator.device)))
        preds.append(p.cpu().numpy())
        labels.append(y.cpu().numpy())
    return np.concatenate(preds), np.concatenate(labels)


def cpu_name() -> str:
    """The CPU model (for comparing latency figures across machines)."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with `n` intra-op threads, restoring the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.inference_mode()
def latency_ms(model: Any, tokenizer: Any, dataset: Any, max_seq_length: int, num_samples: int = 50,
               threads: int = LATENCY_THREADS, rounds: int = LATENCY_ROUNDS) -> dict:
    """CPU latency of one example at a time (batch size 1) with a fixed number of threads.

    After a warm-up, `rounds` passes go over the same `num_samples` dev examples (each pass visits every example
    once, so a burst of load from elsewhere hits all examples alike rather than a few); the figure is the median
    of all timings, its spread the range of the per-pass medians relative to it. A spread above 15 % or a machine
    whose load average leaves fewer free cores than `threads` makes the figure unreliable: it says so.
    """
    if isinstance(model, formats.Int8CpuModel) and getattr(model, "threads", None) != threads:
        model = formats.load_int8_cpu(model.path, threads)  # ONNX Runtime fixes its threads per session
    n = min(max(num_samples, 1), len(dataset))
    rows = dataset.select(range(n))
    encoded = glue.encode(rows, tokenizer, max_seq_length, with_labels=False)
    inputs = [{k: torch.tensor([v]) for k, v in ex.items()} for ex in encoded]
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with torch_threads(threads):
        for ex in inputs[:LATENCY_WARMUP]:
            model(**ex)
        passes: list[list[float]] = []
        for _ in range(max(1, rounds)):
            times = []
            for ex in inputs:
                t0 = time.perf_counter()
                model(**ex)
                times.append((time.perf_counter() - t0) * 1000.0)
            passes.append(times)
    pooled = sorted(t for p in passes for t in p)
    median = statistics.median(pooled)
    medians = [statistics.median(p) for p in passes]
    spread = (max(medians) - min(medians)) / median if median > 0 else 0.0
    cpus = os.cpu_count() or 1
    warnings_: list[str] = []
    if spread > UNRELIABLE_SPREAD:
        warnings_.append(f"the {len(passes)} timing passes disagree by {100 * spread:.0f}% "
                         f"(medians {', '.join(f'{m:.2f}' for m in medians)} ms)")
    if load_before is not None and load_before > cpus - threads + 1:  # +1: this process itself
        warnings_.append(f"the machine was busy (load average {load_before:.1f} on {cpus} cores)")
    return {"median": round(median, 3),
            "p90": round(pooled[min(len(pooled) - 1, int(round(0.9 * (len(pooled) - 1))))], 3),
            "spread": round(spread, 4), "pass_medians": [round(m, 3) for m in medians],
            "batch_size": 1, "num_samples": n, "rounds": len(passes), "threads": threads,
            "max_seq_length": max_seq_length, "cpu": cpu_name(), "cpus": cpus,
            "load_average": None if load_before is None else round(load_before, 2),
            "reliable": not warnings_, "warnings": warnings_}


def comparable(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two metrics.json records' latencies were measured under the same conditions (device, CPU model,
    threads, batch size, sequence length, examples): only then is a speed-up between them computed."""
    la, lb = a.get("latency_ms") or {}, b.get("latency_ms") or {}
    if not la.get("median") or not lb.get("median"):
        return False

    def cond(m: dict, lat: dict) -> tuple:
        return tuple(m.get(k) if k == "device" else lat.get(k) for k in LATENCY_CONDITIONS)
    return cond(a, la) == cond(b, lb)


def reliable(*records: dict[str, Any]) -> bool:
    """Whether every record's latency was measured without a warning (quiet machine, stable passes)."""
    return all((r.get("latency_ms") or {}).get("reliable", True) for r in records)


def speedup(ref: dict[str, Any], m: dict[str, Any]) -> Optional[float]:
    """ref's latency / m's latency (>1: m is faster), or None when the figures are not comparable. Check
    `reliable(ref, m)` before trusting it."""
    if not comparable(ref, m):
        return None
    return float(ref["latency_ms"]["median"]) / float(m["latency_ms"]["median"])


def majority_baseline(task: glue.Task, labels: np.ndarray) -> Optional[dict[str, Any]]:
    """The dev score of always predicting the most frequent dev class, and the margin a model must clear to be
    *clearly* better: two binomial standard errors of an accuracy at that rate, sqrt(p(1−p)/n) (for MRPC/QQP the
    task score also averages F1; the same margin is used). None for regression (STS-B)."""
    if task.is_regression or len(labels) == 0:
        return None
    values, counts = np.unique(labels, return_counts=True)
    majority = values[int(np.argmax(counts))]
    metrics = glue.compute_metrics(task, np.full_like(labels, majority), labels)
    p = float(counts.max() / counts.sum())
    return {"label": int(majority), "score": round(glue.task_score(task, metrics), 6),
            "margin": round(2.0 * float(np.sqrt(max(p * (1.0 - p), 1e-12) / len(labels))), 6)}


def clearly_above_baseline(metrics: dict[str, Any]) -> Optional[bool]:
    """Whether a metrics.json record's score clears its majority-class baseline by the margin (None: unknown)."""
    base, score = metrics.get("majority_baseline"), metrics.get("score")
    if not base or not isinstance(score, (int, float)):
        return None
    return score >= base["score"] + base["margin"]


def evaluate_model(model: Any, tokenizer: Any, data: glue.TaskData, max_seq_length: int = 128,
                   batch_size: int = 32, latency_samples: int = 50, accelerator: Any = None,
                   model_dir: Optional[Path] = None, latency_threads: int = LATENCY_THREADS,
                   trust_remote_code: bool = False) -> dict[str, Any]:
    """Everything metrics.json records. Dev predictions run where `model` is (the pipeline loads it on the
    accelerator's device); with several processes they are sharded and gathered. Latency is a CPU figure, measured
    on the main process only (the others return the same dict without it): a model on a GPU is loaded again from
    `model_dir` on CPU for it."""
    task = data.task
    loaded_bytes = weight_bytes(model)  # as loaded: a first forward repacks 4-bit weights on AVX512-BF16 CPUs
    scored_on = formats.model_device(model).type
    preds, labels = predict(model, tokenizer, data.dev, task, max_seq_length, batch_size, accelerator)
    mismatched = None
    if "dev_mismatched" in data.extra_dev:
        mismatched = predict(model, tokenizer, data.extra_dev["dev_mismatched"], task, max_seq_length,
                             batch_size, accelerator, desc="eval mismatched")
    metrics = glue.compute_metrics(task, preds, labels, mismatched)
    result: dict[str, Any] = {
        "task": task.name,
        "split": "dev",
        "metrics": {k: round(v, 6) for k, v in metrics.items()},
        "score": round(glue.task_score(task, metrics), 6),
        "num_examples": int(len(labels)),
        "majority_baseline": majority_baseline(task, labels),
        "params": count_params(model),
        "disk_bytes": disk_bytes(model_dir) if model_dir is not None else None,
        "weight_bytes": loaded_bytes,
        "device": "cpu",  # where latency is measured (part of its conditions); dev predictions: `scored_on`
        "scored_on": scored_on,
        "data_source": data.source,
        "evaluated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if accelerator is None or accelerator.is_main_process:
        if scored_on != "cpu":
            if model_dir is None:
                raise ValueError("evaluate_model: a model on a GPU needs model_dir (latency is timed on CPU)")
            model = load_model(model_dir, num_labels=None, trust_remote_code=trust_remote_code)
        result["latency_ms"] = latency_ms(model, tokenizer, data.dev, max_seq_length, latency_samples,
                                          threads=latency_threads)
    return result


def evaluate_folder(path: Path, task: str, glue_dir: Optional[Path] = None, hub_dataset: Optional[str] = None,
                    max_samples: Optional[int] = None, max_seq_length: int = 128, latency_samples: int = 50,
                    data: Optional[glue.TaskData] = None, accelerator: Any = None,
                    latency_threads: int = LATENCY_THREADS) -> dict[str, Any]:
    """`hfdistill eval`: load the model folder and evaluate it on the task's dev set."""
    path = check_model_dir(Path(path))
    if data is None:
        data = glue.load_task(task, glue_dir=glue_dir, hub_dataset=hub_dataset, max_eval_samples=max_samples,
                              splits=("dev",))
    tokenizer = load_tokenizer(path)
    model = load_model(path, num_labels=None, device=accelerator.device if accelerator is not None else None)
    return evaluate_model(model, tokenizer, data, max_seq_length=max_seq_length, latency_samples=latency_samples,
                          accelerator=accelerator, model_dir=path, latency_threads=latency_threads)
