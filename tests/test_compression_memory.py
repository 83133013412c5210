"""Issue 11.7: metrics.json's memory figure is the true one for quantized models (the 4-bit quantization state
included), and the quantize stage honours the recipe's `trust_remote_code` for a parent whose architecture ships as
code."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from hfdistill import glue
from hfdistill import quantization as q
from hfdistill.evaluation import evaluate_model, weight_bytes
from hfdistill.models import load_model, load_tokenizer
from tests.conftest import SHARED_GLUE
from tests.test_compression_models import trained_bert


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


def _quantize(method: str, out: Path) -> Path:
    parent = trained_bert()
    model = q.quantize_bnb(parent, q.plan_bnb(method, load_model(parent)))
    q.save_bnb(model, out, load_tokenizer(parent))
    return out


@pytest.mark.parametrize("method", ["bnb-4bit", "bnb-8bit"])
def test_metrics_json_weight_bytes_of_a_bnb_model_count_its_quantization_state(tmp_path, method):
    out = _quantize(method, tmp_path / "q")
    model = load_model(out)
    # what get_memory_footprint() leaves out: 4-bit absmax/code/nested scales, 8-bit row scales (SCB, one float per
    # output row; bitsandbytes moves them from the weight to the module's state on the first forward)
    state = 0
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if getattr(w, "quant_state", None) is not None:
            state += sum(v.numel() * v.element_size() for v in w.quant_state.as_dict(packed=True).values()
                         if isinstance(v, torch.Tensor))
        if method == "bnb-8bit" and name in q.quantized_linear_names(model):
            state += m.out_features * 4
    assert state > 0
    before = model.get_memory_footprint() + state
    data = glue.load_task("sst2", glue_dir=SHARED_GLUE, max_eval_samples=8, splits=("dev",))
    metrics = evaluate_model(model, load_tokenizer(out), data, max_seq_length=32, latency_samples=1, model_dir=out)
    # the model as loaded (a first 4-bit forward on an AVX512-BF16 CPU repacks the weights: CPU-dependent bytes)
    assert metrics["weight_bytes"] == before == q.weight_bytes(load_model(out))
    assert metrics["params"] == load_model(trained_bert()).num_parameters()  # logical count, 4-bit values unpacked


def test_weight_bytes_of_plain_and_int8_cpu_models_are_unchanged(tmp_path):
    parent = load_model(trained_bert())
    assert weight_bytes(parent) == parent.get_memory_footprint()
    if importlib.util.find_spec("onnxruntime"):
        (tmp_path / "int8").mkdir()
        facts = q.export_int8_cpu(parent, load_tokenizer(trained_bert()), tmp_path / "int8")
        assert weight_bytes(load_model(tmp_path / "int8")) == facts["weight_bytes"] > 0


# ---------------------------------------------------------------------------------------------- trust_remote_code

CUSTOM_CODE = '''from transformers import BertConfig, BertForSequenceClassification


class CustomBertConfig(BertConfig):
    model_type = "hfdistill_test_custom_bert"


class CustomBertForSequenceClassification(BertForSequenceClassification):
    config_class = CustomBertConfig
'''


@pytest.fixture(scope="module")
def custom_code_parent(tmp_path_factory) -> Path:
    """The trained BERT as an architecture only its own code (`auto_map`) defines: loads only with remote code."""
    path = tmp_path_factory.mktemp("custom") / "parent"
    path.mkdir()
    (path / "modeling_custom.py").write_text(CUSTOM_CODE)
    spec = importlib.util.spec_from_file_location("modeling_custom_for_test", path / "modeling_custom.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    src = load_model(trained_bert())
    config = module.CustomBertConfig(**{k: v for k, v in src.config.to_dict().items()
                                        if k not in ("model_type", "architectures", "transformers_version")})
    config.auto_map = {"AutoConfig": "modeling_custom.CustomBertConfig",
                       "AutoModelForSequenceClassification": "modeling_custom.CustomBertForSequenceClassification"}
    model = module.CustomBertForSequenceClassification(config)
    model.load_state_dict(src.state_dict())
    model.save_pretrained(path)
    for f in trained_bert().iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            shutil.copy(f, path / f.name)
    assert json.loads((path / "config.json").read_text())["model_type"] == "hfdistill_test_custom_bert"
    return path


@pytest.mark.parametrize("method", ["bnb-8bit", "int8-cpu"])
def test_quantize_stage_honours_trust_remote_code(tmp_path, custom_code_parent, method):
    from accelerate import Accelerator

    from hfdistill.folder import ModelFolder
    from hfdistill.recipe import parse_recipe
    from hfdistill.stages import REGISTRY, StageContext

    if method == "int8-cpu":
        pytest.importorskip("onnxruntime")
    r = parse_recipe({"name": "q", "model": str(custom_code_parent), "tasks": ["sst2"], "glue_dir": str(SHARED_GLUE),
                      "output_dir": str(tmp_path / "runs"), "max_seq_length": 32, "trust_remote_code": True,
                      "stages": [{"name": "q", "kind": "quantize", "method": method}]}, base_dir=tmp_path)
    data = glue.load_task("sst2", glue_dir=SHARED_GLUE, max_eval_samples=64, splits=("dev",))
    out = tmp_path / "out"
    out.mkdir()
    ctx = StageContext(recipe=r, task="sst2", data=data, accelerator=Accelerator(cpu=True), run_dir=tmp_path / "runs",
                       cache_dir=tmp_path / "runs" / ".cache", work_dir=tmp_path / "runs" / ".work")
    facts = REGISTRY["quantize"].run(r.stages[0], ModelFolder(custom_code_parent), ctx, out)
    assert facts["parent_check"]["agreement"] >= 0.97
    assert (out / "modeling_custom.py").is_file()  # the folder loads on its own, as its parent does
    model = load_model(out, trust_remote_code=True)  # what the pipeline does next (evaluation)
    assert type(model.config).__name__ == "CustomBertConfig"
