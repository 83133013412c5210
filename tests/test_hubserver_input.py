"""Hostile or unusual input, sent by the real client or as raw HTTP: card metadata, commit paths, big bodies, error
text in headers, namespaces, revisions spelled as refs, tag messages."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError, RevisionNotFoundError

from hfdistill.errors import HubError
from hfdistill.hubserver import serve, start_in_thread
from tests.hub_fixtures import TOKEN

ALIAS_BOMB = ("---\ntags: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
              "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
              "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n---\n# bomb\n")


@pytest.fixture
def hub(tmp_path, hub_env):
    """No token: anyone on 127.0.0.1 may write (the namespace tests start their own server)."""
    with start_in_thread(tmp_path / "st") as running:
        HfApi(endpoint=running.url, token=False).create_repo("local/m")
        yield running


def _api(hub) -> HfApi:
    return HfApi(endpoint=hub.url, token=False)


def _readme(hub, text: str) -> None:
    _api(hub).create_commit("local/m", [CommitOperationAdd("README.md", text.encode())], commit_message="card")


def _raw_commit(hub, *lines: dict, repo: str = "local/m", rev: str = "main") -> httpx2.Response:
    body = "\n".join(json.dumps(x) for x in [{"key": "header", "value": {"summary": "raw"}}, *lines])
    return httpx2.post(f"{hub.url}/api/models/{repo}/commit/{rev}", content=body.encode(), timeout=30,
                       headers={"content-type": "application/x-ndjson"})


def _inline(path: str, data: bytes) -> dict:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}}


def _plant_readme(root: Path, repo_id: str, text: str) -> None:
    """Put a README into the head commit the way an older server stored it, without any check."""
    data = text.encode()
    sha = hashlib.sha256(data).hexdigest()
    (root / "objects" / sha[:2]).mkdir(parents=True, exist_ok=True)
    (root / "objects" / sha[:2] / sha).write_bytes(data)
    repo = root / "repos" / "models" / repo_id
    head = json.loads((repo / "refs.json").read_text())["branches"]["main"]
    commit = json.loads((repo / "commits" / f"{head}.json").read_text())
    blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    commit["files"]["README.md"] = {"sha256": sha, "size": len(data), "blob_id": blob_id, "lfs": False}
    (repo / "commits" / f"{head}.json").write_text(json.dumps(commit))


# ---- point 8: card metadata ----------------------------------------------------------------------------------
BAD_CARDS = [
    ("---\ntags: [{a: 1}]\n---\n", '"tags"'),
    ("---\nbase_model: 5\n---\n", '"base_model"'),
    ("---\nmodel-index: [5]\n---\n", '"model-index"'),
    ("---\n- just\n- a list\n---\n", "mapping"),
    ("---\ntags: [unclosed\n---\n", "YAML error"),
    (ALIAS_BOMB, "expands to more than"),
]


@pytest.mark.parametrize("card, field", BAD_CARDS)
def test_a_commit_with_bad_card_metadata_is_refused_with_the_reason(hub, card, field):
    r = _raw_commit(hub, _inline("README.md", card.encode()))
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("Invalid metadata in README.md: ") and field in r.json()["error"]
    assert _api(hub).list_repo_files("local/m") == [".gitattributes"]


def test_the_client_checks_cards_with_the_same_rules_before_committing(hub):
    """huggingface_hub posts README.md to /api/validate-yaml before a commit and refuses to commit on errors."""
    for card, field in BAD_CARDS:
        with pytest.raises(ValueError, match="Invalid metadata in README.md") as e:
            _readme(hub, card)
        assert field in str(e.value)


def test_good_cards_still_commit_and_list(hub):
    card = ("---\nlicense: mit\ntags: [hfdistill, glue]\nbase_model: local/teacher\ndatasets: nyu-mll/glue\n"
            "model-index:\n- name: m\n  results:\n  - task: {type: text-classification}\n"
            "    dataset: {type: nyu-mll/glue, name: GLUE SST2}\n    metrics:\n    - {type: accuracy, value: 0.9}\n"
            "date: 2024-01-02\n---\n# m\n")
    _readme(hub, card)
    info = _api(hub).model_info("local/m")
    assert info.card_data.license == "mit" and info.card_data.eval_results[0].metric_value == 0.9
    assert {"hfdistill", "dataset:nyu-mll/glue", "base_model:local/teacher"} <= set(info.tags)


def test_repos_with_bad_legacy_metadata_are_listed_without_failing(hub):
    api = _api(hub)
    for name, card in (("tags", "---\ntags: [{a: 1}]\nlicense: mit\n---\n# t\n"), ("base", "---\nbase_model: 5\n---\n"),
                       ("bomb", ALIAS_BOMB), ("nan", "---\nlicense: mit\nscore: .nan\n---\n")):
        api.create_repo(f"local/{name}")
        _plant_readme(hub.storage, f"local/{name}", card)
    models = {m.id: m for m in api.list_models(full=True, cardData=True)}
    assert set(models) == {"local/m", "local/tags", "local/base", "local/bomb", "local/nan"}
    assert models["local/tags"].card_data.license == "mit"  # the malformed key is dropped, the rest served
    assert httpx2.get(f"{hub.url}/", timeout=10).status_code == 200
    assert httpx2.get(f"{hub.url}/local/bomb", timeout=10).status_code == 200
    bomb = httpx2.get(f"{hub.url}/api/models/local/bomb", timeout=10)
    assert bomb.status_code == 200 and len(bomb.content) < 10_000  # was 6.7 MB


# ---- point 9: paths ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [".", "a//b", "a/./b", "a/../b", "..\\..\\evil.txt", "a\0b", "a\nb", "x" * 5000,
                                  "d/" + "y" * 300, ".git/config", "a/.git/hooks/x", ".cache/huggingface/x.lock",
                                  "/abs.txt", "dir/", ""])
def test_paths_no_checkout_could_hold_are_refused(hub, path):
    r = _raw_commit(hub, _inline(path, b"x"))
    assert r.status_code == 400 and "invalid path" in r.json()["error"], r.text
    assert _api(hub).list_repo_files("local/m") == [".gitattributes"]


def test_a_path_cannot_be_both_a_file_and_a_folder(hub, tmp_path):
    assert _raw_commit(hub, _inline("a", b"file")).status_code == 200
    r = _raw_commit(hub, _inline("a/b", b"x"))
    assert r.status_code == 400 and "'a' is a file" in r.json()["error"]
    assert _raw_commit(hub, _inline("d/e", b"x")).status_code == 200
    r = _raw_commit(hub, _inline("d", b"x"))
    assert r.status_code == 400 and "'d' is already a folder" in r.json()["error"]
    assert _raw_commit(hub, _inline("sub/ok name é.txt", b"fine")).status_code == 200
    local = Path(snapshot_download("local/m", endpoint=hub.url, cache_dir=tmp_path / "c"))
    assert (local / "sub" / "ok name é.txt").read_bytes() == b"fine"


# ---- point 10: inline bodies ---------------------------------------------------------------------------------
def test_inline_files_above_the_lfs_threshold_are_refused_and_the_client_uses_lfs(tmp_path, hub_env):
    with start_in_thread(tmp_path / "st", lfs_threshold=1000, max_commit_body=20_000) as hub:
        api = _api(hub)
        api.create_repo("local/m")
        r = _raw_commit(hub, _inline("big.txt", b"x" * 1000))
        assert r.status_code == 413 and "through LFS" in r.json()["error"]
        r = _raw_commit(hub, *[_inline(f"f{i}.txt", b"y" * 900) for i in range(20)])  # ~24 kB of NDJSON
        assert r.status_code == 413 and "larger than 20000 bytes" in r.json()["error"]
        api.create_commit("local/m", [CommitOperationAdd("big.txt", b"x" * 5000)], commit_message="via lfs")
        [item] = [f for f in api.list_repo_tree("local/m") if f.path == "big.txt"]
        assert item.lfs is not None and item.size == 5000


# ---- point 11: error text in headers -------------------------------------------------------------------------
@pytest.mark.parametrize("url, status", [
    ("/api/models/local%00x/m", 404), ("/api/models/local/m%0aX-Evil:%201", 404),
    ("/api/models/local/m/revision/a%0d%0ab", 404), ("/api/models/local/m/revision/%00", 404),
    ("/local/m/resolve/main/%E6%97%A5%E6%9C%AC.txt", 404), ("/local/m/resolve/ma%00in/a.txt", 404),
])
def test_raw_input_never_reaches_a_header_raw(hub, url, status):
    r = httpx2.get(hub.url + url, timeout=10)  # a connection closed mid-answer raises here
    assert r.status_code == status
    assert all(0x20 <= ord(c) < 0x7f for c in r.headers["x-error-message"])
    assert "X-Evil" not in r.headers


def test_a_missing_file_with_a_non_latin1_name_is_entry_not_found(hub, tmp_path):
    with pytest.raises(RemoteEntryNotFoundError):  # not the cache's LocalEntryNotFoundError after a 400
        hf_hub_download("local/m", "日本語.txt", endpoint=hub.url, cache_dir=tmp_path / "c")


# ---- point 12: smaller things --------------------------------------------------------------------------------
def test_serving_on_all_interfaces_without_a_token_names_the_real_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("HFDISTILL_HUB_TOKEN", raising=False)
    with pytest.raises(HubError) as e:
        serve("0.0.0.0", 0, tmp_path / "st", None)
    assert "HFDISTILL_HUB_TOKEN" in str(e.value) and "--token" not in str(e.value)


def test_a_token_writes_only_to_the_namespaces_whoami_names(tmp_path, hub_env):
    with start_in_thread(tmp_path / "st", tokens={TOKEN}, orgs=("team",)) as hub:
        api = HfApi(endpoint=hub.url, token=TOKEN)
        me = api.whoami()
        assert [me["name"], *[o["name"] for o in me["orgs"]]] == ["local", "team"]
        api.create_repo("local/a")
        api.create_repo("team/b")
        with pytest.raises(HfHubHTTPError) as e:
            api.create_repo("someone-else/c")
        assert e.value.response.status_code == 403 and "local, team" in str(e.value)
    with start_in_thread(tmp_path / "st", tokens={TOKEN}) as hub:  # the same repos, "team" no longer granted
        api = HfApi(endpoint=hub.url, token=TOKEN)
        with pytest.raises(HfHubHTTPError) as e:
            api.create_commit("team/b", [CommitOperationAdd("x.txt", b"x")], commit_message="x")
        assert e.value.response.status_code == 403
        api.create_commit("local/a", [CommitOperationAdd("x.txt", b"x")], commit_message="x")


def test_revisions_spelled_as_refs_are_accepted(hub, tmp_path):
    api = _api(hub)
    sha = api.create_commit("local/m", [CommitOperationAdd("f.txt", b"v1")], commit_message="v1",
                            revision="refs/heads/main").oid
    api.create_tag("local/m", tag="v1")
    assert api.model_info("local/m", revision="refs/heads/main").sha == sha
    assert api.model_info("local/m", revision="refs/tags/v1").sha == sha
    got = hf_hub_download("local/m", "f.txt", revision="refs/heads/main", endpoint=hub.url, cache_dir=tmp_path / "c")
    assert Path(got).read_bytes() == b"v1"
    assert [f.path for f in api.list_repo_tree("local/m", revision="refs/tags/v1")] == [".gitattributes", "f.txt"]
    with pytest.raises(RevisionNotFoundError):
        api.model_info("local/m", revision="refs/heads/nope")


def test_tag_messages_are_kept_and_returned(hub):
    api = _api(hub)
    api.create_tag("local/m", tag="v1", tag_message="first release: sst2 0.91")
    api.create_tag("local/m", tag="v0")
    tags = httpx2.get(f"{hub.url}/api/models/local/m/refs", timeout=10).json()["tags"]
    assert {t["name"]: t.get("message") for t in tags} == {"v0": None, "v1": "first release: sst2 0.91"}
    assert "first release: sst2 0.91" in httpx2.get(f"{hub.url}/local/m", timeout=10).text
    api.delete_tag("local/m", tag="v1")
    api.create_tag("local/m", tag="v1")
    tags = httpx2.get(f"{hub.url}/api/models/local/m/refs", timeout=10).json()["tags"]
    assert all("message" not in t for t in tags)


def test_a_bad_branch_name_is_reported_in_plain_words(hub):
    with pytest.raises(HfHubHTTPError) as e:
        _api(hub).create_branch("local/m", branch="no spaces allowed")
    assert e.value.response.status_code == 400 and "invalid branch name 'no spaces allowed'" in str(e.value)
