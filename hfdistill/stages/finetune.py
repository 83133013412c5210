"""`kind: finetune` — fine-tune a model on the task's labels (full fine-tuning, or LoRA merged back), or, with
`objective: mlm`, on raw text with the masked-LM loss: this gives a model without one (the packaged MiniLM) a
trained masked-LM head, the teacher general distillation (`kind: distill`, `objective: mlm`) needs.

    mlm:  L_mlm = CE(z_s, y) at the masked tokens, masks re-drawn every batch (dynamic masking, 15% by default)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from hfdistill import glue
from hfdistill.distillation.student import load_masked_lm
from hfdistill.distillation.text import check_text_source, masked_lm_data
from hfdistill.folder import ModelFolder
from hfdistill.losses import hard_label_loss, mlm_loss
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
    objective: Literal["task", "mlm"] = Field(
        default="task", description="`task`: the task's labels (a *ForSequenceClassification model); `mlm`: the "
                                    "masked-LM loss on raw text (a *ForMaskedLM model, e.g. the teacher of "
                                    "general distillation; a missing MLM head is initialised and trained).")
    text_source: Optional[str] = Field(
        default=None, description="mlm objective: raw text — a .txt file (one text per line), a folder of .txt "
                                  "files or a saved `datasets` dataset, a .csv/.json/.jsonl/.parquet file, or "
                                  "`train`/`test` (the task's sentences).")
    text_column: str = Field(default="text", description="Column of `text_source` holding the text "
                                                         "(datasets and csv/json/parquet files).")
    mlm_probability: float = Field(default=0.15, gt=0, lt=1,
                                   description="mlm objective: fraction of tokens masked (re-drawn every batch).")
    trainable: Literal["all", "head"] = Field(
        default="all", description="mlm objective: train every weight (`all`) or only the masked-LM head "
                                   "(`head`: encoder and embeddings frozen, so the hidden states stay the "
                                   "parent's; the output projection tied to the embeddings stays too).")

    @field_validator("text_source")
    @classmethod
    def _text_source_exists(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        return check_text_source(v, (info.context or {}).get("base_dir"))

    @model_validator(mode="after")
    def _objective_fields(self) -> "FinetuneConfig":
        if self.objective == "mlm":
            if self.text_source is None:
                raise ValueError("text_source: required with objective: mlm (a text file, a folder, a dataset "
                                 "or `train`)")
            if self.lora is not None:
                raise ValueError("lora: only with objective: task")
        elif self.text_source is not None or self.trainable != "all":
            raise ValueError("text_source/trainable: only with objective: mlm")
        return self

    def needs_train_split(self) -> bool:
        return self.objective == "task" or self.text_source == "train"


def label_loss(model, batch):
    """Hard-label loss of a batch: CE for classes, MSE for STS-B scores."""
    labels = batch.pop("labels")
    return hard_label_loss(model(**batch).logits, labels), {}


def run(cfg: FinetuneConfig, parent: ModelFolder, ctx: StageContext, out: Path) -> dict:
    if cfg.objective == "mlm":
        return _run_mlm(cfg, parent, ctx, out)
    return _run_task(cfg, parent, ctx, out)


def _run_task(cfg: FinetuneConfig, parent: ModelFolder, ctx: StageContext, out: Path) -> dict:
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


def masked_lm_loss(model, batch):
    """L_mlm of a batch: cross-entropy at the masked tokens (labels -100 elsewhere)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return mlm_loss(logits, batch["labels"]), {}


def _run_mlm(cfg: FinetuneConfig, parent: ModelFolder, ctx: StageContext, out: Path) -> dict:
    tokenizer = load_tokenizer(parent.path)
    model, new_weights = load_masked_lm(parent.path, ctx.recipe.trust_remote_code)
    if cfg.trainable == "head":
        model.base_model.requires_grad_(False)  # embeddings + encoder; a tied output projection with them
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ds, collate = masked_lm_data(cfg.text_source, cfg.text_column, ctx.data, tokenizer, ctx.recipe.max_seq_length,
                                 cfg.mlm_probability)
    ctx.log(f"{cfg.name}: masked-LM training of {parent.path.name} ({cfg.trainable}, {trained:,} weights) on "
            f"{len(ds)} texts" + (f"; {len(new_weights)} head weights start untrained" if new_weights else ""))
    result = train(model, ds, masked_lm_loss, training_args(cfg), ctx, collate_fn=collate,
                   desc=f"{cfg.name}/{ctx.task}")
    model.requires_grad_(True)
    if ctx.is_main:
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    return {"objective": "mlm", "texts": len(ds), "mlm_probability": cfg.mlm_probability,
            "trainable": cfg.trainable, "trained_params": trained, "head_initialised": new_weights,
            "model_class": type(model).__name__, "steps": result.steps, "train_loss": round(result.loss, 5),
            "train_seconds": round(result.seconds, 1), "resumed_from_step": result.resumed_from,
            "not_evaluated": "a masked-LM model has no task head: distil it (objective: mlm) or fine-tune it"}
