"""Run the embedded Hub: in the foreground (`serve`, `python -m hfdistill.hubserver`), or in a background thread on
127.0.0.1 (`start_in_thread`: pytest fixture, quickstart publishing); and talk to it while HF_HUB_OFFLINE=1."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

from hfdistill.errors import HubError
from hfdistill.hubserver.app import create_app
from hfdistill.hubserver.faults import Faults
from hfdistill.hubserver.webhooks import WebhookTarget

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_online = {"depth": 0, "saved": False}
_online_lock = threading.Lock()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), bound before the server starts so its real port is known."""
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as e:  # busy port, unknown host, no permission: one line, not a traceback
        reason = "the port is in use (another `hub serve`?): choose another with --port" \
            if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        raise HubError(f"cannot serve on {host}:{port}: {reason}") from None


@dataclass
class RunningHub:
    url: str
    storage: Path
    faults: Faults
    _server: object
    _thread: threading.Thread
    app: Any = None

    def stop(self) -> None:
        self._server.should_exit = True  # type: ignore[attr-defined]
        self._thread.join(timeout=10)
        if self.app is not None:
            if self.app.state.hub.webhooks is not None:
                self.app.state.hub.webhooks.close()
            self.app.state.hub.storage.close()

    def __enter__(self) -> "RunningHub":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(storage: Path, tokens: set[str] | None = None, faults: Faults | None = None,
                    host: str = "127.0.0.1", port: int = 0, timeout: float = 20.0, **app_options: Any) -> RunningHub:
    """Start the server on `host:port` (port 0: a free one) and return once it accepts connections.

    app_options go to `create_app` (user, orgs, lfs_threshold, max_commit_body, webhooks).
    """
    import uvicorn

    faults = faults if faults is not None else Faults()
    app = create_app(Path(storage), tokens, faults, **app_options)
    sock = bind(host, port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="critical", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"hub-{port}")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the embedded Hub did not start on {host}:{port}")
        time.sleep(0.02)
    return RunningHub(url=f"http://{host}:{port}", storage=Path(storage), faults=faults, _server=server,
                      _thread=thread, app=app)


def serve(host: str = "127.0.0.1", port: int = 8787, storage: Path | str = "hub-storage",
          token: str | None = None, orgs: tuple[str, ...] = (), webhooks: tuple[WebhookTarget, ...] = ()) -> None:
    """Run the embedded Hub in the foreground (`hfdistill hub serve`; port 0 picks a free port and prints it).

    With `token` (or HFDISTILL_HUB_TOKEN) writes need that token, and go only to the namespaces whoami names (the
    user `local` and `orgs`); without one, the server binds only to a loopback address, where anyone on the machine
    may write. webhooks: where to POST the Hub's webhook payload after commits (`hubserver.webhooks`).
    """
    import uvicorn

    token = token or os.environ.get("HFDISTILL_HUB_TOKEN") or None
    if token is None and host not in LOOPBACK_HOSTS:
        raise HubError(f"refusing to serve on {host} without a token: set HFDISTILL_HUB_TOKEN to a secret of your "
                       f"choice (clients then send it as their Hub token, e.g. HF_TOKEN) or bind to 127.0.0.1")
    app = create_app(Path(storage), {token} if token else None, orgs=orgs, webhooks=tuple(webhooks))
    sock = bind(host, port)
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"Embedded Hub on http://{shown}:{port}  (storage: {Path(storage).resolve()})", flush=True)
    print(f"  browse the models: http://{shown}:{port}/   use it: HF_ENDPOINT=http://{shown}:{port}", flush=True)
    for w in webhooks:
        print(f"  webhook: commits to {', '.join(w.watch) or 'any repo'} → POST {w.url}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off")).run(sockets=[sock])


def is_local_endpoint(url: str) -> bool:
    """Whether `url` names this machine (loopback address or `localhost`)."""
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def local_endpoint_online(url: str | None) -> Iterator[None]:
    """Let huggingface_hub (and transformers) reach `url` while HF_HUB_OFFLINE=1, when `url` is on this machine.

    Why: offline mode is enforced inside the client. Every request made through huggingface_hub's HTTP session
    passes a hook that raises `OfflineModeIsEnabled` when `constants.HF_HUB_OFFLINE` is set, before anything is
    sent, whatever the endpoint; `snapshot_download` / `hf_hub_download` then fall back to the cache and fail with
    `LocalEntryNotFoundError`, and transformers forces `local_files_only`. No server answer can change that. A user
    who set HF_HUB_OFFLINE=1 means "do not go to the internet", which talking to 127.0.0.1 respects, so for a local
    `url` this clears the flag for the duration of the block and restores it when the last such block ends (the
    flag is process-wide: other threads are online meanwhile too). For any other `url` it does nothing.

        with local_endpoint_online(endpoint):
            HfApi(endpoint=endpoint).create_commit(...)
    """
    from huggingface_hub import constants

    if not url or not is_local_endpoint(url):
        yield
        return
    with _online_lock:
        if _online["depth"] == 0:
            _online["saved"] = constants.HF_HUB_OFFLINE
        _online["depth"] += 1
        constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        with _online_lock:
            _online["depth"] -= 1
            if _online["depth"] == 0:
                constants.HF_HUB_OFFLINE = _online["saved"]
