"""The one training loop every stage reuses (after accelerate's `nlp_example.py`).

A stage supplies the model, a tokenised dataset and a loss function `loss_fn(model, batch) -> (loss, logs)`;
this loop does the rest: data-parallel preparation, gradient accumulation, clipping, linear warm-up/decay,
progress bar, periodic `save_state` checkpoints and resume after a crash.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hfdistill.folder import write_json

LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], "tuple[torch.Tensor, dict[str, float]]"]


class TrainingArgs(BaseModel):
    """Optimisation settings shared by every stage that trains (fields sit directly in the stage's recipe entry)."""

    model_config = ConfigDict(extra="forbid")

    epochs: float = Field(default=1.0, gt=0, description="Passes over the training data (fractions allowed).")
    max_steps: Optional[int] = Field(default=None, gt=0,
                                     description="Optimizer steps to run; overrides `epochs` when set.")
    batch_size: int = Field(default=32, gt=0, description="Examples per process per forward pass.")
    gradient_accumulation_steps: int = Field(default=1, gt=0,
                                             description="Forward passes accumulated per optimizer step.")
    learning_rate: float = Field(default=5e-5, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay (not on biases/LayerNorm).")
    warmup_ratio: float = Field(default=0.06, ge=0, le=1, description="Fraction of steps with linear warm-up.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm.")
    checkpoint_every: int = Field(default=200, gt=0,
                                  description="Save a resumable checkpoint every N optimizer steps.")
    log_every: int = Field(default=50, gt=0, description="Print the running loss every N optimizer steps.")


TRAINING_FIELDS = tuple(TrainingArgs.model_fields)


def training_args(cfg: BaseModel) -> TrainingArgs:
    """The TrainingArgs part of a stage config (stage configs inherit TrainingArgs' fields)."""
    return TrainingArgs(**{k: getattr(cfg, k) for k in TRAINING_FIELDS})


@dataclass
class TrainResult:
    steps: int
    loss: float            # mean loss over the last logging window
    seconds: float
    resumed_from: int      # optimizer step the run resumed from (0 = fresh)


def _latest_checkpoint(ckpt_root: Path) -> tuple[Optional[Path], int]:
    best, best_step = None, 0
    if ckpt_root.is_dir():
        for d in ckpt_root.iterdir():
            state = d / "hfdistill_state.json"
            if d.is_dir() and state.is_file():  # written last: marks a complete checkpoint
                step = json.loads(state.read_text())["step"]
                if step > best_step:
                    best, best_step = d, step
    return best, best_step


def _optimizer(model: torch.nn.Module, args: TrainingArgs) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=args.learning_rate)


def train(model: torch.nn.Module, dataset: Any, loss_fn: LossFn, args: TrainingArgs, ctx: Any,
          collate_fn: Optional[Callable] = None, desc: str = "train") -> TrainResult:
    """Train `model` in place on `dataset` with `loss_fn`; resumable from `ctx.work_dir/checkpoints`.

    `ctx` needs `.accelerator`, `.work_dir`, `.seed` and `.log` (a StageContext). Returns when done; the caller
    unwraps nothing: `model` holds the trained weights on every process.
    """
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    accelerator = ctx.accelerator
    accelerator.gradient_accumulation_steps = args.gradient_accumulation_steps
    set_seed(ctx.seed)
    generator = torch.Generator().manual_seed(ctx.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, collate_fn=collate_fn,
                        generator=generator)
    optimizer = _optimizer(model, args)
    # A bitsandbytes model is never moved: it must have been loaded on accelerator.device (models.load_model's
    # `device`), where accelerate's prepare checks it and leaves it.
    pmodel, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    ctx.mixed_precision = accelerator.mixed_precision  # recorded in the stage's lineage.json

    steps_per_epoch = max(1, math.ceil(len(loader) / args.gradient_accumulation_steps))  # per process
    total_steps = args.max_steps or max(1, math.ceil(args.epochs * steps_per_epoch))
    # Stepped by hand once per optimizer step (not prepared: accelerate would step it once per process).
    scheduler = get_linear_schedule_with_warmup(optimizer.optimizer, int(args.warmup_ratio * total_steps),
                                                total_steps)

    ckpt_root = Path(ctx.work_dir) / "checkpoints"
    ckpt, step = _latest_checkpoint(ckpt_root)
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        with warnings.catch_warnings():  # the schedule is a pure function of the step: replay it
            warnings.simplefilter("ignore")
            for _ in range(step):
                scheduler.step()
        ctx.log(f"resuming {desc} from step {step}/{total_steps} (checkpoint {ckpt.name})")
    resumed_from = step

    start = time.time()
    window: list[float] = []
    last_loss = float("nan")
    bar = tqdm(total=total_steps, initial=step, desc=desc, disable=not accelerator.is_local_main_process,
               dynamic_ncols=True, mininterval=2.0)
    pmodel.train()
    epoch = step // steps_per_epoch
    try:
        while step < total_steps:
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            batches = loader
            done_in_epoch = step - epoch * steps_per_epoch
            if done_in_epoch > 0:  # resume mid-epoch: skip the batches already seen
                batches = accelerator.skip_first_batches(loader, done_in_epoch * args.gradient_accumulation_steps)
            for batch in batches:
                with accelerator.accumulate(pmodel):
                    loss, logs = loss_fn(pmodel, batch)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(pmodel.parameters(), args.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                window.append(loss.detach().float().item())
                if not accelerator.sync_gradients:
                    continue
                scheduler.step()
                step += 1
                bar.update(1)
                if step % args.log_every == 0 or step == total_steps:
                    last_loss = sum(window) / len(window)
                    window.clear()
                    extra = " ".join(f"{k}={v:.4f}" for k, v in logs.items())
                    bar.set_postfix(loss=f"{last_loss:.4f}")
                    ctx.log(f"{desc} step {step}/{total_steps} loss={last_loss:.4f} {extra}".rstrip())
                if step % args.checkpoint_every == 0 and step < total_steps:
                    _save_checkpoint(accelerator, ckpt_root, step)
                if step >= total_steps:
                    break
            epoch += 1
    except KeyboardInterrupt:
        _, kept = _latest_checkpoint(ckpt_root)
        if accelerator.is_main_process:
            print(f"{desc}: interrupted — " + (f"checkpoint at step {kept} kept, re-run the recipe to resume"
                                               if kept else "no checkpoint yet (one is saved every "
                                               f"{args.checkpoint_every} steps): a re-run starts this stage afresh"),
                  file=sys.stderr, flush=True)
        raise
    bar.close()
    if window:
        last_loss = sum(window) / len(window)
    accelerator.wait_for_everyone()
    pmodel.eval()
    # With mixed precision, prepare() set an autocast wrapper as the model's `forward` (an instance attribute):
    # drop it, so that what the stage does next with the model (save, check, compare) runs in full precision.
    # (accelerate's unwrap_model(keep_fp32_wrapper=False) would also strip transformers' own decorators.)
    if model.__dict__.pop("_original_forward", None) is not None:
        model.__dict__.pop("forward", None)
    model.eval()
    accelerator.free_memory()  # drop the prepared references so the next stage starts clean
    return TrainResult(steps=step, loss=last_loss, seconds=time.time() - start, resumed_from=resumed_from)


def _save_checkpoint(accelerator: Any, ckpt_root: Path, step: int) -> None:
    target = ckpt_root / f"step_{step:07d}"
    accelerator.save_state(str(target))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(target / "hfdistill_state.json", {"step": step})
        for old in ckpt_root.iterdir():  # keep only the newest complete checkpoint
            if old != target and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
