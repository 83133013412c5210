"""An author's hfdistill models in one table: task scores, GLUE macro score, params, disk, latency, parent and
retention against the teacher — read from the cards' metadata on the Hub (`list_models(author=…, cardData=True)`:
the model-index for the scores, the cards' `hfdistill:` block for the rest; the README when a listing carries no
card data), printed, written as Markdown + plot, optionally pushed as a summary repo's README (one commit, none
when unchanged).

One row per recipe stage across its tasks (each hfdistill model is one stage on one task): task scores ×100, the
macro score is their mean (over the tasks the stage has), params/disk/latency/retention the mean over those models.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from hfdistill.errors import HubError
from hfdistill.publish.cards import card_metadata, fmt_bytes, fmt_params
from hfdistill.publish.client import RETRY_WAITS, hf_api, lfs_uploads_unless_hf, with_retries

README, PLOT = "README.md", "leaderboard.png"


@dataclass(frozen=True)
class Entry:
    """One published model, as its card's metadata describes it."""

    repo_id: str
    recipe: str
    stage: str
    kind: str
    task: str
    score: float                     # GLUE task score (fraction) from the model-index
    params: Optional[float] = None
    disk_bytes: Optional[float] = None
    latency_ms: Optional[float] = None
    parent: Optional[str] = None
    retention: Optional[float] = None


@dataclass
class Row:
    """One recipe stage across its tasks."""

    name: str                        # recipe/stage
    kind: str
    repos: dict[str, str]            # task → repo id
    scores: dict[str, float]         # task → score ×100
    params: Optional[float]
    disk_bytes: Optional[float]
    latency_ms: Optional[float]
    parent: Optional[str]
    retention: Optional[float]

    @property
    def macro(self) -> float:
        return sum(self.scores.values()) / len(self.scores)


@dataclass
class Leaderboard:
    author: str
    tasks: list[str]
    rows: list[Row]
    markdown: str = ""
    files: list[Path] = field(default_factory=list)   # the README.md and plot written locally
    pushed: Optional[str] = None                      # the summary repo's commit, when pushed
    changed: bool = False                             # whether that push made a commit

    def text(self) -> str:
        """The table for a terminal."""
        return terminal(self)


def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def task_score(meta: dict[str, Any]) -> tuple[Optional[str], Optional[float]]:
    """(task, GLUE task score) from a card's model-index: the mean of its metrics (MNLI mismatched left out)."""
    for entry in meta.get("model-index") or []:
        for result in (entry or {}).get("results") or []:
            dataset = result.get("dataset") or {}
            if dataset.get("split") == "validation_mismatched":
                continue
            values = [v for m in result.get("metrics") or [] if (v := _num((m or {}).get("value"))) is not None]
            if values:
                return dataset.get("config"), sum(values) / len(values)
    return None, None


def entry(repo_id: str, meta: dict[str, Any]) -> Optional[Entry]:
    """The leaderboard entry of one card's metadata (None: not an evaluated hfdistill model)."""
    facts = meta.get("hfdistill") if isinstance(meta.get("hfdistill"), dict) else {}
    task, score = task_score(meta)
    task = facts.get("task") or task
    if score is None or not task:
        return None
    return Entry(repo_id, str(facts.get("recipe") or ""), str(facts.get("stage") or repo_id.split("/")[-1]),
                 str(facts.get("kind") or ""), str(task), score, _num(facts.get("params")),
                 _num(facts.get("disk_bytes")), _num(facts.get("latency_ms")), facts.get("parent"),
                 _num(facts.get("retention")))


def rows_of(entries: list[Entry]) -> tuple[list[str], list[Row]]:
    """(tasks, rows), best macro score first."""
    groups: dict[tuple[str, str], list[Entry]] = {}
    for e in entries:
        groups.setdefault((e.recipe, e.stage), []).append(e)
    by_repo = {e.repo_id: e for e in entries}

    def mean(es: list[Entry], key: str) -> Optional[float]:
        vals = [getattr(e, key) for e in es if getattr(e, key) is not None]
        return sum(vals) / len(vals) if vals else None

    rows = []
    for (recipe, stage), es in groups.items():
        parent = es[0].parent
        if parent in by_repo:  # a model of the same author: name it by its stage, as the rows are named
            parent = by_repo[parent].stage
        rows.append(Row(f"{recipe}/{stage}" if recipe else stage, es[0].kind, {e.task: e.repo_id for e in es},
                        {e.task: 100 * e.score for e in es}, mean(es, "params"), mean(es, "disk_bytes"),
                        mean(es, "latency_ms"), parent, mean(es, "retention")))
    rows.sort(key=lambda r: (-r.macro, r.name))
    return sorted({e.task for e in entries}), rows


def _cells(row: Row, tasks: list[str], link: Callable[[str, str], str]) -> list[str]:
    return ([row.name, row.kind or "–"]
            + [link(f"{row.scores[t]:.1f}", row.repos[t]) if t in row.scores else "–" for t in tasks]
            + [f"{row.macro:.1f}" + ("" if len(row.scores) == len(tasks) else f" ({len(row.scores)}/{len(tasks)})"),
               fmt_params(row.params) or "–", fmt_bytes(row.disk_bytes) or "–",
               f"{row.latency_ms:.2f} ms" if row.latency_ms is not None else "–", row.parent or "–",
               f"{100 * row.retention:.1f} %" if row.retention is not None else "–"])


