"""Talking to a Hub (huggingface.co, any Hub-compatible server, the embedded one) with huggingface_hub's `HfApi`.

One-line errors, retries of transient failures, and the client settings every publish call shares. Tokens come
only from huggingface_hub's usual sources (HF_TOKEN, `hf auth login`) and never reach a message, a card or a log.

Which endpoint gets the user's own token: the one the user chose (the default Hub, HF_ENDPOINT, `--endpoint` /
`endpoint=`). An endpoint named in a recipe file gets it only on request (`--send-token`, `token=True`, a token
in $HFDISTILL_PUBLISH_TOKEN): a shared recipe could name a server that records it.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import re
import time
import urllib.parse
from typing import Callable, Iterator, Optional, TypeVar

from hfdistill.errors import HubError
from hfdistill.version import __version__

T = TypeVar("T")
RETRY_STATUS = (429, 500, 502, 503, 504)
RETRY_WAITS = (0.5, 1.5, 4.0)        # seconds before the 2nd, 3rd and 4th attempt
#: The longest wait a `Retry-After` header (on a 429 or 503) obtains before the next attempt, in seconds.
RETRY_AFTER_CAP = 120.0
#: A token for the endpoint a recipe names (`publish.endpoint`): the explicit way to authenticate there.
PUBLISH_TOKEN_ENV = "HFDISTILL_PUBLISH_TOKEN"


def redact(text: str, token: Optional[str | bool] = None) -> str:
    """Remove anything that looks like a token from a message."""
    if isinstance(token, str) and token:
        text = text.replace(token, "***")
    text = re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)
    return re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)


def first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _http_cause(exc: BaseException) -> BaseException:
    """The HTTP error inside `exc`: snapshot_download raises LocalEntryNotFoundError from the Hub's answer, LFS
    upload errors wrap it (or a network error) in RuntimeErrors."""
    from huggingface_hub.errors import HfHubHTTPError

    inner: BaseException | None = exc
    while inner is not None:
        if isinstance(inner, HfHubHTTPError):
            return inner
        inner = inner.__cause__ or inner.__context__
    while isinstance(exc, RuntimeError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def retry_after(exc: BaseException) -> Optional[float]:
    """The seconds a Hub answer asks the client to wait before trying again: its `Retry-After` header (seconds,
    or an HTTP date) on a 429 or 503; None without one."""
    response = getattr(_http_cause(exc), "response", None)
    if response is None or response.status_code not in (429, 503):
        return None
    value = (response.headers.get("retry-after") or "").strip()
    if not value:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when is not None else None


def hub_error(exc: BaseException, action: str, token: Optional[str | bool] = None, attempts: int = 1) -> HubError:
    """A one-line HubError for any failure of a Hub call."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, RepositoryNotFoundError, \
        RevisionNotFoundError

    cause = _http_cause(exc)
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if isinstance(cause, HfHubHTTPError) and cause.response is not None:
        status = cause.response.status_code
        server = first_line(getattr(cause, "server_message", "") or "")
        if status == 401:
            msg = ("not authenticated (401): log in with `hf auth login` or set HF_TOKEN to a token with write "
                   "access" + (f" ({server})" if server else ""))
        elif status == 403:
            msg = f"forbidden (403): your token may not write here ({server or 'no reason given'})"
        elif isinstance(cause, RevisionNotFoundError):
            msg = f"revision not found (404): {server or cause.response.url}"
        elif isinstance(cause, RepositoryNotFoundError) or status == 404:
            msg = f"not found (404): {server or 'no such repository or file'}"
        elif status in (409, 412):
            msg = f"conflict ({status}): {server or 'the repository changed meanwhile'}"
        elif status == 429:
            wait = retry_after(cause)
            msg = (f"rate limited by the Hub (HTTP 429 Too Many Requests){tries}" +
                   (f"; it asks to wait {wait:g}s before retrying" if wait is not None else "") +
                   ": try again later" + (f" ({server})" if server else ""))
        elif status >= 500:
            msg = f"the Hub failed with HTTP {status}{tries}: {server or 'server error'}"
        else:
            msg = f"HTTP {status}: {server or first_line(str(cause))}"
    elif isinstance(cause, httpx2.TimeoutException):
        msg = f"timed out{tries}"
    elif isinstance(cause, (httpx2.NetworkError, httpx2.RemoteProtocolError, httpx2.ProtocolError)):
        msg = f"connection failed{tries} ({type(cause).__name__}: {first_line(str(cause)) or 'no detail'})"
    elif isinstance(cause, LocalTokenNotFoundError):
        msg = "no token found: log in with `hf auth login` or set HF_TOKEN"
    else:
        msg = f"{type(cause).__name__}: {first_line(str(cause))}"
    err = HubError(redact(f"{action}: {msg}", token))
    err.status = getattr(getattr(cause, "response", None), "status_code", None)  # type: ignore[attr-defined]
    return err


