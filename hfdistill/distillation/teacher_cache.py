"""Teacher-output cache: the teacher runs once over a dataset, every later epoch, stage and re-run reads the disk.

An entry is keyed by the teacher's content hash (config, weights, tokenizer), the data hash (the texts, in order),
`max_seq_length` and the hidden-state layers stored; change any of them and the key changes, so a stale entry is
never read. An entry is a folder `cache_dir/teacher/<key>/`:

    logits.npy   [N, C] float32       the teacher's logits (T=1, eval mode)
    offsets.npy  [N+1] int64          example i's tokens are rows offsets[i]:offsets[i+1] of hidden.npy
    hidden.npy   [tokens, L, D] fp16  hidden states of the real (non-padding) tokens, L stored layers (optional)
    meta.json                        the key's parts; written last, so its presence marks a complete entry

`hidden.npy` is memory-mapped: a batch reads only its own examples, so a large training set does not fill RAM.
Used by the distill stage and by prune/quantize recovery (any stage that needs soft targets).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from hfdistill.folder import weight_files
from hfdistill.glue import encode
from hfdistill.models import load_model

CACHE_VERSION = 1
_MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                "merges.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")


@dataclass
class TeacherOutputs:
    """The teacher's outputs for every example of a dataset, by position (0..N-1)."""

    logits: torch.Tensor                      # [N, C] float32
    offsets: Optional[np.ndarray]             # [N+1] int64, or None without hidden states
    hidden: Optional[np.ndarray]              # memmap [tokens, L, D] float16, or None
    hidden_layers: list[int]                  # teacher hidden-state indices stored (0 = embedding output)
    path: Path
    from_cache: bool                          # True when read from disk, False when the teacher ran now

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    def hidden_batch(self, positions: Sequence[int], seq_len: int) -> torch.Tensor:
        """Hidden states of `positions` padded to `seq_len`: [B, seq_len, L, D] float32 (zeros at padding)."""
        if self.hidden is None or self.offsets is None:
            raise ValueError("this cache entry holds no hidden states")
        L, D = self.hidden.shape[1], self.hidden.shape[2]
        out = torch.zeros(len(positions), seq_len, L, D)
        for b, i in enumerate(positions):
            a, z = int(self.offsets[i]), int(self.offsets[i + 1])
            n = min(z - a, seq_len)
            out[b, :n] = torch.from_numpy(np.asarray(self.hidden[a:a + n], dtype=np.float32))
        return out


