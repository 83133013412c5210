"""The run report (`hfdistill report RUN_DIR`): a run folder's models in the tables of the DistilBERT paper.

Written to `RUN_DIR/report/` (report.md, report.json, two plots) and copied into every task teacher's folder as
`report/`, so the teacher's card links it and a push (`hfdistill push RUN_DIR`, or the recipe re-run) publishes it
with the teacher. Everything is read from the models' `metrics.json` and `lineage.json`; nothing is re-measured.

- Table 1: dev score of every model on every task (×100), the GLUE macro score (mean of the task scores) and the
  retention against the teacher (model macro / teacher macro over the same tasks); the majority-class baseline as a
  row, and every score that does not clear it by two standard errors flagged.
- Table 3: params, weights on disk, CPU time for a full pass over the dev sets at batch size 1 (the recorded median
  per-example latency × dev examples) and the speed-up against the teacher, over the tasks whose latencies were
  measured under the same conditions (`evaluation.comparable`); figures measured on a busy machine are marked. When
  the run folder has `chain_latency.json` (bench/chain_latency.py: every model of a task timed round-robin), its
  speed-ups are shown too and the targets use them.
- Table 4: the ablation file (`ablation.json`: {variant: {task: [score per seed]}}, written by bench/ablation.py)
  when there is one, else "not measured": medians over seeds with their range, Δ of the macro against the first
  variant with the range of the per-seed differences (a range that includes 0 is marked as noise).
- Targets: the compression targets of the headline chain, measured on the models found by kind and lineage; a
  retention is judged over the tasks where its reference clears the majority class when it does not on all.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
from pathlib import Path
from typing import Any, Optional

import yaml

from hfdistill.errors import DataError
from hfdistill.evaluation import clearly_above_baseline, comparable, reliable
from hfdistill.folder import RunModel, find_run_models, parent_path, task_teacher
from hfdistill.publish import cards
from hfdistill.publish.push import publish_config_of

REPORT_DIR, REPORT_MD = cards.REPORT_DIR, cards.REPORT_MD  # the teacher cards link report/report.md
REPORT_JSON = "report.json"
LATENCY_PLOT = "score_vs_latency.png"
SIZE_PLOT = "score_vs_size.png"
ABLATION_FILE = "ablation.json"
INTERLEAVED_FILE = "chain_latency.json"  # bench/chain_latency.py: every model of a task timed round-robin

# (row, which models, retention floor and against what, speed-up floor, size ceiling and of what)
TARGETS = [
    {"row": "distilled 6→3 layers", "select": "distill", "retention": 0.98, "of": "teacher", "speedup": 1.9,
     "size": ("params", 0.80)},
    {"row": "KL-pruned 50 % heads + 50 % FFN, recovered", "select": "kl-prune", "retention": 0.97, "of": "teacher",
     "speedup": 1.8, "size": ("params", 0.75)},
    {"row": "distilled + pruned + int8-cpu", "select": "int8-of-pruned", "retention": 0.96, "of": "teacher",
     "speedup": 12.0, "size": ("disk", 0.15)},
    {"row": "bnb-8bit of the teacher", "select": "bnb-8bit", "retention": 0.99, "of": "parent", "speedup": None,
     "size": ("quantized", 0.90)},
    {"row": "nf4 of the teacher", "select": "nf4", "retention": 0.98, "of": "parent", "speedup": None,
     "size": ("quantized", 0.90)},
]


# ------------------------------------------------------------------------------------------------ the record
def _stage_order(run_dir: Path, models: list[RunModel]) -> list[str]:
    recipe = run_dir / "recipe.yaml"
    data = (yaml.safe_load(recipe.read_text()) or {}) if recipe.is_file() else {}
    names = [s.get("name") for s in data.get("stages") or [] if isinstance(s, dict)]
    return list(dict.fromkeys([n for n in names if n] + [m.stage for m in models]))


def _task_order(run_dir: Path, models: list[RunModel]) -> list[str]:
    recipe = run_dir / "recipe.yaml"
    data = (yaml.safe_load(recipe.read_text()) or {}) if recipe.is_file() else {}
    have = {m.task for m in models}
    return [t for t in dict.fromkeys(list(data.get("tasks") or []) + sorted(have)) if t in have]


def _ancestors(m: RunModel, by_path: dict[Path, RunModel]) -> list[RunModel]:
    out, p = [], parent_path(m)
    while p is not None and p in by_path and by_path[p] not in out:
        out.append(by_path[p])
        p = parent_path(by_path[p])
    return out


def _config(m: RunModel) -> dict[str, Any]:
    return m.lineage.get("stage_config") or {}


def _target_kind(m: RunModel, teacher: Optional[RunModel], by_path: dict[Path, RunModel]) -> Optional[str]:
    """Which target row a model is measured for, by its kind and lineage (never by its name)."""
    cfg, parent = _config(m), by_path.get(parent_path(m)) if parent_path(m) else None
    of_teacher = teacher is not None and parent is teacher
    if m.kind == "distill" and of_teacher and cfg.get("objective", "task") == "task":
        return "distill"
    if m.kind == "prune" and cfg.get("loss", "kl") == "kl" and cfg.get("recover"):
        return "kl-prune"
    if m.kind == "quantize":
        method = cfg.get("method")
        if method == "int8-cpu" and any(a.kind == "prune" for a in _ancestors(m, by_path)):
            return "int8-of-pruned"
        if method == "bnb-8bit" and of_teacher:
            return "bnb-8bit"
        if method == "bnb-4bit" and (cfg.get("quant_type") or "nf4") == "nf4" and of_teacher:
            return "nf4"
    return None


def _ratio(a: float, b: float) -> Optional[float]:
    return a / b if b else None


def collect(run_dir: Path, ablation: Optional[Path] = None) -> dict[str, Any]:
    """The report's numbers (what report.json holds), read from the run folder's metrics.json/lineage.json."""
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: run folder not found")
    models = [m for m in find_run_models(run_dir)]
    scored = [m for m in models if m.score is not None]
    if not scored:
        raise DataError(f"{run_dir}: no evaluated model folders (<stage>/<task>/ with metrics.json) to report on")
    by_path = {m.path: m for m in models}
    tasks = _task_order(run_dir, scored)
    teachers = {t: task_teacher([m for m in models if m.task == t]) for t in tasks}
    cell = {(m.stage, m.task): m for m in scored}

    baseline = {}
    for t in tasks:
        base = next((m.metrics["majority_baseline"] for m in scored if m.task == t
                     and m.metrics.get("majority_baseline")), None)
        if base:
            baseline[t] = 100 * base["score"]
    rows = []
    for stage in _stage_order(run_dir, scored):
        here = {t: cell[(stage, t)] for t in tasks if (stage, t) in cell}
        if not here:
            continue
        any_m = next(iter(here.values()))
        parent = by_path.get(parent_path(any_m)) if parent_path(any_m) else None
        row: dict[str, Any] = {
            "model": stage, "kind": any_m.kind, "parent": parent.stage if parent else None,
            "scores": {t: 100 * m.score for t, m in here.items()},
            "below_baseline": sorted(t for t, m in here.items() if clearly_above_baseline(m.metrics) is False),
            "params": {t: m.metrics.get("params") for t, m in here.items()},
            "disk_bytes": {t: m.metrics.get("disk_bytes") for t, m in here.items()},
            "latency_ms": {t: (m.metrics.get("latency_ms") or {}).get("median") for t, m in here.items()},
            "latency_busy": sorted(t for t, m in here.items()
                                   if (m.metrics.get("latency_ms") or {}).get("reliable") is False),
            "dev_examples": {t: m.metrics.get("num_examples") for t, m in here.items()},
            "target": _target_kind(any_m, teachers.get(any_m.task), by_path),
            "sparsity": _config(any_m).get("sparsity"),
            "quantized_weight_fraction": min(
                ((m.lineage.get("info") or {}).get("quantized_weight_fraction", 1.0) for m in here.values()),
                default=None) if any_m.kind == "quantize" else None,
        }
        row["dev_seconds"] = {t: row["latency_ms"][t] * row["dev_examples"][t] / 1000 for t in here
                              if row["latency_ms"][t] and row["dev_examples"][t]}
        row["macro"] = statistics.fmean(row["scores"].values())
        row["tasks_scored"] = len(row["scores"])
        for ref_name in ("teacher", "parent"):
            refs = {t: (teachers.get(t) if ref_name == "teacher" else
                        (by_path.get(parent_path(m)) if parent_path(m) else None)) for t, m in here.items()}
            refs = {t: r for t, r in refs.items() if r is not None and r.score is not None and r.path != here[t].path}
            if not refs:
                continue
            common = list(refs)
            ref_macro = statistics.fmean(100 * refs[t].score for t in common)
            row[f"retention_vs_{ref_name}"] = _ratio(statistics.fmean(row["scores"][t] for t in common), ref_macro)
            # the same over the tasks where the reference clears its majority class (a retention of a guesser
            # measures nothing): the verdict the targets use when the reference guesses on some tasks
            above = [t for t in common if clearly_above_baseline(refs[t].metrics) is not False]
            if above and len(above) < len(common):
                row[f"retention_vs_{ref_name}_above"] = _ratio(
                    statistics.fmean(row["scores"][t] for t in above),
                    statistics.fmean(100 * refs[t].score for t in above))
                row[f"retention_vs_{ref_name}_above_tasks"] = above
            # Size ratios over the same tasks.
            for key, field in (("params", "params"), ("disk", "disk_bytes"), ("memory", "weight_bytes")):
                mine = [here[t].metrics.get(field) for t in common]
                theirs = [refs[t].metrics.get(field) for t in common]
                if all(isinstance(v, (int, float)) for v in mine + theirs):
                    row[f"{key}_vs_{ref_name}"] = _ratio(sum(mine), sum(theirs))
            # Speed-up: full passes over the dev sets whose latencies are comparable with the reference's.
            timed = [t for t in common if comparable(refs[t].metrics, here[t].metrics)]
            if timed:
                ref_s = sum(refs[t].metrics["latency_ms"]["median"] * refs[t].metrics["num_examples"] for t in timed)
                my_s = sum(here[t].metrics["latency_ms"]["median"] * here[t].metrics["num_examples"] for t in timed)
                row[f"speedup_vs_{ref_name}"] = _ratio(ref_s, my_s)
                row[f"speedup_vs_{ref_name}_tasks"] = timed
                row[f"speedup_vs_{ref_name}_busy"] = not all(reliable(refs[t].metrics, here[t].metrics)
                                                             for t in timed)
        rows.append(row)

    record = {"run": run_dir.name, "tasks": tasks, "baseline": baseline,
              "baseline_macro": statistics.fmean(baseline.values()) if len(baseline) == len(tasks) else None,
              "teacher": {t: m.stage for t, m in teachers.items() if m is not None}, "models": rows}
    record["interleaved"] = _interleaved(run_dir, rows, record["teacher"])
    record["targets"] = targets(record)
    record["ablation"] = read_ablation(run_dir, ablation)
    return record


def _interleaved(run_dir: Path, rows: list[dict[str, Any]], teacher: dict[str, str]) -> Optional[dict[str, Any]]:
    """Speed-ups from `chain_latency.json` (bench/chain_latency.py) when the run folder has one: every model of a
    task timed round-robin in one process, so load hits all alike, unlike the run's own latencies measured one
    model at a time. Sets `speedup_interleaved` (full dev passes, the tasks timed for both) on each row."""
    path = Path(run_dir) / INTERLEAVED_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        per_task = {t: (v["median_ms"], int(v["dev_examples"])) for t, v in data["tasks"].items()}
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a bench/chain_latency.py file: {e}") from None
    for row in rows:
        timed = [t for t, (ms, _) in per_task.items()
                 if row["model"] in ms and teacher.get(t) in ms and t in row["scores"]]
        if timed:
            mine = sum(per_task[t][0][row["model"]] * per_task[t][1] for t in timed)
            ref = sum(per_task[t][0][teacher[t]] * per_task[t][1] for t in timed)
            row["speedup_interleaved"] = _ratio(ref, mine)
            row["dev_seconds_interleaved"] = mine / 1000
            row["speedup_interleaved_tasks"] = timed
    return {k: data.get(k) for k in ("date", "commit", "threads", "rounds", "samples", "load_average")}


def targets(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per target and model measured for it: the measured value and met/missed of each criterion."""
    out = []
    n_tasks = len(record["tasks"])
    for tgt in TARGETS:
        found = [r for r in record["models"] if r["target"] == tgt["select"]]
        if not found:
            out.append({"row": tgt["row"], "model": None})
            continue
        for r in found:
            line: dict[str, Any] = {"row": tgt["row"], "model": r["model"], "parent": r["parent"],
                                    "tasks": r["tasks_scored"], "all_tasks": r["tasks_scored"] == n_tasks}
            # a retention against a reference no better than the majority class does not measure compression
            ref = next((m for m in record["models"] if m["model"] == (r["parent"] if tgt["of"] == "parent"
                                                                      else next(iter(record["teacher"].values()))
                                                                      )), None)
            line["reference_at_baseline"] = ref["below_baseline"] if ref else []
            ret = r.get(f"retention_vs_{tgt['of']}")
            line["retention"] = {"value": ret, "target": tgt["retention"], "of": tgt["of"],
                                 "met": None if ret is None else ret >= tgt["retention"]}
            above = r.get(f"retention_vs_{tgt['of']}_above")
            if above is not None:  # judged where the reference is not a guesser
                line["retention"].update({"value_above": above, "met": above >= tgt["retention"],
                                          "tasks_above": r[f"retention_vs_{tgt['of']}_above_tasks"]})
            if tgt["speedup"] is not None:
                s, source = r.get("speedup_vs_teacher"), "run"
                if r.get("speedup_interleaved") is not None:
                    s, source = r["speedup_interleaved"], "interleaved"
                line["speedup"] = {"value": s, "target": tgt["speedup"], "source": source,
                                   "busy": source == "run" and r.get("speedup_vs_teacher_busy"),
                                   "met": None if s is None else s >= tgt["speedup"]}
            else:
                line["speedup"] = {"value": None, "memory": r.get("memory_vs_parent")}
            what, limit = tgt["size"]
            if what == "quantized":
                v = r.get("quantized_weight_fraction")
                line["size"] = {"what": what, "value": v, "target": limit, "met": None if v is None else v >= limit}
            else:
                v = r.get(f"{what}_vs_teacher")
                line["size"] = {"what": what, "value": v, "target": limit, "met": None if v is None else v <= limit}
            out.append(line)
    return out


