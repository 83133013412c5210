"""Deliberate breakages of pruning, quantization and their model formats (issue 11): each must make at least one of
the fast tests named with it fail.  `python mutations/run.py --list` shows them; see run.py."""

from __future__ import annotations

from run import Mutation

PRUNING = "hfdistill/pruning.py"
QUANT = "hfdistill/quantization.py"
FORMATS = "hfdistill/models/formats.py"
STAGE = "hfdistill/stages/quantize.py"

T_SCORES = ("tests/test_pruning.py::test_importance_scores_equal_mean_absolute_finite_difference_derivatives",
            "tests/test_pruning.py::test_scores_are_means_of_per_example_absolute_values",
            "tests/test_pruning.py::test_first_iteration_kl_scores_are_finite_and_not_degenerate",
            "tests/test_pruning.py::test_once_units_are_masked_kl_scores_live_units_and_zero_for_pruned")
T_SELECT = ("tests/test_pruning.py::test_global_selection_keeps_the_best_units_and_a_head_per_layer",
            "tests/test_compression_rounding.py")
T_INT8 = ("tests/test_compression_empty_layers.py::test_every_quantizer_follows_the_pruned_parent_through_an_empty_layer",
          "tests/test_quantization.py::test_int8_cpu_artefact_reloads_and_answers_like_a_hf_model")
T_EMPTY = ("tests/test_compression_empty_layers.py",)
T_CHECK = ("tests/test_compression_parent_check.py",)

