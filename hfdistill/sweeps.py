"""Sweeps: the Pareto front of a run's models and the `target:` that stops exploring a sweep early.

The sweep itself is expanded by the recipe (`recipe.expand_sweep`): one stage per variant under a suffixed name,
so the pipeline runs it like any recipe, sharing the teacher and its cache. This module looks at the finished
models: per task, the models no other model beats on all of dev score (higher), CPU latency (lower) and disk size
(lower) form the front (`front.json`, `front-<task>.png`; `publish.cards` tags their cards `pareto`);
`TargetTracker` tells the pipeline when a variant has produced a model that meets the recipe's target.

Only latencies measured under the same conditions as the task's reference model (the teacher) are compared
(`evaluation.comparable`); a model timed otherwise, unscored, or no better than the majority class is listed
with the reason and left off the front.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from hfdistill.evaluation import clearly_above_baseline, comparable
from hfdistill.folder import FRONT_FILE, RunModel, find_run_models, load_model_folder, task_teacher
from hfdistill.recipe import Recipe, Target

def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """(score, latency, disk): `a` is at least as good as `b` on all three and better on one."""
    return a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2] and tuple(a) != tuple(b)


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points (score ↑, latency ↓, disk ↓) that no other point dominates. Equal points do not
    dominate each other: both are on the front."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]


# ------------------------------------------------------------------------------------------------- the front
@dataclass
class FrontPoint:
    """One model of a task: its three figures and whether it is on the front (or why it was not compared)."""

    model: str
    kind: str
    score: Optional[float]
    latency_ms: Optional[float]
    disk_bytes: Optional[int]
    on_front: bool = False
    note: str = ""


@dataclass
class TaskFront:
    task: str
    reference: Optional[str]            # the model whose latency conditions the others must share (the teacher)
    points: list[FrontPoint]
    plot: Optional[str] = None          # file name in the run folder

    @property
    def front(self) -> list[str]:
        return [p.model for p in self.points if p.on_front]


@dataclass
class Front:
    """The Pareto front of every task of a run folder (what `front.json` holds), and the target's outcome."""

    run_dir: Path
    tasks: dict[str, TaskFront]
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run_dir.name, "objectives": {"score": "max", "latency_ms": "min", "disk_bytes": "min"},
                "tasks": {t: {"reference": f.reference, "front": f.front, "plot": f.plot,
                              "models": [asdict(p) for p in f.points]} for t, f in self.tasks.items()},
                "targets": self.targets}

    def table(self) -> str:
        """Markdown: per task, every model with its figures, the front marked ★ (front first, by latency)."""
        out = []
        for task, tf in self.tasks.items():
            out += [f"## Pareto front: {task} (dev score ↑, CPU latency ↓, disk ↓)", "",
                    "| | model | kind | score | latency ms | disk MB | note |", "|---|---|---|---|---|---|---|"]
            rows = sorted(tf.points, key=lambda p: (not p.on_front, p.latency_ms if p.latency_ms else float("inf"),
                                                     p.model))
            for p in rows:
                out.append(f"| {'★' if p.on_front else ''} | `{p.model}` | {p.kind} | "
                           f"{_fmt(p.score, '.4f')} | {_fmt(p.latency_ms, '.2f')} | "
                           f"{_fmt(p.disk_bytes / 1e6 if p.disk_bytes else None, '.1f')} | {p.note} |")
            out += ["", f"On the front: {', '.join(f'`{m}`' for m in tf.front) or 'none'}"
                    + (f" (plot: {tf.plot})" if tf.plot else "") + "."]
            hit = self.targets.get(task)
            if hit:
                out.append(target_line(task, hit))
            out.append("")
        return "\n".join(out).rstrip() + "\n"


def _fmt(v: Optional[float], spec: str) -> str:
    return format(v, spec) if v is not None else "-"