def read_ablation(run_dir: Path, path: Optional[Path] = None) -> Optional[dict[str, Any]]:
    """Table 4's numbers: `ablation.json` of the run folder, else `path`; None when there is none."""
    candidates = [Path(run_dir) / ABLATION_FILE] + ([Path(path)] if path else [])
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        if path is not None and not Path(path).is_file():
            raise DataError(f"{path}: ablation file not found")
        return None
    try:
        data = json.loads(found.read_text())
        variants = {k: {t: [float(s) for s in v] for t, v in tasks.items()} for k, tasks in data.items()
                    if not k.startswith("_")}
    except (ValueError, TypeError, AttributeError) as e:
        raise DataError(f"{found}: not an ablation file ({{variant: {{task: [score per seed]}}}}): {e}") from None
    if not variants or not all(variants.values()):
        raise DataError(f"{found}: no variant with scores ({{variant: {{task: [score per seed]}}}})")
    return {"source": found.name, "variants": variants, "meta": data.get("_meta")}


# ------------------------------------------------------------------------------------------------ markdown
def _num(v: Optional[float], fmt: str = "{:.1f}") -> str:
    return "–" if v is None else fmt.format(v)


def _pct(v: Optional[float]) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _mb(n: Optional[float]) -> str:
    return "–" if not n else f"{n / 1e6:.1f} MB"


