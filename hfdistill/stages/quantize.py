"""`kind: quantize` — quantize any model the pipeline produced (teacher, distilled, pruned).

    method: bnb-8bit   LLM.int8 (bitsandbytes): int8 weights, outlier features in fp16
    method: bnb-4bit   NF4 or FP4 weights (bitsandbytes), optional double quantization of the scales
    method: int8-cpu   ONNX export + ONNX Runtime dynamic int8 quantization: the fast choice for CPU serving

bitsandbytes models are saved with `save_pretrained` and reload with plain `from_pretrained`; int8-cpu folders hold
`model.onnx` and reload with `hfdistill.quantization.load_int8_cpu`. The model is saved *before* it runs any
forward (a 4-bit forward on an AVX512-BF16 CPU repacks the weights and a later save would corrupt them); the saved
folder is then reloaded and must reproduce the in-memory model's predictions.

Every quantized model (each method, after `recover` if any) is then compared with its parent on the first 512 dev rows
(all, if fewer): prediction agreement and KL (Pearson correlation and MSE for regression) and both task scores, in
lineage `info.parent_check`; below `min_agreement` the stage fails with a one-line ModelError, so no folder is written.
`info.quantized_weight_fraction` is the fraction of the encoder's linear weights (by count) stored quantized; weightless
layers of a pruned model (a layer with no heads or no FFN neurons) stay in full precision for every method.

`recover:` trains LoRA adapters on the quantized model (QLoRA-style for 4-bit: frozen quantized base, fp32 adapters
and head), distilling from the parent's logits (L_ce = KL·T², `hfdistill.losses.soft_target_loss`; MSE for
regression) read from the shared teacher cache. The adapter is saved in `adapter/` beside the quantized base.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from hfdistill import glue
from hfdistill import quantization as q
from hfdistill.distillation.teacher_cache import teacher_outputs
from hfdistill.errors import DataError, ModelError
from hfdistill.folder import ModelFolder
from hfdistill.losses import mse_logit_loss, soft_target_loss
from hfdistill.models import formats, load_classifier, load_tokenizer
from hfdistill.stages.base import StageConfig, StageContext
from hfdistill.training import TrainingArgs, train, training_args

#: Dev examples (at least; all when the dev split is smaller) on which every quantized model is checked against its
#: parent (prediction agreement, score) and the saved folder against the in-memory model.
CHECK_EXAMPLES = 512
#: The options each method takes; giving another method's option is an error, not silently ignored.
METHOD_FIELDS = {"bnb-8bit": ("int8_threshold", "skip_modules", "recover"),
                 "bnb-4bit": ("quant_type", "double_quant", "compute_dtype", "skip_modules", "recover"),
                 "int8-cpu": ("per_channel", "quantize_embeddings")}


class LoraSpec(BaseModel):
    """The LoRA adapters trained by `recover`."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=8, gt=0, le=256, description="LoRA rank.")
    alpha: float = Field(default=16.0, gt=0, description="LoRA scaling numerator (`lora_alpha`; scale = alpha / r).")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: Union[Literal["all-linear"], list[str]] = Field(
        default="all-linear",
        description="Modules that get adapters: `all-linear` (every quantized linear layer) or a list of names "
                    "or suffixes, e.g. [query, value] for BERT, [q_lin, v_lin] for DistilBERT.")

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("needs at least one module name (or `all-linear`)")
        return v


class RecoverConfig(TrainingArgs):
    """Recovery adapters: LoRA on the quantized model, distilled from the parent's logits on the train split."""

    lora: LoraSpec = Field(default_factory=LoraSpec, description="The adapters: r, alpha, dropout, target_modules.")
    temperature: float = Field(default=2.0, gt=0, description="Softmax temperature T of L_ce = KL·T² to the parent.")
    learning_rate: float = Field(default=5e-4, gt=0, description="Peak AdamW learning rate (adapters and head).")
    max_train_samples: Optional[int] = Field(default=None, gt=0,
                                             description="Use only the first N training examples for recovery (with `max_steps`, "
                                                         "at most max_steps × batch size are used anyway).")