MUTATIONS = [
    # ---------------------------------------------------------------------------------------------- selection
    Mutation("select-keeps-least-important", PRUNING,
             "torch.where(m > 0, s.double(), torch.full_like(s, -math.inf, dtype=torch.float64))",
             "torch.where(m > 0, -s.double(), torch.full_like(s, -math.inf, dtype=torch.float64))",
             T_SELECT, "every layer keeps its least important live units"),
    Mutation("global-ranking-reversed", PRUNING,
             "blocks.sort(key=lambda b: b[0], reverse=True)",
             "blocks.sort(key=lambda b: b[0], reverse=False)",
             T_SELECT, "the global ranking fills the budget with the least important units"),
    Mutation("ffn-floor-ignored", PRUNING,
             "schedule(start_f, ffn_target, step, iterations), min_ffn_per_layer,",
             "schedule(start_f, ffn_target, step, iterations), 0,",
             ("tests/test_compression_empty_layers.py::test_global_ffn_ranking_keeps_min_ffn_per_layer_neurons_in_every_layer",),
             "min_ffn_per_layer validated but not applied: a global FFN ranking empties a layer again"),
    Mutation("heads-rounded-in-heads-not-width", PRUNING,
             "head_step = heads_multiple(multiple_of, head_size_of(model))",
             "head_step = multiple_of",
             ("tests/test_compression_rounding.py",),
             "multiple_of applied to the head count instead of heads × head size"),
    Mutation("sparsity-is-kept-fraction", PRUNING,
             "return int(round(total * (1 - sparsity)))",
             "return int(round(total * sparsity))",
             ("tests/test_pruning.py::test_even_targets_give_every_layer_the_same_size",),
             "sparsity read as the fraction kept (identical at 0.5)"),
    Mutation("schedule-one-shot", PRUNING,
             "frac = step / steps",
             "frac = 1.0",
             ("tests/test_pruning.py::test_iterative_pruning_reaches_the_targets_step_by_step",),
             "iterations ignored: everything pruned at the first step"),
    # ---------------------------------------------------------------------------------------------- scoring
    Mutation("importance-without-abs", PRUNING,
             "s = (grad * g.detach()).abs().double()",
             "s = (grad * g.detach()).double()",
             T_SCORES, "signed per-example scores: opposite gradients cancel (|E[·]| instead of E|·|)"),
    Mutation("first-iteration-kl-unweighted", PRUNING,
             "q[:, c]) for c in range(logits.shape[-1])]",
             "None) for c in range(logits.shape[-1])]",
             T_SCORES, "first-iteration score sums every class's loss instead of weighting by q_c"),
    Mutation("kl-arguments-swapped", PRUNING,
             "kl_importance_loss(logits.float(), target)",
             "kl_importance_loss(target, logits.float())",
             T_SCORES, "KL with the pruned model as the detached side: no gradient reaches the gates"),
    Mutation("kl-trap-not-avoided", PRUNING,
             "first = _is_unpruned(gates.head_masks, gates.ffn_masks)",
             "first = bool(original_logits is None)",
             T_SCORES, "the first iteration uses KL(q‖p) with p == q: every score 0"),
    Mutation("scores-summed-not-averaged", PRUNING,
             "heads = [(s / n_examples).float() * m",
             "heads = [s.float() * m",
             T_SCORES, "head scores grow with the number of examples (and no longer compare with FFN scores)"),
    Mutation("gates-ignore-head-masks", PRUNING,
             "g = gate * self.head_masks[i].to(x.device, x.dtype)",
             "g = gate",
             ("tests/test_pruning.py::test_cut_model_matches_the_masked_model_and_is_smaller",) + T_SCORES,
             "masked heads still compute: iterations rank as if nothing were pruned"),
    # ---------------------------------------------------------------------------------------------- int8-cpu
    Mutation("int8-mask-and-token-types-swapped", FORMATS,
             '"attention_mask": arr(attention_mask) if attention_mask is not None else np.ones_like(ids),\n'
             '                 "token_type_ids": arr(token_type_ids) if token_type_ids is not None else np.zeros_like(ids)}',
             '"token_type_ids": arr(attention_mask) if attention_mask is not None else np.ones_like(ids),\n'
             '                 "attention_mask": arr(token_type_ids) if token_type_ids is not None else np.zeros_like(ids)}',
             T_INT8, "Int8CpuModel feeds attention_mask as token_type_ids and vice versa"),
    Mutation("int8-export-input-names-reversed", QUANT,
             "kwargs=example, input_names=inputs,",
             "kwargs=example, input_names=inputs[::-1],",
             T_INT8, "ONNX graph inputs named in the wrong order"),
    Mutation("int8-empty-matmuls-quantized", QUANT,
             "per_channel=per_channel, op_types_to_quantize=op_types, nodes_to_exclude=empty)",
             "per_channel=per_channel, op_types_to_quantize=op_types, nodes_to_exclude=[])",
             T_EMPTY, "weightless MatMuls of an empty layer quantized: crash (FFN) or silently wrong logits (heads)"),
    # ---------------------------------------------------------------------------------------------- bitsandbytes
    Mutation("bnb-empty-layers-quantized", QUANT,
             "    skip += empty\n",
             "    skip += []\n",
             T_EMPTY, "weightless linears handed to bitsandbytes: 8-bit fails to load, 4-bit on the first forward"),
    Mutation("bnb-trust-remote-code-dropped", QUANT,
             "device_map=\"cpu\",\n                                                                   "
             "trust_remote_code=trust_remote_code)",
             "device_map=\"cpu\",\n                                                                   "
             "trust_remote_code=False)",
             ("tests/test_compression_memory.py::test_quantize_stage_honours_trust_remote_code",),
             "quantize_bnb ignores the recipe's trust_remote_code"),
    Mutation("weight-bytes-miss-4bit-state", FORMATS,
             "            for v in qs.as_dict(packed=True).values():\n                add(v)",
             "            for v in qs.as_dict(packed=True).values():\n                pass",
             ("tests/test_compression_memory.py::test_metrics_json_weight_bytes_of_a_bnb_model_count_its_quantization_state",),
             "4-bit memory without absmax/code/nested scales (get_memory_footprint's figure)"),
    # ---------------------------------------------------------------------------------------------- parent check
    Mutation("parent-check-never-fails", STAGE,
             "if not record[metric] >= min_agreement:",
             "if False:",
             T_CHECK, "min_agreement recorded but not enforced"),
    Mutation("parent-check-on-256-rows", STAGE,
             "CHECK_EXAMPLES = 512",
             "CHECK_EXAMPLES = 256",
             T_CHECK, "the agreement measured on fewer rows than the issue asks"),
    Mutation("parent-check-regression-by-mse", STAGE,
             'metric = "pearson" if logits.shape[-1] == 1 else "agreement"',
             'metric = "mse" if logits.shape[-1] == 1 else "agreement"',
             ("tests/test_compression_parent_check.py::test_regression_is_checked_by_pearson_correlation",),
             "regression compared by MSE against a correlation threshold"),
]
