"""`hfdistill plan RECIPE`: what a run will do, before it does anything.

Per task and stage: the parent, the optimizer steps (the training loop's own formula, from max_steps or epochs ×
rows / batch size / processes), the teacher cache a distill stage will write (its estimate on disk) and whether the
recipe's `cache_budget_gb` makes it fall back to online teacher hidden states, a rough time, and the repo the model
will be published to. Nothing is trained or written: the data files are read and the base model's tokenizer counts
the tokens of a sample of rows (`SAMPLE_ROWS`), so a big task plans in seconds.

Times come from one cost constant: seconds per token per transformer layer of a forward pass at hidden size 384,
scaled by (hidden / 384)²; a training step costs `TRAIN_FACTOR` forwards. Measured on the development machine
(MiniLM-L6, batch 32 × 40 tokens, one CPU thread of a busy 2-core machine: 1.1e-4 s forward, 5.1× for a training
step). They are rough (a factor of 2–3 either way): other CPUs, thread counts, a GPU or short sequences change them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from hfdistill import glue
from hfdistill.distillation.student import cosine_pairs, default_layers, select_layers
from hfdistill.distillation.teacher_cache import (CacheEstimate, cache_budget_bytes, estimate, human_bytes,
                                                  mean_tokens)
from hfdistill.distillation.text import SPLIT_WORDS, load_text
from hfdistill.errors import ModelError
from hfdistill.recipe import Recipe, load_recipe
from hfdistill.schema import EMBEDDED
from hfdistill.stages.distill import shared_cache_layers, training_texts
from hfdistill.training import TrainingArgs

SAMPLE_ROWS = 1000
FORWARD_S_PER_TOKEN_LAYER = 1.1e-4   # at hidden size 384, one CPU thread (see the module docstring)
TRAIN_FACTOR = 5.0                   # a training step (forward + backward + AdamW) ≈ 5 forwards, measured
QUANTIZE_CHECK_ROWS = 512            # the quantize stage compares its model with the parent on these dev rows


@dataclass
class StagePlan:
    task: str
    stage: str
    kind: str
    parent: str                          # `model` (the base model) or an earlier stage
    layers: int                          # transformer layers of the model this stage makes
    hidden_size: int
    train_rows: Optional[int]            # rows one epoch goes over (None: the stage does not train)
    steps: Optional[int]                 # optimizer steps (None: the stage does not train)
    teacher_cache_bytes: Optional[int] = None   # distill/recovery: the estimate of what it writes to .cache
    teacher_cache_hidden_layers: int = 0
    budget_fallback: Optional[bool] = None      # True: hidden states computed online (over cache_budget_gb)
    seconds: float = 0.0                 # rough: training + teacher pass + evaluation
    repo_id: Optional[str] = None        # where it will be published (None: no publish section)
    notes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    recipe: str
    run_dir: str
    processes: int
    budget_bytes: int
    budget_source: str                   # `cache_budget_gb` or `half the free disk`
    tokens_per_row: dict[str, float]     # per task, train split (sampled)
    stages: list[StagePlan]
    variants: list[str] = field(default_factory=list)  # a sweep's variants, in the order they are explored

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    @property
    def cache_bytes(self) -> int:
        return sum(s.teacher_cache_bytes or 0 for s in self.stages)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 1), "cache_bytes": self.cache_bytes,
                "rough": "times are rough (one measured cost per token and layer; see hfdistill.planning)"}

    def lines(self) -> list[str]:
        out = [f"{self.recipe}: {len(self.stages)} model{'' if len(self.stages) == 1 else 's'} → {self.run_dir} "
               f"({self.processes} process"
               f"{'' if self.processes == 1 else 'es'}; teacher-cache budget {human_bytes(self.budget_bytes)}, "
               f"{self.budget_source})"]
        if self.variants:
            out.append(f"sweep: {len(self.variants)} variants ({', '.join(self.variants)}); shared stages run once")
        for s in self.stages:
            steps = f"{s.steps} steps over {s.train_rows} rows" if s.steps is not None else "no training"
            cache = ""
            if s.teacher_cache_bytes is not None:
                what = f"{s.teacher_cache_hidden_layers} hidden layers" if s.teacher_cache_hidden_layers else "logits"
                cache = f"; teacher cache ≈ {human_bytes(s.teacher_cache_bytes)} ({what})"
                if s.budget_fallback:
                    cache += " → over budget: hidden states online"
            repo = f"; → {s.repo_id}" if s.repo_id else ""
            layers = f"{s.layers} layer{'' if s.layers == 1 else 's'}"
            out.append(f"  [{s.task}] {s.stage} ({s.kind} from {s.parent}, {layers}): {steps}{cache}; "
                       f"~{_duration(s.seconds)}{repo}")
            out += [f"      {n}" for n in s.notes]
        out.append(f"total: ~{_duration(self.seconds)} (rough: one measured CPU cost per token and layer), teacher "
                   f"caches ≈ {human_bytes(self.cache_bytes)}")
        return out


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def steps_for(rows: int, args: TrainingArgs, processes: int = 1) -> int:
    """Optimizer steps of `training.train`: max_steps, else epochs × ceil(batches per process / accumulation),
    where each process gets ceil(ceil(rows / batch_size) / processes) batches (accelerate's even batches)."""
    if args.max_steps:
        return int(args.max_steps)
    per_process = math.ceil(math.ceil(rows / args.batch_size) / processes)
    per_epoch = max(1, math.ceil(per_process / args.gradient_accumulation_steps))
    return max(1, math.ceil(args.epochs * per_epoch))


def _cost(tokens: float, layers: int, hidden: int, factor: float = 1.0) -> float:
    return tokens * layers * factor * FORWARD_S_PER_TOKEN_LAYER * (hidden / 384) ** 2


def _base_folder(recipe: Recipe) -> Path:
    """The base model's folder (config + tokenizer); a Hub id fetches only those small files."""
    spec = recipe.base_model_path()
    if Path(spec).is_dir():
        return Path(spec)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec, allow_patterns=["*.json", "*.txt", "*.model"]))
    except Exception as e:  # offline, 404, auth…
        raise ModelError(f"model {spec!r}: cannot fetch its config and tokenizer ({type(e).__name__})") from None


