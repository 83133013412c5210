"""`kind: vocab` — vocabulary pruning: keep only the tokens the task's text uses (see `hfdistill.vocab`).

The embedding matrix and the tokenizer are rewritten together; the stage then checks that the new model gives the
parent's outputs on the text the vocabulary was built from (exactly the same pieces, so the same logits), and
reports the size before/after and how much of the dev text now tokenises differently. The score before/after is
the parent's and this model's dev score (metrics.json of each; the card and the run summary compare them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, ValidationInfo, field_validator

from hfdistill import vocab
from hfdistill.errors import DataError, ModelError
from hfdistill.folder import ModelFolder
from hfdistill.models import load_classifier, load_tokenizer
from hfdistill.models.pruned_bert import save_pruned
from hfdistill.schema import resolve_path
from hfdistill.stages.base import StageConfig, StageContext

#: Examples of the vocabulary's own text on which the new model must reproduce the parent's logits.
CHECK_EXAMPLES = 64


class VocabConfig(StageConfig):
    """Keep only the vocabulary of the task's text (plus special tokens): a smaller embedding and tokenizer."""

    kind: Literal["vocab"] = "vocab"
    splits: list[Literal["train", "test"]] = Field(
        default_factory=lambda: ["train", "test"], min_length=0,
        description="Task splits whose text (no labels) decides the vocabulary. The dev split is left out: it "
                    "measures how the model copes with words it did not keep.")
    text_files: list[str] = Field(default_factory=list, description="More text, one example per line "
                                                                    "(relative to the recipe).")
    min_count: int = Field(default=1, ge=1, description="Keep a token seen at least this many times.")

    @field_validator("text_files")
    @classmethod
    def _files_exist(cls, v: list[str], info: ValidationInfo) -> list[str]:
        out = []
        for item in v:
            p = resolve_path(item, (info.context or {}).get("base_dir"))
            if not p.is_file():
                raise ValueError(f"text file {str(p)!r} not found")
            out.append(str(p))
        return out

    def needs_train_split(self) -> bool:
        return "train" in self.splits


def _texts(cfg: VocabConfig, ctx: StageContext) -> list[tuple[str, str | None]]:
    pairs: list[tuple[str, str | None]] = []
    for split in cfg.splits:
        ds = getattr(ctx.data, split)
        if ds is None:
            raise DataError(f"splits: {ctx.task} has no {split} split")
        pairs += list(zip(ds["sentence1"], ds["sentence2"]))
    for f in cfg.text_files:
        pairs += [(line, None) for line in Path(f).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not pairs:
        raise DataError(f"{cfg.name}: no text to build the vocabulary from (splits and text_files are empty)")
    return pairs


@torch.inference_mode()
def _logits(model, tokenizer, pairs, max_len: int) -> torch.Tensor:
    firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
    enc = tokenizer(firsts, seconds if any(s is not None for s in seconds) else None, truncation=True,
                    max_length=max_len, padding=True, return_tensors="pt")
    return model(**enc).logits.float()


def run(cfg: VocabConfig, parent: ModelFolder, ctx: StageContext, out: Path) -> dict:
    task = ctx.data.task
    model = load_classifier(parent.path, task.num_labels, task.labels, ctx.recipe.trust_remote_code,
                            require_trained=cfg.name).eval()
    tokenizer = load_tokenizer(parent.path)
    pairs = _texts(cfg, ctx)
    counts = vocab.token_counts(tokenizer, pairs)
    kept = vocab.kept_ids(tokenizer, counts, cfg.min_count)
    params_before = sum(p.numel() for p in model.parameters())
    vocab_before = model.get_input_embeddings().num_embeddings
    max_len = ctx.recipe.max_seq_length
    sample = pairs[:CHECK_EXAMPLES]
    before = _logits(model, tokenizer, sample, max_len)

    vocab.shrink_embeddings(model, kept, tokenizer.pad_token_id)
    vocab.write_tokenizer(parent.path, kept, out)
    new_tokenizer = load_tokenizer(out)
    after = _logits(model, new_tokenizer, sample, max_len)
    diff = float((before - after).abs().max())
    if diff > 1e-4 * max(1.0, float(before.abs().max())):
        raise ModelError(f"{cfg.name}: the pruned vocabulary changes the model's outputs on its own text (max "
                         f"|Δlogit| {diff:.2e} on {len(sample)} examples); the tokenizer cannot be pruned this way")

    dev_pairs = list(zip(ctx.data.dev["sentence1"], ctx.data.dev["sentence2"]))
    old_dev = vocab.token_counts(tokenizer, dev_pairs)
    unk = new_tokenizer.unk_token_id
    new_dev = vocab.token_counts(new_tokenizer, dev_pairs)
    if ctx.is_main:
        save_pruned(model, out)  # save_pretrained, plus the modeling file for a pruned architecture
    return {"vocab_before": vocab_before, "vocab_after": len(kept), "min_count": cfg.min_count,
            "text_examples": len(pairs), "splits": cfg.splits, "text_files": [Path(f).name for f in cfg.text_files],
            "params_before": params_before, "params_after": sum(p.numel() for p in model.parameters()),
            "check": {"examples": len(sample), "max_abs_diff": diff},
            "dev_tokens_before": sum(old_dev.values()), "dev_tokens_after": sum(new_dev.values()),
            "dev_unk_after": int(new_dev.get(unk, 0)), "dev_unk_before": int(old_dev.get(tokenizer.unk_token_id, 0))}
