"""The embedded Hub's web page: the list of models and each model's rendered card (results table and plot).

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

from hfdistill.hubserver.metadata import as_list, card_metadata, split_card
from hfdistill.hubserver.openapi import Endpoint
from hfdistill.hubserver.storage import StorageError

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


def endpoints(hub: Any) -> list[Endpoint]:  # hub: app.HubApp (the app imports this module)
    def index(request: Request, body: Any) -> Response:
        """The web page: every model."""
        models = []
        for repo in hub.storage.list_repos():
            if not hub.readable(request, repo):
                continue
            try:
                commit = hub.storage.resolve(repo.repo_id, None)
            except (StorageError, OSError, ValueError, KeyError):
                continue  # one damaged repo must not hide the others
            card = card_metadata(hub.storage, commit) or {}
            models.append({"id": repo.repo_id, "private": repo.private, "updated": commit.date,
                           "pipeline_tag": card.get("pipeline_tag"), "base_model": card.get("base_model"),
                           "tags": as_list(card.get("tags"))})
        return HTMLResponse(_ENV.get_template("index.html").render(models=models))

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

    return [Endpoint(("GET",), "/", index), Endpoint(("GET",), "/{ns}/{name}", model_page, query=("revision",))]
