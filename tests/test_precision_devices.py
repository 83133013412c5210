"""Mixed precision through Accelerate, and where models load (CPU unchanged; bitsandbytes on the GPU when there is
one — that path runs in `bench/gpu_check.sh`, this machine has no GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from hfdistill import api
from hfdistill.errors import RecipeError
from hfdistill.folder import ModelFolder
from hfdistill.models import formats, load_model

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")


def recipe(tmp_path: Path, model: Path, glue_dir: Path, **over) -> Path:
    r = {"name": "mp", "model": str(model), "tasks": ["mrpc"], "glue_dir": str(glue_dir), "max_seq_length": 64,
         "max_train_samples": 48, "max_eval_samples": 30, "latency_samples": 30,
         "output_dir": str(tmp_path / "run"),
         "stages": [{"name": "teacher", "kind": "finetune", "max_steps": 3, "batch_size": 8, "log_every": 1}]}
    r.update(over)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


@pytest.fixture
def fresh_accelerate():
    """Accelerate keeps one state (and so one precision) per process: start and leave this test with none."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_bf16_finetune_runs_on_cpu_records_it_and_saves_fp32_weights(tiny_bert, glue_dir, tmp_path, monkeypatch,
                                                                     fresh_accelerate):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    (res,) = api.run(recipe(tmp_path, tiny_bert, glue_dir, mixed_precision="bf16"), publish=False)
    folder = ModelFolder(res.path)
    assert folder.is_complete()
    lineage = folder.lineage
    assert lineage["mixed_precision"] == "bf16"  # what the accelerator ran, not just what the recipe asked
    assert lineage["info"]["steps"] == 3 and lineage["info"]["train_loss"] == lineage["info"]["train_loss"]  # not NaN
    from safetensors import safe_open

    with safe_open(str(folder.path / "model.safetensors"), "pt") as f:  # autocast computes in bf16, weights stay fp32
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    assert folder.metrics["num_examples"] == 30 and folder.metrics["scored_on"] == "cpu"


@no_gpu
def test_fp16_on_cpu_is_refused_in_one_line_before_any_work(tiny_bert, glue_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    with pytest.raises(RecipeError, match=r"^mixed_precision: fp16 needs a GPU and this run is on CPU \(the "
                                          r"recipe's mixed_precision\); use bf16 \(which runs on CPU\) or no$"):
        api.run(recipe(tmp_path, tiny_bert, glue_dir, mixed_precision="fp16"), publish=False)
    assert not (tmp_path / "run").exists()
    # the same from the launcher (`accelerate launch --mixed_precision fp16` sets this variable)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(RecipeError, match=r"\(accelerate launch --mixed_precision\)"):
        api.run(recipe(tmp_path, tiny_bert, glue_dir), publish=False)
    assert not (tmp_path / "run").exists()


def test_a_bad_mixed_precision_is_refused_with_the_field_named(tiny_bert, glue_dir, tmp_path):
    with pytest.raises(RecipeError, match=r"^r\.yaml: mixed_precision: input should be 'no', 'fp16' or 'bf16' \(got 'fp8'\)$"):
        api.validate(recipe(tmp_path, tiny_bert, glue_dir, mixed_precision="fp8"))


def test_bitsandbytes_loads_on_cpu_as_before_and_on_the_gpu_as_one_device():
    assert formats.bnb_device_map(None) == "cpu"
    assert formats.bnb_device_map("cpu") == "cpu" and formats.bnb_device_map(torch.device("cpu")) == "cpu"
    # on a GPU: the whole model on the accelerator's device (accelerate then trains it where it is)
    assert formats.bnb_device_map("cuda:1") == {"": torch.device("cuda:1")}
    assert formats.bnb_device_map(torch.device("cuda", 0)) == {"": torch.device("cuda", 0)}


def test_load_model_on_cpu_is_unchanged_and_a_device_moves_plain_models(tiny_bert, tmp_path):
    from transformers import BertForSequenceClassification

    BertForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2).save_pretrained(tmp_path / "m")
    before = load_model(tmp_path / "m")
    cpu = load_model(tmp_path / "m", device="cpu")
    assert type(cpu) is type(before) and formats.model_device(cpu) == torch.device("cpu")
    assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), cpu.state_dict().values()))
    assert not formats.is_bnb_folder(tmp_path / "m")
    # any other device: the plain model goes there (the meta device stands in for a GPU here)
    assert formats.model_device(load_model(tmp_path / "m", device="meta")) == torch.device("meta")


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_the_training_loop_records_its_precision_and_hands_back_a_full_precision_model(tiny_bert, tmp_path,
                                                                                       precision, fresh_accelerate):
    """`train` stamps the precision it ran in on the stage context (the pipeline writes it to lineage.json), and
    the model it trained no longer runs under autocast: what the stage does next (save, compare) is fp32."""
    from accelerate import Accelerator
    from transformers import BertForSequenceClassification

    from hfdistill.stages.base import StageContext
    from hfdistill.training import TrainingArgs, train

    model = BertForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
    rows = [{"input_ids": torch.tensor([101, 7 + i, 102]), "labels": torch.tensor(i % 2)} for i in range(8)]
    ctx = StageContext(recipe=None, task="sst2", data=None, accelerator=Accelerator(cpu=True, mixed_precision=precision),
                       run_dir=tmp_path, cache_dir=tmp_path / ".cache", work_dir=tmp_path / ".work")
    assert ctx.mixed_precision is None
    train(model, rows, lambda m, b: (m(**b).loss, {}), TrainingArgs(max_steps=2, batch_size=4), ctx)
    assert ctx.mixed_precision == precision
    assert getattr(model.forward, "__func__", None) is type(model).forward  # accelerate's autocast wrapper removed
    with torch.no_grad():
        hidden = model.bert(input_ids=torch.tensor([[101, 7, 102]])).last_hidden_state
    assert hidden.dtype == torch.float32
