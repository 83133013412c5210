"""Pushing into repos that already exist: `private` never silently publishes into a public repo, and a push never
deletes a file that hfdistill did not write (a hand-made repo is refused unless forced)."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from hfdistill.cli import main
from hfdistill.errors import HubError
from hfdistill.publish.push import push_folder
from tests.hub_fixtures import TOKEN

FAST = (0.05, 0.05)
QUIET = {"retry_waits": FAST, "log": lambda line: None}


def test_private_is_refused_for_an_existing_public_repo_unless_it_is_made_private(tiny_run, hub_server):
    folder = tiny_run / "teacher" / "sst2"
    api, anonymous = HfApi(endpoint=hub_server.url, token=TOKEN), HfApi(endpoint=hub_server.url, token=False)
    api.create_repo("local/pub")
    with pytest.raises(HubError, match=r"local/pub: the repo exists and is public, .*--make-private"):
        push_folder(folder, "local/pub", endpoint=hub_server.url, private=True, **QUIET)
    assert anonymous.list_repo_files("local/pub") == [".gitattributes"]  # nothing was committed

    res = push_folder(folder, "local/pub", endpoint=hub_server.url, private=True, make_private=True, **QUIET)
    assert res.changed and api.model_info("local/pub").private is True
    with pytest.raises(HfHubHTTPError):
        anonymous.model_info("local/pub")

    new = push_folder(folder, "local/fresh", endpoint=hub_server.url, private=True, **QUIET)  # new repos: fine
    assert new.changed and api.model_info("local/fresh").private is True


def test_cli_private_push_into_public_repos_fails_cleanly_then_make_private_pushes(tiny_run, hub_server, capsys):
    api = HfApi(endpoint=hub_server.url, token=TOKEN)
    api.create_repo("local/tiny-teacher-sst2")
    argv = ["push", str(tiny_run), "--endpoint", hub_server.url, "--repo-prefix", "local/tiny", "--private"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("hfdistill: error: push local/tiny-teacher-sst2: the repo exists and is public")
    assert err.count("\n") == 1
    assert main(argv + ["--make-private"]) == 0
    assert all(api.model_info(f"local/tiny-{s}-sst2").private for s in ("teacher", "student", "student-8bit"))


def test_a_push_never_deletes_files_that_hfdistill_did_not_write(tiny_run, hub_server):
    folder = tiny_run / "teacher" / "sst2"
    api = HfApi(endpoint=hub_server.url, token=TOKEN)
    api.create_repo("local/hand")
    api.upload_file(path_or_fileobj=b"run,accuracy\n1,0.91\n", path_in_repo="important_results.csv",
                    repo_id="local/hand")
    with pytest.raises(HubError, match=r"already holds files that hfdistill did not write \(important_results"
                                       r"\.csv\).*--force"):
        push_folder(folder, "local/hand", endpoint=hub_server.url, **QUIET)
    assert set(api.list_repo_files("local/hand")) == {".gitattributes", "important_results.csv"}

    lines: list[str] = []
    (folder / "notes.txt").write_text("written by this run\n")
    push_folder(folder, "local/hand", endpoint=hub_server.url, force=True, retry_waits=FAST, log=lines.append)
    files = set(api.list_repo_files("local/hand"))
    assert {"important_results.csv", "model.safetensors", "notes.txt"} <= files
    assert any("keeping 1 file(s) hfdistill did not write: important_results.csv" in ln for ln in lines)

    (folder / "notes.txt").unlink()  # a file hfdistill wrote and the folder no longer has: deleted
    push_folder(folder, "local/hand", endpoint=hub_server.url, **QUIET)
    files = set(api.list_repo_files("local/hand"))
    assert "notes.txt" not in files and {"important_results.csv", "model.safetensors"} <= files


def test_a_repo_an_earlier_hfdistill_pushed_is_updated_without_force_and_keeps_unknown_files(tiny_run, hub_server):
    """Repos pushed before hfdistill kept a manifest: its lineage.json identifies them; nothing is deleted."""
    folder = tiny_run / "student" / "sst2"
    api = HfApi(endpoint=hub_server.url, token=TOKEN)
    api.create_repo("local/old")
    api.upload_file(path_or_fileobj=(folder / "lineage.json").read_bytes(), path_in_repo="lineage.json",
                    repo_id="local/old")
    api.upload_file(path_or_fileobj=b"old", path_in_repo="stale.bin", repo_id="local/old")
    assert "stage_key" in json.loads((folder / "lineage.json").read_text())
    res = push_folder(folder, "local/old", endpoint=hub_server.url, **QUIET)
    assert res.changed and {"stale.bin", "config.json"} <= set(api.list_repo_files("local/old"))
