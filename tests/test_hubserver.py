"""The embedded Hub answers the unmodified huggingface_hub client: repos, commits (regular + LFS), downloads,
revisions, listing, tokens and durable storage."""

from __future__ import annotations

import os

import httpx2
import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, \
    RevisionNotFoundError

from hfdistill.hubserver import HubStorage, start_in_thread
from tests.hub_fixtures import TOKEN


@pytest.fixture
def hub_server(tmp_path, hub_env):
    """The shared fixture's server, letting the token write to the namespaces these tests use."""
    with start_in_thread(tmp_path / "hub-storage", tokens={TOKEN}, orgs=("me", "you")) as hub:
        yield hub


@pytest.fixture
def api(hub_server):
    return HfApi(endpoint=hub_server.url, token=TOKEN)


def _ops(files: dict[str, bytes]) -> list[CommitOperationAdd]:
    return [CommitOperationAdd(path_in_repo=p, path_or_fileobj=b) for p, b in files.items()]


def test_commit_with_regular_and_lfs_files_then_download_them(api, hub_server, tmp_path):
    api.create_repo("me/m")
    weights = os.urandom(70_000)
    info = api.create_commit("me/m", _ops({"config.json": b'{"a": 1}', "sub/model.safetensors": weights}),
                             commit_message="first")
    files = {f.path: f for f in api.list_repo_tree("me/m", recursive=True) if hasattr(f, "size")}
    assert files["sub/model.safetensors"].lfs.size == 70_000 and files["config.json"].lfs is None
    got = hf_hub_download("me/m", "sub/model.safetensors", endpoint=hub_server.url, cache_dir=tmp_path / "c")
    assert open(got, "rb").read() == weights
    assert api.model_info("me/m").sha == info.oid
    assert [e.path for e in api.list_repo_tree("me/m")] == [".gitattributes", "config.json", "sub"]


def test_unchanged_content_makes_no_commit_and_changes_make_one(api):
    api.create_repo("me/m")
    first = api.create_commit("me/m", _ops({"a.txt": b"1", "w.bin": b"\0" * 2000}), commit_message="one")
    same = api.create_commit("me/m", _ops({"a.txt": b"1", "w.bin": b"\0" * 2000}), commit_message="again")
    assert same.oid == first.oid and len(api.list_repo_commits("me/m")) == 2  # initial + one
    api.create_commit("me/m", [CommitOperationDelete("a.txt")], commit_message="rm")
    assert api.list_repo_files("me/m") == [".gitattributes", "w.bin"]
    assert [c.title for c in api.list_repo_commits("me/m")] == ["rm", "one", "initial commit"]


def test_branches_tags_and_downloads_by_revision(api, hub_server, tmp_path):
    api.create_repo("me/m")
    v1 = api.create_commit("me/m", _ops({"f.txt": b"v1"}), commit_message="v1").oid
    api.create_tag("me/m", tag="v1")
    api.create_branch("me/m", branch="dev")
    api.create_commit("me/m", _ops({"f.txt": b"v2"}), commit_message="v2", revision="dev")
    refs = api.list_repo_refs("me/m")
    assert {b.name for b in refs.branches} == {"main", "dev"} and refs.tags[0].target_commit == v1
    read = lambda rev: open(hf_hub_download("me/m", "f.txt", revision=rev, endpoint=hub_server.url,  # noqa: E731
                                            cache_dir=tmp_path / rev), "rb").read()
    assert (read("v1"), read("dev"), read("main"), read(v1)) == (b"v1", b"v2", b"v1", b"v1")
    with pytest.raises(HfHubHTTPError) as e:
        api.create_tag("me/m", tag="v1")
    assert e.value.response.status_code == 409
    with pytest.raises(RevisionNotFoundError):
        api.model_info("me/m", revision="nope")


def test_typed_errors_for_missing_repo_and_file(api, hub_server, tmp_path):
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("me/absent")
    api.create_repo("me/m")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("me/m", "nope.txt", endpoint=hub_server.url, cache_dir=tmp_path / "c")
    with pytest.raises(HfHubHTTPError) as e:
        api.create_repo("me/m")
    assert e.value.response.status_code == 409


def test_writes_need_the_token_and_private_repos_hide(api, hub_server):
    anon = HfApi(endpoint=hub_server.url, token=False)
    with pytest.raises(HfHubHTTPError) as e:
        anon.create_repo("me/x")
    assert e.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as e:
        HfApi(endpoint=hub_server.url, token="hf_wrongwrongwrong").create_repo("me/x")
    assert e.value.response.status_code == 401
    api.create_repo("me/open")
    api.create_repo("me/secret", private=True)
    assert [m.id for m in anon.list_models()] == ["me/open"]
    assert {m.id for m in api.list_models()} == {"me/open", "me/secret"}
    with pytest.raises(RepositoryNotFoundError):
        anon.model_info("me/secret")


def test_resolve_sends_the_headers_the_client_needs(api, hub_server):
    api.create_repo("me/m")
    sha = api.create_commit("me/m", _ops({"w.safetensors": b"x" * 1000}), commit_message="w").oid
    r = httpx2.head(f"{hub_server.url}/me/m/resolve/main/w.safetensors")
    assert r.headers["X-Repo-Commit"] == sha and r.headers["Content-Length"] == "1000"
    assert r.headers["X-Linked-Etag"].strip('"') == r.headers["ETag"].strip('"') and len(r.headers["ETag"]) == 66
    part = httpx2.get(f"{hub_server.url}/me/m/resolve/{sha}/w.safetensors", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == b"x" * 10


def test_model_search_filters_by_name_author_and_card_tags(api):
    api.create_repo("me/alpha")
    api.create_repo("you/beta")
    api.create_commit("me/alpha", _ops({"README.md": b"---\ntags: [hfdistill]\nlicense: mit\n---\n# a\n"}),
                      commit_message="card")
    assert [m.id for m in api.list_models(search="alp")] == ["me/alpha"]
    assert [m.id for m in api.list_models(author="you")] == ["you/beta"]
    assert [m.id for m in api.list_models(filter="hfdistill")] == ["me/alpha"]
    assert api.model_info("me/alpha").card_data.license == "mit"


def test_storage_survives_a_restart(tmp_path, hub_env):
    with start_in_thread(tmp_path / "st", tokens={TOKEN}, orgs=("me",)) as hub:
        HfApi(endpoint=hub.url, token=TOKEN).create_repo("me/m")
        sha = HfApi(endpoint=hub.url, token=TOKEN).create_commit(
            "me/m", _ops({"w.bin": b"\0" * 100}), commit_message="w").oid
    with start_in_thread(tmp_path / "st") as hub:
        assert HfApi(endpoint=hub.url).model_info("me/m").sha == sha
    store = HubStorage(tmp_path / "st")
    assert store.resolve("me/m", "main").files["w.bin"].size == 100
    # no leftovers of uploads: only the live instance's own (empty) temporary folder and its lock
    assert sorted(p.name for p in (tmp_path / "st" / "tmp").iterdir()) == [store.tmp_dir.name,
                                                                           store.tmp_dir.name + ".lock"]
    assert not list(store.tmp_dir.iterdir())