def folder_hash(path: Path) -> str:
    """Content hash of a model folder: config, weight files and tokenizer files (not metrics, card or lineage)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path / f for f in _MODEL_FILES if (path / f).is_file()] + weight_files(path)
    for f in sorted(set(files)):
        h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


def data_hash(dataset: Any) -> str:
    """Hash of the texts of a dataset with `sentence1`/`sentence2` columns, in order (labels do not matter)."""
    h = hashlib.sha256()
    s2 = dataset["sentence2"] if "sentence2" in dataset.column_names else [None] * len(dataset)
    for a, b in zip(dataset["sentence1"], s2):
        h.update(json.dumps([a, b]).encode() + b"\n")
    return h.hexdigest()


def cache_key(teacher_hash: str, dhash: str, max_seq_length: int, hidden_layers: Sequence[int]) -> str:
    parts = {"v": CACHE_VERSION, "teacher": teacher_hash, "data": dhash, "max_seq_length": int(max_seq_length),
             "hidden_layers": [int(i) for i in hidden_layers]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _resolve_layers(with_hidden: Union[bool, Sequence[int]], num_layers: int) -> list[int]:
    if with_hidden is True:
        return list(range(1, num_layers + 1))
    if not with_hidden:
        return []
    return [int(i) for i in with_hidden]


def _num_layers(teacher_dir: Path) -> int:
    cfg = json.loads((Path(teacher_dir) / "config.json").read_text())
    return int(cfg.get("num_hidden_layers") or cfg.get("n_layers") or 0)


def _load(entry: Path, from_cache: bool) -> TeacherOutputs:
    meta = json.loads((entry / "meta.json").read_text())
    logits = torch.from_numpy(np.load(entry / "logits.npy"))
    hidden = offsets = None
    if meta["hidden_layers"]:
        offsets = np.load(entry / "offsets.npy")
        hidden = np.load(entry / "hidden.npy", mmap_mode="r")
    return TeacherOutputs(logits, offsets, hidden, list(meta["hidden_layers"]), entry, from_cache)


@torch.inference_mode()
def _compute(teacher_dir: Path, dataset: Any, max_seq_length: int, layers: list[int], entry: Path,
             meta: dict, batch_size: int) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
    teacher = load_model(Path(teacher_dir))
    teacher.eval()
    teacher.requires_grad_(False)
    enc = encode(dataset, tokenizer, max_seq_length, with_labels=False)
    names = [n for n in tokenizer.model_input_names if n in enc.column_names]
    cols = {n: enc[n] for n in names}
    lengths = np.array([len(x) for x in cols["input_ids"]], dtype=np.int64)
    n = len(lengths)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])

    tmp = entry.with_name(f"{entry.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    hidden = None
    if layers:
        dim = int(teacher.config.hidden_size)
        hidden = np.lib.format.open_memmap(tmp / "hidden.npy", mode="w+", dtype=np.float16,
                                           shape=(int(offsets[-1]), len(layers), dim))
    logits = None
    order = np.argsort(-lengths, kind="stable")  # similar lengths together: little padding
    pad_id = tokenizer.pad_token_id or 0
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        width = int(lengths[idx].max())
        batch = {}
        for name in names:
            fill = pad_id if name == "input_ids" else 0
            t = torch.full((len(idx), width), fill, dtype=torch.long)
            for b, i in enumerate(idx):
                t[b, :lengths[i]] = torch.tensor(cols[name][i])
            batch[name] = t
        out = teacher(**batch, output_hidden_states=bool(layers))
        if logits is None:
            logits = np.zeros((n, out.logits.shape[-1]), dtype=np.float32)
        logits[idx] = out.logits.float().numpy()
        if layers:
            stacked = torch.stack([out.hidden_states[k] for k in layers], dim=2).to(torch.float16).numpy()
            for b, i in enumerate(idx):
                hidden[offsets[i]:offsets[i + 1]] = stacked[b, :lengths[i]]
    if logits is None:
        logits = np.zeros((0, int(getattr(teacher.config, "num_labels", 1))), dtype=np.float32)
    np.save(tmp / "logits.npy", logits)
    if layers:
        hidden.flush()
        del hidden
        np.save(tmp / "offsets.npy", offsets)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")  # last: marks the entry complete
    shutil.rmtree(entry, ignore_errors=True)
    os.replace(tmp, entry)


def teacher_outputs(teacher_dir: Path, dataset: Any, max_seq_length: int, cache_dir: Path,
                    with_hidden: Union[bool, Sequence[int]] = False, batch_size: int = 64,
                    accelerator: Any = None) -> TeacherOutputs:
    """The teacher's logits (and hidden states) for every example of `dataset`, from the cache or computed now.

    `dataset` has GLUE columns (`sentence1`, `sentence2`); it is tokenised with the teacher's own tokenizer,
    truncated to `max_seq_length`. `with_hidden`: False (logits only), True (every layer's output) or a list of
    hidden-state indices (0 = embedding output, k = output of layer k-1). The teacher runs in eval mode without
    gradients. Under `accelerate launch` the main process computes the entry while the others wait, then all read it.
    """
    teacher_dir = Path(teacher_dir)
    layers = _resolve_layers(with_hidden, _num_layers(teacher_dir))
    thash, dhash = folder_hash(teacher_dir), data_hash(dataset)
    key = cache_key(thash, dhash, max_seq_length, layers)
    entry = Path(cache_dir) / "teacher" / key
    meta = {"version": CACHE_VERSION, "teacher": str(teacher_dir), "teacher_hash": thash, "data_hash": dhash,
            "max_seq_length": int(max_seq_length), "hidden_layers": layers, "num_examples": len(dataset)}

    def ready() -> bool:
        return (entry / "meta.json").is_file()

    if accelerator is None:
        if ready():
            return _load(entry, True)
        _compute(teacher_dir, dataset, max_seq_length, layers, entry, meta, batch_size)
        return _load(entry, False)
    computed = False
    with accelerator.main_process_first():
        if not ready():
            if not accelerator.is_main_process:  # the main process failed to write it
                raise RuntimeError(f"teacher cache entry {entry} missing after the main process computed it")
            _compute(teacher_dir, dataset, max_seq_length, layers, entry, meta, batch_size)
            computed = True
    return _load(entry, not computed)
