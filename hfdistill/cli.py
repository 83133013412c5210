"""The command line: argument parsing and printing only; every command calls the Python API (`hfdistill.api`).

`import hfdistill` is light, so `--help` and `--version` answer at once; torch and transformers load when a command
first needs them. Exit codes: 0 done; 1 a check found problems (pull: bad files or a failed verification; data
check: malformed or missing data); 2 a user error, printed as one line `hfdistill: error: …`; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Optional

import hfdistill
from hfdistill.errors import HfdistillError

EXIT_CODES = """exit codes:
  0    done
  1    a check found problems (pull: a file does not match its hash or a claimed score was not reproduced;
       data check: malformed or missing files)
  2    a user error (bad recipe, data, model folder, Hub answer): one line `hfdistill: error: …` on stderr
  130  interrupted (Ctrl-C); a re-run resumes from the last checkpoint"""


def _quiet_third_parties(verbose: bool) -> None:
    """Progress bars and warnings of the libraries underneath (download bars, weight-loading reports, the
    bitsandbytes kernels notice) say nothing about the user's run: off unless --verbose. Set before they load."""
    if verbose:
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for name in ("bitsandbytes", "accelerate", "datasets", "transformers", "huggingface_hub", "onnxruntime"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# ------------------------------------------------------------------------------------------------ commands
def _cmd_run(a: argparse.Namespace) -> int:
    sink = io.StringIO() if a.quiet else None
    with contextlib.redirect_stdout(sink) if sink else contextlib.nullcontext():
        results = hfdistill.run(a.recipe, force=a.force, publish=False if a.no_push else None)
    if a.quiet and results:
        run_dir = Path(results[0].path).parent.parent
        print(f"{len(results)} model folder(s) in {run_dir}; summary: {run_dir / 'SUMMARY.md'}")
    return 0


def _cmd_validate(a: argparse.Namespace) -> int:
    r = hfdistill.validate(a.recipe)
    if a.json:
        _print_json({"recipe": str(a.recipe), "ok": True, "name": r.name, "tasks": list(r.tasks),
                     "stages": [{"name": s.name, "kind": s.kind} for s in r.stages],
                     "output_dir": str(r.output_dir),
                     **({"variants": [{"name": v.name, "values": v.values, "stages": list(v.stages)}
                                      for v in r.variants]} if r.sweep else {})})
        return 0
    stages = ", ".join(f"{s.name} ({s.kind})" for s in r.stages)
    sweep = f"; sweep: {len(r.variants)} variants" if r.sweep else ""
    print(f"{a.recipe}: OK — {r.name}: tasks {', '.join(r.tasks)}; stages {stages}{sweep}; output {r.output_dir}")
    return 0


def _cmd_plan(a: argparse.Namespace) -> int:
    result = hfdistill.plan(a.recipe, processes=a.processes)
    if a.json:
        _print_json(result.to_json())
        return 0
    print("\n".join(result.lines()))
    return 0


def _cmd_eval(a: argparse.Namespace) -> int:
    res = hfdistill.evaluate(a.model, a.task, glue_dir=Path(a.glue_dir) if a.glue_dir else None,
                             hub_dataset=a.hub_dataset, max_samples=a.max_samples,
                             max_seq_length=a.max_seq_length, latency_samples=a.latency_samples,
                             latency_threads=a.threads)
    lat = res.get("latency_ms") or {}
    if a.json:
        _print_json(res)
    else:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in res["metrics"].items())
        print(f"{a.model} on {res['task']} dev ({res['num_examples']} examples): {metrics}; score "
              f"{res['score']:.4f}\nparams {res['params']:,}; weights on disk {res['disk_bytes']:,} bytes; "
              f"CPU latency bs1 median {lat['median']:.2f} ms, p90 {lat['p90']:.2f} ms "
              f"({lat['num_samples']} examples × {lat['rounds']} passes, {lat['threads']} thread(s), "
              f"spread {100 * lat['spread']:.0f}%)")
    for w in lat.get("warnings") or []:
        print(f"hfdistill: warning: the latency figure may be unreliable: {w}", file=sys.stderr)
    return 0


