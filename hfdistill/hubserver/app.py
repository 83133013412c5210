"""The Hub HTTP API that the unmodified `huggingface_hub` client and `transformers.from_pretrained` use for models.

Each route answers with the JSON shapes and headers read by huggingface_hub 2.x (`hf_api.py`, `_commit_api.py`,
`lfs.py`, `file_download.py`): repo create/delete/info, preupload, LFS batch + signed PUT, ndjson commit, tree,
paths-info, refs, commit history, branches, tags, resolve (with X-Repo-Commit, ETag/X-Linked-Etag, Content-Length,
Range) and the model listing. Errors carry `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound) so the
client raises its typed exceptions.

Handlers are plain functions run in a thread pool (storage work is disk work: it must not stall the event loop);
request bodies are read first, with a size cap, into a spooled temporary file, so a big commit costs disk, not RAM.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator
from urllib.parse import parse_qs, quote, unquote_to_bytes

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hfdistill.hubserver import hub_collections, metadata, web
from hfdistill.hubserver.faults import FaultMiddleware, Faults
from hfdistill.hubserver.openapi import (
    COMMIT_LINES,
    NDJSON,
    CommitHeader,
    CreateRepo,
    DeleteRepo,
    Endpoint,
    LfsBatch,
    NewBranch,
    NewTag,
    PathsInfo,
    Preupload,
    RepoSettings,
    YamlDocument,
    document,
    parse,
)
from hfdistill.hubserver.storage import (
    LFS_MIN_SIZE,
    SHA256_RE,
    Commit,
    FileEntry,
    HubStorage,
    RepoRecord,
    StorageError,
    check_path,
    is_lfs_path,
)
from hfdistill.hubserver.webhooks import WebhookSender, WebhookTarget, announce_commit, head_of

DEFAULT_USER = "local"
JSON_BODY_LIMIT = 8 << 20             # every body but a commit's and an LFS upload's
DEFAULT_MAX_COMMIT_BODY = 256 << 20   # a commit's NDJSON (inline files are base64 in it)
SPOOL_IN_MEMORY = 1 << 20             # bodies above this go to a temporary file


def header_safe(text: str, limit: int = 1000) -> str:
    """A header value made of printable ASCII only. Why: error messages quote the request (repo ids, revisions,
    paths); a NUL or newline in a header makes h11 drop the connection, a non-Latin-1 character makes it fail to
    encode. The JSON body keeps the exact text; the header gets it escaped."""
    ascii_text = text.encode("ascii", "backslashreplace").decode("ascii")
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", ascii_text)[:limit]


class HubJSON(JSONResponse):
    """JSON with non-ASCII escaped: any stored string (even one with a lone surrogate) renders."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error(status: int, message: str, code: str | None = None, **extra: Any) -> JSONResponse:
    headers = {"X-Error-Message": header_safe(message)}
    if code:
        headers["X-Error-Code"] = code
    return HubJSON({"error": message, **extra}, status_code=status, headers=headers)


def derived_tags(card: dict[str, Any] | None) -> list[str]:
    """Tags the Hub derives from card metadata, so `list_models(filter=…)` finds models by them."""
    if not card:
        return []
    tags = [str(t) for t in metadata.as_list(card.get("tags"))]
    for key in ("library_name", "pipeline_tag"):
        if card.get(key):
            tags.append(str(card[key]))
    tags += [f"dataset:{ds}" for ds in metadata.as_list(card.get("datasets"))]
    if card.get("license"):
        tags.append(f"license:{card['license']}")
    for base in metadata.as_list(card.get("base_model")):
        tags.append(f"base_model:{base}")
        if card.get("base_model_relation"):
            tags.append(f"base_model:{card['base_model_relation']}:{base}")
    return list(dict.fromkeys(tags))


def unslash(value: str) -> str:
    """A path parameter with its encoded slashes restored (see KeepEncodedSlashes)."""
    return value.replace("%2F", "/")


