"""The seed's formulas, one plain function each.

Notation: z are logits, T the temperature, q_i = exp(z_i/T) / Σ_j exp(z_j/T) the soft targets.
All losses return a scalar tensor averaged over the batch (and over tokens where they are per token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F


def soft_targets(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """q_i = exp(z_i/T) / Σ_j exp(z_j/T). T=1 at inference; the same T for teacher and student in training."""
    return F.softmax(logits / temperature, dim=-1)


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """L_ce = KL(q_teacher ‖ q_student) · T², both softened with the same T.

    The T² keeps the gradient scale independent of T (Hinton et al. 2015). Averaged over examples
    (rows of the flattened logits, e.g. masked tokens in MLM distillation).
    """
    t = temperature
    s = F.log_softmax(student_logits.reshape(-1, student_logits.shape[-1]) / t, dim=-1)
    q = F.log_softmax(teacher_logits.reshape(-1, teacher_logits.shape[-1]) / t, dim=-1)
    return F.kl_div(s, q, reduction="batchmean", log_target=True) * (t * t)


def hard_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the gold labels; for regression (one output) MSE to the gold score."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return F.cross_entropy(logits, labels.long())


def mse_logit_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Regression distillation (STS-B): MSE between student and teacher outputs."""
    return F.mse_loss(student_logits, teacher_logits)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_mlm: cross-entropy of the masked-LM predictions at masked positions (labels -100 elsewhere)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_cos = 1 − cos(h_s, h_t), averaged over the real (non-padding) tokens.

    Hidden states are [batch, seq, dim]; padding positions (attention_mask == 0) are left out.
    """
    cos = F.cosine_similarity(student_hidden, teacher_hidden.to(student_hidden.dtype), dim=-1)
    loss = 1.0 - cos
    if attention_mask is None:
        return loss.mean()
    mask = attention_mask.to(loss.dtype)
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def kl_importance_loss(pruned_logits: torch.Tensor, original_logits: torch.Tensor) -> torch.Tensor:
    """L_KL(x) = KL(stopgrad(q(x)) ‖ p(x)): q the original model's prediction, p the model being pruned.

    Self-supervised: no labels. Note that while p == q its gradient is exactly zero; the prune stage
    documents how it avoids that trap on the first iteration.
    """
    q = F.log_softmax(original_logits.detach(), dim=-1)
    p = F.log_softmax(pruned_logits, dim=-1)
    return F.kl_div(p, q, reduction="batchmean", log_target=True)


# ------------------------------------------------------------------------------ the distillation objectives
@dataclass(frozen=True)
class LossWeights:
    """The weights and temperature of the distillation loss (DistilBERT's defaults)."""

    temperature: float = 2.0
    alpha_ce: float = 5.0
    alpha_hard: float = 2.0
    alpha_mlm: float = 2.0
    alpha_cos: float = 1.0


def hidden_alignment_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
                          attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """L_cos averaged over matched layer pairs: mean_k (1 − cos(h_s^k, h_t^k)) over real tokens."""
    losses = [cosine_loss(s, t, attention_mask) for s, t in zip(student_hidden, teacher_hidden)]
    return torch.stack(losses).mean()


def _labeled(labels: torch.Tensor, regression: bool) -> torch.Tensor:
    return ~torch.isnan(labels) if regression else labels >= 0


def task_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                           w: LossWeights, student_hidden: Sequence[torch.Tensor] = (),
                           teacher_hidden: Sequence[torch.Tensor] = (),
                           attention_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
    """α_ce·L_ce + α_hard·L_hard + α_cos·L_cos for a batch of a classification or regression (1 output) task.

    L_ce is KL·T² between softened distributions (classes) or MSE to the teacher's score (regression).
    L_hard is CE / MSE to the gold label over the labeled rows only (label -1 or NaN = unlabeled).
    """
    regression = student_logits.shape[-1] == 1
    teacher_logits = teacher_logits.to(student_logits.dtype)
    zero = student_logits.new_zeros(())
    if regression:
        l_ce = mse_logit_loss(student_logits, teacher_logits)
    else:
        l_ce = soft_target_loss(student_logits, teacher_logits, w.temperature)
    has = _labeled(labels, regression)
    l_hard = hard_label_loss(student_logits[has], labels[has]) if has.any() and w.alpha_hard > 0 else zero
    l_cos = zero
    if w.alpha_cos > 0 and len(student_hidden):
        l_cos = hidden_alignment_loss(student_hidden, teacher_hidden, attention_mask)
    loss = w.alpha_ce * l_ce + w.alpha_hard * l_hard + w.alpha_cos * l_cos
    return loss, {"l_ce": l_ce.item(), "l_hard": l_hard.item(), "l_cos": l_cos.item()}


def mlm_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                          w: LossWeights, student_hidden: Sequence[torch.Tensor] = (),
                          teacher_hidden: Sequence[torch.Tensor] = (),
                          attention_mask: Optional[torch.Tensor] = None,
                          ce_positions: str = "all") -> tuple[torch.Tensor, dict]:
    """α_ce·L_ce + α_mlm·L_mlm + α_cos·L_cos for a batch of masked text (general distillation).

    L_ce = mean over positions P of KL(q_teacher ‖ q_student)·T², the soft targets over the vocabulary:
    P = every real (non-padding) token with `ce_positions="all"` (DistilBERT's reference), or only the masked
    tokens (labels ≠ -100) with `"masked"`. L_mlm is the cross-entropy to the masked tokens.
    """
    masked = labels != -100
    if ce_positions == "masked":
        at = masked
    elif ce_positions == "all":
        at = attention_mask.bool() if attention_mask is not None else torch.ones_like(masked)
    else:
        raise ValueError(f"ce_positions: {ce_positions!r} (all or masked)")
    zero = student_logits.new_zeros(())
    l_ce = soft_target_loss(student_logits[at], teacher_logits[at].to(student_logits.dtype),
                            w.temperature) if at.any() else zero
    l_mlm = mlm_loss(student_logits, labels) if masked.any() else zero
    l_cos = zero
    if w.alpha_cos > 0 and len(student_hidden):
        l_cos = hidden_alignment_loss(student_hidden, teacher_hidden, attention_mask)
    loss = w.alpha_ce * l_ce + w.alpha_mlm * l_mlm + w.alpha_cos * l_cos
    return loss, {"l_ce": l_ce.item(), "l_mlm": l_mlm.item(), "l_cos": l_cos.item()}
