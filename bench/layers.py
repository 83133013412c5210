"""Layer choice and L_cos pairing of a 3-layer student of the 6-layer MiniLM teacher, measured side by side.

    python bench/layers.py            # SST-2 + MRPC with the budget in bench/_budget.py (about an hour)

Six students distilled from the same fine-tuned teacher with the same budget and seed: kept teacher layers
[0, 2, 4], [0, 2, 5] or [1, 3, 5], each with L_cos on every kept layer (`cos_layers: matched`) or on the outputs only
(`last`: the student's output ↔ the teacher's output). Prints dev scores, macro and retention (student macro /
teacher macro). Not a test: the numbers depend on the machine and the budget.
"""

from __future__ import annotations

import sys

import _budget as b

LAYERS = ([0, 2, 4], [0, 2, 5], [1, 3, 5])
COS = ("matched", "last")
# MRPC steps cost about twice SST-2's (pairs): within the hour it gets matched vs last on [0, 2, 4] only
SKIP = {"mrpc": {"l025-last", "l135-last"}}


def variants(task: str | None = None) -> list[dict]:
    out = [{**b.STUDENT, "name": f"l{''.join(map(str, layers))}-{cos}", "layers": layers, "cos_layers": cos}
           for layers in LAYERS for cos in COS]
    return [v for v in out if v["name"] not in SKIP.get(task, ())]


def main(argv=None) -> int:
    b.setup()
    args = b.task_arg(argv)
    if args.task:
        b.run_task("bench-layers", args.task, variants(args.task))
        return 0
    minutes = b.run_all(__file__, args.tasks)
    tasks = args.tasks
    print(b.header("Layer choice × L_cos pairing (3-layer DistilBERT students of MiniLM-L6)", minutes))
    teacher = sum(b.score("teacher", t) for t in tasks) / len(tasks)
    print("| student | layers | cos_layers | L_cos pairs (student, teacher hidden state) | "
          + " | ".join(tasks) + " | macro | retention |")
    print("|---|---|---|---|" + "---|" * len(tasks) + "---|---|")
    print("| teacher | all 6 | - | - | " + " | ".join(f"{b.score('teacher', t):.2f}" for t in tasks)
          + f" | {teacher:.2f} | 100.0% |")
    for st in variants():
        ran = [t for t in tasks if st["name"] not in SKIP.get(t, ())]
        scores = {t: b.score(st["name"], t) for t in ran}
        macro = sum(scores.values()) / len(scores)
        pairs = b.result(st["name"], ran[0])["info"]["cos_pairs"]
        cells = " | ".join(f"{scores[t]:.2f}" if t in scores else "–" for t in tasks)
        ret = f"{100 * macro / teacher:.1f}%" if len(ran) == len(tasks) else "–"
        print(f"| {st['name']} | {st['layers']} | {st['cos_layers']} | {pairs} | {cells} | "
              + (f"{macro:.2f}" if len(ran) == len(tasks) else "–") + f" | {ret} |")
    print("\nScores ×100: SST-2 accuracy, MRPC mean of accuracy and F1.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
