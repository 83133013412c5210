"""The embedded Hub-compatible server: offline default for publishing, and the test fixture for hub code.

`create_app(storage, tokens, faults)` builds the ASGI app; `serve(host, port, storage, token)` runs it;
`start_in_thread(...)` runs it in the background (tests, quickstart).
"""

from hfdistill.hubserver.app import create_app, serve
from hfdistill.hubserver.faults import Fault, Faults
from hfdistill.hubserver.runner import RunningHub, start_in_thread
from hfdistill.hubserver.storage import HubStorage

__all__ = ["create_app", "serve", "Fault", "Faults", "HubStorage", "RunningHub", "start_in_thread"]
