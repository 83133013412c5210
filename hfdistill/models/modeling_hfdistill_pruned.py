"""Structurally pruned BERT / DistilBERT: per-layer attention heads and FFN sizes.

This file is self-contained (it imports only torch and transformers) because it is also copied into every pruned
model folder and named in `config.json["auto_map"]`, so that

    AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)

works without hfdistill installed. The classes subclass the transformers ones and only change Linear shapes after
the stock modules are built; the forward code is transformers' own. Transformers' self-attention reshapes with
`(…, -1, attention_head_size)`, so a layer with fewer heads just needs narrower Q/K/V/output matrices and its
own `num_attention_heads` / `all_head_size`; a layer with no heads at all (only when the recipe allows it) skips
attention entirely: what is left of it is the output projection's bias, so the block computes
`LayerNorm(x + bias)` directly (BERT; DistilBERT returns the bias), the same result as the stock path through an
empty context and a zero-width projection, without those calls (bench/prune_profile.py).
"""

from __future__ import annotations

import warnings

from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    DistilBertModel,
)


def _per_layer(value, n_layers: int, default: int, name: str) -> list[int]:
    if value is None:
        return [int(default)] * n_layers
    value = [int(v) for v in value]
    if len(value) != n_layers:
        raise ValueError(f"{name} has {len(value)} entries for {n_layers} layers")
    return value


