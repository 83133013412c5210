"""Teacher-output cache: the teacher runs once over a dataset, every later epoch, stage and re-run reads the disk.

An entry is keyed by the teacher's content hash (config, weights, tokenizer), the data hash (the texts, in order),
`max_seq_length`, the hidden-state layers stored and the precision the teacher ran in; change any of them and the
key changes, so a stale entry is never read. A request for some hidden layers is also served by a complete entry of
the same teacher, data, length and precision that stores more (`find_entry`): the distill stage asks for the union
of the layers its sibling students align, so one teacher pass per task serves a whole sweep. An entry is a folder `cache_dir/teacher/<key>/`:

    logits.npy   [N, C] float32       the teacher's logits (T=1, eval mode)
    offsets.npy  [N+1] int64          example i's tokens are rows offsets[i]:offsets[i+1] of hidden.npy
    hidden.npy   [tokens, L, D] fp16  hidden states of the real (non-padding) tokens, L stored layers (optional)
    meta.json                        the key's parts; written last, so its presence marks a complete entry

The pass runs on `accelerator.device` under the run's mixed precision, sharded over the processes: the examples
are sorted by length, cut into batches, and process r computes batches r, r+P, r+2P… (similar work for each).
Every process writes its hidden rows straight into the one preallocated `hidden.npy` (disjoint rows) and its
logits into a shard file; the main process joins the logits and renames the finished entry. The run folder must
therefore be on a filesystem every process sees (as for checkpoints).

`hidden.npy` is memory-mapped: a batch reads only its own examples and layers, in fp16 (cast per batch on the
device), so a large training set does not fill RAM. `estimate` gives an entry's size before any work, from a
token count over a sample of rows; the distill stage compares it with the recipe's `cache_budget_gb`.
Used by the distill stage and by prune/quantize recovery (any stage that needs soft targets).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from hfdistill.folder import weight_files, write_json
from hfdistill.glue import encode
from hfdistill.models import load_model

CACHE_VERSION = 2  # 2: the key names the precision the teacher ran in; the pass is sharded over processes
NOTE_FILE = "teacher_cache.json"  # in an unfinished stage's work folder: the entries it reads (`hfdistill cache`)
_MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                "merges.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")
_NPY_HEADER = 128  # bytes of a .npy header (numpy pads it to 64-byte multiples; 128 for these shapes)
_META_BYTES = 450  # meta.json: hashes, the teacher's path, the layers


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

    def hidden_batch(self, positions: Sequence[int], seq_len: int,
                     slots: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Hidden states of `positions` padded to `seq_len`: [B, seq_len, k, D] float16 (zeros at padding), the
        stored layers `slots` (indices into `hidden_layers`; default all). Only these rows and layers are read."""
        if self.hidden is None or self.offsets is None:
            raise ValueError("this cache entry holds no hidden states")
        slots = list(range(self.hidden.shape[1])) if slots is None else list(slots)
        out = torch.zeros(len(positions), seq_len, len(slots), self.hidden.shape[2], dtype=torch.float16)
        for b, i in enumerate(positions):
            a, z = int(self.offsets[i]), int(self.offsets[i + 1])
            n = min(z - a, seq_len)
            out[b, :n] = torch.from_numpy(np.ascontiguousarray(self.hidden[a:a + n][:, slots]))
        return out


@dataclass(frozen=True)
class CacheEstimate:
    """The size of a cache entry before it exists: rows × tokens × what is stored."""

    rows: int
    tokens_per_row: float        # mean real tokens per example (truncated), from a sample of rows
    sampled_rows: int
    num_labels: int
    hidden_layers: int           # layers stored (0: logits only)
    hidden_size: int

    @property
    def tokens(self) -> int:
        return int(round(self.rows * self.tokens_per_row))

    @property
    def hidden_bytes(self) -> int:
        return self.tokens * self.hidden_layers * self.hidden_size * 2 + _NPY_HEADER if self.hidden_layers else 0

    @property
    def bytes(self) -> int:
        logits = self.rows * self.num_labels * 4 + _NPY_HEADER
        offsets = (self.rows + 1) * 8 + _NPY_HEADER if self.hidden_layers else 0
        return logits + offsets + self.hidden_bytes + _META_BYTES

    def line(self) -> str:
        what = (f"{self.hidden_layers} hidden layers × {self.hidden_size} × 2 B" if self.hidden_layers
                else "logits only")
        return (f"teacher cache ≈ {human_bytes(self.bytes)} ({self.rows} rows × {self.tokens_per_row:.1f} tokens "
                f"× {what})")


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


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


