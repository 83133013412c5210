"""Rate limits: a 429 with `Retry-After` from the (embedded) Hub is waited out for as long as it asks, then
retried; a Hub that keeps refusing ends in one line that names the rate limit."""

from __future__ import annotations

import time

import pytest
from huggingface_hub import HfApi

from hfdistill.errors import HubError
from hfdistill.publish import client
from hfdistill.publish.push import push_folder

NO_WAIT = (0.0, 0.0, 0.0)  # our own back-off off: any wait measured comes from Retry-After


def _timed_push(folder, repo_id, url, lines):
    started = time.monotonic()
    res = push_folder(folder, repo_id, endpoint=url, retry_waits=NO_WAIT, log=lines.append)
    return res, time.monotonic() - started


def test_a_429_with_retry_after_is_waited_out_then_the_commit_lands_once(tiny_run, hub_server):
    folder = tiny_run / "teacher" / "sst2"
    # side by side in one test: the same push, refused once without and once with Retry-After: 2
    lines: list[str] = []
    hub_server.faults.add("POST", r"/commit/", status=429, times=1)
    _, plain = _timed_push(folder, "local/plain", hub_server.url, lines)
    fault = hub_server.faults.add("POST", r"/commit/", status=429, times=1, headers={"Retry-After": "2"})
    res, advised = _timed_push(folder, "local/advised", hub_server.url, lines)
    assert fault.hits == 1 and res.changed
    assert advised >= 2.0, f"Retry-After: 2 was not honoured (push took {advised:.2f}s)"
    assert advised - plain >= 1.5, (plain, advised)  # the difference is the advised wait, not a slow machine
    assert any("retrying in 2s (Retry-After: 2s)" in ln for ln in lines), lines
    assert len(HfApi(endpoint=hub_server.url).list_repo_commits("local/advised")) == 2  # one commit, not two


def test_a_retry_after_longer_than_the_cap_is_capped(tiny_run, hub_server, monkeypatch):
    monkeypatch.setattr(client, "RETRY_AFTER_CAP", 0.3)
    hub_server.faults.add("POST", r"/commit/", status=429, times=1, headers={"Retry-After": "3600"})
    lines: list[str] = []
    res, took = _timed_push(tiny_run / "teacher" / "sst2", "local/capped", hub_server.url, lines)
    assert res.changed and took < 30
    assert any("retrying in 0.3s (Retry-After: 3600s)" in ln for ln in lines), lines


def test_a_hub_that_keeps_rate_limiting_fails_with_one_line_naming_the_rate_limit(tiny_run, hub_server):
    fault = hub_server.faults.add("POST", r"/commit/", status=429, times=100, headers={"Retry-After": "0.2"})
    with pytest.raises(HubError) as e:
        push_folder(tiny_run / "teacher" / "sst2", "local/t", endpoint=hub_server.url, retry_waits=(0.0, 0.0),
                    log=lambda m: None)
    msg = str(e.value)
    assert fault.hits == 3 and "\n" not in msg
    assert "rate limited by the Hub (HTTP 429 Too Many Requests) after 3 attempts" in msg, msg
    assert "it asks to wait 0.2s" in msg, msg
    assert HfApi(endpoint=hub_server.url).list_repo_files("local/t") == [".gitattributes"]


def test_retry_after_reads_seconds_and_http_dates():
    import email.utils

    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    def err(status, value):
        req = httpx2.Request("POST", "http://127.0.0.1/api/models/a/b/commit/main")
        resp = httpx2.Response(status, headers={"Retry-After": value} if value else {}, request=req)
        return HfHubHTTPError("refused", response=resp)

    assert client.retry_after(err(429, "7")) == 7.0
    assert client.retry_after(err(503, "1.5")) == 1.5
    assert client.retry_after(err(429, None)) is None
    assert client.retry_after(err(500, "7")) is None  # only rate limits and maintenance advise a wait
    in_30s = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 27 <= client.retry_after(err(429, in_30s)) <= 31
    assert client.retry_after(RuntimeError("wrapped")) is None