def _cmd_data_check(a: argparse.Namespace) -> int:
    report = hfdistill.check_data(a.glue_dir)
    if a.json:
        _print_json(report)
    else:
        print(f"GLUE folder {report['glue_dir']}: {'OK' if report['ok'] else 'PROBLEMS'}")
        for name, t in report["tasks"].items():
            splits = ", ".join(f"{s} {n:,}" if n is not None else f"{s} -" for s, n in t["splits"].items())
            print(f"  {name:5s} {splits}")
            for err in t["errors"]:
                print(f"        {err}")
        if report.get("problem"):
            print(f"  {report['problem']}")
        if report["missing"]:
            print(f"  not found: {', '.join(report['missing'])}")
    return 0 if report["ok"] else 1


def _cmd_reference(a: argparse.Namespace) -> int:
    print(hfdistill.recipe_reference())
    return 0


def _cmd_card(a: argparse.Namespace) -> int:
    print(hfdistill.card(a.model_dir, repo_id=a.repo_id))
    return 0


def _cmd_push(a: argparse.Namespace) -> int:
    log = (lambda _msg: None) if (a.quiet or a.json) else print  # noqa: E731
    results = hfdistill.push(a.run_dir, endpoint=a.endpoint, token=True if a.send_token else None, force=a.force,
                             make_private=a.make_private, dry_run=a.dry_run, storage=a.storage,
                             repo_prefix=a.repo_prefix, revision=a.revision, tag=a.tag, private=a.private, log=log)
    if a.dry_run:
        if a.json:
            _print_json([{"model": p.key, "repo_id": p.repo_id, "url": p.url, "files": p.files} for p in results])
            return 0
        for p in results:
            print(f"{p.key} → {p.repo_id} ({p.url}): {len(p.files)} files: {', '.join(p.files)}")
        print(f"dry run: {len(results)} repo(s) would be written; nothing was changed")
        return 0
    if a.json:
        _print_json([{"repo_id": r.repo_id, "commit": r.commit, "changed": r.changed, "url": r.url, "tag": r.tag}
                     for r in results])
    else:
        print(f"{sum(r.changed for r in results)} of {len(results)} model(s) changed")
    return 0


def _cmd_pull(a: argparse.Namespace) -> int:
    result = hfdistill.pull(a.repo_id, endpoint=a.endpoint, storage=a.storage, glue_dir=a.glue_dir,
                            hub_dataset=a.hub_dataset, revision=a.revision, local_dir=a.local_dir,
                            verify=a.verify, tolerance=a.tolerance, max_samples=a.max_samples,
                            **({"log": lambda _m: None} if a.json or a.quiet else {}))
    if a.json:
        _print_json({"repo_id": result.repo_id, "commit": result.commit, "path": str(result.path),
                     "ok": result.ok, "files_checked": result.files_checked,
                     "hash_mismatches": result.hash_mismatches, "missing_files": result.missing_files,
                     "checks": [{"task": c.task, "metric": c.metric, "claimed": c.claimed, "measured": c.measured,
                                 "ok": c.ok} for c in result.checks]})
    else:
        for line in result.report():
            print(line)
    return 0 if result.ok else 1


def _cmd_serve(a: argparse.Namespace) -> int:
    hfdistill.serve(a.host, a.port, a.storage, orgs=tuple(a.org or ()), create=a.create, webhook=a.webhook,
                    webhook_secret=a.webhook_secret, webhook_watch=tuple(a.webhook_watch or ()))
    return 0


