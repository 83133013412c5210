"""Model cards: README.md with Hub metadata (`ModelCardData` + `EvalResult`) and a body built from the run's files.

Every number in a card comes from a `metrics.json` or `lineage.json` of the run; a card for a model without
metrics says so and carries no `model-index`. The body is rendered from `hfdistill/publish/templates/model_card.md.j2`;
the size-vs-score plot of all models of the run (same task) is written beside the card as `size_vs_score.png`.
Cards and plots are deterministic (no timestamps of their own), so re-pushing an unchanged run is a no-op.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from hfdistill.evaluation import clearly_above_baseline, reliable, speedup
from hfdistill.folder import (FRONT_FILE, RunModel, find_run_models, load_model_folder, parent_path, read_json,
                              run_dir_of, task_teacher)
from hfdistill.schema import KNOWN_BASE_IDS, PublishConfig, packaged_model_path

TEMPLATES = Path(__file__).parent / "templates"
CARD_TEMPLATE = "model_card.md.j2"
PLOT_FILE = "size_vs_score.png"
REPORT_DIR, REPORT_MD = "report", "report.md"  # a run report copied into a teacher folder (hfdistill.report)
GLUE_DATASET = "nyu-mll/glue"

KIND_TAGS = {"finetune": "fine-tuned", "distill": "distillation", "prune": "pruning", "quantize": "quantization",
             "vocab": "vocabulary-pruning"}
KIND_WORDS = {"finetune": "fine-tuned", "distill": "distilled", "prune": "pruned", "quantize": "quantized",
              "vocab": "vocabulary-pruned"}
KIND_RELATION = {"finetune": "finetune", "distill": "finetune", "prune": "finetune", "quantize": "quantized",
                 "vocab": "finetune"}
# metrics.json names → (Hub metric type, display name)
METRIC_TYPES = {
    "accuracy": ("accuracy", "Accuracy"),
    "accuracy_mismatched": ("accuracy", "Accuracy (mismatched)"),
    "f1": ("f1", "F1"),
    "matthews_correlation": ("matthews_correlation", "Matthews correlation"),
    "pearson": ("pearsonr", "Pearson correlation"),
    "spearmanr": ("spearmanr", "Spearman correlation"),
}
SPLITS = {"dev": "validation"}
TASK_SPLITS = {("mnli", "dev"): "validation_matched"}


def base_model_id(model: RunModel) -> Optional[str]:
    """The Hub id of a base model named in lineage, if it is one (a local folder has no Hub link)."""
    if model.lineage.get("parent_kind") != "base":
        return None
    return hub_id(str(model.lineage.get("parent") or ""))


def hub_id(name: str) -> Optional[str]:
    """`name` as a Hub id: a packaged short name's id, or `ns/name` that is not a local path."""
    if name in KNOWN_BASE_IDS:
        return KNOWN_BASE_IDS[name]
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) and not os.path.exists(name):
        return name
    return None


def base_license(model: RunModel, run_dir: Optional[Path]) -> Optional[str]:
    """The recipe's `license`, else the base model card's license (read from a local folder or the HF cache)."""
    recipe = (yaml.safe_load((run_dir / "recipe.yaml").read_text()) or {}) if run_dir and \
        (run_dir / "recipe.yaml").is_file() else {}
    if recipe.get("license"):
        return str(recipe["license"])
    from huggingface_hub import metadata_load

    readme: Optional[Path] = None
    parent = str(model.lineage.get("base_model") or (model.lineage.get("parent")
                 if model.lineage.get("parent_kind") == "base" else "") or "")
    if recipe.get("model") and os.path.isabs(str(recipe["model"])):
        parent = str(recipe["model"])  # a local base folder: lineage names it by its public name only
    if parent in KNOWN_BASE_IDS:
        try:
            readme = packaged_model_path(parent) / "README.md"
        except Exception:
            readme = None
    elif parent and Path(parent).is_dir():
        readme = Path(parent) / "README.md"
    elif hub_id(parent):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(hub_id(parent), "README.md")
        readme = Path(cached) if isinstance(cached, str) else None
    if readme is not None and readme.is_file():
        lic = (metadata_load(readme) or {}).get("license")
        return str(lic) if lic else None
    return None


