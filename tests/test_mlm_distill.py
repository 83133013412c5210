"""General (masked-LM) distillation, as from the packaged MiniLM, which has no masked-LM head: a headless tiny BERT
gets one (`kind: finetune`, `objective: mlm`) on real SST-2 text, then is distilled into DistilBERT
(`kind: distill`, `objective: mlm`) — once with the teacher's terms, once without — and the student fine-tuned."""

import json
from pathlib import Path

import pytest
import torch
from transformers import (AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer, BertConfig,
                          BertModel, DataCollatorForLanguageModeling)

from hfdistill.distillation.student import build_student
from hfdistill.errors import RecipeError
from hfdistill.recipe import parse_recipe
from hfdistill.stages.distill import load_text
from tests.conftest import SHARED_GLUE

torch.set_num_threads(1)
GLUE = SHARED_GLUE  # $HFDISTILL_GLUE_DIR, else ../shared/glue beside the repository
pytestmark = pytest.mark.skipif(not (GLUE / "SST-2" / "train.tsv").is_file(), reason=f"no GLUE data at {GLUE}")


def sst2_sentences(split: str, n: int) -> list[str]:
    lines = (GLUE / "SST-2" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:n + 1]
    return [line.split("\t")[0].strip() for line in lines]


def small_tokenizer(texts: list[str]):
    """A 2,000-piece WordPiece vocabulary learnt from the text: a tiny MLM learns it in a few hundred steps."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(texts, vocab_size=2000, min_frequency=2, show_progress=False)
    return BertTokenizerFast(tokenizer_object=wp._tokenizer, unk_token="[UNK]", sep_token="[SEP]",
                             pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")


def headless_base(path: Path, texts: list[str]) -> Path:
    """A 4-layer BERT without any head, like the packaged MiniLM (a `BertModel`)."""
    torch.manual_seed(0)
    tok = small_tokenizer(texts)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=128, max_position_embeddings=64), add_pooling_layer=False
              ).save_pretrained(path)
    tok.save_pretrained(path)
    return path


GENERAL = {"kind": "distill", "objective": "mlm", "from": "mlm-head", "text_source": "text.txt", "init": "random",
           "max_steps": 100, "batch_size": 32, "learning_rate": 2e-3, "log_every": 50, "checkpoint_every": 1000}


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlm")
    texts = sst2_sentences("train", 3000)
    base = headless_base(root / "base", texts)
    (root / "text.txt").write_text("\n".join(texts[:2000]) + "\n")
    recipe = {"name": "general", "model": str(base), "tasks": ["sst2"], "glue_dir": str(GLUE),
              "max_train_samples": 200, "max_eval_samples": 64, "latency_samples": 30,
              "max_seq_length": 32, "output_dir": str(root / "run"),
              "stages": [{"name": "mlm-head", "kind": "finetune", "objective": "mlm", "text_source": "text.txt",
                          "max_steps": 200, "batch_size": 32, "learning_rate": 2e-3, "log_every": 50,
                          "checkpoint_every": 1000},
                         {"name": "general", **GENERAL},
                         {"name": "no-teacher", **GENERAL, "alpha_ce": 0.0, "alpha_cos": 0.0},
                         {"name": "head-only", "kind": "finetune", "from": "model", "objective": "mlm",
                          "text_source": "train", "trainable": "head", "max_steps": 3, "batch_size": 8},
                         {"name": "tuned", "kind": "finetune", "from": "general", "max_steps": 10, "batch_size": 16}]}
    from hfdistill.pipeline import run

    run(parse_recipe(recipe, base_dir=root), publish=False)
    return root


def masked_batch(tok, texts: list[str]):
    torch.manual_seed(123)  # one fixed masking for every model compared
    collate = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    return collate([{"input_ids": tok(t, truncation=True, max_length=32)["input_ids"]} for t in texts])


@torch.no_grad()
def mlm_quality(model, teacher, batch) -> dict:
    """At the masked positions of a fixed masking: MLM loss, KL(teacher ‖ model), top-1 agreement with the teacher."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    s, t = model.eval()(**inputs).logits, teacher.eval()(**inputs).logits
    masked = batch["labels"] != -100
    s, t = s[masked], t[masked]
    kl = torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="batchmean")
    return {"loss": torch.nn.functional.cross_entropy(s, batch["labels"][masked]).item(), "kl": kl.item(),
            "agree": (s.argmax(-1) == t.argmax(-1)).float().mean().item()}


def test_finetune_mlm_gives_a_headless_model_a_trained_masked_lm_head(mlm_run):
    root = mlm_run
    folder = root / "run" / "mlm-head" / "sst2"
    model = AutoModelForMaskedLM.from_pretrained(folder)
    assert type(model).__name__ == "BertForMaskedLM"
    info = json.loads((folder / "lineage.json").read_text())["info"]
    assert info["objective"] == "mlm" and info["texts"] == 2000 and info["steps"] == 200
    assert any(k.startswith("cls.predictions") for k in info["head_initialised"])  # the base had no head
    assert not (folder / "metrics.json").exists()                               # no task head to score
    untrained = AutoModelForMaskedLM.from_pretrained(root / "base")             # the same, head random
    tok = AutoTokenizer.from_pretrained(folder)
    batch = masked_batch(tok, sst2_sentences("dev", 200))
    before, after = mlm_quality(untrained, model, batch), mlm_quality(model, model, batch)
    assert after["loss"] < before["loss"] - 0.8, (before, after)   # measured: 7.60 → 6.45


