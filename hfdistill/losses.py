"""The seed's formulas, one plain function each.

Notation: z are logits, T the temperature, q_i = exp(z_i/T) / Σ_j exp(z_j/T) the soft targets.
All losses return a scalar tensor averaged over the batch (and over tokens where they are per token).
"""

from __future__ import annotations

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
