"""The embedded Hub-compatible server: offline default for publishing, and the test fixture for hub code.

`create_app(storage, tokens, faults, ...)` builds the ASGI app; `serve(host, port, storage, token)` runs it (also
`python -m hfdistill.hubserver`); `start_in_thread(...)` runs it in the background (tests, quickstart);
`local_endpoint_online(url)` lets the huggingface_hub client reach it while HF_HUB_OFFLINE=1.
"""

from hfdistill.hubserver.app import create_app
from hfdistill.hubserver.faults import Fault, Faults
from hfdistill.hubserver.runner import RunningHub, local_endpoint_online, serve, start_in_thread
from hfdistill.hubserver.storage import HubStorage

__all__ = ["create_app", "serve", "Fault", "Faults", "HubStorage", "RunningHub", "local_endpoint_online",
           "start_in_thread"]
