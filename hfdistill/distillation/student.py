"""Student construction: keep a subset of a BERT-family teacher's layers (DistilBERT's initialisation).

`build_student(teacher, layers, architecture, init)` returns a new model that
  - `architecture="distilbert"`: is a stock `DistilBert*` model. DistilBERT has no token-type (segment) embeddings,
    so the teacher's type-0 vector is folded into the position embeddings: for single-segment input every token's
    embedding is unchanged, and a student that keeps *all* layers reproduces the teacher's hidden states exactly.
    The classification head is only approximate at initialisation: DistilBERT's head is
    `pre_classifier → ReLU → classifier` where BERT's is `pooler → tanh → classifier`; the student's
    `pre_classifier`/`classifier` start from the teacher's pooler/classifier weights and distillation adapts them.
  - `architecture="bert"`: keeps the teacher's own class with fewer layers and `type_vocab_size: 1` holding the
    teacher's type-0 vector (the tokenizer then stops emitting `token_type_ids`), so pair tasks still run and an
    all-layers student gives the teacher's logits exactly on single-segment input. With `token_types="keep"` it
    keeps all the teacher's token types (the tokenizer keeps emitting `token_type_ids`): an all-layers student
    then gives the teacher's logits exactly on pair input too (segment B keeps its type-1 vector), and the head
    is the teacher's pooler + classifier, exact at initialisation.
  - `init="random"`: the same shape with fresh weights (the DistilBERT ablation).

Both load with plain `AutoModelFor*.from_pretrained` / `AutoTokenizer` (no remote code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Sequence

import torch
from torch import nn

from hfdistill.errors import ModelError
from hfdistill.models import check_model_dir, refuse_untrained  # (also registers the pruned Auto classes)

Architecture = Literal["distilbert", "bert"]
Init = Literal["teacher", "random"]
TokenTypes = Literal["fold", "keep"]

#: What the student tokenizer feeds the model: no token_type_ids (there is no segment embedding to use them).
STUDENT_INPUT_NAMES = ["input_ids", "attention_mask"]

# BERT layer parameter → DistilBERT TransformerBlock parameter
_LAYER_MAP = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}


# ---------------------------------------------------------------------------------------------------- layer choice
def default_layers(num_teacher_layers: int) -> list[int]:
    """Every other layer, starting with the first (6 → [0, 2, 4]).

    When the teacher's two halves hold an even number of layers each (n % 4 == 0) the second half takes the odd
    layers instead, so the last layer is kept, as DistilBERT did for BERT-base (12 → [0, 2, 4, 7, 9, 11]).
    """
    n = num_teacher_layers
    if n % 4 == 0:
        half = n // 2
        return list(range(0, half, 2)) + list(range(half + 1, n, 2))
    return list(range(0, n, 2))


def select_layers(num_teacher_layers: int, layers: Optional[Sequence[int]] = None,
                  num_layers: Optional[int] = None) -> list[int]:
    """The teacher layers the student keeps, in order.

    `layers` lists them explicitly; `num_layers` asks for that many, spread evenly from the first to the last
    layer (the default rule when it equals the default count); neither gives `default_layers`.
    """
    n = num_teacher_layers
    if layers is not None:
        chosen = [int(i) for i in layers]
        bad = [i for i in chosen if not 0 <= i < n]
        if bad:
            raise ModelError(f"layers: {bad} out of range for a teacher with {n} layers (0..{n - 1})")
        if chosen != sorted(set(chosen)) or not chosen:
            raise ModelError(f"layers: must be a non-empty increasing list without repeats, got {chosen}")
        return chosen
    if num_layers is None:
        return default_layers(n)
    if not 1 <= num_layers <= n:
        raise ModelError(f"num_layers: {num_layers} must be between 1 and the teacher's {n} layers")
    if num_layers == len(default_layers(n)):
        return default_layers(n)
    if num_layers == 1:
        return [n - 1]
    return sorted({round(i * (n - 1) / (num_layers - 1)) for i in range(num_layers)})


# ---------------------------------------------------------------------------------------------------- teacher parts
def _base(teacher: nn.Module) -> nn.Module:
    """The encoder part of a BERT-family model (`bert`, `roberta`, … submodule, or the model itself)."""
    base = getattr(teacher, getattr(teacher, "base_model_prefix", ""), None) or teacher
    emb = getattr(base, "embeddings", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    ok = (emb is not None and layers is not None and len(layers) > 0
          and all(hasattr(emb, a) for a in ("word_embeddings", "position_embeddings", "LayerNorm"))
          and hasattr(layers[0], "attention") and hasattr(layers[0].attention, "self")
          and hasattr(layers[0].attention.self, "query") and hasattr(layers[0], "intermediate")
          and getattr(emb, "embedding_size", base.config.hidden_size) == base.config.hidden_size
          and not hasattr(base, "embeddings_project"))
    if not ok:
        raise ModelError(f"teacher {type(teacher).__name__} is not a BERT-family encoder "
                         "(needs embeddings.word/position_embeddings and encoder.layer[i].attention.self.query)")
    return base


def _position_offset(teacher_config) -> int:
    """RoBERTa-style models number positions from padding_idx + 1; BERT from 0."""
    if teacher_config.model_type in ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl"):
        return int(teacher_config.pad_token_id) + 1
    return 0


def _type0_vector(base: nn.Module) -> torch.Tensor:
    tte = getattr(base.embeddings, "token_type_embeddings", None)
    if tte is None:
        return torch.zeros(base.config.hidden_size)
    return tte.weight.detach()[0].clone()


def _copy_linear(dst: nn.Linear, src: nn.Linear) -> None:
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        if dst.bias is not None and src.bias is not None:
            dst.bias.copy_(src.bias)


def _classifier_parts(teacher: nn.Module, base: nn.Module) -> tuple[Optional[nn.Linear], Optional[nn.Linear]]:
    """(pre-classifier dense, output linear) of a sequence-classification teacher, whichever family's head it has."""
    clf = getattr(teacher, "classifier", None)
    if isinstance(clf, nn.Linear):  # BERT: pooler.dense → tanh → classifier
        pooler = getattr(base, "pooler", None)
        return (pooler.dense if pooler is not None else None), clf
    if clf is not None and isinstance(getattr(clf, "dense", None), nn.Linear) \
            and isinstance(getattr(clf, "out_proj", None), nn.Linear):  # RoBERTa/ELECTRA: dense → act → out_proj
        return clf.dense, clf.out_proj
    return None, None


