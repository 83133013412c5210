"""Issue 11.4: layers pruned to nothing. A global FFN ranking keeps `min_ffn_per_layer` neurons per layer; and
every quantizer handles a layer with no heads and/or no FFN neurons (weightless linear layers), giving the
predictions of the unquantized pruned parent — checked on models trained with such a layer."""

from __future__ import annotations

import json

import pytest
import torch

from hfdistill import pruning
from hfdistill import quantization as q
from hfdistill.errors import RecipeError
from hfdistill.models import load_model
from tests.test_compression_models import (EMPTY_LAYER_MODELS, dev_batches, logits_of, tokenizer,
                                           trained_with_empty_layer)
from tests.test_pruning import make_batches, tiny_bert


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


# ---------------------------------------------------------------------------------------------- min_ffn_per_layer

def _with_a_useless_ffn(layer: int = 2):
    """tiny_bert whose layer-`layer` FFN barely contributes: a global ranking puts all its neurons last."""
    model = tiny_bert()
    with torch.no_grad():
        model.bert.encoder.layer[layer].output.dense.weight.mul_(1e-4)
    return model


def test_global_ffn_ranking_keeps_min_ffn_per_layer_neurons_in_every_layer():
    batches = make_batches()
    free = pruning.iterative_prune(_with_a_useless_ffn(), batches, ffn_target=24, iterations=2, min_ffn_per_layer=0)
    assert [int(m.sum()) for m in free.ffn_masks][2] == 0, "without a floor the ranking empties layer 2's FFN"
    kept = pruning.iterative_prune(_with_a_useless_ffn(), batches, ffn_target=24, iterations=2)  # default floor 1
    sizes = [int(m.sum()) for m in kept.ffn_masks]
    assert sizes[2] == 1 and sum(sizes) == 24
    floor = pruning.iterative_prune(_with_a_useless_ffn(), batches, ffn_target=24, iterations=2, min_ffn_per_layer=5)
    assert [int(m.sum()) for m in floor.ffn_masks][2] == 5


def test_ffn_targets_below_the_floor_are_refused_naming_the_option():
    with pytest.raises(RecipeError, match=r"target_ffn\[1\]: 0 is below min_ffn_per_layer=1"):
        pruning.iterative_prune(tiny_bert(), make_batches(), ffn_target=[12, 0, 12])
    with pytest.raises(RecipeError, match="target_ffn: 2 is fewer than min_ffn_per_layer=1 in each of the 3 layers"):
        pruning.iterative_prune(tiny_bert(), make_batches(), ffn_target=2)
    result = pruning.iterative_prune(tiny_bert(), make_batches(), ffn_target=[12, 0, 12], iterations=1,
                                     min_ffn_per_layer=0)
    assert [int(m.sum()) for m in result.ffn_masks] == [12, 0, 12]


def test_prune_stage_config_has_min_ffn_per_layer_default_1():
    from hfdistill.stages.prune import PruneConfig

    assert PruneConfig(name="p", kind="prune", sparsity=0.5).min_ffn_per_layer == 1
    with pytest.raises(ValueError):
        PruneConfig(name="p", kind="prune", sparsity=0.5, min_ffn_per_layer=-1)


# ---------------------------------------------------------------------------------------------- quantizers

def _parent(which: str):
    path = trained_with_empty_layer(*EMPTY_LAYER_MODELS[which])
    return path, load_model(path)


def _quantized(method: str, path, parent, out):
    if method == "int8-cpu":
        out.mkdir()
        q.export_int8_cpu(parent, tokenizer(), out, sample_texts=["a gorgeous , witty , seductive movie ."])
        return q.load_int8_cpu(out)
    model = q.quantize_bnb(path, q.plan_bnb(method, parent))
    q.save_bnb(model, out)
    return q.load_bnb(out)