# ------------------------------------------------------------------------------------------------- formatting
def fmt_value(v: float) -> str:
    return f"{v:.4f}"


def fmt_params(n: Optional[int]) -> Optional[str]:
    if not isinstance(n, (int, float)):
        return None
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{int(n):,}"


def fmt_bytes(n: Optional[int]) -> Optional[str]:
    if not isinstance(n, (int, float)):
        return None
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def fmt_ms(m: dict[str, Any]) -> Optional[str]:
    lat = (m.get("latency_ms") or {}).get("median")
    return f"{lat:.2f} ms" if isinstance(lat, (int, float)) else None


def _public_data(data: dict[str, Any]) -> dict[str, Any]:
    """The data record for a published card: a local GLUE folder by its public name (`glue/SST-2@3f2a9c1e`, as
    lineage.json records it), never its full path (older runs recorded one: only its last part is shown)."""
    src = str(data.get("source") or "")
    if src.startswith("hub:"):
        return {**data, "source": src[len("hub:"):]}
    if src:
        name = Path(src).name if os.path.isabs(src) else src
        return {**data, "source": f"the original GLUE files (`{name}`)"}
    return data


def _latency(m: dict[str, Any]) -> Optional[float]:
    lat = (m.get("latency_ms") or {}).get("median")
    return float(lat) if isinstance(lat, (int, float)) and lat > 0 else None


def flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested facts → (dotted key, compact value) rows for a table."""
    rows: list[tuple[str, str]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            rows.extend(flatten(v, key + "."))
        elif v is None or v == {} or v == []:
            continue
        elif isinstance(v, (list, tuple)):
            rows.append((key, ", ".join(str(x) for x in v)))
        elif isinstance(v, float):
            rows.append((key, f"{v:g}"))
        else:
            rows.append((key, str(v)))
    return rows


# ------------------------------------------------------------------------------------------------- metadata
def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    """(metrics.json key, Hub metric type, display name, value) for each measured metric."""
    out = []
    for name, value in (metrics.get("metrics") or {}).items():
        if isinstance(value, (int, float)):
            mtype, label = METRIC_TYPES.get(name, (name, name.replace("_", " ").capitalize()))
            out.append((name, mtype, label, float(value)))
    return out


def glue_split(task: str, split: str, metric: str) -> str:
    if metric == "accuracy_mismatched":
        return "validation_mismatched"
    return TASK_SPLITS.get((task, split), SPLITS.get(split, split))


def eval_results(model: RunModel, model_name: str) -> list[Any]:
    """`EvalResult`s for the measured metrics (none for an unevaluated model)."""
    from huggingface_hub import EvalResult

    task, split = model.task, model.metrics.get("split", "dev")
    return [
        EvalResult(task_type="text-classification", task_name="Text Classification", dataset_type=GLUE_DATASET,
                   dataset_name=f"GLUE {task.upper()}", dataset_config=task, dataset_split=glue_split(task, split, key),
                   metric_type=mtype, metric_name=label, metric_value=round(value, 6))
        for key, mtype, label, value in metric_rows(model.metrics)
    ]


def base_model_relation(model: RunModel) -> str:
    if (model.path / "adapter_config.json").is_file():
        return "adapter"
    return KIND_RELATION.get(model.kind, "finetune")


# ------------------------------------------------------------------------------------------------- plot
def write_plot(model: RunModel, models: list[RunModel], out: Path) -> Optional[Path]:
    """Score against disk size for every evaluated model of the run on this task; None when there is nothing."""
    points = [m for m in models if m.task == model.task and m.score is not None
              and isinstance(m.metrics.get("disk_bytes"), (int, float)) and m.metrics["disk_bytes"] > 0]
    if not points:
        out.unlink(missing_ok=True)
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for m in points:
        x, y = m.metrics["disk_bytes"] / 1e6, m.score
        me = m.path == model.path
        ax.scatter([x], [y], s=90 if me else 50, color="#d97706" if me else "#2563eb", zorder=3,
                   edgecolors="black" if me else "none")
        ax.annotate(m.stage + (" (this model)" if me else ""), (x, y), textcoords="offset points", xytext=(6, 6),
                    fontsize=9)
    for m in points:  # lineage arrows parent → child
        p = parent_path(m)
        parent = next((q for q in points if q.path == p), None)
        if parent is not None:
            ax.annotate("", xy=(m.metrics["disk_bytes"] / 1e6, m.score),
                        xytext=(parent.metrics["disk_bytes"] / 1e6, parent.score),
                        arrowprops={"arrowstyle": "->", "color": "#9ca3af"})
    xs = [m.metrics["disk_bytes"] / 1e6 for m in points]
    if max(xs) / max(min(xs), 1e-9) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("weights on disk (MB)")
    ax.set_ylabel(f"GLUE {model.task.upper()} dev score")
    ax.set_title(f"{model.lineage.get('recipe_name', 'run')}: size vs. score ({model.task})")
    ax.grid(True, alpha=0.3)
    ax.margins(0.2)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp")
    fig.savefig(tmp, format="png", metadata={"Software": None})  # no version stamp: same run → same bytes
    plt.close(fig)
    os.replace(tmp, out)
    return out


# ------------------------------------------------------------------------------------------------- card
def _chain(model: RunModel, by_path: dict[Path, RunModel]) -> list[RunModel]:
    chain = [model]
    while (p := parent_path(chain[0])) is not None and p in by_path and by_path[p] not in chain:
        chain.insert(0, by_path[p])
    return chain


def _load_snippet(model: RunModel, ref: str) -> dict[str, Any]:
    config = read_json(model.path / "config.json") or {}
    quant = config.get("quantization_config") or {}
    return {
        "ref": ref,
        "local": os.path.isabs(ref),  # a card written before the repo id is known loads from the folder
        "peft": (model.path / "adapter_config.json").is_file(),
        "adapter": (model.path / "adapter" / "adapter_config.json").is_file(),  # quantize recovery adapters
        "int8_cpu": (model.path / "model.onnx").is_file(),
        "heatmap": (model.path / "pruning_heatmap.png").is_file(),
        "remote_code": bool(config.get("auto_map")),
        "bnb": quant.get("quant_method") == "bitsandbytes",
        "quant_method": quant.get("quant_method"),
        "labels": [v for _, v in sorted((int(k), v) for k, v in (config.get("id2label") or {}).items())],
    }


def stage_as_written(model: RunModel) -> dict[str, Any]:
    """The recipe stage as its author wrote it (`recipe_stage`: the fields set in the recipe), with the parent
    it resolved to; runs before hfdistill recorded that fall back to the full config without empty fields."""
    lineage = model.lineage
    written = lineage.get("recipe_stage")
    if written is None:
        return {k: v for k, v in (lineage.get("stage_config") or {}).items() if v is not None}
    stage = {"name": written.get("name", model.stage), "kind": written.get("kind", model.kind)}
    stage["from"] = written.get("from") or lineage.get("parent_stage") or "model"
    return {**stage, **{k: v for k, v in written.items() if k not in stage}}


def _limitations(model: RunModel, chain: list[RunModel], snippet: dict[str, Any]) -> list[str]:
    out = []
    m, data = model.metrics, model.lineage.get("data") or {}
    notes = (model.lineage.get("info") or {}).get("notes") or []
    out.extend([notes] if isinstance(notes, str) else list(notes))
    base = m.get("majority_baseline") or {}
    if clearly_above_baseline(m) is False:
        out.append(f"**Not clearly better than guessing**: its dev score {m['score']:.4f} does not clear the "
                   f"majority-class baseline {base['score']:.4f} (always predicting class `{base['label']}`) by "
                   f"{base['margin']:.4f} (two standard errors on {m.get('num_examples', '?')} examples). Do not use "
                   f"it as a classifier; train longer or with another learning rate.")
    if snippet["int8_cpu"]:
        out.append("The int8-cpu model is an ONNX graph with dynamically quantized int8 weights: it runs on CPU with "
                   "ONNX Runtime, not with PyTorch/transformers.")
    if snippet["bnb"]:
        out.append("bitsandbytes quantized weights are meant for CUDA GPUs; on CPU their kernels are slow or "
                   "unavailable, so the CPU latency in the table can be worse than the unquantized parent's.")
    for m_ in chain:
        d = m_.lineage.get("data") or {}
        if d.get("max_train_samples") and m_.kind != "quantize":
            n = d.get("train_examples") or d["max_train_samples"]
            out.append(f"Stage `{m_.stage}` was trained on a random subset of {n:,} training examples "
                       f"(`max_train_samples: {d['max_train_samples']}`), not the full GLUE training set.")
    if data.get("max_eval_samples"):
        out.append(f"Scores use only the first {data['max_eval_samples']:,} dev examples "
                   f"(`max_eval_samples`), so they are noisier than full dev-set scores.")
    if data.get("max_seq_length"):
        out.append(f"Inputs were truncated to {data['max_seq_length']} tokens in training and evaluation.")
    if m:
        lat = m.get("latency_ms") or {}
        if lat:
            out.append(f"Latency was measured on {m.get('device', 'cpu')} with {lat.get('threads', '?')} thread(s) "
                       f"at batch size {lat.get('batch_size', 1)}; other hardware gives other numbers."
                       if lat.get("threads") else
                       f"Latency was measured on {m.get('device', 'cpu')} at batch size {lat.get('batch_size', 1)}; "
                       f"other hardware gives other numbers.")
        out.append("Scores are on the GLUE dev (validation) split; GLUE's test labels are hidden, so these are "
                   "not leaderboard (test-server) scores.")
    out.append("GLUE is English-only; the model inherits the biases and limits of its base model and of GLUE.")
    return out


def summary_metadata(model: RunModel, recipe_name: str, parent_repo: Optional[str], ref: Optional[RunModel],
                     repo_ids: Mapping[Path, str]) -> dict[str, Any]:
    """The card's `hfdistill:` metadata block: what a leaderboard or a Hub page lists without downloading
    metrics.json (the model-index carries only the metrics): stage, task, score, size, latency, parent, and
    retention against the task's teacher. Absent values are left out."""
    m = model.metrics
    out = {"recipe": recipe_name, "stage": model.stage, "kind": model.kind, "task": model.task,
           "score": round(model.score, 6) if model.score is not None else None,
           "params": m.get("params"), "disk_bytes": m.get("disk_bytes"),
           "latency_ms": round(_latency(m), 3) if _latency(m) else None, "parent": parent_repo}
    if ref is not None and ref.path != model.path and ref.score and model.score is not None:
        out.update(teacher=repo_ids.get(ref.path) or ref.stage, retention=round(model.score / ref.score, 4))
    return {k: v for k, v in out.items() if v is not None}


