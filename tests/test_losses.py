"""The seed's loss formulas against values computed by hand."""

import math

import pytest
import torch

from hfdistill.losses import (cosine_loss, hard_label_loss, mlm_loss, mse_logit_loss, soft_target_loss,
                              soft_targets)
from hfdistill.losses import LossWeights, mlm_distillation_loss, task_distillation_loss

torch.set_num_threads(1)
LN3 = math.log(3.0)


def kl(q, p):
    return sum(qi * math.log(qi / pi) for qi, pi in zip(q, p))


def test_soft_targets_at_t1_are_the_softmax_and_higher_t_flattens_them():
    z = torch.tensor([0.0, LN3])
    assert soft_targets(z, 1.0).tolist() == pytest.approx([0.25, 0.75])
    r3 = math.sqrt(3.0)  # exp(ln3 / 2)
    assert soft_targets(z, 2.0).tolist() == pytest.approx([1 / (1 + r3), r3 / (1 + r3)])


def test_soft_target_loss_is_kl_teacher_student_at_t1():
    teacher, student = torch.tensor([[0.0, LN3]]), torch.tensor([[0.0, 0.0]])
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert soft_target_loss(student, teacher, 1.0).item() == pytest.approx(expected, rel=1e-5)


def test_soft_target_loss_is_scaled_by_t_squared():
    teacher, student = torch.tensor([[0.0, LN3]]), torch.tensor([[0.0, 0.0]])
    r3 = math.sqrt(3.0)
    softened = kl([1 / (1 + r3), r3 / (1 + r3)], [0.5, 0.5])
    assert soft_target_loss(student, teacher, 2.0).item() == pytest.approx(4 * softened, rel=1e-5)
    assert soft_target_loss(student, teacher, 2.0).item() != pytest.approx(softened, rel=1e-2)


def test_soft_target_loss_averages_over_examples_and_is_zero_when_equal():
    teacher = torch.tensor([[0.0, LN3], [1.0, 1.0]])
    student = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    first = kl([0.25, 0.75], [0.5, 0.5])
    assert soft_target_loss(student, teacher, 1.0).item() == pytest.approx(first / 2, rel=1e-5)
    assert soft_target_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_hard_label_loss_is_cross_entropy_or_mse_for_one_output():
    assert hard_label_loss(torch.tensor([[0.0, LN3]]), torch.tensor([1])).item() == pytest.approx(-math.log(0.75))
    assert hard_label_loss(torch.tensor([[2.0], [0.0]]), torch.tensor([1.0, 1.0])).item() == pytest.approx(1.0)


def test_mse_logit_loss_matches_teacher_scores():
    assert mse_logit_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]])).item() == pytest.approx(2.5)


def test_cosine_loss_is_one_minus_cos_over_real_tokens_only():
    hs = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [5.0, 5.0]]])
    ht = torch.tensor([[[0.0, 2.0], [3.0, 0.0], [-1.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert cosine_loss(hs, ht, mask).item() == pytest.approx((1.0 + 0.0) / 2)
    with_padding = ((1 - 0) + (1 - 1) + (1 - (-5 / math.sqrt(50)))) / 3
    assert cosine_loss(hs, ht).item() == pytest.approx(with_padding, rel=1e-5)


def test_mlm_loss_counts_masked_positions_only():
    logits = torch.tensor([[[0.0, LN3], [10.0, -10.0]]])
    labels = torch.tensor([[1, -100]])
    assert mlm_loss(logits, labels).item() == pytest.approx(-math.log(0.75))


def test_task_distillation_loss_is_the_weighted_triple_loss():
    zt, zs = torch.tensor([[0.0, LN3]]), torch.tensor([[0.0, 0.0]])
    hs = [torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])]
    ht = [torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])]
    mask = torch.tensor([[1, 1]])
    w = LossWeights(temperature=2.0, alpha_ce=5.0, alpha_hard=2.0, alpha_cos=1.0)
    r3 = math.sqrt(3.0)
    l_ce = 4 * kl([1 / (1 + r3), r3 / (1 + r3)], [0.5, 0.5])
    l_hard = math.log(2.0)          # CE of uniform logits on 2 classes
    l_cos = (1.0 + 0.0) / 2
    loss, parts = task_distillation_loss(zs, zt, torch.tensor([0]), w, hs, ht, mask)
    assert parts["l_ce"] == pytest.approx(l_ce, rel=1e-5)
    assert parts["l_hard"] == pytest.approx(l_hard, rel=1e-5)
    assert parts["l_cos"] == pytest.approx(l_cos, rel=1e-5)
    assert loss.item() == pytest.approx(5 * l_ce + 2 * l_hard + 1 * l_cos, rel=1e-5)


def test_unlabeled_examples_get_soft_targets_only():
    zt = torch.tensor([[0.0, LN3], [0.0, LN3]])
    zs = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    w = LossWeights(temperature=1.0, alpha_ce=1.0, alpha_hard=1.0, alpha_cos=0.0)
    _, parts = task_distillation_loss(zs, zt, torch.tensor([1, -1]), w)
    assert parts["l_hard"] == pytest.approx(math.log(2.0), rel=1e-5)   # the labeled row only
    _, parts = task_distillation_loss(zs, zt, torch.tensor([-1, -1]), w)
    assert parts["l_hard"] == 0.0


def test_regression_distillation_is_mse_to_teacher_and_to_label():
    zs, zt, y = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [0.0]]), torch.tensor([1.0, float("nan")])
    w = LossWeights(temperature=2.0, alpha_ce=5.0, alpha_hard=2.0, alpha_cos=0.0)
    loss, parts = task_distillation_loss(zs, zt, y, w)
    assert parts["l_ce"] == pytest.approx((1 + 4) / 2)       # MSE to the teacher, no temperature
    assert parts["l_hard"] == pytest.approx(0.0)             # the one labeled row matches its label
    assert loss.item() == pytest.approx(5 * 2.5)


def test_mlm_distillation_loss_uses_masked_positions_for_soft_targets():
    zt = torch.tensor([[[0.0, LN3], [9.0, 0.0]]])
    zs = torch.tensor([[[0.0, 0.0], [0.0, 9.0]]])     # the unmasked position disagrees: it must not count
    labels = torch.tensor([[1, -100]])
    w = LossWeights(temperature=1.0, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=0.0)
    loss, parts = mlm_distillation_loss(zs, zt, labels, w)
    assert parts["l_ce"] == pytest.approx(kl([0.25, 0.75], [0.5, 0.5]), rel=1e-5)
    assert parts["l_mlm"] == pytest.approx(math.log(2.0), rel=1e-5)
    assert loss.item() == pytest.approx(5 * parts["l_ce"] + 2 * parts["l_mlm"], rel=1e-5)
