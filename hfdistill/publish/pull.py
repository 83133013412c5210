"""Pulling a published model: download, check every file's hash against the Hub's tree, and optionally re-run
the GLUE evaluation its card claims.

The re-evaluation uses the whole dev split unless told otherwise: a card's own `max_eval_samples` may have been a
handful of rows, and a claim verified on those says little. A claim may be lower than the measurement; one above
it by more than the tolerance fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from hfdistill.errors import HubError
from hfdistill.evaluation import evaluate_folder
from hfdistill.folder import read_json
from hfdistill.publish.cards import METRIC_TYPES, glue_split
from hfdistill.publish.client import hf_api, with_retries

#: evaluate(path, task, lineage, max_samples) → the evaluation record: {"metrics": {name: value}, "num_examples": n}
Evaluate = Callable[[Path, str, dict, Optional[int]], dict[str, Any]]


@dataclass(frozen=True)
class MetricCheck:
    task: str
    metric: str
    claimed: float
    measured: Optional[float]
    tolerance: float

    @property
    def ok(self) -> bool:
        """The claim is at most `tolerance` above the measurement (a modest claim is no error)."""
        return self.measured is not None and self.claimed - self.measured <= self.tolerance


@dataclass
class PullResult:
    repo_id: str
    revision: str
    commit: str
    path: Path
    files_checked: int
    hash_mismatches: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    checks: list[MetricCheck] = field(default_factory=list)
    verified: bool = False  # whether the evaluation was re-run
    examples: dict[str, int] = field(default_factory=dict)  # task → dev examples the re-evaluation used

    @property
    def ok(self) -> bool:
        return not self.hash_mismatches and not self.missing_files and all(c.ok for c in self.checks)

    def report(self) -> Iterator[str]:
        """Human lines for `hfdistill pull`."""
        yield f"{self.repo_id} @ {self.commit[:10]} → {self.path} ({self.files_checked} files checked)"
        for p in self.hash_mismatches:
            yield f"  hash mismatch: {p}"
        for p in self.missing_files:
            yield f"  missing: {p}"
        for task, n in self.examples.items():
            yield f"  {task}: re-evaluated on {n:,} dev examples"
        for c in self.checks:
            measured = "not measured" if c.measured is None else f"{c.measured:.4f}"
            verdict = "ok" if c.ok else f"CLAIM TOO HIGH (more than {c.tolerance:g} above the measurement)"
            yield f"  {c.task} {c.metric}: claimed {c.claimed:.4f}, measured {measured}: {verdict}"
        yield "OK" if self.ok else "FAILED"


def claimed_results(readme: Path) -> list[tuple[str, str, str, float]]:
    """(task config, split, metric type, value) for each result in the card's model-index."""
    from huggingface_hub import ModelCard

    try:
        card = ModelCard.load(readme, ignore_metadata_errors=True)
    except Exception:
        return []
    return [(r.dataset_config or "", r.dataset_split or "", r.metric_type, float(r.metric_value))
            for r in (card.data.eval_results or []) if isinstance(r.metric_value, (int, float))]


def _measured_by_type(task: str, metrics: dict[str, float]) -> dict[tuple[str, str], float]:
    """Measured metrics keyed like the card's claims: (Hub metric type, GLUE split)."""
    return {(METRIC_TYPES.get(name, (name,))[0], glue_split(task, "dev", name)): float(value)
            for name, value in metrics.items() if isinstance(value, (int, float))}


def default_evaluate(path: Path, task: str, lineage: dict[str, Any], max_samples: Optional[int] = None,
                     glue_dir: Optional[Path] = None, hub_dataset: Optional[str] = None) -> dict[str, Any]:
    """Re-run the evaluation on the dev split (its first `max_samples` rows, else all of it) with the run's
    sequence length (GLUE data from `glue_dir`, else $HFDISTILL_GLUE_DIR, else `hub_dataset`/nyu-mll/glue)."""
    data = lineage.get("data") or {}
    return evaluate_folder(path, task, glue_dir=glue_dir, hub_dataset=hub_dataset, max_samples=max_samples,
                           max_seq_length=data.get("max_seq_length") or 128, latency_samples=30)


def pull(repo_id: str, revision: Optional[str] = None, local_dir: Optional[Path] = None, verify: bool = False,
         tolerance: float = 0.005, max_samples: Optional[int] = None, endpoint: Optional[str] = None,
         token: Optional[str | bool] = None, evaluate: Optional[Evaluate] = None,
         log: Callable[[str], None] = print) -> PullResult:
    """Download a published model, check every file's hash against the Hub's tree, and with `verify` re-run
    the GLUE evaluation the card claims on the whole dev split (or its first `max_samples` rows): a claim more
    than `tolerance` above the measurement fails (metrics as fractions).

    evaluate(path, task, lineage, max_samples) → the evaluation record; default: `default_evaluate`.
    """
    from huggingface_hub import snapshot_download

    api = hf_api(endpoint, token)
    action = f"pull {repo_id}"
    commit = with_retries(lambda: api.repo_info(repo_id, revision=revision).sha, action, token, log=log)
    target = Path(local_dir) if local_dir else Path.cwd() / repo_id.split("/")[-1]
    path = Path(with_retries(lambda: snapshot_download(repo_id, revision=commit, local_dir=target,
                                                       endpoint=endpoint, token=token), action, token, log=log))
    check = with_retries(lambda: api.verify_repo_checksums(repo_id, revision=commit, local_dir=path), action,
                         token, log=log)
    result = PullResult(repo_id=repo_id, revision=revision or "main", commit=commit, path=path,
                        files_checked=check.checked_count,
                        hash_mismatches=sorted(m["path"] for m in check.mismatches),  # TypedDicts in hf_hub 2.x
                        missing_files=list(check.missing_paths))
    if verify:
        claims = claimed_results(path / "README.md")
        if not claims:
            raise HubError(f"{action}: the card claims no results (model-index), nothing to verify")
        lineage = read_json(path / "lineage.json") or {}
        published = (lineage.get("data") or {}).get("max_eval_samples")
        evaluate = evaluate or default_evaluate
        for task in sorted({t for t, _, _, _ in claims}):
            rows = f"its first {max_samples:,} dev examples" if max_samples else "the full dev split"
            note = f" (the card's scores used only the first {published:,})" if published and not max_samples else ""
            log(f"re-evaluating {repo_id} on GLUE {task}: {rows}{note} …")
            record = evaluate(path, task, lineage, max_samples)
            result.examples[task] = int(record.get("num_examples") or 0)
            measured = _measured_by_type(task, record.get("metrics") or {})
            for t, split, mtype, value in claims:
                if t == task:
                    result.checks.append(MetricCheck(task, f"{mtype} ({split})" if split else mtype, value,
                                                     measured.get((mtype, split)), tolerance))
        result.verified = True
    return result
