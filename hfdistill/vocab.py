"""Vocabulary pruning (as in TextPruner): keep only the tokens a task's text uses, plus the special tokens.

On small models the word embeddings are a large part of the size (all-MiniLM-L6-v2: 30,522 × 384 = 11.7M of its
22.7M parameters), and head/FFN pruning does not touch them. Shrinking the vocabulary to the tokens that occur in
the task's text rewrites two things consistently:
  - the embedding matrix keeps the rows of the kept ids, in id order (so relative order is unchanged);
  - the tokenizer (a WordPiece `tokenizer.json` and `vocab.txt`) gets the same tokens with new, dense ids.
WordPiece tokenises greedily longest-match-first, so text whose pieces are all kept is tokenised into the same
pieces as before — the model's outputs on that text are unchanged (the stage checks it). Words made of dropped
pieces fall back to other pieces or to `[UNK]`; the stage reports how often that happens on the dev set.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from hfdistill.errors import ModelError

TOKENIZER_FILE = "tokenizer.json"
COPIED_FILES = ("tokenizer_config.json", "special_tokens_map.json")


def token_counts(tokenizer, texts: Iterable[tuple[str, Optional[str]]], batch_size: int = 1000) -> Counter:
    """How often each token id occurs in `texts` ((sentence, optional second sentence) pairs), untruncated."""
    counts: Counter = Counter()
    batch: list[tuple[str, Optional[str]]] = []

    def flush() -> None:
        singles = [a for a, b in batch if b is None]
        pairs = [(a, b) for a, b in batch if b is not None]
        encs = []
        if singles:
            encs.append(tokenizer(singles, truncation=False, add_special_tokens=False))
        if pairs:
            encs.append(tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation=False,
                                  add_special_tokens=False))
        for enc in encs:
            for ids in enc["input_ids"]:
                counts.update(ids)
        batch.clear()

    for pair in texts:
        batch.append(pair)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return counts


def kept_ids(tokenizer, counts: Counter, min_count: int = 1) -> list[int]:
    """The ids to keep, ascending: every special token, and every token seen at least `min_count` times."""
    special = set(tokenizer.all_special_ids)
    return sorted(special | {i for i, n in counts.items() if n >= min_count})


def _fast_tokenizer_json(src_dir: Path) -> dict:
    path = Path(src_dir) / TOKENIZER_FILE
    if not path.is_file():
        raise ModelError(f"{src_dir}: vocabulary pruning needs a fast tokenizer ({TOKENIZER_FILE})")
    data = json.loads(path.read_text(encoding="utf-8"))
    if (data.get("model") or {}).get("type") != "WordPiece":
        raise ModelError(f"{src_dir}: vocabulary pruning supports WordPiece tokenizers (BERT family), not "
                         f"{(data.get('model') or {}).get('type')}")
    return data


def write_tokenizer(src_dir: Path, kept: Sequence[int], out: Path) -> dict[int, int]:
    """Write the pruned tokenizer (tokenizer.json, vocab.txt, its config files) into `out`; returns old → new id."""
    data = _fast_tokenizer_json(src_dir)
    old_vocab: dict[str, int] = data["model"]["vocab"]
    by_id = {i: t for t, i in old_vocab.items()}
    remap = {old: new for new, old in enumerate(kept)}
    missing = [i for i in kept if i not in by_id]
    if missing:
        raise ModelError(f"{src_dir}: token ids {missing[:5]} are not in the tokenizer's vocabulary")
    data["model"]["vocab"] = {by_id[old]: new for old, new in remap.items()}
    for tok in data.get("added_tokens") or []:
        if tok["id"] not in remap:
            raise ModelError(f"{src_dir}: added token {tok['content']!r} was not kept")
        tok["id"] = remap[tok["id"]]
    for spec in ((data.get("post_processor") or {}).get("special_tokens") or {}).values():
        spec["ids"] = [remap[i] for i in spec["ids"]]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / TOKENIZER_FILE).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    (out / "vocab.txt").write_text("".join(by_id[old] + "\n" for old in kept), encoding="utf-8")
    for name in COPIED_FILES:
        if (Path(src_dir) / name).is_file():
            shutil.copyfile(Path(src_dir) / name, out / name)
    return remap


def shrink_embeddings(model: nn.Module, kept: Sequence[int], pad_id: Optional[int]) -> None:
    """Keep the rows `kept` of the input embeddings (in place); the config's vocab size and pad id follow."""
    old = model.get_input_embeddings()
    index = torch.tensor(list(kept), dtype=torch.long)
    new_pad = list(kept).index(pad_id) if pad_id is not None and pad_id in kept else None
    new = nn.Embedding(len(kept), old.embedding_dim, padding_idx=new_pad, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight[index])
    model.set_input_embeddings(new)
    model.config.vocab_size = len(kept)
    if new_pad is not None:
        model.config.pad_token_id = new_pad
