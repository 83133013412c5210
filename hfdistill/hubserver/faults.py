"""Fault injection for the embedded Hub: answer chosen requests with an error, drop the connection, or lose the
answer of a request that was applied; and stall points where crash tests SIGKILL a server process.

Tests arm a rule (`faults.add("POST", "/commit/", status=503)`) and watch the real client retry or fail cleanly;
`headers=` adds answer headers (`status=429, headers={"Retry-After": "2"}`: a rate limit asking for a 2 s wait).
A rule fires `times` times, then disarms itself.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]
STALL_ENV = "HFDISTILL_HUB_STALL"


def stall_point(name: str) -> None:
    """Crash-test hook: with HFDISTILL_HUB_STALL=`name`:`marker file`, touch the marker and stall here, so that a
    test can SIGKILL the process at exactly this point (e.g. a commit file written, its ref not yet moved)."""
    point, _, marker = os.environ.get(STALL_ENV, "").partition(":")
    if point == name and marker:
        Path(marker).touch()
        time.sleep(60)


@dataclass
class Fault:
    method: str          # HTTP method, or "*"
    path: str            # regular expression searched in the request path
    status: int | None   # answer with this status…
    drop: bool           # …or read part of the request, start a response and close the connection
    times: int
    hits: int = 0
    lose_response: bool = False  # …or let the app apply the request, then close the connection mid-answer
    headers: tuple[tuple[str, str], ...] = ()  # extra headers of a `status` answer (e.g. Retry-After)


class Faults:
    """A thread-safe list of armed faults, shared between a test and the server thread."""

    def __init__(self) -> None:
        self._rules: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, method: str, path: str, *, status: int | None = None, drop: bool = False,
            lose_response: bool = False, times: int = 1, headers: dict[str, str] | None = None) -> Fault:
        if [status is not None, drop, lose_response].count(True) != 1:
            raise ValueError("give one of status=, drop=True or lose_response=True")
        rule = Fault(method.upper(), path, status, drop, times, lose_response=lose_response,
                     headers=tuple((headers or {}).items()))
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.hits < rule.times and rule.method in ("*", method) and re.search(rule.path, path):
                    rule.hits += 1
                    return rule
        return None


async def _broken_answer(send) -> None:
    """Start a 200 answer and stop mid-body: uvicorn closes the connection, the client sees a broken response."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"1000"), (b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"partial', "more_body": True})


class FaultMiddleware:
    """ASGI middleware applying `Faults` before the app sees the request (or, for lose_response, after)."""

    def __init__(self, app: ASGIApp, faults: Faults | None):
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive, send) -> None:
        rule = self.faults.take(scope["method"], scope["path"]) if self.faults and scope["type"] == "http" else None
        if rule is None:
            await self.app(scope, receive, send)
            return
        if rule.lose_response:
            async def swallow(message: dict) -> None:
                pass

            await self.app(scope, receive, swallow)  # the request is fully applied…
            await _broken_answer(send)               # …and its answer lost on the way
            return
        if rule.drop:
            await receive()  # the first chunk of the upload arrives, then the line goes dead
            await _broken_answer(send)
            return
        more = True
        while more:  # drain the request so the client sees the answer, not a broken pipe
            message = await receive()
            more = message.get("more_body", False) and message["type"] == "http.request"
        body = json.dumps({"error": f"injected fault: HTTP {rule.status}"}).encode()
        await send({"type": "http.response.start", "status": rule.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"x-error-message", f"injected fault: HTTP {rule.status}".encode()),
                                *((k.lower().encode(), v.encode()) for k, v in rule.headers)]})
        await send({"type": "http.response.body", "body": body})