def _cmd_webhook_serve(a: argparse.Namespace) -> int:
    hfdistill.webhook_serve(a.recipe or [], a.watch or [], secret=a.secret, state_dir=a.state_dir, host=a.host,
                            port=a.port, endpoint=a.endpoint, command=shlex.split(a.command) if a.command else None)
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    path = hfdistill.report(a.run_dir, ablation=a.ablation, plots=not a.no_plots)
    if a.json:
        print(json.dumps({"report": str(path)}))
    elif a.quiet:
        print(path)
    else:
        print(path.read_text(encoding="utf-8"))
        print(f"Report: {path} (copied into each task teacher's folder as report/, linked from its card)")
    return 0


def _cmd_front(a: argparse.Namespace) -> int:
    front = hfdistill.front(a.run_dir, plot=not a.no_plot)
    if a.json:
        _print_json(front.to_json())
    elif a.quiet:
        for task, tf in front.tasks.items():
            print(f"{task}: {' '.join(tf.front)}")
    else:
        print(front.table())
    return 0


def _hub_log(a: argparse.Namespace) -> dict[str, Any]:
    """Log lines and progress bars of the Hub commands: off with --quiet or --json."""
    quiet = a.quiet or getattr(a, "json", False)
    return {"log": (lambda _m: None) if quiet else print, "progress": not quiet}


def _cmd_refresh(a: argparse.Namespace) -> int:
    results = hfdistill.refresh(a.repo_ids, author=a.author, endpoint=a.endpoint, storage=a.storage,
                                reevaluate=a.reevaluate, max_samples=a.max_samples, glue_dir=a.glue_dir,
                                hub_dataset=a.hub_dataset, **_hub_log(a))
    if a.json:
        _print_json([{"repo_id": r.repo_id, "commit": r.commit, "changed": r.changed, "url": r.url}
                     for r in results])
    else:
        print(f"{sum(bool(r.changed) for r in results)} of {len(results)} repo(s) changed")
    return 0


def _cmd_collection(a: argparse.Namespace) -> int:
    r = hfdistill.collection(a.run_dirs, a.title, endpoint=a.endpoint, storage=a.storage, private=a.private,
                             repo_prefix=a.repo_prefix, **_hub_log(a))
    if a.json:
        _print_json({"slug": r.slug, "url": r.url, "title": r.title, "added": r.added, "updated": r.updated,
                     "unchanged": r.unchanged})
    else:
        print(f"{r.title}: {r.url} ({len(r.added)} added, {len(r.updated)} updated, {len(r.unchanged)} unchanged)")
    return 0


def _cmd_leaderboard(a: argparse.Namespace) -> int:
    board = hfdistill.leaderboard(a.author, endpoint=a.endpoint, storage=a.storage, out_dir=a.out, push=a.push,
                                  **_hub_log(a))
    if a.json:
        _print_json({"author": board.author, "tasks": board.tasks,
                     "rows": [{**vars(r), "macro": r.macro} for r in board.rows],
                     "files": [str(f) for f in board.files], "pushed": board.pushed})
        return 0
    print(board.text())
    for f in board.files:
        print(f"wrote {f}")
    return 0


