"""Durable, content-addressed storage for the embedded Hub.

Layout under the storage root:

```
lock                                        flock()ed by whichever process is writing (refs, commits, repos)
objects/<sha256[:2]>/<sha256>               file contents, named by their sha256 (written once, never changed)
repos/models/<ns>/<name>/meta.json          {"id", "private", "createdAt"}
repos/models/<ns>/<name>/refs.json          {"branches": {name: commit}, "tags": {name: commit}, "tag_messages"}
repos/models/<ns>/<name>/commits/<id>.json  {"id", "parents", "title", "message", "date", "author", "files", "request"}
tmp/<owner>/ + tmp/<owner>.lock             one folder per live HubStorage (uploads, atomic writes, deleted repos)
```

A commit is published by writing its commit file and then replacing `refs.json` atomically, after every blob it
names is stored: a crash at any point leaves either the old head or the new one, never a half-published repo.

Several processes may share one folder (two `hub serve`, or a `push` while a server runs): every write holds the
`lock` file (flock, so the kernel releases it when a holder dies, even by SIGKILL) and re-reads the refs under it.
Each HubStorage writes temporary files only in its own `tmp/<owner>/`, whose `<owner>.lock` it holds while alive; a
new HubStorage removes only the folders whose lock nobody holds (their process died), never a live one's uploads.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Iterable

from hfdistill.hubserver import metadata
from hfdistill.hubserver.faults import stall_point

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_BRANCH = "main"

# Files stored as LFS pointers by the Hub's default .gitattributes (and anything large or binary).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack", ".gguf", ".npz",
                ".npy", ".pkl", ".png", ".jpg", ".jpeg", ".zip", ".tar", ".gz", ".model", ".tflite", ".ot")
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES)

MAX_PATH_BYTES = 1000           # a repo path; each of its segments must also fit a file name (255 bytes)
RESERVED_FOLDERS = (".git", ".cache")  # the client refuses to write these (huggingface_hub FORBIDDEN_FOLDERS)


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


def is_lfs_path(path: str, size: int, sample: bytes = b"", threshold: int = LFS_MIN_SIZE) -> bool:
    """Whether the Hub would store this file through LFS: by suffix, by size, or because it is binary."""
    return path.lower().endswith(LFS_SUFFIXES) or size >= threshold or b"\0" in sample


def check_text(what: str, text: str) -> str:
    """Refuse strings that cannot be written as UTF-8 (lone surrogates, which JSON escapes can carry): stored, they
    would make every later answer that includes them fail to encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise StorageError(400, f"{what} is not valid UTF-8 text") from None
    return text


def check_path(path: str) -> str:
    r"""A repo path every client can write to disk, or a 400 naming why not.

    Why: `snapshot_download` writes each path under the local folder; one path such as `a//b`, `..\..\x`, a NUL
    byte, a 5000-character name or `.git/config` makes the whole repo unpullable (or writes outside the folder).
    """
    def bad(why: str) -> StorageError:
        return StorageError(400, f"invalid path in commit: {path[:100]!r}: {why}")

    if not isinstance(path, str) or not path:
        raise bad("empty path")
    check_text("path", path)
    if len(path.encode()) > MAX_PATH_BYTES:
        raise bad(f"longer than {MAX_PATH_BYTES} bytes")
    if re.search(r"[\x00-\x1f\x7f]", path):
        raise bad("control character (NUL, newline, ...)")
    if "\\" in path:
        raise bad("backslash (a Windows path separator); use '/'")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise bad("absolute path, empty segment ('//' or trailing '/'), '.' or '..'")
    if any(len(p.encode()) > 255 for p in parts):
        raise bad("a segment longer than 255 bytes")
    if any(p in RESERVED_FOLDERS for p in parts):
        raise bad(f"reserved folder name ({', '.join(RESERVED_FOLDERS)})")
    return path