def _load_average(v: Any) -> str:
    if isinstance(v, dict) and "min" in v and "max" in v:
        return f"{v['min']:g}–{v['max']:g}"
    return "not recorded" if v is None else str(v)


def _verdict(met: Optional[bool]) -> str:
    return "not measured" if met is None else ("**met**" if met else "**missed**")


def render(record: dict[str, Any], plots: bool = True) -> str:
    tasks, rows = record["tasks"], record["models"]
    teacher = next(iter(record["teacher"].values()), None)
    lines = [f"# Report: run `{record['run']}`", "",
             f"Every model of the run on the GLUE dev sets of {', '.join(t.upper() for t in tasks)}, read from each "
             f"model's `metrics.json`/`lineage.json` (nothing re-measured). Reference for retention and speed-up: "
             f"the task's teacher (`{teacher}`).", ""]

    # Table 1
    lines += ["## Table 1 — dev scores and GLUE macro score", "",
              "Scores ×100 (CoLA: Matthews correlation; MRPC: mean of accuracy and F1; the others: accuracy). "
              "Macro = mean of the task scores; retention = the model's macro / the teacher's macro over the same "
              "tasks. ⚠ = not clearly above the majority-class baseline (two standard errors).", "",
              "| model | kind | " + " | ".join(t.upper() for t in tasks) + " | macro | retention |",
              "|---|---|" + "---|" * len(tasks) + "---|---|"]
    if record["baseline"]:
        lines.append("| majority class (baseline) | – | " + " | ".join(_num(record["baseline"].get(t)) for t in tasks)
                     + f" | {_num(record['baseline_macro'])} | – |")
    for r in rows:
        cells = [(_num(r["scores"][t]) + (" ⚠" if t in r["below_baseline"] else "")) if t in r["scores"] else "–"
                 for t in tasks]
        macro = _num(r["macro"]) + ("" if r["tasks_scored"] == len(tasks) else f" ({r['tasks_scored']} tasks)")
        ret = "100 %" if r["model"] == teacher else _pct(r.get("retention_vs_teacher"))
        lines.append(f"| `{r['model']}` | {r['kind']} | " + " | ".join(cells) + f" | {macro} | {ret} |")
    weak = [(r["model"], t) for r in rows for t in r["below_baseline"]]
    if weak:
        lines += ["", "**Not clearly above the majority-class baseline** (no better than always predicting the most "
                      "frequent class): " + ", ".join(f"`{m}` on {t.upper()}" for m, t in weak) + "."]

    # Table 3
    lines += ["", "## Table 3 — size and CPU inference time", "",
              "Params and weights on disk summed over the tasks' models (one per task) and shown per model; CPU time "
              "= the recorded median latency of one example (batch size 1, fixed threads) × the dev examples, "
              "summed over the tasks. Speed-up vs the teacher over the tasks whose latencies were measured under "
              "the same conditions; (busy) = measured while the machine was busy or the timing passes disagreed.",
              "", "| model | params | vs teacher | disk | vs teacher | CPU time, full dev passes bs 1 "
              + "".join(f"| {t.upper()} " for t in tasks) + "| speed-up |",
              "|---|---|---|---|---|---|" + "---|" * len(tasks) + "---|"]
    for r in rows:
        per = [f"{r['dev_seconds'][t]:.1f} s" + (" (busy)" if t in r["latency_busy"] else "")
               if t in r["dev_seconds"] else "–" for t in tasks]
        total = f"{sum(r['dev_seconds'].values()):.1f} s" if r["dev_seconds"] else "–"
        params = [v for v in r["params"].values() if v]
        disks = [v for v in r["disk_bytes"].values() if v]
        p = f"{statistics.fmean(params) / 1e6:.2f}M" if params else "–"
        d = _mb(statistics.fmean(disks)) if disks else "–"
        if r["model"] == teacher:
            sp = "1.00×"
        else:
            s = r.get("speedup_vs_teacher")
            sp = "–" if s is None else f"{s:.2f}×" + (" (busy)" if r.get("speedup_vs_teacher_busy") else "")
        lines.append(f"| `{r['model']}` | {p} | {_pct(r.get('params_vs_teacher')) if r['model'] != teacher else '100 %'}"
                     f" | {d} | {_pct(r.get('disk_vs_teacher')) if r['model'] != teacher else '100 %'} | {total} "
                     + "".join(f"| {c} " for c in per) + f"| {sp} |")
    busy = sorted({(r["model"], t) for r in rows for t in r["latency_busy"]})
    if busy:
        lines += ["", f"Latency figures flagged busy: {len(busy)} of "
                      f"{sum(len(r['latency_ms']) for r in rows)} ("
                      + ", ".join(f"`{m}`/{t}" for m, t in busy) + "); read those speed-ups as rough."]
    il = record.get("interleaved")
    if il:
        lines += ["", f"**Interleaved timing** (`{INTERLEAVED_FILE}`, bench/chain_latency.py, {il.get('date')}, "
                      f"commit {il.get('commit')}): every model of a task timed round-robin, {il.get('rounds')} "
                      f"rounds × {il.get('samples')} dev examples, batch size 1, {il.get('threads')} thread(s), load "
                      f"average {_load_average(il.get('load_average'))}; the speed-ups the targets use.", "",
                  "| model | CPU time, full dev passes bs 1 | speed-up |", "|---|---|---|"]
        for r in rows:
            if r.get("speedup_interleaved") is not None:
                lines.append(f"| `{r['model']}` | {r['dev_seconds_interleaved']:.1f} s | "
                             f"{r['speedup_interleaved']:.2f}× |")

    # Table 4
    lines += ["", "## Table 4 — ablation", ""]
    ab = record.get("ablation")
    if not ab:
        lines += ["Not measured: no ablation file (`ablation.json` in the run folder, or `--ablation FILE`)."]
    else:
        lines += _ablation_lines(ab)

    # Targets
    lines += ["", "## Targets", "",
              "Macro over the run's tasks; models found by kind and lineage (distill stage from the teacher; KL prune "
              "stage with recovery; int8-cpu quantization with a pruned ancestor; bitsandbytes 8-bit / NF4 of the "
              "teacher). Speed-up: full passes over the dev sets at batch size 1 (Table 3).", "",
              "| target | model | retention | CPU bs1 speed-up | size |", "|---|---|---|---|---|"]
    for line in record["targets"]:
        if line["model"] is None:
            lines.append(f"| {line['row']} | no such model in this run | not measured | not measured | "
                         f"not measured |")
            continue
        ret = line["retention"]
        if ret.get("value_above") is not None:
            over = ", ".join(t.upper() for t in ret["tasks_above"])
            ret_s = (f"{_pct(ret['value_above'])} of {ret['of']} over {over} "
                     f"(≥ {100 * ret['target']:.0f} %): {_verdict(ret['met'])} — the {ret['of']} is not clearly above "
                     f"the majority class on {', '.join(t.upper() for t in line['reference_at_baseline'])}, left out "
                     f"(all tasks: {_pct(ret['value'])})")
        else:
            ret_s = f"{_pct(ret['value'])} of {ret['of']} (≥ {100 * ret['target']:.0f} %): {_verdict(ret['met'])}"
            if line.get("reference_at_baseline"):
                ret_s += (f" — not meaningful: the {ret['of']} is not clearly above the majority class on "
                          f"{', '.join(t.upper() for t in line['reference_at_baseline'])}")
        sp = line["speedup"]
        if "target" in sp:
            sp_s = ("not measured" if sp["value"] is None else
                    f"{sp['value']:.2f}× (≥ {sp['target']:g}×): {_verdict(sp['met'])}"
                    + (" (busy machine: unreliable, see Table 3)" if sp.get("busy") else "")
                    + (" (interleaved timing, Table 3)" if sp.get("source") == "interleaved" else ""))
        else:
            sp_s = "memory only" + (f": weights take {_pct(sp['memory'])} of the parent's in memory"
                                    if sp.get("memory") else "")
        sz = line["size"]
        if sz["what"] == "quantized":
            sz_s = f"{_pct(sz['value'])} of linear weights quantized (≥ {100 * sz['target']:.0f} %): " \
                   f"{_verdict(sz['met'])}"
        else:
            word = "params" if sz["what"] == "params" else "of the teacher's disk"
            sz_s = f"{_pct(sz['value'])} {word} (≤ {100 * sz['target']:.0f} %): {_verdict(sz['met'])}"
        who = f"`{line['model']}` (from `{line['parent']}`)"
        if not line["all_tasks"]:
            who += f", {line['tasks']} of {len(tasks)} tasks"
        lines.append(f"| {line['row']} | {who} | {ret_s} | {sp_s} | {sz_s} |")

    if plots:
        lines += ["", "## Plots", "", "GLUE macro score against CPU time and against size; arrows go from parent "
                  "to child.", "", f"![score vs CPU time]({LATENCY_PLOT})", "", f"![score vs size]({SIZE_PLOT})"]
    return "\n".join(lines).rstrip() + "\n"