class PrunedBertConfig(BertConfig):
    """A BertConfig whose layers may each have their own number of heads and FFN size.

    `heads_per_layer[i]` heads of `attention_head_size` dims in layer i (the attention output is
    `heads_per_layer[i] * attention_head_size` wide, not `hidden_size`), `intermediate_size_per_layer[i]` FFN neurons.
    """

    model_type = "hfdistill_pruned_bert"

    def __init__(self, heads_per_layer=None, attention_head_size=None, intermediate_size_per_layer=None, **kwargs):
        super().__init__(**kwargs)
        n = self.num_hidden_layers
        self.attention_head_size = int(attention_head_size or self.hidden_size // self.num_attention_heads)
        self.heads_per_layer = _per_layer(heads_per_layer, n, self.num_attention_heads, "heads_per_layer")
        self.intermediate_size_per_layer = _per_layer(intermediate_size_per_layer, n, self.intermediate_size,
                                                      "intermediate_size_per_layer")


class PrunedDistilBertConfig(DistilBertConfig):
    """A DistilBertConfig with per-layer heads (`heads_per_layer`, each `attention_head_size` wide) and FFN sizes
    (`hidden_dim_per_layer`)."""

    model_type = "hfdistill_pruned_distilbert"

    def __init__(self, heads_per_layer=None, attention_head_size=None, hidden_dim_per_layer=None, **kwargs):
        super().__init__(**kwargs)
        n = self.n_layers
        self.attention_head_size = int(attention_head_size or self.dim // self.n_heads)
        self.heads_per_layer = _per_layer(heads_per_layer, n, self.n_heads, "heads_per_layer")
        self.hidden_dim_per_layer = _per_layer(hidden_dim_per_layer, n, self.hidden_dim, "hidden_dim_per_layer")


class HeadlessBertAttention(nn.Module):
    """BertAttention of a layer whose heads were all pruned: `LayerNorm(x + dropout(bias))` of the kept
    `output` module (BertSelfOutput with a zero-width dense), skipping the empty self-attention and projection.
    Its weights keep their names (`attention.output.dense.bias`, `attention.output.LayerNorm.*`)."""

    def __init__(self, output: nn.Module):
        super().__init__()
        self.output = output

    def forward(self, hidden_states, *args, **kwargs):
        out = self.output
        if out.dense.bias is not None:
            hidden_states = hidden_states + out.dropout(out.dense.bias.expand_as(hidden_states))
        return out.LayerNorm(hidden_states), None


class HeadlessDistilBertAttention(nn.Module):
    """DistilBERT attention with no heads left: only the output projection's bias remains."""

    def __init__(self, dim: int):
        super().__init__()
        self.out_lin = _linear(0, dim, nn.Linear(1, dim))

    def forward(self, hidden_states, *args, **kwargs):
        bias = self.out_lin.bias
        return (hidden_states.new_zeros(hidden_states.shape) if bias is None else bias.expand_as(hidden_states)), None


def _linear(in_features: int, out_features: int, like: nn.Linear) -> nn.Linear:
    with warnings.catch_warnings():  # a pruned-away layer part is a zero-element matrix; nothing to initialise
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return nn.Linear(in_features, out_features, bias=like.bias is not None,
                         device=like.weight.device, dtype=like.weight.dtype)


def resize_bert_layers(layers, hidden: int, head_size: int, heads: list[int], ffn: list[int]) -> None:
    """Give each BertLayer `heads[i]` heads of `head_size` dims and `ffn[i]` FFN neurons (fresh Linear modules)."""
    for layer, h, f in zip(layers, heads, ffn):
        att, width = layer.attention.self, h * head_size
        layer.attention.output.dense = _linear(width, hidden, layer.attention.output.dense)
        if h == 0:
            layer.attention = HeadlessBertAttention(layer.attention.output)
        else:
            for name in ("query", "key", "value"):
                setattr(att, name, _linear(hidden, width, getattr(att, name)))
            att.num_attention_heads, att.attention_head_size, att.all_head_size = h, head_size, width
            att.scaling = head_size ** -0.5
        layer.intermediate.dense = _linear(hidden, f, layer.intermediate.dense)
        layer.output.dense = _linear(f, hidden, layer.output.dense)


def resize_distilbert_layers(layers, dim: int, head_size: int, heads: list[int], ffn: list[int]) -> None:
    """Give each DistilBERT TransformerBlock `heads[i]` heads and `ffn[i]` FFN neurons (fresh Linear modules)."""
    for layer, h, f in zip(layers, heads, ffn):
        att, width = layer.attention, h * head_size
        if h == 0:
            layer.attention = HeadlessDistilBertAttention(dim)
            layer.attention.out_lin = _linear(0, dim, att.out_lin)
        else:
            for name in ("q_lin", "k_lin", "v_lin"):
                setattr(att, name, _linear(dim, width, getattr(att, name)))
            att.out_lin = _linear(width, dim, att.out_lin)
            att.n_heads, att.attention_head_size = h, head_size
            att.scaling = head_size ** -0.5
        layer.ffn.lin1 = _linear(dim, f, layer.ffn.lin1)
        layer.ffn.lin2 = _linear(f, dim, layer.ffn.lin2)


class PrunedBertModel(BertModel):
    config_class = PrunedBertConfig

    def __init__(self, config: PrunedBertConfig, add_pooling_layer: bool = True):
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        resize_bert_layers(self.encoder.layer, config.hidden_size, config.attention_head_size,
                           config.heads_per_layer, config.intermediate_size_per_layer)
        self.post_init()


class PrunedBertForSequenceClassification(BertForSequenceClassification):
    config_class = PrunedBertConfig

    def __init__(self, config: PrunedBertConfig):
        super().__init__(config)
        resize_bert_layers(self.bert.encoder.layer, config.hidden_size, config.attention_head_size,
                           config.heads_per_layer, config.intermediate_size_per_layer)
        self.post_init()


class PrunedDistilBertModel(DistilBertModel):
    config_class = PrunedDistilBertConfig

    def __init__(self, config: PrunedDistilBertConfig):
        super().__init__(config)
        resize_distilbert_layers(self.transformer.layer, config.dim, config.attention_head_size,
                                 config.heads_per_layer, config.hidden_dim_per_layer)
        self.post_init()


class PrunedDistilBertForSequenceClassification(DistilBertForSequenceClassification):
    config_class = PrunedDistilBertConfig

    def __init__(self, config: PrunedDistilBertConfig):
        super().__init__(config)
        resize_distilbert_layers(self.distilbert.transformer.layer, config.dim, config.attention_head_size,
                                 config.heads_per_layer, config.hidden_dim_per_layer)
        self.post_init()


#: What `auto_map` names in a saved folder, per pruned config class (module = this file's name).
AUTO_MAP = {
    "hfdistill_pruned_bert": {
        "AutoConfig": "PrunedBertConfig",
        "AutoModel": "PrunedBertModel",
        "AutoModelForSequenceClassification": "PrunedBertForSequenceClassification",
    },
    "hfdistill_pruned_distilbert": {
        "AutoConfig": "PrunedDistilBertConfig",
        "AutoModel": "PrunedDistilBertModel",
        "AutoModelForSequenceClassification": "PrunedDistilBertForSequenceClassification",
    },
}

__all__ = ["PrunedBertConfig", "PrunedBertModel", "PrunedBertForSequenceClassification", "PrunedDistilBertConfig",
           "PrunedDistilBertModel", "PrunedDistilBertForSequenceClassification", "AUTO_MAP"]