class KeepEncodedSlashes:
    """Route on the request path with `%2F` kept encoded. Why: the client sends a revision such as
    `refs/heads/main` as one path segment, `refs%2Fheads%2Fmain`; routing on the decoded path would split it."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive, send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw and re.search(rb"%2[fF]", raw):
            parts = re.split(rb"%2[fF]", raw)
            scope = {**scope, "path": "%2F".join(unquote_to_bytes(p).decode("utf-8", "replace") for p in parts)}
        await self.app(scope, receive, send)


class HubApp:
    """Route handlers bound to one storage folder, token set and fault list."""

    def __init__(self, storage: HubStorage, tokens: set[str] | None, faults: Faults | None, user: str,
                 orgs: tuple[str, ...] = (), lfs_threshold: int = LFS_MIN_SIZE,
                 max_commit_body: int = DEFAULT_MAX_COMMIT_BODY, webhooks: tuple[WebhookTarget, ...] = ()):
        self.storage = storage
        self.webhooks = WebhookSender(tuple(webhooks)) if webhooks else None  # posts events after commits
        self.tokens = set(tokens) if tokens else None
        self.faults = faults
        self.user = user
        self.orgs = tuple(orgs)
        self.lfs_threshold = lfs_threshold
        self.max_commit_body = max_commit_body
        self.secret = secrets.token_bytes(32)  # signs LFS upload URLs (the PUT carries no token)
        self.schema: dict[str, Any] = {}

    # ---- auth --------------------------------------------------------------------------------------------------
    def token_of(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def authorized(self, request: Request) -> bool:
        return self.tokens is None or self.token_of(request) in self.tokens

    @property
    def namespaces(self) -> list[str]:
        """Where a token holder may write: the names whoami gives (the user and its orgs)."""
        return [self.user, *self.orgs]

    def require_write(self, request: Request, repo_id: str) -> None:
        """Writes need a valid token (when tokens are configured) and, then, a namespace that whoami names."""
        if self.tokens is None:
            return  # a loopback-only server without tokens: anyone on the machine may write anywhere
        if self.token_of(request) is None:
            raise StorageError(401, "Authorization header is required: pass a write token")
        if not self.authorized(request):
            raise StorageError(401, "Invalid credentials in Authorization header")
        ns = repo_id.partition("/")[0]
        if ns not in self.namespaces:
            raise StorageError(403, f"this token may write only to the namespace(s) {', '.join(self.namespaces)} "
                                    f"(whoami names them), not to '{ns}'")

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
    def rev(request: Request, key: str = "rev") -> str:
        return unslash(request.path_params[key])

    @staticmethod
    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def sign(self, repo_id: str, oid: str, size: int) -> str:
        return hmac.new(self.secret, f"{repo_id}:{oid}:{size}".encode(), hashlib.sha256).hexdigest()

    def model_json(self, request: Request, repo: RepoRecord, commit: Commit, full: bool = True,
                   blobs: bool = False, with_card: bool = True) -> dict[str, Any]:
        card = metadata.card_metadata(self.storage, commit)
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
                cfg = json.loads(self.storage.read_object(commit.files["config.json"].sha256, 1 << 20))
            except (OSError, ValueError):
                cfg = None
            if isinstance(cfg, dict):
                out["config"] = {k: cfg[k] for k in ("architectures", "model_type") if k in cfg}
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
    def whoami(self, request: Request, body: BinaryIO) -> Response:
        """Who the token is: the user and the orgs it may write to."""
        if self.tokens is not None and self.token_of(request) not in self.tokens:
            return error(401, "Invalid credentials in Authorization header")
        return HubJSON({"type": "user", "id": "0", "name": self.user, "fullname": self.user,
                        "orgs": [{"type": "org", "name": o, "fullname": o, "roleInOrg": "write"} for o in self.orgs],
                        "auth": {"type": "access_token",
                                 "accessToken": {"displayName": "hfdistill-local", "role": "write"}}})

    def validate_yaml(self, request: Request, body: BinaryIO) -> Response:
        """Check a README's metadata as a commit would."""
        doc = parse(YamlDocument, body.read())
        try:
            metadata.check(doc.content)
        except metadata.MetadataError as exc:
            return HubJSON({"errors": [{"message": str(exc)}], "warnings": []}, status_code=400)
        return HubJSON({"errors": [], "warnings": []})

    def openapi(self, request: Request, body: BinaryIO) -> Response:
        """This API's OpenAPI document."""
        return HubJSON(self.schema)

    # ---- repos -------------------------------------------------------------------------------------------------
    def list_models(self, request: Request, body: BinaryIO) -> Response:
        """List models (search, author, filter, sort, limit)."""
        q = request.query_params
        search, author = q.get("search"), q.get("author")
        filters = q.getlist("filter")
        full = q.get("full") in ("True", "true", "1")
        want_card = q.get("cardData") in ("True", "true", "1") or full
        limit = int(q["limit"]) if q.get("limit") else None
        out = []
        for repo in self.storage.list_repos():
            if not self.readable(request, repo):
                continue
            if search and search.lower() not in repo.repo_id.lower():
                continue
            if author and repo.namespace != author:
                continue
            try:
                commit = self.storage.resolve(repo.repo_id, None)
            except (StorageError, OSError, ValueError, KeyError):
                continue  # a repo deleted or damaged meanwhile must not hide all the others
            item = self.model_json(request, repo, commit, full=full, with_card=want_card)
            if filters and not all(f in item["tags"] or f == repo.repo_id for f in filters):
                continue
            if q.get("pipeline_tag") and item["pipeline_tag"] != q["pipeline_tag"]:
                continue
            out.append(item)
        if q.get("sort") in ("lastModified", "createdAt"):
            out.sort(key=lambda m: m[q["sort"]], reverse=q.get("direction") != "1")
        if limit is not None:
            out = out[:max(limit, 0)]
        return HubJSON(out)

    def create_repo(self, request: Request, body: BinaryIO) -> Response:
        """Create a model repo."""
        b = parse(CreateRepo, body.read())
        if b.type not in (None, "model"):
            return error(400, "this Hub stores model repos only")
        repo_id = f"{b.organization or self.user}/{b.name}"
        self.require_write(request, repo_id)
        private = b.private if b.private is not None else b.visibility == "private"
        url = f"{self.base(request)}/{repo_id}"
        try:
            self.storage.create_repo(repo_id, bool(private), self.user)
        except StorageError as exc:
            if exc.status != 409:
                raise
            # the Hub names the existing repo in its 409; `create_repo(exist_ok=True)` reads `url` from it
            return error(409, str(exc), url=url)
        return HubJSON({"url": url, "name": repo_id, "id": repo_id})

    def delete_repo(self, request: Request, body: BinaryIO) -> Response:
        """Delete a model repo."""
        b = parse(DeleteRepo, body.read())
        repo_id = f"{b.organization or self.user}/{b.name}"
        self.require_write(request, repo_id)
        self.storage.delete_repo(repo_id)
        return Response(status_code=200)

    def settings(self, request: Request, body: BinaryIO) -> Response:
        """Change a repo's visibility."""
        repo_id = self.repo_id(request)
        self.require_write(request, repo_id)
        b = parse(RepoSettings, body.read())
        self.storage.get_repo(repo_id)
        if b.private is not None or b.visibility is not None:
            self.storage.set_private(repo_id, b.private if b.private is not None else b.visibility == "private")
        return HubJSON({})

    def model_info(self, request: Request, body: BinaryIO) -> Response:
        """A model's info at a revision."""
        repo = self.get_readable(request, self.repo_id(request))
        rev = request.path_params.get("rev")
        commit = self.storage.resolve(repo.repo_id, unslash(rev) if rev else None)
        blobs = request.query_params.get("blobs") in ("True", "true", "1")
        return HubJSON(self.model_json(request, repo, commit, blobs=blobs))

    def tree(self, request: Request, body: BinaryIO) -> Response:
        """List files and folders at a revision."""
        repo = self.get_readable(request, self.repo_id(request))
        commit = self.storage.resolve(repo.repo_id, self.rev(request))
        prefix = unslash(request.path_params.get("path", "")).strip("/")
        recursive = request.query_params.get("recursive") in ("True", "true", "1")
        files = [e for p, e in sorted(commit.files.items()) if not prefix or p.startswith(prefix + "/")]
        if prefix and not files:
            if prefix in commit.files:
                return HubJSON([self.tree_item(commit.files[prefix])])
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
        return HubJSON(out)

    def paths_info(self, request: Request, body: BinaryIO) -> Response:
        """Info on given paths at a revision."""
        repo = self.get_readable(request, self.repo_id(request))
        commit = self.storage.resolve(repo.repo_id, self.rev(request))
        raw = body.read()
        if request.headers.get("content-type", "").startswith("application/json"):
            b = parse(PathsInfo, raw)
        else:
            form = parse_qs(raw.decode())
            b = parse(PathsInfo, {"paths": form.get("paths", []), "expand": form.get("expand", ["false"])[0]})
        out = []
        for p in b.paths:
            p = p.strip("/")
            if p in commit.files:
                out.append(self.tree_item(commit.files[p]))
            elif any(f.startswith(p + "/") for f in commit.files):
                out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "path": p})
        return HubJSON(out)

    def refs(self, request: Request, body: BinaryIO) -> Response:
        """Branches and tags (tags with their message)."""
        repo = self.get_readable(request, self.repo_id(request))
        messages = repo.refs["tag_messages"]
        return HubJSON({
            "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c}
                         for n, c in sorted(repo.refs["branches"].items())],
            "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": c,
                      **({"message": messages[n]} if n in messages else {})}
                     for n, c in sorted(repo.refs["tags"].items())],
            "converts": [], "pullRequests": [],
        })

    def commits(self, request: Request, body: BinaryIO) -> Response:
        """Commit history of a revision."""
        repo = self.get_readable(request, self.repo_id(request))
        return HubJSON([
            {"id": c.id, "title": c.title, "message": c.message, "date": c.date, "authors": [{"user": c.author}]}
            for c in self.storage.history(repo.repo_id, self.rev(request))
        ])

    def branch(self, request: Request, body: BinaryIO) -> Response:
        """Create or delete a branch."""
        repo_id, name = self.repo_id(request), self.rev(request, "ref")
        self.require_write(request, repo_id)
        if request.method == "DELETE":
            self.storage.delete_ref(repo_id, "branches", name)
        else:
            b = parse(NewBranch, body.read())
            self.storage.set_ref(repo_id, "branches", name, b.startingPoint)
        return HubJSON({})

    def tag(self, request: Request, body: BinaryIO) -> Response:
        """Create a tag at a revision (POST), or delete a tag (DELETE)."""
        repo_id = self.repo_id(request)
        self.require_write(request, repo_id)
        if request.method == "DELETE":
            self.storage.delete_ref(repo_id, "tags", self.rev(request, "ref"))
        else:
            b = parse(NewTag, body.read())
            self.storage.set_ref(repo_id, "tags", b.tag, self.rev(request, "ref"), message=b.message)
        return HubJSON({})

    # ---- uploads -----------------------------------------------------------------------------------------------
    def preupload(self, request: Request, body: BinaryIO) -> Response:
        """Which files go inline and which through LFS."""
        repo_id = self.repo_id(request)
        self.require_write(request, repo_id)
        self.storage.get_repo(repo_id)
        try:
            head: Commit | None = self.storage.resolve(repo_id, self.rev(request))
        except StorageError as exc:
            if exc.code != "RevisionNotFound":
                raise
            head = None
        files = []
        for f in parse(Preupload, body.read()).files:
            check_path(f.path)  # refuse a bad path before the client uploads its content
            lfs = is_lfs_path(f.path, f.size, base64.b64decode(f.sample), self.lfs_threshold)
            remote = head.files.get(f.path) if head else None
            oid = None if remote is None else (remote.sha256 if lfs else remote.blob_id)
            files.append({"path": f.path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        return HubJSON({"files": files, "commitOid": head.id if head else None})

    def lfs_batch(self, request: Request, body: BinaryIO) -> Response:
        """Git LFS batch API: signed upload URLs for the objects not stored yet."""
        repo_id = self.repo_id(request)
        self.require_write(request, repo_id)
        self.storage.get_repo(repo_id)
        b = parse(LfsBatch, body.read())
        if b.operation != "upload":
            return error(400, "only LFS uploads are supported; download through /resolve")
        objects = []
        for obj in b.objects:
            if not SHA256_RE.match(obj.oid):
                return error(400, f"invalid LFS oid {obj.oid[:80]!r}: expected a sha256 in hex")
            item: dict[str, Any] = {"oid": obj.oid, "size": obj.size}
            if not self.storage.has_object(obj.oid):
                href = (f"{self.base(request)}/_lfs/{repo_id}/{obj.oid}?size={obj.size}"
                        f"&sig={self.sign(repo_id, obj.oid, obj.size)}")
                item.update(authenticated=True, actions={"upload": {"href": href, "header": {}}})
            objects.append(item)
        return HubJSON({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                       media_type="application/vnd.git-lfs+json")

    async def lfs_put(self, request: Request) -> Response:
        """Upload one LFS object (URL signed by the batch answer)."""
        repo_id, oid = self.repo_id(request), request.path_params["oid"]
        try:
            size = int(request.query_params.get("size", "-1"))
        except ValueError:
            size = -1
        if not hmac.compare_digest(request.query_params.get("sig", "").encode(),
                                   self.sign(repo_id, oid, size).encode()):
            return error(403, "invalid or expired upload signature")
        tmp, f = self.storage.new_upload()
        try:
            with f:
                received = 0
                async for chunk in request.stream():  # straight to disk, never whole in memory
                    received += len(chunk)
                    if received > size:
                        raise StorageError(400, f"upload is larger than the announced {size} bytes")
                    f.write(chunk)
            await run_in_threadpool(self.storage.finish_upload, tmp, oid, size)
        finally:
            tmp.unlink(missing_ok=True)  # gone already when the upload succeeded
        return Response(status_code=200, headers={"ETag": f'"{oid}"'})

    def commit(self, request: Request, body: BinaryIO) -> Response:
        """Commit NDJSON lines (header, inline files, LFS files, deletions) to a branch."""
        repo_id = self.repo_id(request)
        self.require_write(request, repo_id)
        if request.query_params.get("create_pr") in ("1", "true", "True"):
            return error(400, "pull requests are not supported by the embedded Hub")
        self.storage.get_repo(repo_id)  # a 404 before any blob is stored
        header, ops = CommitHeader(), []
        max_line = self.lfs_threshold * 4 // 3 + (64 << 10)  # one base64 inline file just under the threshold
        while line := body.readline(max_line + 1):
            if len(line) > max_line:
                raise StorageError(413, f"a commit line is longer than {max_line} bytes: files of "
                                        f"{self.lfs_threshold} bytes or more must be uploaded through LFS")
            if not line.strip():
                continue
            item = json.loads(line)
            key = item.get("key") if isinstance(item, dict) else None
            if not isinstance(key, str) or key not in COMMIT_LINES:
                return error(400, f"unknown commit line key {str(key)[:80]!r}")
            value = parse(COMMIT_LINES[key], item.get("value"))
            if key == "header":
                header = value
            elif key == "file":
                data = base64.b64decode(value.content, validate=True) if value.encoding == "base64" \
                    else value.content.encode()
                if len(data) >= self.lfs_threshold:
                    raise StorageError(413, f"'{value.path[:200]}' is {len(data)} bytes inline: files of "
                                            f"{self.lfs_threshold} bytes or more must be uploaded through LFS "
                                            f"(preupload answers uploadMode 'lfs' for them)")
                ops.append(self.storage.add_inline(value.path, data))
            elif key == "lfsFile":
                ops.append(self.storage.add_lfs(value.path, value.oid, value.size))
            else:
                ops.append(self.storage.delete(key, value.path))
        branch = self.rev(request).removeprefix("refs/heads/")
        before = head_of(self.storage, repo_id, branch) if self.webhooks else None
        commit = self.storage.commit(repo_id, branch, ops, header.summary or "Upload files",
                                     header.description, self.user, header.parentCommit)
        announce_commit(self.webhooks, self.storage, self.base(request), repo_id, branch, before, commit.id)
        return HubJSON({"success": True, "commitOid": commit.id, "pullRequestUrl": None,
                        "commitUrl": f"{self.base(request)}/{repo_id}/commit/{commit.id}"})

    # ---- downloads ---------------------------------------------------------------------------------------------
    def resolve(self, request: Request, body: BinaryIO) -> Response:
        """Download a file (Range supported); HEAD gives the headers only."""
        repo = self.get_readable(request, self.repo_id(request))
        commit = self.storage.resolve(repo.repo_id, self.rev(request))
        path = unslash(request.path_params["path"])
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
            if start > end or start < 0:
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


async def _spool(request: Request, limit: int, folder: Path) -> BinaryIO:
    """The request body in a temporary file (in memory while small); past `limit` the rest is drained, so the
    client reads the 413 instead of a broken pipe."""
    f = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=folder)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            f.write(chunk)
    if size > limit:
        f.close()
        raise StorageError(413, f"request body is larger than {limit} bytes")
    f.seek(0)
    return f


def _endpoint(hub: HubApp, ep: Endpoint):
    """Read the body, run the handler in the thread pool, turn storage and input errors into the Hub's answers."""

    async def endpoint(request: Request) -> Response:
        try:
            if ep.body == "binary":
                return await ep.handler(request)
            limit = hub.max_commit_body if ep.body is NDJSON else JSON_BODY_LIMIT
            body = await _spool(request, limit, hub.storage.tmp_dir)
            try:
                return await run_in_threadpool(ep.handler, request, body)
            finally:
                body.close()
        except StorageError as exc:
            return error(exc.status, str(exc), exc.code)
        except ClientDisconnect:
            return error(400, "the client went away before sending its whole request")
        except (ValueError, KeyError) as exc:  # JSON, base64, UTF-8, numbers
            return error(400, f"malformed request: {exc}")

    return endpoint


def create_app(storage: Path, tokens: set[str] | None = None, faults: Faults | None = None,
               user: str = DEFAULT_USER, orgs: tuple[str, ...] = (), lfs_threshold: int = LFS_MIN_SIZE,
               max_commit_body: int = DEFAULT_MAX_COMMIT_BODY,
               webhooks: tuple[WebhookTarget, ...] = ()) -> Starlette:
    """A Hub-compatible app storing its data under `storage`.

    tokens: accepted write tokens (None: anyone may write — only for a server bound to 127.0.0.1); a token holder
        writes only to the namespaces whoami names: `user` and `orgs`.
    faults: optional fault injection for tests.
    lfs_threshold: files of this size or more must come through LFS (preupload says so; an inline one is a 413).
    max_commit_body: the largest commit request (NDJSON, inline files base64-encoded).
    webhooks: where to POST the Hub's webhook payload after each commit to the repos they watch (`webhooks.py`).
    """
    hub = HubApp(HubStorage(Path(storage)), tokens, faults, user, orgs, lfs_threshold, max_commit_body, webhooks)
    m = "/api/models/{ns}/{name}"
    get, post, delete = ("GET",), ("POST",), ("DELETE",)
    endpoints = [
        Endpoint(get, "/openapi.json", hub.openapi),
        Endpoint(get, "/api/whoami-v2", hub.whoami),
        Endpoint(post, "/api/validate-yaml", hub.validate_yaml, YamlDocument),
        Endpoint(get, "/api/models", hub.list_models,
                 query=("search", "author", "filter", "full", "cardData", "sort", "direction", "limit",
                        "pipeline_tag")),
        Endpoint(post, "/api/repos/create", hub.create_repo, CreateRepo),
        Endpoint(delete, "/api/repos/delete", hub.delete_repo, DeleteRepo),
        Endpoint(get, m, hub.model_info, query=("blobs",)),
        Endpoint(get, m + "/revision/{rev}", hub.model_info, query=("blobs",)),
        Endpoint(("PUT",), m + "/settings", hub.settings, RepoSettings),
        Endpoint(get, m + "/tree/{rev}", hub.tree, query=("recursive",)),
        Endpoint(get, m + "/tree/{rev}/{path:path}", hub.tree, query=("recursive",)),
        Endpoint(post, m + "/paths-info/{rev}", hub.paths_info, PathsInfo, form=True),
        Endpoint(get, m + "/refs", hub.refs),
        Endpoint(get, m + "/commits/{rev}", hub.commits),
        Endpoint(post, m + "/branch/{ref}", hub.branch, NewBranch),
        Endpoint(delete, m + "/branch/{ref}", hub.branch),
        Endpoint(post, m + "/tag/{ref}", hub.tag, NewTag),
        Endpoint(delete, m + "/tag/{ref}", hub.tag),
        Endpoint(post, m + "/preupload/{rev}", hub.preupload, Preupload),
        Endpoint(post, m + "/commit/{rev}", hub.commit, NDJSON, query=("create_pr",)),
        Endpoint(post, "/{ns}/{name}.git/info/lfs/objects/batch", hub.lfs_batch, LfsBatch),
        Endpoint(("PUT",), "/_lfs/{ns}/{name}/{oid}", hub.lfs_put, "binary", query=("size", "sig")),
        Endpoint(("GET", "HEAD"), "/{ns}/{name}/resolve/{rev}/{path:path}", hub.resolve),
        *hub_collections.endpoints(hub),
        *web.endpoints(hub),
    ]
    hub.schema = document(endpoints)
    by_path: dict[str, list[Endpoint]] = {}
    for ep in endpoints:
        by_path.setdefault(ep.path, []).append(ep)
    routes = [Route(path, _endpoint(hub, eps[0]), methods=list(eps[0].methods)) if len(eps) == 1
              else Route(path, _dispatch(hub, eps), methods=[m for ep in eps for m in ep.methods])
              for path, eps in by_path.items()]
    app = Starlette(routes=routes, middleware=[Middleware(KeepEncodedSlashes),
                                               Middleware(FaultMiddleware, faults=faults)])
    app.state.hub = hub
    return app


def _dispatch(hub: HubApp, eps: list[Endpoint]):
    """One route, several methods with different bodies (POST vs DELETE of a branch or tag)."""
    by_method = {m: _endpoint(hub, ep) for ep in eps for m in ep.methods}

    async def endpoint(request: Request) -> Response:
        return await by_method[request.method](request)

    return endpoint
