"""Deliberate breakages of issue 13's scaling code (mixed precision, devices, sharded dev scoring): each must make
at least one of the fast tests named with it fail.  `python mutations/run.py --list` shows them; see run.py."""

from __future__ import annotations

from run import Mutation

PIPELINE = "hfdistill/pipeline.py"
TRAINING = "hfdistill/training.py"
EVALUATION = "hfdistill/evaluation.py"
FORMATS = "hfdistill/models/formats.py"
MODELS = "hfdistill/models/__init__.py"
T_PREC = "tests/test_precision_devices.py"
T_SCORE = ("tests/test_accelerate_launch.py::test_two_processes_score_the_dev_set_exactly_as_one",)

MUTATIONS = [
    Mutation("recipe-precision-ignored", PIPELINE,
             "return Accelerator(cpu=cpu, mixed_precision=mixed_precision,",
             "return Accelerator(cpu=cpu, mixed_precision=None,",
             (f"{T_PREC}::test_bf16_finetune_runs_on_cpu_records_it_and_saves_fp32_weights",),
             "the recipe's mixed_precision never reaches the Accelerator"),
    Mutation("fp16-on-cpu-accepted", PIPELINE, 'if wanted == "fp16" and cpu:', 'if wanted == "fp16" and not cpu:',
             (f"{T_PREC}::test_fp16_on_cpu_is_refused_in_one_line_before_any_work",),
             "fp16 on CPU silently trains in fp32"),
    Mutation("precision-not-recorded", TRAINING,
             "    ctx.mixed_precision = accelerator.mixed_precision  # recorded in the stage's lineage.json\n", "",
             (f"{T_PREC}::test_the_training_loop_records_its_precision_and_hands_back_a_full_precision_model",),
             "lineage.json does not say in which precision a stage trained"),
    Mutation("autocast-left-on", TRAINING,
             'if model.__dict__.pop("_original_forward", None) is not None:',
             'if model.__dict__.get("_original_forward", None) is None:',
             (f"{T_PREC}::test_the_training_loop_records_its_precision_and_hands_back_a_full_precision_model",),
             "after bf16 training the stage's model still runs under autocast"),
    Mutation("bnb-always-on-cpu", FORMATS, 'return "cpu" if device.type == "cpu" else {"": device}', 'return "cpu"',
             (f"{T_PREC}::test_bitsandbytes_loads_on_cpu_as_before_and_on_the_gpu_as_one_device",),
             "bitsandbytes models never use the GPU (and LoRA recovery fails under a CUDA accelerator)"),
    Mutation("model-not-moved", MODELS, "        model = model.to(device)\n", "        pass\n",
             (f"{T_PREC}::test_load_model_on_cpu_is_unchanged_and_a_device_moves_plain_models",),
             "dev scoring stays on CPU beside a GPU"),
    Mutation("gather-keeps-duplicates", EVALUATION, "accelerator.gather_for_metrics((p.to(", "accelerator.gather((p.to(",
             T_SCORE, "the padding duplicates of the last shard are scored twice"),
    Mutation("scoring-not-sharded", EVALUATION,
             "        loader = accelerator.prepare_data_loader(loader, device_placement=False)",
             "        loader = loader", T_SCORE, "every process scores the whole dev set"),
]