def test_general_distillation_learns_from_the_teacher(mlm_run):
    """Same steps and data: with L_ce and L_cos the student's predictions come far closer to the teacher's than
    with the masked-LM labels alone (α_ce = α_cos = 0, the teacher unused)."""
    root = mlm_run
    teacher = AutoModelForMaskedLM.from_pretrained(root / "run" / "mlm-head" / "sst2")
    tok = AutoTokenizer.from_pretrained(root / "run" / "general" / "sst2")
    batch = masked_batch(tok, sst2_sentences("dev", 200))
    start, _ = build_student(teacher, init="random", seed=42)  # the student as both stages initialised it
    general = AutoModelForMaskedLM.from_pretrained(root / "run" / "general" / "sst2")
    alone = AutoModelForMaskedLM.from_pretrained(root / "run" / "no-teacher" / "sst2")
    assert type(general).__name__ == "DistilBertForMaskedLM" and general.config.n_layers == 2
    q0, q, q_alone = (mlm_quality(m, teacher, batch) for m in (start, general, alone))
    assert q["kl"] < 0.1 * q0["kl"], (q0, q)                 # measured: 1.09 → 0.021
    assert q["kl"] < 0.4 * q_alone["kl"], (q, q_alone)       # measured: 0.021 vs 0.236 without the teacher
    info = json.loads((root / "run" / "general" / "sst2" / "lineage.json").read_text())["info"]
    assert info["objective"] == "mlm" and info["layers"] == [0, 3] and info["texts"] == 2000
    assert info["ce_positions"] == "all" and info["cos_pairs"] == [[1, 1], [2, 4]]


def test_head_only_training_keeps_the_encoder(mlm_run):
    from safetensors.torch import load_file

    root = mlm_run
    base = load_file(str(root / "base" / "model.safetensors"))
    fitted = load_file(str(root / "run" / "head-only" / "sst2" / "model.safetensors"))
    enc = [k for k in base if "encoder" in k or "embeddings" in k]
    assert enc and all(torch.equal(base[k], fitted["bert." + k.removeprefix("bert.")]) for k in enc)
    head = AutoModelForMaskedLM.from_pretrained(root / "run" / "head-only" / "sst2")
    info = json.loads((root / "run" / "head-only" / "sst2" / "lineage.json").read_text())["info"]
    assert info["trainable"] == "head" and info["trained_params"] < head.num_parameters() / 2


def test_general_distilled_student_can_be_finetuned(mlm_run):
    root = mlm_run
    model = AutoModelForSequenceClassification.from_pretrained(root / "run" / "tuned" / "sst2")
    assert type(model).__name__ == "DistilBertForSequenceClassification" and model.config.n_layers == 2
    assert json.loads((root / "run" / "tuned" / "sst2" / "metrics.json").read_text())["num_examples"] == 64


def test_mlm_finetune_fields_are_validated():
    def parse(**stage):
        return parse_recipe({"name": "r", "tasks": ["sst2"], "glue_dir": str(GLUE), "output_dir": "/tmp/o",
                             "stages": [{"name": "s", "kind": "finetune", **stage}]}, base_dir=Path("/tmp"))

    with pytest.raises(RecipeError, match="text_source: required with objective: mlm"):
        parse(objective="mlm")
    with pytest.raises(RecipeError, match="only with objective: mlm"):
        parse(trainable="head")
    cfg = parse(objective="mlm", text_source="train").stages[0]
    assert cfg.mlm_probability == 0.15 and cfg.trainable == "all" and cfg.needs_train_split()


def test_text_sources_file_folder_dataset_and_task_split(tmp_path):
    import datasets

    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "b.txt").write_text("three\n")
    (tmp_path / "dir" / "c.txt").write_text("four\n")
    datasets.Dataset.from_dict({"body": ["five", "six"]}).save_to_disk(str(tmp_path / "ds"))
    assert load_text(str(tmp_path / "a.txt"), "text") == ["one", "two"]
    assert load_text(str(tmp_path / "dir"), "text") == ["three", "four"]
    assert load_text(str(tmp_path / "ds"), "body") == ["five", "six"]
    from hfdistill import glue

    data = glue.load_task("mrpc", glue_dir=GLUE, max_train_samples=5)
    assert len(load_text("train", "text", data)) == 10    # both sentences of each pair


@pytest.mark.slow
def test_general_distillation_from_the_packaged_minilm(minilm_path, tmp_path):
    """The real chain from the packaged MiniLM (no MLM head): head fit → general → task distillation."""
    stage = {"max_steps": 4, "batch_size": 8}
    recipe = {"name": "minilm-general", "model": "minilm-l6", "tasks": ["sst2"], "glue_dir": str(GLUE),
              "max_train_samples": 64, "max_eval_samples": 32, "latency_samples": 30, "max_seq_length": 32,
              "output_dir": str(tmp_path / "run"),
              "stages": [{"name": "mlm-head", "kind": "finetune", "objective": "mlm", "text_source": "train",
                          "trainable": "head", **stage},
                         {"name": "general", "kind": "distill", "objective": "mlm", "text_source": "train", **stage},
                         {"name": "teacher", "kind": "finetune", "from": "model", **stage},
                         {"name": "student", "kind": "distill", "from": "teacher", "student_from": "general",
                          **stage}]}
    from hfdistill.pipeline import run

    run(parse_recipe(recipe, base_dir=tmp_path), publish=False)
    info = json.loads((tmp_path / "run" / "general" / "sst2" / "lineage.json").read_text())["info"]
    assert info["teacher_layers"] == 6 and info["head_init"] == "teacher (exact)"
    assert (tmp_path / "run" / "student" / "sst2" / "metrics.json").is_file()
