"""A thin command line over the Python API. User errors print one line and exit with code 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional


def _cmd_run(a: argparse.Namespace) -> int:
    from hfdistill.pipeline import run

    run(a.recipe, force=a.force, publish=False if a.no_push else None)
    return 0


def _cmd_validate(a: argparse.Namespace) -> int:
    from hfdistill.recipe import load_recipe

    r = load_recipe(a.recipe)
    stages = ", ".join(f"{s.name} ({s.kind})" for s in r.stages)
    print(f"{a.recipe}: OK — {r.name}: tasks {', '.join(r.tasks)}; stages {stages}; output {r.output_dir}")
    return 0


def _cmd_eval(a: argparse.Namespace) -> int:
    from hfdistill.evaluation import evaluate_folder

    glue_dir = Path(a.glue_dir) if a.glue_dir else None
    res = evaluate_folder(Path(a.model), a.task, glue_dir=glue_dir, hub_dataset=a.hub_dataset,
                          max_samples=a.max_samples, max_seq_length=a.max_seq_length,
                          latency_samples=a.latency_samples)
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        lat = res["latency_ms"]
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in res["metrics"].items())
        print(f"{a.model} on {a.task} dev ({res['num_examples']} examples): {metrics}; score {res['score']:.4f}\n"
              f"params {res['params']:,}; weights on disk {res['disk_bytes']:,} bytes; "
              f"CPU latency bs1 median {lat['median']:.2f} ms, p90 {lat['p90']:.2f} ms "
              f"({lat['num_samples']} examples, {lat['threads']} threads)")
    return 0


def _cmd_data_check(a: argparse.Namespace) -> int:
    from hfdistill.errors import DataError
    from hfdistill.glue import check_glue_dir

    glue_dir = a.glue_dir or os.environ.get("HFDISTILL_GLUE_DIR")
    if not glue_dir:
        raise DataError("no GLUE folder: pass --glue-dir or set HFDISTILL_GLUE_DIR")
    if not Path(glue_dir).is_dir():
        raise DataError(f"{glue_dir}: folder not found")
    report = check_glue_dir(Path(glue_dir))
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


def _cmd_reference(a: argparse.Namespace) -> int:
    from hfdistill.recipe import reference_markdown

    print(reference_markdown())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hfdistill", description="Compress GLUE classifiers and publish them.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a recipe (resumes from its run folder)")
    r.add_argument("recipe")
    r.add_argument("--force", action="store_true", help="re-run stages whose folders are complete")
    r.add_argument("--no-push", action="store_true", help="do not publish even if the recipe has `publish:`")
    r.set_defaults(fn=_cmd_run)

    v = sub.add_parser("validate", help="check a recipe without running it")
    v.add_argument("recipe")
    v.set_defaults(fn=_cmd_validate)

    e = sub.add_parser("eval", help="evaluate a model folder on a GLUE dev set")
    e.add_argument("model")
    e.add_argument("--task", required=True)
    e.add_argument("--glue-dir")
    e.add_argument("--hub-dataset")
    e.add_argument("--max-samples", type=int)
    e.add_argument("--max-seq-length", type=int, default=128)
    e.add_argument("--latency-samples", type=int, default=50)
    e.add_argument("--json", action="store_true", help="print the metrics.json record")
    e.set_defaults(fn=_cmd_eval)

    d = sub.add_parser("data", help="GLUE data tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dc = dsub.add_parser("check", help="row counts per task and split, and malformed rows, as JSON")
    dc.add_argument("--glue-dir")
    dc.set_defaults(fn=_cmd_data_check)

    ref = sub.add_parser("recipe-reference", help="print the recipe reference (Markdown)")
    ref.set_defaults(fn=_cmd_reference)

    from hfdistill.hub import add_commands as add_hub_commands  # card, push, pull, hub serve

    add_hub_commands(sub)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    from hfdistill.errors import HfdistillError

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except HfdistillError as e:
        print(f"hfdistill: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hfdistill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
