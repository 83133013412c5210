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


def test_soft_target_loss_softens_both_sides_with_t():
    """Neither side uniform: T applied to the student only, or to the teacher only, gives another number."""
    teacher, student = torch.tensor([[0.0, 2 * LN3]]), torch.tensor([[2 * math.log(2.0), 0.0]])
    # at T=2: teacher logits [0, ln3] → [1/4, 3/4]; student [ln2, 0] → [2/3, 1/3]
    expected = 4 * kl([0.25, 0.75], [2 / 3, 1 / 3])
    assert soft_target_loss(student, teacher, 2.0).item() == pytest.approx(expected, rel=1e-5)


def test_soft_target_loss_is_kl_of_teacher_to_student_not_the_reverse():
    teacher, student = torch.tensor([[0.0, LN3]]), torch.tensor([[0.0, 0.0]])
    assert soft_target_loss(student, teacher, 1.0).item() == pytest.approx(kl([0.25, 0.75], [0.5, 0.5]), rel=1e-5)
    assert kl([0.25, 0.75], [0.5, 0.5]) != pytest.approx(kl([0.5, 0.5], [0.25, 0.75]), rel=1e-2)


def test_cosine_loss_sign_and_scale():
    same = torch.tensor([[[1.0, 2.0]]])
    assert cosine_loss(same, 3 * same).item() == pytest.approx(0.0, abs=1e-6)      # aligned: no loss
    assert cosine_loss(same, -same).item() == pytest.approx(2.0, rel=1e-6)        # opposite: the maximum
    assert cosine_loss(same, torch.tensor([[[-2.0, 1.0]]])).item() == pytest.approx(1.0, rel=1e-6)  # orthogonal


# ---------------------------------------------------------------------------------------------------- MLM
# two positions with a 2-token vocabulary: position 0 masked (label 1), position 1 not masked (label -100)
MLM_T = torch.tensor([[[0.0, LN3], [9.0, 0.0]]])
MLM_S = torch.tensor([[[0.0, 0.0], [0.0, 9.0]]])      # the unmasked position disagrees with the teacher
MLM_LABELS = torch.tensor([[1, -100]])


def test_mlm_distillation_soft_targets_cover_every_real_token_by_default():
    """DistilBERT's reference: L_ce over all non-padding tokens, not only the masked ones."""
    w = LossWeights(temperature=1.0, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=0.0)
    at_masked = kl([0.25, 0.75], [0.5, 0.5])
    e9 = math.exp(9.0)
    at_unmasked = kl([e9 / (e9 + 1), 1 / (e9 + 1)], [1 / (e9 + 1), e9 / (e9 + 1)])
    loss, parts = mlm_distillation_loss(MLM_S, MLM_T, MLM_LABELS, w, attention_mask=torch.tensor([[1, 1]]))
    assert parts["l_ce"] == pytest.approx((at_masked + at_unmasked) / 2, rel=1e-5)
    assert parts["l_mlm"] == pytest.approx(math.log(2.0), rel=1e-5)     # the masked position only
    assert loss.item() == pytest.approx(5 * parts["l_ce"] + 2 * parts["l_mlm"], rel=1e-5)
    # padding is left out: position 1 as padding leaves the masked one
    _, parts = mlm_distillation_loss(MLM_S, MLM_T, MLM_LABELS, w, attention_mask=torch.tensor([[1, 0]]))
    assert parts["l_ce"] == pytest.approx(at_masked, rel=1e-5)


def test_mlm_distillation_soft_targets_can_be_restricted_to_masked_tokens():
    w = LossWeights(temperature=1.0, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=0.0)
    loss, parts = mlm_distillation_loss(MLM_S, MLM_T, MLM_LABELS, w, attention_mask=torch.tensor([[1, 1]]),
                                        ce_positions="masked")
    assert parts["l_ce"] == pytest.approx(kl([0.25, 0.75], [0.5, 0.5]), rel=1e-5)
    assert loss.item() == pytest.approx(5 * parts["l_ce"] + 2 * math.log(2.0), rel=1e-5)


