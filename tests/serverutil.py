"""The server in-process for tests: uvicorn in a thread on 127.0.0.1 and a free port."""
from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import requests

from runtime.engine import Engine
from runtime.server import create_app
from runtime.server.listen import server_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, log: Path | None = None, timeout: float = 60) -> None:  # type: ignore[type-arg]
    """Returns once the server at url answers /health; fails when proc exits first (with its
    stderr: the log file if it writes one, else its pipe) or after timeout seconds. Not listening
    yet, or slow to answer on a loaded machine: it asks again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(log.read_text() if log is not None else proc.communicate()[1])
        try:
            if requests.get(url + "/health", timeout=2).ok:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not come up")


class ServerThread:
    """`with ServerThread(engine, parallel=2) as srv: srv.url` — stops and joins on exit."""

    def __init__(self, engine: Engine, header_timeout: float = 20.0, **options: object) -> None:
        self.app = create_app(engine, **options)  # type: ignore[arg-type]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = server_for(self.app, header_timeout, host="127.0.0.1", port=self.port,
                                 timeout_graceful_shutdown=2)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """fn() on a thread of its own, started; its return value lands in the dict's "response"."""
    out: dict[str, Any] = {}

    def run() -> None:
        out["response"] = fn()

    t = threading.Thread(target=run)
    t.start()
    return t, out
