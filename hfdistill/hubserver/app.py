"""The Hub HTTP API that the unmodified `huggingface_hub` client and `transformers.from_pretrained` use for models.

Each route answers with the JSON shapes and headers read by huggingface_hub 2.x (`hf_api.py`, `_commit_api.py`,
`lfs.py`, `file_download.py`): repo create/delete/info, preupload, LFS batch + signed PUT, ndjson commit, tree,
paths-info, refs, commit history, branches, tags, resolve (with X-Repo-Commit, ETag/X-Linked-Etag, Content-Length,
Range) and the model listing. Errors carry `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound) so the
client raises its typed exceptions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hfdistill.hubserver.faults import FaultMiddleware, Faults
from hfdistill.hubserver.storage import (
    Commit,
    FileEntry,
    HubStorage,
    Operation,
    RepoRecord,
    StorageError,
    is_lfs_path,
)

DEFAULT_USER = "local"


def error(status: int, message: str, code: str | None = None) -> JSONResponse:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def card_metadata(storage: HubStorage, commit: Commit) -> dict[str, Any] | None:
    """The YAML metadata of the commit's README.md, as the Hub exposes it in `cardData`."""
    entry = commit.files.get("README.md")
    if entry is None:
        return None
    from huggingface_hub import RepoCard

    try:
        return RepoCard(storage.read_object(entry.sha256).decode("utf-8")).data.to_dict() or None
    except Exception:  # a malformed card is the author's business; the API still answers
        return None


def derived_tags(card: dict[str, Any] | None) -> list[str]:
    """Tags the Hub derives from card metadata, so `list_models(filter=…)` finds models by them."""
    if not card:
        return []
    tags = list(card.get("tags") or [])
    for key in ("library_name", "pipeline_tag"):
        if card.get(key):
            tags.append(str(card[key]))
    for ds in card.get("datasets") or []:
        tags.append(f"dataset:{ds}")
    if card.get("license"):
        tags.append(f"license:{card['license']}")
    bases = card.get("base_model") or []
    for base in [bases] if isinstance(bases, str) else bases:
        tags.append(f"base_model:{base}")
        if card.get("base_model_relation"):
            tags.append(f"base_model:{card['base_model_relation']}:{base}")
    return list(dict.fromkeys(tags))


