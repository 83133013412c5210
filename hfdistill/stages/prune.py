"""`kind: prune` — structured pruning of attention heads and FFN neurons (Yang et al. 2022, TextPruner).

Importance is IS(Θ) = E_x |∂L(x)/∂Θ · Θ| with the self-supervised L_KL = KL(stopgrad(q) ‖ p) (default; no labels,
so any text of the task serves) or the label cross-entropy; see `hfdistill.pruning` for the gates, the first
iteration (where p == q makes ∂L_KL vanish) and the surgery. The saved model is really smaller: narrower Q/K/V,
attention-output and FFN matrices. FFN-only pruning with the same size in every layer gives a stock config;
anything else a `hfdistill_pruned_*` config whose class ships in the folder (`auto_map`).

Files beside the model: `pruning_scores.safetensors` (importance scores and masks) and `pruning_heatmap.png`
(layers × heads, for the card).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Literal, Optional, Union

import torch
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from hfdistill import glue, pruning
from hfdistill.distillation.teacher_cache import data_hash, folder_hash, teacher_outputs
from hfdistill.errors import DataError, RecipeError
from hfdistill.folder import ModelFolder
from hfdistill.losses import LossWeights, task_distillation_loss
from hfdistill.models import load_classifier, load_tokenizer
from hfdistill.models.pruned_bert import save_pruned
from hfdistill.stages.base import StageConfig, StageContext
from hfdistill.training import TrainingArgs, train

SCORES_FILE = "pruning_scores.safetensors"
HEATMAP_FILE = "pruning_heatmap.png"


class RecoverConfig(TrainingArgs):
    """Distil the original (unpruned) model into the pruned one for a few epochs on the task's train split."""

    model_config = ConfigDict(extra="forbid")

    epochs: float = Field(default=2.0, gt=0, description="Passes over the training data (fractions allowed).")
    learning_rate: float = Field(default=1e-4, gt=0, description="Peak AdamW learning rate.")
    temperature: float = Field(default=2.0, gt=0, description="Softmax temperature T of the soft-target loss "
                                                              "(KL · T²) against the original model's logits.")
    alpha: float = Field(default=1.0, ge=0, le=1, description="Weight of the soft-target loss; 1 − alpha weighs "
                                                              "the gold-label loss.")


def _resolve_path(value, info: ValidationInfo):
    base = (info.context or {}).get("base_dir")
    if value is None or base is None:
        return value
    p = Path(os.path.expanduser(str(value)))
    return p if p.is_absolute() else (Path(base) / p).resolve()


PerLayerOrTotal = Union[int, list[int]]


