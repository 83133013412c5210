"""Raw text for the masked-LM objective (the MLM-head fit and general distillation) and its dynamic masking.

`text_source` names where the text comes from: a .txt file (one text per line), a folder of .txt files, a saved
`datasets` dataset, a .csv/.json/.jsonl/.parquet file (its `text_column`), or `train`/`test` (the task's own
sentences, both sentences of a pair).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from hfdistill import glue
from hfdistill.errors import DataError

SPLIT_WORDS = ("train", "test")


def resolve_recipe_path(value: str, base_dir: Optional[str]) -> str:
    """Paths in recipes are relative to the recipe file (the split keywords are kept as they are)."""
    if value in SPLIT_WORDS or base_dir is None:
        return value
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (Path(base_dir) / p).resolve())


def check_text_source(value: Optional[str], base_dir: Optional[str]) -> Optional[str]:
    """A recipe's `text_source`, resolved; a path that does not exist is refused (ValueError)."""
    if value is None:
        return value
    value = resolve_recipe_path(value, base_dir)
    if value not in SPLIT_WORDS and not Path(value).exists():
        raise ValueError(f"{value!r} not found")
    return value


def read_text_lines(path: Path) -> list[str]:
    return [line.rstrip("\n") for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def load_text(source: str, column: str, data: Optional[glue.TaskData] = None) -> list[str]:
    """Raw text: a file, a folder, a saved `datasets` dataset, or a task split."""
    if source in SPLIT_WORDS:
        ds = getattr(data, source, None) if data is not None else None
        if ds is None:
            raise DataError(f"text_source: the task has no {source} split")
        texts = [t for t in ds["sentence1"]] + [t for t in ds["sentence2"] if t]
        return [t for t in texts if t and t.strip()]
    path = Path(source)
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file():
            import datasets

            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds["train"] if "train" in ds else next(iter(ds.values()))
            return _column(ds, column, source)
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"text_source: {path} holds no .txt files and is not a saved dataset")
        return [line for f in files for line in read_text_lines(f)]
    suffix = path.suffix.lower()
    if suffix in (".csv", ".json", ".jsonl", ".parquet"):
        import datasets

        kind = {".jsonl": "json"}.get(suffix, suffix[1:])
        return _column(datasets.load_dataset(kind, data_files=str(path), split="train"), column, source)
    return read_text_lines(path)


def _column(ds: Any, column: str, source: str) -> list[str]:
    if column not in ds.column_names:
        raise DataError(f"text_source: {source} has no column {column!r} (columns: {ds.column_names})")
    return [t for t in ds[column] if isinstance(t, str) and t.strip()]


def masked_lm_data(source: str, column: str, data: Optional[glue.TaskData], tokenizer: Any, max_seq_length: int,
                   mlm_probability: float) -> tuple[Any, Any]:
    """(tokenised texts, collator) for masked-LM training.

    The collator (transformers' DataCollatorForLanguageModeling) draws the masks when a batch is made, so every
    epoch sees a fresh masking (dynamic masking, as RoBERTa and DistilBERT): 80% [MASK], 10% random, 10% kept.
    """
    import datasets
    from transformers import DataCollatorForLanguageModeling

    texts = load_text(source, column, data)
    if not texts:
        raise DataError(f"text_source: {source} holds no text")
    ds = datasets.Dataset.from_dict({"text": texts}).map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=max_seq_length, return_special_tokens_mask=True),
        batched=True, remove_columns=["text"], desc="tokenize", load_from_cache_file=False)
    keep = [c for c in ("input_ids", "attention_mask", "special_tokens_mask") if c in ds.column_names]
    ds = ds.select_columns(keep)
    return ds, DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability)