def _ablation_lines(ab: dict[str, Any]) -> list[str]:
    """Medians over seeds with their range; Δ = macro of the medians minus the first variant's, with the range of
    the per-seed differences (seed k of a variant against seed k of the first: same data order and masking)."""
    variants = ab["variants"]
    tasks = list(dict.fromkeys(t for v in variants.values() for t in v))
    lines = [f"From `{ab['source']}`: median over seeds [lowest–highest], scores ×100; Δ = macro minus the first "
             f"variant's, with the range of the per-seed differences; ≈ 0 marks a Δ whose per-seed range includes 0 "
             f"(not distinguishable from seed noise).", "",
             "| variant | " + " | ".join(t.upper() for t in tasks) + " | macro | Δ |", "|---|" + "---|" * len(tasks)
             + "---|---|"]

    def seed_macros(per_task: dict[str, list[float]]) -> list[float]:
        n = min((len(per_task.get(t) or []) for t in tasks), default=0)
        return [100 * statistics.fmean(per_task[t][k] for t in tasks) for k in range(n)]

    names = list(variants)
    ref_macro = ref_seeds = None
    for name in names:
        per_task = variants[name]
        cells = []
        for t in tasks:
            s = [100 * v for v in per_task.get(t) or []]
            cells.append("–" if not s else f"{statistics.median(s):.1f}" +
                         (f" [{min(s):.1f}–{max(s):.1f}]" if len(s) > 1 else "") + f" (n={len(s)})")
        medians = [statistics.median(per_task[t]) * 100 for t in tasks if per_task.get(t)]
        macro = statistics.fmean(medians) if len(medians) == len(tasks) else None
        seeds = seed_macros(per_task)
        if name == names[0]:
            ref_macro, ref_seeds = macro, seeds
            delta = "–"
        elif macro is None or ref_macro is None:
            delta = "–"
        else:
            delta = f"{macro - ref_macro:+.1f}"
            diffs = [a - b for a, b in zip(seeds, ref_seeds)]
            if len(diffs) > 1:
                delta += f" [{min(diffs):+.1f} to {max(diffs):+.1f}]" + (" ≈ 0" if min(diffs) <= 0 <= max(diffs)
                                                                          else "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_num(macro)} | {delta} |")
    if isinstance(ab.get("meta"), dict) and ab["meta"].get("note"):
        lines += ["", str(ab["meta"]["note"])]
    return lines


