"""`kind: finetune` — fine-tune a model on the task's labels (full fine-tuning, or LoRA merged back)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from hfdistill import glue
from hfdistill.folder import ModelFolder
from hfdistill.losses import hard_label_loss
from hfdistill.models import load_classifier, load_tokenizer
from hfdistill.stages.base import StageConfig, StageContext
from hfdistill.training import TrainingArgs, train, training_args


class LoraSettings(BaseModel):
    """LoRA adapters (peft) trained instead of the full weights and merged back before saving."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=8, gt=0, description="Adapter rank.")
    alpha: float = Field(default=16, gt=0, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(default_factory=lambda: ["query", "key", "value", "dense"],
                                      min_length=1, description="Module names that get adapters.")


class FinetuneConfig(TrainingArgs, StageConfig):
    """Fine-tune the parent model (usually the base model) on the task's training split."""

    kind: Literal["finetune"] = "finetune"
    learning_rate: float = Field(default=1e-4, gt=0, description="Peak AdamW learning rate.")
    epochs: float = Field(default=3.0, gt=0, description="Passes over the training data (fractions allowed).")
    lora: Optional[LoraSettings] = Field(default=None, description="Train LoRA adapters instead of all weights; "
                                                                   "merged into the saved model.")


def label_loss(model, batch):
    """Hard-label loss of a batch: CE for classes, MSE for STS-B scores."""
    labels = batch.pop("labels")
    return hard_label_loss(model(**batch).logits, labels), {}


def run(cfg: FinetuneConfig, parent: ModelFolder, ctx: StageContext, out: Path) -> dict:
    from transformers import DataCollatorWithPadding

    task = ctx.data.task
    tokenizer = load_tokenizer(parent.path)
    model = load_classifier(parent.path, task.num_labels, task.labels, ctx.recipe.trust_remote_code)
    if cfg.lora is not None:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora.r,
                                                 lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                                 target_modules=cfg.lora.target_modules))
    train_set = glue.encode(ctx.data.train, tokenizer, ctx.recipe.max_seq_length)
    ctx.log(f"{cfg.name}: fine-tuning {parent.path.name} on {len(train_set)} {task.name} examples")
    result = train(model, train_set, label_loss, training_args(cfg), ctx,
                   collate_fn=DataCollatorWithPadding(tokenizer), desc=f"{cfg.name}/{task.name}")
    if cfg.lora is not None:
        model = model.merge_and_unload()
    if ctx.is_main:
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    return {"train_examples": len(train_set), "steps": result.steps, "train_loss": round(result.loss, 5),
            "train_seconds": round(result.seconds, 1), "resumed_from_step": result.resumed_from,
            "lora": cfg.lora.model_dump() if cfg.lora else None}