def on_pareto_front(model: RunModel) -> bool:
    """Whether the run's `front.json` (written after a sweep, `hfdistill front`) puts the model on its task's
    Pareto front (dev score, CPU latency, disk size): its card then carries the `pareto` tag."""
    run_dir = run_dir_of(model)
    front = (read_json(run_dir / FRONT_FILE) or {}) if run_dir is not None else {}
    return model.stage in (((front.get("tasks") or {}).get(model.task) or {}).get("front") or [])


def build_card(model: RunModel, run_models: list[RunModel], repo_ids: Mapping[Path, str],
               license: Optional[str], plot: Optional[Path], endpoint: Optional[str] = None) -> str:
    """The card text (YAML metadata + Markdown body) for `model`."""
    from huggingface_hub import ModelCard, ModelCardData

    by_path = {m.path: m for m in run_models}
    by_path.setdefault(model.path, model)
    repo_id = repo_ids.get(model.path)
    recipe_name = model.lineage.get("recipe_name") or "hfdistill"
    title = repo_id or f"{recipe_name}-{model.stage}-{model.task}"
    model_name = title.split("/")[-1]
    parent_dir = parent_path(model)
    parent = by_path.get(parent_dir) if parent_dir else None
    if parent is None and parent_dir is not None:
        parent = load_model_folder(parent_dir)
    parent_repo = repo_ids.get(parent_dir) if parent_dir else base_model_id(model)
    chain = _chain(model, by_path)

    results = eval_results(model, model_name)
    tags = ["hfdistill", KIND_TAGS.get(model.kind, model.kind), "glue", model.task]
    tags += ["pareto"] if on_pareto_front(model) else []
    data = ModelCardData(
        library_name="transformers", pipeline_tag="text-classification", license=license,
        tags=[t for t in dict.fromkeys(tags) if t], datasets=[GLUE_DATASET], base_model=parent_repo,
        base_model_relation=base_model_relation(model) if parent_repo else None, model_name=model_name,
        eval_results=results or None, metrics=sorted({r.metric_type for r in results}) or None,
    )

    # Results table: every evaluated model of the run on this task (the plot shows the same models); retention and
    # speed-up against the task's teacher (the first evaluated model made from the base model).
    same_task = [model if m.path == model.path else m for m in by_path.values()
                 if m.task == model.task and m.score is not None]
    ref = task_teacher(same_task) if len(same_task) > 1 else None
    metric_names = [k for k, _, _, _ in metric_rows(model.metrics)]
    labels = {k: lbl for k, _, lbl, _ in metric_rows(model.metrics)}
    rows = []
    for m in same_task:
        mark = " (this model)" if m is model else " (teacher)" if m is ref else ""
        row = {"name": m.stage + mark,
               "link": repo_ids.get(m.path) if m is not model else None,
               "kind": m.kind, "score": fmt_value(m.score),
               "metrics": [fmt_value(m.metrics["metrics"][k]) if isinstance((m.metrics.get("metrics") or {})
                                                                            .get(k), (int, float)) else "–"
                           for k in metric_names],
               "params": fmt_params(m.metrics.get("params")), "disk": fmt_bytes(m.metrics.get("disk_bytes")),
               "latency": fmt_ms(m.metrics)}
        if ref is not None:
            row["retention"] = f"{100 * m.score / ref.score:.1f}%" if ref.score else None
            ratio = speedup(ref.metrics, m.metrics)
            row["speedup"] = (f"{ratio:.2f}×" + ("" if reliable(ref.metrics, m.metrics) else " (busy machine)")
                              if ratio else None)
        rows.append(row)
    columns = {c: any(r.get(c) for r in rows) for c in ("params", "disk", "latency", "retention", "speedup")}
    data.hfdistill = summary_metadata(model, recipe_name, parent_repo, ref, repo_ids) or None

    vs_parent = []
    if parent is not None and parent.score and model.score is not None:
        vs_parent.append(f"keeps {100 * model.score / parent.score:.1f}% of the dev score of its parent "
                         f"`{parent.stage}` ({fmt_value(model.score)} vs. {fmt_value(parent.score)})")
        pb, mb = parent.metrics.get("disk_bytes"), model.metrics.get("disk_bytes")
        if isinstance(pb, (int, float)) and isinstance(mb, (int, float)) and mb > 0:
            vs_parent.append(f"is {pb / mb:.2f}× smaller on disk ({fmt_bytes(mb)} vs. {fmt_bytes(pb)})")
        lp, lm = _latency(parent.metrics), _latency(model.metrics)
        if speedup(parent.metrics, model.metrics):
            vs_parent.append(f"runs {lp / lm:.2f}× {'faster' if lp >= lm else 'slower (ratio)'} on CPU at batch "
                             f"size 1 ({lm:.2f} ms vs. {lp:.2f} ms)")

    cfg = stage_as_written(model)
    snippet = _load_snippet(model, repo_id or str(model.path))
    root = chain[0]
    base_name = str(root.lineage.get("parent") or "") if root.lineage.get("parent_kind") == "base" else ""
    base_link = base_model_id(root) if base_name else None

    ctx = {
        "title": title, "model": model, "kind_word": KIND_WORDS.get(model.kind, model.kind),
        "task_upper": model.task.upper(), "recipe_name": recipe_name, "parent": parent,
        "parent_repo": parent_repo, "parent_is_base": model.lineage.get("parent_kind") == "base",
        "base_name": base_name, "base_link": base_link,
        "chain": [{"stage": m.stage, "kind": m.kind, "repo": repo_ids.get(m.path), "me": m is model}
                  for m in chain],
        "stage_yaml": yaml.safe_dump([cfg], sort_keys=False).strip() if cfg else "",
        "facts": flatten(model.lineage.get("info") or {}),
        "has_metrics": bool(model.metrics) and model.score is not None,
        "metric_labels": [labels[k] for k in metric_names], "rows": rows, "columns": columns,
        "ref_stage": ref.stage if ref is not None else None, "vs_parent": vs_parent,
        "metrics": model.metrics, "latency": model.metrics.get("latency_ms") or {},
        "plot": plot.name if plot else None, "load": snippet,
        "limitations": _limitations(model, chain, snippet), "endpoint": endpoint,
        "data": _public_data(model.lineage.get("data") or {}),
        # `hfdistill report RUN_DIR` copies the run's report into each task teacher's folder: the card links it
        "report": f"{REPORT_DIR}/{REPORT_MD}" if (model.path / REPORT_DIR / REPORT_MD).is_file() else None,
    }
    card = ModelCard.from_template(data, template_path=str(TEMPLATES / CARD_TEMPLATE), **ctx)
    text = "\n".join(line.rstrip() for line in str(card).splitlines())
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


