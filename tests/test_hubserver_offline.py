"""HF_HUB_OFFLINE=1 (what offline users set) and the embedded Hub on 127.0.0.1 (issue point 13).

What fails, found with the real client: every HTTP call of huggingface_hub goes through one request hook that raises
`OfflineModeIsEnabled` before anything is sent, whatever the endpoint: `create_repo`, `whoami`, `model_info`,
`list_models`, `upload_file` / `create_commit` (at preupload or at the repo_info of an empty commit), branch and
tag calls. `snapshot_download` / `hf_hub_download` swallow it and look in the cache: `LocalEntryNotFoundError` unless
that revision was cached before (then they answer from the cache, never seeing newer commits). The server never
sees a request, so nothing server-side can help; `local_endpoint_online(url)` lifts the flag around calls to a
loopback endpoint only.
"""

from __future__ import annotations

import pytest
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

from hfdistill.hubserver import local_endpoint_online, start_in_thread


@pytest.fixture
def offline_hub(tmp_path, hub_env, monkeypatch):
    with start_in_thread(tmp_path / "st") as hub:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 sets it at import
        yield hub


def test_offline_mode_blocks_every_call_to_a_local_endpoint_client_side(offline_hub, tmp_path):
    api = HfApi(endpoint=offline_hub.url, token=False)
    for call in (lambda: api.create_repo("local/m"), lambda: api.model_info("local/m"),
                 lambda: list(api.list_models()),
                 lambda: api.upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id="local/m")):
        with pytest.raises(OfflineModeIsEnabled):
            call()
    with pytest.raises(LocalEntryNotFoundError):
        snapshot_download("local/m", endpoint=offline_hub.url, cache_dir=tmp_path / "c")


def test_local_endpoint_online_publishes_and_pulls_while_offline(offline_hub, tmp_path):
    url = offline_hub.url
    api = HfApi(endpoint=url, token=False)
    with local_endpoint_online(url):
        api.create_repo("local/m")
        sha = api.upload_file(path_or_fileobj=b'{"a": 1}', path_in_repo="config.json", repo_id="local/m").oid
        api.upload_file(path_or_fileobj=b"\0" * 100, path_in_repo="w.bin", repo_id="local/m")  # through LFS
        api.create_tag("local/m", tag="v1", revision=sha)
        local = snapshot_download("local/m", revision="v1", endpoint=url, cache_dir=tmp_path / "c")
        got = hf_hub_download("local/m", "w.bin", endpoint=url, cache_dir=tmp_path / "c")
    assert open(f"{local}/config.json", "rb").read() == b'{"a": 1}' and open(got, "rb").read() == b"\0" * 100
    assert constants.HF_HUB_OFFLINE is True  # restored: the rest of the process stays offline
    with pytest.raises(OfflineModeIsEnabled):
        api.model_info("local/m")


def test_local_endpoint_online_leaves_remote_endpoints_offline_and_nests(offline_hub):
    with local_endpoint_online("https://huggingface.co"):
        assert constants.HF_HUB_OFFLINE is True
    with local_endpoint_online("http://localhost:1"), local_endpoint_online("http://[::1]:2"):
        assert constants.HF_HUB_OFFLINE is False
    with local_endpoint_online(offline_hub.url):
        with local_endpoint_online(offline_hub.url):
            pass
        assert constants.HF_HUB_OFFLINE is False  # an inner block ending does not switch the outer one off
    assert constants.HF_HUB_OFFLINE is True
