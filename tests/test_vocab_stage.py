"""Vocabulary pruning (issue 15): tokenizer and embeddings rewritten together, outputs unchanged on the text the
vocabulary came from, size and dev behaviour reported."""

import json

import pytest
import torch
import yaml
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from hfdistill import vocab


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, minilm_path):
    path = tmp_path_factory.mktemp("clf")
    tok = AutoTokenizer.from_pretrained(str(minilm_path))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=2)
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_pruned_tokenizer_and_embeddings_give_the_same_outputs_on_the_kept_text(classifier, tmp_path):
    tok = AutoTokenizer.from_pretrained(str(classifier))
    texts = [("a gripping , funny film", None), ("the plot is thin", "but the actors shine")]
    kept = vocab.kept_ids(tok, vocab.token_counts(tok, texts))
    assert set(tok.all_special_ids) <= set(kept) and len(kept) < 40
    model = BertForSequenceClassification.from_pretrained(str(classifier)).eval()
    enc = tok(["a gripping , funny film"], ["the plot is thin"], return_tensors="pt")
    before = model(**enc).logits
    vocab.shrink_embeddings(model, kept, tok.pad_token_id)
    remap = vocab.write_tokenizer(classifier, kept, tmp_path)
    new_tok = AutoTokenizer.from_pretrained(str(tmp_path))
    new_enc = new_tok(["a gripping , funny film"], ["the plot is thin"], return_tensors="pt")
    assert new_enc["input_ids"].tolist()[0] == [remap[i] for i in enc["input_ids"].tolist()[0]]
    assert torch.allclose(model(**new_enc).logits, before, atol=1e-6)
    assert model.get_input_embeddings().num_embeddings == len(kept) == len(new_tok)
    # a word made of dropped pieces is no longer what it was
    assert new_tok("zebra")["input_ids"] != [remap.get(i) for i in tok("zebra")["input_ids"]]


def test_vocab_stage_in_a_recipe(tmp_path, classifier, glue_dir):
    from hfdistill.pipeline import run

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "v", "model": str(classifier), "tasks": ["sst2"], "glue_dir": str(glue_dir),
        "max_train_samples": 300, "max_eval_samples": 60, "max_seq_length": 32, "latency_samples": 30,
        "stages": [{"name": "small-vocab", "kind": "vocab", "splits": ["train"]}]}))
    (res,) = run(recipe, publish=False)
    info = json.loads((res.path / "lineage.json").read_text())["info"]
    assert info["vocab_before"] == 30522 and 300 < info["vocab_after"] < 3000
    assert info["params_before"] - info["params_after"] == (30522 - info["vocab_after"]) * 32
    assert info["check"]["max_abs_diff"] < 1e-5 and info["dev_unk_after"] > info["dev_unk_before"]
    config = json.loads((res.path / "config.json").read_text())
    assert config["vocab_size"] == info["vocab_after"]
    assert len(AutoTokenizer.from_pretrained(str(res.path))) == info["vocab_after"]
