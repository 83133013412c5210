"""Small classifiers with trained heads for the compression tests, and checks that they are what those tests need.

A random classification head makes agreement tests vacuous (near-constant predictions, margins of noise), so the
compression tests use tiny BERTs fitted to SST-2 for a few seconds: a word-level vocabulary of the most frequent
training words, 64 hidden units, head size 32 (sizes the 4-bit kernels take), about 70 % dev accuracy. One of
them is a pruned architecture with an empty layer (no heads, no FFN neurons), trained as such, so quantizers
can be checked on weightless linear layers with a head that means something.

Builders are cached per process (`functools.lru_cache`) and on disk under $HFDISTILL_TEST_CACHE (default
~/.cache/hfdistill-tests/compression-<hash>), keyed by this file, the pruned modeling code and the library versions;
training all three takes about 30 s on one CPU thread, loading them a fraction of a second.
"""

from __future__ import annotations

import csv
import functools
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.conftest import SHARED_GLUE

VOCAB_SIZE = 3000
TRAIN_ROWS = 8000
MAX_LEN = 48
_TESTS_MARK = "# " + "-" * 94 + " the models themselves"


@functools.lru_cache(maxsize=None)
def sst2(split: str) -> tuple[tuple[str, int], ...]:
    path = SHARED_GLUE / "SST-2" / f"{split}.tsv"
    if not path.is_file():
        pytest.skip(f"SST-2 not found at {SHARED_GLUE}")
    with open(path, encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        return tuple((r[0], int(r[1])) for r in reader)


@functools.lru_cache(maxsize=None)
def _root() -> Path:
    import hashlib

    import transformers

    from hfdistill.models import pruned_bert

    builders = Path(__file__).read_text().split(_TESTS_MARK)[0]  # the code above the tests
    key = hashlib.sha256(builders.encode() + pruned_bert.MODELING_FILE.read_bytes()
                         + f"{torch.__version__} {transformers.__version__}".encode()).hexdigest()[:12]
    base = Path(os.environ.get("HFDISTILL_TEST_CACHE", Path.home() / ".cache" / "hfdistill-tests"))
    root = base / f"compression-{key}"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _cached(name: str, build) -> Path:
    """`root/name`, made by `build(tmp_folder)` once (atomically: concurrent test runs may race)."""
    path = _root() / name
    if not (path / "config.json").is_file():
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=_root()))
        build(tmp)
        try:
            tmp.rename(path)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    return path


@functools.lru_cache(maxsize=None)
def tokenizer_dir() -> Path:
    """A word-level BERT tokenizer of SST-2's most frequent training words."""
    from transformers import BertTokenizerFast

    def build(path: Path) -> None:
        counts = Counter(w for text, _ in sst2("train")[:TRAIN_ROWS] for w in text.split())
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [w for w, _ in counts.most_common(VOCAB_SIZE - 5)]
        (path / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
        # from_pretrained reads vocab.txt; BertTokenizerFast(vocab_file=...) ignores it in transformers 5 (all [UNK])
        tok = BertTokenizerFast.from_pretrained(str(path))
        assert tok("the movie")["input_ids"][1] != tok.unk_token_id
        tok.save_pretrained(path)
        (path / "config.json").write_text("{}")  # marks the folder complete for _cached

    return _cached("tokenizer", build)


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir()))


def _train(model, steps: int, seed: int, lr: float = 5e-4, batch_size: int = 32):
    tok = tokenizer()
    rows = list(sst2("train")[:TRAIN_ROWS])
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(rows), generator=g).tolist()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    for s in range(steps):
        chunk = [rows[i] for i in order[s * batch_size:(s + 1) * batch_size]]
        enc = tok([t for t, _ in chunk], padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([y for _, y in chunk])).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def _config(layers: int):
    from transformers import BertConfig

    return BertConfig(vocab_size=VOCAB_SIZE, hidden_size=64, num_hidden_layers=layers, num_attention_heads=2,
                      intermediate_size=128, max_position_embeddings=64, num_labels=2,
                      id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})


def _save(model, path: Path) -> None:
    from hfdistill.models.pruned_bert import save_pruned

    save_pruned(model, path)
    for f in tokenizer_dir().iterdir():
        if f.name != "config.json":
            shutil.copy(f, path / f.name)


@functools.lru_cache(maxsize=None)
def trained_bert(steps: int = 150, seed: int = 0) -> Path:
    """A stock 2-layer BertForSequenceClassification fitted to SST-2 (a folder with its tokenizer)."""
    from transformers import BertForSequenceClassification

    def build(path: Path) -> None:
        torch.manual_seed(seed)
        _save(_train(BertForSequenceClassification(_config(2)), steps, seed), path)

    return _cached(f"bert-{steps}-{seed}", build)


@functools.lru_cache(maxsize=None)
def trained_with_empty_layer(heads: tuple[int, ...] = (2, 0, 2), ffn: tuple[int, ...] = (128, 0, 128),
                             steps: int = 150, seed: int = 0) -> Path:
    """A pruned-architecture BERT (per-layer heads / FFN sizes, e.g. a layer with neither) trained on SST-2."""
    import hfdistill  # noqa: F401  (registers the pruned classes)
    from hfdistill.models.pruned_bert import model_class_for, pruned_config

    def build(path: Path) -> None:
        cfg = pruned_config(_config(len(heads)), list(heads), 32, list(ffn))
        torch.manual_seed(seed)
        _save(_train(model_class_for(cfg)(cfg), steps, seed), path)

    return _cached(f"pruned-{'-'.join(map(str, heads))}-{'-'.join(map(str, ffn))}-{steps}-{seed}", build)


#: The empty-layer models the quantizer tests use: a layer with neither heads nor FFN; a layer with no heads only
#: (the case int8-cpu used to get silently wrong).
EMPTY_LAYER_MODELS = {"empty-layer": ((2, 0, 2), (128, 0, 128)), "empty-attention": ((2, 0, 2), (128, 128, 128))}


def dev_batches(n: int = 256, batch_size: int = 64, start: int = 0) -> list[dict]:
    """SST-2 dev rows as padded batches (padding inside every batch), labels under `labels`."""
    tok = tokenizer()
    rows = sst2("dev")[start:start + n]
    out = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        enc = dict(tok([t for t, _ in chunk], padding=True, truncation=True, max_length=MAX_LEN,
                       return_tensors="pt"))
        enc["labels"] = torch.tensor([y for _, y in chunk])
        out.append(enc)
    return out


@torch.inference_mode()
def logits_of(model, batches, keys=("input_ids", "attention_mask", "token_type_ids")) -> torch.Tensor:
    return torch.cat([model(**{k: v for k, v in b.items() if k in keys}).logits.float() for b in batches])


def accuracy(logits: torch.Tensor, batches) -> float:
    labels = torch.cat([b["labels"] for b in batches])
    return float((logits.argmax(-1) == labels).float().mean())


# ---------------------------------------------------------------------------------------------- the models themselves

@pytest.mark.parametrize("which", ["bert", *EMPTY_LAYER_MODELS])
def test_trained_tiny_classifiers_beat_chance_with_both_classes_predicted(which):
    from hfdistill.models import load_model

    model = load_model(trained_bert() if which == "bert" else trained_with_empty_layer(*EMPTY_LAYER_MODELS[which]))
    batches = dev_batches(512)
    out = logits_of(model, batches)
    assert accuracy(out, batches) > 0.62
    share = float(out.argmax(-1).float().mean())
    assert 0.2 < share < 0.8, "both classes predicted"