HEADER = ["model", "kind"]
TAIL = ["macro", "params", "disk", "latency", "parent", "retention vs. teacher"]


def markdown(board: Leaderboard, plot: Optional[str] = PLOT) -> str:
    """The leaderboard as a Markdown page (with Hub metadata, so it can be a repo's README)."""
    head = HEADER + [t.upper() for t in board.tasks] + TAIL
    lines = ["---", "tags:", "- hfdistill-leaderboard", "---", "", f"# hfdistill models of {board.author}", "",
             "GLUE dev scores ×100 from each model card's model-index; macro: their mean over the tasks a stage has "
             "(n/N when it lacks some); params, disk (weights), latency (CPU, batch size 1, median) and retention "
             "against the task's teacher from the cards' `hfdistill` metadata; one row per recipe stage.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cells(r, board.tasks, lambda v, repo: f"[{v}](/{repo})")) + " |"
              for r in board.rows]
    if plot:
        lines += ["", f"![macro score against size]({plot})"]
    return "\n".join(lines) + "\n"


def terminal(board: Leaderboard) -> str:
    """The leaderboard as a plain text table."""
    head = HEADER + [t.upper() for t in board.tasks] + TAIL
    body = [_cells(r, board.tasks, lambda v, _repo: v) for r in board.rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body)])


def write_plot(board: Leaderboard, out: Path) -> Optional[Path]:
    """Macro score against weights on disk, one point per row; None when no row has a size."""
    points = [r for r in board.rows if r.disk_bytes]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for r in points:
        ax.scatter([r.disk_bytes / 1e6], [r.macro], s=50, color="#2563eb", zorder=3)
        ax.annotate(r.name, (r.disk_bytes / 1e6, r.macro), textcoords="offset points", xytext=(6, 6), fontsize=8)
    xs = [r.disk_bytes / 1e6 for r in points]
    if max(xs) / max(min(xs), 1e-9) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("weights on disk (MB)")
    ax.set_ylabel("GLUE dev macro score")
    ax.set_title(f"hfdistill models of {board.author}")
    ax.grid(True, alpha=0.3)
    ax.margins(0.2)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp")
    fig.savefig(tmp, format="png", metadata={"Software": None})  # same table → same bytes
    plt.close(fig)
    os.replace(tmp, out)
    return out


def leaderboard(author: str, *, endpoint: Optional[str] = None, token: Optional[str | bool] = None,
                out_dir: Optional[Path] = None, push: Optional[str] = None, log: Callable[[str], None] = print,
                progress: bool = True, retry_waits: tuple[float, ...] = RETRY_WAITS) -> Leaderboard:
    """Collect every hfdistill model of `author` into a leaderboard; out_dir: write README.md + leaderboard.png
    there; push: commit both to that repo (created if missing; no commit when unchanged)."""
    from tqdm.auto import tqdm

    api = hf_api(endpoint, token)
    call = lambda fn, what: with_retries(fn, what, token, retry_waits, log)  # noqa: E731
    action = f"leaderboard --author {author}"
    infos = call(lambda: list(api.list_models(author=author, filter="hfdistill", cardData=True)), action)
    entries = []
    for info in tqdm(infos, desc="leaderboard", unit="model", disable=not progress):
        meta = info.card_data.to_dict() if info.card_data is not None else None
        if meta is None:  # a listing without card data: read the card itself
            path = call(lambda: api.hf_hub_download(info.id, README), f"leaderboard: read {info.id}")
            meta = card_metadata(Path(path).read_text(encoding="utf-8"))
        e = entry(info.id, meta)
        if e is not None:
            entries.append(e)
    if not entries:
        raise HubError(f"{action}: no evaluated hfdistill models found")
    tasks, rows = rows_of(entries)
    board = Leaderboard(author, tasks, rows)
    if out_dir is None and not push:
        board.markdown = markdown(board, None)
        return board
    with tempfile.TemporaryDirectory() as tmp:  # the files to push, when they are not wanted locally
        folder = Path(out_dir) if out_dir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        plot = write_plot(board, folder / PLOT)
        board.markdown = markdown(board, PLOT if plot else None)
        (folder / README).write_text(board.markdown, encoding="utf-8")
        files = [folder / README] + ([plot] if plot else [])
        if push:
            board.pushed, board.changed = _push(api, call, push, files)
            log(f"leaderboard → {push} @ {board.pushed[:10]} ({'new commit' if board.changed else 'unchanged'})")
    board.files = files if out_dir is not None else []
    return board


def _push(api: Any, call: Callable, repo_id: str, files: list[Path]) -> tuple[str, bool]:
    from huggingface_hub import CommitOperationAdd

    action = f"leaderboard --push {repo_id}"
    call(lambda: api.create_repo(repo_id, exist_ok=True), action)
    before = call(lambda: api.repo_info(repo_id).sha, action)
    ops = [CommitOperationAdd(path_in_repo=f.name, path_or_fileobj=f) for f in files]
    with lfs_uploads_unless_hf(api.endpoint):
        info = call(lambda: api.create_commit(repo_id, ops, commit_message="hfdistill leaderboard",
                                              parent_commit=before), action)
    return info.oid, info.oid != before
