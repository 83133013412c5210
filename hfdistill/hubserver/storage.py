"""Durable, content-addressed storage for the embedded Hub.

Layout under the storage root:

```
objects/<sha256[:2]>/<sha256>               file contents, named by their sha256 (written once, never changed)
repos/models/<ns>/<name>/meta.json          {"id", "private", "createdAt"}
repos/models/<ns>/<name>/refs.json          {"branches": {name: commit}, "tags": {name: commit}}
repos/models/<ns>/<name>/commits/<id>.json  {"id", "parents", "title", "message", "date", "author", "files"}
tmp/                                        uploads in progress (deleted on failure)
```

A commit is published by writing its commit file and then replacing `refs.json` atomically, after every blob it
names is stored: a crash at any point leaves either the old head or the new one, never a half-published repo.
One process owns a storage folder; a lock serialises writes inside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Iterable

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
DEFAULT_BRANCH = "main"

# Files stored as LFS pointers by the Hub's default .gitattributes (and anything large or binary).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack", ".gguf", ".npz",
                ".npy", ".pkl", ".png", ".jpg", ".jpeg", ".zip", ".tar", ".gz", ".model", ".tflite", ".ot")
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES)


class StorageError(Exception):
    """A request the storage cannot satisfy; `status` and `code` become the HTTP answer."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as a regular file's `oid`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def is_lfs_path(path: str, size: int, sample: bytes = b"") -> bool:
    """Whether the Hub would store this file through LFS: by suffix, by size, or because it is binary."""
    return path.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE or b"\0" in sample


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


@dataclass(frozen=True)
class FileEntry:
    """One file of a commit's tree."""

    path: str
    sha256: str
    size: int
    blob_id: str          # git sha1 of the content (regular) or of the LFS pointer (lfs)
    lfs: bool

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "blob_id": self.blob_id, "lfs": self.lfs}

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))

    @property
    def etag(self) -> str:
        """The Hub's ETag: the sha256 for an LFS file, the git blob id otherwise."""
        return self.sha256 if self.lfs else self.blob_id


@dataclass
class Commit:
    id: str
    parents: list[str]
    title: str
    message: str
    date: str
    author: str
    files: dict[str, FileEntry] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Commit":
        files = {p: FileEntry(path=p, **v) for p, v in d["files"].items()}
        return cls(id=d["id"], parents=d["parents"], title=d["title"], message=d["message"], date=d["date"],
                   author=d["author"], files=files)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "parents": self.parents, "title": self.title, "message": self.message,
                "date": self.date, "author": self.author,
                "files": {p: e.to_json() for p, e in sorted(self.files.items())}}


@dataclass(frozen=True)
class RepoRecord:
    repo_id: str
    private: bool
    created_at: str
    refs: dict[str, dict[str, str]]

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]


@dataclass(frozen=True)
class Operation:
    """One line of a commit request: add (content bytes or an already stored LFS object) or delete."""

    kind: str                   # "file" | "lfsFile" | "deletedFile" | "deletedFolder"
    path: str
    content: bytes | None = None
    oid: str | None = None      # sha256 of an LFS object
    size: int | None = None


