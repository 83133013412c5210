"""Several writers on one storage folder, and slow storage work next to other requests."""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2
from huggingface_hub import CommitOperationAdd, HfApi

from hfdistill.hubserver import HubStorage, start_in_thread
from tests.test_hubserver_support import ServerProcess, storage_problems, tmp_leftovers


def test_two_server_processes_on_one_folder_lose_no_commit(tmp_path, hub_env):
    """Issue point 7: two `hub serve` on one folder, threads committing through both: every acknowledged commit
    is in the history and every file in the head tree."""
    storage = tmp_path / "st"
    with ServerProcess(storage) as a, ServerProcess(storage) as b:
        HfApi(endpoint=a.url, token=False).create_repo("local/m")

        def writer(url: str, tag: str) -> list[str]:
            api = HfApi(endpoint=url, token=False)
            return [api.create_commit("local/m", [
                CommitOperationAdd(f"{tag}-{i}.txt", f"{tag} {i}".encode()),
                CommitOperationAdd(f"{tag}-{i}.bin", f"lfs {tag} {i}".encode() * 10),  # an LFS upload via tmp/
            ], commit_message=f"{tag} {i}").oid for i in range(5)]

        jobs = [(url, f"{name}{t}") for url, name in ((a.url, "a"), (b.url, "b")) for t in range(3)]
        with ThreadPoolExecutor(len(jobs)) as pool:
            acked = [oid for oids in pool.map(lambda j: writer(*j), jobs) for oid in oids]

        api = HfApi(endpoint=b.url, token=False)
        history = {c.commit_id for c in api.list_repo_commits("local/m")}
        files = set(api.list_repo_files("local/m"))
    assert len(set(acked)) == 30 and set(acked) <= history, f"{len(set(acked) - history)} acknowledged commits lost"
    assert len(history) == 31  # + the initial commit
    assert {f"{tag}-{i}.{ext}" for _, tag in jobs for i in range(5) for ext in ("txt", "bin")} <= files
    assert storage_problems(storage) == []


def test_a_second_storage_on_the_folder_keeps_the_first_ones_uploads(tmp_path):
    """Issue point 7: a second HubStorage (a second serve, or a push while a server runs) used to delete `tmp/`
    under the first one's running uploads."""
    first = HubStorage(tmp_path / "st")
    tmp, f = first.new_upload()
    f.write(b"half of an upload")
    HubStorage(tmp_path / "st")  # starts while the upload is in progress
    f.write(b", then the rest")
    f.close()
    data = b"half of an upload, then the rest"
    first.finish_upload(tmp, hashlib.sha256(data).hexdigest(), len(data))
    assert first.read_object(hashlib.sha256(data).hexdigest()) == data


def test_a_dead_owners_temporary_files_are_swept_a_live_ones_are_not(tmp_path, hub_env):
    root = tmp_path / "st"
    with ServerProcess(root) as server:
        HfApi(endpoint=server.url, token=False).create_repo("local/m")
        live = HubStorage(root)
        (live.tmp_dir / "upload-in-progress").write_bytes(b"x")
        server.kill()  # its tmp folder stays behind, lock released by the kernel
    assert len(list((root / "tmp").glob("*.lock"))) == 2
    HubStorage(root).close()  # a restart sweeps the dead one's folder, never the live one's
    assert tmp_leftovers(root) == [f"tmp/{live.tmp_dir.name}/upload-in-progress"]


def test_a_slow_commit_does_not_block_other_requests(tmp_path, hub_env, monkeypatch):
    """Issue point 10: storage work runs off the event loop; a commit stuck in storage (a big body being hashed
    and written, a slow disk) leaves the server answering everyone else."""
    entered = threading.Event()
    real_commit = HubStorage.commit

    def slow_commit(self, *args, **kwargs):
        entered.set()
        time.sleep(2.0)
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(HubStorage, "commit", slow_commit)
    with start_in_thread(tmp_path / "st") as hub:
        api = HfApi(endpoint=hub.url, token=False)
        api.create_repo("local/m")
        committer = threading.Thread(target=lambda: api.create_commit(
            "local/m", [CommitOperationAdd("a.txt", b"a")], commit_message="slow"))
        committer.start()
        assert entered.wait(10)
        start = time.monotonic()
        r = httpx2.get(f"{hub.url}/api/models", timeout=10)
        elapsed = time.monotonic() - start
        committer.join(10)
    assert r.status_code == 200 and elapsed < 1.0, f"GET waited {elapsed:.2f}s behind the commit"
