"""Serving the API: uvicorn on a thread of the orchestrator's process, on a socket bound here (so that an
address in use is a clear error before anything runs), stopped with the run."""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
from typing import Any

import uvicorn

from ..errors import ConfigError
from ..interfaces import ObjectStore
from ..runtime import Orchestrator
from .api import make_app
from .client import TOKEN_ENV
from .feed import ChangeFeed
from .metrics import Metrics

log = logging.getLogger("gclo.api")
DEFAULT_PORT = 8765
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` or `PORT` (host 127.0.0.1); `[::1]:PORT` for IPv6."""
    text = text.strip()
    if text.isdigit():
        host, port_text = "127.0.0.1", text
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ConfigError(f"--api {text!r}: expected HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}")
        host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"--api {text!r}: the port must be a number from 0 to 65535")
    return host, int(port_text)


class ApiServer:
    """The HTTP API of one orchestrator. Build it before the run (it watches the orchestrator's state changes
    from the first one), `start()` it, and `stop()` it once the run is over."""

    def __init__(self, orchestrator: Orchestrator, store: ObjectStore, feed: ChangeFeed, address: str,
                 token: str | None = None):
        self.host, port = parse_address(address)
        self.token = token or os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
        self.generated = not (token or os.environ.get(TOKEN_ENV))
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((self.host, port))
        except OSError as exc:
            self._socket.close()
            raise ConfigError(f"--api {address}: cannot listen there: {exc.strerror}") from None
        self._socket.listen(128)
        self.port = self._socket.getsockname()[1]
        self._closing: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.metrics = Metrics(feed)
        self._app_args: dict[str, Any] = dict(orchestrator=orchestrator, store=store, feed=feed,
                                              metrics=self.metrics, token=self.token)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        ready = threading.Event()

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._closing = asyncio.Event()
            app = make_app(**self._app_args, closing=self._closing)
            config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False,
                                    timeout_graceful_shutdown=2)
            self._server = uvicorn.Server(config)
            ready.set()
            await self._server.serve(sockets=[self._socket])

        self._thread = threading.Thread(target=lambda: asyncio.run(serve()), name="gclo-api", daemon=True)
        self._thread.start()
        ready.wait(10)
        if self.host not in LOOPBACK:
            log.warning("the API listens on %s, beyond this machine: the token is all that guards it", self.host)

    def stop(self) -> None:
        if self._server is None or self._loop is None:
            self._socket.close()
            return
        closing, server, feed = self._closing, self._server, self._app_args["feed"]

        def shut() -> None:
            if closing is not None:
                closing.set()  # the event streams end...
            feed.wake_all()  # ...once they look
            server.should_exit = True
        try:
            self._loop.call_soon_threadsafe(shut)
        except RuntimeError:
            pass  # its loop has ended already
        if self._thread is not None:
            self._thread.join(10)
        self._socket.close()
