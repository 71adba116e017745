"""The local HTTP server: OpenAI- and TGI-compatible APIs, llama.cpp's utility routes, a web UI.

    from runtime.server import serve
    serve(engine, host="127.0.0.1", port=8080)      # blocks until Ctrl+C

`create_app(engine, api_key=None, parallel=1)` gives the ASGI app itself (for tests, or
another ASGI server). Starlette routes the requests, uvicorn serves them, sse-starlette
streams server-sent events; see app.py for the routes and scheduler.py for how several
clients share the engine.
"""
from __future__ import annotations

import sys
import threading
import time
import webbrowser

from runtime.engine import Engine
from runtime.server.app import create_app
from runtime.server.params import Defaults

__all__ = ["create_app", "serve", "UVICORN_OPTIONS"]

# Fixed implementations rather than uvicorn's "auto" choices: no optional C speed-ups to look
# for, no websockets, and only modules a one-file bundle can see imported (no hidden imports).
UVICORN_OPTIONS = {"loop": "asyncio", "http": "h11", "ws": "none", "lifespan": "on", "interface": "asgi3"}


def _open_when_up(server: object, url: str) -> None:
    for _ in range(300):
        if getattr(server, "started", False):
            try:
                webbrowser.open(url)
            except Exception:
                pass
            return
        time.sleep(0.1)


def serve(engine: Engine, host: str = "127.0.0.1", port: int = 8080, api_key: str | None = None,
          parallel: int = 1, open_browser: bool = False, defaults: Defaults | None = None) -> None:
    """Serves until interrupted (Ctrl+C / SIGTERM). Binds loopback unless `host` says otherwise.
    `defaults`: what requests get for the fields they do not set (the command line's values)."""
    import uvicorn

    app = create_app(engine, api_key=api_key, parallel=parallel, defaults=defaults)
    config = uvicorn.Config(app, **UVICORN_OPTIONS, host=host, port=port, log_level="warning",
                            access_log=False, timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else shown}:{port}/"
    print(f"llamapack: serving {app.state.model_id} on {url} (OpenAI API at {url}v1, "
          f"{parallel} slot{'s' if parallel > 1 else ''}{', API key required' if api_key else ''}); "
          "Ctrl+C stops", file=sys.stderr, flush=True)
    if open_browser:
        threading.Thread(target=_open_when_up, args=(server, url), daemon=True).start()
    server.run()