def task_front(task: str, models: list[RunModel]) -> TaskFront:
    """The front of one task's models."""
    ref = task_teacher(models)
    timed = [m for m in models if (m.metrics.get("latency_ms") or {}).get("median")]
    if ref is None or ref not in timed:
        ref = timed[0] if timed else ref
    points, compared = [], []
    for m in models:
        lat = (m.metrics.get("latency_ms") or {}).get("median")
        p = FrontPoint(m.stage, m.kind, m.score, float(lat) if lat else None, m.metrics.get("disk_bytes"))
        if m.score is None:
            p.note = "not evaluated"
        elif clearly_above_baseline(m.metrics) is False:
            p.note = "≈ majority class: left off"
        elif not lat or not p.disk_bytes:
            p.note = "no latency or size"
        elif ref is not None and m is not ref and not comparable(ref.metrics, m.metrics):
            p.note = f"latency measured under other conditions than `{ref.stage}`: not compared"
        else:
            compared.append(p)
        points.append(p)
    for i in pareto_front([(p.score, p.latency_ms, p.disk_bytes) for p in compared]):
        compared[i].on_front = True
    return TaskFront(task, ref.stage if ref is not None else None, points)


def compute_front(run_dir: Path) -> Front:
    """The front of every task of a run folder (nothing written)."""
    run_dir = Path(run_dir).resolve()
    by_task: dict[str, list[RunModel]] = {}
    for m in find_run_models(run_dir):
        by_task.setdefault(m.task, []).append(m)
    old = read_front(run_dir)
    front = Front(run_dir, {t: task_front(t, ms) for t, ms in by_task.items()}, dict(old.get("targets") or {}))
    for tf in front.tasks.values():
        plot = run_dir / f"front-{tf.task}.png"
        tf.plot = plot.name if plot.is_file() else None
    return front


