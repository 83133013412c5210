"""The nine GLUE tasks: readers for the original TSV files (or `nyu-mll/glue` on the Hub), label maps, metrics.

Every reader returns `datasets.Dataset`s with the same columns: `idx`, `sentence1`, `sentence2` (None for
single-sentence tasks) and `label` (int class id, float score for STS-B, -1 / NaN for unlabeled test rows).
Files are read with quoting disabled: GLUE files contain stray quotes that a CSV quote parser would swallow.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from hfdistill.errors import DataError

csv.field_size_limit(1 << 24)


@dataclass(frozen=True)
class Task:
    """One GLUE task: where its files are, which columns hold the text and the label, and its metrics."""

    name: str                     # recipe name, also the `nyu-mll/glue` config name
    folder: str                   # folder in the original GLUE layout
    text: tuple[str, ...]         # header names of the text columns (1 or 2)
    label: Optional[str]          # header name of the label column (None: positional, CoLA)
    labels: Optional[tuple[str, ...]]  # class names in id order (HF glue order); None for regression
    metrics: tuple[str, ...]      # metric names, the first ones count for the task score
    score_metrics: tuple[str, ...]
    splits: dict[str, str] = field(default_factory=dict)  # split -> file name
    hub_text: tuple[str, ...] = ()  # column names in nyu-mll/glue

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def class_names(self) -> Optional[tuple[str, ...]]:
        """Names of the classes in id order, as `nyu-mll/glue` names them (the TSV files write 0/1 for some)."""
        return LABEL_NAMES.get(self.name, self.labels)

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return tuple(s for s in self.splits if s.startswith("dev"))


_STD = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
_BIN = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, Task] = {t.name: t for t in [
    Task("cola", "CoLA", ("sentence",), None, _BIN, ("matthews_correlation",), ("matthews_correlation",),
         _STD, ("sentence",)),
    Task("sst2", "SST-2", ("sentence",), "label", _BIN, ("accuracy",), ("accuracy",), _STD, ("sentence",)),
    Task("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", _BIN, ("accuracy", "f1"), ("accuracy", "f1"),
         _STD, ("sentence1", "sentence2")),
    Task("stsb", "STS-B", ("sentence1", "sentence2"), "score", None, ("pearson", "spearmanr"),
         ("pearson", "spearmanr"), _STD, ("sentence1", "sentence2")),
    Task("qqp", "QQP", ("question1", "question2"), "is_duplicate", _BIN, ("accuracy", "f1"), ("accuracy", "f1"),
         _STD, ("question1", "question2")),
    Task("mnli", "MNLI", ("sentence1", "sentence2"), "gold_label", ("entailment", "neutral", "contradiction"),
         ("accuracy", "accuracy_mismatched"), ("accuracy",),
         {"train": "train.tsv", "dev": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv",
          "test": "test_matched.tsv"}, ("premise", "hypothesis")),
    Task("qnli", "QNLI", ("question", "sentence"), "label", _NLI2, ("accuracy",), ("accuracy",), _STD,
         ("question", "sentence")),
    Task("rte", "RTE", ("sentence1", "sentence2"), "label", _NLI2, ("accuracy",), ("accuracy",), _STD,
         ("sentence1", "sentence2")),
    Task("wnli", "WNLI", ("sentence1", "sentence2"), "label", _BIN, ("accuracy",), ("accuracy",), _STD,
         ("sentence1", "sentence2")),
]}

#: Class names of the tasks whose files hold 0/1 (the ClassLabel names of `nyu-mll/glue`).
LABEL_NAMES = {"cola": ("unacceptable", "acceptable"), "sst2": ("negative", "positive"),
               "mrpc": ("not_equivalent", "equivalent"), "qqp": ("not_duplicate", "duplicate"),
               "wnli": ("not_entailment", "entailment")}

_HUB_SPLITS = {"train": "train", "dev": "validation", "dev_mismatched": "validation_mismatched", "test": "test"}
#: MNLI's splits in `nyu-mll/glue`: two dev and two test sets, no plain `validation`/`test`.
_HUB_SPLITS_MNLI = {**_HUB_SPLITS, "dev": "validation_matched", "test": "test_matched"}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise DataError(f"unknown GLUE task {name!r} (known: {', '.join(TASKS)})") from None


# ---------------------------------------------------------------------------------------------------- reading

def _rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:  # MRPC files start with a BOM
        return [row for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if row]


def _stream_rows(path: Path) -> Iterator[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:  # MRPC files start with a BOM
        yield from (row for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if row)


def read_split(task: Task, glue_dir: Path, split: str) -> dict[str, list]:
    """Read one split of a task from the original GLUE layout into columns; DataError names file and line.

    The file is read row by row, keeping only the text and label columns (MNLI's train.tsv holds 12 columns of
    parses and annotator labels per row)."""
    path = Path(glue_dir) / task.folder / task.splits[split]
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return _columns(task, path, split, _stream_rows(path))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read as UTF-8 TSV ({e})") from None


def _columns(task: Task, path: Path, split: str, rows: Iterator[list[str]]) -> dict[str, list]:
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path}: empty file")
    labeled = split != "test"
    if task.name == "cola" and labeled:  # no header: source, label, original label, sentence
        body, first_line = itertools.chain([first], rows), 1
        text_idx, label_idx, width = [3], 1, 4
    else:
        header, body, first_line = first, rows, 2
        try:
            text_idx = [header.index(c) for c in task.text]
            label_idx = header.index(task.label) if labeled else None
        except ValueError:
            wanted = list(task.text) + ([task.label] if labeled else [])
            raise DataError(f"{path}: header {header[:12]} lacks a column of {wanted}") from None
        width = len(header)
        if task.name == "mnli" and labeled:
            label_idx = -1  # gold_label is the last column
    cols: dict[str, list] = {"idx": [], "sentence1": [], "sentence2": [], "label": []}
    label_ids = {name: i for i, name in enumerate(task.labels or ())}
    for n, row in enumerate(body):
        line = n + first_line
        if len(row) != width:
            raise DataError(f"{path} line {line}: expected {width} tab-separated columns, found {len(row)}")
        if labeled:
            raw = row[label_idx].strip()
            if task.is_regression:
                try:
                    label: Any = float(raw)
                except ValueError:
                    raise DataError(f"{path} line {line}: score {raw!r} is not a number") from None
            elif raw in label_ids:
                label = label_ids[raw]
            else:
                raise DataError(f"{path} line {line}: label {raw!r} is not one of {list(task.labels)}")
        else:
            label = float("nan") if task.is_regression else -1
        cols["idx"].append(n)
        cols["sentence1"].append(row[text_idx[0]])
        cols["sentence2"].append(row[text_idx[1]] if len(text_idx) > 1 else None)
        cols["label"].append(label)
    return cols


def _to_dataset(cols: dict[str, list], task: Task):
    import datasets

    features = datasets.Features({
        "idx": datasets.Value("int64"),
        "sentence1": datasets.Value("string"),
        "sentence2": datasets.Value("string"),
        "label": datasets.Value("float32") if task.is_regression else datasets.Value("int64"),
    })
    return datasets.Dataset.from_dict(cols, features=features)


def _hub_split(task: Task, hub_dataset: str, split: str):
    import datasets

    name = (_HUB_SPLITS_MNLI if task.name == "mnli" else _HUB_SPLITS)[split]
    try:
        ds = datasets.load_dataset(hub_dataset, task.name, split=name)
    except Exception as e:  # network, missing config…: one line naming what failed
        raise DataError(f"hub_dataset {hub_dataset!r} ({task.name}/{name}): "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    cols = {"idx": list(range(len(ds))),
            "sentence1": ds[task.hub_text[0]],
            "sentence2": ds[task.hub_text[1]] if len(task.hub_text) > 1 else [None] * len(ds),
            "label": [(float("nan") if task.is_regression else -1) if split == "test" else v for v in ds["label"]]}
    return cols


@dataclass
class TaskData:
    """The splits of one task, limits applied. `dev` is the split every model is scored on."""

    task: Task
    dev: Any
    train: Any = None
    test: Any = None
    extra_dev: dict[str, Any] = field(default_factory=dict)  # MNLI: dev_mismatched
    source: str = ""

    def fingerprint(self, split: str = "train") -> str:
        ds = getattr(self, split)
        return "none" if ds is None else ds._fingerprint


def load_task(name: str, glue_dir: Optional[Path] = None, hub_dataset: Optional[str] = None,
              max_train_samples: Optional[int] = None, max_eval_samples: Optional[int] = None,
              seed: int = 42, splits: tuple[str, ...] = ("train", "dev", "test")) -> TaskData:
    """Load a task from a GLUE folder (default: $HFDISTILL_GLUE_DIR) or from `hub_dataset`.

    Training rows are a seeded random subset when `max_train_samples` is set; evaluation rows are the first
    `max_eval_samples` (the same rows for every model of a run, so scores compare).
    """
    task = get_task(name)
    if glue_dir is None and hub_dataset is None and os.environ.get("HFDISTILL_GLUE_DIR"):
        glue_dir = Path(os.environ["HFDISTILL_GLUE_DIR"])
    if glue_dir is None and hub_dataset is None:
        hub_dataset = "nyu-mll/glue"

    def read(split: str):
        if glue_dir is not None:
            path = Path(glue_dir) / task.folder / task.splits[split]
            if not path.is_file():
                return None
            return _to_dataset(read_split(task, Path(glue_dir), split), task)
        return _to_dataset(_hub_split(task, hub_dataset, split), task)

    wanted = [s for s in task.splits if s in splits or (s.startswith("dev") and "dev" in splits)]
    loaded = {s: read(s) for s in wanted}
    if loaded.get("dev") is None:
        where = Path(glue_dir) / task.folder if glue_dir is not None else hub_dataset
        raise DataError(f"{task.name}: no dev split found in {where} (expected {task.splits['dev']})")
    train = loaded.get("train")
    if train is not None and max_train_samples is not None and max_train_samples < len(train):
        train = train.shuffle(seed=seed).select(range(max_train_samples))
    dev_sets = {s: d for s, d in loaded.items() if s.startswith("dev") and d is not None}
    if max_eval_samples is not None:
        dev_sets = {s: d.select(range(min(max_eval_samples, len(d)))) for s, d in dev_sets.items()}
    return TaskData(task=task, dev=dev_sets.pop("dev"), train=train, test=loaded.get("test"),
                    extra_dev=dev_sets, source=str(glue_dir) if glue_dir is not None else f"hub:{hub_dataset}")


def check_glue_dir(glue_dir: Path) -> dict[str, Any]:
    """Row counts per split of every task found in `glue_dir`, and the problems found, for `data check`."""
    report: dict[str, Any] = {"glue_dir": str(glue_dir), "tasks": {}, "missing": [], "ok": True}
    for task in TASKS.values():
        folder = Path(glue_dir) / task.folder
        if not folder.is_dir():
            report["missing"].append(task.name)
            continue
        entry: dict[str, Any] = {"folder": str(folder), "splits": {}, "errors": []}
        for split, fname in task.splits.items():
            if not (folder / fname).is_file():
                entry["splits"][split] = None
                continue
            try:
                entry["splits"][split] = len(read_split(task, Path(glue_dir), split)["idx"])
            except DataError as e:
                entry["splits"][split] = None
                entry["errors"].append(str(e))
                report["ok"] = False
        report["tasks"][task.name] = entry
    if not report["tasks"]:
        report["ok"] = False
        report["problem"] = (f"no GLUE task found in {glue_dir}: expected one folder per task in the original GLUE "
                             f"layout, e.g. {Path(glue_dir) / 'SST-2'}/train.tsv and dev.tsv (folders: "
                             f"{', '.join(t.folder for t in TASKS.values())})")
    return report


# ---------------------------------------------------------------------------------------------------- metrics

def compute_metrics(task: Task | str, predictions: np.ndarray, labels: np.ndarray,
                    mismatched: Optional[tuple[np.ndarray, np.ndarray]] = None) -> dict[str, float]:
    """GLUE's metrics: predictions are class ids (or scores for STS-B)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    task = get_task(task) if isinstance(task, str) else task
    p, y = np.asarray(predictions), np.asarray(labels)
    out: dict[str, float] = {}
    if task.name == "cola":
        out["matthews_correlation"] = float(matthews_corrcoef(y, p))
    elif task.name == "stsb":
        out["pearson"] = float(pearsonr(p, y)[0])
        out["spearmanr"] = float(spearmanr(p, y)[0])
    else:
        out["accuracy"] = float(accuracy_score(y, p))
        if task.name in ("mrpc", "qqp"):
            out["f1"] = float(f1_score(y, p))
    if task.name == "mnli" and mismatched is not None:
        out["accuracy_mismatched"] = float(accuracy_score(np.asarray(mismatched[1]), np.asarray(mismatched[0])))
    return {k: (0.0 if math.isnan(v) else v) for k, v in out.items()}


