"""The run summary: `runs/<name>/SUMMARY.md` and `summary.json`, written at the end of every run.

Every finished model of the run, per task: score, params, disk, CPU latency, and retention and speed-up against
the task's teacher (the run's first evaluated model made from the base model) and against its parent; which model
to use for what; and how to load each. Speed-ups are computed only between latencies measured under the same
conditions (`evaluation.comparable`), and figures measured on a busy machine are marked.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Optional

from hfdistill.evaluation import clearly_above_baseline, reliable, speedup
from hfdistill.folder import FRONT_FILE, RunModel, find_run_models, parent_path, read_json, task_teacher
from hfdistill.models.formats import ADAPTER_DIR, INT8_CPU_META

SUMMARY_MD = "SUMMARY.md"
SUMMARY_JSON = "summary.json"
#: A model "keeps" the teacher's quality when its score is at least this fraction of the teacher's.
KEEPS = 0.97


def how_to_load(m: RunModel, run_dir: Path) -> str:
    """One line of Python that loads the model from its folder."""
    rel = os.path.relpath(m.path, run_dir.parent)
    if (m.path / INT8_CPU_META).is_file():
        return f'hfdistill.models.formats.load_int8_cpu("{rel}")  # ONNX Runtime, CPU'
    if (m.path / ADAPTER_DIR).is_dir():
        return (f'PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained("{rel}"), '
                f'"{rel}/{ADAPTER_DIR}")')
    if m.score is None:  # an unscored folder is a masked-LM model (MLM-head fit, general distillation)
        return f'AutoModelForMaskedLM.from_pretrained("{rel}")'
    return f'AutoModelForSequenceClassification.from_pretrained("{rel}")'


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 4) if a is not None and b else None


def summarize(run_dir: Path) -> dict[str, Any]:
    """The summary record of a run folder (what summary.json holds)."""
    run_dir = Path(run_dir).resolve()
    models = find_run_models(run_dir)
    by_path = {m.path: m for m in models}
    tasks: dict[str, list[RunModel]] = {}
    for m in models:
        tasks.setdefault(m.task, []).append(m)
    out: dict[str, Any] = {"run": run_dir.name, "tasks": {}}
    for task, ms in tasks.items():
        teacher = task_teacher(ms)
        rows = []
        for m in ms:
            parent = by_path.get(parent_path(m)) if parent_path(m) else None
            met = m.metrics
            lat = met.get("latency_ms") or {}
            row: dict[str, Any] = {
                "model": m.stage, "kind": m.kind, "path": os.path.relpath(m.path, run_dir),
                "parent": parent.stage if parent else None, "score": m.score,
                "metrics": met.get("metrics"), "params": met.get("params"), "disk_bytes": met.get("disk_bytes"),
                "latency_ms": lat.get("median"), "latency_threads": lat.get("threads"),
                "latency_reliable": lat.get("reliable", True) if lat else None,
                "load": how_to_load(m, run_dir),
                "majority_baseline": (met.get("majority_baseline") or {}).get("score"),
                "clearly_above_baseline": clearly_above_baseline(met),
            }
            for ref_name, ref in (("teacher", teacher), ("parent", parent)):
                if ref is None or ref is m or m.score is None:
                    continue
                row[f"retention_vs_{ref_name}"] = _ratio(m.score, ref.score)
                s = speedup(ref.metrics, met)
                row[f"speedup_vs_{ref_name}"] = round(s, 3) if s else None
                row[f"speedup_vs_{ref_name}_reliable"] = reliable(ref.metrics, met) if s else None
                row[f"disk_vs_{ref_name}"] = _ratio(met.get("disk_bytes"), ref.metrics.get("disk_bytes"))
            rows.append(row)
        out["tasks"][task] = {"teacher": teacher.stage if teacher else None, "models": rows,
                              "use": _recommend(rows, teacher)}
        front = ((read_json(run_dir / FRONT_FILE) or {}).get("tasks") or {}).get(task)  # after a sweep
        if front is not None:
            out["tasks"][task]["pareto_front"] = {"models": front.get("front") or [], "plot": front.get("plot")}
    return out


def _recommend(rows: list[dict], teacher: Optional[RunModel]) -> dict[str, Optional[str]]:
    """Which model to use for what: the most accurate; the fastest and the smallest that keep ≥ 97 %."""
    scored = [r for r in rows if r["score"] is not None and r.get("clearly_above_baseline") is not False]
    if not scored:
        return {}
    keeps = [r for r in scored if r is not None and (teacher is None or r["model"] == teacher.stage
                                                     or (r.get("retention_vs_teacher") or 0) >= KEEPS)]
    timed = [r for r in keeps if r["latency_ms"]]
    sized = [r for r in keeps if r["disk_bytes"]]
    return {"most_accurate": max(scored, key=lambda r: r["score"])["model"],
            "fastest_keeping_97pct": min(timed, key=lambda r: r["latency_ms"])["model"] if timed else None,
            "smallest_keeping_97pct": min(sized, key=lambda r: r["disk_bytes"])["model"] if sized else None}


def _identifier(name: str) -> str:
    ident = re.sub(r"\W", "_", name)
    return ident if ident[:1].isalpha() else f"model_{ident}"


def _pct(v: Optional[float]) -> str:
    return f"{100 * v:.1f} %" if v is not None else "-"


def _x(v: Optional[float], ok: Optional[bool] = True) -> str:
    return "-" if v is None else f"{v:.2f}×" + ("" if ok else " (busy machine)")


def render(summary: dict[str, Any]) -> str:
    """SUMMARY.md."""
    lines = [f"# Run `{summary['run']}`", "",
             "Scores are GLUE dev scores; retention and speed-up are against the task's teacher (and the model's "
             "parent). Latency: CPU, batch size 1, median; a speed-up is shown only between figures measured under "
             "the same conditions (threads, sequence length, CPU), and marked when the machine was busy.", ""]
    for task, t in summary["tasks"].items():
        lines += [f"## {task}", "", "| model | kind | score | retention | vs parent | params | disk MB | latency ms "
                  "| speed-up | vs parent |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in t["models"]:
            score = f"{r['score']:.4f}" if r["score"] is not None else "not evaluated"
            if r.get("clearly_above_baseline") is False:
                score += " ⚠ ≈ majority class"
            params = f"{r['params'] / 1e6:.2f}M" if r.get("params") else "-"
            disk = f"{r['disk_bytes'] / 1e6:.1f}" if r.get("disk_bytes") else "-"
            lat = f"{r['latency_ms']:.2f}" if r.get("latency_ms") else "-"
            if r.get("latency_reliable") is False:
                lat += " (busy)"
            lines.append(f"| `{r['model']}` | {r['kind']} | {score} | {_pct(r.get('retention_vs_teacher'))} | "
                         f"{_pct(r.get('retention_vs_parent'))} | {params} | {disk} | {lat} | "
                         f"{_x(r.get('speedup_vs_teacher'), r.get('speedup_vs_teacher_reliable'))} | "
                         f"{_x(r.get('speedup_vs_parent'), r.get('speedup_vs_parent_reliable'))} |")
        use = t.get("use") or {}
        bases = {r["majority_baseline"] for r in t["models"] if r.get("majority_baseline") is not None}
        if bases:
            lines += ["", f"Majority-class baseline (always the most frequent dev class): {max(bases):.4f}."]
        weak = [r["model"] for r in t["models"] if r.get("clearly_above_baseline") is False]
        if weak:
            lines += [f"**Warning**: {', '.join(f'`{w}`' for w in weak)} did not clearly beat that baseline (by two "
                      f"standard errors): they are no better than guessing the majority class."]
        front = t.get("pareto_front")
        if front is not None:
            plot = f" ({front['plot']})" if front.get("plot") else ""
            lines += ["", f"Pareto front (dev score ↑, CPU latency ↓, disk ↓; latencies compared only when measured "
                          f"alike; `hfdistill front` for the table){plot}: "
                          f"{', '.join(f'`{m}`' for m in front['models']) or 'none'}."]
        lines += ["", "Which model for what:",
                  f"- most accurate: `{use.get('most_accurate') or '-'}`",
                  f"- fastest on CPU that keeps ≥ {KEEPS:.0%} of the teacher's score: "
                  f"`{use.get('fastest_keeping_97pct') or '-'}`",
                  f"- smallest on disk that keeps ≥ {KEEPS:.0%}: `{use.get('smallest_keeping_97pct') or '-'}`",
                  "", "How to load (from the folder above the run folder):", "", "```python",
                  "from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification",
                  "from peft import PeftModel  # only for models with an adapter",
                  "import hfdistill.models.formats  # only for int8-cpu models"]
        lines += [f"{_identifier(r['model'])} = {r['load']}" for r in t["models"]]
        lines += ["```", ""]
    return "\n".join(lines).rstrip() + "\n"


def write(run_dir: Path) -> dict[str, Any]:
    """Write SUMMARY.md and summary.json into the run folder (atomically) and return the summary."""
    run_dir = Path(run_dir)
    summary = summarize(run_dir)
    for name, text in ((SUMMARY_JSON, json.dumps(summary, indent=2) + "\n"), (SUMMARY_MD, render(summary))):
        tmp = run_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, run_dir / name)
    return summary
