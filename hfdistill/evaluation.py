"""Evaluate any model on a GLUE dev set: metrics, task score, size, and CPU latency at batch size 1.

The result is the `metrics.json` written beside every model the pipeline produces (schema in DESIGN.md).
"""

from __future__ import annotations

import datetime as _dt
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
from hfdistill.models import check_model_dir, load_model, load_tokenizer

LATENCY_WARMUP = 5


def count_params(model: Any) -> int:
    """Logical parameter count (4-bit packed weights counted as the values they hold)."""
    if hasattr(model, "num_parameters"):
        return int(model.num_parameters())
    return int(sum(p.numel() for p in model.parameters()))


def weight_bytes(model: Any) -> int:
    """Bytes the model's parameters and buffers take in memory."""
    if hasattr(model, "get_memory_footprint"):
        return int(model.get_memory_footprint())
    return int(sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers())))


def _collator(tokenizer):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, return_tensors="pt")


@torch.inference_mode()
def predict(model: Any, tokenizer: Any, dataset: Any, task: glue.Task, max_seq_length: int,
            batch_size: int = 32, accelerator: Any = None, desc: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """Predictions (class ids, or scores for regression) and labels for `dataset` (GLUE columns)."""
    encoded = glue.encode(dataset, tokenizer, max_seq_length)
    loader = DataLoader(encoded, batch_size=batch_size, collate_fn=_collator(tokenizer))
    distributed = accelerator is not None and accelerator.num_processes > 1
    if distributed:
        loader = accelerator.prepare_data_loader(loader, device_placement=False)  # evaluation runs on CPU
    preds, labels = [], []
    main = accelerator is None or accelerator.is_local_main_process
    for batch in tqdm(loader, desc=desc, disable=not main, dynamic_ncols=True, mininterval=2.0):
        y = batch.pop("labels")
        logits = model(**batch).logits.float()
        p = logits.squeeze(-1) if task.is_regression else logits.argmax(-1)
        if distributed:
            p, y = accelerator.gather_for_metrics((p, y))
        preds.append(p.cpu().numpy())
        labels.append(y.cpu().numpy())
    return np.concatenate(preds), np.concatenate(labels)


@torch.inference_mode()
def latency_ms(model: Any, tokenizer: Any, dataset: Any, max_seq_length: int, num_samples: int = 50) -> dict:
    """CPU latency of one example at a time (batch size 1): median and p90 over `num_samples` dev examples."""
    n = min(max(num_samples, 1), len(dataset))
    rows = dataset.select(range(n))
    encoded = glue.encode(rows, tokenizer, max_seq_length, with_labels=False)
    inputs = [{k: torch.tensor([v]) for k, v in ex.items()} for ex in encoded]
    for ex in inputs[:LATENCY_WARMUP]:
        model(**ex)
    times = []
    for ex in inputs:
        t0 = time.perf_counter()
        model(**ex)
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return {"median": round(statistics.median(times), 3),
            "p90": round(times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))], 3),
            "batch_size": 1, "num_samples": n, "threads": torch.get_num_threads()}


def evaluate_model(model: Any, tokenizer: Any, data: glue.TaskData, max_seq_length: int = 128,
                   batch_size: int = 32, latency_samples: int = 50, accelerator: Any = None,
                   model_dir: Optional[Path] = None) -> dict[str, Any]:
    """Everything metrics.json records. With an accelerator of several processes, predictions are sharded and
    gathered; latency is measured on the main process only (the others return the same dict without it)."""
    task = data.task
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
        "params": count_params(model),
        "disk_bytes": disk_bytes(model_dir) if model_dir is not None else None,
        "weight_bytes": weight_bytes(model),
        "device": "cpu",
        "data_source": data.source,
        "evaluated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if accelerator is None or accelerator.is_main_process:
        result["latency_ms"] = latency_ms(model, tokenizer, data.dev, max_seq_length, latency_samples)
    return result


def evaluate_folder(path: Path, task: str, glue_dir: Optional[Path] = None, hub_dataset: Optional[str] = None,
                    max_samples: Optional[int] = None, max_seq_length: int = 128, latency_samples: int = 50,
                    data: Optional[glue.TaskData] = None, accelerator: Any = None) -> dict[str, Any]:
    """`hfdistill eval`: load the model folder and evaluate it on the task's dev set."""
    path = check_model_dir(Path(path))
    if data is None:
        data = glue.load_task(task, glue_dir=glue_dir, hub_dataset=hub_dataset, max_eval_samples=max_samples,
                              splits=("dev",))
    tokenizer = load_tokenizer(path)
    model = load_model(path, num_labels=None)
    return evaluate_model(model, tokenizer, data, max_seq_length=max_seq_length, latency_samples=latency_samples,
                          accelerator=accelerator, model_dir=path)
