"""Collections on the embedded Hub: the routes `HfApi.create_collection`, `get_collection`, `list_collections`,
`update_collection_metadata`, `delete_collection`, `add_collection_item`, `update_collection_item` and
`delete_collection_item` call, with the JSON shapes huggingface_hub 2.x parses (`Collection`, `CollectionItem`).

A collection is one JSON file, `collections/<owner>/<name>-<id>.json` under the storage root, rewritten atomically
under the storage lock. Its slug is `<owner>/<name>-<id>` as on the Hub (`name` from the title, `id` 24 hex digits).
Writes follow the repos' rules (a token when the server has tokens, and then only in the namespaces whoami names);
a private collection is read only with a valid token; items name model repos only, and an item whose repo was
deleted, or is private to the reader, is not shown.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any, BinaryIO

from starlette.requests import Request
from starlette.responses import Response

from hfdistill.hubserver.openapi import CollectionPatch, Endpoint, ItemPatch, NewCollection, NewItem, parse
from hfdistill.hubserver.storage import NAME_RE, StorageError, check_text, now_iso

MAX_TITLE = 60          # characters of a title (the Hub's limit)
MAX_DESCRIPTION = 150   # characters of a description (the Hub's limit)
MAX_NOTE = 500          # characters of an item's note (the Hub's limit)
MAX_ITEMS = 1000
LISTED_ITEMS = 4        # `list_collections` shows only the first items of each collection, as the Hub does
ID_RE = re.compile(r"^[0-9a-f]{24}$")
CONFLICT = "You already have a collection with this title"


def slug_name(title: str) -> str:
    """The title part of a slug: lowercase words joined by '-' (`My Run: v2` → `my-run-v2`)."""
    name = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:MAX_TITLE]
    return name or "collection"


class CollectionStore:
    """The collections of one storage folder (a view: it keeps no state of its own)."""

    def __init__(self, storage: Any):
        self.storage = storage
        self.root = Path(storage.root) / "collections"

    def path(self, slug: str) -> Path:
        owner, _, rest = slug.partition("/")
        name, _, cid = rest.rpartition("-")
        if not (NAME_RE.match(owner) and re.fullmatch(r"[a-z0-9-]{1,60}", name) and ID_RE.match(cid)):
            raise StorageError(404, f"Collection {slug} not found")
        return self.root / owner / f"{rest}.json"

    def get(self, slug: str) -> dict[str, Any]:
        try:
            return json.loads(self.path(slug).read_text())
        except (FileNotFoundError, ValueError):
            raise StorageError(404, f"Collection {slug} not found") from None

    def all(self) -> list[dict[str, Any]]:
        out = []
        for f in sorted(self.root.glob("*/*.json")):
            try:
                out.append(json.loads(f.read_text()))
            except (OSError, ValueError):
                continue  # one damaged file must not hide the others
        return out

    def save(self, record: dict[str, Any]) -> None:
        record["lastUpdated"] = now_iso()
        self.storage._write_json(self.path(record["slug"]), record)

    def delete(self, slug: str) -> None:
        path = self.path(slug)
        if not path.is_file():
            raise StorageError(404, f"Collection {slug} not found")
        path.unlink()


def _text(what: str, value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    check_text(what, value)
    if len(value) > limit:
        raise StorageError(400, f"{what} is longer than {limit} characters")
    return value


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON as the app answers it (non-ASCII escaped)."""
    return Response(json.dumps(content, ensure_ascii=True, separators=(",", ":")), status_code=status,
                    headers=headers, media_type="application/json")