def is_masked_lm(model: nn.Module) -> bool:
    return type(model).__name__.endswith("ForMaskedLM")


def is_sequence_classifier(model: nn.Module) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


# ---------------------------------------------------------------------------------------------------- DistilBERT
def distilbert_config(teacher_config, num_layers: int, masked_lm: bool = False):
    """A DistilBertConfig with the teacher's sizes, activation and labels.

    DistilBERT hard-codes LayerNorm eps 1e-12 (BERT's default); a teacher with another eps is converted with a
    tiny numerical difference (reported by `build_student` as `exact: False`).
    """
    from transformers import DistilBertConfig

    c = teacher_config
    act = c.hidden_act if isinstance(c.hidden_act, str) else "gelu"
    kwargs = dict(
        vocab_size=c.vocab_size,
        max_position_embeddings=c.max_position_embeddings - _position_offset(c),
        n_layers=num_layers,
        n_heads=c.num_attention_heads,
        dim=c.hidden_size,
        hidden_dim=c.intermediate_size,
        dropout=c.hidden_dropout_prob,
        attention_dropout=c.attention_probs_dropout_prob,
        activation=act,
        initializer_range=c.initializer_range,
        seq_classif_dropout=getattr(c, "classifier_dropout", None) or c.hidden_dropout_prob,
        pad_token_id=c.pad_token_id,
        tie_word_embeddings=True,
    )
    if not masked_lm:
        kwargs.update(num_labels=c.num_labels, id2label=dict(c.id2label), label2id=dict(c.label2id),
                      problem_type=c.problem_type)
    for key in ("bos_token_id", "eos_token_id"):
        if getattr(c, key, None) is not None:
            kwargs[key] = getattr(c, key)
    return DistilBertConfig(**kwargs)


