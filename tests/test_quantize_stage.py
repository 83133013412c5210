"""The quantize stage: recipe validation, bnb and int8-cpu folders, recovery adapters — tiny BERTs, real GLUE rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from hfdistill import glue
from hfdistill import quantization as q
from hfdistill.errors import ModelError, RecipeError
from hfdistill.folder import ModelFolder
from hfdistill.recipe import parse_recipe
from hfdistill.stages import REGISTRY, StageContext
from tests.conftest import SHARED_GLUE

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    # After conftest's autouse fixture (2 threads): on this shared 2-core machine two threads make small matmuls
    # ~100× slower (spinning OpenMP workers), measured.
    torch.set_num_threads(1)
    yield
GLUE = SHARED_GLUE  # $HFDISTILL_GLUE_DIR, else ../shared/glue beside the repository


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """SST-2's first 192 train / 64 dev rows and, as the parent, a tiny BERT classifier trained on SST-2 (its head
    means something: agreement and score checks can fail); hidden sizes are multiples of 32."""
    from tests.test_compression_models import trained_bert
    from tests.test_compression_parent_check import damaged_copy

    root = tmp_path_factory.mktemp("quantize")
    for split, n in (("train", 192), ("dev", 64), ("test", 32)):
        lines = (GLUE / "SST-2" / f"{split}.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
        (root / "glue" / "SST-2").mkdir(parents=True, exist_ok=True)
        (root / "glue" / "SST-2" / f"{split}.tsv").write_text("".join(lines[:n + 1]), encoding="utf-8")
    shutil.copytree(trained_bert(), root / "parent")
    damaged_copy(root / "damaged")
    return root


def recipe(root: Path, stage: dict):
    return parse_recipe({"name": "q", "model": str(root / "parent"), "tasks": ["sst2"], "glue_dir": str(root / "glue"),
                         "output_dir": str(root / "runs"), "max_seq_length": 48, "stages": [stage]}, base_dir=root)


def run_stage(root: Path, stage: dict, name: str, parent: str = "parent") -> tuple[Path, dict]:
    from accelerate import Accelerator

    r = recipe(root, {"name": name, "kind": "quantize", **stage})
    out = root / name
    out.mkdir()
    ctx = StageContext(recipe=r, task="sst2", data=glue.load_task("sst2", glue_dir=root / "glue"),
                       accelerator=Accelerator(cpu=True), run_dir=root / "runs", cache_dir=root / "runs" / ".cache",
                       work_dir=root / "runs" / ".work" / name)
    return out, REGISTRY["quantize"].run(r.stages[0], ModelFolder(root / parent), ctx, out)


# ---------------------------------------------------------------------------------------------------- recipe

def parse(stage: dict):
    return parse_recipe({"name": "r", "tasks": ["sst2"], "glue_dir": str(GLUE), "output_dir": "/tmp/o",
                         "stages": [{"name": "q", "kind": "quantize", **stage}]}, base_dir=Path("/tmp"))


def test_an_option_of_another_method_is_refused_with_field_name():
    with pytest.raises(RecipeError, match=r"stages\[0\]\.quant_type: only applies to method bnb-4bit, not bnb-8bit"):
        parse({"method": "bnb-8bit", "quant_type": "nf4"})
    with pytest.raises(RecipeError, match=r"stages\[0\]\.recover: only applies to method bnb-8bit or bnb-4bit"):
        parse({"method": "int8-cpu", "recover": {"epochs": 1}})
    with pytest.raises(RecipeError, match=r"stages\[0\]\.compute_dtype: only applies to method bnb-4bit"):
        parse({"method": "int8-cpu", "compute_dtype": "float32"})


def test_unknown_method_and_quant_type_are_refused():
    with pytest.raises(RecipeError, match=r"stages\[0\]\.method"):
        parse({"method": "gptq"})
    with pytest.raises(RecipeError, match=r"stages\[0\]\.quant_type"):
        parse({"method": "bnb-4bit", "quant_type": "int4"})


def test_bad_lora_settings_are_refused_with_field_path():
    with pytest.raises(RecipeError, match=r"stages\[0\]\.recover\.lora\.r: must be > 0"):
        parse({"method": "bnb-4bit", "recover": {"lora": {"r": 0}}})
    with pytest.raises(RecipeError, match=r"stages\[0\]\.recover\.lora\.target_modules"):
        parse({"method": "bnb-4bit", "recover": {"lora": {"target_modules": []}}})


def test_recovery_asks_for_the_train_split_and_plain_quantization_does_not():
    assert parse({"method": "bnb-4bit", "recover": {}}).stages[0].needs_train_split()
    assert not parse({"method": "bnb-4bit"}).stages[0].needs_train_split()


# ---------------------------------------------------------------------------------------------------- runs

def test_bnb_4bit_stage_writes_a_reloadable_quantized_folder(workspace):
    from transformers import AutoModelForSequenceClassification

    from hfdistill.evaluation import evaluate_model
    from hfdistill.models import load_model, load_tokenizer

    out, facts = run_stage(workspace, {"method": "bnb-4bit"}, "nf4")
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["bnb_4bit_quant_type"] == "nf4" and config["llm_int8_skip_modules"] == ["classifier"]
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert facts["reload_check"]["max_abs_diff"] == 0.0
    assert facts["weight_bytes"] < facts["parent_weight_bytes"]
    assert facts["bnb_config"]["bnb_4bit_compute_dtype"] == "float32"
    assert any("slower than its fp32 parent" in n for n in facts["notes"])
    json.dumps(facts)  # lineage.json stores it
    assert isinstance(AutoModelForSequenceClassification.from_pretrained(str(out)).bert.encoder.layer[0]
                      .attention.self.query, __import__("bitsandbytes").nn.Linear4bit)
    data = glue.load_task("sst2", glue_dir=workspace / "glue", splits=("dev",))
    metrics = evaluate_model(load_model(out), load_tokenizer(out), data, max_seq_length=48, latency_samples=5,
                             model_dir=out)
    parent = evaluate_model(load_model(workspace / "parent"), load_tokenizer(workspace / "parent"), data,
                            max_seq_length=48, latency_samples=5, model_dir=workspace / "parent")
    # the 4-bit model scores like its trained parent on the same 64 rows (3 examples of slack), well above chance
    assert metrics["num_examples"] == 64 and abs(metrics["score"] - parent["score"]) <= 3 / 64
    assert parent["score"] > metrics["majority_baseline"]["score"]


def test_int8_cpu_stage_writes_an_onnx_folder_that_scores_like_its_parent(workspace):
    pytest.importorskip("onnxruntime")
    from hfdistill.evaluation import evaluate_model
    from hfdistill.models import load_model, load_tokenizer

    out, facts = run_stage(workspace, {"method": "int8-cpu"}, "int8")
    assert q.is_int8_cpu_folder(out) and facts["export_max_abs_diff"] < 1e-4
    model = load_model(out)  # dispatched to load_int8_cpu
    assert isinstance(model, q.Int8CpuModel)
    data = glue.load_task("sst2", glue_dir=workspace / "glue", splits=("dev",))
    metrics = evaluate_model(model, load_tokenizer(out), data, max_seq_length=48, latency_samples=5, model_dir=out)
    parent = evaluate_model(load_model(workspace / "parent"), load_tokenizer(out), data, max_seq_length=48,
                            latency_samples=5)
    assert parent["score"] > 0.6  # a trained head: the comparison means something
    assert abs(metrics["score"] - parent["score"]) <= 1 / 64 + 1e-9  # at most one of the 64 dev rows differs
    check = facts["parent_check"]
    assert check["examples"] == 64 and check["agreement"] >= 63 / 64 and check["kl"] < 0.01
    assert check["score"] == pytest.approx(metrics["score"], abs=1e-6)
    assert check["parent_score"] == pytest.approx(parent["score"], abs=1e-6)
    assert facts["quantized_weight_fraction"] == 1.0
    assert metrics["latency_ms"]["median"] > 0 and metrics["disk_bytes"] == (out / "model.onnx").stat().st_size
    assert metrics["weight_bytes"] == facts["weight_bytes"] < facts["parent_weight_bytes"] / 3


def test_recovery_brings_the_4bit_model_closer_to_its_parent_on_held_out_rows(workspace):
    from peft import PeftModel

    # a parent whose weights 4-bit cannot represent (see damaged_copy): there is something to recover
    out, facts = run_stage(workspace, {"method": "bnb-4bit", "quant_type": "fp4", "min_agreement": 0.5,
                                       "recover": {"max_steps": 20, "batch_size": 16, "log_every": 10}}, "fp4_lora",
                           parent="damaged")
    rec = facts["recovery"]
    assert facts["parent_check"]["agreement"] == rec["dev_agreement_after"]["agreement"]  # the recovered model
    # held out: measured on dev rows, trained on train rows
    assert rec["dev_agreement_after"]["kl"] < 0.8 * rec["dev_agreement_before"]["kl"]
    assert rec["dev_agreement_after"]["agreement"] >= rec["dev_agreement_before"]["agreement"]
    adapter = out / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == ".."
    # PeftModel.from_pretrained(base, adapter) restores the recovered model; load_model does the same
    from hfdistill.models import load_model, load_tokenizer

    tok = load_tokenizer(out)
    batch = dict(tok(["a charming and often affecting journey .", "bleak and desperate"], padding=True,
                     return_tensors="pt"))
    restored = PeftModel.from_pretrained(q.load_bnb(out), str(adapter)).eval()
    base_only = q.load_bnb(out)
    with torch.inference_mode():
        a, b, c = restored(**batch).logits, load_model(out)(**batch).logits, base_only(**batch).logits
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_quantized_parent_is_refused(workspace):
    from accelerate import Accelerator

    from hfdistill.models import load_model, load_tokenizer

    parent = workspace / "parent"
    model = q.quantize_bnb(parent, q.plan_bnb("bnb-8bit", load_model(parent)))
    q.save_bnb(model, workspace / "parent_q", load_tokenizer(parent))
    r = recipe(workspace, {"name": "again", "kind": "quantize", "method": "bnb-4bit"})
    ctx = StageContext(recipe=r, task="sst2", data=glue.load_task("sst2", glue_dir=workspace / "glue"),
                       accelerator=Accelerator(cpu=True), run_dir=workspace / "runs",
                       cache_dir=workspace / "runs" / ".cache", work_dir=workspace / "runs" / ".work" / "again")
    (workspace / "again").mkdir()
    with pytest.raises(ModelError, match="already quantized"):
        REGISTRY["quantize"].run(r.stages[0], ModelFolder(workspace / "parent_q"), ctx, workspace / "again")