class QuantizeConfig(StageConfig):
    """Quantize the parent model. Options that belong to another method are refused, not ignored."""

    kind: Literal["quantize"] = Field(description="quantize")
    method: Literal["bnb-8bit", "bnb-4bit", "int8-cpu"] = Field(
        description="bnb-8bit (LLM.int8), bnb-4bit (NF4/FP4, bitsandbytes) or int8-cpu (ONNX Runtime dynamic "
                    "int8, fast CPU inference; needs the `onnx` extra).")
    quant_type: Optional[Literal["nf4", "fp4"]] = Field(
        default=None, description="bnb-4bit only: 4-bit data type, nf4 (default) or fp4.")
    double_quant: Optional[bool] = Field(
        default=None, description="bnb-4bit only: also quantize the per-block scales (default true).")
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="bnb-4bit only: dtype of the matmuls; auto = float32, the only one that works on "
                                    "every CPU (AVX512-BF16 CPUs fail with others).")
    skip_modules: Optional[list[str]] = Field(
        default=None, description="bnb: modules kept in full precision (names, suffixes or regexes); default: the "
                                  "classification head. For 4-bit, layers the CPU kernels cannot take (sizes not "
                                  "multiples of 32/64) are always added.")
    int8_threshold: Optional[float] = Field(
        default=None, description="bnb-8bit only: LLM.int8 outlier threshold (default 6.0).")
    per_channel: Optional[bool] = Field(
        default=None, description="int8-cpu only: one weight scale per output channel (default true; per tensor "
                                  "is as fast but lost 2 points of SST-2 accuracy on MiniLM).")
    quantize_embeddings: Optional[bool] = Field(
        default=None, description="int8-cpu only: also store the embedding tables in int8 (default true; 4× "
                                  "smaller file).")
    recover: Optional[RecoverConfig] = Field(
        default=None, description="bnb only: train LoRA recovery adapters distilled from the parent's logits.")
    min_agreement: float = Field(
        default=0.97, ge=0, le=1,
        description="The stage fails (no model folder) unless the quantized model predicts the same class as its "
                    "parent on at least this fraction of the first 512 dev rows (all, if fewer); for regression, "
                    "the Pearson correlation of the two models' outputs. With `recover`, the recovered model counts.")

    @field_validator("quant_type", "double_quant", "compute_dtype", "skip_modules", "int8_threshold", "per_channel",
                     "quantize_embeddings", "recover")
    @classmethod
    def _belongs_to_method(cls, v: Any, info: ValidationInfo) -> Any:
        method = info.data.get("method")  # absent when `method` itself was invalid
        users = [m for m, fields in METHOD_FIELDS.items() if info.field_name in fields]
        if method is not None and method not in users and v is not None and v != "auto":
            raise ValueError(f"only applies to method {' or '.join(users)}, not {method}")
        if info.field_name == "skip_modules" and v is not None and any(not s.strip() for s in v):
            raise ValueError("module names must be non-empty")
        return v

    def needs_train_split(self) -> bool:
        return self.recover is not None  # recovery distils on the train text (labels unused)


# ---------------------------------------------------------------------------------------------------- helpers

def _check_parent(parent: ModelFolder) -> None:
    if formats.is_int8_cpu_folder(parent.path):
        raise ModelError(f"{parent.path}: the parent is an int8-cpu artefact; quantize from an unquantized stage")
    if parent.config.get("quantization_config") or formats.has_adapter(parent.path):
        raise ModelError(f"{parent.path}: the parent is already quantized; quantize from an unquantized stage")


def _check_rows(ds: Any, n: int) -> Any:
    return ds.select(range(min(n, len(ds))))


def _positions(ds: Any) -> Any:
    """GLUE rows with `idx` = position (the teacher cache indexes its logits by position)."""
    ds = ds.remove_columns([c for c in ds.column_names if c not in ("sentence1", "sentence2", "label")])
    return ds.add_column("idx", list(range(len(ds))))


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


