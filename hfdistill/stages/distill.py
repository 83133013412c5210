"""`kind: distill` — DistilBERT's knowledge distillation, task-specific or general (masked LM).

The student keeps a subset of the teacher's layers (see `hfdistill.distillation.student`) and learns from

    task (classification):  α_ce · KL(softmax(z_t/T) ‖ softmax(z_s/T)) · T²  +  α_hard · CE(z_s, y)
                            + α_cos · mean over the L_cos pairs of (1 − cos(h_s, h_t))   (padding masked)
    task (regression/STS-B): α_ce · MSE(z_s, z_t) + α_hard · MSE(z_s, y) + α_cos · L_cos
    mlm (general):          α_ce · L_ce (soft targets over the vocabulary at every real token, · T²)
                            + α_mlm · L_mlm + α_cos · L_cos,  dynamic masking (re-masked every epoch)

L_cos pairs (`cos_layers`): `matched` = every kept layer with the teacher layer it was copied from; `last` = the
student's output with the teacher's output (hidden state n of an n-layer teacher), DistilBERT's alignment.

For task distillation the teacher (the parent folder) runs once over the training text; its logits and hidden
states come from `hfdistill.distillation.teacher_cache` on every later epoch, stage and re-run. Examples without a
label (the `unlabeled:` text, e.g. the test split) get the soft-target and cosine terms only. The teacher is never
in train mode and never receives gradients. T applies in training only; the saved student predicts at T=1.

The student (`architecture`, `token_types`, `auto` by default): for a sentence-pair task the teacher's own class
with fewer layers, its token-type embeddings and its pooler + classifier head (exact at initialisation); otherwise
a DistilBERT whose head (pre_classifier → ReLU) starts from the teacher's pooler + classifier (tanh), approximate
at initialisation, and which folds the type-0 vector into its embeddings. bench/pairs.py measures the choice.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator

from hfdistill import glue
from hfdistill.errors import DataError, ModelError
from hfdistill.distillation.student import (STUDENT_INPUT_NAMES, build_student, cosine_pairs, default_layers,
                                            load_teacher, save_student_tokenizer, select_layers, student_input_names)
from hfdistill.distillation.text import (check_text_source, load_text, masked_lm_data, read_text_lines,  # noqa: F401
                                         resolve_recipe_path)
from hfdistill.distillation.teacher_cache import (cache_budget_bytes, estimate, existing_entry, human_bytes,
                                                  main_decides, teacher_outputs)
from hfdistill.folder import ModelFolder, read_json
from hfdistill.losses import LossWeights, mlm_distillation_loss, task_distillation_loss
from hfdistill.stages.base import StageConfig, StageContext
from hfdistill.models import load_classifier
from hfdistill.training import TrainingArgs, train, training_args

# ---------------------------------------------------------------------------------------------------- config
class DistillConfig(StageConfig, TrainingArgs):
    """Distil the parent model (the teacher) into a smaller student that keeps a subset of its layers."""

    kind: Literal["distill"] = "distill"
    objective: Literal["task", "mlm"] = Field(
        default="task", description="`task`: distil a fine-tuned classifier on the task's data (soft targets + "
                                    "labels); `mlm`: general distillation of a *ForMaskedLM teacher on raw text.")
    layers: Optional[list[int]] = Field(
        default=None, description="Teacher layers the student keeps, 0-based (default: every other layer, "
                                  "e.g. 6 → [0, 2, 4], 12 → [0, 2, 4, 7, 9, 11]).")
    num_layers: Optional[int] = Field(default=None, gt=0,
                                      description="Keep this many layers, spread evenly (instead of `layers`).")
    architecture: Literal["auto", "distilbert", "bert"] = Field(
        default="auto", description="The student's class, and so its head: `distilbert`: a stock DistilBert* "
                                    "student (pre_classifier → ReLU head, started from the teacher's tanh "
                                    "pooler; no segment embeddings: the type-0 vector is folded into the "
                                    "positions); `bert`: the teacher's class with fewer layers (the teacher's "
                                    "pooler + classifier head, exact at initialisation); `auto`: `bert` for "
                                    "sentence-pair tasks, `distilbert` otherwise.")
    token_types: Literal["auto", "fold", "keep"] = Field(
        default="auto", description="`fold`: one token type (the teacher's type-0 vector; segment B of a pair "
                                    "loses its type vector); `keep`: the teacher's token-type embeddings "
                                    "(`architecture: bert` only); `auto`: `keep` for sentence-pair tasks with "
                                    "a `bert` student, `fold` otherwise.")
    init: Literal["teacher", "random"] = Field(
        default="teacher", description="`teacher`: copy embeddings, kept layers and head; `random`: same shape, "
                                       "fresh weights (ablation).")
    student_from: Optional[str] = Field(
        default=None, description="Earlier stage whose model initialises the student instead (e.g. a general "
                                  "`objective: mlm` stage); its layer choice is read from its lineage.")
    temperature: float = Field(default=2.0, description="Softmax temperature T of the soft targets (training "
                                                        "only; the student predicts at T=1).")
    alpha_ce: float = Field(default=5.0, ge=0, description="Weight of the soft-target loss L_ce (KL · T²; MSE "
                                                           "to the teacher for regression).")
    alpha_hard: float = Field(default=2.0, ge=0, description="Weight of the hard-label loss (CE / MSE to the "
                                                             "gold label); task objective.")
    alpha_mlm: float = Field(default=2.0, ge=0, description="Weight of the masked-LM loss L_mlm; mlm objective.")
    alpha_cos: float = Field(default=1.0, ge=0, description="Weight of the cosine loss L_cos between matched "
                                                            "student/teacher hidden states.")
    cos_layers: Literal["matched", "last"] = Field(
        default="matched", description="L_cos on every kept layer paired with the teacher layer it was copied "
                                       "from (`matched`), or on the student's output paired with the teacher's "
                                       "output only (`last`, DistilBERT's choice; a smaller cache).")
    ce_positions: Literal["all", "masked"] = Field(
        default="all", description="mlm objective: the tokens L_ce (soft targets over the vocabulary) covers: "
                                   "`all` real (non-padding) tokens (DistilBERT's reference) or only the "
                                   "`masked` ones.")
    cache_hidden: bool = Field(default=True, description="Store the teacher's hidden states in the teacher "
                                                         "cache; false: run the teacher each step for L_cos "
                                                         "(no disk, slower).")
    unlabeled: list[str] = Field(
        default_factory=list, description="Extra text trained on with soft targets only (no labels): `test` (the "
                                          "task's test split) or text files, one example per line (a tab "
                                          "separates a sentence pair).")
    text_source: Optional[str] = Field(
        default=None, description="mlm objective: raw text — a .txt file (one text per line), a folder of .txt "
                                  "files or a saved `datasets` dataset, a .csv/.json/.jsonl/.parquet file, or "
                                  "`train`/`test` (the task's sentences).")
    text_column: str = Field(default="text", description="Column of `text_source` holding the text "
                                                         "(datasets and csv/json/parquet files).")
    mlm_probability: float = Field(default=0.15, gt=0, lt=1,
                                   description="Fraction of tokens masked (re-drawn every epoch).")
    teacher_batch_size: int = Field(default=64, gt=0, description="Batch size of the teacher's caching pass.")
    learning_rate: float = Field(default=1e-4, gt=0, description="Peak AdamW learning rate.")
    epochs: float = Field(default=3.0, gt=0, description="Passes over the training data (fractions allowed).")

    @field_validator("temperature")
    @classmethod
    def _positive_temperature(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"must be > 0 (got {v})")
        return v

    @field_validator("layers")
    @classmethod
    def _increasing_layers(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        if v is None:
            return v
        if not v:
            raise ValueError("must not be empty")
        if min(v) < 0:
            raise ValueError(f"layer indices are 0-based and >= 0 (got {v})")
        if v != sorted(set(v)):
            raise ValueError(f"must be increasing without repeats (got {v})")
        return v

    @field_validator("num_layers")
    @classmethod
    def _not_both(cls, v: Optional[int], info: ValidationInfo) -> Optional[int]:
        if v is not None and info.data.get("layers") is not None:
            raise ValueError("give either layers or num_layers, not both")
        return v

    @field_validator("unlabeled")
    @classmethod
    def _unlabeled_sources(cls, v: list[str], info: ValidationInfo) -> list[str]:
        out = []
        for item in v:
            if item in ("dev", "validation"):
                raise ValueError("the dev split is for evaluation; use `test` or a text file")
            if item == "train":
                raise ValueError("the train split is already used with its labels")
            item = resolve_recipe_path(item, (info.context or {}).get("base_dir"))
            if item != "test" and not Path(item).is_file():
                raise ValueError(f"text file {item!r} not found")
            out.append(item)
        return out

    @field_validator("text_source")
    @classmethod
    def _text_source_exists(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        return check_text_source(v, (info.context or {}).get("base_dir"))

    @model_validator(mode="after")
    def _objective_fields(self) -> "DistillConfig":
        if self.objective == "mlm":
            if self.text_source is None:
                raise ValueError("text_source: required with objective: mlm (a text file, a folder, a dataset "
                                 "or `train`)")
            if self.alpha_ce == self.alpha_mlm == self.alpha_cos == 0:
                raise ValueError("alpha_ce, alpha_mlm and alpha_cos are all 0: nothing to learn")
            if self.student_from is not None or self.unlabeled:
                raise ValueError("student_from/unlabeled: only with objective: task")
        elif self.ce_positions != "all":
            raise ValueError("ce_positions: only with objective: mlm (task L_ce covers every example)")
        if self.objective == "task":
            if self.text_source is not None:
                raise ValueError("text_source: only with objective: mlm (use `unlabeled` for extra task text)")
            if self.alpha_ce == self.alpha_hard == self.alpha_cos == 0:
                raise ValueError("alpha_ce, alpha_hard and alpha_cos are all 0: nothing to learn")
        if self.token_types == "keep" and self.architecture == "distilbert":
            raise ValueError("token_types: keep needs architecture: bert (DistilBERT has no token-type "
                             "embeddings)")
        if self.student_from is not None and (self.layers is not None or self.num_layers is not None
                                              or self.init != "teacher"):
            raise ValueError("student_from: the student comes from that stage; drop layers/num_layers/init")
        return self

    def student_shape(self, pair_task: bool) -> tuple[str, str]:
        """(architecture, token_types) with `auto` resolved: for a sentence-pair task a `bert` student that keeps
        the token types (measured on MRPC: bench/pairs.py, bench/RESULTS.md), otherwise DistilBERT with folded
        types. The mlm objective has no task kind: `distilbert`, `fold`."""
        pair = pair_task and self.objective == "task"
        arch = self.architecture if self.architecture != "auto" else ("bert" if pair else "distilbert")
        types = self.token_types
        if types == "auto":
            types = "keep" if pair and arch == "bert" else "fold"
        return arch, types

    def needs_train_split(self) -> bool:
        if self.objective == "mlm":
            return self.text_source == "train"
        return True

    def loss_weights(self) -> LossWeights:
        return LossWeights(self.temperature, self.alpha_ce, self.alpha_hard, self.alpha_mlm, self.alpha_cos)

    def cached_teacher_layers(self, num_teacher_layers: int) -> list[int]:
        """The teacher hidden states (0 = embedding output) this stage stores in the teacher cache for L_cos, known
        from the recipe alone; [] when it stores none or its layers come from another stage (`student_from`)."""
        if self.objective != "task" or self.student_from is not None or self.alpha_cos <= 0 or not self.cache_hidden:
            return []
        kept = select_layers(num_teacher_layers, self.layers, self.num_layers)
        return sorted({t for _, t in cosine_pairs(kept, num_teacher_layers, self.cos_layers)})


def shared_cache_layers(cfg: DistillConfig, siblings: Any, num_teacher_layers: int, own: list[int]) -> list[int]:
    """`own` (the teacher layers this stage aligns) joined with those of its sibling students: the task-objective
    distill stages of the same parent over the same text, whose cache entry would otherwise be a second teacher
    pass over the same rows (a sweep over student layers)."""
    union = set(own)
    for other in siblings:
        if isinstance(other, DistillConfig) and other.unlabeled == cfg.unlabeled:
            union.update(other.cached_teacher_layers(num_teacher_layers))
    return sorted(union)


# ---------------------------------------------------------------------------------------------------- data
def _unlabeled_rows(items: list[str], data: glue.TaskData) -> dict[str, list]:
    """GLUE-shaped columns for the `unlabeled:` sources (label -1 / NaN)."""
    s1: list[str] = []
    s2: list[Optional[str]] = []
    pair = len(data.task.text) == 2
    for item in items:
        if item == "test":
            if data.test is None:
                raise DataError(f"unlabeled: task {data.task.name} has no test split")
            s1 += list(data.test["sentence1"])
            s2 += list(data.test["sentence2"])
            continue
        for n, line in enumerate(read_text_lines(Path(item))):
            parts = line.split("\t")
            if pair and len(parts) != 2:
                raise DataError(f"{item} line {n + 1}: a pair task needs two tab-separated sentences")
            s1.append(parts[0])
            s2.append(parts[1] if pair else None)
    no_label = float("nan") if data.task.is_regression else -1
    return {"sentence1": s1, "sentence2": s2, "label": [no_label] * len(s1)}


def training_texts(data: glue.TaskData, unlabeled: list[str]):
    """The train split plus the unlabeled rows, as one GLUE-shaped dataset with `idx` = position."""
    import datasets

    train = data.train
    if train is None:
        raise DataError(f"{data.task.name}: no train split to distil on")
    cols = {"sentence1": list(train["sentence1"]), "sentence2": list(train["sentence2"]),
            "label": list(train["label"])}
    if unlabeled:
        extra = _unlabeled_rows(unlabeled, data)
        for k in cols:
            cols[k] += extra[k]
    cols["idx"] = list(range(len(cols["label"])))
    features = datasets.Features({
        "idx": datasets.Value("int64"), "sentence1": datasets.Value("string"),
        "sentence2": datasets.Value("string"),
        "label": datasets.Value("float32") if data.task.is_regression else datasets.Value("int64")})
    return datasets.Dataset.from_dict(cols, features=features)


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


class TaskCollator:
    """Pads a batch and attaches the teacher's cached logits (and hidden states) by example position."""

    def __init__(self, pad_id: int, cache: Any, regression: bool, hidden_slots: Optional[list[int]],
                 token_types: bool = False):
        self.pad_id, self.cache, self.regression, self.hidden_slots = pad_id, cache, regression, hidden_slots
        self.token_types = token_types

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        ids = _pad([e["input_ids"] for e in examples], self.pad_id)
        mask = _pad([e["attention_mask"] for e in examples], 0)
        types = {"token_type_ids": _pad([e["token_type_ids"] for e in examples], 0)} if self.token_types else {}
        pos = [int(e["idx"]) for e in examples]
        dtype = torch.float32 if self.regression else torch.long
        batch = {"input_ids": ids, "attention_mask": mask, **types,
                 "labels": torch.tensor([e["labels"] for e in examples], dtype=dtype),
                 "teacher_logits": self.cache.logits[pos]}
        if self.hidden_slots is not None:  # fp16, only the layers the loss uses; cast per batch on the device
            batch["teacher_hidden"] = self.cache.hidden_batch(pos, ids.shape[1], self.hidden_slots)
        else:  # the teacher runs online: it needs its own inputs
            batch["idx"] = torch.tensor(pos)
        return batch