def _fill_distilbert(student, teacher: nn.Module, base: nn.Module, layers: Sequence[int]) -> dict:
    """Copy embeddings (type-0 vector folded into positions), the kept layers and the head into `student`."""
    db = student.distilbert
    emb, temb = db.embeddings, base.embeddings
    off = _position_offset(base.config)
    n_pos = db.config.max_position_embeddings
    with torch.no_grad():
        emb.word_embeddings.weight.copy_(temb.word_embeddings.weight)
        emb.position_embeddings.weight.copy_(temb.position_embeddings.weight[off:off + n_pos] + _type0_vector(base))
        emb.LayerNorm.weight.copy_(temb.LayerNorm.weight)
        emb.LayerNorm.bias.copy_(temb.LayerNorm.bias)
    for j, i in enumerate(layers):
        src, dst = base.encoder.layer[i], db.transformer.layer[j]
        for s_name, d_name in _LAYER_MAP.items():
            s_mod, d_mod = src.get_submodule(s_name), dst.get_submodule(d_name)
            if isinstance(s_mod, nn.LayerNorm):
                with torch.no_grad():
                    d_mod.weight.copy_(s_mod.weight)
                    d_mod.bias.copy_(s_mod.bias)
            else:
                _copy_linear(d_mod, s_mod)
    head = "none"
    if hasattr(student, "pre_classifier"):
        pre, out = _classifier_parts(teacher, base)
        if pre is not None:
            _copy_linear(student.pre_classifier, pre)
        if out is not None and out.weight.shape == student.classifier.weight.shape:
            _copy_linear(student.classifier, out)
        head = "teacher (approximate: ReLU head from a tanh head)" if pre is not None and out is not None \
            else "random (teacher has no compatible head)"
    if hasattr(student, "vocab_transform"):
        transform, bias = _mlm_head_parts(teacher)
        _copy_linear(student.vocab_transform, transform.dense)
        ln = transform.LayerNorm
        with torch.no_grad():
            student.vocab_layer_norm.weight.copy_(ln.weight)
            student.vocab_layer_norm.bias.copy_(ln.bias)
            student.vocab_projector.bias.copy_(bias)
        head = "teacher (exact)"
    return {"head_init": head}


class _Transform:
    def __init__(self, dense, layer_norm):
        self.dense, self.LayerNorm = dense, layer_norm


def _mlm_head_parts(teacher: nn.Module) -> tuple[_Transform, torch.Tensor]:
    """(transform dense + LayerNorm, output bias) of a BERT (`cls.predictions`) or RoBERTa (`lm_head`) MLM head."""
    cls = getattr(teacher, "cls", None)
    if cls is not None and hasattr(cls, "predictions"):
        p = cls.predictions
        bias = p.decoder.bias if p.decoder.bias is not None else p.bias
        return _Transform(p.transform.dense, p.transform.LayerNorm), bias.detach()
    lm = getattr(teacher, "lm_head", None)
    if lm is not None and hasattr(lm, "dense") and hasattr(lm, "layer_norm"):
        bias = lm.decoder.bias if getattr(lm.decoder, "bias", None) is not None else lm.bias
        return _Transform(lm.dense, lm.layer_norm), bias.detach()
    raise ModelError(f"teacher {type(teacher).__name__} has no BERT-style masked-LM head (cls.predictions / lm_head)")


