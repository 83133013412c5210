"""Deliberate breakages of distillation: teacher/student alignment, the loss formulas, general distillation.

    python mutations/run.py                          # all groups
    python mutations/run.py kl-direction cos-sign    # some, by name

Each must make at least one fast (non-slow) test among `tests` fail.
"""

from run import Mutation

LOSSES = "hfdistill/losses.py"
DISTILL = "hfdistill/stages/distill.py"
CACHE = "hfdistill/distillation/teacher_cache.py"
STUDENT = "hfdistill/distillation/student.py"
T_LOSSES = "tests/test_losses.py"
T_COLLATOR = "tests/test_distill_stage.py::test_task_collator_gives_row_i_the_teacher_outputs_of_example_idx_i"
T_CACHE = "tests/test_distill_stage.py::test_teacher_runs_once_and_later_calls_read_the_cache"
T_GENERAL = "tests/test_mlm_distill.py::test_general_distillation_learns_from_the_teacher"
T_REGRESSION = "tests/test_distill_stage.py::test_regression_student_learns_the_teachers_scores_not_the_labels"
T_COS_PAIRS = "tests/test_student.py::test_cos_pairs_last_aligns_the_outputs_and_matched_the_copied_layers"
T_RESUME = "tests/test_distill_stage.py::test_a_resumed_stage_equals_an_uninterrupted_one_exactly"
T_SHARD = "tests/test_scale.py::test_two_processes_write_the_same_cache_as_one_and_share_the_work"
T_ESTIMATE = "tests/test_scale.py::test_estimate_is_within_two_percent_of_the_entry_written"
T_BUDGET = "tests/test_scale.py::test_over_budget_distill_says_so_and_computes_teacher_hidden_states_online"
T_PRUNE = "tests/test_scale.py::test_prune_evicts_unreferenced_entries_of_every_run_under_a_root"
T_STEPS = "tests/test_scale.py::test_steps_formula_is_the_training_loops"