def _cmd_cache(a: argparse.Namespace) -> int:
    if a.prune:
        r = hfdistill.prune_cache(a.run_dir, dry_run=a.dry_run)
        if a.json:
            _print_json({"root": str(r.root), "run_dirs": [str(d) for d in r.run_dirs], "dry_run": r.dry_run,
                         "removed": [str(p) for p in r.removed], "kept": [e.key for e in r.kept],
                         "freed_bytes": r.freed_bytes})
            return 0
        verb = "would free" if r.dry_run else "freed"
        print(f"{a.run_dir}: {len(r.run_dirs)} run folder{'' if len(r.run_dirs) == 1 else 's'}, "
              f"{len(r.removed)} unreferenced cache entr{'y' if len(r.removed) == 1 else 'ies'} "
              f"{'to evict' if r.dry_run else 'evicted'}, {len(r.kept)} in use kept; {verb} {_bytes(r.freed_bytes)}")
        for path in r.removed:
            print(f"  {path}")
        return 0
    entries = hfdistill.cache(a.run_dir, clean=a.clean, everything=a.all)
    if a.json:
        _print_json([{"key": e.key, "bytes": e.bytes, "examples": e.examples, "hidden_layers": e.hidden_layers,
                      "used_by": e.used_by} for e in entries])
        return 0
    verb = "removed" if (a.clean or a.all) else "holds"
    total = sum(e.bytes for e in entries)
    print(f"{a.run_dir} teacher cache {verb} {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, "
          f"{total / 1e6:.1f} MB")
    for e in entries:
        used = f"used by {', '.join(e.used_by)}" if e.used_by else "not used by any finished model"
        layers = f", hidden states of layers {e.hidden_layers}" if e.hidden_layers else ""
        print(f"  {e.key[:12]}  {e.bytes / 1e6:8.1f} MB  {e.examples or '?'} examples{layers}; {used}")
    return 0


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


# ------------------------------------------------------------------------------------------------ parser
def _sub(sub: Any, name: str, help: str, examples: list[str], **kw: Any) -> argparse.ArgumentParser:
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) + "\n\n" + EXIT_CODES
    return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kw)


def _common(p: argparse.ArgumentParser, json_output: bool = False) -> None:
    g = p.add_argument_group("output")
    g.add_argument("-q", "--quiet", action="store_true", help="print only the result (and errors)")
    g.add_argument("-v", "--verbose", action="store_true",
                   help="also show the progress bars and warnings of transformers, datasets, bitsandbytes …")
    if json_output:
        g.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")


