"""Hub operations as users call them: `publish/` (push, pull, cards) combined with `hubserver/` (the embedded Hub).

`endpoint: embedded` (in a recipe or on the command line) means: start the embedded Hub-compatible server on
127.0.0.1 over `storage` for the duration of the call and talk to it with the unmodified huggingface_hub client.
Everything else goes straight to `hfdistill.publish`. A Hub on this machine (the embedded one, or a `hub serve`
on 127.0.0.1) is reached even with HF_HUB_OFFLINE=1, which offline users set: it is not the internet
(`hubserver.local_endpoint_online`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import contextlib
from typing import Iterator

from hfdistill.errors import HubError
from hfdistill.hubserver import local_endpoint_online, start_in_thread
from hfdistill.hubserver import serve as _serve
from hfdistill.hubserver.storage import is_hub_storage
from hfdistill.hubserver.webhooks import WebhookTarget
from hfdistill.publish import collection as _collection
from hfdistill.publish import leaderboard as _leaderboard
from hfdistill.publish import pull as _pull
from hfdistill.publish import push as _push
from hfdistill.publish import refresh as _refresh
from hfdistill.publish.client import RETRY_WAITS, token_for_recipe_endpoint
from hfdistill.schema import EMBEDDED, PublishConfig


@contextlib.contextmanager
def embedded_hub(storage: Path, must_exist: bool = False) -> Iterator[str]:
    """The embedded Hub on 127.0.0.1 (free port) serving `storage`, reachable while HF_HUB_OFFLINE=1; yields its
    URL. must_exist: `storage` must already hold a Hub (reading from one: do not create an empty Hub)."""
    storage = Path(storage)
    if must_exist and not is_hub_storage(storage):
        raise HubError(f"{storage.resolve()} holds no embedded Hub (nothing was ever pushed there): check "
                       f"--storage / publish.storage")
    running = start_in_thread(storage)
    try:
        with local_endpoint_online(running.url):
            yield running.url
    finally:
        running.stop()


def push_run(run_dir: Path, publish: Optional[PublishConfig] = None, *, token: Optional[str | bool] = None,
             endpoint: Optional[str] = None, force: bool = False, make_private: bool = False,
             log: Callable[[str], None] = print, retry_waits: tuple[float, ...] = RETRY_WAITS,
             dry_run: bool = False) -> list:
    """Refresh the cards and push every model of a run (see `hfdistill.publish.push.push_run`); `embedded`
    starts the embedded Hub over `publish.storage` for the push. `endpoint` is the user's choice (it overrides
    `publish.endpoint`, and only a user-chosen endpoint gets the user's token without asking)."""
    publish = publish or _push.publish_config_of(Path(run_dir).resolve())
    options = dict(force=force, make_private=make_private, log=log, retry_waits=retry_waits, dry_run=dry_run)
    if (endpoint or publish.endpoint) != EMBEDDED:
        with local_endpoint_online(endpoint or publish.endpoint):
            results = _push.push_run(run_dir, publish, token=token, endpoint=endpoint, **options)
            if publish.collection and not dry_run:
                if endpoint is None and publish.endpoint is not None:  # the push's rule: no token unasked
                    token = token_for_recipe_endpoint(publish.endpoint, token, log=lambda _m: None)
                _collection.collection([run_dir], publish=publish, endpoint=endpoint or publish.endpoint,
                                       token=token, log=log, progress=False)
            return results
    if publish.repo_prefix is None:  # nobody to ask "who am I": the embedded Hub's namespace is `local`
        publish = publish.model_copy(update={"repo_prefix": "local"})
    if dry_run:  # no server needed to list what would be pushed
        return _push.push_run(run_dir, publish, token=False, endpoint=EMBEDDED, **options)
    with embedded_hub(publish.storage) as url:
        # The embedded Hub needs no token: never send the user's real one to it.
        results = _push.push_run(run_dir, publish, token=False if token is None else token, endpoint=url,
                                 **options)
        if publish.collection:
            _collection.collection([run_dir], publish=publish, endpoint=url, token=False if token is None else token,
                                   log=log, progress=False)
    log(f"Published {len(results)} model(s) to the embedded Hub in {Path(publish.storage).resolve()}.")
    log(f"Browse the cards: hfdistill hub serve --storage {publish.storage}  → http://127.0.0.1:8787/")
    return results


