"""The local HTTP server: OpenAI- and TGI-compatible APIs, llama.cpp's utility routes, a web UI.

    from runtime.server import serve
    serve(engine, host="127.0.0.1", port=8080)      # blocks until Ctrl+C; port None: 8080 or the next free

`create_app(engine, api_key=None, parallel=1)` gives the ASGI app itself (for tests, or
another ASGI server). Starlette routes the requests, uvicorn serves them, sse.py
streams server-sent events; see app.py for the routes, scheduler.py for how several
clients share the engine, listen.py for the socket, slow clients and shutdown.
"""
from __future__ import annotations

import logging
import socket
import sys
import threading
import time
import webbrowser

from runtime.engine import Engine
from runtime.server.app import create_app
from runtime.server.listen import HEADER_TIMEOUT, UVICORN_OPTIONS, ServeError, bind, server_for, url_of
from runtime.server.params import Defaults

__all__ = ["create_app", "serve", "bind", "ServeError", "UVICORN_OPTIONS"]


def _open_when_up(server: object, url: str) -> None:
    for _ in range(300):
        if getattr(server, "started", False):
            try:
                webbrowser.open(url)
            except Exception:
                pass
            return
        time.sleep(0.1)


def _log_to_stderr() -> None:
    """The server's own lines (one per request, errors) on stderr, as `llamapack: ...`."""
    logger = logging.getLogger("llamapack.server")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("llamapack: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def serve(engine: Engine, host: str = "127.0.0.1", port: int | None = None, api_key: str | None = None,
          parallel: int = 1, ubatch: int = 512, open_browser: bool = False, sock: socket.socket | None = None,
          header_timeout: float = HEADER_TIMEOUT, defaults: Defaults | None = None) -> int:
    """Serves until interrupted (Ctrl+C / SIGTERM); returns the exit status (130 after Ctrl+C).

    Listens on `sock` if given, else binds `host`:`port` first (port None: the first free one
    from 8080 on; a busy port raises ServeError), then announces the address, then opens the
    browser. Binds loopback unless `host` says otherwise. `defaults`: what requests get for
    the fields they do not set (the command line's values)."""
    sock = sock if sock is not None else bind(host, port)
    app = create_app(engine, api_key=api_key, parallel=parallel, ubatch=ubatch, defaults=defaults)
    server = server_for(app, header_timeout)
    url = url_of(sock)
    _log_to_stderr()
    print(f"llamapack: serving {app.state.model_id} on {url} (OpenAI API at {url}v1, "
          f"{parallel} slot{'s' if parallel > 1 else ''}{', API key required' if api_key else ''}); "
          "Ctrl+C stops", file=sys.stderr, flush=True)
    if open_browser:
        threading.Thread(target=_open_when_up, args=(server, url), daemon=True).start()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shut down cleanly, then passed Ctrl+C on
        print("llamapack: server stopped", file=sys.stderr, flush=True)
        return 130
    finally:
        sock.close()
    return 0
