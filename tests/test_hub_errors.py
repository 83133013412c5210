"""Commands that reach the Hub fail with one line naming the problem (a missing repo, a rate limit) and exit 2,
and the base-model download of `run` waits out a 429's Retry-After like the publishing calls do."""

from __future__ import annotations

import time

import pytest
import yaml
from huggingface_hub import HfApi, constants

from hfdistill import cli
from hfdistill.pipeline import resolve_base_model
from hfdistill.recipe import load_recipe
from tests.conftest import make_tiny_bert
from tests.hub_fixtures import TOKEN


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # exactly one line
    return err.strip()


def test_pull_of_a_missing_repo_is_one_line_naming_it(hub_server, tmp_path, capsys):
    code = cli.main(["pull", "local/nope", "--endpoint", hub_server.url, "--local-dir", str(tmp_path / "x")])
    assert code == 2
    line = _error_line(capsys)
    assert line.startswith("hfdistill: error: ") and "local/nope" in line and "not found (404)" in line, line


def _recipe(tmp_path, model: str):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "r", "model": model, "tasks": ["sst2"], "hub_dataset": "nyu-mll/glue",
                                    "stages": [{"name": "t", "kind": "finetune"}]}))
    return path


def test_run_with_a_missing_base_model_repo_is_one_line_naming_the_model(hub_server, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", hub_server.url)
    assert cli.main(["run", str(_recipe(tmp_path, "local/missing-base")), "--no-push"]) == 2
    line = _error_line(capsys)
    assert line.startswith("hfdistill: error: model 'local/missing-base': download from the Hub: not found (404)"), \
        line


def test_the_base_model_download_waits_out_a_rate_limit(hub_server, tmp_path, minilm_path, monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", hub_server.url)  # what HF_ENDPOINT sets when huggingface_hub loads
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub_server.url + "/{repo_id}/resolve/{revision}/{filename}")
    api = HfApi(endpoint=hub_server.url, token=TOKEN)
    api.create_repo("me/base")
    api.upload_folder(folder_path=make_tiny_bert(tmp_path / "base", minilm_path), repo_id="me/base")
    fault = hub_server.faults.add("GET", r"^/api/models/me/base", status=429, headers={"Retry-After": "1"})
    started = time.monotonic()
    folder = resolve_base_model(load_recipe(_recipe(tmp_path, "me/base")))
    assert fault.hits == 1 and (folder / "config.json").is_file()
    assert time.monotonic() - started >= 1.0  # the advised second, not the default 0.5 s back-off


@pytest.fixture(autouse=True)
def _online(hub_env):
    """The hermetic huggingface_hub environment of the Hub tests (online, own cache, the test token)."""
