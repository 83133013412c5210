"""The embedded Hub's web page: the list of models (score, size and latency columns, sortable), each model's
rendered card (results table and plot), the collections, and a leaderboard of an author's hfdistill models.

Cards are Markdown with YAML metadata; the body is rendered with markdown-it (raw HTML off), and relative image
and link targets are pointed at the file's `resolve` URL so the card's plot shows as it does on the Hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from hfdistill.hubserver.hub_collections import CollectionStore
from hfdistill.hubserver.metadata import as_list, card_metadata, split_card
from hfdistill.hubserver.openapi import Endpoint
from hfdistill.hubserver.storage import StorageError

#: `/?sort=…` → (the model-list field, whether larger comes first); models without the value come last.
SORTS = {"name": ("id", False), "score": ("score", True), "size": ("disk_bytes", False),
         "latency": ("latency_ms", False), "updated": ("updated", True)}

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                          autoescape=jinja2.select_autoescape(["html"]))


def render_markdown(text: str, repo_id: str, revision: str) -> str:
    """Markdown → HTML, with relative links resolved against the repo's files."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)

    def fix(url: str) -> str:
        parsed = urlparse(url)
        if parsed.scheme or parsed.netloc or url.startswith(("/", "#")):
            return url
        return f"/{repo_id}/resolve/{quote(revision, safe='')}/{url}"

    def walk(toks: list[Any]) -> None:
        for tok in toks:
            if tok.type == "image" and tok.attrGet("src"):
                tok.attrSet("src", fix(str(tok.attrGet("src"))))
            if tok.type == "link_open" and tok.attrGet("href"):
                tok.attrSet("href", fix(str(tok.attrGet("href"))))
            if tok.children:
                walk(tok.children)

    walk(tokens)
    return md.renderer.render(tokens, md.options, {})


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def model_index_score(card: dict[str, Any]) -> tuple[str | None, float | None]:
    """(task, score) from a card's model-index: the mean of the first result's metrics, GLUE's task score (MNLI's
    mismatched split left out)."""
    for entry in card.get("model-index") or []:
        for result in entry.get("results") or []:
            dataset = result.get("dataset") or {}
            if dataset.get("split") == "validation_mismatched":
                continue
            values = [v for m in result.get("metrics") or [] if (v := _number(m.get("value"))) is not None]
            if values:
                return dataset.get("config"), sum(values) / len(values)
    return None, None


def model_row(repo: Any, commit: Any, card: dict[str, Any]) -> dict[str, Any]:
    """One model of the list: its card's metadata, with the score, size and latency of hfdistill's block
    (`hfdistill:`; the score falls back to the model-index)."""
    facts = card.get("hfdistill") if isinstance(card.get("hfdistill"), dict) else {}
    task, score = model_index_score(card)
    return {"id": repo.repo_id, "private": repo.private, "updated": commit.date,
            "pipeline_tag": card.get("pipeline_tag"), "base_model": card.get("base_model"),
            "tags": as_list(card.get("tags")), "task": facts.get("task") or task,
            "stage": facts.get("stage"), "kind": facts.get("kind"), "recipe": facts.get("recipe"),
            "score": _number(facts.get("score")) if _number(facts.get("score")) is not None else score,
            "params": _number(facts.get("params")), "disk_bytes": _number(facts.get("disk_bytes")),
            "latency_ms": _number(facts.get("latency_ms")), "parent": facts.get("parent"),
            "retention": _number(facts.get("retention"))}


def sort_models(models: list[dict[str, Any]], sort: str, direction: str | None) -> list[dict[str, Any]]:
    key, larger_first = SORTS.get(sort, SORTS["name"])
    if direction in ("asc", "desc"):
        larger_first = direction == "desc"
    known = sorted((m for m in models if m[key] is not None), key=lambda m: (m[key], m["id"]),
                   reverse=larger_first)
    return known + [m for m in models if m[key] is None]