@contextlib.contextmanager
def reach(endpoint: Optional[str], storage: Path, token: Optional[str | bool]) -> Iterator[tuple[Optional[str],
                                                                                                Optional[str | bool]]]:
    """(URL, token) to talk to `endpoint`: `embedded` starts the embedded Hub over `storage` (which must hold one)
    and sends no token; a Hub on this machine is reached while HF_HUB_OFFLINE=1."""
    if endpoint != EMBEDDED:
        with local_endpoint_online(endpoint):
            yield endpoint, token
        return
    with embedded_hub(Path(storage), must_exist=True) as url:
        yield url, False if token is None else token


def refresh(repo_ids: list[str], *, author: Optional[str] = None, endpoint: Optional[str] = None,
            storage: Path = Path("hub-storage"), token: Optional[str | bool] = None,
            **kwargs) -> list[_refresh.RefreshResult]:
    """Regenerate published models' cards from their repos' records (see `hfdistill.publish.refresh.refresh`)."""
    with reach(endpoint, storage, token) as (url, token):
        return _refresh.refresh(repo_ids, author=author, endpoint=url, token=token, **kwargs)


def collection(run_dirs: list[Path], title: Optional[str] = None, *, endpoint: Optional[str] = None,
               storage: Optional[Path] = None, token: Optional[str | bool] = None, repo_prefix: Optional[str] = None,
               **kwargs) -> _collection.CollectionResult:
    """Gather the published models of runs into a Hub collection (see `hfdistill.publish.collection`); the
    endpoint, storage and repo prefix default to the first run's `publish:`."""
    publish = _push.publish_config_of(Path(run_dirs[0]).resolve())
    endpoint = endpoint or publish.endpoint
    if repo_prefix is None and publish.repo_prefix is None and endpoint == EMBEDDED:
        repo_prefix = "local"  # the embedded Hub's namespace, as for a push
    if repo_prefix is not None:
        kwargs.setdefault("publish", publish.model_copy(update={"repo_prefix": repo_prefix}))
    with reach(endpoint, storage or publish.storage, token) as (url, token):
        return _collection.collection(run_dirs, title, endpoint=url, token=token, **kwargs)


def leaderboard(author: str, *, endpoint: Optional[str] = None, storage: Path = Path("hub-storage"),
                token: Optional[str | bool] = None, **kwargs) -> _leaderboard.Leaderboard:
    """Every hfdistill model of `author` in one table (see `hfdistill.publish.leaderboard`)."""
    with reach(endpoint, storage, token) as (url, token):
        return _leaderboard.leaderboard(author, endpoint=url, token=token, **kwargs)


def pull(repo_id: str, *, endpoint: Optional[str] = None, storage: Path = Path("hub-storage"),
         **kwargs) -> _pull.PullResult:
    """Download and check a published model (see `hfdistill.publish.pull.pull`); `embedded` reads `storage`
    and, needing no token, is sent none."""
    if endpoint != EMBEDDED:
        with local_endpoint_online(endpoint):
            return _pull.pull(repo_id, endpoint=endpoint, **kwargs)
    if kwargs.get("token") is None:
        kwargs["token"] = False
    with embedded_hub(Path(storage), must_exist=True) as url:
        return _pull.pull(repo_id, endpoint=url, **kwargs)


def serve(host: str, port: int, storage: Path, token: Optional[str] = None, orgs: tuple[str, ...] = (),
          create: bool = False, webhooks: tuple[WebhookTarget, ...] = ()) -> None:
    """Serve the embedded Hub (API + web page) until interrupted. A folder that holds no Hub is an error (a typo
    in --storage would otherwise show an empty Hub) unless `create`."""
    if not create and not is_hub_storage(Path(storage)):
        raise HubError(f"{Path(storage).resolve()} holds no embedded Hub: pass --create to start an empty one there, "
                       f"or point --storage at the folder a push wrote (publish.storage)")
    _serve(host, port, Path(storage), token, orgs=orgs, webhooks=webhooks)