# ---------------------------------------------------------------------------------------------------- BERT (same class)
def _bert_student(teacher: nn.Module, base: nn.Module, layers: Sequence[int], keep_types: bool = False):
    """The teacher's own class with only `layers` and one token type (the teacher's type 0), or with all the
    teacher's token types (`keep_types`)."""
    config = teacher.config.__class__.from_dict(teacher.config.to_dict())
    config.num_hidden_layers = len(layers)
    has_types = getattr(base.embeddings, "token_type_embeddings", None) is not None
    if has_types and not keep_types:
        config.type_vocab_size = 1
    student = type(teacher)(config)
    renumber = {f"encoder.layer.{i}.": f"encoder.layer.{j}." for j, i in enumerate(layers)}
    state = {}
    for name, tensor in teacher.state_dict().items():
        if ".encoder.layer." in name or name.startswith("encoder.layer."):
            key = next((k for k in renumber if k in name), None)
            if key is None:
                continue  # a dropped layer
            name = name.replace(key, renumber[key])
        if name.endswith("embeddings.token_type_embeddings.weight") and not keep_types:
            tensor = tensor[:1]
        state[name] = tensor
    missing, unexpected = student.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise ModelError(f"could not copy the teacher into a {len(layers)}-layer student: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    return student


# ---------------------------------------------------------------------------------------------------- public
def build_student(teacher: nn.Module, layers: Optional[Sequence[int]] = None, num_layers: Optional[int] = None,
                  architecture: Architecture = "distilbert", init: Init = "teacher",
                  seed: int = 0, token_types: TokenTypes = "fold") -> tuple[nn.Module, dict]:
    """Build the student from a loaded teacher (`*ForSequenceClassification` or `*ForMaskedLM`).

    `token_types`: `fold` the teacher's type-0 vector into the embeddings (one segment type; segment B of a pair
    then looks like segment A), or `keep` the teacher's token-type embeddings (`architecture="bert"` only).
    Returns `(student, facts)`; facts record the kept layers, architecture, token types, init and head
    initialisation.
    """
    base = _base(teacher)
    n = len(base.encoder.layer)
    kept = select_layers(n, layers, num_layers)
    masked_lm = is_masked_lm(teacher)
    if not masked_lm and not is_sequence_classifier(teacher):
        raise ModelError(f"teacher {type(teacher).__name__} has no task head: distil from a "
                         "*ForSequenceClassification (fine-tune first) or, with objective: mlm, a *ForMaskedLM")
    if token_types not in ("fold", "keep"):
        raise ModelError(f"token_types: unknown {token_types!r} (fold or keep)")
    if token_types == "keep" and architecture != "bert":
        raise ModelError("token_types: keep needs architecture: bert (DistilBERT has no token-type embeddings)")
    if getattr(base.embeddings, "token_type_embeddings", None) is None:
        token_types = "fold"  # nothing to keep (e.g. a RoBERTa-style teacher without segment types)
    facts = {"teacher_layers": n, "layers": kept, "num_layers": len(kept), "architecture": architecture,
             "token_types": token_types, "init": init, "student_class": None}
    if architecture == "distilbert":
        from transformers import DistilBertForMaskedLM, DistilBertForSequenceClassification

        config = distilbert_config(teacher.config, len(kept), masked_lm=masked_lm)
        cls = DistilBertForMaskedLM if masked_lm else DistilBertForSequenceClassification
        torch.manual_seed(seed)
        student = cls(config)
        if init == "teacher":
            facts.update(_fill_distilbert(student, teacher, base, kept))
        facts["exact"] = abs(float(getattr(teacher.config, "layer_norm_eps", 1e-12)) - 1e-12) < 1e-15
    elif architecture == "bert":
        student = _bert_student(teacher, base, kept, keep_types=token_types == "keep")
        facts["head_init"] = "teacher (exact)"
        facts["exact"] = True
        if init == "random":
            torch.manual_seed(seed)
            student = type(student)(student.config)
    else:
        raise ModelError(f"architecture: unknown {architecture!r} (distilbert or bert)")
    if init == "random":
        facts["head_init"] = "random"
        facts["exact"] = False
    elif init != "teacher":
        raise ModelError(f"init: unknown {init!r} (teacher or random)")
    facts["student_class"] = type(student).__name__
    facts["params"] = sum(p.numel() for p in student.parameters())
    student.eval()
    return student, facts


def matched_hidden_layers(layers: Sequence[int]) -> list[tuple[int, int]]:
    """(student hidden-state index, teacher hidden-state index) pairs for the cosine loss.

    `hidden_states[0]` is the embedding output and `hidden_states[k]` the output of layer k-1, so student layer
    j (kept teacher layer i) is `student[j + 1] ↔ teacher[i + 1]`.
    """
    return [(j + 1, i + 1) for j, i in enumerate(layers)]


def cosine_pairs(layers: Sequence[int], num_teacher_layers: int, which: str = "matched") -> list[tuple[int, int]]:
    """The (student, teacher) hidden-state pairs L_cos aligns.

    `matched`: every kept layer with the teacher layer it was copied from (`matched_hidden_layers`).
    `last`: the student's output with the teacher's output, `student[len(layers)] ↔ teacher[num_teacher_layers]`,
    whichever layers are kept (DistilBERT aligns the last hidden states), so [0, 2, 4] of 6 gives (3, 6).
    """
    if which == "last":
        return [(len(layers), num_teacher_layers)]
    if which == "matched":
        return matched_hidden_layers(layers)
    raise ModelError(f"cos_layers: unknown {which!r} (matched or last)")


def student_input_names(model: nn.Module) -> list[str]:
    """What the student's tokenizer emits: `token_type_ids` too when the student has more than one token type."""
    types = getattr(model.config, "type_vocab_size", 0) or 0
    return list(STUDENT_INPUT_NAMES) + (["token_type_ids"] if types > 1 else [])


def save_student_tokenizer(teacher_dir: Path, out: Path, input_names: Sequence[str] = STUDENT_INPUT_NAMES) -> None:
    """Save the teacher's tokenizer for the student, emitting only `input_names` (default: input_ids and
    attention_mask; see `student_input_names`).

    `model_input_names` is passed at load time: that is what `save_pretrained` writes to tokenizer_config.json
    (setting the attribute afterwards is not saved).
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(teacher_dir), model_input_names=list(input_names))
    tok.save_pretrained(str(out))


def load_teacher(teacher_dir: Path, masked_lm: bool = False, stage: str = "distill") -> nn.Module:
    """Load a teacher folder in eval mode with gradients off (the teacher never trains). A teacher whose head
    (classifier, or masked-LM head with `masked_lm`) would be randomly initialised is refused, naming `stage`."""
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

    cls = AutoModelForMaskedLM if masked_lm else AutoModelForSequenceClassification
    try:
        model, info = cls.from_pretrained(str(check_model_dir(teacher_dir)), output_loading_info=True)
    except ModelError:
        raise
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load teacher {teacher_dir} as {cls.__name__}: {str(e).splitlines()[0]}") from None
    refuse_untrained(Path(teacher_dir), info, stage, "mlm" if masked_lm else "classifier")
    model.eval()
    model.requires_grad_(False)
    return model


def load_masked_lm(path: Path, trust_remote_code: bool = False) -> tuple[nn.Module, list[str]]:
    """A folder as a `*ForMaskedLM` model to train (the MLM-head fit), with the names of the weights the folder
    lacked and that start freshly initialised (e.g. the packaged MiniLM's whole `cls.predictions` head)."""
    from transformers import AutoModelForMaskedLM

    try:
        model, info = AutoModelForMaskedLM.from_pretrained(str(check_model_dir(path)), output_loading_info=True,
                                                           trust_remote_code=trust_remote_code)
    except ModelError:
        raise
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load {path} as a masked-LM model: {str(e).splitlines()[0]}") from None
    return model, sorted(info.get("missing_keys") or [])