# ---------------------------------------------------------------------------------------------------- run
def _student_from_stage(cfg: DistillConfig, ctx: StageContext, teacher: torch.nn.Module):
    """The student from an earlier stage's folder (e.g. general distillation), with this task's head."""
    folder = ctx.stage_folders.get(cfg.student_from)
    if folder is None:
        raise ModelError(f"student_from: stage {cfg.student_from!r} has no finished model for task {ctx.task}")
    task = ctx.data.task
    student = load_classifier(Path(folder), task.num_labels, task.labels)
    info = (read_json(Path(folder) / "lineage.json") or {}).get("info", {})
    n_teacher = teacher.config.num_hidden_layers
    layers = info.get("layers") or default_layers(n_teacher)
    if len(layers) != student.config.num_hidden_layers or max(layers) >= n_teacher:
        layers = default_layers(n_teacher)[:student.config.num_hidden_layers]
    return student, {"layers": layers, "num_layers": len(layers), "student_from": cfg.student_from,
                     "architecture": student.config.model_type, "init": "stage"}


def _save(model: torch.nn.Module, tokenizer_dir: Path, out: Path, ctx: StageContext) -> None:
    if ctx.is_main:
        model.save_pretrained(out, safe_serialization=True)
        save_student_tokenizer(tokenizer_dir, out, student_input_names(model))