def cache_key(teacher_hash: str, dhash: str, max_seq_length: int, hidden_layers: Sequence[int],
              precision: str = "no") -> str:
    parts = {"v": CACHE_VERSION, "teacher": teacher_hash, "data": dhash, "max_seq_length": int(max_seq_length),
             "hidden_layers": [int(i) for i in hidden_layers], "precision": precision}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _resolve_layers(with_hidden: Union[bool, Sequence[int]], num_layers: int) -> list[int]:
    if with_hidden is True:
        return list(range(1, num_layers + 1))
    if not with_hidden:
        return []
    return [int(i) for i in with_hidden]


def _config(teacher_dir: Path) -> dict:
    return json.loads((Path(teacher_dir) / "config.json").read_text())


def _num_layers(teacher_dir: Path) -> int:
    cfg = _config(teacher_dir)
    return int(cfg.get("num_hidden_layers") or cfg.get("n_layers") or 0)


def _precision(accelerator: Any) -> str:
    return str(getattr(accelerator, "mixed_precision", None) or "no") if accelerator is not None else "no"


def entry_path(teacher_dir: Path, dataset: Any, max_seq_length: int, cache_dir: Path,
               with_hidden: Union[bool, Sequence[int]] = False, accelerator: Any = None) -> Path:
    """The folder the entry for these inputs has (complete when it holds meta.json); computes nothing."""
    layers = _resolve_layers(with_hidden, _num_layers(Path(teacher_dir)))
    key = cache_key(folder_hash(Path(teacher_dir)), data_hash(dataset), max_seq_length, layers,
                    _precision(accelerator))
    return Path(cache_dir) / "teacher" / key


def is_complete(entry: Path) -> bool:
    return (Path(entry) / "meta.json").is_file()


def find_entry(cache_dir: Path, teacher_hash: str, dhash: str, max_seq_length: int, layers: Sequence[int],
               precision: str = "no") -> Optional[Path]:
    """A complete entry that holds these outputs, or None: the key's own entry, else the smallest entry of the same
    teacher, data, length and precision whose hidden states include `layers` (one a sibling stage wrote for the
    union of the layers a sweep's students align, so one teacher pass serves them all)."""
    exact = Path(cache_dir) / "teacher" / cache_key(teacher_hash, dhash, max_seq_length, layers, precision)
    if is_complete(exact):
        return exact
    found: list[tuple[int, str, Path]] = []
    for meta_file in (Path(cache_dir) / "teacher").glob("*/meta.json"):
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            continue
        stored = [int(i) for i in meta.get("hidden_layers") or []]
        if (meta.get("version") == CACHE_VERSION and meta.get("teacher_hash") == teacher_hash
                and meta.get("data_hash") == dhash and meta.get("max_seq_length") == int(max_seq_length)
                and meta.get("precision", "no") == precision and set(layers) <= set(stored)):
            found.append((len(stored), meta_file.parent.name, meta_file.parent))
    return min(found)[2] if found else None


def existing_entry(teacher_dir: Path, dataset: Any, max_seq_length: int, cache_dir: Path,
                   with_hidden: Union[bool, Sequence[int]] = False, accelerator: Any = None) -> Optional[Path]:
    """The complete entry `teacher_outputs` would read for these inputs (see `find_entry`), or None."""
    layers = _resolve_layers(with_hidden, _num_layers(Path(teacher_dir)))
    return find_entry(cache_dir, folder_hash(Path(teacher_dir)), data_hash(dataset), max_seq_length, layers,
                      _precision(accelerator))


def estimate(teacher_dir: Path, dataset: Any, max_seq_length: int, with_hidden: Union[bool, Sequence[int]] = False,
             num_labels: Optional[int] = None, sample: int = 1000, seed: int = 0,
             tokenizer: Any = None) -> CacheEstimate:
    """The size on disk of the entry `teacher_outputs` would write, before any work: the real tokenizer over a
    seeded sample of `sample` rows (all rows when fewer) gives the tokens per row. `num_labels`: the teacher's
    outputs (default: its config's). `teacher_dir` needs only config.json (and the tokenizer, unless given)."""
    from transformers import AutoTokenizer

    cfg = _config(Path(teacher_dir))
    layers = _resolve_layers(with_hidden, _num_layers(Path(teacher_dir)))
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(teacher_dir))
    per_row, sampled = mean_tokens(dataset, tokenizer, max_seq_length, sample, seed)
    num_labels = int(num_labels or len(cfg.get("id2label") or {}) or 2)
    return CacheEstimate(rows=len(dataset), tokens_per_row=per_row, sampled_rows=sampled, num_labels=num_labels,
                         hidden_layers=len(layers), hidden_size=int(cfg.get("hidden_size") or cfg.get("dim") or 0))