class HubStorage:
    """Repos, commits, refs and blobs on disk."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        (self.root / "repos" / "models").mkdir(parents=True, exist_ok=True)
        self.tmp_dir = self.root / "tmp"
        shutil.rmtree(self.tmp_dir, ignore_errors=True)  # uploads interrupted by a crash
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    # ---- blobs -------------------------------------------------------------------------------------------------
    def object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256

    def has_object(self, sha256: str) -> bool:
        return bool(re.fullmatch(r"[0-9a-f]{64}", sha256)) and self.object_path(sha256).is_file()

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.object_path(sha)
        if not path.is_file():
            write_atomic(path, data)
        return sha

    def new_upload(self) -> tuple[Path, BinaryIO]:
        """A temporary file for a streamed upload; `finish_upload` moves it into place once its hash is checked."""
        path = self.tmp_dir / uuid.uuid4().hex
        return path, open(path, "wb")

    def finish_upload(self, tmp: Path, expected_sha256: str, expected_size: int) -> None:
        h = hashlib.sha256()
        size = 0
        with open(tmp, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
                size += len(chunk)
        if h.hexdigest() != expected_sha256 or size != expected_size:
            tmp.unlink(missing_ok=True)
            raise StorageError(400, f"uploaded content does not match oid {expected_sha256} / size {expected_size}")
        final = self.object_path(expected_sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)

    def read_object(self, sha256: str) -> bytes:
        return self.object_path(sha256).read_bytes()

    # ---- repos -------------------------------------------------------------------------------------------------
    def repo_dir(self, repo_id: str) -> Path:
        ns, _, name = repo_id.partition("/")
        if not (NAME_RE.match(ns) and NAME_RE.match(name)) or ".." in repo_id:
            raise StorageError(400, f"invalid repo id '{repo_id}': expected 'namespace/name'")
        return self.root / "repos" / "models" / ns / name

    def exists(self, repo_id: str) -> bool:
        try:
            return (self.repo_dir(repo_id) / "meta.json").is_file()
        except StorageError:
            return False

    def get_repo(self, repo_id: str) -> RepoRecord:
        if not self.exists(repo_id):
            raise StorageError(404, f"Repository {repo_id} not found", "RepoNotFound")
        d = self.repo_dir(repo_id)
        meta = json.loads((d / "meta.json").read_text())
        refs = json.loads((d / "refs.json").read_text())
        return RepoRecord(repo_id=meta["id"], private=meta["private"], created_at=meta["createdAt"], refs=refs)

    def list_repos(self) -> list[RepoRecord]:
        out = []
        for meta in sorted((self.root / "repos" / "models").glob("*/*/meta.json")):
            repo_id = f"{meta.parent.parent.name}/{meta.parent.name}"
            try:
                out.append(self.get_repo(repo_id))
            except (StorageError, OSError, ValueError):
                continue
        return out

    def create_repo(self, repo_id: str, private: bool, author: str) -> RepoRecord:
        """Create a repo with an initial commit holding `.gitattributes`, as the Hub does."""
        with self.lock:
            d = self.repo_dir(repo_id)
            if self.exists(repo_id):
                raise StorageError(409, "You already created this model repo")
            sha = self.put_bytes(GITATTRIBUTES.encode())
            entry = FileEntry(".gitattributes", sha, len(GITATTRIBUTES), git_blob_sha1(GITATTRIBUTES.encode()), False)
            commit = self._new_commit([], "initial commit", "", author, {entry.path: entry})
            write_json_atomic(d / "commits" / f"{commit.id}.json", commit.to_json())
            write_json_atomic(d / "refs.json", {"branches": {DEFAULT_BRANCH: commit.id}, "tags": {}})
            # meta.json last: a repo exists only once it is complete.
            write_json_atomic(d / "meta.json", {"id": repo_id, "private": private, "createdAt": now_iso()})
            return self.get_repo(repo_id)

    def delete_repo(self, repo_id: str) -> None:
        with self.lock:
            if not self.exists(repo_id):
                raise StorageError(404, f"Repository {repo_id} not found", "RepoNotFound")
            d = self.repo_dir(repo_id)
            trash = self.tmp_dir / f"deleted-{uuid.uuid4().hex}"
            os.replace(d, trash)  # atomic disappearance; blobs stay (content-addressed, may be shared)
            shutil.rmtree(trash, ignore_errors=True)

    def set_private(self, repo_id: str, private: bool) -> None:
        with self.lock:
            d = self.repo_dir(repo_id)
            meta = json.loads((d / "meta.json").read_text())
            meta["private"] = private
            write_json_atomic(d / "meta.json", meta)

    # ---- commits and refs --------------------------------------------------------------------------------------
    def get_commit(self, repo_id: str, commit_id: str) -> Commit:
        path = self.repo_dir(repo_id) / "commits" / f"{commit_id}.json"
        if not COMMIT_RE.match(commit_id) or not path.is_file():
            raise StorageError(404, f"Invalid rev id: {commit_id}", "RevisionNotFound")
        return Commit.from_json(json.loads(path.read_text()))

    def resolve(self, repo_id: str, revision: str | None) -> Commit:
        """A branch, a tag or a full commit id → the commit."""
        repo = self.get_repo(repo_id)
        revision = revision or DEFAULT_BRANCH
        for prefix, kind in (("refs/heads/", "branches"), ("refs/tags/", "tags")):
            if revision.startswith(prefix) and revision[len(prefix):] in repo.refs[kind]:
                return self.get_commit(repo_id, repo.refs[kind][revision[len(prefix):]])
        if revision in repo.refs["branches"]:
            return self.get_commit(repo_id, repo.refs["branches"][revision])
        if revision in repo.refs["tags"]:
            return self.get_commit(repo_id, repo.refs["tags"][revision])
        if COMMIT_RE.match(revision) and (self.repo_dir(repo_id) / "commits" / f"{revision}.json").is_file():
            return self.get_commit(repo_id, revision)
        raise StorageError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def history(self, repo_id: str, revision: str | None) -> list[Commit]:
        """Commits reachable from `revision` along first parents, newest first."""
        commit = self.resolve(repo_id, revision)
        out = [commit]
        while commit.parents:
            commit = self.get_commit(repo_id, commit.parents[0])
            out.append(commit)
        return out

    def _new_commit(self, parents: list[str], title: str, message: str, author: str,
                    files: dict[str, FileEntry]) -> Commit:
        date = now_iso()
        body = json.dumps({"parents": parents, "title": title, "message": message, "date": date, "author": author,
                           "files": {p: e.to_json() for p, e in sorted(files.items())}, "nonce": uuid.uuid4().hex},
                          sort_keys=True)
        cid = hashlib.sha1(body.encode()).hexdigest()
        return Commit(id=cid, parents=parents, title=title, message=message, date=date, author=author, files=files)

    def commit(self, repo_id: str, branch: str, operations: Iterable[Operation], title: str, message: str,
               author: str, parent_commit: str | None = None) -> Commit:
        """Apply operations on top of `branch` and move the branch, all or nothing."""
        with self.lock:
            repo = self.get_repo(repo_id)
            if branch not in repo.refs["branches"]:
                raise StorageError(404, f"Invalid rev id: {branch} (commits go to branches)", "RevisionNotFound")
            head = self.get_commit(repo_id, repo.refs["branches"][branch])
            if parent_commit is not None and parent_commit != head.id:
                raise StorageError(412, f"A commit has happened since {parent_commit}. Please refresh and try again.")
            files = dict(head.files)
            for op in operations:
                path = op.path.strip("/")
                if not path or ".." in path.split("/") or path.startswith(".git/"):
                    raise StorageError(400, f"invalid path in commit: '{op.path}'")
                if op.kind == "file":
                    data = op.content or b""
                    sha = self.put_bytes(data)
                    files[path] = FileEntry(path, sha, len(data), git_blob_sha1(data), False)
                elif op.kind == "lfsFile":
                    if not op.oid or not self.has_object(op.oid):
                        raise StorageError(422, f"LFS object {op.oid} for '{path}' was not uploaded")
                    size = self.object_path(op.oid).stat().st_size
                    if op.size is not None and op.size != size:
                        raise StorageError(422, f"LFS object {op.oid} has size {size}, not {op.size}")
                    files[path] = FileEntry(path, op.oid, size, git_blob_sha1(lfs_pointer(op.oid, size)), True)
                elif op.kind == "deletedFile":
                    if path not in files:
                        raise StorageError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif op.kind == "deletedFolder":
                    gone = [p for p in files if p.startswith(path + "/")]
                    if not gone:
                        raise StorageError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in gone:
                        del files[p]
                else:
                    raise StorageError(400, f"unknown commit operation '{op.kind}'")
            commit = self._new_commit([head.id], title, message, author, files)
            d = self.repo_dir(repo_id)
            write_json_atomic(d / "commits" / f"{commit.id}.json", commit.to_json())
            refs = json.loads((d / "refs.json").read_text())
            refs["branches"][branch] = commit.id
            write_json_atomic(d / "refs.json", refs)  # the publishing step
            return commit

    def set_ref(self, repo_id: str, kind: str, name: str, revision: str | None, exist_ok: bool = False) -> str:
        """Create a branch or tag named `name` at `revision` (default: main)."""
        if not NAME_RE.match(name):
            raise StorageError(400, f"invalid {kind[:-1] if kind.endswith('s') else kind} name '{name}'")
        with self.lock:
            repo = self.get_repo(repo_id)
            if name in repo.refs[kind] and not exist_ok:
                what = "Branch" if kind == "branches" else "Tag"
                raise StorageError(409, f"{what} {name} already exists")
            target = self.resolve(repo_id, revision).id
            refs = dict(repo.refs)
            refs[kind] = {**refs[kind], name: target}
            write_json_atomic(self.repo_dir(repo_id) / "refs.json", refs)
            return target

    def delete_ref(self, repo_id: str, kind: str, name: str) -> None:
        with self.lock:
            repo = self.get_repo(repo_id)
            if name not in repo.refs[kind]:
                raise StorageError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            if kind == "branches" and name == DEFAULT_BRANCH:
                raise StorageError(403, "cannot delete the default branch")
            refs = dict(repo.refs)
            refs[kind] = {k: v for k, v in refs[kind].items() if k != name}
            write_json_atomic(self.repo_dir(repo_id) / "refs.json", refs)