def task_score(task: Task | str, metrics: dict[str, float]) -> float:
    """Mean of the task's scoring metrics (MNLI: matched accuracy only, as in the DistilBERT table)."""
    task = get_task(task) if isinstance(task, str) else task
    return float(np.mean([metrics[m] for m in task.score_metrics]))


def macro_score(task_scores: dict[str, float]) -> float:
    """GLUE macro score: mean of the task scores, ×100."""
    if not task_scores:
        raise ValueError("no task scores")
    return float(np.mean(list(task_scores.values())) * 100.0)


# ---------------------------------------------------------------------------------------------------- encoding

def encode(dataset, tokenizer, max_seq_length: int, with_labels: bool = True, keep_idx: bool = False):
    """Tokenise `sentence1`/`sentence2` (pairs where present) into model inputs plus `labels`."""

    def fn(batch):
        pair = batch["sentence2"] if any(s is not None for s in batch["sentence2"]) else None
        enc = tokenizer(batch["sentence1"], pair, truncation=True, max_length=max_seq_length)
        if with_labels:
            enc["labels"] = batch["label"]
        return enc

    keep = set(tokenizer.model_input_names) | ({"labels"} if with_labels else set()) | ({"idx"} if keep_idx else set())
    encoded = dataset.map(fn, batched=True, desc="tokenize", load_from_cache_file=False)
    return encoded.remove_columns([c for c in encoded.column_names if c not in keep])