def build_parser(prog: str = "hfdistill") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Compress GLUE classifiers (fine-tune → distil → prune → quantize), "
                                            "evaluate them, write their model cards and publish them on the Hub.",
                                epilog="examples:\n  hfdistill run recipes/quickstart.yaml\n"
                                       "  hfdistill <command> --help\n\n" + EXIT_CODES)
    p.add_argument("--version", action="version", version=f"hfdistill {hfdistill.__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="<command>")

    r = _sub(sub, "run", "run a recipe: every stage for every task, resuming from its run folder",
             ["hfdistill run recipes/quickstart.yaml", "hfdistill run my.yaml --no-push --quiet",
              "accelerate launch --multi_gpu --num_processes 2 -m hfdistill run my.yaml"])
    r.add_argument("recipe", help="the recipe YAML file (paths in it are relative to it)")
    r.add_argument("--force", action="store_true", help="re-run stages whose folders are complete")
    r.add_argument("--no-push", action="store_true", help="do not publish even if the recipe has `publish:`")
    _common(r)
    r.set_defaults(fn=_cmd_run)

    v = _sub(sub, "validate", "check a recipe without running it (every problem, one line)",
             ["hfdistill validate recipes/quickstart.yaml", "hfdistill validate my.yaml --json"])
    v.add_argument("recipe", help="the recipe YAML file")
    _common(v, json_output=True)
    v.set_defaults(fn=_cmd_validate)

    pl = _sub(sub, "plan", "show what a recipe's run will do, doing none of it: steps, teacher-cache size and "
                           "budget fallback, rough time and target repo per task and stage",
              ["hfdistill plan recipes/quickstart.yaml", "hfdistill plan big.yaml --processes 8 --json"])
    pl.add_argument("recipe", help="the recipe YAML file")
    pl.add_argument("--processes", type=int, help="processes the run will use (steps are per process; default "
                                                  "$WORLD_SIZE, else 1)")
    _common(pl, json_output=True)
    pl.set_defaults(fn=_cmd_plan)

    e = _sub(sub, "eval", "evaluate a model folder on a GLUE dev set (metrics, size, CPU latency)",
             ["hfdistill eval runs/quickstart/student/sst2", "hfdistill eval my-model --task mrpc --threads 2 --json"])
    e.add_argument("model", help="a model folder (any format hfdistill writes, or a transformers classifier)")
    e.add_argument("--task", help="GLUE task (default: the one the folder's metrics.json/lineage.json records)")
    e.add_argument("--glue-dir", help="folder with the GLUE task folders (default $HFDISTILL_GLUE_DIR)")
    e.add_argument("--hub-dataset", help="a `datasets` id with GLUE configs, e.g. nyu-mll/glue (needs the Hub)")
    e.add_argument("--max-samples", type=int, help="evaluate on the first N dev examples only")
    e.add_argument("--max-seq-length", type=int, help="tokens per example (default: the folder's run setting, "
                                                      "else 128)")
    e.add_argument("--latency-samples", type=int, default=50, help="dev examples timed at batch size 1 "
                                                                   "(default 50)")
    e.add_argument("--threads", type=int, default=1, help="CPU threads for the latency figure (default 1; "
                                                          "recorded)")
    _common(e, json_output=True)
    e.set_defaults(fn=_cmd_eval)

    d = _sub(sub, "data", "GLUE data tools", ["hfdistill data check --glue-dir ../shared/glue"])
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="<data command>")
    dc = _sub(dsub, "check", "count rows per GLUE task and split, and name malformed files and rows",
              ["hfdistill data check --glue-dir ../shared/glue", "hfdistill data check --json"])
    dc.add_argument("--glue-dir", help="the folder holding CoLA/, SST-2/, MRPC/ … (default $HFDISTILL_GLUE_DIR)")
    _common(dc, json_output=True)
    dc.set_defaults(fn=_cmd_data_check)

    ref = _sub(sub, "recipe-reference", "print the recipe reference (every field, bound and default; Markdown)",
               ["hfdistill recipe-reference > recipe-reference.md"])
    ref.set_defaults(fn=_cmd_reference)

    c = _sub(sub, "card", "write the model card (README.md + size_vs_score.png) of a model folder",
             ["hfdistill card runs/quickstart/student/sst2", "hfdistill card runs/q/student/sst2 --repo-id me/s"])
    c.add_argument("model_dir", help="a finished model folder of a run (<run>/<stage>/<task>)")
    c.add_argument("--repo-id", help="the Hub repo id the card should name (default: planned from the recipe)")
    c.set_defaults(fn=_cmd_card)

    pu = _sub(sub, "push", "push every model of a run folder (cards refreshed, one commit per model, parents first)",
              ["hfdistill push runs/quickstart --dry-run", "hfdistill push runs/quickstart --endpoint embedded",
               "hfdistill push runs/quickstart --repo-prefix my-user/quickstart --private"])
    pu.add_argument("run_dir", help="the run folder (runs/<name>)")
    pu.add_argument("--dry-run", action="store_true",
                    help="list the repos and files the push would write; change nothing (not even local cards)")
    pu.add_argument("--endpoint", help="Hub URL or `embedded` (default: the recipe's publish.endpoint, else "
                                       "HF_ENDPOINT / huggingface.co)")
    pu.add_argument("--storage", help="embedded Hub folder (default: publish.storage)")
    pu.add_argument("--repo-prefix", help="`namespace` or `namespace/prefix` for the repo ids (default: "
                                          "publish.repo_prefix, else your user name)")
    pu.add_argument("--revision", help="branch to commit to (default: main)")
    pu.add_argument("--tag", help="tag to put on each pushed commit")
    pu.add_argument("--private", action="store_true", default=None,
                    help="create the repos private (an existing public repo is refused; see --make-private)")
    pu.add_argument("--make-private", action="store_true",
                    help="make existing public repos private before pushing (implies --private)")
    pu.add_argument("--force", action="store_true",
                    help="push into existing repos that hfdistill did not make (their files are kept)")
    pu.add_argument("--send-token", action="store_true",
                    help="send your Hugging Face token (HF_TOKEN / `hf auth login`) to the recipe's "
                         "publish.endpoint; without it an endpoint only the recipe names gets no token "
                         "(or set HFDISTILL_PUBLISH_TOKEN to the token for it)")
    _common(pu, json_output=True)
    pu.set_defaults(fn=_cmd_push)

    q = _sub(sub, "pull", "download a published model, check its files' hashes, optionally re-evaluate it",
             ["hfdistill pull local/quickstart-student-sst2 --endpoint embedded --verify",
              "hfdistill pull my-user/quickstart-student-sst2 --local-dir ./student --json"])
    q.add_argument("repo_id", help="the model repo, e.g. my-user/quickstart-student-sst2")
    q.add_argument("--revision", help="branch, tag or commit (default: main)")
    q.add_argument("--local-dir", help="download folder (default: ./<repo name>)")
    q.add_argument("--verify", action="store_true",
                   help="re-run the GLUE evaluation the card claims, on the full dev split")
    q.add_argument("--max-samples", type=int, help="--verify on only the first N dev examples")
    q.add_argument("--tolerance", type=float, default=0.005,
                   help="how far a claimed metric may exceed the measured one (fractions; default 0.005; lower "
                        "claims always pass)")
    q.add_argument("--endpoint", help="Hub URL or `embedded` (default: HF_ENDPOINT / huggingface.co)")
    q.add_argument("--storage", default="hub-storage", help="embedded Hub folder for --endpoint embedded "
                                                            "(default ./hub-storage)")
    q.add_argument("--glue-dir", help="GLUE folder for --verify (default $HFDISTILL_GLUE_DIR)")
    q.add_argument("--hub-dataset", help="datasets id with GLUE configs for --verify (e.g. nyu-mll/glue)")
    _common(q, json_output=True)
    q.set_defaults(fn=_cmd_pull)

    h = _sub(sub, "hub", "the embedded Hub-compatible server", ["hfdistill hub serve --storage hub-storage"])
    hsub = h.add_subparsers(dest="hub_command", required=True, metavar="<hub command>")
    s = _sub(hsub, "serve", "serve the embedded Hub (API + web page) from a storage folder",
             ["hfdistill hub serve --storage hub-storage",
              "HFDISTILL_HUB_TOKEN=secret hfdistill hub serve --host 0.0.0.0 --org my-team"])
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs "
                                                       "$HFDISTILL_HUB_TOKEN)")
    s.add_argument("--port", type=int, default=8787, help="port (default 8787; 0 picks a free one)")
    s.add_argument("--storage", default="hub-storage", help="the folder a push wrote (default ./hub-storage)")
    s.add_argument("--create", action="store_true", help="start an empty Hub if --storage holds none")
    s.add_argument("--org", action="append", help="with a token: a namespace besides `local` that writers may "
                                                  "use (repeatable)")
    s.add_argument("--webhook", metavar="URL", help="after each commit, POST the Hub's webhook payload to URL (in "
                                                   "the background; a commit never waits for it)")
    s.add_argument("--webhook-secret", help="sent in X-Webhook-Secret (default $HFDISTILL_WEBHOOK_SECRET)")
    s.add_argument("--webhook-watch", metavar="REPO", action="append",
                   help="send only the commits of this repo (repeatable; default: every repo)")
    s.set_defaults(fn=_cmd_serve)

    w = _sub(sub, "webhook", "re-run recipes when a Hub webhook announces a new commit",
             ["hfdistill webhook serve --watch my-org/base-model --recipe recipes/quickstart.yaml"])
    wsub = w.add_subparsers(dest="webhook_command", required=True, metavar="<webhook command>")
    ws = _sub(wsub, "serve", "receive Hub webhooks: a new commit on main of a watched repo re-runs and republishes "
                             "the recipes built on it or stored in it, one job at a time, from a persistent queue",
              ["HFDISTILL_WEBHOOK_SECRET=s3cret hfdistill webhook serve --recipe my.yaml --port 8788",
               "hfdistill webhook serve --secret s3cret --watch my-org/recipes --state-dir webhook-state"])
    ws.add_argument("--recipe", action="append", metavar="RECIPE",
                    help="a recipe to re-run when the repo its `model:` names gets a commit (repeatable)")
    ws.add_argument("--watch", action="append", metavar="REPO",
                    help="a base-model or recipe repo to watch (repeatable; default: the Hub ids the recipes' "
                         "`model:` names); the `*.yaml` recipes stored in a watched repo run too")
    ws.add_argument("--secret", help="the webhook's secret, checked against X-Webhook-Secret (default "
                                     "$HFDISTILL_WEBHOOK_SECRET; required)")
    ws.add_argument("--state-dir", default="webhook-state",
                    help="the persistent job queue and the runs' logs (default ./webhook-state)")
    ws.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ws.add_argument("--port", type=int, default=8788, help="port (default 8788; 0 picks a free one); the Hub "
                                                          "posts to http://HOST:PORT/webhook")
    ws.add_argument("--endpoint", help="the Hub the watched repos live on (default HF_ENDPOINT / huggingface.co)")
    ws.add_argument("--command", help="how to run a recipe (default `python -m hfdistill run`; the recipe path "
                                      "and --force are appended), e.g. 'accelerate launch -m hfdistill run'")
    ws.set_defaults(fn=_cmd_webhook_serve)

    rp = _sub(sub, "report", "write a run's report: dev scores, GLUE macro, sizes, CPU time, targets and plots",
              ["hfdistill report runs/glue-chain", "hfdistill report runs/glue-chain --ablation bench/ablation.json"])
    rp.add_argument("run_dir", help="the run folder (runs/<name>)")
    rp.add_argument("--ablation", help="Table 4 data, JSON {variant: {task: [score per seed]}} (default: the run "
                                       "folder's ablation.json; without one Table 4 says not measured)")
    rp.add_argument("--no-plots", action="store_true", help="skip the two PNG plots (no matplotlib needed)")
    _common(rp, json_output=True)
    rp.set_defaults(fn=_cmd_report)

    fr = _sub(sub, "front", "show the Pareto front of a run's models per task (dev score, CPU latency, disk size)",
              ["hfdistill front runs/sweep", "hfdistill front runs/sweep --json"])
    fr.add_argument("run_dir", help="the run folder (runs/<name>); front.json and front-<task>.png are written there")
    fr.add_argument("--no-plot", action="store_true", help="do not draw front-<task>.png")
    _common(fr, json_output=True)
    fr.set_defaults(fn=_cmd_front)

    k = _sub(sub, "cache", "show (or clean) the teacher-output cache of a run folder; prune every run under a root",
             ["hfdistill cache runs/quickstart", "hfdistill cache runs/quickstart --clean",
              "hfdistill cache runs --prune --dry-run"])
    k.add_argument("run_dir", help="the run folder (runs/<name>); with --prune, a folder holding run folders")
    k.add_argument("--clean", action="store_true", help="remove the entries no finished model used")
    k.add_argument("--all", action="store_true", help="remove every entry (they are recomputed when needed)")
    k.add_argument("--prune", action="store_true",
                   help="evict, from every run folder under RUN_DIR, the entries no finished model and no "
                        "unfinished stage refers to (and crashed passes' folders); prints the bytes freed")
    k.add_argument("--dry-run", action="store_true", help="with --prune: list what would be evicted, remove nothing")
    _common(k, json_output=True)
    k.set_defaults(fn=_cmd_cache)
    rf = _sub(sub, "refresh", "regenerate the cards and metadata of published models from their repos' records "
                              "(one commit per repo, only when something changed)",
              ["hfdistill refresh my-user/quickstart-student-sst2", "hfdistill refresh --author my-user",
               "hfdistill refresh --author local --endpoint embedded --storage hub-storage",
               "hfdistill refresh my-user/q-student-sst2 --reevaluate --max-samples 200"])
    rf.add_argument("repo_ids", nargs="*", metavar="REPO_ID", help="the model repos to refresh")
    rf.add_argument("--author", help="refresh every hfdistill model of this user or organisation")
    rf.add_argument("--reevaluate", action="store_true",
                    help="download each model and re-run its GLUE evaluation first (as `pull --verify` does)")
    rf.add_argument("--max-samples", type=int, help="--reevaluate on only the first N dev examples")
    rf.add_argument("--glue-dir", help="GLUE folder for --reevaluate (default $HFDISTILL_GLUE_DIR)")
    rf.add_argument("--hub-dataset", help="datasets id with GLUE configs for --reevaluate (e.g. nyu-mll/glue)")
    _hub_options(rf)
    _common(rf, json_output=True)
    rf.set_defaults(fn=_cmd_refresh)

    co = _sub(sub, "collection", "gather a run's (or a sweep's) published models into a Hub collection, in stage "
                                 "order, with score, size and latency on each",
              ["hfdistill collection runs/quickstart", "hfdistill collection runs/a runs/b --title 'My sweep'"])
    co.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="the run folder(s) whose models were pushed")
    co.add_argument("--title", help="the collection's title (default: the recipe's publish.collection, else "
                                    "the recipe name)")
    co.add_argument("--private", action="store_true", help="create the collection private")
    co.add_argument("--endpoint", help="Hub URL or `embedded` (default: the run's publish.endpoint, else "
                                       "HF_ENDPOINT / huggingface.co)")
    co.add_argument("--storage", help="embedded Hub folder (default: the run's publish.storage)")
    co.add_argument("--repo-prefix", help="the `namespace` or `namespace/prefix` the models were pushed with "
                                          "(default: the run's publish.repo_prefix, else your user name)")
    _common(co, json_output=True)
    co.set_defaults(fn=_cmd_collection)

    lb = _sub(sub, "leaderboard", "every hfdistill model of an author in one table (task scores, macro, size, "
                                  "latency, retention), as text, Markdown and plot",
              ["hfdistill leaderboard --author my-user", "hfdistill leaderboard --author local --endpoint embedded",
               "hfdistill leaderboard --author my-user --out board --push my-user/leaderboard"])
    lb.add_argument("--author", required=True, help="the user or organisation whose models to list")
    lb.add_argument("--out", help="write README.md and leaderboard.png into this folder")
    lb.add_argument("--push", metavar="REPO_ID", help="also commit them to this repo (created if missing)")
    _hub_options(lb)
    _common(lb, json_output=True)
    lb.set_defaults(fn=_cmd_leaderboard)
    return p


def _hub_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", help="Hub URL or `embedded` (default: HF_ENDPOINT / huggingface.co)")
    p.add_argument("--storage", default="hub-storage", help="embedded Hub folder for --endpoint embedded "
                                                            "(default ./hub-storage)")


def main(argv: Optional[list[str]] = None, prog: str = "hfdistill") -> int:
    args = build_parser(prog).parse_args(argv)
    _quiet_third_parties(getattr(args, "verbose", False))
    if getattr(args, "quiet", False):
        os.environ["TQDM_DISABLE"] = "1"  # our own progress bars too
    for name in ("quiet", "verbose", "json"):
        if not hasattr(args, name):
            setattr(args, name, False)
    try:
        return args.fn(args)
    except HfdistillError as e:
        print(f"hfdistill: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hfdistill: interrupted", file=sys.stderr)
        return 130


def hf_extension_main() -> int:
    """`hf distill …`: the `hf-distill` console script that huggingface_hub's `hf` CLI runs as an extension
    (`hf extensions install OWNER/hf-distill`); the same commands as `hfdistill`."""
    return main(prog="hf distill")


if __name__ == "__main__":
    sys.exit(main())