def _args(cfg: Any) -> Optional[TrainingArgs]:
    if isinstance(cfg, TrainingArgs):
        return TrainingArgs(**{k: getattr(cfg, k) for k in TrainingArgs.model_fields})
    return None


def plan(recipe: Recipe | str | Path, processes: Optional[int] = None) -> Plan:
    """The plan of a recipe's run (see the module docstring); `processes` default: $WORLD_SIZE, else 1."""
    from transformers import AutoTokenizer

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    processes = int(processes or os.environ.get("WORLD_SIZE") or 1)
    base = _base_folder(recipe)
    base_cfg = json.loads((base / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    run_dir = Path(recipe.output_dir)
    budget = cache_budget_bytes(run_dir / ".cache", recipe.cache_budget_gb)
    publish = recipe.publish
    namespace = "local" if publish is not None and publish.endpoint == EMBEDDED else "<you>"
    stages: list[StagePlan] = []
    tokens_per_row: dict[str, float] = {}
    for task_name in recipe.tasks:
        data = glue.load_task(task_name, glue_dir=recipe.resolved_glue_dir(), hub_dataset=recipe.hub_dataset,
                              max_train_samples=recipe.max_train_samples, max_eval_samples=recipe.max_eval_samples,
                              seed=recipe.seed)
        task = data.task
        train_rows = len(data.train) if data.train is not None else 0
        tok, _ = mean_tokens(data.train if data.train is not None else data.dev, tokenizer, recipe.max_seq_length,
                             SAMPLE_ROWS, recipe.seed)
        tokens_per_row[task_name] = round(tok, 2)
        dev_tok, _ = mean_tokens(data.dev, tokenizer, recipe.max_seq_length, SAMPLE_ROWS, recipe.seed)
        dev_rows = len(data.dev) + sum(len(d) for d in data.extra_dev.values())
        # per model: (layers, hidden size, cost scale: what pruning left of each layer's work)
        cache_written: dict[tuple, str] = {}  # (parent, unlabeled, stored layers) → the stage whose pass writes it
        shapes: dict[Optional[str], tuple[int, int, float]] = {
            None: (int(base_cfg.get("num_hidden_layers") or 0), int(base_cfg.get("hidden_size") or 0), 1.0)}
        for i, cfg in enumerate(recipe.stages):
            cfg = cfg.for_task(task_name)
            parent = recipe.parent_of(i)
            n_parent, hidden, scale = shapes[parent]
            n_out, out_scale, args, rows, steps, notes = n_parent, scale, _args(cfg), train_rows, None, []
            seconds = 0.0
            cache: Optional[CacheEstimate] = None
            fallback = None
            shared_with: Optional[str] = None  # the sibling stage whose teacher-cache entry this one reads

            def train_cost(steps: Optional[int], layers: float, tokens: float = tok) -> float:
                batch = args.batch_size * args.gradient_accumulation_steps
                return _cost((steps or 0) * batch * tokens, layers, hidden)

            if cfg.kind == "distill":
                if cfg.student_from:
                    n_out = shapes[cfg.student_from][0]
                else:
                    n_out = len(cfg.layers) if cfg.layers else cfg.num_layers or len(default_layers(n_parent))
                out_scale = 1.0
                kept = (select_layers(n_parent, cfg.layers, cfg.num_layers) if not cfg.student_from
                        else default_layers(n_parent)[:n_out])
                pairs = cosine_pairs(kept, n_parent, cfg.cos_layers) if cfg.alpha_cos > 0 else []
                if cfg.objective == "mlm":  # the teacher runs in the loop (no cache)
                    texts = _mlm_texts(cfg, data)
                    rows = len(texts) if texts is not None else None
                    steps = _steps(rows, args, processes, notes, cfg)
                    seconds += train_cost(steps, n_out * TRAIN_FACTOR + n_parent * scale)
                else:
                    texts = training_texts(data, cfg.unlabeled)
                    rows = len(texts)
                    own = sorted({t for _, t in pairs}) if cfg.cache_hidden else []
                    stored = shared_cache_layers(cfg, recipe.siblings_of(i, task_name), n_parent, own) if own else []
                    cache = _estimate(base, texts, recipe.max_seq_length, hidden, stored, task.num_labels,
                                      tokenizer, recipe.seed)
                    if stored != own and cache.bytes > budget:  # the run falls back to this stage's layers
                        stored = own
                        cache = _estimate(base, texts, recipe.max_seq_length, hidden, stored, task.num_labels,
                                          tokenizer, recipe.seed)
                    fallback = bool(stored) and cache.bytes > budget
                    if fallback:
                        notes.append(f"the teacher cache with hidden states ({human_bytes(cache.bytes)}) exceeds the "
                                     f"budget: they will be computed online during training (logits cached)")
                        cache = _estimate(base, texts, recipe.max_seq_length, hidden, [], task.num_labels,
                                          tokenizer, recipe.seed)
                    steps = _steps(rows, args, processes, notes, cfg)
                    online = n_parent * scale if pairs and not stored or fallback else 0
                    entry = (parent, tuple(cfg.unlabeled), tuple(stored) if not fallback else ())
                    if entry in cache_written:  # an earlier sibling's teacher pass wrote it: read, not recomputed
                        shared_with = cache_written[entry]
                        notes.append(f"teacher cache shared with {shared_with} (no second teacher pass)")
                    else:
                        cache_written[entry] = cfg.name
                        seconds += _cost(rows / processes * cache.tokens_per_row, n_parent * scale, hidden)
                    seconds += train_cost(steps, n_out * TRAIN_FACTOR + online, cache.tokens_per_row)
            elif cfg.kind == "prune":
                frac = cfg.sparsity
                if frac is None:
                    frac = 0.5
                    notes.append("time assumes half the heads and FFN neurons removed (targets given as counts)")
                seconds += _cost(min(cfg.num_examples, max(train_rows, len(data.dev))) * tok * cfg.iterations,
                                 n_parent * scale, hidden, TRAIN_FACTOR)  # importance: forward + backward
                out_scale = scale * (1 - frac)
                args = _args(cfg.recover) if cfg.recover is not None else None
                if args is not None:
                    steps = _steps(rows, args, processes, notes, cfg)
                    cache = _estimate(base, data.train, recipe.max_seq_length, hidden, [], task.num_labels,
                                      tokenizer, recipe.seed)
                    seconds += _cost(rows / processes * tok, n_parent * scale, hidden)
                    seconds += train_cost(steps, n_out * out_scale * TRAIN_FACTOR)
            elif cfg.kind == "quantize":
                seconds += _cost(min(QUANTIZE_CHECK_ROWS, len(data.dev)) * dev_tok, n_parent * scale, hidden, 2)
                args = _args(cfg.recover) if cfg.recover is not None else None
                if args is not None:
                    rows = min(train_rows, cfg.recover.max_train_samples or train_rows)
                    if args.max_steps:  # only the rows training will see need the parent's logits
                        rows = min(rows, args.max_steps * args.batch_size * args.gradient_accumulation_steps
                                   * processes)
                    steps = _steps(rows, args, processes, notes, cfg)
                    cache = CacheEstimate(rows, tok, min(rows, SAMPLE_ROWS), task.num_labels, 0, hidden)
                    seconds += _cost(rows / processes * tok, n_parent * scale, hidden)
                    seconds += train_cost(steps, n_out * scale * TRAIN_FACTOR)
            elif args is not None:  # finetune, and any other kind that trains
                if getattr(cfg, "objective", "task") == "mlm":
                    texts = _mlm_texts(cfg, data)
                    rows = len(texts) if texts is not None else None
                steps = _steps(rows, args, processes, notes, cfg)
                seconds += train_cost(steps, n_out * scale * TRAIN_FACTOR)
            shapes[cfg.name] = (n_out, hidden, out_scale)
            seconds += _cost(dev_rows / processes * dev_tok + recipe.latency_samples * 4 * dev_tok,
                             n_out * out_scale, hidden)  # evaluation: dev scoring, latency passes
            repo = None
            if publish is not None:
                repo = publish.repo_id_for(cfg.name, task_name, recipe.name, cfg.repo_id, len(recipe.tasks), namespace)
            stages.append(StagePlan(
                task=task_name, stage=cfg.name, kind=cfg.kind, parent=parent or "model", layers=n_out,
                hidden_size=hidden, train_rows=rows if args is not None else None,
                steps=steps if args is not None else None,
                teacher_cache_bytes=cache.bytes if cache is not None and not shared_with else None,
                teacher_cache_hidden_layers=cache.hidden_layers if cache is not None and not shared_with else 0,
                budget_fallback=fallback, seconds=round(seconds, 3), repo_id=repo, notes=notes))
    return Plan(recipe=recipe.name, run_dir=str(run_dir), processes=processes, budget_bytes=budget,
                budget_source="cache_budget_gb" if recipe.cache_budget_gb is not None else "half the free disk",
                tokens_per_row=tokens_per_row, stages=stages,
                variants=[v.name for v in recipe.variants] if getattr(recipe, "sweep", None) else [])


def _steps(rows: Optional[int], args: TrainingArgs, processes: int, notes: list[str], cfg: Any) -> Optional[int]:
    if rows is None and not args.max_steps:
        notes.append(f"{cfg.name}: rows of its text not counted (a dataset or folder): steps unknown without "
                     f"max_steps")
        return None
    return steps_for(rows or 0, args, processes)


def _estimate(base: Path, texts: Any, max_len: int, hidden: int, stored: list[int], num_labels: int,
              tokenizer: Any, seed: int) -> CacheEstimate:
    est = estimate(base, texts, max_len, stored, num_labels=num_labels, sample=SAMPLE_ROWS, seed=seed,
                   tokenizer=tokenizer)
    return CacheEstimate(est.rows, est.tokens_per_row, est.sampled_rows, num_labels, len(stored), hidden)


def _mlm_texts(cfg: Any, data: glue.TaskData) -> Optional[list[str]]:
    source = getattr(cfg, "text_source", None)
    if source is None:
        return None
    if source in SPLIT_WORDS or Path(source).exists():
        return load_text(source, getattr(cfg, "text_column", "text"), data)
    return None
