"""Issue 11.5: sizes the 4-bit kernels can take. `multiple_of` rounds what each layer keeps (FFN neurons; heads ×
head size), and the quantize stage reports which fraction of the encoder's linear weights it really quantized."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from hfdistill import pruning
from hfdistill import quantization as q
from tests.conftest import SHARED_GLUE
from tests.test_compression_models import trained_bert
from tests.test_pruning import make_batches


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


def sizes(masks) -> list[int]:
    return [int(m.sum()) for m in masks]


def test_heads_round_so_that_heads_times_head_size_is_the_multiple():
    assert pruning.heads_multiple(64, 32) == 2 and pruning.heads_multiple(32, 32) == 1
    assert pruning.heads_multiple(48, 32) == 3 and pruning.heads_multiple(1, 64) == 1
    assert [pruning.round_to_multiple(n, 4) for n in (0, 1, 2, 5, 6, 7)] == [0, 0, 4, 4, 8, 8]


def test_global_selection_keeps_whole_blocks_of_the_best_units():
    scores = [torch.tensor([8., 7, 6, 5, 4, 3, 2, 1]), torch.tensor([.1, .9, .2, .8, .3, .7, .4, .6])]
    ones = [torch.ones(8), torch.ones(8)]
    # blocks of 4, best first: layer 0 [8..5] (6.5), layer 0 [4..1] (2.5), layer 1 [.9 .8 .7 .6] (.75), …
    masks = pruning.select(scores, ones, keep=9, min_per_layer=0, multiple_of=4)
    assert sizes(masks) == [8, 0]
    masks = pruning.select(scores, ones, keep=9, min_per_layer=1, multiple_of=4)  # the floor is a whole block
    assert sizes(masks) == [4, 4], "9 is nearer 8 than 12"
    assert masks[1].tolist() == [0, 1, 0, 1, 0, 1, 0, 1]  # layer 1's four best units
    assert masks[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert sizes(pruning.select(scores, ones, keep=10, multiple_of=4)) == [8, 4]  # a tie rounds up
    # multiple_of=1 is the plain global top-k
    assert sizes(pruning.select(scores, ones, keep=9, multiple_of=1)) == [8, 1]


def test_per_layer_targets_round_to_the_nearest_multiple_but_never_to_nothing():
    scores = [torch.arange(8.), torch.arange(8.), torch.arange(8.)]
    masks = pruning.select(scores, [torch.ones(8)] * 3, keep=[5, 1, 0], multiple_of=4)
    assert sizes(masks) == [4, 4, 0]
    assert masks[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert sizes(pruning.select(scores, [torch.ones(8)] * 3, keep=[6, 7, 2], multiple_of=4)) == [8, 8, 4]


def _bert_with_32_dim_heads(seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=120, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=256, num_labels=2, max_position_embeddings=64)
    return BertForSequenceClassification(cfg).eval()


@pytest.mark.parametrize("multiple_of, fraction", [(64, 1.0), (1, None)])
def test_multiple_of_64_puts_every_encoder_weight_in_4bit(multiple_of, fraction):
    model = _bert_with_32_dim_heads()
    result = pruning.iterative_prune(model, make_batches(), head_target=4, ffn_target=256, iterations=2,
                                     multiple_of=multiple_of)
    pruned = pruning.build_pruned_model(model, result.head_masks, result.ffn_masks)
    heads, ffn = pruning.layer_sizes(pruned)
    plan = q.plan_bnb("bnb-4bit", pruned, avx512_bf16=True)
    got = plan.facts()["quantized_weight_fraction"]
    if multiple_of == 64:
        assert all(h * 32 % 64 == 0 for h in heads) and all(f % 64 == 0 for f in ffn)
        assert sum(heads) == 4 and sum(ffn) == 256
        assert got == fraction and plan.added_for_cpu == []
    else:  # plain ranking: odd sizes stay fp32
        assert any(h % 2 for h in heads) or any(f % 64 for f in ffn)
        assert got < 1.0


def test_quantized_fraction_counts_weights_not_layers():
    shapes = {"bert.encoder.layer.0.attention.self.query": (64, 64), "bert.encoder.layer.0.output.dense": (64, 100),
              "bert.pooler.dense": (64, 64), "classifier": (2, 64)}
    facts = q.quantized_fraction(shapes, ["bert.encoder.layer.0.attention.self.query", "bert.pooler.dense"])
    assert facts == {"quantized_weight_fraction": round(4096 / 10496, 6), "encoder_linear_weights": 10496,
                     "quantized_encoder_linear_weights": 4096}


def test_prune_with_multiple_of_then_4bit_reports_the_whole_encoder_quantized(tmp_path):
    import hfdistill

    stages = [{"name": "pruned", "kind": "prune", "target_ffn": 96, "iterations": 1, "num_examples": 32,
               "multiple_of": 64},
              {"name": "nf4", "kind": "quantize", "method": "bnb-4bit", "min_agreement": 0.9}]
    recipe = {"name": "round", "model": str(trained_bert()), "tasks": ["sst2"], "glue_dir": str(SHARED_GLUE),
              "output_dir": str(tmp_path / "run"), "max_train_samples": 64, "max_eval_samples": 64,
              "max_seq_length": 32, "latency_samples": 30, "stages": stages}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    pruned, nf4 = (r.path for r in hfdistill.run(tmp_path / "recipe.yaml", publish=False))
    prune_info = json.loads((pruned / "lineage.json").read_text())["info"]
    assert prune_info["ffn_per_layer"] == [64, 64] and prune_info["multiple_of"] == 64  # 96 → nearest: 128
    info = json.loads((nf4 / "lineage.json").read_text())["info"]
    assert info["quantized_weight_fraction"] == 1.0 and info["skipped_for_cpu_4bit"] == []
    assert info["encoder_linear_weights"] == 2 * (4 * 64 * 64 + 2 * 64 * 64)


@pytest.mark.slow
def test_minilm_pruned_by_half_quantizes_whole_only_with_multiple_of(minilm_path):
    """Issue 11.5's measurement: MiniLM pruned 50 % by global ranking, 4-bit plan, with and without rounding."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_path))
    texts = [l.split("\t")[0] for l in (SHARED_GLUE / "SST-2" / "dev.tsv").read_text().splitlines()[1:65]]
    batches = [dict(tok(texts[i:i + 32], padding=True, return_tensors="pt")) for i in (0, 32)]
    fractions = {}
    for m in (1, 64):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(str(minilm_path), num_labels=2).eval()
        heads0, ffn0 = pruning.layer_sizes(model)
        result = pruning.iterative_prune(model, batches, head_target=sum(heads0) // 2, ffn_target=sum(ffn0) // 2,
                                         iterations=2, multiple_of=m)
        pruned = pruning.build_pruned_model(model, result.head_masks, result.ffn_masks)
        fractions[m] = q.plan_bnb("bnb-4bit", pruned, avx512_bf16=True).facts()["quantized_weight_fraction"]
    print(f"4-bit fraction of encoder linear weights: {fractions}")
    assert fractions[64] == 1.0 and fractions[1] < 0.9
