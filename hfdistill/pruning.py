"""Structured pruning of attention heads and FFN neurons after Yang et al. 2022 (TextPruner).

Importance of a unit Θ (one head's output, one FFN intermediate neuron):  IS(Θ) = E_x |∂L(x)/∂Θ · Θ|.
It is measured with gates: a scalar per head multiplying that head's context before the attention output
projection, and one per FFN neuron multiplying the intermediate activation, installed as forward pre-hooks on the
output projections (no copy of the transformers modeling code). Each example gets its own gates (shape
[batch, units]), so one backward pass of the summed loss yields every per-example gradient, and
IS = mean over examples of |gate.grad · gate|.

Losses (`loss=`):
- "kl" (default, self-supervised, no labels): L_KL(x) = KL(stopgrad(q(x)) ‖ p(x)), q the original model, p the model
  being pruned (`hfdistill.losses.kl_importance_loss`).
  The trap: while p == q (the first iteration, when nothing is pruned yet) ∂L_KL/∂p = p − q = 0 exactly, so every
  score would be 0. On that iteration we use instead the expected per-example absolute score of the model's own
  log-likelihood under labels drawn from q:  IS(Θ) = E_x Σ_c q_c(x) |∂(−log p_c(x))/∂Θ · Θ|, i.e. what the
  sampled-pseudo-label estimator (ŷ ~ q(x), L = −log p_ŷ(x)) converges to, computed exactly (one backward per class,
  ≤ 3 for GLUE) so it has no sampling noise. Once something is pruned p ≠ q and L_KL itself is used.
  Regression heads (one output): the "first iteration" score is |∂p(x)/∂Θ · Θ| and later ones use
  MSE(p(x), q(x)).
- "label" (supervised): L = cross-entropy with the gold labels (MSE for regression), for comparison.

Pruning runs in `iterations` steps: masks are applied through the same gates, units are re-scored in between, and the
number kept shrinks linearly from the current size to the target. The result is cut out of the weights for real by
`build_pruned_model` (narrower Q/K/V/output and FFN matrices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from hfdistill.errors import ModelError, RecipeError
from hfdistill.losses import hard_label_loss, kl_importance_loss, mse_logit_loss
from hfdistill.models.pruned_bert import family_of, model_class_for, pruned_config

Masks = list[torch.Tensor]   # one 1-D {0,1} float tensor per layer
Scores = list[torch.Tensor]  # one 1-D float tensor per layer


# ---------------------------------------------------------------------------------------------------------------
# Architecture access: where the heads and FFN neurons live in BERT and DistilBERT.

@dataclass(frozen=True)
class Arch:
    family: str
    layers: str                 # attribute path from the base model to the ModuleList of layers
    qkv: tuple[str, str, str]   # per layer
    attn_out: str               # the projection whose input is the concatenated head contexts
    ffn_in: str
    ffn_out: str                # the projection whose input is the FFN intermediate activation


ARCHS = {
    "bert": Arch("bert", "encoder.layer", ("attention.self.query", "attention.self.key", "attention.self.value"),
                 "attention.output.dense", "intermediate.dense", "output.dense"),
    "distilbert": Arch("distilbert", "transformer.layer", ("attention.q_lin", "attention.k_lin", "attention.v_lin"),
                       "attention.out_lin", "ffn.lin1", "ffn.lin2"),
}


def arch_of(model: nn.Module) -> Arch:
    return ARCHS[family_of(model.config)]


def _base(model: nn.Module) -> nn.Module:
    return getattr(model, model.base_model_prefix, model)


def _layers_prefix(model: nn.Module) -> str:
    arch = arch_of(model)
    return (f"{model.base_model_prefix}." if _base(model) is not model else "") + arch.layers


def layers_of(model: nn.Module) -> list[nn.Module]:
    return list(_base(model).get_submodule(arch_of(model).layers))


def head_size_of(model: nn.Module) -> int:
    c = model.config
    if getattr(c, "attention_head_size", None):
        return int(c.attention_head_size)
    return (c.hidden_size // c.num_attention_heads) if family_of(c) == "bert" else (c.dim // c.n_heads)


def layer_sizes(model: nn.Module) -> tuple[list[int], list[int]]:
    """(heads per layer, FFN neurons per layer), read from the weight shapes."""
    arch, d = arch_of(model), head_size_of(model)
    heads = [layer.get_submodule(arch.attn_out).in_features // d for layer in layers_of(model)]
    ffn = [layer.get_submodule(arch.ffn_out).in_features for layer in layers_of(model)]
    return heads, ffn


def full_masks(model: nn.Module) -> tuple[Masks, Masks]:
    heads, ffn = layer_sizes(model)
    return [torch.ones(h) for h in heads], [torch.ones(f) for f in ffn]


# ---------------------------------------------------------------------------------------------------------------
# Gates

class Gates:
    """Per-example gates on every head and FFN neuron, as forward pre-hooks; use as a context manager.

    On each forward the hooks create fresh leaf gates of ones, shape [batch, units], and multiply the head contexts /
    FFN activations by gate · mask. After the forward, `head_gates[i]` / `ffn_gates[i]` hold layer i's gates so
    their gradients can be taken. Masks (0 = pruned) simulate pruning without touching the weights.
    """

    def __init__(self, model: nn.Module, head_masks: Masks | None = None, ffn_masks: Masks | None = None):
        self.model, self.arch, self.head_size = model, arch_of(model), head_size_of(model)
        full_h, full_f = full_masks(model)
        self.head_masks = [m.float() for m in (head_masks or full_h)]
        self.ffn_masks = [m.float() for m in (ffn_masks or full_f)]
        self.head_gates: list[torch.Tensor | None] = [None] * len(full_h)
        self.ffn_gates: list[torch.Tensor | None] = [None] * len(full_f)
        self._handles: list = []

    def _head_hook(self, i: int) -> Callable:
        def hook(module, args):
            x = args[0]
            n = self.head_masks[i].numel()
            if n == 0:
                return None
            gate = torch.ones(x.shape[0], n, dtype=x.dtype, device=x.device, requires_grad=True)
            self.head_gates[i] = gate
            g = gate * self.head_masks[i].to(x.device, x.dtype)
            y = x.view(*x.shape[:-1], n, self.head_size) * g.view(x.shape[0], *[1] * (x.dim() - 2), n, 1)
            return (y.reshape(x.shape), *args[1:])
        return hook

    def _ffn_hook(self, i: int) -> Callable:
        def hook(module, args):
            x = args[0]
            n = self.ffn_masks[i].numel()
            if n == 0:
                return None
            gate = torch.ones(x.shape[0], n, dtype=x.dtype, device=x.device, requires_grad=True)
            self.ffn_gates[i] = gate
            g = gate * self.ffn_masks[i].to(x.device, x.dtype)
            return (x * g.view(x.shape[0], *[1] * (x.dim() - 2), n), *args[1:])
        return hook

    def __enter__(self) -> "Gates":
        for i, layer in enumerate(layers_of(self.model)):
            self._handles.append(layer.get_submodule(self.arch.attn_out).register_forward_pre_hook(self._head_hook(i)))
            self._handles.append(layer.get_submodule(self.arch.ffn_out).register_forward_pre_hook(self._ffn_hook(i)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def all_gates(self) -> list[torch.Tensor]:
        return [g for g in self.head_gates + self.ffn_gates if g is not None]


# ---------------------------------------------------------------------------------------------------------------
# Importance scores

def _forward(model: nn.Module, batch: dict) -> torch.Tensor:
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    if arch_of(model).family == "distilbert":
        inputs.pop("token_type_ids", None)
    return model(**inputs).logits


@torch.no_grad()
def predict_logits(model: nn.Module, batches: Sequence[dict], head_masks: Masks | None = None,
                   ffn_masks: Masks | None = None) -> list[torch.Tensor]:
    """Logits of `model` (eval mode) on each batch, with optional masks applied through the gates."""
    was_training = model.training
    model.eval()
    with Gates(model, head_masks, ffn_masks):
        out = [_forward(model, b).detach().float() for b in batches]
    model.train(was_training)
    return out


def _is_unpruned(head_masks: Masks, ffn_masks: Masks) -> bool:
    return all(bool((m > 0).all()) for m in head_masks + ffn_masks)


def importance_scores(model: nn.Module, batches: Sequence[dict], *, loss: str = "kl",
                      original_logits: Sequence[torch.Tensor] | None = None, head_masks: Masks | None = None,
                      ffn_masks: Masks | None = None) -> tuple[Scores, Scores]:
    """IS = mean over examples of |∂L(x)/∂gate · gate| for every head and FFN neuron (see the module docstring).

    `original_logits` (q, one tensor per batch) is needed for loss="kl" once anything is masked; `batches` hold
    `labels` for loss="label". Masked units score 0. Returns (head scores, FFN scores), one 1-D tensor per layer.
    """
    if loss not in ("kl", "label"):
        raise RecipeError(f"loss: must be 'kl' or 'label', got {loss!r}")
    was_training = model.training
    model.eval()  # no dropout: p is the deterministic model being pruned
    gates = Gates(model, head_masks, ffn_masks)
    first = _is_unpruned(gates.head_masks, gates.ffn_masks)
    head_sum = [torch.zeros(m.numel(), dtype=torch.float64) for m in gates.head_masks]
    ffn_sum = [torch.zeros(m.numel(), dtype=torch.float64) for m in gates.ffn_masks]
    n_examples = 0
    with gates, torch.enable_grad():
        for b, batch in enumerate(batches):
            logits = _forward(model, batch)
            n = logits.shape[0]
            gate_list = gates.all_gates()
            # (loss summed over the batch, per-example weight [batch]) pairs; per-example gates keep examples apart
            terms: list[tuple[torch.Tensor, torch.Tensor | None]] = []
            if loss == "label":
                if "labels" not in batch:
                    raise RecipeError("loss: label needs labelled examples; score on the train or dev split")
                terms.append((hard_label_loss(logits, batch["labels"].to(logits.device)) * n, None))
            elif first:
                if logits.shape[-1] == 1:
                    terms.append((logits.sum(), None))
                else:  # Σ_c q_c |∂(−log p_c)/∂g · g|: cross-entropy against every class c, weighted by q_c
                    q = torch.softmax(logits.detach().float(), dim=-1)
                    terms += [(hard_label_loss(logits.float(), torch.full((n,), c, device=logits.device)) * n,
                               q[:, c]) for c in range(logits.shape[-1])]
            else:
                if original_logits is None:
                    raise ValueError("original_logits are needed for loss='kl' once units are masked")
                target = original_logits[b].to(logits.device)
                if logits.shape[-1] == 1:
                    terms.append((mse_logit_loss(logits.float(), target) * n, None))
                else:
                    terms.append((kl_importance_loss(logits.float(), target) * n, None))
            for t, (value, weight) in enumerate(terms):
                grads = torch.autograd.grad(value, gate_list, retain_graph=t < len(terms) - 1, allow_unused=True)
                per_gate = dict(zip(map(id, gate_list), grads))
                for sums, layer_gates in ((head_sum, gates.head_gates), (ffn_sum, gates.ffn_gates)):
                    for i, g in enumerate(layer_gates):
                        grad = per_gate.get(id(g)) if g is not None else None
                        if grad is None:
                            continue
                        s = (grad * g.detach()).abs().double()    # [batch, units], per example
                        if weight is not None:
                            s = s * weight.double()[:, None]
                        sums[i] += s.sum(0).cpu()
            n_examples += n
            gates.head_gates = [None] * len(gates.head_gates)
            gates.ffn_gates = [None] * len(gates.ffn_gates)
    model.train(was_training)
    if n_examples == 0:
        raise RecipeError("no examples to score importance on")
    heads = [(s / n_examples).float() * m for s, m in zip(head_sum, gates.head_masks)]
    ffn = [(s / n_examples).float() * m for s, m in zip(ffn_sum, gates.ffn_masks)]
    return heads, ffn


# ---------------------------------------------------------------------------------------------------------------
# Targets, schedule and selection

def resolve_target(name: str, target, sparsity: float | None, sizes: list[int], even: bool) -> list[int] | int | None:
    """Turn a recipe target into units kept: a per-layer list, or a total across layers (global ranking), or None.

    `target` is a total (int) or a per-layer list; `sparsity` the fraction removed when `target` is not given.
    With `even`, a total is split equally over the layers (it must be a multiple of the layer count).
    """
    n_layers, total = len(sizes), sum(sizes)
    if target is None and sparsity is None:
        return None
    if target is None:
        if even:
            return [int(round(s * (1 - sparsity))) for s in sizes]
        return int(round(total * (1 - sparsity)))
    if isinstance(target, (list, tuple)):
        if len(target) != n_layers:
            raise RecipeError(f"{name}: has {len(target)} entries but the model has {n_layers} layers")
        for i, (t, s) in enumerate(zip(target, sizes)):
            if not 0 <= t <= s:
                raise RecipeError(f"{name}[{i}]: must be between 0 and the layer's current size {s}, got {t}")
        return [int(t) for t in target]
    if not 0 <= target <= total:
        raise RecipeError(f"{name}: must be between 0 and the model's current total {total}, got {target}")
    if even:
        if target % n_layers:
            raise RecipeError(f"{name}: {target} is not a multiple of the {n_layers} layers; with even: true give "
                              f"a multiple or a per-layer list")
        per = target // n_layers
        if any(per > s for s in sizes):
            raise RecipeError(f"{name}: {per} per layer exceeds a layer's current size {min(sizes)}")
        return [per] * n_layers
    return int(target)


def schedule(start, target, step: int, steps: int):
    """Units kept after `step` of `steps`: linear from the current size to the target."""
    frac = step / steps
    if isinstance(target, list):
        return [int(round(s - (s - t) * frac)) for s, t in zip(start, target)]
    total = sum(start)
    return int(round(total - (total - target) * frac))


def round_to_multiple(n: int, multiple: int) -> int:
    """`n` rounded to the nearest multiple of `multiple` (halves up)."""
    return (2 * n + multiple) // (2 * multiple) * multiple


def heads_multiple(multiple_of: int, head_size: int) -> int:
    """Heads per rounding step so that heads × head_size is a multiple of `multiple_of` (the width the kernels
    see: Q/K/V outputs and the attention output's inputs)."""
    return multiple_of // math.gcd(multiple_of, head_size)


def select(scores: Scores, masks: Masks, keep, min_per_layer: int = 0, multiple_of: int = 1) -> Masks:
    """New masks keeping the highest-scoring live units: `keep` per layer (list) or in total (int, global ranking),
    every layer that keeps anything keeping at least `min_per_layer` of its live units. Pruned units stay pruned.

    `multiple_of` > 1 rounds as TextPruner does: each layer keeps a multiple of it (or all its live units). A list
    target is rounded per layer to the nearest multiple (a positive one never to 0). The global ranking ranks blocks
    of `multiple_of` consecutive units of each layer's best-first order by their mean score and adds the best
    blocks while that brings the total closer to `keep`. With `multiple_of=1` both are plain top-k.
    """
    step = max(1, int(multiple_of))
    live_n = [int((m > 0).sum()) for m in masks]
    # each layer's live units, best first (ties: lower index first)
    ranked = [torch.argsort(torch.where(m > 0, s.double(), torch.full_like(s, -math.inf, dtype=torch.float64)),
                            descending=True, stable=True)[:n] for s, m, n in zip(scores, masks, live_n)]
    floor = [min(n, -(-min_per_layer // step) * step) for n in live_n]
    if isinstance(keep, list):
        counts = []
        for k, n, f in zip(keep, live_n, floor):
            c = round_to_multiple(int(k), step)
            if k > 0:
                c = max(c, step, f)
            counts.append(min(n, c))
    else:
        counts = list(floor)
        blocks: list[tuple[float, int, int]] = []  # (mean score, layer, units) of every block above the floor
        for i, order in enumerate(ranked):
            rest = scores[i].double()[order[counts[i]:]]
            full = rest.numel() // step
            means = rest[:full * step].view(full, step).mean(1).tolist()
            blocks += [(v, i, step) for v in means]
            if rest.numel() > full * step:
                blocks.append((float(rest[full * step:].mean()), i, rest.numel() - full * step))
        # best first (stable: a layer's blocks, whose means never increase, stay in order: each layer keeps a prefix)
        blocks.sort(key=lambda b: b[0], reverse=True)
        kept = sum(counts)
        for _, i, size in blocks:
            if 2 * kept + size > 2 * keep:  # kept + size/2 > keep: adding would overshoot more than stopping
                break
            counts[i] += size
            kept += size
    new = [torch.zeros_like(m) for m in masks]
    for i, c in enumerate(counts):
        new[i][ranked[i][:c]] = 1.0
    return new


@dataclass
class PruneResult:
    head_masks: Masks
    ffn_masks: Masks
    head_scores: Scores          # first iteration: the unpruned model's importance
    ffn_scores: Scores
    final_head_scores: Scores    # last iteration's scores
    final_ffn_scores: Scores
    history: list[dict] = field(default_factory=list)


def _check_floor(name: str, target, sizes: list[int], minimum: int, option: str, what: str) -> None:
    """Refuse a target that would leave a layer with fewer units than `minimum` (or all it has, if fewer)."""
    if isinstance(target, list):
        for i, (t, s) in enumerate(zip(target, sizes)):
            if t < min(minimum, s):
                raise RecipeError(f"{name}[{i}]: {t} is below {option}={minimum} "
                                  f"(set {option}: 0 to let a layer lose its {what})")
    elif target is not None and target < sum(min(minimum, s) for s in sizes):
        raise RecipeError(f"{name}: {target} is fewer than {option}={minimum} in each of the {len(sizes)} layers")


def iterative_prune(model: nn.Module, batches: Sequence[dict], *, head_target=None, ffn_target=None,
                    iterations: int = 8, loss: str = "kl", min_heads_per_layer: int = 1, min_ffn_per_layer: int = 1,
                    multiple_of: int = 1, log: Callable[[str], None] | None = None) -> PruneResult:
    """Prune in `iterations` steps, re-scoring in between; targets are resolved (see `resolve_target`).

    Every layer keeps at least `min_heads_per_layer` heads and `min_ffn_per_layer` FFN neurons (0 lets a global
    ranking empty a layer). `multiple_of` rounds what each layer keeps (see `select`): FFN neurons to multiples of
    it, heads so that heads × head size is one (`heads_multiple`), the sizes 4-bit and int8 kernels want.

    Returns the masks (the weights are untouched; cut them with `build_pruned_model`) and the scores.
    """
    head_masks, ffn_masks = full_masks(model)
    start_h, start_f = layer_sizes(model)
    _check_floor("target_heads", head_target, start_h, min_heads_per_layer, "min_heads_per_layer", "attention")
    _check_floor("target_ffn", ffn_target, start_f, min_ffn_per_layer, "min_ffn_per_layer", "FFN")
    head_step = heads_multiple(multiple_of, head_size_of(model))
    original = predict_logits(model, batches) if loss == "kl" else None
    first = last = None
    history = []
    for step in range(1, iterations + 1):
        hs, fs = importance_scores(model, batches, loss=loss, original_logits=original, head_masks=head_masks,
                                   ffn_masks=ffn_masks)
        first = first or (hs, fs)
        last = (hs, fs)
        if head_target is not None:
            head_masks = select(hs, head_masks, schedule(start_h, head_target, step, iterations), min_heads_per_layer,
                                head_step)
        if ffn_target is not None:
            ffn_masks = select(fs, ffn_masks, schedule(start_f, ffn_target, step, iterations), min_ffn_per_layer,
                               multiple_of)
        kept = (int(sum(m.sum() for m in head_masks)), int(sum(m.sum() for m in ffn_masks)))
        history.append({"iteration": step, "heads_kept": kept[0], "ffn_kept": kept[1]})
        if log:
            log(f"prune iteration {step}/{iterations}: {kept[0]} heads, {kept[1]} FFN neurons kept")
    return PruneResult(head_masks, ffn_masks, first[0], first[1], last[0], last[1], history)


# ---------------------------------------------------------------------------------------------------------------
# Surgery

def build_pruned_model(model: nn.Module, head_masks: Masks, ffn_masks: Masks) -> nn.Module:
    """A new model with the masked heads and FFN neurons cut out of the weights (a stock class when the shapes
    allow, a Pruned* class otherwise); its outputs equal `model` run with the masks."""
    arch, d = arch_of(model), head_size_of(model)
    heads = [int((m > 0).sum()) for m in head_masks]
    ffn = [int((m > 0).sum()) for m in ffn_masks]
    config = pruned_config(model.config, heads, d, ffn)
    with_head = _base(model) is not model
    cls = model_class_for(config, with_head=with_head)
    state = dict(model.state_dict())
    prefix = _layers_prefix(model)
    for i, (hm, fm) in enumerate(zip(head_masks, ffn_masks)):
        p = f"{prefix}.{i}."
        head_idx = torch.nonzero(hm > 0).flatten()
        rows = (head_idx[:, None] * d + torch.arange(d)).flatten()
        for name in arch.qkv:
            if heads[i] == 0:
                state.pop(p + name + ".weight"), state.pop(p + name + ".bias", None)
            else:
                state[p + name + ".weight"] = state[p + name + ".weight"][rows].clone()
                state[p + name + ".bias"] = state[p + name + ".bias"][rows].clone()
        state[p + arch.attn_out + ".weight"] = state[p + arch.attn_out + ".weight"][:, rows].clone()
        ffn_idx = torch.nonzero(fm > 0).flatten()
        state[p + arch.ffn_in + ".weight"] = state[p + arch.ffn_in + ".weight"][ffn_idx].clone()
        state[p + arch.ffn_in + ".bias"] = state[p + arch.ffn_in + ".bias"][ffn_idx].clone()
        state[p + arch.ffn_out + ".weight"] = state[p + arch.ffn_out + ".weight"][:, ffn_idx].clone()
    pruned = cls(config)
    missing, unexpected = pruned.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ModelError(f"pruned weights do not fit {cls.__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return pruned.to(next(model.parameters()).dtype).eval()


# ---------------------------------------------------------------------------------------------------------------
# Saving scores, masks and the heat map

def _padded(rows: Sequence[torch.Tensor], fill: float) -> torch.Tensor:
    width = max([r.numel() for r in rows] + [1])
    out = torch.full((len(rows), width), fill, dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r.float()
    return out


def save_scores(result: PruneResult, path: Path) -> None:
    """Importance scores and masks as safetensors: [layers × units] matrices (NaN / 0 padding where a layer of the
    parent had fewer units). Keys: head_importance, ffn_importance (first iteration = unpruned model),
    head_importance_final, ffn_importance_final (last iteration), head_mask, ffn_mask (1 = kept)."""
    from safetensors.torch import save_file

    tensors = {
        "head_importance": _padded(result.head_scores, math.nan),
        "ffn_importance": _padded(result.ffn_scores, math.nan),
        "head_importance_final": _padded(result.final_head_scores, math.nan),
        "ffn_importance_final": _padded(result.final_ffn_scores, math.nan),
        "head_mask": _padded(result.head_masks, 0.0).to(torch.uint8),
        "ffn_mask": _padded(result.ffn_masks, 0.0).to(torch.uint8),
    }
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)


def load_scores(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def save_heatmap(result: PruneResult, path: Path, title: str = "Head importance") -> None:
    """Layers × heads image of the unpruned model's head importance (each layer scaled to its maximum), pruned
    heads crossed out; for the model card."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = _padded(result.head_scores, math.nan)
    scale = torch.nan_to_num(scores, nan=0.0).amax(dim=1, keepdim=True).clamp_min(1e-12)
    masks = _padded(result.head_masks, -1.0)
    n_layers, n_heads = scores.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * n_heads + 1.5), max(2.5, 0.4 * n_layers + 1.2)), dpi=100)
    im = ax.imshow((scores / scale).numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i in range(n_layers):
        for j in range(n_heads):
            if masks[i, j] == 0:
                ax.text(j, i, "×", ha="center", va="center", color="white", fontsize=11)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    kept = int(sum(m.sum() for m in result.head_masks))
    ax.set_title(f"{title} (× pruned, {kept}/{sum(m.numel() for m in result.head_masks)} kept)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04, label="importance / layer max")
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