def run(cfg: DistillConfig, parent: ModelFolder, ctx: StageContext, out: Path) -> dict:
    if cfg.objective == "mlm":
        return _run_mlm(cfg, parent, ctx, out)
    return _run_task(cfg, parent, ctx, out)


def _run_task(cfg: DistillConfig, parent: ModelFolder, ctx: StageContext, out: Path) -> dict:
    from transformers import AutoTokenizer

    task = ctx.data.task
    max_len = ctx.recipe.max_seq_length
    teacher = load_teacher(parent.path, stage=cfg.name)
    if teacher.config.num_labels != task.num_labels:
        raise ModelError(f"teacher {parent.path} has {teacher.config.num_labels} outputs but {task.name} needs "
                         f"{task.num_labels}: fine-tune it on the task first (a finetune stage before distill)")
    if cfg.student_from is not None:
        student, facts = _student_from_stage(cfg, ctx, teacher)
    else:
        arch, types = cfg.student_shape(len(task.text) == 2)
        student, facts = build_student(teacher, cfg.layers, cfg.num_layers, arch, cfg.init, seed=ctx.seed,
                                       token_types=types)
    with_types = "token_type_ids" in student_input_names(student)
    n_teacher = teacher.config.num_hidden_layers
    pairs = cosine_pairs(facts["layers"], n_teacher, cfg.cos_layers) if cfg.alpha_cos > 0 else []
    teacher_idx = sorted({t for _, t in pairs})
    cache_hidden = bool(pairs) and cfg.cache_hidden

    texts = training_texts(ctx.data, cfg.unlabeled)
    # The cache stores the union of the layers this stage and its sibling students (same parent and text) align:
    # one teacher pass per task for a whole sweep; when the union does not fit the budget, only this stage's.
    stored = shared_cache_layers(cfg, ctx.siblings, n_teacher, teacher_idx) if cache_hidden else []
    budget = _cache_budget(cfg, parent, texts, stored, ctx, say=stored == teacher_idx)
    if not budget["fits"] and stored != teacher_idx:
        ctx.log(f"{cfg.name}: a shared teacher cache for every sibling student's layers {stored} "
                f"(≈ {human_bytes(budget['estimate_bytes'])}) exceeds the budget: caching this stage's layers only")
        stored = teacher_idx
        budget = _cache_budget(cfg, parent, texts, stored, ctx)
    cache_hidden = budget.pop("fits") and cache_hidden
    cache_started = time.time()
    cache = teacher_outputs(parent.path, texts, max_len, ctx.cache_dir,
                            with_hidden=stored if cache_hidden else False,
                            batch_size=cfg.teacher_batch_size, accelerator=ctx.accelerator, note_in=ctx.work_dir)
    cache_seconds = time.time() - cache_started
    ctx.log(f"{cfg.name}: teacher outputs for {len(texts)} examples "
            f"{'read from' if cache.from_cache else 'written to'} {cache.path}")
    if not (pairs and not cache_hidden):
        del teacher  # the cache holds all the teacher has to say

    tokenizer = AutoTokenizer.from_pretrained(str(parent.path))
    encoded = glue.encode(texts, tokenizer, max_len, keep_idx=True)
    keep = ("input_ids", "attention_mask", "labels", "idx") + (("token_type_ids",) if with_types else ())
    encoded = encoded.remove_columns([c for c in encoded.column_names if c not in keep])
    slots = [cache.hidden_layers.index(t) for _, t in pairs] if cache_hidden else None
    collate = TaskCollator(tokenizer.pad_token_id or 0, cache, task.is_regression, slots, with_types)
    weights = cfg.loss_weights()
    student_idx = [s for s, _ in pairs]

    online = None
    if pairs and not cache_hidden:  # teacher hidden states computed each step
        teacher.to(ctx.accelerator.device)
        teacher_enc = glue.encode(texts, tokenizer, max_len, with_labels=False)
        online = (teacher, teacher_enc, tokenizer.pad_token_id or 0)

    def loss_fn(model, batch):
        mask = batch["attention_mask"]
        types = {"token_type_ids": batch["token_type_ids"]} if with_types else {}
        s_out = model(input_ids=batch["input_ids"], attention_mask=mask, **types, output_hidden_states=bool(pairs))
        hs = [s_out.hidden_states[i] for i in student_idx]
        if online is not None:
            ht = _online_teacher_hidden(online, batch["idx"].tolist(), mask.shape[1], [t for _, t in pairs])
        elif pairs:
            ht = [batch["teacher_hidden"][:, :, k].float() for k in range(len(pairs))]
        else:
            ht = []
        return task_distillation_loss(s_out.logits, batch["teacher_logits"], batch["labels"], weights, hs, ht, mask)

    ctx.log(f"{cfg.name}: distilling {parent.path.name} ({facts.get('teacher_layers', '?')} layers) into "
            f"{facts['architecture']} layers {facts['layers']} on {len(encoded)} {task.name} examples")
    result = train(student, encoded, loss_fn, training_args(cfg), ctx, collate_fn=collate,
                   desc=f"{cfg.name}/{task.name}")
    student.eval()
    tok_dir = Path(ctx.stage_folders[cfg.student_from]) if cfg.student_from else parent.path
    _save(student, tok_dir, out, ctx)
    facts.update({"objective": "task", "temperature": cfg.temperature,
                  "loss_weights": {"alpha_ce": cfg.alpha_ce, "alpha_hard": cfg.alpha_hard,
                                   "alpha_cos": cfg.alpha_cos},
                  "cos_pairs": pairs, "train_examples": len(ctx.data.train),
                  "unlabeled_examples": len(texts) - len(ctx.data.train),
                  "teacher_cache": {"key": cache.path.name, "reused": cache.from_cache,
                                    "hidden": cache_hidden, "hidden_layers": cache.hidden_layers,
                                    "seconds": round(cache_seconds, 1), **budget},
                  "steps": result.steps, "train_loss": round(result.loss, 5),
                  "train_seconds": round(result.seconds, 1), "resumed_from_step": result.resumed_from})
    return facts