class _Collator:
    """Pads the model inputs (token_type_ids too: pair tasks need them) and attaches the parent's logits."""

    def __init__(self, pad_id: int, parent_logits: torch.Tensor):
        self.pad_id, self.parent_logits = pad_id, parent_logits

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = {"input_ids": _pad([e["input_ids"] for e in examples], self.pad_id),
                 "attention_mask": _pad([e["attention_mask"] for e in examples], 0)}
        if "token_type_ids" in examples[0]:
            batch["token_type_ids"] = _pad([e["token_type_ids"] for e in examples], 0)
        batch["parent_logits"] = self.parent_logits[[int(e["idx"]) for e in examples]]
        return batch


def _encoded(ds: Any, tokenizer: Any, max_len: int) -> Any:
    enc = glue.encode(ds, tokenizer, max_len, with_labels=False, keep_idx=True)
    return enc


@torch.inference_mode()
def _logits(model: Any, encoded: Any, pad_id: int, batch_size: int = 32) -> torch.Tensor:
    """The model's logits on `encoded`, computed where the model is (CPU or GPU), returned on CPU."""
    collate = _Collator(pad_id, torch.zeros(len(encoded), 1))
    device = formats.model_device(model)
    out = []
    for start in range(0, len(encoded), batch_size):
        batch = collate([encoded[i] for i in range(start, min(start + batch_size, len(encoded)))])
        batch.pop("parent_logits")
        out.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu())
    return torch.cat(out)


def bnb_device(ctx: StageContext) -> Optional[torch.device]:
    """Where bitsandbytes models load and train: the accelerator's GPU, or None (CPU, as before)."""
    device = ctx.accelerator.device
    return device if device.type != "cpu" else None


def agreement(logits: torch.Tensor, parent_logits: torch.Tensor) -> dict[str, float]:
    """How closely a model follows its parent: argmax agreement and KL(parent ‖ model) (T=1) for classes; Pearson
    correlation and mean squared difference of the outputs for a regression head."""
    logits, parent_logits = logits.float(), parent_logits.float()
    if logits.shape[-1] == 1:
        a, b = logits.flatten().double(), parent_logits.flatten().double()
        if a.numel() < 2 or float(a.std()) == 0.0 or float(b.std()) == 0.0:  # undefined: equal or not at all
            pearson = 1.0 if torch.allclose(a, b) else 0.0
        else:
            pearson = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
        return {"pearson": round(pearson, 6), "mse": round(float(mse_logit_loss(logits, parent_logits)), 6)}
    return {"agreement": round(float((logits.argmax(-1) == parent_logits.argmax(-1)).float().mean()), 6),
            "kl": round(float(soft_target_loss(logits, parent_logits, 1.0)), 6)}


def _score(task: glue.Task, logits: torch.Tensor, labels: Any) -> float:
    preds = logits.squeeze(-1) if task.is_regression else logits.argmax(-1)
    return round(glue.task_score(task, glue.compute_metrics(task, preds.numpy(), np.asarray(labels))), 6)


def parent_check(task: glue.Task, logits: torch.Tensor, parent_logits: torch.Tensor, labels: Any,
                 min_agreement: float, stage: str) -> dict[str, Any]:
    """Compare a quantized model with its parent on the same dev rows: agreement (Pearson for regression), both
    task scores. Raises ModelError below `min_agreement`: a quantized model that no longer behaves like its parent
    is not written."""
    record = agreement(logits, parent_logits)
    metric = "pearson" if logits.shape[-1] == 1 else "agreement"
    check = {"examples": int(logits.shape[0]), "metric": metric, **record, "min_agreement": min_agreement,
             "score": _score(task, logits, labels), "parent_score": _score(task, parent_logits, labels)}
    if not record[metric] >= min_agreement:
        how = (f"agrees with its parent on {record[metric]:.4f}" if metric == "agreement" else
               f"correlates with its parent at Pearson {record[metric]:.4f}")
        raise ModelError(f"stage {stage!r}: the quantized model {how} of {check['examples']} dev examples, below "
                         f"min_agreement {min_agreement} (score {check['score']:.4f}, parent {check['parent_score']:.4f}); "
                         f"keep more layers in full precision (skip_modules) or lower min_agreement")
    return check


