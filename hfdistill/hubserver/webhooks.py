"""Webhooks sent by the embedded Hub: after a commit to a watched repo, POST the Hub's webhook payload to a URL.

The payload is the Hub's (https://huggingface.co/docs/hub/webhooks, version 3): `event` {action: update, scope:
repo.content}, `repo` {type, name, id, private, url, headSha, owner}, `updatedRefs` [{ref, oldSha, newSha}],
`webhook` {id, version}; the secret travels in the `X-Webhook-Secret` header, as the Hub sends it. So anything
written for the Hub's webhooks (`hfdistill webhook serve`, huggingface_hub's `WebhooksServer`) can be tested here.

Delivery never blocks or fails a commit: the commit handler only queues the event; one background thread posts
them in order, retrying a refused or unreachable target a few times, and logs what it could not deliver.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Optional

log = logging.getLogger("hfdistill.hubserver.webhooks")
RETRY_WAITS = (0.5, 2.0, 5.0)  # seconds between delivery attempts


@dataclass(frozen=True)
class WebhookTarget:
    """Where to send the events of some repos: `watch` names repo ids (empty: every repo)."""

    url: str
    secret: Optional[str] = None
    watch: tuple[str, ...] = ()

    def watches(self, repo_id: str) -> bool:
        return not self.watch or repo_id in self.watch

    @property
    def id(self) -> str:
        return hashlib.sha1(f"{self.url} {sorted(self.watch)}".encode()).hexdigest()[:24]


def _object_id(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:24]


def commit_payload(base_url: str, repo_id: str, private: bool, ref: str, old_sha: Optional[str], new_sha: str,
                   head_sha: Optional[str], webhook_id: str) -> dict[str, Any]:
    """The Hub's payload for new commits on `ref` of a model repo (`repo.content` / `update`)."""
    return {
        "event": {"action": "update", "scope": "repo.content"},
        "repo": {"type": "model", "name": repo_id, "id": _object_id(repo_id), "private": private,
                 "url": {"web": f"{base_url}/{repo_id}", "api": f"{base_url}/api/models/{repo_id}"},
                 "headSha": head_sha, "owner": {"id": _object_id(repo_id.partition("/")[0])}},
        "updatedRefs": [{"ref": ref, "oldSha": old_sha, "newSha": new_sha}],
        "webhook": {"id": webhook_id, "version": 3},
    }


@dataclass
class Delivery:
    url: str
    payload: dict[str, Any]
    status: Optional[int] = None  # the target's answer (None: none came)
    error: Optional[str] = None


@dataclass
class WebhookSender:
    """Queues events and posts them from one background thread (started on the first event)."""

    targets: tuple[WebhookTarget, ...]
    timeout: float = 10.0
    waits: tuple[float, ...] = RETRY_WAITS
    delivered: list[Delivery] = field(default_factory=list)  # every finished delivery, for tests and logs
    _queue: "queue.Queue[Optional[tuple[WebhookTarget, dict]]]" = field(default_factory=queue.Queue)
    _thread: Optional[threading.Thread] = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, ref) → the last sha announced

    def commit_made(self, base_url: str, repo_id: str, private: bool, branch: str, old_sha: Optional[str],
                    new_sha: str, head_sha: Optional[str]) -> None:
        """Queue the event of a commit (a no-op commit, which returned the unchanged head, sends nothing)."""
        ref = f"refs/heads/{branch}"
        with self._lock:
            if new_sha == old_sha or self._last.get((repo_id, ref)) == new_sha:
                return
            self._last[(repo_id, ref)] = new_sha
            for target in self.targets:
                if target.watches(repo_id):
                    self._queue.put((target, commit_payload(base_url, repo_id, private, ref, old_sha, new_sha,
                                                            head_sha, target.id)))
            if self._thread is None and not self._queue.empty():
                self._thread = threading.Thread(target=self._run, daemon=True, name="hub-webhooks")
                self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            target, payload = item
            self.delivered.append(self._deliver(target, payload))
            self._queue.task_done()
        self._queue.task_done()

    def _deliver(self, target: WebhookTarget, payload: dict[str, Any]) -> Delivery:
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "hfdistill-embedded-hub"}
        if target.secret:
            headers["X-Webhook-Secret"] = target.secret
        done = Delivery(target.url, payload)
        for attempt in range(len(self.waits) + 1):
            try:
                req = urllib.request.Request(target.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    done.status, done.error = resp.status, None
                    return done
            except urllib.error.HTTPError as e:
                done.status, done.error = e.code, f"HTTP {e.code}"
                if e.code < 500 and e.code != 429:
                    break  # refused (bad secret, bad payload): retrying would not help
            except (urllib.error.URLError, OSError) as e:
                done.status, done.error = None, f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            if attempt < len(self.waits):
                time.sleep(self.waits[attempt])
        log.warning("webhook to %s for %s not delivered: %s", target.url, payload["repo"]["name"], done.error)
        return done

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every queued event was delivered or given up (tests); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)


def head_of(storage: Any, repo_id: str, branch: str) -> Optional[str]:
    """The commit a branch points at (None: no such repo or branch)."""
    try:
        return storage.resolve(repo_id, branch).id
    except Exception:  # noqa: BLE001 - a missing repo or branch has no head
        return None


def announce_commit(sender: Optional[WebhookSender], storage: Any, base_url: str, repo_id: str, branch: str,
                    before: Optional[str], new_sha: str) -> None:
    """Queue the webhooks of a commit; never raises (a commit must not fail because a webhook could not be sent)."""
    if sender is None:
        return
    try:
        private = bool(storage.get_repo(repo_id).private)
        sender.commit_made(base_url, repo_id, private, branch, before, new_sha, head_of(storage, repo_id, "main"))
    except Exception:  # noqa: BLE001
        log.exception("webhook for a commit to %s not queued", repo_id)