def mean_tokens(dataset: Any, tokenizer: Any, max_seq_length: int, sample: int = 1000,
                seed: int = 0) -> tuple[float, int]:
    """Mean tokens per example (truncated to `max_seq_length`, as the model sees them) over a seeded sample of
    rows; returns (mean, rows sampled)."""
    n = len(dataset)
    if n == 0:
        return 0.0, 0
    rows = np.random.default_rng(seed).choice(n, size=sample, replace=False) if n > sample else np.arange(n)
    part = dataset.select(sorted(int(i) for i in rows))
    s2 = list(part["sentence2"]) if "sentence2" in part.column_names else None
    pair = s2 if s2 is not None and any(x is not None for x in s2) else None
    enc = tokenizer(list(part["sentence1"]), pair, truncation=True, max_length=max_seq_length)
    return float(np.mean([len(x) for x in enc["input_ids"]])), len(part)


def cache_budget_bytes(cache_dir: Path, budget_gb: Optional[float]) -> int:
    """The recipe's `cache_budget_gb` in bytes, or half the free space of the filesystem holding `cache_dir`."""
    if budget_gb is not None:
        return int(budget_gb * 1e9)
    path = Path(cache_dir).resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free // 2


def _load(entry: Path, from_cache: bool) -> TeacherOutputs:
    meta = json.loads((entry / "meta.json").read_text())
    logits = torch.from_numpy(np.load(entry / "logits.npy"))
    hidden = offsets = None
    if meta["hidden_layers"]:
        offsets = np.load(entry / "offsets.npy")
        hidden = np.load(entry / "hidden.npy", mmap_mode="r")
    return TeacherOutputs(logits, offsets, hidden, list(meta["hidden_layers"]), entry, from_cache)


def main_decides(value: Any, accelerator: Any) -> Any:
    """The main process' `value` on every process (a decision all must share, e.g. one read from the disk)."""
    if accelerator is None or accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box)
    return box[0]