EMBEDDED_NOTE = "This repo lives on an embedded Hub"  # the template's first words for `endpoint: embedded`


def written_for_embedded(card_text: str) -> bool:
    """Whether a card was written for the embedded Hub (it tells its readers how to serve it)."""
    return EMBEDDED_NOTE in card_text


def card_metadata(card_text: str) -> dict[str, Any]:
    """The YAML metadata of a card's text ({} without a valid block)."""
    m = re.match(r"^\s*---\r?\n(.*?)\r?\n---", card_text, re.S)
    try:
        data = yaml.safe_load(m.group(1)) if m else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def write_card(model_dir: Path, repo_ids: Optional[Mapping[Any, str]] = None,
               publish: Optional["PublishConfig"] = None) -> Path:
    """Write `README.md` (and `size_vs_score.png`) into a model folder; returns the card's path.

    repo_ids: model folder (path or `stage/task`) → Hub repo id, for links to parents and the loading snippet;
    by default the ids `publish` plans without asking the Hub (none when the namespace is still unknown).
    """
    model = load_model_folder(Path(model_dir))
    run_dir = run_dir_of(model)
    run_models = find_run_models(run_dir) if run_dir is not None else [model]
    if repo_ids is None and publish is not None and run_dir is not None:
        repo_ids = publish.planned_repo_ids(run_dir)
    ids: dict[Path, str] = {}
    keys = {m.key: m.path for m in run_models}
    for k, v in (repo_ids or {}).items():
        path = keys.get(k) if isinstance(k, str) and k in keys else Path(k).resolve()
        ids[path] = v
    plot = write_plot(model, run_models, model.path / PLOT_FILE)
    endpoint = getattr(publish, "endpoint", None) if publish is not None else None
    text = build_card(model, run_models, ids, base_license(model, run_dir), plot, endpoint)
    out = model.path / "README.md"
    tmp = out.with_name(".README.md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out