def _retryable(exc: BaseException) -> bool:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    exc = _http_cause(exc)
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return exc.response.status_code in RETRY_STATUS
    return isinstance(exc, (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError))


def with_retries(fn: Callable[[], T], action: str, token: Optional[str | bool] = None,
                 waits: tuple[float, ...] = RETRY_WAITS, log: Callable[[str], None] = print) -> T:
    """Call `fn`, retrying 5xx/429/timeouts/dropped connections; any failure becomes a one-line HubError.

    Before each retry it waits `waits[i]`, or what the answer's `Retry-After` header asks when that is longer
    (rate limits, maintenance), capped at RETRY_AFTER_CAP seconds.

    Retrying a whole commit is safe: the repo either has the commit (the retry's preupload sees unchanged files
    and makes none) or has nothing of it (the server applies a commit all at once).
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except HubError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is reported as a HubError
            if attempt <= len(waits) and _retryable(exc):
                wait, advised = waits[attempt - 1], retry_after(exc)
                if advised is not None:
                    wait = min(max(wait, advised), RETRY_AFTER_CAP)
                why = f" (Retry-After: {advised:g}s)" if advised is not None else ""
                log(redact(f"  {action}: {first_line(str(exc)) or type(exc).__name__}; retrying "
                           f"in {wait:g}s{why}", token))
                time.sleep(wait)
                continue
            raise hub_error(exc, action, token, attempt) from None  # the chain may hold request details


# ------------------------------------------------------------------------------------------------- client
def hf_api(endpoint: Optional[str], token: Optional[str]):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token, library_name="hfdistill", library_version=__version__)


@contextlib.contextmanager
def lfs_uploads_unless_hf(endpoint: Optional[str]) -> Iterator[None]:
    """Upload through the LFS protocol to Hub-compatible servers other than huggingface.co (the embedded one
    included): they do not speak Xet, which huggingface_hub would otherwise pick whenever hf_xet is installed."""
    from huggingface_hub import constants

    host = urllib.parse.urlparse(endpoint or default_endpoint()).hostname or ""
    if host == "huggingface.co" or host.endswith(".huggingface.co") or constants.HF_HUB_DISABLE_XET:
        yield
        return
    constants.HF_HUB_DISABLE_XET = True
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_XET = False


def default_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def same_endpoint(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def token_for_recipe_endpoint(endpoint: str, token: Optional[str | bool],
                              log: Callable[[str], None] = print) -> Optional[str | bool]:
    """The token to send to `endpoint` when it comes from a recipe file, not from the user.

    The caller's explicit choice wins (a token, True = the user's own one, False = none). The Hub the user's own
    settings name (HF_ENDPOINT, else huggingface.co) gets the usual token; so does any endpoint when a token is
    in $HFDISTILL_PUBLISH_TOKEN. Anything else gets no token, and the user is told so in one line.
    """
    if token is not None:
        return token
    if same_endpoint(endpoint, default_endpoint()):
        return None
    if os.environ.get(PUBLISH_TOKEN_ENV):
        return os.environ[PUBLISH_TOKEN_ENV]
    log(f"publish.endpoint {endpoint} comes from the recipe: sending it no token (to authenticate there, pass "
        f"--send-token or set {PUBLISH_TOKEN_ENV})")
    return False
