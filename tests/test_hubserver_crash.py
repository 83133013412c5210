"""Crashes and lost answers: a server process SIGKILLed mid-upload and mid-commit, restarted on its storage; a
commit applied whose answer never reached the client, retried."""

from __future__ import annotations

import base64
import hashlib
import json
import threading

import httpx2
import pytest
from huggingface_hub import CommitOperationAdd, HfApi

from hfdistill.hubserver import start_in_thread
from tests.test_hubserver_support import ServerProcess, storage_problems, tmp_leftovers, wait_for


def _in_background(fn, *args, **kwargs) -> threading.Thread:
    """Run a request that the test is about to cut off; its error is expected and ignored."""
    def run():
        try:
            fn(*args, **kwargs)
        except Exception:
            pass

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _lfs_href(url: str, repo: str, data: bytes) -> str:
    oid = hashlib.sha256(data).hexdigest()
    r = httpx2.post(f"{url}/{repo}.git/info/lfs/objects/batch", timeout=10,
                    json={"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]})
    return r.json()["objects"][0]["actions"]["upload"]["href"]


def test_sigkill_mid_upload_then_restart(tmp_path, hub_env):
    root = tmp_path / "st"
    data = bytes(range(256)) * 2048  # 512 KiB
    release = threading.Event()

    def slow_body():
        yield data[:65536]
        release.wait(20)  # the rest never comes before the kill
        yield data[65536:]

    with ServerProcess(root) as server:
        HfApi(endpoint=server.url, token=False).create_repo("local/m")
        href = _lfs_href(server.url, "local/m", data)
        uploader = _in_background(httpx2.put, href, content=slow_body(), timeout=30)
        wait_for(lambda: any((root / p).stat().st_size for p in tmp_leftovers(root)), what="a partial upload")
        server.kill()
    release.set()
    uploader.join(10)
    with ServerProcess(root) as server:  # the restart sweeps the dead process's partial upload
        assert tmp_leftovers(root) == [] and storage_problems(root) == []
        assert not (root / "objects" / hashlib.sha256(data).hexdigest()[:2]).exists()
        api = HfApi(endpoint=server.url, token=False)
        api.create_commit("local/m", [CommitOperationAdd("w.bin", data)], commit_message="again")
        assert api.list_repo_files("local/m") == [".gitattributes", "w.bin"]
    assert storage_problems(root) == []


def test_sigkill_mid_commit_then_restart(tmp_path, hub_env):
    """Killed after the commit file is written, before the branch moves: the restart shows the old head, storage
    is consistent, and the retried commit lands once."""
    root, marker = tmp_path / "st", tmp_path / "stalled"
    ops = lambda: [CommitOperationAdd("a.txt", b"a"), CommitOperationAdd("w.bin", b"\0" * 1000)]  # noqa: E731
    with ServerProcess(root, env={"HFDISTILL_HUB_STALL": f"commit-written:{marker}"}) as server:
        api = HfApi(endpoint=server.url, token=False)
        api.create_repo("local/m")
        initial = api.model_info("local/m").sha
        committer = _in_background(api.create_commit, "local/m", ops(), commit_message="killed")
        wait_for(marker.exists, what="the commit to stall between commit file and ref")
        server.kill()
    committer.join(10)
    with ServerProcess(root) as server:
        api = HfApi(endpoint=server.url, token=False)
        assert api.model_info("local/m").sha == initial and api.list_repo_files("local/m") == [".gitattributes"]
        assert storage_problems(root) == [] and tmp_leftovers(root) == []
        assert len(list((root / "repos/models/local/m/commits").glob("*.json"))) == 2  # written, never published
        api.create_commit("local/m", ops(), commit_message="retried")
        assert [c.title for c in api.list_repo_commits("local/m")] == ["retried", "initial commit"]
    assert storage_problems(root) == []


def test_a_commit_whose_answer_was_lost_is_applied_once_when_retried(tmp_path, hub_env):
    with start_in_thread(tmp_path / "st") as hub:
        api = HfApi(endpoint=hub.url, token=False)
        api.create_repo("local/m")
        api.create_commit("local/m", [CommitOperationAdd("old.txt", b"old")], commit_message="first")

        # The real client: the commit is applied, the answer is cut, the caller retries.
        hub.faults.add("POST", "/commit/", lose_response=True)
        add = [CommitOperationAdd("a.txt", b"a")]
        with pytest.raises(httpx2.HTTPError):
            api.create_commit("local/m", add, commit_message="second")
        second = api.create_commit("local/m", [CommitOperationAdd("a.txt", b"a")], commit_message="second").oid
        assert [c.title for c in api.list_repo_commits("local/m")] == ["second", "first", "initial commit"]

        # The same request bytes sent again (a deletion included, which could not apply twice).
        body = "\n".join(json.dumps(x) for x in [
            {"key": "header", "value": {"summary": "third"}},
            {"key": "deletedFile", "value": {"path": "old.txt"}},
            {"key": "file", "value": {"path": "b.txt", "content": base64.b64encode(b"b").decode(),
                                      "encoding": "base64"}}]).encode()
        post = lambda: httpx2.post(f"{hub.url}/api/models/local/m/commit/main", content=body, timeout=10)  # noqa
        hub.faults.add("POST", "/commit/", lose_response=True)
        with pytest.raises(httpx2.HTTPError):
            post()
        retried = post()
        assert retried.status_code == 200, retried.text
        history = api.list_repo_commits("local/m")
        assert [c.title for c in history] == ["third", "second", "first", "initial commit"]
        assert retried.json()["commitOid"] == history[0].commit_id != second
        assert api.list_repo_files("local/m") == [".gitattributes", "a.txt", "b.txt"]

        # A commit that changes nothing is a no-op: no empty commit.
        same = httpx2.post(f"{hub.url}/api/models/local/m/commit/main", timeout=10, content="\n".join(
            json.dumps(x) for x in [{"key": "header", "value": {"summary": "nothing new"}},
                                    {"key": "file", "value": {"path": "b.txt", "content": "b"}}]).encode())
        assert same.json()["commitOid"] == history[0].commit_id
        assert len(api.list_repo_commits("local/m")) == 4
    assert storage_problems(tmp_path / "st") == []
