"""Hub operations as users call them: `publish/` (push, pull, cards) combined with `hubserver/` (the embedded Hub).

`endpoint: embedded` (in a recipe or on the command line) means: start the embedded Hub-compatible server on
127.0.0.1 over `storage` for the duration of the call and talk to it with the unmodified huggingface_hub client.
Everything else goes straight to `hfdistill.publish`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from hfdistill.hubserver import serve as _serve
from hfdistill.hubserver import start_in_thread
from hfdistill.publish import pull as _pull
from hfdistill.publish import push as _push
from hfdistill.publish.client import RETRY_WAITS
from hfdistill.schema import EMBEDDED, PublishConfig


class embedded_hub:
    """Context manager: the embedded Hub on 127.0.0.1 (free port) serving `storage`; yields its URL."""

    def __init__(self, storage: Path):
        self.storage = Path(storage)
        self.running = None

    def __enter__(self) -> str:
        self.running = start_in_thread(self.storage)
        return self.running.url

    def __exit__(self, *exc: object) -> None:
        if self.running is not None:
            self.running.stop()


def push_run(run_dir: Path, publish: Optional[PublishConfig] = None, *, token: Optional[str | bool] = None,
             endpoint: Optional[str] = None, log: Callable[[str], None] = print,
             retry_waits: tuple[float, ...] = RETRY_WAITS) -> list[_push.PushResult]:
    """Refresh the cards and push every model of a run (see `hfdistill.publish.push.push_run`); `embedded`
    starts the embedded Hub over `publish.storage` for the push."""
    publish = publish or _push.publish_config_of(Path(run_dir).resolve())
    endpoint = endpoint or publish.endpoint
    if endpoint != EMBEDDED:
        return _push.push_run(run_dir, publish, token=token, endpoint=endpoint, log=log, retry_waits=retry_waits)
    if publish.repo_prefix is None:  # nobody to ask "who am I": the embedded Hub's namespace is `local`
        publish = publish.model_copy(update={"repo_prefix": "local"})
    with embedded_hub(publish.storage) as url:
        # The embedded Hub needs no token: never send the user's real one to it.
        results = _push.push_run(run_dir, publish, token=False if token is None else token, endpoint=url, log=log,
                                 retry_waits=retry_waits)
    log(f"Published {len(results)} model(s) to the embedded Hub in {Path(publish.storage).resolve()}.")
    log(f"Browse the cards: hfdistill hub serve --storage {publish.storage}  → http://127.0.0.1:8787/")
    return results


def pull(repo_id: str, *, endpoint: Optional[str] = None, storage: Path = Path("hub-storage"),
         **kwargs) -> _pull.PullResult:
    """Download and check a published model (see `hfdistill.publish.pull.pull`); `embedded` reads `storage`."""
    if endpoint != EMBEDDED:
        return _pull.pull(repo_id, endpoint=endpoint, **kwargs)
    with embedded_hub(Path(storage)) as url:
        return _pull.pull(repo_id, endpoint=url, **kwargs)


def serve(host: str, port: int, storage: Path, token: Optional[str] = None) -> None:
    """Serve the embedded Hub (API + web page) until interrupted."""
    _serve(host, port, Path(storage), token)