# ------------------------------------------------------------------------------------------------ plots
def write_plots(record: dict[str, Any], out: Path) -> list[Path]:
    """Macro score against CPU time and against disk size, with parent → child arrows; the files written."""
    n = len(record["tasks"])
    pts = [r for r in record["models"] if r["tasks_scored"] == n]
    if not pts:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, label, x_of in (
            (LATENCY_PLOT, "CPU time, full passes over the dev sets at batch size 1 (s)",
             lambda r: sum(r["dev_seconds"].values()) if len(r["dev_seconds"]) == n else None),
            (SIZE_PLOT, "weights on disk (MB, mean over the tasks' models)",
             lambda r: statistics.fmean(r["disk_bytes"].values()) / 1e6 if all(r["disk_bytes"].values()) else None)):
        xy = {r["model"]: (x_of(r), r["macro"]) for r in pts if x_of(r)}
        if not xy:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
        for r in pts:
            if r["model"] not in xy:
                continue
            x, y = xy[r["model"]]
            ax.scatter([x], [y], s=60, color="#2563eb", zorder=3)
            ax.annotate(r["model"], (x, y), textcoords="offset points", xytext=(6, 5), fontsize=8)
            if r["parent"] in xy:
                ax.annotate("", xy=(x, y), xytext=xy[r["parent"]], arrowprops={"arrowstyle": "->",
                                                                               "color": "#9ca3af"})
        if record.get("baseline_macro") is not None:
            ax.axhline(record["baseline_macro"], color="#dc2626", linestyle="--", linewidth=1)
            ax.annotate("majority class", (min(x for x, _ in xy.values()), record["baseline_macro"]),
                        textcoords="offset points", xytext=(0, -12), fontsize=8, color="#dc2626")
        xs = [x for x, _ in xy.values()]
        if max(xs) / max(min(xs), 1e-9) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"GLUE macro score ({', '.join(t.upper() for t in record['tasks'])})")
        ax.set_title(f"{record['run']}: {'score vs CPU time' if name == LATENCY_PLOT else 'score vs size'}")
        ax.grid(True, alpha=0.3)
        ax.margins(0.15)
        fig.tight_layout()
        tmp = out / f".{name}.tmp"
        fig.savefig(tmp, format="png", metadata={"Software": None})
        plt.close(fig)
        os.replace(tmp, out / name)
        written.append(out / name)
    return written


# ------------------------------------------------------------------------------------------------ write
def write(run_dir: Path, ablation: Optional[Path] = None, plots: bool = True) -> Path:
    """Write RUN_DIR/report/ (report.md, report.json, the plots), copy it into every task teacher's folder and
    rewrite those teachers' cards so they link it; returns the path of report.md."""
    run_dir = Path(run_dir).resolve()
    record = collect(run_dir, ablation)
    tmp = run_dir / f".{REPORT_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    written = write_plots(record, tmp) if plots else []
    (tmp / REPORT_JSON).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (tmp / REPORT_MD).write_text(render(record, plots=bool(written)), encoding="utf-8")
    out = run_dir / REPORT_DIR
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    publish = publish_config_of(run_dir) if (run_dir / "recipe.yaml").is_file() else None
    for stage_task in {f"{s}/{t}" for t, s in record["teacher"].items()}:
        folder = run_dir / stage_task
        shutil.rmtree(folder / REPORT_DIR, ignore_errors=True)
        shutil.copytree(out, folder / REPORT_DIR)
        cards.write_card(folder, publish=publish)
    return out / REPORT_MD