def _cache_budget(cfg: DistillConfig, parent: ModelFolder, texts: Any, layers: list[int],
                  ctx: StageContext, say: bool = True) -> dict[str, Any]:
    """Before any work: the teacher cache's size on disk (one line), and whether its hidden states fit the recipe's
    `cache_budget_gb` (default half the free disk); when they do not, say so in one line: they are computed
    online during training instead (the teacher runs in the loop, no gradients; the logits are still cached).
    `say=False`: no line when they do not fit (the caller tries a smaller set of layers)."""
    max_len = ctx.recipe.max_seq_length
    if layers and existing_entry(parent.path, texts, max_len, ctx.cache_dir, layers, ctx.accelerator):
        return {"fits": True}  # already on disk: nothing to write
    est = estimate(parent.path, texts, max_len, layers, num_labels=ctx.data.task.num_labels)
    budget_gb = getattr(ctx.recipe, "cache_budget_gb", None)
    budget = main_decides(cache_budget_bytes(ctx.cache_dir, budget_gb), ctx.accelerator)
    fits = est.bytes <= budget or not layers
    where = "cache_budget_gb" if budget_gb is not None else "half the free disk"
    if say or fits:
        ctx.log(f"{cfg.name}: {est.line()}; budget {human_bytes(budget)} ({where})")
    if not fits and say:
        ctx.log(f"{cfg.name}: the teacher cache exceeds the budget: teacher hidden states are computed online "
                f"during training instead (the teacher runs each step, no gradients; its logits are still cached)")
    return {"fits": fits, "estimate_bytes": est.bytes, "budget_bytes": budget, "budget_fallback": not fits}