class HubApp:
    """Route handlers bound to one storage folder, token set and fault list."""

    def __init__(self, storage: HubStorage, tokens: set[str] | None, faults: Faults | None, user: str):
        self.storage = storage
        self.tokens = set(tokens) if tokens else None
        self.faults = faults
        self.user = user
        self.secret = secrets.token_bytes(32)  # signs LFS upload URLs (the PUT carries no token)

    # ---- auth --------------------------------------------------------------------------------------------------
    def token_of(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def authorized(self, request: Request) -> bool:
        return self.tokens is None or self.token_of(request) in self.tokens

    def require_write(self, request: Request) -> JSONResponse | None:
        if self.authorized(request):
            return None
        if self.token_of(request) is None:
            return error(401, "Authorization header is required: pass a write token")
        return error(401, "Invalid credentials in Authorization header")

    def readable(self, request: Request, repo: RepoRecord) -> bool:
        return not repo.private or self.authorized(request)

    def get_readable(self, request: Request, repo_id: str) -> RepoRecord:
        repo = self.storage.get_repo(repo_id)
        if not self.readable(request, repo):
            raise StorageError(401, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    # ---- helpers -----------------------------------------------------------------------------------------------
    @staticmethod
    def repo_id(request: Request) -> str:
        return f"{request.path_params['ns']}/{request.path_params['name']}"

    @staticmethod
    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def sign(self, repo_id: str, oid: str, size: int) -> str:
        return hmac.new(self.secret, f"{repo_id}:{oid}:{size}".encode(), hashlib.sha256).hexdigest()

    def model_json(self, request: Request, repo: RepoRecord, commit: Commit, full: bool = True,
                   blobs: bool = False, with_card: bool = True) -> dict[str, Any]:
        card = card_metadata(self.storage, commit)
        out: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
            "modelId": repo.repo_id, "author": repo.namespace, "sha": commit.id, "lastModified": commit.date,
            "createdAt": repo.created_at, "private": repo.private, "gated": False, "disabled": False,
            "downloads": 0, "likes": 0, "tags": derived_tags(card),
            "pipeline_tag": (card or {}).get("pipeline_tag"), "library_name": (card or {}).get("library_name"),
        }
        if with_card and card:
            out["cardData"] = card
            if card.get("model-index"):
                out["model-index"] = card["model-index"]
        if "config.json" in commit.files and full:
            try:
                cfg = json.loads(self.storage.read_object(commit.files["config.json"].sha256))
                out["config"] = {k: cfg[k] for k in ("architectures", "model_type") if k in cfg}
            except ValueError:
                pass
        if full:
            out["siblings"] = [self.sibling(e, blobs) for e in sorted(commit.files.values(), key=lambda e: e.path)]
        return out

    @staticmethod
    def sibling(entry: FileEntry, blobs: bool) -> dict[str, Any]:
        s: dict[str, Any] = {"rfilename": entry.path}
        if blobs:
            s.update(size=entry.size, blobId=entry.blob_id)
            if entry.lfs:
                s["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": entry.pointer_size}
        return s

    @staticmethod
    def tree_item(entry: FileEntry) -> dict[str, Any]:
        item: dict[str, Any] = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": entry.path}
        if entry.lfs:
            item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
        return item

    # ---- account / misc ----------------------------------------------------------------------------------------
    async def whoami(self, request: Request) -> Response:
        if self.tokens is not None and self.token_of(request) not in self.tokens:
            return error(401, "Invalid credentials in Authorization header")
        return JSONResponse({"type": "user", "id": "0", "name": self.user, "fullname": self.user, "orgs": [],
                             "auth": {"type": "access_token",
                                      "accessToken": {"displayName": "hfdistill-local", "role": "write"}}})

    async def validate_yaml(self, request: Request) -> Response:
        body = await request.json()
        from huggingface_hub import RepoCard

        try:
            RepoCard(body.get("content", ""))
        except Exception as exc:
            return JSONResponse({"errors": [{"message": str(exc).splitlines()[0]}], "warnings": []}, status_code=400)
        return JSONResponse({"errors": [], "warnings": []})

    # ---- repos -------------------------------------------------------------------------------------------------
    async def list_models(self, request: Request) -> Response:
        q = request.query_params
        search, author = q.get("search"), q.get("author")
        filters = q.getlist("filter")
        want_card = q.get("cardData") in ("True", "true", "1") or q.get("full") in ("True", "true", "1")
        out = []
        for repo in self.storage.list_repos():
            if not self.readable(request, repo):
                continue
            if search and search.lower() not in repo.repo_id.lower():
                continue
            if author and repo.namespace != author:
                continue
            commit = self.storage.resolve(repo.repo_id, None)
            item = self.model_json(request, repo, commit, full=q.get("full") in ("True", "true", "1"),
                                   with_card=want_card)
            if filters and not all(f in item["tags"] or f == repo.repo_id for f in filters):
                continue
            if q.get("pipeline_tag") and item["pipeline_tag"] != q["pipeline_tag"]:
                continue
            out.append(item)
        if q.get("sort") in ("lastModified", "createdAt"):
            out.sort(key=lambda m: m[q["sort"]], reverse=q.get("direction") != "1")
        if q.get("limit"):
            out = out[: int(q["limit"])]
        return JSONResponse(out)

    async def create_repo(self, request: Request) -> Response:
        if denied := self.require_write(request):
            return denied
        body = await request.json()
        if body.get("type") not in (None, "model"):
            return error(400, "this Hub stores model repos only")
        ns = body.get("organization") or self.user
        repo_id = f"{ns}/{body.get('name', '')}"
        private = body.get("private")
        if private is None:
            private = body.get("visibility") == "private"
        url = f"{self.base(request)}/{repo_id}"
        try:
            self.storage.create_repo(repo_id, bool(private), self.user)
        except StorageError as exc:
            if exc.status != 409:
                raise
            # the Hub names the existing repo in its 409; `create_repo(exist_ok=True)` reads `url` from it
            return JSONResponse({"error": str(exc), "url": url}, status_code=409,
                                headers={"X-Error-Message": str(exc)})
        return JSONResponse({"url": url, "name": repo_id, "id": repo_id})

    async def delete_repo(self, request: Request) -> Response:
        if denied := self.require_write(request):
            return denied
        body = await request.json()
        ns = body.get("organization") or self.user
        self.storage.delete_repo(f"{ns}/{body.get('name', '')}")
        return Response(status_code=200)

    async def settings(self, request: Request) -> Response:
        if denied := self.require_write(request):
            return denied
        body = await request.json()
        repo_id = self.repo_id(request)
        self.storage.get_repo(repo_id)
        if "private" in body or "visibility" in body:
            self.storage.set_private(repo_id, bool(body.get("private", body.get("visibility") == "private")))
        return JSONResponse({})

    async def model_info(self, request: Request) -> Response:
        repo = self.get_readable(request, self.repo_id(request))
        commit = self.storage.resolve(repo.repo_id, request.path_params.get("rev"))
        blobs = request.query_params.get("blobs") in ("True", "true", "1")
        return JSONResponse(self.model_json(request, repo, commit, blobs=blobs))

    async def tree(self, request: Request) -> Response:
        repo = self.get_readable(request, self.repo_id(request))
        commit = self.storage.resolve(repo.repo_id, request.path_params["rev"])
        prefix = request.path_params.get("path", "").strip("/")
        recursive = request.query_params.get("recursive") in ("True", "true", "1")
        files = [e for p, e in sorted(commit.files.items()) if not prefix or p.startswith(prefix + "/")]
        if prefix and not files:
            if prefix in commit.files:
                return JSONResponse([self.tree_item(commit.files[prefix])])
            return error(404, f"Entry not found: {prefix}", "EntryNotFound")
        out: list[dict[str, Any]] = []
        seen_dirs: set[str] = set()
        for entry in files:
            rel = entry.path[len(prefix) + 1:] if prefix else entry.path
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                d = "/".join(([prefix] if prefix else []) + parts[:depth])
                if d not in seen_dirs and (recursive or depth == 1):
                    seen_dirs.add(d)
                    out.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0,
                                "path": d})
            if recursive or len(parts) == 1:
                out.append(self.tree_item(entry))
        return JSONResponse(out)

    async def paths_info(self, request: Request) -> Response:
        repo = self.get_readable(request, self.repo_id(request))
        commit = self.storage.resolve(repo.repo_id, request.path_params["rev"])
        raw = (await request.body()).decode()
        if request.headers.get("content-type", "").startswith("application/json"):
            paths = json.loads(raw or "{}").get("paths", [])
        else:
            paths = parse_qs(raw).get("paths", [])
        out = []
        for p in paths:
            p = p.strip("/")
            if p in commit.files:
                out.append(self.tree_item(commit.files[p]))
            elif any(f.startswith(p + "/") for f in commit.files):
                out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "path": p})
        return JSONResponse(out)

    async def refs(self, request: Request) -> Response:
        repo = self.get_readable(request, self.repo_id(request))
        return JSONResponse({
            "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c}
                         for n, c in sorted(repo.refs["branches"].items())],
            "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": c}
                     for n, c in sorted(repo.refs["tags"].items())],
            "converts": [], "pullRequests": [],
        })

    async def commits(self, request: Request) -> Response:
        repo = self.get_readable(request, self.repo_id(request))
        return JSONResponse([
            {"id": c.id, "title": c.title, "message": c.message, "date": c.date, "authors": [{"user": c.author}]}
            for c in self.storage.history(repo.repo_id, request.path_params["rev"])
        ])

    async def branch(self, request: Request) -> Response:
        if denied := self.require_write(request):
            return denied
        repo_id, name = self.repo_id(request), request.path_params["ref"]
        if request.method == "DELETE":
            self.storage.delete_ref(repo_id, "branches", name)
        else:
            body = json.loads((await request.body()) or b"{}")
            self.storage.set_ref(repo_id, "branches", name, body.get("startingPoint"))
        return JSONResponse({})

    async def tag(self, request: Request) -> Response:
        if denied := self.require_write(request):
            return denied
        repo_id = self.repo_id(request)
        if request.method == "DELETE":
            self.storage.delete_ref(repo_id, "tags", request.path_params["ref"])
        else:
            body = await request.json()
            self.storage.set_ref(repo_id, "tags", body.get("tag", ""), request.path_params["ref"])
        return JSONResponse({})

    # ---- uploads -----------------------------------------------------------------------------------------------
    async def preupload(self, request: Request) -> Response:
        if denied := self.require_write(request):
            return denied
        repo_id = self.repo_id(request)
        self.storage.get_repo(repo_id)
        try:
            head: Commit | None = self.storage.resolve(repo_id, request.path_params["rev"])
        except StorageError as exc:
            if exc.code != "RevisionNotFound":
                raise
            head = None
        body = await request.json()
        files = []
        for f in body.get("files", []):
            path, size = f["path"], int(f.get("size", 0))
            lfs = is_lfs_path(path, size, base64.b64decode(f.get("sample", "")))
            remote = head.files.get(path) if head else None
            oid = None if remote is None else (remote.sha256 if lfs else remote.blob_id)
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        return JSONResponse({"files": files, "commitOid": head.id if head else None})

    async def lfs_batch(self, request: Request) -> Response:
        if denied := self.require_write(request):
            return denied
        repo_id = self.repo_id(request)
        self.storage.get_repo(repo_id)
        body = json.loads(await request.body())
        if body.get("operation") != "upload":
            return error(400, "only LFS uploads are supported; download through /resolve")
        objects = []
        for obj in body.get("objects", []):
            oid, size = str(obj["oid"]), int(obj["size"])
            item: dict[str, Any] = {"oid": oid, "size": size}
            if not self.storage.has_object(oid):
                href = (f"{self.base(request)}/_lfs/{repo_id}/{oid}?size={size}"
                        f"&sig={self.sign(repo_id, oid, size)}")
                item.update(authenticated=True, actions={"upload": {"href": href, "header": {}}})
            objects.append(item)
        return JSONResponse({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                            media_type="application/vnd.git-lfs+json")

    async def lfs_put(self, request: Request) -> Response:
        repo_id, oid = self.repo_id(request), request.path_params["oid"]
        try:
            size = int(request.query_params.get("size", "-1"))
        except ValueError:
            size = -1
        if not hmac.compare_digest(request.query_params.get("sig", ""), self.sign(repo_id, oid, size)):
            return error(403, "invalid or expired upload signature")
        tmp, f = self.storage.new_upload()
        try:
            with f:
                async for chunk in request.stream():
                    f.write(chunk)
            self.storage.finish_upload(tmp, oid, size)
        finally:
            tmp.unlink(missing_ok=True)  # gone already when the upload succeeded
        return Response(status_code=200, headers={"ETag": f'"{oid}"'})

    async def commit(self, request: Request) -> Response:
        if denied := self.require_write(request):
            return denied
        repo_id = self.repo_id(request)
        if request.query_params.get("create_pr") == "1":
            return error(400, "pull requests are not supported by the embedded Hub")
        header: dict[str, Any] = {}
        ops: list[Operation] = []
        for line in (await request.body()).splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                content = base64.b64decode(value["content"]) if value.get("encoding") == "base64" \
                    else value["content"].encode()
                ops.append(Operation("file", value["path"], content=content))
            elif key == "lfsFile":
                ops.append(Operation("lfsFile", value["path"], oid=value["oid"], size=value.get("size")))
            elif key in ("deletedFile", "deletedFolder"):
                ops.append(Operation(key, value["path"]))
            else:
                return error(400, f"unknown commit line key '{key}'")
        title = header.get("summary") or "Upload files"
        commit = self.storage.commit(repo_id, request.path_params["rev"], ops, title,
                                     header.get("description", ""), self.user, header.get("parentCommit"))
        return JSONResponse({"success": True, "commitOid": commit.id, "pullRequestUrl": None,
                             "commitUrl": f"{self.base(request)}/{repo_id}/commit/{commit.id}"})

    # ---- downloads ---------------------------------------------------------------------------------------------
    async def resolve(self, request: Request) -> Response:
        repo = self.get_readable(request, self.repo_id(request))
        commit = self.storage.resolve(repo.repo_id, request.path_params["rev"])
        path = request.path_params["path"]
        entry = commit.files.get(path)
        if entry is None:
            return error(404, f"Entry not found: {path}", "EntryNotFound")
        headers = {
            "X-Repo-Commit": commit.id, "ETag": f'"{entry.etag}"', "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(Path(path).name)}",
        }
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        start, end = 0, entry.size - 1
        status = 200
        rng = request.headers.get("range", "")
        if rng.startswith("bytes=") and entry.size:
            first, _, last = rng[6:].split(",")[0].partition("-")
            try:
                if first:
                    start, end = int(first), int(last) if last else entry.size - 1
                else:
                    start, end = max(0, entry.size - int(last)), entry.size - 1
            except ValueError:
                return error(416, "invalid range")
            end = min(end, entry.size - 1)
            if start > end:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{entry.size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        length = max(0, end - start + 1) if entry.size else 0
        headers["Content-Length"] = str(length)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type="application/octet-stream")
        return StreamingResponse(self.read_range(entry, start, length), status_code=status, headers=headers,
                                 media_type="application/octet-stream")

    def read_range(self, entry: FileEntry, start: int, length: int) -> Iterator[bytes]:
        with open(self.storage.object_path(entry.sha256), "rb") as f:
            f.seek(start)
            while length > 0:
                chunk = f.read(min(length, 1 << 20))
                if not chunk:
                    break
                length -= len(chunk)
                yield chunk


def _wrap(handler):
    """Turn storage errors into the Hub's error answers."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except StorageError as exc:
            return error(exc.status, str(exc), exc.code)
        except (ValueError, KeyError) as exc:
            return error(400, f"malformed request: {exc}")

    return endpoint


def create_app(storage: Path, tokens: set[str] | None = None, faults: Faults | None = None,
               user: str = DEFAULT_USER) -> Starlette:
    """A Hub-compatible app storing its data under `storage`.

    tokens: accepted write tokens (None: anyone may write — only for a server bound to 127.0.0.1).
    faults: optional fault injection for tests.
    """
    from hfdistill.hubserver import web

    hub = HubApp(HubStorage(Path(storage)), tokens, faults, user)
    m = "/api/models/{ns}/{name}"
    routes = [
        Route("/api/whoami-v2", _wrap(hub.whoami)),
        Route("/api/validate-yaml", _wrap(hub.validate_yaml), methods=["POST"]),
        Route("/api/models", _wrap(hub.list_models)),
        Route("/api/repos/create", _wrap(hub.create_repo), methods=["POST"]),
        Route("/api/repos/delete", _wrap(hub.delete_repo), methods=["DELETE"]),
        Route(m, _wrap(hub.model_info)),
        Route(m + "/revision/{rev}", _wrap(hub.model_info)),
        Route(m + "/settings", _wrap(hub.settings), methods=["PUT"]),
        Route(m + "/tree/{rev}", _wrap(hub.tree)),
        Route(m + "/tree/{rev}/{path:path}", _wrap(hub.tree)),
        Route(m + "/paths-info/{rev}", _wrap(hub.paths_info), methods=["POST"]),
        Route(m + "/refs", _wrap(hub.refs)),
        Route(m + "/commits/{rev}", _wrap(hub.commits)),
        Route(m + "/branch/{ref}", _wrap(hub.branch), methods=["POST", "DELETE"]),
        Route(m + "/tag/{ref}", _wrap(hub.tag), methods=["POST", "DELETE"]),
        Route(m + "/preupload/{rev}", _wrap(hub.preupload), methods=["POST"]),
        Route(m + "/commit/{rev}", _wrap(hub.commit), methods=["POST"]),
        Route("/{ns}/{name}.git/info/lfs/objects/batch", _wrap(hub.lfs_batch), methods=["POST"]),
        Route("/_lfs/{ns}/{name}/{oid}", _wrap(hub.lfs_put), methods=["PUT"]),
        Route("/{ns}/{name}/resolve/{rev}/{path:path}", _wrap(hub.resolve), methods=["GET", "HEAD"]),
        *web.routes(hub),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(FaultMiddleware, faults=faults)])
    app.state.hub = hub
    return app


def serve(host: str = "127.0.0.1", port: int = 8787, storage: Path | str = "hub-storage",
          token: str | None = None) -> None:
    """Run the embedded Hub in the foreground (`hfdistill hub serve`).

    With `token` (or HFDISTILL_HUB_TOKEN) writes need that token; without one, the server binds only to a loopback
    address, where anyone on the machine may write.
    """
    import uvicorn

    token = token or os.environ.get("HFDISTILL_HUB_TOKEN") or None
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        from hfdistill.errors import HubError

        raise HubError(f"refusing to serve on {host} without a token: pass --token or bind to 127.0.0.1")
    app = create_app(Path(storage), {token} if token else None)
    print(f"Embedded Hub on http://{host}:{port}  (storage: {Path(storage).resolve()})", flush=True)
    print(f"  browse the models: http://{host}:{port}/   use it: HF_ENDPOINT=http://{host}:{port}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
