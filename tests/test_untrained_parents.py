"""Issue 11.1: a stage whose parent lacks trained weights for what the stage uses is refused before any work,
with exit 2 and one line naming the stage, the parent, the missing weights and what to do."""

import subprocess
import sys

import pytest
import yaml


def _recipe(tmp_path, model, stages, glue_dir):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "r", "model": str(model), "tasks": ["sst2"], "glue_dir": str(glue_dir),
                                    "max_train_samples": 64, "max_eval_samples": 32, "max_seq_length": 32,
                                    "latency_samples": 30, "stages": stages}))
    return path


def _run(path):
    return subprocess.run([sys.executable, "-m", "hfdistill", "run", str(path), "--no-push"],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("stage", [
    {"name": "student", "kind": "distill", "max_steps": 2},
    {"name": "pruned", "kind": "prune", "sparsity": 0.5, "num_examples": 8},
    {"name": "q8", "kind": "quantize", "method": "bnb-8bit"},
])
def test_a_stage_that_uses_the_parents_classifier_refuses_a_base_model(tmp_path, tiny_bert, glue_dir, stage):
    proc = _run(_recipe(tmp_path, tiny_bert, [stage], glue_dir))
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("hfdistill: error: stage ") and repr(stage["name"]) in err
    assert str(tiny_bert) in err and "classifier.weight" in err and "kind: finetune" in err
    assert not (tmp_path / "runs" / "r" / stage["name"] / "sst2").exists()  # nothing written


def test_general_distillation_refuses_a_teacher_without_a_masked_lm_head(tmp_path, minilm_path, glue_dir):
    stage = {"name": "general", "kind": "distill", "objective": "mlm", "text_source": "train", "max_steps": 2}
    proc = _run(_recipe(tmp_path, minilm_path, [stage], glue_dir))
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert "'general'" in err and "cls.predictions" in err and "objective: mlm" in err


def test_a_trained_head_is_accepted(tmp_path, minilm_path, tiny_bert):
    from transformers import BertForSequenceClassification

    from hfdistill.models import load_classifier

    BertForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2).save_pretrained(tmp_path / "m")
    model = load_classifier(tmp_path / "m", 2, ["negative", "positive"], require_trained="student")
    assert model.config.id2label == {0: "negative", 1: "positive"}
    with pytest.raises(Exception, match="classifier.weight"):  # three classes: the saved 2-class head won't do
        load_classifier(tmp_path / "m", 3, ["a", "b", "c"], require_trained="student")
