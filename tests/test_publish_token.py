"""Which endpoint gets the user's own token (HF_TOKEN / `hf auth login`): only one the user chose outside the
recipe. A shared recipe's `publish.endpoint` gets none unless the user opts in; the embedded Hub never does.

A capture server (stdlib http.server) stands in for a stranger's endpoint: it records the Authorization header of
every request and answers 404, so each push stops at its first request."""

from __future__ import annotations

import http.server
import threading

import pytest
import yaml

from hfdistill import hub
from hfdistill.cli import main
from hfdistill.errors import HubError

SECRET = "hf_xxxTheUsersOwnToken0123456789"


class _Capture(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization")))
        if int(self.headers.get("Content-Length") or 0):
            self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"error": "captured"}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def capture(hub_env, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.delenv("HFDISTILL_PUBLISH_TOKEN", raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    server.seen = []
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _recipe_names(run, url) -> None:
    """The run's recipe copy names `url` as publish.endpoint (as a shared recipe would)."""
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["publish"] = {"endpoint": url, "repo_prefix": "local/tiny"}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))


def _tokens(server) -> set:
    assert server.seen, "the push never reached the endpoint"
    return {auth for _, _, auth in server.seen}


def test_an_endpoint_named_by_the_recipe_gets_no_token_and_the_user_is_told(tiny_run, capture, capsys):
    _recipe_names(tiny_run, capture.url)
    assert main(["push", str(tiny_run)]) == 2
    out = capsys.readouterr()
    assert _tokens(capture) == {None}
    assert f"publish.endpoint {capture.url} comes from the recipe: sending it no token" in out.out
    assert SECRET not in out.out + out.err

    capture.seen.clear()  # `hfdistill run` publishes the same way: the endpoint comes from the recipe
    with pytest.raises(HubError):
        hub.push_run(tiny_run, log=lambda line: None)
    assert _tokens(capture) == {None}


def test_the_recipe_endpoint_gets_a_token_only_when_the_user_opts_in(tiny_run, capture, monkeypatch):
    _recipe_names(tiny_run, capture.url)
    assert main(["push", str(tiny_run), "--send-token"]) == 2
    assert _tokens(capture) == {f"Bearer {SECRET}"}

    capture.seen.clear()
    with pytest.raises(HubError):
        hub.push_run(tiny_run, token=True, log=lambda line: None)
    assert _tokens(capture) == {f"Bearer {SECRET}"}

    capture.seen.clear()  # a token meant for this endpoint, not the user's Hub token
    monkeypatch.setenv("HFDISTILL_PUBLISH_TOKEN", "hf_onlyForThisEndpoint0123")
    assert main(["push", str(tiny_run)]) == 2
    assert _tokens(capture) == {"Bearer hf_onlyForThisEndpoint0123"}


def test_an_endpoint_the_user_chose_gets_the_users_token(tiny_run, capture, monkeypatch):
    _recipe_names(tiny_run, "http://127.0.0.1:9")  # the recipe's choice is overridden on the command line
    assert main(["push", str(tiny_run), "--endpoint", capture.url]) == 2
    assert _tokens(capture) == {f"Bearer {SECRET}"}

    import huggingface_hub.constants as c

    capture.seen.clear()  # HF_ENDPOINT (read by huggingface_hub at import) names the same endpoint as the recipe
    monkeypatch.setattr(c, "ENDPOINT", capture.url)
    _recipe_names(tiny_run, capture.url)
    assert main(["push", str(tiny_run)]) == 2
    assert _tokens(capture) == {f"Bearer {SECRET}"}


def test_pull_from_the_embedded_hub_sends_no_token(capture, monkeypatch, tmp_path):
    class _Embedded:  # `--endpoint embedded` talks to the capture server instead of starting the real one
        def __init__(self, storage, **_):
            pass

        def __enter__(self):
            return capture.url

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(hub, "embedded_hub", _Embedded)
    assert main(["pull", "local/x", "--endpoint", "embedded", "--storage", str(tmp_path / "s"),
                 "--local-dir", str(tmp_path / "x")]) == 2
    assert _tokens(capture) == {None}