def _flat_column(dataset: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A list column of a `datasets.Dataset` as (all values in one array of the column's own integer type, e.g.
    int8 for attention masks; offsets [N+1] from 0)."""
    if getattr(dataset, "_indices", None) is not None:
        dataset = dataset.flatten_indices()
    col = dataset.data.column(name).combine_chunks()
    values = col.flatten().to_numpy(zero_copy_only=False)
    offsets = col.offsets.to_numpy().astype(np.int64)
    return values, offsets - offsets[0]


def _shared_tmp(entry: Path, accelerator: Any) -> Path:
    """One temporary folder for all processes (named by the main process' pid)."""
    return entry.with_name(f"{entry.name}.tmp-{main_decides(os.getpid(), accelerator)}")


def _barrier(accelerator: Any) -> None:
    if accelerator is not None:
        accelerator.wait_for_everyone()


@torch.inference_mode()
def _compute(teacher_dir: Path, dataset: Any, max_seq_length: int, layers: list[int], entry: Path,
             meta: dict, batch_size: int, accelerator: Any = None) -> None:
    from transformers import AutoTokenizer

    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    main = rank == 0
    device = accelerator.device if accelerator is not None else torch.device("cpu")
    autocast = accelerator.autocast if accelerator is not None else contextlib.nullcontext  # the run's precision
    tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
    teacher = load_model(Path(teacher_dir))
    teacher.eval()
    teacher.requires_grad_(False)
    teacher.to(device)
    enc = encode(dataset, tokenizer, max_seq_length, with_labels=False)
    names = [n for n in tokenizer.model_input_names if n in enc.column_names]
    cols = {n: _flat_column(enc, n) for n in names}  # one flat array per input: no Python list per example
    offsets = cols["input_ids"][1]
    lengths = np.diff(offsets)
    n = len(lengths)
    dim = int(teacher.config.hidden_size)

    tmp = _shared_tmp(entry, accelerator)
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if layers:  # preallocated (sparse) for every process to fill its own rows
            np.lib.format.open_memmap(tmp / "hidden.npy", mode="w+", dtype=np.float16,
                                      shape=(int(offsets[-1]), len(layers), dim)).flush()
    _barrier(accelerator)
    hidden = np.load(tmp / "hidden.npy", mmap_mode="r+") if layers else None
    num_labels = int(getattr(teacher.config, "num_labels", 1))
    order = np.argsort(-lengths, kind="stable")  # similar lengths together: little padding
    batches = [order[s:s + batch_size] for s in range(0, n, batch_size)][rank::world]  # this process' share
    mine = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    logits = np.zeros((n, num_labels), dtype=np.float32)
    pad_id = tokenizer.pad_token_id or 0
    for idx in batches:
        width = int(lengths[idx].max())
        batch = {}
        for name in names:
            t = np.full((len(idx), width), pad_id if name == "input_ids" else 0, dtype=np.int64)
            values = cols[name][0]
            for b, i in enumerate(idx):
                t[b, :lengths[i]] = values[offsets[i]:offsets[i + 1]]
            batch[name] = torch.from_numpy(t).to(device)
        with autocast():
            out = teacher(**batch, output_hidden_states=bool(layers))
        logits[idx] = out.logits.float().cpu().numpy()
        if layers:
            stacked = torch.stack([out.hidden_states[k] for k in layers], dim=2).to(torch.float16).cpu().numpy()
            for b, i in enumerate(idx):
                hidden[offsets[i]:offsets[i + 1]] = stacked[b, :lengths[i]]
    np.save(tmp / f"logits-{rank}.npy", logits[mine])
    np.save(tmp / f"positions-{rank}.npy", mine)
    if hidden is not None:
        hidden.flush()
        del hidden
    _barrier(accelerator)
    if main:
        shares = []
        for r in range(world):  # join the shards of the logits
            pos = np.load(tmp / f"positions-{r}.npy")
            logits[pos] = np.load(tmp / f"logits-{r}.npy")
            shares.append(len(pos))
            (tmp / f"positions-{r}.npy").unlink()
            (tmp / f"logits-{r}.npy").unlink()
        np.save(tmp / "logits.npy", logits)
        if layers:
            np.save(tmp / "offsets.npy", offsets)
        meta = {**meta, "processes": world, "examples_per_process": shares}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")  # last: marks the entry complete
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
    _barrier(accelerator)


def teacher_outputs(teacher_dir: Path, dataset: Any, max_seq_length: int, cache_dir: Path,
                    with_hidden: Union[bool, Sequence[int]] = False, batch_size: int = 64,
                    accelerator: Any = None, note_in: Optional[Path] = None) -> TeacherOutputs:
    """The teacher's logits (and hidden states) for every example of `dataset`, from the cache or computed now.

    `dataset` has GLUE columns (`sentence1`, `sentence2`); it is tokenised with the teacher's own tokenizer,
    truncated to `max_seq_length`. `with_hidden`: False (logits only), True (every layer's output) or a list of
    hidden-state indices (0 = embedding output, k = output of layer k-1). The teacher runs in eval mode without
    gradients, on `accelerator.device` in its mixed precision; under `accelerate launch` every process computes
    its share of the batches, then all read the whole entry. `note_in` (a stage's work folder) records the key,
    so that `hfdistill cache` counts the entry as in use while the stage is unfinished.
    """
    teacher_dir = Path(teacher_dir)
    layers = _resolve_layers(with_hidden, _num_layers(teacher_dir))
    thash, dhash, precision = folder_hash(teacher_dir), data_hash(dataset), _precision(accelerator)
    key = cache_key(thash, dhash, max_seq_length, layers, precision)
    entry = Path(cache_dir) / "teacher" / key
    meta = {"version": CACHE_VERSION, "teacher": str(teacher_dir), "teacher_hash": thash, "data_hash": dhash,
            "max_seq_length": int(max_seq_length), "hidden_layers": layers, "precision": precision,
            "num_examples": len(dataset)}
    main = accelerator is None or accelerator.is_main_process
    found = find_entry(cache_dir, thash, dhash, max_seq_length, layers, precision) if main else None
    found = main_decides(None if found is None else str(found), accelerator)
    entry = Path(found) if found is not None else entry
    if main and note_in is not None:
        _note(Path(note_in), entry.name)
    if found is None:
        _compute(teacher_dir, dataset, max_seq_length, layers, entry, meta, batch_size, accelerator)
    if not is_complete(entry):
        raise RuntimeError(f"teacher cache entry {entry} missing after it was computed")
    return _load(entry, found is not None)


def _note(work_dir: Path, key: str) -> None:
    path = work_dir / NOTE_FILE
    try:
        keys = json.loads(path.read_text())["keys"] if path.is_file() else []
    except (ValueError, KeyError):
        keys = []
    if key not in keys:
        work_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, {"keys": keys + [key]})