def leaderboard_rows(models: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(tasks, rows): one row per recipe stage across its tasks (task scores ×100, their mean as the macro score,
    mean params/disk/latency/retention), best macro score first — the table `hfdistill leaderboard` prints."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for m in models:
        if m["score"] is not None and m["task"]:
            groups.setdefault((m["recipe"] or "", m["stage"] or m["id"]), []).append(m)
    tasks = sorted({m["task"] for ms in groups.values() for m in ms})

    def mean(ms: list[dict[str, Any]], key: str) -> float | None:
        vals = [m[key] for m in ms if m[key] is not None]
        return sum(vals) / len(vals) if vals else None

    rows = []
    for (recipe, stage), ms in groups.items():
        scores = {m["task"]: 100 * m["score"] for m in ms}
        rows.append({"name": f"{recipe}/{stage}" if recipe else stage, "kind": ms[0]["kind"],
                     "repos": {m["task"]: m["id"] for m in ms}, "scores": scores,
                     "macro": sum(scores.values()) / len(scores), "params": mean(ms, "params"),
                     "disk_bytes": mean(ms, "disk_bytes"), "latency_ms": mean(ms, "latency_ms"),
                     "retention": mean(ms, "retention"), "parent": ms[0]["parent"]})
    rows.sort(key=lambda r: (-r["macro"], r["name"]))
    return tasks, rows


def endpoints(hub: Any) -> list[Endpoint]:  # hub: app.HubApp (the app imports this module)
    collections = CollectionStore(hub.storage)

    def all_models(request: Request) -> list[dict[str, Any]]:
        models = []
        for repo in hub.storage.list_repos():
            if not hub.readable(request, repo):
                continue
            try:
                commit = hub.storage.resolve(repo.repo_id, None)
            except (StorageError, OSError, ValueError, KeyError):
                continue  # one damaged repo must not hide the others
            models.append(model_row(repo, commit, card_metadata(hub.storage, commit) or {}))
        return models

    def visible_collections(request: Request) -> list[dict[str, Any]]:
        return [c for c in collections.all() if not c["private"] or hub.authorized(request)]

    def index(request: Request, body: Any) -> Response:
        """The web page: every model (sortable by score, size, latency) and every collection."""
        sort = request.query_params.get("sort", "name")
        models = sort_models(all_models(request), sort, request.query_params.get("direction"))
        return HTMLResponse(_ENV.get_template("index.html").render(
            models=models, sort=sort if sort in SORTS else "name", collections=visible_collections(request)))

    def collection_page(request: Request, body: Any) -> Response:
        """The web page of one collection: its models in order, with their notes."""
        slug = f"{request.path_params['ns']}/{request.path_params['slug']}"
        try:
            record = collections.get(slug)
            if record["private"] and not hub.authorized(request):
                raise StorageError(404, "not found")
        except StorageError:
            return HTMLResponse(_ENV.get_template("missing.html").render(repo_id=slug), status_code=404)
        by_id = {m["id"]: m for m in all_models(request)}
        items = [{**by_id[i["id"]], "note": (i.get("note") or {}).get("text")}
                 for i in sorted(record["items"], key=lambda i: i["position"]) if i["id"] in by_id]
        return HTMLResponse(_ENV.get_template("collection.html").render(collection=record, items=items))

    def leaderboard(request: Request, body: Any) -> Response:
        """Every hfdistill model of an author (`?author=`), one row per recipe stage across its tasks."""
        author = request.query_params.get("author")
        models = [m for m in all_models(request) if "hfdistill" in m["tags"]
                  and (not author or m["id"].partition("/")[0] == author)]
        tasks, rows = leaderboard_rows(models)
        authors = sorted({m["id"].partition("/")[0] for m in all_models(request) if "hfdistill" in m["tags"]})
        return HTMLResponse(_ENV.get_template("leaderboard.html").render(author=author, tasks=tasks, rows=rows,
                                                                         authors=authors))

    def model_page(request: Request, body: Any) -> Response:
        """The web page of one model: its rendered card, files and revisions."""
        repo_id = f"{request.path_params['ns']}/{request.path_params['name']}"
        revision = request.query_params.get("revision", "main")
        try:
            repo = hub.storage.get_repo(repo_id)
            if not hub.readable(request, repo):
                raise StorageError(404, "not found")
            commit = hub.storage.resolve(repo_id, revision)
            history = hub.storage.history(repo_id, revision)
        except StorageError:
            return HTMLResponse(_ENV.get_template("missing.html").render(repo_id=repo_id), status_code=404)
        card_html, meta = "", card_metadata(hub.storage, commit) or {}
        meta["tags"] = as_list(meta.get("tags"))
        if "README.md" in commit.files:
            raw = hub.storage.read_object(commit.files["README.md"].sha256).decode("utf-8", "replace")
            card_html = render_markdown(split_card(raw)[1], repo_id, commit.id)
        base = meta.get("base_model")
        bases = [base] if isinstance(base, str) else list(base or [])
        messages = repo.refs["tag_messages"]
        return HTMLResponse(_ENV.get_template("model.html").render(
            repo=repo, commit=commit, card_html=card_html, meta=meta, bases=bases,
            local_bases={b for b in bases if hub.storage.exists(b)},
            files=sorted(commit.files.values(), key=lambda e: e.path), history=history,
            tags=[(n, c, messages.get(n, "")) for n, c in sorted(repo.refs["tags"].items())],
            branches=sorted(repo.refs["branches"].items())))

    return [Endpoint(("GET",), "/", index, query=("sort", "direction")),
            Endpoint(("GET",), "/leaderboard", leaderboard, query=("author",)),
            Endpoint(("GET",), "/collections/{ns}/{slug}", collection_page),
            Endpoint(("GET",), "/{ns}/{name}", model_page, query=("revision",))]