class PruneConfig(StageConfig):
    """Remove the least important attention heads and FFN neurons of the parent model, in `iterations` steps."""

    kind: Literal["prune"] = "prune"
    loss: Literal["kl", "label"] = Field(
        default="kl", description="Importance loss: `kl` = KL(original ‖ pruned), self-supervised (no labels); "
                                  "`label` = cross-entropy with the gold labels (for comparison).")
    target_heads: Optional[PerLayerOrTotal] = Field(
        default=None, description="Attention heads to keep: a total across layers (int) or a per-layer list. "
                                  "Unset: `sparsity` decides, or heads are not pruned.")
    target_ffn: Optional[PerLayerOrTotal] = Field(
        default=None, description="FFN intermediate neurons to keep: a total (int) or a per-layer list. "
                                  "Unset: `sparsity` decides, or the FFN is not pruned.")
    sparsity: Optional[float] = Field(
        default=None, ge=0, lt=1, description="Fraction of heads and of FFN neurons to remove, for whichever of "
                                              "target_heads / target_ffn is unset.")
    iterations: int = Field(default=8, ge=1, le=100,
                            description="Prune in this many steps, re-scoring importance in between.")
    even: bool = Field(default=False, description="Same number of heads / FFN neurons in every layer (ranking "
                                                  "within each layer) instead of one global ranking.")
    min_heads_per_layer: int = Field(
        default=1, ge=0, description="Global ranking never leaves a layer with fewer heads than this; set 0 to "
                                     "allow removing a layer's attention entirely.")
    min_ffn_per_layer: int = Field(
        default=1, ge=0, description="Global ranking never leaves a layer with fewer FFN neurons than this; set 0 to "
                                     "allow removing a layer's FFN entirely.")
    multiple_of: int = Field(
        default=1, ge=1, le=4096,
        description="Round what each layer keeps to a multiple of this (as TextPruner does): FFN neurons, and heads × "
                    "head size for attention. 64 gives every linear layer sizes the 4-bit CPU kernels take (rows % 32, "
                    "columns % 64); 1 = no rounding. Totals end at the nearest reachable number.")
    score_split: Literal["auto", "train", "dev", "test"] = Field(
        default="auto", description="Split whose text the importance is measured on (`auto`: train if present, "
                                    "else test). `loss: label` needs a labelled split.")
    text_file: Optional[Path] = Field(
        default=None, description="Measure importance on this text file instead (one example per line, a tab "
                                  "between the two sentences of a pair; relative to the recipe). Only with kl.")
    num_examples: int = Field(default=1024, gt=0, description="Examples used to measure importance (the first N "
                                                              "of a seeded shuffle).")
    batch_size: int = Field(default=32, gt=0, description="Examples per importance forward/backward pass.")
    recover: Optional[RecoverConfig] = Field(
        default=None, description="Distil the original model into the pruned one afterwards (soft targets from "
                                  "the shared teacher-logit cache).")

    _resolve_text_file = field_validator("text_file", mode="before")(_resolve_path)

    @field_validator("target_heads", "target_ffn")
    @classmethod
    def _non_negative(cls, v):
        values = v if isinstance(v, list) else [v] if v is not None else []
        if any(x < 0 for x in values):
            raise ValueError("must be >= 0")
        if isinstance(v, list) and not v:
            raise ValueError("a per-layer list needs one entry per layer")
        return v

    @field_validator("text_file")
    @classmethod
    def _text_file_exists(cls, v: Optional[Path]) -> Optional[Path]:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"file {str(v)!r} not found")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "PruneConfig":
        if self.target_heads is None and self.target_ffn is None and self.sparsity is None:
            raise ValueError("give target_heads, target_ffn or sparsity: nothing to prune")
        if self.sparsity is not None and self.target_heads is not None and self.target_ffn is not None:
            raise ValueError("sparsity is unused when both target_heads and target_ffn are given")
        if self.loss == "label" and (self.text_file is not None or self.score_split == "test"):
            raise ValueError("loss: label needs labelled text; use score_split train or dev (or loss: kl)")
        if self.text_file is not None and self.score_split not in ("auto",):
            raise ValueError("give either text_file or score_split, not both")
        return self

    def needs_train_split(self) -> bool:
        return self.recover is not None or (self.score_split == "train" and self.text_file is None)


# ------------------------------------------------------------------------------------------------------------

def _read_text_file(path: Path):
    import datasets

    s1, s2 = [], []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) > 2:
            raise DataError(f"{path} line {n}: more than two tab-separated texts")
        s1.append(parts[0])
        s2.append(parts[1] if len(parts) == 2 else None)
    if not s1:
        raise DataError(f"{path}: no text")
    return datasets.Dataset.from_dict({"sentence1": s1, "sentence2": s2, "label": [-1] * len(s1)})


def scoring_dataset(cfg: PruneConfig, ctx: StageContext):
    """The text importance is measured on, `num_examples` rows of a seeded shuffle."""
    if cfg.text_file is not None:
        ds = _read_text_file(cfg.text_file)
    else:
        split = cfg.score_split
        if split == "auto":
            split = "train" if ctx.data.train is not None else "test" if ctx.data.test is not None else "dev"
        ds = getattr(ctx.data, split)
        if ds is None:
            raise RecipeError(f"score_split: {ctx.task} has no {split} split")
    if len(ds) > cfg.num_examples:
        ds = ds.shuffle(seed=ctx.seed).select(range(cfg.num_examples))
    return ds