def _sample_texts(ds: Any, n: int = 8) -> list[str]:
    return [s for s in ds["sentence1"][:n] if s] or ["a short example sentence"]


# ---------------------------------------------------------------------------------------------------- run

def run(cfg: QuantizeConfig, parent: ModelFolder, ctx: StageContext, out: Path) -> dict:
    _check_parent(parent)
    max_len = int(getattr(ctx.recipe, "max_seq_length", 128))
    trust = bool(getattr(ctx.recipe, "trust_remote_code", False))
    tokenizer = load_tokenizer(parent.path)
    task = ctx.data.task
    parent_model = load_classifier(parent.path, task.num_labels, task.labels, trust,
                                   require_trained=cfg.name).eval()
    parent_bytes = q.weight_bytes(parent_model)
    # Every quantized model is compared with its parent on these rows (and the saved folder with the in-memory one).
    rows = _check_rows(_positions(ctx.data.dev), CHECK_EXAMPLES)
    check = _encoded(rows, tokenizer, max_len)
    pad_id = tokenizer.pad_token_id or 0
    parent_dev = _logits(parent_model, check, pad_id)

    if cfg.method == "int8-cpu":
        q.require_onnxruntime()
        facts: dict[str, Any] = {"method": cfg.method}
        if ctx.is_main:
            facts.update(q.export_int8_cpu(parent_model, tokenizer, out, per_channel=cfg.per_channel is not False,
                                           quantize_embeddings=cfg.quantize_embeddings is not False,
                                           sample_texts=_sample_texts(ctx.data.dev), max_seq_length=max_len))
            q.copy_model_code(parent.path, out)
        ctx.accelerator.wait_for_everyone()
        facts.update({"parent_weight_bytes": parent_bytes, "load": "hfdistill.quantization.load_int8_cpu(path)"})
        final = _logits(q.load_int8_cpu(out, trust_remote_code=trust), check, pad_id)
        facts["parent_check"] = parent_check(task, final, parent_dev, rows["label"], cfg.min_agreement, cfg.name)
        return facts

    plan = q.plan_bnb(cfg.method, parent_model, quant_type=cfg.quant_type or "nf4",
                      double_quant=cfg.double_quant is not False, compute_dtype=cfg.compute_dtype,
                      skip_modules=cfg.skip_modules,
                      int8_threshold=6.0 if cfg.int8_threshold is None else cfg.int8_threshold)
    ctx.log(f"{cfg.name}: {cfg.method} of {parent.path}, {len(plan.quantized_modules)} linear layers quantized, "
            f"kept: {', '.join(plan.skip_modules) or 'none'}")
    model = q.quantize_bnb(parent.path, plan, trust, bnb_device(ctx))
    if ctx.is_main:
        q.save_bnb(model, out, tokenizer)  # before any forward: see the module docstring
        q.copy_model_code(parent.path, out)
    ctx.accelerator.wait_for_everyone()
    facts = plan.facts()
    facts.update(q.quantized_fraction(plan.shapes, q.quantized_linear_names(model)))  # what was, not what was planned
    facts.update({"parent_weight_bytes": parent_bytes, "weight_bytes": q.weight_bytes(model),
                  "device": formats.model_device(model).type})

    # The saved folder must reproduce the in-memory model (both forward only now, after the save).
    reloaded = q.load_bnb(out, trust, bnb_device(ctx))
    in_memory, from_disk = _logits(model, check, pad_id), _logits(reloaded, check, pad_id)
    diff = float((in_memory - from_disk).abs().max())
    same = bool((in_memory.argmax(-1) == from_disk.argmax(-1)).all()) if in_memory.shape[-1] > 1 else True
    if not same or diff > 1e-3 * max(1.0, float(in_memory.abs().max())):
        raise ModelError(f"{cfg.name}: the saved model does not reproduce the quantized model's predictions "
                         f"(max |Δlogit| {diff:.2e} on {len(check)} dev examples)")
    facts["reload_check"] = {"examples": len(check), "max_abs_diff": diff}
    facts["dev_agreement_with_parent"] = agreement(from_disk, parent_dev)
    del model, reloaded

    final = from_disk
    if cfg.recover is not None:
        facts["recovery"], final = _recover(cfg.recover, parent, ctx, out, tokenizer, check, parent_dev,
                                            facts["dev_agreement_with_parent"])
    facts["parent_check"] = parent_check(task, final, parent_dev, rows["label"], cfg.min_agreement, cfg.name)
    return facts