def endpoints(hub: Any) -> list[Endpoint]:  # hub: app.HubApp (the app imports this module)
    store = CollectionStore(hub.storage)

    def owner_of(namespace: str) -> dict[str, Any]:
        kind = "org" if namespace in hub.orgs else "user"
        return {"name": namespace, "fullname": namespace, "type": kind, "isPro": False}

    def visible_items(request: Request, record: dict[str, Any]) -> list[dict[str, Any]]:
        """The items whose repos exist and the reader may see, numbered 0… in order."""
        out = []
        for item in sorted(record["items"], key=lambda i: i["position"]):
            try:
                repo = hub.storage.get_repo(item["id"])
            except StorageError:
                continue
            if hub.readable(request, repo):
                out.append({**item, "position": len(out)})
        return out

    def as_json(request: Request, record: dict[str, Any], limit: int | None = None) -> dict[str, Any]:
        items = visible_items(request, record)
        return {"slug": record["slug"], "title": record["title"], "description": record.get("description"),
                "owner": owner_of(record["owner"]), "items": items[:limit] if limit else items,
                "lastUpdated": record["lastUpdated"], "position": record.get("position", 0),
                "private": record["private"], "theme": record.get("theme", "blue"), "upvotes": 0,
                "isUpvotedByUser": False, "gating": False}

    def readable(request: Request, slug: str) -> dict[str, Any]:
        record = store.get(slug)
        if record["private"] and not hub.authorized(request):
            raise StorageError(404, f"Collection {slug} not found")
        return record

    def writable(request: Request, slug: str) -> dict[str, Any]:
        record = readable(request, slug)
        hub.require_write(request, f"{record['owner']}/collection")
        return record

    def slug_of(request: Request) -> str:
        return f"{request.path_params['ns']}/{request.path_params['slug']}"

    def list_collections(request: Request, body: BinaryIO) -> Response:
        """List collections (owner, item, sort, limit); each shows its first 4 items."""
        q = request.query_params
        owners, wanted = q.getlist("owner"), q.getlist("item")
        out = []
        for record in store.all():
            if record["private"] and not hub.authorized(request):
                continue
            if owners and record["owner"] not in owners:
                continue
            full = as_json(request, record)
            if wanted and not any(f"{i['type']}s/{i['id']}" in wanted or i["id"] in wanted for i in full["items"]):
                continue
            full.pop("position")  # the client numbers listed collections itself
            out.append({**full, "items": full["items"][:LISTED_ITEMS]})
        out.sort(key=lambda c: c["lastUpdated"], reverse=True)
        if q.get("limit", "").isdigit():
            out = out[:int(q["limit"])]
        return _json(out)

    def create(request: Request, body: BinaryIO) -> Response:
        """Create a collection (409 with its slug when the owner has one with this title)."""
        b = parse(NewCollection, body.read())
        title = _text("title", b.title.strip(), MAX_TITLE)
        if not title:
            raise StorageError(400, "title must not be empty")
        namespace = b.namespace or hub.user
        if not NAME_RE.match(namespace):
            raise StorageError(400, f"invalid namespace '{namespace[:100]}'")
        hub.require_write(request, f"{namespace}/collection")
        with hub.storage.lock:
            for record in store.all():
                if record["owner"] == namespace and record["title"] == title:
                    return _json({"error": CONFLICT, "slug": record["slug"]}, 409, {"X-Error-Message": CONFLICT})
            record = {"slug": f"{namespace}/{slug_name(title)}-{secrets.token_hex(12)}", "title": title,
                      "owner": namespace, "description": _text("description", b.description, MAX_DESCRIPTION),
                      "private": bool(b.private), "theme": "blue", "position": 0, "items": []}
            store.save(record)
        return _json(as_json(request, record))

    def get(request: Request, body: BinaryIO) -> Response:
        """A collection with all its items."""
        return _json(as_json(request, readable(request, slug_of(request))))

    def update(request: Request, body: BinaryIO) -> Response:
        """Change a collection's title, description, privacy, theme or position."""
        b = parse(CollectionPatch, body.read())
        with hub.storage.lock:
            record = writable(request, slug_of(request))
            if b.title is not None:
                record["title"] = _text("title", b.title.strip(), MAX_TITLE) or record["title"]
            if b.description is not None:
                record["description"] = _text("description", b.description, MAX_DESCRIPTION)
            for key in ("private", "theme", "position"):
                if getattr(b, key) is not None:
                    record[key] = getattr(b, key)
            store.save(record)
        return _json({"success": True, "data": as_json(request, record)})

    def delete(request: Request, body: BinaryIO) -> Response:
        """Delete a collection."""
        with hub.storage.lock:
            writable(request, slug_of(request))
            store.delete(slug_of(request))
        return _json({})

    def add_item(request: Request, body: BinaryIO) -> Response:
        """Add a model to a collection (409 when it is in it already)."""
        b = parse(NewItem, body.read())
        if b.item.type != "model":
            raise StorageError(400, "this Hub stores model repos only: items must have type 'model'")
        note = _text("note", b.note, MAX_NOTE)
        with hub.storage.lock:
            record = writable(request, slug_of(request))
            repo = hub.get_readable(request, b.item.id)
            if any(i["id"] == repo.repo_id for i in record["items"]):
                raise StorageError(409, f"{repo.repo_id} is already in the collection")
            if len(record["items"]) >= MAX_ITEMS:
                raise StorageError(400, f"a collection holds at most {MAX_ITEMS} items")
            record["items"].append({"_id": secrets.token_hex(12), "id": repo.repo_id, "type": "model",
                                    "position": max([i["position"] for i in record["items"]], default=-1) + 1,
                                    **({"note": {"text": note, "html": note}} if note else {})})
            store.save(record)
        return _json(as_json(request, record))

    def item(request: Request, record: dict[str, Any]) -> dict[str, Any]:
        found = [i for i in record["items"] if i["_id"] == request.path_params["item"]]
        if not found:
            raise StorageError(404, f"Item {request.path_params['item'][:40]} not found in {record['slug']}")
        return found[0]

    def update_item(request: Request, body: BinaryIO) -> Response:
        """Change an item's note or position (the others move to make room)."""
        b = parse(ItemPatch, body.read())
        note = _text("note", b.note, MAX_NOTE)
        with hub.storage.lock:
            record = writable(request, slug_of(request))
            it = item(request, record)
            if b.note is not None:
                it["note"] = {"text": note, "html": note}
            if b.position is not None:
                rest = [i for i in sorted(record["items"], key=lambda i: i["position"]) if i is not it]
                rest.insert(max(0, min(b.position, len(rest))), it)
                for n, i in enumerate(rest):
                    i["position"] = n
            store.save(record)
        return _json({"success": True})

    def delete_item(request: Request, body: BinaryIO) -> Response:
        """Remove an item from a collection."""
        with hub.storage.lock:
            record = writable(request, slug_of(request))
            it = item(request, record)
            record["items"] = [i for i in record["items"] if i is not it]
            store.save(record)
        return _json({"success": True})

    c, get_, post, patch, delete_ = "/api/collections", ("GET",), ("POST",), ("PATCH",), ("DELETE",)
    one, items = c + "/{ns}/{slug}", c + "/{ns}/{slug}/items"
    return [
        Endpoint(get_, c, list_collections, query=("owner", "item", "sort", "limit")),
        Endpoint(post, c, create, NewCollection),
        Endpoint(get_, one, get),
        Endpoint(patch, one, update, CollectionPatch),
        Endpoint(delete_, one, delete),
        Endpoint(post, items, add_item, NewItem),
        Endpoint(patch, items + "/{item}", update_item, ItemPatch),
        Endpoint(delete_, items + "/{item}", delete_item),
    ]
