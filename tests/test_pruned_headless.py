"""A pruned layer left with no heads skips attention entirely (LayerNorm(x + bias) for BERT, the bias for
DistilBERT) and gives the outputs of the stock path (empty context → zero-width output projection → bias)."""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification

from hfdistill import pruning
from hfdistill.models.modeling_hfdistill_pruned import HeadlessBertAttention, HeadlessDistilBertAttention
from hfdistill.models.pruned_bert import save_pruned
from tests.test_pruning import make_batches, tiny_bert, tiny_distilbert

torch.set_num_threads(1)


class StockBertPath(torch.nn.Module):
    """The unskipped path: BertAttention's output module applied to an empty (zero-head) context."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, hidden_states, *args, **kwargs):
        return self.output(hidden_states.new_zeros(*hidden_states.shape[:-1], 0), hidden_states), None


class StockDistilBertPath(torch.nn.Module):
    def __init__(self, out_lin):
        super().__init__()
        self.out_lin = out_lin

    def forward(self, hidden_states, *args, **kwargs):
        return self.out_lin(hidden_states.new_zeros(*hidden_states.shape[:-1], 0)), None


def _headless(model):
    heads, ffn = pruning.full_masks(model)
    heads[1] = torch.zeros_like(heads[1])  # layer 1 loses all its heads
    heads[0][:2] = 0
    pruned = pruning.build_pruned_model(model, heads, ffn).eval()
    return pruned, pruning.layers_of(pruned)[1]


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_bert_layer_without_heads_skips_attention_with_the_stock_outputs(tmp_path):
    pruned, layer = _headless(tiny_bert())
    assert isinstance(layer.attention, HeadlessBertAttention) and pruning.layer_sizes(pruned)[0] == [2, 0, 4]
    with torch.no_grad():
        layer.attention.output.dense.bias.normal_(0, 1.0)  # a bias that matters
    batch = make_batches()[0]
    skipped = _logits(pruned, batch)
    save_pruned(pruned, tmp_path)  # the weights keep their names: the folder loads back with the same outputs
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert torch.allclose(_logits(loaded, batch), skipped, atol=1e-6)
    skip_module = layer.attention
    layer.attention = StockBertPath(skip_module.output)
    assert torch.allclose(_logits(pruned, batch), skipped, atol=1e-6)
    with torch.no_grad():
        skip_module.output.dense.bias.zero_()
    assert not torch.allclose(_logits(pruned, batch), skipped, atol=1e-3)  # the bias is part of the result


def test_distilbert_layer_without_heads_skips_attention_with_the_stock_outputs():
    pruned, layer = _headless(tiny_distilbert())
    assert isinstance(layer.attention, HeadlessDistilBertAttention)
    with torch.no_grad():
        layer.attention.out_lin.bias.normal_(0, 1.0)
    batch = make_batches()[0]
    skipped = _logits(pruned, batch)
    layer.attention = StockDistilBertPath(layer.attention.out_lin)
    assert torch.allclose(_logits(pruned, batch), skipped, atol=1e-6)