@pytest.mark.parametrize("which", list(EMPTY_LAYER_MODELS))
@pytest.mark.parametrize("method", ["bnb-8bit", "bnb-4bit", "int8-cpu"])
def test_every_quantizer_follows_the_pruned_parent_through_an_empty_layer(tmp_path, method, which):
    if method == "int8-cpu":
        pytest.importorskip("onnxruntime")
    path, parent = _parent(which)
    assert pruning.layer_sizes(parent)[0][1] == 0  # layer 1 has no attention
    batches = dev_batches(256)  # padded batches of real SST-2 dev sentences
    ref = logits_of(parent, batches)
    got = logits_of(_quantized(method, path, parent, tmp_path / "q"), batches)
    assert got.shape == ref.shape
    agree = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
    assert agree >= 0.97, f"{method}: agreement {agree:.3f} with the unquantized pruned parent"
    # the values too: quantization noise, not a broken layer (a wrong empty attention was off by ~1)
    tolerance = {"bnb-8bit": 0.05, "bnb-4bit": 0.15, "int8-cpu": 0.08}[method]  # measured: 0.006, 0.034, 0.024
    assert float((got - ref).abs().max()) < tolerance * float(ref.abs().max())
    assert float((got - ref).abs().mean()) < 0.2 * tolerance * float(ref.abs().max())


def test_bnb_plans_keep_weightless_layers_in_full_precision():
    _, parent = _parent("empty-layer")
    empty = {"bert.encoder.layer.1.attention.output.dense", "bert.encoder.layer.1.intermediate.dense",
             "bert.encoder.layer.1.output.dense"}
    assert set(q.empty_linear_modules(parent)) == empty
    for method in ("bnb-8bit", "bnb-4bit"):
        plan = q.plan_bnb(method, parent, avx512_bf16=True)
        assert set(plan.facts()["skipped_empty"]) == empty and empty <= set(plan.skip_modules)
        assert not empty & set(plan.quantized_modules)
        # every weight that exists is quantized: the empty layers hold none
        assert plan.facts()["quantized_weight_fraction"] == 1.0


@pytest.mark.parametrize("which", list(EMPTY_LAYER_MODELS))
def test_int8_export_leaves_weightless_matmuls_unquantized_and_says_so(tmp_path, which):
    """ONNX Runtime's MatMulInteger with no weights does not write its output: a quantized empty attention added
    ~1e9 of leftover int32 memory to the hidden state (measured). An empty attention now skips its zero-width
    projection (LayerNorm(x + bias), tests/test_pruned_headless.py): no matmul is left there to quantize; an empty
    FFN's output projection still runs and must output exactly its bias."""
    pytest.importorskip("onnxruntime")
    import numpy as np
    import onnx

    from hfdistill.models.formats import _session

    _, parent = _parent(which)
    facts = q.export_int8_cpu(parent, tokenizer(), tmp_path, sample_texts=["a fine film"])

    model = onnx.load(str(tmp_path / "model.onnx"))
    attention = [n for n in model.graph.node if "/layer.1/attention/" in n.name]
    assert attention and not any(n.op_type.startswith("MatMul") for n in attention), \
        [(n.name, n.op_type) for n in attention]
    # the skipped attention's projection is not in the graph at all; an empty FFN's matmuls are, left unquantized
    empty = ({"bert.encoder.layer.1.intermediate.dense", "bert.encoder.layer.1.output.dense"}
             if which == "empty-layer" else set())
    assert set(facts["skipped_empty"]) == empty
    assert facts["quantized_weight_fraction"] == 1.0
    assert json.loads((tmp_path / "int8_cpu.json").read_text())["weight_bytes"] == facts["weight_bytes"]
    if which != "empty-layer":
        return
    node = "/bert/encoder/layer.1/output/dense/Add_output_0"  # the empty FFN's output (+ bias)
    assert node in {o for n in model.graph.node for o in n.output}
    model.graph.output.append(onnx.helper.make_tensor_value_info(node, onnx.TensorProto.FLOAT, None))
    onnx.save(model, str(tmp_path / "probe.onnx"))
    session = _session(tmp_path / "probe.onnx", 1)
    bias = parent.bert.encoder.layer[1].output.dense.bias.detach().numpy()
    for batch in dev_batches(24, batch_size=8):
        out = session.run([node], {k: batch[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")})[0]
        assert out.shape == (*batch["input_ids"].shape, 64)
        assert np.allclose(out, bias, atol=1e-6), f"max |output - bias| {np.abs(out - bias).max():.3g}"
