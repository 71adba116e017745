"""The listening side: the socket, uvicorn's settings, slow clients, and a quick shutdown.

- `bind(host, port)` takes the socket before anything is announced: with no port asked for, the
  first free one from 8080 on; an asked-for port that is busy is a one-line error (ServeError).
- `header_timeout`: like nginx's `client_header_timeout`, a connection must send a whole request
  head within that many seconds of connecting (or of its first byte after a response), however it
  drips in, and a body may not pause longer than that (`client_body_timeout`); otherwise the
  connection is closed. Connections that open and
  send nothing, or half a header, do not pile up. (uvicorn's own `timeout_keep_alive` only covers
  the wait after a response, and only until the first byte.)
- `Server.shutdown` first stops the engine's jobs, so that streams and requests in flight end
  at once with an error instead of holding the shutdown until uvicorn cancels them.
"""
from __future__ import annotations

import errno
import logging
import socket
import sys
import time
from typing import Any, Callable

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_PORT = 8080
PORTS_TRIED = 100            # 8080 ... 8179 when no port is given
HEADER_TIMEOUT = 20.0        # seconds
log = logging.getLogger("llamapack.server")

# Fixed implementations rather than uvicorn's "auto" choices: no optional C speed-ups to look
# for, no websockets, and only modules a one-file bundle can see imported (no hidden imports).
UVICORN_OPTIONS = {"loop": "asyncio", "http": "h11", "ws": "none", "lifespan": "on", "interface": "asgi3"}


class ServeError(OSError):
    """The server cannot listen where asked; the message is one line."""


def _listen(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family = infos[0][0]
    return socket.create_server((host, port), family=family, backlog=128)


def bind(host: str, port: int | None) -> socket.socket:
    """A listening socket on host:port; port None: the first free one from 8080 on (a note on
    stderr says when 8080 was taken: another server, maybe another packed file, is there)."""
    ports = [port] if port is not None else list(range(DEFAULT_PORT, DEFAULT_PORT + PORTS_TRIED))
    if port is not None and not 0 <= port <= 65535:
        raise ServeError(f"--port {port} is not a port number (0-65535)")
    for p in ports:
        try:
            sock = _listen(host, p)
            if p != ports[0]:
                print(f"llamapack: port {ports[0]} is in use (another server?); taking {p}", file=sys.stderr)
            return sock
        except socket.gaierror as e:
            raise ServeError(f"cannot listen on {host!r}: {e.strerror}") from None
        except OSError as e:
            if e.errno == errno.EADDRINUSE and port is None:
                continue
            if e.errno == errno.EADDRINUSE:
                raise ServeError(f"port {p} on {host} is already in use (another server?); "
                                 "choose another with --port N, or leave --port out to take a free one") from None
            raise ServeError(f"cannot listen on {host}:{p}: {e.strerror or e}") from None
    raise ServeError(f"ports {ports[0]}-{ports[-1]} on {host} are all in use; choose one with --port N")


def url_of(sock: socket.socket) -> str:
    """The address a browser on this machine opens for `sock`."""
    host, port = sock.getsockname()[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def protocol_with_timeout(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing connections that are too slow to send a request."""

    class TimedH11Protocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._slow_timer: Any = None
            self._waiting_for: Any = None  # what the timer runs for: h11.IDLE (a head) or h11.SEND_BODY

        def _arm(self, state: Any) -> None:
            if self._slow_timer is not None:
                self._slow_timer.cancel()
            self._slow_timer = self.loop.call_later(seconds, self._too_slow)
            self._waiting_for = state

        def _disarm(self) -> None:
            if self._slow_timer is not None:
                self._slow_timer.cancel()
                self._slow_timer = None
            self._waiting_for = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(h11.IDLE)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            state = self.conn.their_state
            if self.transport.is_closing() or state not in (h11.IDLE, h11.SEND_BODY):
                self._disarm()
            elif state is h11.SEND_BODY or self._waiting_for is not h11.IDLE:
                # a body: the time between two reads; a head: the time from its first byte (a head
                # sent a byte at a time does not restart the clock)
                self._arm(state)

        def on_response_complete(self) -> None:
            self._disarm()  # idle between requests: uvicorn's keep-alive timeout takes over
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _too_slow(self) -> None:
            self._slow_timer = None
            state = self.conn.their_state
            if self.transport.is_closing() or state not in (h11.IDLE, h11.SEND_BODY):
                return
            if state is h11.SEND_BODY and self.flow.read_paused:  # we stopped reading, not them
                self._arm(state)
                return
            if state is h11.IDLE and self.cycle is not None and not self.cycle.response_complete:
                return  # a response is still being written (pipelining): not the client's wait
            client = f"{self.client[0]} " if self.client else ""
            what = "a request head" if state is h11.IDLE else "the request body"
            log.info("%sclosed a connection: no complete %s within %g s", client, what, seconds)
            self.transport.close()

    return TimedH11Protocol


class Server(uvicorn.Server):
    """uvicorn's server; `on_shutdown` runs as soon as the shutdown starts.

    In the one-file build one Ctrl+C reaches the server twice: from the terminal (it signals the
    whole foreground process group) and forwarded by the bootloader, its parent, a few
    milliseconds later. uvicorn takes a second SIGINT as "force exit" and abandons its graceful
    shutdown (a traceback from the cancelled lifespan); a copy of the same signal within ECHO
    seconds is that echo, not a second Ctrl+C, and is dropped."""
    ECHO = 0.25

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.on_shutdown = on_shutdown
        self._last_signal: tuple[int, float] = (0, -1.0)

    def handle_exit(self, sig: int, frame: Any) -> None:
        now = time.monotonic()
        last, at = self._last_signal
        if sig == last and now - at < self.ECHO:
            return
        self._last_signal = (sig, now)
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.on_shutdown is not None:
            self.on_shutdown()
        await super().shutdown(sockets)


def server_for(app: Any, header_timeout: float = HEADER_TIMEOUT, **config: Any) -> Server:
    """A uvicorn server for `app` with llamapack's settings (no access log: the app logs each
    request itself); `config` goes to uvicorn.Config (host, port, ...)."""
    options = {**UVICORN_OPTIONS, "http": protocol_with_timeout(header_timeout), "log_level": "warning",
               "access_log": False, "timeout_graceful_shutdown": 3, **config}
    return Server(uvicorn.Config(app, **options), on_shutdown=app.state.scheduler.stop)
