"""General distillation from the packaged MiniLM (which has no masked-LM head) vs task distillation, side by side.

    python bench/general.py           # SST-2 + MRPC with the budget in bench/_budget.py; run bench/layers.py first

The chain of recipes/distilbert-general.yaml at a reduced budget, per task, in the run folder bench/layers.py
used (its teacher and its task-distilled student with the default layers are reused):

    mlm-head         kind: finetune, objective: mlm  — fit a masked-LM head on the task's text (encoder frozen)
    general          kind: distill,  objective: mlm  — α_ce·L_ce + α_mlm·L_mlm + α_cos·L_cos on the same text
    general-student  kind: distill,  student_from: general — task distillation of the general student
    general-ft       kind: finetune, from: general   — plain fine-tuning of the general student
    task-student     (bench/layers.py's student with the default layers and cos_layers): task distillation only

Prints dev scores, macro and retention (student macro / teacher macro). Not a test: the numbers depend on the
machine and the budget.
"""

from __future__ import annotations

import sys

import _budget as b

MLM_HEAD = {"name": "mlm-head", "kind": "finetune", "from": "model", "objective": "mlm", "text_source": "train",
            "trainable": "head", "max_steps": 150, "batch_size": 16, "learning_rate": 1.0e-3, "log_every": 25,
            "checkpoint_every": 1000}
GENERAL = {"name": "general", "kind": "distill", "from": "mlm-head", "objective": "mlm", "text_source": "train",
           "max_steps": 150, "batch_size": 16, "learning_rate": 1.0e-4, "log_every": 25, "checkpoint_every": 1000}


def stages() -> list[dict]:
    return [MLM_HEAD, GENERAL,
            {**b.STUDENT, "name": "general-student", "from": "teacher", "student_from": "general"},
            {**b.STUDENT, "kind": "finetune", "name": "general-ft", "from": "general"}]


def task_student() -> str:
    """bench/layers.py's variant that has today's defaults (layers and cos_layers)."""
    from hfdistill.distillation.student import default_layers
    from hfdistill.stages.distill import DistillConfig

    cos = DistillConfig.model_fields["cos_layers"].default
    return f"l{''.join(map(str, default_layers(6)))}-{cos}"


def main(argv=None) -> int:
    b.setup()
    args = b.task_arg(argv)
    if args.task:
        b.run_task("bench-general", args.task, stages())
        return 0
    minutes = b.run_all(__file__, args.tasks)
    tasks = args.tasks
    print(b.header("General distillation (MLM-head fit → general → task) vs task distillation", minutes))
    teacher = sum(b.score("teacher", t) for t in tasks) / len(tasks)
    rows = [("teacher (MiniLM-L6 fine-tuned)", "teacher"),
            (f"task-distilled student ({task_student()})", task_student()),
            ("general student, task-distilled", "general-student"),
            ("general student, fine-tuned", "general-ft")]
    print("| model | " + " | ".join(tasks) + " | macro | retention |")
    print("|---|" + "---|" * len(tasks) + "---|---|")
    for label, stage in rows:
        scores = [b.score(stage, t) for t in tasks]
        macro = sum(scores) / len(scores)
        print(f"| {label} | " + " | ".join(f"{s:.2f}" for s in scores) + f" | {macro:.2f} | "
              f"{100 * macro / teacher:.1f}% |")
    print("\nScores ×100: SST-2 accuracy, MRPC mean of accuracy and F1.\n")
    print("| task | mlm-head: train L_mlm (last 25 steps) | general: layers, L_cos pairs, train loss (last 25 steps) |")
    print("|---|---|---|")
    for t in tasks:
        head, gen = b.result("mlm-head", t)["info"], b.result("general", t)["info"]
        print(f"| {t} | {head['train_loss']:.3f} ({head['texts']} texts, {head['trained_params']:,} weights "
              f"trained) | {gen['layers']}, {gen['cos_pairs']}, {gen['train_loss']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