def test_mlm_distillation_loss_weights_every_term():
    hs = [torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])]
    ht = [torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])]
    mask = torch.tensor([[1, 1]])
    w = LossWeights(temperature=2.0, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=3.0)
    loss, parts = mlm_distillation_loss(MLM_S, MLM_T, MLM_LABELS, w, hs, ht, mask, ce_positions="masked")
    r3 = math.sqrt(3.0)
    assert parts["l_ce"] == pytest.approx(4 * kl([1 / (1 + r3), r3 / (1 + r3)], [0.5, 0.5]), rel=1e-5)
    assert parts["l_cos"] == pytest.approx(0.5, rel=1e-5)
    assert loss.item() == pytest.approx(5 * parts["l_ce"] + 2 * math.log(2.0) + 3 * 0.5, rel=1e-5)


# ---------------------------------------------------------------------------------------------------- shapes, edges
def test_soft_targets_normalise_over_the_last_axis_of_any_shape():
    z = torch.tensor([[[0.0, LN3], [LN3, 0.0]]])          # [batch 1, 2 tokens, vocabulary 2]
    assert soft_targets(z).flatten().tolist() == pytest.approx([0.25, 0.75, 0.75, 0.25])


def test_mlm_loss_with_more_positions_than_vocabulary():
    logits = torch.tensor([[[0.0, LN3], [10.0, -10.0], [LN3, 0.0]]])   # 3 positions, vocabulary 2
    labels = torch.tensor([[1, -100, 1]])
    assert mlm_loss(logits, labels).item() == pytest.approx((-math.log(0.75) - math.log(0.25)) / 2, rel=1e-5)


def test_regression_hard_loss_pairs_each_output_with_its_own_label():
    # broadcasting [2, 1] against [2] would average all four pairs: (1 + 1 + 1 + 9) / 4 = 3
    assert hard_label_loss(torch.tensor([[2.0], [0.0]]), torch.tensor([1.0, 3.0])).item() == pytest.approx(5.0)


def test_cosine_loss_with_one_real_token():
    hs = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    ht = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])
    assert cosine_loss(hs, ht, torch.tensor([[1, 0, 0]])).item() == pytest.approx(1.0)


# padding at position 1: the student and teacher disagree there (cos = -1), which must not count
HS = [torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])]
HT = [torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]])]
PADDED = torch.tensor([[1, 0]])


def test_task_distillation_cosine_term_leaves_padding_out():
    w = LossWeights(temperature=1.0, alpha_ce=1.0, alpha_hard=0.0, alpha_cos=1.0)
    z = torch.tensor([[0.0, 0.0]])
    _, parts = task_distillation_loss(z, z, torch.tensor([0]), w, HS, HT, PADDED)
    assert parts["l_cos"] == pytest.approx(1.0)              # (1 − 0) on the real token; padding would add 2


def test_mlm_distillation_cosine_term_at_default_weight_leaves_padding_out():
    w = LossWeights(temperature=1.0, alpha_ce=0.0, alpha_mlm=0.0, alpha_cos=1.0)
    loss, parts = mlm_distillation_loss(MLM_S, MLM_T, MLM_LABELS, w, HS, HT, PADDED)
    assert parts["l_cos"] == pytest.approx(1.0) and loss.item() == pytest.approx(1.0)


def test_mlm_distillation_without_attention_mask_covers_every_position():
    w = LossWeights(temperature=1.0, alpha_ce=1.0, alpha_mlm=0.0, alpha_cos=0.0)
    with_mask = mlm_distillation_loss(MLM_S, MLM_T, MLM_LABELS, w, attention_mask=torch.tensor([[1, 1]]))[1]
    assert mlm_distillation_loss(MLM_S, MLM_T, MLM_LABELS, w)[1]["l_ce"] == pytest.approx(with_mask["l_ce"])


