"""The ASGI application: routes, API-key check, request size limit, and errors in OpenAI's shape.

Routes (see the route modules):
    GET  /                       the web UI (static/index.html; its files under /static/)
    POST /v1/chat/completions    POST /v1/completions    GET /v1/models    POST /v1/embeddings
                                 (also without the /v1 prefix, as llama.cpp serves them)
    POST /tokenize  POST /detokenize  GET /health  GET /props      llama.cpp's utility routes
    POST /completion  POST /infill  POST /apply-template  GET /slots  llama.cpp's native routes
    POST /generate  POST /generate_stream  POST /                   Text Generation Inference

With an API key, every route except the UI's files and /health needs `Authorization: Bearer KEY`.
Every request but GET /health is logged in one line (logger "llamapack.server"): method, path,
status, time, and the token counts when it generated.
"""
from __future__ import annotations

import contextlib
import hmac
import logging
import os
import time
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.chat_template import ChatTemplateError
from runtime.engine import Engine
from runtime.server.errors import APIError
from runtime.server.native import NativeRoutes
from runtime.server.openai import OpenAIRoutes
from runtime.server.params import Defaults
from runtime.server.jobs import request_record
from runtime.server.scheduler import Scheduler
from runtime.server.tgi import TGIRoutes
from runtime.server.utility import UtilityRoutes
from runtime.tokenizer import TokenizerError

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 8 << 20   # 8 MiB: far more text than any context holds
log = logging.getLogger("llamapack.server")


class BodyLimit:
    """413 for a request body over `limit` bytes, by Content-Length or as it streams in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = APIError(413, f"the request body is larger than {self.limit} bytes", code="request_too_large")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.limit:
                        return await too_big.response()(scope, receive, send)
                except ValueError:
                    return await APIError(400, "bad Content-Length header").response()(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise too_big
            return message

        await self.app(scope, counted, send)


class APIKey:
    """`Authorization: Bearer KEY` (or `X-API-Key: KEY`) on every route but the UI's files and /health."""

    PUBLIC_GET = ("/", "/index.html", "/favicon.ico", "/health")

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app, self.key = app, key.encode()

    def _public(self, scope: Scope) -> bool:
        path, method = scope["path"], scope["method"]
        return method in ("GET", "HEAD") and (path in self.PUBLIC_GET or path.startswith("/static/"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._public(scope):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        given = b""
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        elif b"x-api-key" in headers:
            given = headers[b"x-api-key"].strip()
        if not hmac.compare_digest(given, self.key):
            err = APIError(401, "invalid or missing API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key")
            return await err.response({"WWW-Authenticate": "Bearer"})(scope, receive, send)
        await self.app(scope, receive, send)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        msg = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        msg = f"{request.method} is not allowed on {request.url.path}"
    else:
        msg = str(exc.detail)
    return APIError(exc.status_code, msg, code={404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
                    ).response(dict(exc.headers or {}))


async def _user_error(request: Request, exc: Exception) -> Response:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return APIError(400, first).response()


def _where(exc: BaseException) -> str:
    """file:line where `exc` was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else "?"


async def _server_error(request: Request, exc: Exception) -> Response:
    text = " ".join(str(exc).split())[:200]
    log.error("internal error on %s %s: %s%s (%s)", request.method, request.url.path, type(exc).__name__,
              f": {text}" if text else "", _where(exc))
    return APIError(500, f"internal server error: {type(exc).__name__}").response()


def _log_line(scope: Scope, status: int | None, ms: float, record: dict[str, Any]) -> str:
    client = scope.get("client")
    line = f"{client[0] if client else '-'} {scope['method']} {scope['path']} {status or '-'} {ms:.0f} ms"
    stats = record.get("stats")
    if stats is not None:
        line += (f", prompt {stats.cached_tokens + stats.prompt_tokens} tokens ({stats.cached_tokens} cached), "
                 f"{stats.generated_tokens} generated")
    return line


class _App(Starlette):
    """Starlette, plus the one log line per request; an error the handlers did not turn into a
    response has been answered (500) and logged in one line by `_server_error`: it stops here
    rather than reaching the HTTP server's traceback log."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        record: dict[str, Any] = {}
        status: int | None = None

        async def send_noted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = request_record.set(record)
        t0 = time.perf_counter()
        try:
            await super().__call__(scope, receive, send_noted)
        except Exception:
            status = status or 500
        finally:
            request_record.reset(token)
            if not (scope["method"] == "GET" and scope["path"] == "/health"):  # polled: not worth a line
                log.info("%s", _log_line(scope, status, (time.perf_counter() - t0) * 1000, record))


def model_id(engine: Engine) -> str:
    """The name clients see in /v1/models, as llama.cpp and llamafile report it: the file's name
    (a packed file's own, or the GGUF's); the model's general.name is in /props."""
    return os.path.basename(os.fspath(engine.gguf.path)) or "model"


def create_app(engine: Engine, api_key: str | None = None, parallel: int = 1, ubatch: int = 512,
               max_body_bytes: int = MAX_BODY_BYTES, defaults: Defaults | None = None) -> Starlette:
    """The server as an ASGI app; it starts its engine worker now and stops it on shutdown.
    `defaults` are what requests get for the fields they do not set (the command line's)."""
    scheduler = Scheduler(engine, parallel=parallel, ubatch=ubatch)
    name = model_id(engine)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        scheduler.close()

    routes: list[Any] = [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/index.html", index, methods=["GET", "HEAD"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    routes += OpenAIRoutes(engine, scheduler, name, defaults).routes()
    routes += UtilityRoutes(engine, scheduler, name, defaults).routes()
    routes += NativeRoutes(engine, scheduler, name, defaults).routes()
    routes += TGIRoutes(engine, scheduler, name, defaults).routes()
    app = _App(routes=routes, lifespan=lifespan, exception_handlers={
        APIError: _api_error,
        HTTPException: _http_error,
        ChatTemplateError: _user_error,
        TokenizerError: _user_error,
        Exception: _server_error,
    })
    app.state.engine = engine
    app.state.scheduler = scheduler
    app.state.model_id = name
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    if api_key:
        app.add_middleware(APIKey, key=api_key)
    return app