def scoring_batches(ds, tokenizer, max_length: int, batch_size: int, with_labels: bool) -> list[dict]:
    """Tokenised, padded batches (similar lengths together: little padding)."""
    s1 = list(ds["sentence1"])
    s2 = list(ds["sentence2"]) if "sentence2" in ds.column_names else [None] * len(s1)
    labels = list(ds["label"]) if with_labels else None
    order = sorted(range(len(s1)), key=lambda i: len(s1[i]) + len(s2[i] or ""))
    batches = []
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        pair = [s2[i] for i in idx] if any(s2[i] is not None for i in idx) else None
        enc = tokenizer([s1[i] for i in idx], pair, truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        batch = dict(enc)
        if labels is not None:
            batch["labels"] = torch.tensor([labels[i] for i in idx])
        batches.append(batch)
    return batches


def _prune_key(cfg: PruneConfig, parent: ModelFolder, ds) -> str:
    facts = {k: v for k, v in cfg.run_facts().items() if k not in ("recover", "name", "repo_id", "from")}
    return hashlib.sha256(json.dumps([facts, folder_hash(parent.path), data_hash(ds)], sort_keys=True,
                                     default=str).encode()).hexdigest()[:16]


def _recover(model, cfg: PruneConfig, parent: ModelFolder, tokenizer, ctx: StageContext) -> dict:
    """Distil the parent (the unpruned model) into `model` with KL·T² on its cached logits (+ hard labels)."""
    from transformers import DataCollatorWithPadding

    rc = cfg.recover
    if ctx.data.train is None:
        raise RecipeError(f"recover: {ctx.task} has no train split to recover on")
    teacher = teacher_outputs(parent.path, ctx.data.train, ctx.recipe.max_seq_length, ctx.cache_dir,
                              accelerator=ctx.accelerator, note_in=ctx.work_dir)
    enc = glue.encode(ctx.data.train, tokenizer, ctx.recipe.max_seq_length)
    enc = enc.add_column("teacher_pos", list(range(len(enc))))
    pad = DataCollatorWithPadding(tokenizer)
    weights = LossWeights(temperature=rc.temperature, alpha_ce=rc.alpha, alpha_hard=1 - rc.alpha, alpha_cos=0.0)

    def collate(rows):
        pos = torch.tensor([r.pop("teacher_pos") for r in rows])
        batch = pad(rows)
        batch["teacher_pos"] = pos
        return batch

    def loss_fn(m, batch):  # the distill stage's task loss: alpha·KL·T² (MSE for regression) + (1−alpha)·hard
        t_logits = teacher.logits[batch.pop("teacher_pos").cpu()].to(batch["input_ids"].device)
        labels = batch.pop("labels")
        return task_distillation_loss(m(**batch).logits, t_logits, labels, weights)

    args = TrainingArgs(**{k: getattr(rc, k) for k in TrainingArgs.model_fields})
    model.train()
    result = train(model, enc, loss_fn, args, ctx, collate_fn=collate, desc=f"{cfg.name}/{ctx.task}/recover")
    model.eval()
    return {"steps": result.steps, "loss": round(result.loss, 5), "seconds": round(result.seconds, 1),
            "resumed_from_step": result.resumed_from,
            "teacher_cache": {"key": teacher.path.name, "reused": teacher.from_cache}}


def run(cfg: PruneConfig, parent: ModelFolder, ctx: StageContext, out: Path) -> dict:
    task = ctx.data.task
    tokenizer = load_tokenizer(parent.path)
    model = load_classifier(parent.path, task.num_labels, task.labels, ctx.recipe.trust_remote_code,
                            require_trained=cfg.name)
    model.to(ctx.accelerator.device).eval()
    heads0, ffn0 = pruning.layer_sizes(model)
    head_target = pruning.resolve_target("target_heads", cfg.target_heads,
                                         cfg.sparsity if cfg.target_heads is None else None, heads0, cfg.even)
    ffn_target = pruning.resolve_target("target_ffn", cfg.target_ffn,
                                        cfg.sparsity if cfg.target_ffn is None else None, ffn0, cfg.even)

    ds = scoring_dataset(cfg, ctx)
    batches = scoring_batches(ds, tokenizer, ctx.recipe.max_seq_length, cfg.batch_size, cfg.loss == "label")
    ctx.log(f"{cfg.name}: scoring {len(ds)} examples, loss={cfg.loss}, {cfg.iterations} iterations; "
            f"heads {sum(heads0)} -> {head_target}, FFN {sum(ffn0)} -> {ffn_target}")

    # Pruning is deterministic given config, parent and text: a resumed run reuses the masks it found.
    saved = Path(ctx.work_dir) / f"prune-{_prune_key(cfg, parent, ds)}.safetensors"
    start = time.time()
    # Under several processes the main one scores and saves; the others load its masks (one model shape).
    reused = saved.is_file()
    if not reused and ctx.is_main:
        result = pruning.iterative_prune(model, batches, head_target=head_target, ffn_target=ffn_target,
                                         iterations=cfg.iterations, loss=cfg.loss,
                                         min_heads_per_layer=cfg.min_heads_per_layer,
                                         min_ffn_per_layer=cfg.min_ffn_per_layer, multiple_of=cfg.multiple_of,
                                         log=ctx.log)
        Path(ctx.work_dir).mkdir(parents=True, exist_ok=True)
        pruning.save_scores(result, saved)
    ctx.accelerator.wait_for_everyone()
    if reused or not ctx.is_main:
        result = _load_result(saved, heads0, ffn0)
        if reused:
            ctx.log(f"{cfg.name}: reusing masks from {saved.name}")
    score_seconds = time.time() - start
    pruned = pruning.build_pruned_model(model.cpu(), result.head_masks, result.ffn_masks)
    params_before = sum(p.numel() for p in model.parameters())
    del model

    recovery = None
    if cfg.recover is not None:
        recovery = _recover(pruned, cfg, parent, tokenizer, ctx)
    if ctx.is_main:
        save_pruned(pruned, out)
        tokenizer.save_pretrained(out)
        pruning.save_scores(result, out / SCORES_FILE)
        pruning.save_heatmap(result, out / HEATMAP_FILE, title=f"{cfg.name} / {task.name} head importance")
    heads, ffn = pruning.layer_sizes(pruned)
    return {
        "loss": cfg.loss,
        "heads_per_layer": heads, "ffn_per_layer": ffn,
        "heads_kept": sum(heads), "heads_total": sum(heads0),
        "ffn_kept": sum(ffn), "ffn_total": sum(ffn0),
        "layers_without_heads": [i for i, h in enumerate(heads) if h == 0],
        "layers_without_ffn": [i for i, f in enumerate(ffn) if f == 0],
        "multiple_of": cfg.multiple_of,
        "params_before": params_before, "params_after": sum(p.numel() for p in pruned.parameters()),
        "model_type": pruned.config.model_type,
        "score_examples": len(ds), "score_seconds": round(score_seconds, 1),
        "iterations": result.history,
        "scores_file": SCORES_FILE, "heatmap": HEATMAP_FILE,
        "recovery": recovery,
    }


def _load_result(path: Path, heads0: list[int], ffn0: list[int]):
    t = pruning.load_scores(path)

    def rows(key, sizes):
        return [t[key][i, :n].float() for i, n in enumerate(sizes)]

    return pruning.PruneResult(rows("head_mask", heads0), rows("ffn_mask", ffn0),
                               rows("head_importance", heads0), rows("ffn_importance", ffn0),
                               rows("head_importance_final", heads0), rows("ffn_importance_final", ffn0))