def test_mlm_distillation_batch_without_masked_tokens_is_finite():
    """Short texts at 15% masking: a batch may have no masked token; L_mlm (and masked-only L_ce) are then 0."""
    w = LossWeights(temperature=1.0, alpha_ce=1.0, alpha_mlm=1.0, alpha_cos=0.0)
    none = torch.tensor([[-100, -100]])
    loss, parts = mlm_distillation_loss(MLM_S, MLM_T, none, w, attention_mask=torch.tensor([[1, 1]]),
                                        ce_positions="masked")
    assert parts == {"l_ce": 0.0, "l_mlm": 0.0, "l_cos": 0.0} and loss.item() == 0.0
    with pytest.raises(ValueError, match="ce_positions: 'some' \\(all or masked\\)"):
        mlm_distillation_loss(MLM_S, MLM_T, none, w, ce_positions="some")


def test_soft_target_loss_flattens_token_logits_to_rows():
    teacher = torch.tensor([[[0.0, LN3], [0.0, LN3], [0.0, LN3]]])     # [batch 1, 3 tokens, vocabulary 2]
    student = torch.zeros(1, 3, 2)
    assert soft_target_loss(student, teacher, 1.0).item() == pytest.approx(kl([0.25, 0.75], [0.5, 0.5]), rel=1e-5)


def test_mixed_precision_inputs_are_cast_to_the_students_dtype():
    assert hard_label_loss(torch.tensor([[2.0], [0.0]]), torch.tensor([1, 3])).item() == pytest.approx(5.0)
    hs, ht = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]], dtype=torch.float16)
    assert cosine_loss(hs, ht).item() == pytest.approx(1.0)
    w = LossWeights(temperature=1.0, alpha_ce=1.0, alpha_hard=0.0, alpha_mlm=0.0, alpha_cos=0.0)
    zt = torch.tensor([[0.0, LN3]], dtype=torch.float16)
    expected = kl([0.25, 0.75], [0.5, 0.5])
    assert task_distillation_loss(torch.zeros(1, 2), zt, torch.tensor([0]), w)[1]["l_ce"] == pytest.approx(
        expected, rel=1e-3)
    assert mlm_distillation_loss(torch.zeros(1, 1, 2), zt[None], torch.tensor([[1]]), w)[1]["l_ce"] == \
        pytest.approx(expected, rel=1e-3)


def test_terms_with_zero_weight_are_reported_as_zero_and_missing_hidden_states_give_no_cosine_term():
    z = torch.tensor([[0.0, 0.0]])
    off = LossWeights(temperature=1.0, alpha_ce=1.0, alpha_hard=0.0, alpha_mlm=0.0, alpha_cos=0.0)
    _, parts = task_distillation_loss(z, z, torch.tensor([1]), off, HS, HT, PADDED)
    assert parts["l_hard"] == 0.0 and parts["l_cos"] == 0.0
    _, parts = mlm_distillation_loss(MLM_S, MLM_T, MLM_LABELS, off, HS, HT, PADDED)
    assert parts["l_cos"] == 0.0
    on = LossWeights(temperature=1.0, alpha_ce=1.0, alpha_hard=1.0, alpha_mlm=1.0, alpha_cos=1.0)
    assert task_distillation_loss(z, z, torch.tensor([1]), on)[1]["l_cos"] == 0.0          # no hidden states given
    assert mlm_distillation_loss(MLM_S, MLM_T, MLM_LABELS, on)[1]["l_cos"] == 0.0


def test_negative_regression_targets_are_labels():
    """For regression only NaN marks an unlabeled row: a score below 0 is a label (-1 is "unlabeled" for classes)."""
    w = LossWeights(temperature=1.0, alpha_ce=0.0, alpha_hard=1.0, alpha_cos=0.0)
    _, parts = task_distillation_loss(torch.tensor([[1.0]]), torch.tensor([[1.0]]), torch.tensor([-1.0]), w)
    assert parts["l_hard"] == pytest.approx(4.0)