MUTATIONS = [
    # ---------------------------------------------------------------- teacher outputs ↔ batch rows
    Mutation("collator-shift", DISTILL,
             'pos = [int(e["idx"]) for e in examples]',
             'pos = [int(e["idx"]) for e in examples[1:] + examples[:1]]',
             (T_COLLATOR,), "row i of a batch gets the teacher logits and hidden states of example idx[i+1]"),
    Mutation("cache-logits-shift", CACHE,
             "logits[idx] = out.logits.float().cpu().numpy()",
             "logits[np.roll(idx, 1)] = out.logits.float().cpu().numpy()",
             (T_CACHE,), "the cache stores each example's logits under its neighbour's position"),
    Mutation("cache-hidden-shift", CACHE,
             "stacked = torch.stack([out.hidden_states[k] for k in layers], dim=2).to(torch.float16).cpu().numpy()",
             "stacked = torch.stack([out.hidden_states[k] for k in layers], dim=2).roll(1, 0).to(torch.float16)"
             ".cpu().numpy()",
             (T_CACHE,), "the cache stores each example's hidden states under its neighbour's position"),
    # ---------------------------------------------------------------- L_ce = KL(q_t ‖ q_s) · T²
    Mutation("kl-direction", LOSSES,
             'return F.kl_div(s, q, reduction="batchmean", log_target=True) * (t * t)',
             'return F.kl_div(q, s, reduction="batchmean", log_target=True) * (t * t)',
             (T_LOSSES,), "KL(q_student ‖ q_teacher) instead of KL(q_teacher ‖ q_student)"),
    Mutation("t-squared-dropped", LOSSES,
             'return F.kl_div(s, q, reduction="batchmean", log_target=True) * (t * t)',
             'return F.kl_div(s, q, reduction="batchmean", log_target=True)',
             (T_LOSSES,), "the T² factor is missing: the soft-target gradient shrinks as 1/T²"),
    Mutation("temperature-teacher-only", LOSSES,
             "s = F.log_softmax(student_logits.reshape(-1, student_logits.shape[-1]) / t, dim=-1)",
             "s = F.log_softmax(student_logits.reshape(-1, student_logits.shape[-1]), dim=-1)",
             (T_LOSSES,), "the student's distribution is not softened"),
    Mutation("temperature-student-only", LOSSES,
             "q = F.log_softmax(teacher_logits.reshape(-1, teacher_logits.shape[-1]) / t, dim=-1)",
             "q = F.log_softmax(teacher_logits.reshape(-1, teacher_logits.shape[-1]), dim=-1)",
             (T_LOSSES,), "the teacher's distribution is not softened"),
    # ---------------------------------------------------------------- L_cos = 1 − cos(h_s, h_t) over real tokens
    Mutation("cos-over-padding", LOSSES,
             "    mask = attention_mask.to(loss.dtype)\n    return (loss * mask)",
             "    mask = torch.ones_like(loss)\n    return (loss * mask)",
             (T_LOSSES,), "padding positions count in the cosine loss"),
    Mutation("cos-sign", LOSSES,
             "loss = 1.0 - cos\n",
             "loss = 1.0 + cos\n",
             (T_LOSSES,), "the cosine loss pushes the hidden states apart"),
    Mutation("cos-last-pairs-copied-layer", STUDENT,
             "return [(len(layers), num_teacher_layers)]",
             "return matched_hidden_layers(layers)[-1:]",
             (T_COS_PAIRS,), "cos_layers: last pairs the student's output with the teacher layer it was copied "
                             "from (layer 4 of 6), not the teacher's output"),
    # ---------------------------------------------------------------- general (MLM) distillation
    Mutation("mlm-teacher-unused", DISTILL,
             "    teacher.to(ctx.accelerator.device)\n    weights = cfg.loss_weights()\n",
             "    teacher.to(ctx.accelerator.device)\n"
             "    weights = LossWeights(cfg.temperature, 0.0, cfg.alpha_hard, cfg.alpha_mlm, 0.0)\n",
             (T_GENERAL,), "general distillation with α_ce = α_cos = 0: the student learns the MLM labels only"),
    Mutation("mlm-ce-masked-only", LOSSES,
             'at = attention_mask.bool() if attention_mask is not None else torch.ones_like(masked)',
             'at = masked',
             (T_LOSSES,), "L_ce over the masked tokens only whatever ce_positions says (85% of the signal lost)"),
    Mutation("mlm-ce-over-padding", LOSSES,
             'at = attention_mask.bool() if attention_mask is not None else torch.ones_like(masked)',
             'at = torch.ones_like(masked)',
             (T_LOSSES,), "L_ce over padding positions too"),
    # ---------------------------------------------------------------- regression (STS-B)
    Mutation("regression-ignores-teacher", LOSSES,
             "l_ce = mse_logit_loss(student_logits, teacher_logits)",
             "l_ce = mse_logit_loss(student_logits, student_logits.detach())",
             (T_LOSSES, T_REGRESSION), "the regression soft-target term is always 0"),
    Mutation("regression-fits-labels", LOSSES,
             "l_ce = mse_logit_loss(student_logits, teacher_logits)",
             "l_ce = mse_logit_loss(student_logits, labels.nan_to_num().unsqueeze(-1).to(student_logits.dtype))",
             (T_REGRESSION,), "the regression 'teacher' term regresses to the gold labels instead"),
    # ---------------------------------------------------------------- resume
    Mutation("resume-replays-a-batch", "hfdistill/training.py",
             "skip_first_batches(loader, done_in_epoch * args.gradient_accumulation_steps)",
             "skip_first_batches(loader, (done_in_epoch - 1) * args.gradient_accumulation_steps)",
             (T_RESUME,), "a resumed run trains once more on the last batch before the checkpoint"),
    # ---------------------------------------------------------------- teacher cache at scale (issue 13)
    Mutation("cache-shards-overlap", CACHE,
             "[order[s:s + batch_size] for s in range(0, n, batch_size)][rank::world]",
             "[order[s:s + batch_size] for s in range(0, n, batch_size)][0::1]",
             (T_SHARD,), "every process computes the whole teacher pass (no sharding)"),
    Mutation("cache-shard-logits-dropped", CACHE,
             "for r in range(world):  # join the shards of the logits",
             "for r in range(1):  # join the shards of the logits",
             (T_SHARD,), "the main process keeps only its own share of the logits"),
    Mutation("hidden-batch-wrong-layers", CACHE, "self.hidden[a:a + n][:, slots]",
             "self.hidden[a:a + n][:, :len(slots)]", (T_CACHE,), "a batch gets the first stored layers, not its own"),
    Mutation("estimate-forgets-layers", CACHE, "self.tokens * self.hidden_layers * self.hidden_size * 2",
             "self.tokens * self.hidden_size * 2", (T_ESTIMATE,), "the estimate counts one hidden layer"),
    Mutation("budget-ignored", DISTILL, "fits = est.bytes <= budget or not layers", "fits = True",
             (T_BUDGET,), "an over-budget teacher cache is written anyway"),
    Mutation("prune-evicts-unfinished", "hfdistill/cache.py",
             'for p in run_dir.glob(f".work/*/*/{NOTE_FILE}")})', 'for p in run_dir.glob(f".nowhere/{NOTE_FILE}")})',
             (T_PRUNE,), "cache prune removes the entry an unfinished stage resumes from"),
    Mutation("plan-steps-ignore-processes", "hfdistill/planning.py",
             "per_process = math.ceil(math.ceil(rows / args.batch_size) / processes)",
             "per_process = math.ceil(rows / args.batch_size)", (T_STEPS,), "plan's steps ignore the processes"),
]
