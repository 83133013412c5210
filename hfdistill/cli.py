"""The command line: argument parsing and printing only; every command calls the Python API (`hfdistill.api`).

User errors (HfdistillError) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import hfdistill
from hfdistill.errors import HfdistillError


def _cmd_run(a: argparse.Namespace) -> int:
    hfdistill.run(a.recipe, force=a.force, publish=False if a.no_push else None)
    return 0


def _cmd_validate(a: argparse.Namespace) -> int:
    r = hfdistill.validate(a.recipe)
    stages = ", ".join(f"{s.name} ({s.kind})" for s in r.stages)
    print(f"{a.recipe}: OK — {r.name}: tasks {', '.join(r.tasks)}; stages {stages}; output {r.output_dir}")
    return 0


def _cmd_eval(a: argparse.Namespace) -> int:
    res = hfdistill.evaluate(a.model, a.task, glue_dir=Path(a.glue_dir) if a.glue_dir else None,
                             hub_dataset=a.hub_dataset, max_samples=a.max_samples,
                             max_seq_length=a.max_seq_length, latency_samples=a.latency_samples)
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
    report = hfdistill.check_data(a.glue_dir)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


def _cmd_reference(a: argparse.Namespace) -> int:
    print(hfdistill.recipe_reference())
    return 0


def _cmd_card(a: argparse.Namespace) -> int:
    print(hfdistill.card(a.model_dir, repo_id=a.repo_id))
    return 0


def _cmd_push(a: argparse.Namespace) -> int:
    results = hfdistill.push(a.run_dir, endpoint=a.endpoint, storage=a.storage, repo_prefix=a.repo_prefix,
                             revision=a.revision, tag=a.tag, private=a.private)
    print(f"{sum(r.changed for r in results)} of {len(results)} model(s) changed")
    return 0


def _cmd_pull(a: argparse.Namespace) -> int:
    result = hfdistill.pull(a.repo_id, endpoint=a.endpoint, storage=a.storage, glue_dir=a.glue_dir,
                            hub_dataset=a.hub_dataset, revision=a.revision, local_dir=a.local_dir,
                            verify=a.verify, tolerance=a.tolerance)
    for line in result.report():
        print(line)
    return 0 if result.ok else 1


def _cmd_serve(a: argparse.Namespace) -> int:
    hfdistill.serve(a.host, a.port, a.storage)
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

    c = sub.add_parser("card", help="write the model card (README.md + size_vs_score.png) of a model folder")
    c.add_argument("model_dir")
    c.add_argument("--repo-id", help="the Hub repo id the card should name (default: planned from the recipe)")
    c.set_defaults(fn=_cmd_card)

    pu = sub.add_parser("push", help="push every model of a run folder (cards refreshed, one commit per model)")
    pu.add_argument("run_dir")
    pu.add_argument("--endpoint", help="Hub URL or `embedded` (default: the recipe's publish.endpoint)")
    pu.add_argument("--storage", help="embedded Hub folder (default: publish.storage)")
    pu.add_argument("--repo-prefix")
    pu.add_argument("--revision")
    pu.add_argument("--tag")
    pu.add_argument("--private", action="store_true", default=None)
    pu.set_defaults(fn=_cmd_push)

    q = sub.add_parser("pull", help="download a published model, check its hashes, optionally re-evaluate it")
    q.add_argument("repo_id")
    q.add_argument("--revision")
    q.add_argument("--local-dir", help="download folder (default: ./<repo name>)")
    q.add_argument("--verify", action="store_true", help="re-run the GLUE evaluation the card claims")
    q.add_argument("--tolerance", type=float, default=0.005,
                   help="allowed |measured - claimed| per metric (fractions; default 0.005)")
    q.add_argument("--endpoint", help="Hub URL or `embedded` (default: HF_ENDPOINT / huggingface.co)")
    q.add_argument("--storage", default="hub-storage", help="embedded Hub folder for --endpoint embedded")
    q.add_argument("--glue-dir", help="GLUE folder for --verify (default $HFDISTILL_GLUE_DIR)")
    q.add_argument("--hub-dataset", help="datasets id with GLUE configs for --verify (e.g. nyu-mll/glue)")
    q.set_defaults(fn=_cmd_pull)

    h = sub.add_parser("hub", help="the embedded Hub-compatible server")
    hsub = h.add_subparsers(dest="hub_command", required=True)
    s = hsub.add_parser("serve", help="serve a local Hub (API + web page); writes need $HFDISTILL_HUB_TOKEN if set")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8787)
    s.add_argument("--storage", default="hub-storage")
    s.set_defaults(fn=_cmd_serve)
    return p


def main(argv: Optional[list[str]] = None) -> int:
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