def _recover(rc: RecoverConfig, parent: ModelFolder, ctx: StageContext, out: Path, tokenizer: Any,
             check: Any, parent_dev: torch.Tensor, before: dict[str, float]) -> tuple[dict[str, Any], torch.Tensor]:
    """Train the adapters; returns their facts and the recovered model's logits on the check rows."""
    if ctx.data.train is None or len(ctx.data.train) == 0:
        raise DataError(f"{ctx.task}: recover needs the train split (its text; labels are not used)")
    max_len = int(getattr(ctx.recipe, "max_seq_length", 128))
    texts = _positions(ctx.data.train)
    if rc.max_train_samples is not None:
        texts = _check_rows(texts, rc.max_train_samples)
    if rc.max_steps is not None:  # only the rows training will see need the parent's logits
        seen = rc.max_steps * rc.batch_size * rc.gradient_accumulation_steps * ctx.accelerator.num_processes
        texts = _check_rows(texts, seen)
    cache = teacher_outputs(parent.path, texts, max_len, ctx.cache_dir, accelerator=ctx.accelerator,
                            note_in=ctx.work_dir)
    ctx.log(f"recover: parent logits for {len(texts)} examples "
            f"{'read from' if cache.from_cache else 'written to'} {cache.path}")

    # A fresh load of the saved base: it has never run an inference forward (see the module docstring).
    # On a GPU it loads on the accelerator's device, where training uses it as it is (it cannot be moved).
    base = q.load_bnb(out, bool(getattr(ctx.recipe, "trust_remote_code", False)), bnb_device(ctx))
    model = q.add_lora(base, rc.lora.r, rc.lora.alpha, rc.lora.target_modules, rc.lora.dropout)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    encoded = _encoded(texts, tokenizer, max_len)
    regression = cache.logits.shape[-1] == 1

    def loss_fn(m: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        target = batch.pop("parent_logits")
        logits = m(**batch).logits.float()
        if regression:
            return mse_logit_loss(logits, target), {}
        return soft_target_loss(logits, target, rc.temperature), {}

    result = train(model, encoded, loss_fn, training_args(rc), ctx,
                   collate_fn=_Collator(tokenizer.pad_token_id or 0, cache.logits), desc="recover")
    model.eval()
    final = _logits(model, check, tokenizer.pad_token_id or 0)
    after = agreement(final, parent_dev)
    if ctx.is_main:
        # The base is this folder (the adapter sits in `adapter/` inside it).
        q.save_adapter(ctx.accelerator.unwrap_model(model), out, base_model="..")
    ctx.accelerator.wait_for_everyone()
    key = "mse" if regression else "kl"
    if (after[key] > before[key]):
        ctx.log(f"recover: the adapter did not bring the model closer to its parent on dev ({key} "
                f"{before[key]} → {after[key]})")
    return {"adapter": q.ADAPTER_DIR, "base_model": "..", "lora": rc.lora.model_dump(), "trainable_params": trainable,
            "temperature": rc.temperature, "train_examples": len(texts), "steps": result.steps,
            "train_loss": round(result.loss, 6), "train_seconds": round(result.seconds, 1),
            "teacher_cache": {"key": cache.path.name, "reused": cache.from_cache},
            "dev_agreement_before": before, "dev_agreement_after": after}, final
