"""Pruned-model configs and classes: Auto registration, the choice between a stock and a pruned config, saving.

The classes themselves live in `modeling_hfdistill_pruned.py`, a file that imports only torch and transformers
and is copied into every saved pruned folder (`auto_map`), so the folder loads with `trust_remote_code=True`
without hfdistill. Importing this module registers the same classes with the Auto classes, so with hfdistill
imported `AutoModelForSequenceClassification.from_pretrained(path)` works without remote code.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    BertConfig,
    DistilBertConfig,
    PretrainedConfig,
    PreTrainedModel,
)

from hfdistill.errors import ModelError
from hfdistill.models import modeling_hfdistill_pruned as _modeling
from hfdistill.models.modeling_hfdistill_pruned import (
    AUTO_MAP,
    PrunedBertConfig,
    PrunedBertForSequenceClassification,
    PrunedBertModel,
    PrunedDistilBertConfig,
    PrunedDistilBertForSequenceClassification,
    PrunedDistilBertModel,
)

MODELING_FILE = Path(_modeling.__file__)
PRUNED_MODEL_TYPES = tuple(AUTO_MAP)


def register_auto_classes() -> None:
    """Register the pruned configs/classes with AutoConfig, AutoModel and AutoModelForSequenceClassification."""
    for config_cls, base_cls, seq_cls in (
        (PrunedBertConfig, PrunedBertModel, PrunedBertForSequenceClassification),
        (PrunedDistilBertConfig, PrunedDistilBertModel, PrunedDistilBertForSequenceClassification),
    ):
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        AutoModel.register(config_cls, base_cls, exist_ok=True)
        AutoModelForSequenceClassification.register(config_cls, seq_cls, exist_ok=True)


register_auto_classes()


def family_of(config: PretrainedConfig) -> str:
    """"bert" or "distilbert": the architecture family a (pruned or stock) config belongs to."""
    if isinstance(config, (BertConfig, PrunedBertConfig)) or config.model_type in ("bert", "hfdistill_pruned_bert"):
        return "bert"
    if isinstance(config, DistilBertConfig) or config.model_type in ("distilbert", "hfdistill_pruned_distilbert"):
        return "distilbert"
    raise ModelError(f"pruning supports BERT and DistilBERT models, not model_type {config.model_type!r}")


def pruned_config(parent: PretrainedConfig, heads: list[int], head_size: int, ffn: list[int]) -> PretrainedConfig:
    """The config of a model with `heads[i]` heads of `head_size` dims and `ffn[i]` FFN neurons in layer i.

    A stock config when the shapes allow one (every layer keeps all its heads at the stock head size, and all layers
    have the same FFN size: FFN-only pruning), otherwise a Pruned*Config recording the per-layer sizes.
    """
    family = family_of(parent)
    data = parent.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version", "heads_per_layer",
                "attention_head_size", "intermediate_size_per_layer", "hidden_dim_per_layer"):
        data.pop(key, None)
    if family == "bert":
        n_heads, hidden = data["num_attention_heads"], data["hidden_size"]
        if n_heads * head_size == hidden and all(h == n_heads for h in heads) and len(set(ffn)) == 1:
            return BertConfig(**{**data, "intermediate_size": ffn[0]})
        return PrunedBertConfig(heads_per_layer=heads, attention_head_size=head_size,
                                intermediate_size_per_layer=ffn,
                                **{**data, "intermediate_size": max(ffn), "num_attention_heads": n_heads})
    n_heads, dim = data["n_heads"], data["dim"]
    if n_heads * head_size == dim and all(h == n_heads for h in heads) and len(set(ffn)) == 1:
        return DistilBertConfig(**{**data, "hidden_dim": ffn[0]})
    return PrunedDistilBertConfig(heads_per_layer=heads, attention_head_size=head_size, hidden_dim_per_layer=ffn,
                                  **{**data, "hidden_dim": max(ffn)})


def model_class_for(config: PretrainedConfig, with_head: bool = True) -> type[PreTrainedModel]:
    """The class that builds `config`: a stock transformers class or one of the pruned classes."""
    mapping = AutoModelForSequenceClassification if with_head else AutoModel
    return mapping._model_mapping[type(config)]


def save_pruned(model: PreTrainedModel, path: Path) -> None:
    """save_pretrained, plus, for a Pruned*Config, the modeling file and `auto_map` so the folder loads on its own
    with `trust_remote_code=True`."""
    path = Path(path)
    model_type = model.config.model_type
    if model_type in AUTO_MAP:
        module = MODELING_FILE.stem
        model.config.auto_map = {auto: f"{module}.{name}" for auto, name in AUTO_MAP[model_type].items()}
    model.save_pretrained(path)
    if model_type in AUTO_MAP:
        shutil.copyfile(MODELING_FILE, path / MODELING_FILE.name)
