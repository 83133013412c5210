"""Run the embedded Hub in a background thread on 127.0.0.1 (pytest fixture, quickstart publishing)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hfdistill.hubserver.app import create_app
from hfdistill.hubserver.faults import Faults


@dataclass
class RunningHub:
    url: str
    storage: Path
    faults: Faults
    _server: object
    _thread: threading.Thread

    def stop(self) -> None:
        self._server.should_exit = True  # type: ignore[attr-defined]
        self._thread.join(timeout=10)

    def __enter__(self) -> "RunningHub":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(storage: Path, tokens: set[str] | None = None, faults: Faults | None = None,
                    host: str = "127.0.0.1", port: int = 0, timeout: float = 20.0) -> RunningHub:
    """Start the server on `host:port` (port 0: a free one) and return once it accepts connections."""
    import uvicorn

    faults = faults if faults is not None else Faults()
    app = create_app(Path(storage), tokens, faults)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
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
                      _thread=thread)