def read_front(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / FRONT_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def write_front(run_dir: Path, targets: Optional[dict[str, dict[str, Any]]] = None, plot: bool = True) -> Front:
    """Compute the front, draw `front-<task>.png` and write `front.json` into the run folder; `targets` (the
    target's outcome per task) replaces the recorded one for those tasks."""
    front = compute_front(run_dir)
    front.targets.update(targets or {})
    for tf in front.tasks.values():
        if plot and any(p.on_front for p in tf.points):
            tf.plot = write_plot(tf, front.run_dir / f"front-{tf.task}.png").name
    tmp = front.run_dir / f".{FRONT_FILE}.tmp"
    tmp.write_text(json.dumps(front.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, front.run_dir / FRONT_FILE)
    return front


def write_plot(tf: TaskFront, out: Path) -> Path:
    """Score against CPU latency; the front highlighted and joined; disk size as the marker area."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [p for p in tf.points if p.on_front or (not p.note and p.latency_ms)]
    disk = [p.disk_bytes or 1 for p in pts]
    size = [20 + 180 * d / max(disk) for d in disk]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.scatter([p.latency_ms for p in pts], [p.score for p in pts], s=size, c=["#d62728" if p.on_front else
                                                                               "#9a9a9a" for p in pts],
               alpha=0.8, edgecolors="black", linewidths=0.4)
    front = sorted((p for p in pts if p.on_front), key=lambda p: p.latency_ms)
    ax.plot([p.latency_ms for p in front], [p.score for p in front], color="#d62728", lw=1, ls="--",
            label="Pareto front")
    for p in pts:
        ax.annotate(p.model, (p.latency_ms, p.score), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("CPU latency, batch size 1 (ms, median)")
    ax.set_ylabel(f"{tf.task} dev score")
    ax.set_title(f"{tf.task}: score against latency (marker area ∝ disk size)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out


# ------------------------------------------------------------------------------------------------ the target
def meets(m: RunModel, target: Target, teacher: Optional[RunModel]) -> bool:
    """Whether a model meets every bound of the target (retention against the task teacher's score)."""
    met = m.metrics
    if m.score is None or clearly_above_baseline(met) is False:
        return False
    if target.retention is not None:
        if teacher is None or not teacher.score or m.score / teacher.score < target.retention:
            return False
    if target.max_latency_ms is not None:
        lat = (met.get("latency_ms") or {}).get("median")
        if not lat or lat > target.max_latency_ms:
            return False
    if target.max_disk_mb is not None:
        if not met.get("disk_bytes") or met["disk_bytes"] / 1e6 > target.max_disk_mb:
            return False
    return True


class TargetTracker:
    """Follows one task's stages as the pipeline finishes them; after each variant (in the listed order) whose
    stages are all done, checks whether a model of the variants explored so far (the task's teacher aside) meets
    the target. `done` returns the outcome once it does: the pipeline then runs no further stage of the task."""

    def __init__(self, recipe: Recipe, task: str):
        self.target, self.task = recipe.target, task
        self.variants = recipe.variants
        self.checked = 0
        self.paths: dict[str, Path] = {}

    def done(self, stage: str, path: Path) -> Optional[dict[str, Any]]:
        self.paths[stage] = Path(path)
        if self.target is None:
            return None
        while self.checked < len(self.variants) and all(s in self.paths for s in self.variants[self.checked].stages):
            self.checked += 1
            hit = self.outcome()
            if hit["met"]:
                return hit
        return None

    def outcome(self) -> dict[str, Any]:
        """The target's outcome so far: met or not, the model named (smallest on disk among those that meet
        it, then fastest), the fastest one, and how many variants were explored."""
        explored = list(dict.fromkeys(s for v in self.variants[:self.checked] for s in v.stages))
        models = [load_model_folder(self.paths[s]) for s in explored if (self.paths[s] / "config.json").is_file()]
        teacher = task_teacher(models)
        ok = [m for m in models if m is not teacher and meets(m, self.target, teacher)]
        out: dict[str, Any] = {"met": bool(ok), "variants_explored": self.checked, "variants": len(self.variants),
                               "target": self.target.model_dump(exclude_none=True),
                               "variant": self.variants[self.checked - 1].name if self.checked else None}
        if ok:
            def lat(m: RunModel) -> float:
                return (m.metrics.get("latency_ms") or {}).get("median") or float("inf")

            best = min(ok, key=lambda m: (m.metrics.get("disk_bytes") or float("inf"), lat(m)))
            out.update(model=best.stage, fastest=min(ok, key=lambda m: (lat(m), m.metrics.get("disk_bytes") or 0))
                       .stage, meeting=[m.stage for m in ok], score=best.score,
                       retention=round(best.score / teacher.score, 4) if teacher and teacher.score else None,
                       latency_ms=(best.metrics.get("latency_ms") or {}).get("median"),
                       disk_bytes=best.metrics.get("disk_bytes"))
        return out


def target_line(task: str, hit: dict[str, Any]) -> str:
    """One line about the target's outcome for a task."""
    if not hit.get("met"):
        return (f"[{task}] target {hit.get('target')} not met by any of the {hit.get('variants_explored')} "
                f"variant(s) explored")
    ret = f", retention {100 * hit['retention']:.1f} %" if hit.get("retention") is not None else ""
    lat = f", {hit['latency_ms']:.2f} ms" if hit.get("latency_ms") else ""
    disk = f", {hit['disk_bytes'] / 1e6:.1f} MB" if hit.get("disk_bytes") else ""
    left = hit["variants"] - hit["variants_explored"]
    fastest = f"; fastest that meets it: `{hit['fastest']}`" if hit.get("fastest") != hit.get("model") else ""
    return (f"[{task}] target {hit['target']} met after variant {hit['variant']} ({hit['variants_explored']}/"
            f"{hit['variants']}): smallest model that meets it `{hit['model']}` (score {hit['score']:.4f}{ret}{lat}"
            f"{disk}){fastest}; {left} variant(s) not explored")