class StorageLock:
    """Serialises writers across threads (an RLock) and processes (flock on one file: the kernel drops it when the
    holding process dies, so a SIGKILLed server never leaves the folder locked). Re-entrant within a thread."""

    def __init__(self, path: Path):
        self.path = path
        self._rlock = threading.RLock()
        self._depth = 0
        self._fd = -1

    def __enter__(self) -> "StorageLock":
        self._rlock.acquire()
        if self._depth == 0:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            os.close(self._fd)  # closing the only descriptor releases the flock
        self._rlock.release()


def _release_tmp(fd: int, folder: Path, lock_file: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    lock_file.unlink(missing_ok=True)  # while still holding it: a sweeper can no longer open it
    os.close(fd)


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
    request: str = ""     # digest of the request that made it: a retry of that request gets this commit back

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Commit":
        files = {p: FileEntry(path=p, **v) for p, v in d["files"].items()}
        return cls(id=d["id"], parents=d["parents"], title=d["title"], message=d["message"], date=d["date"],
                   author=d["author"], files=files, request=d.get("request", ""))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "parents": self.parents, "title": self.title, "message": self.message,
                "date": self.date, "author": self.author, "request": self.request,
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
    """One line of a commit: add a stored blob (`entry`), or delete a file / folder. Build adds with
    `HubStorage.add_inline` / `add_lfs`, which store or check the blob before any lock is taken."""

    kind: str                   # "add" | "deletedFile" | "deletedFolder"
    path: str
    entry: FileEntry | None = None


def is_hub_storage(root: Path) -> bool:
    """Whether `root` holds an embedded Hub's storage (what `HubStorage` creates), without creating anything."""
    root = Path(root)
    return (root / "objects").is_dir() and (root / "repos" / "models").is_dir()


class HubStorage:
    """Repos, commits, refs and blobs on disk."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        (self.root / "repos" / "models").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        self.lock = StorageLock(self.root / "lock")
        owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.tmp_dir = self.root / "tmp" / owner
        lock_file = self.root / "tmp" / f"{owner}.lock"
        with self.lock:  # registering and sweeping never interleave, so a live owner always holds its lock file
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.tmp_dir.mkdir()
            self._sweep_tmp()
        self._finalizer = weakref.finalize(self, _release_tmp, fd, self.tmp_dir, lock_file)

    def close(self) -> None:
        """Remove this instance's temporary folder (also done at garbage collection / interpreter exit)."""
        self._finalizer()

    def _sweep_tmp(self) -> None:
        """Remove the temporary folders of dead owners (a crash mid-upload leaves one) and pre-lock leftovers."""
        mine = {self.tmp_dir.name, f"{self.tmp_dir.name}.lock"}
        tmp = self.root / "tmp"
        for entry in tmp.iterdir():
            if entry.name in mine:
                continue
            if entry.suffix == ".lock":
                try:
                    fd = os.open(entry, os.O_RDWR)
                except FileNotFoundError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)  # its owner is alive
                    continue
                _release_tmp(fd, tmp / entry.stem, entry)
            elif not (tmp / f"{entry.name}.lock").exists():
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)

    def _write(self, path: Path, data: bytes) -> None:
        """Write `path` atomically: the bytes go to our tmp folder, then one rename publishes them whole."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp_dir / uuid.uuid4().hex
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _write_json(self, path: Path, data: Any) -> None:
        self._write(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())

    # ---- blobs -------------------------------------------------------------------------------------------------
    def object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256

    def has_object(self, sha256: str) -> bool:
        return bool(SHA256_RE.match(sha256 or "")) and self.object_path(sha256).is_file()

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.object_path(sha)
        if not path.is_file():
            self._write(path, data)
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

    def read_object(self, sha256: str, limit: int = -1) -> bytes:
        with open(self.object_path(sha256), "rb") as f:
            return f.read(limit)

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
        refs.setdefault("tag_messages", {})
        return RepoRecord(repo_id=meta["id"], private=meta["private"], created_at=meta["createdAt"], refs=refs)

    def list_repos(self) -> list[RepoRecord]:
        out = []
        for meta in sorted((self.root / "repos" / "models").glob("*/*/meta.json")):
            repo_id = f"{meta.parent.parent.name}/{meta.parent.name}"
            try:
                out.append(self.get_repo(repo_id))
            except (StorageError, OSError, ValueError, KeyError):
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
            commit = self._new_commit([], "initial commit", "", author, {entry.path: entry}, "")
            self._write_json(d / "commits" / f"{commit.id}.json", commit.to_json())
            self._write_json(d / "refs.json", {"branches": {DEFAULT_BRANCH: commit.id}, "tags": {}})
            # meta.json last: a repo exists only once it is complete.
            self._write_json(d / "meta.json", {"id": repo_id, "private": private, "createdAt": now_iso()})
            return self.get_repo(repo_id)

    def delete_repo(self, repo_id: str) -> None:
        with self.lock:
            if not self.exists(repo_id):
                raise StorageError(404, f"Repository {repo_id} not found", "RepoNotFound")
            trash = self.tmp_dir / f"deleted-{uuid.uuid4().hex}"
            os.replace(self.repo_dir(repo_id), trash)  # atomic disappearance; blobs stay (content-addressed)
            shutil.rmtree(trash, ignore_errors=True)

    def set_private(self, repo_id: str, private: bool) -> None:
        with self.lock:
            self.get_repo(repo_id)
            d = self.repo_dir(repo_id)
            meta = json.loads((d / "meta.json").read_text())
            meta["private"] = private
            self._write_json(d / "meta.json", meta)

    # ---- commits and refs --------------------------------------------------------------------------------------
    def get_commit(self, repo_id: str, commit_id: str) -> Commit:
        path = self.repo_dir(repo_id) / "commits" / f"{commit_id}.json"
        if not COMMIT_RE.match(commit_id) or not path.is_file():
            raise StorageError(404, f"Invalid rev id: {commit_id}", "RevisionNotFound")
        return Commit.from_json(json.loads(path.read_text()))

    def resolve(self, repo_id: str, revision: str | None) -> Commit:
        """A branch, a tag (bare or as refs/heads/…, refs/tags/…) or a full commit id → the commit."""
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
                    files: dict[str, FileEntry], request: str) -> Commit:
        date = now_iso()
        body = json.dumps({"parents": parents, "title": title, "message": message, "date": date, "author": author,
                           "files": {p: e.to_json() for p, e in sorted(files.items())}, "nonce": uuid.uuid4().hex},
                          sort_keys=True)
        cid = hashlib.sha1(body.encode()).hexdigest()
        return Commit(id=cid, parents=parents, title=title, message=message, date=date, author=author, files=files,
                      request=request)

    def add_inline(self, path: str, data: bytes) -> Operation:
        """An add whose content came inside the commit request: stored now (content-addressed, so a refused commit
        only leaves an unreferenced blob), so the commit itself never holds file contents in memory."""
        check_path(path)
        sha = self.put_bytes(data)
        return Operation("add", path, FileEntry(path, sha, len(data), git_blob_sha1(data), False))

    def add_lfs(self, path: str, oid: str, size: int | None) -> Operation:
        check_path(path)
        if not self.has_object(oid):
            raise StorageError(422, f"LFS object {oid} for '{path}' was not uploaded")
        actual = self.object_path(oid).stat().st_size
        if size is not None and size != actual:
            raise StorageError(422, f"LFS object {oid} has size {actual}, not {size}")
        return Operation("add", path, FileEntry(path, oid, actual, git_blob_sha1(lfs_pointer(oid, actual)), True))

    @staticmethod
    def delete(kind: str, path: str) -> Operation:
        return Operation(kind, check_path(path[:-1] if kind == "deletedFolder" and path.endswith("/") else path))

    def _check_card(self, entry: FileEntry) -> None:
        text = self.read_object(entry.sha256, metadata.MAX_README_READ).decode("utf-8", "replace")
        try:
            metadata.check(text)
        except metadata.MetadataError as exc:
            raise StorageError(400, f"Invalid metadata in README.md: {exc}") from None

    def commit(self, repo_id: str, branch: str, operations: Iterable[Operation], title: str, message: str,
               author: str, parent_commit: str | None = None) -> Commit:
        """Apply operations on top of `branch` and move the branch, all or nothing.

        Idempotent for retries: a request identical to the one that made the head (same operations, message and
        parent) returns the head instead of committing again (the client retries when an answer is lost), and a
        commit that would change no file returns the head too (no empty commits).
        """
        branch = branch.removeprefix("refs/heads/")
        ops = list(operations)
        check_text("commit title", title)
        check_text("commit message", message)
        for op in ops:
            if op.kind == "add" and op.path == "README.md":
                self._check_card(op.entry)
        request = hashlib.sha256(json.dumps(
            [title, message, parent_commit, [(o.kind, o.path, o.entry and o.entry.to_json()) for o in ops]],
            sort_keys=True).encode()).hexdigest()
        with self.lock:
            repo = self.get_repo(repo_id)
            if branch not in repo.refs["branches"]:
                raise StorageError(404, f"Invalid rev id: {branch} (commits go to branches)", "RevisionNotFound")
            head = self.get_commit(repo_id, repo.refs["branches"][branch])
            if head.request == request:
                return head
            if parent_commit is not None and parent_commit != head.id:
                raise StorageError(412, f"A commit has happened since {parent_commit}. Please refresh and try again.")
            files = dict(head.files)
            for op in ops:
                if op.kind == "add":
                    files[op.path] = op.entry
                elif op.kind == "deletedFile":
                    if op.path not in files:
                        raise StorageError(404, f"A file with this name doesn't exist: {op.path}", "EntryNotFound")
                    del files[op.path]
                elif op.kind == "deletedFolder":
                    gone = [p for p in files if p.startswith(op.path + "/")]
                    if not gone:
                        raise StorageError(404, f"A folder with this name doesn't exist: {op.path}", "EntryNotFound")
                    for p in gone:
                        del files[p]
                else:
                    raise StorageError(400, f"unknown commit operation '{op.kind}'")
            self._check_tree(files, [op.path for op in ops if op.kind == "add"])
            if files == head.files:
                return head
            commit = self._new_commit([head.id], title, message, author, files, request)
            d = self.repo_dir(repo_id)
            self._write_json(d / "commits" / f"{commit.id}.json", commit.to_json())
            stall_point("commit-written")  # crash tests stop the process here: commit file written, ref not moved
            refs = json.loads((d / "refs.json").read_text())
            refs["branches"][branch] = commit.id
            self._write_json(d / "refs.json", refs)  # the publishing step
            return commit

    @staticmethod
    def _check_tree(files: dict[str, FileEntry], added: list[str]) -> None:
        """A path cannot be both a file and a folder: no checkout could hold both `a` and `a/b`."""
        folders = {p[:i] for p in files for i in range(len(p)) if p[i] == "/"}
        for path in added:
            if path in folders:
                raise StorageError(400, f"invalid path in commit: '{path}' is already a folder")
            for i, ch in enumerate(path):
                if ch == "/" and path[:i] in files:
                    raise StorageError(400, f"invalid path in commit: '{path[:i]}' is a file, not a folder")

    def set_ref(self, repo_id: str, kind: str, name: str, revision: str | None, exist_ok: bool = False,
                message: str | None = None) -> str:
        """Create a branch or tag named `name` at `revision` (default: main); a tag may carry a message."""
        what = {"branches": "branch", "tags": "tag"}[kind]
        if not NAME_RE.match(name):
            raise StorageError(400, f"invalid {what} name '{name}'")
        if message is not None:
            check_text(f"{what} message", message)
        with self.lock:
            repo = self.get_repo(repo_id)
            if name in repo.refs[kind] and not exist_ok:
                raise StorageError(409, f"{what.capitalize()} {name} already exists")
            target = self.resolve(repo_id, revision).id
            refs = dict(repo.refs)
            refs[kind] = {**refs[kind], name: target}
            if kind == "tags" and message:
                refs["tag_messages"] = {**refs["tag_messages"], name: message}
            self._write_json(self.repo_dir(repo_id) / "refs.json", refs)
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
            if kind == "tags":
                refs["tag_messages"] = {k: v for k, v in refs["tag_messages"].items() if k != name}
            self._write_json(self.repo_dir(repo_id) / "refs.json", refs)