@torch.no_grad()
def _online_teacher_hidden(online, pos: list[int], width: int, layers: list[int]) -> list[torch.Tensor]:
    teacher, enc, pad_id = online
    rows = enc.select(pos)
    device = next(teacher.parameters()).device
    inputs = {}
    for name in enc.column_names:
        t = _pad([list(r) for r in rows[name]], pad_id if name == "input_ids" else 0)
        inputs[name] = torch.nn.functional.pad(t, (0, width - t.shape[1]), value=0).to(device)
    out = teacher(**inputs, output_hidden_states=True)
    return [out.hidden_states[k] for k in layers]


def _run_mlm(cfg: DistillConfig, parent: ModelFolder, ctx: StageContext, out: Path) -> dict:
    from transformers import AutoTokenizer

    teacher = load_teacher(parent.path, masked_lm=True, stage=cfg.name)
    arch, types = cfg.student_shape(False)
    student, facts = build_student(teacher, cfg.layers, cfg.num_layers, arch, cfg.init, seed=ctx.seed,
                                   token_types=types)
    n_teacher = teacher.config.num_hidden_layers
    pairs = cosine_pairs(facts["layers"], n_teacher, cfg.cos_layers) if cfg.alpha_cos > 0 else []
    tokenizer = AutoTokenizer.from_pretrained(str(parent.path), model_input_names=list(STUDENT_INPUT_NAMES))
    ds, collate = masked_lm_data(cfg.text_source, cfg.text_column, ctx.data, tokenizer, ctx.recipe.max_seq_length,
                                 cfg.mlm_probability)
    teacher.to(ctx.accelerator.device)
    weights = cfg.loss_weights()

    def loss_fn(model, batch):
        mask = batch["attention_mask"]
        with torch.no_grad():
            t_out = teacher(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=bool(pairs))
        s_out = model(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=bool(pairs))
        hs = [s_out.hidden_states[s] for s, _ in pairs]
        ht = [t_out.hidden_states[t] for _, t in pairs]
        return mlm_distillation_loss(s_out.logits, t_out.logits, batch["labels"], weights, hs, ht, mask,
                                     ce_positions=cfg.ce_positions)

    ctx.log(f"{cfg.name}: general distillation of {parent.path.name} into {facts['architecture']} layers "
            f"{facts['layers']} on {len(ds)} texts")
    result = train(student, ds, loss_fn, training_args(cfg), ctx, collate_fn=collate,
                   desc=f"{cfg.name}/{ctx.task}")
    student.eval()
    _save(student, parent.path, out, ctx)
    facts.update({"objective": "mlm", "temperature": cfg.temperature,
                  "loss_weights": {"alpha_ce": cfg.alpha_ce, "alpha_mlm": cfg.alpha_mlm,
                                   "alpha_cos": cfg.alpha_cos},
                  "ce_positions": cfg.ce_positions, "cos_pairs": pairs, "texts": len(ds),
                  "mlm_probability": cfg.mlm_probability,
                  "steps": result.steps, "train_loss": round(result.loss, 5),
                  "train_seconds": round(result.seconds, 1), "resumed_from_step": result.resumed_from,
                  "not_evaluated": "a masked-LM model has no task head: fine-tune or task-distil it to score it"})
    return facts
