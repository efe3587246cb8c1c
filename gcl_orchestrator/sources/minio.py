"""MinIO's notifications: `listen_bucket_notification` (a MinIO-only API, so it is refused on other servers,
where the client would busy-loop), and an HTTP receiver for MinIO's webhook target. MinIO records carry the
user metadata, so no HEAD is needed."""
from __future__ import annotations

import hmac
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

from ..errors import ConfigError
from ..interfaces import Emit, EventSource
from .looping import LoopingSource
from .s3_records import load_json, objects_from_records

log = logging.getLogger("gclo.sources")
MAX_BODY_BYTES = 4 << 20


def parse_minio_event(body: bytes | str, bucket: str, prefix: str, source: str) -> list:
    """A MinIO event (`{"EventName", "Key", "Records": [...]}`) to ObjectCreated events. ValueError if not JSON."""
    data = load_json(body)
    if not isinstance(data, dict):
        return []
    return objects_from_records(data.get("Records"), bucket, prefix, source)


class MinioListenSource(LoopingSource):
    name = "minio"

    def __init__(self, endpoint_url: str, bucket: str, prefix: str, access_key: str, secret_key: str,
                 server_header: str):
        if "minio" not in server_header.lower():
            raise ConfigError(f"--events minio needs a MinIO server, but {endpoint_url} says it is "
                              f"{server_header or 'something else'!r}; use --events poll or the server's own source")
        from minio import Minio  # only MinIO users need the client loaded

        super().__init__()
        url = urlparse(endpoint_url)
        self.client = Minio(url.netloc, access_key=access_key, secret_key=secret_key, secure=url.scheme == "https")
        self.bucket = bucket
        self.prefix = prefix
        self._events: Any = None

    def _loop(self, emit: Emit) -> None:
        while not self._stopping.is_set():
            try:
                with self.client.listen_bucket_notification(self.bucket, prefix=self.prefix,
                                                            events=["s3:ObjectCreated:*"]) as events:
                    self._events = events
                    for event in events:
                        if self._stopping.is_set():
                            return
                        records = event.get("Records") if isinstance(event, dict) else None
                        for ev in objects_from_records(records, self.bucket, self.prefix, self.name):
                            emit(ev)
            except Exception as exc:  # the connection drops when MinIO restarts: listen again
                if not self._stopping.is_set():
                    log.warning("minio: listening failed: %s (again in 1s)", exc)
                    self._stopping.wait(1.0)

    def _interrupt(self) -> None:
        events = self._events
        if events is not None:
            try:
                events.close()  # ends the streaming response the loop is blocked on
            except Exception:
                pass


class MinioWebhookSource(EventSource):
    """Receives MinIO webhook POSTs. Binds to 127.0.0.1 unless told otherwise, requires the shared secret in the
    Authorization header (configure MinIO's auth_token as `Bearer SECRET`), and refuses bodies over 4 MiB."""

    name = "minio-webhook"

    def __init__(self, bucket: str, prefix: str, secret: str, host: str = "127.0.0.1", port: int = 0):
        if not secret or len(secret) < 16:
            raise ConfigError("the webhook needs a shared secret of at least 16 characters (--webhook-secret)")
        self.bucket = bucket
        self.prefix = prefix
        self._secret = secret
        self._host = host
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "start() first"
        return self._server.server_address[:2]  # type: ignore[return-value]

    def _authorized(self, header: str | None) -> bool:
        given = (header or "").encode()
        return hmac.compare_digest(given, f"Bearer {self._secret}".encode()) or \
            hmac.compare_digest(given, self._secret.encode())

    def start(self, emit: Emit) -> None:
        source = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("webhook: " + fmt, *args)

            def _reply(self, code: int, text: str = "") -> None:
                body = text.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body and self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self) -> None:  # MinIO checks that the endpoint answers, without credentials
                self._reply(200)

            def do_POST(self) -> None:
                if not source._authorized(self.headers.get("Authorization")):
                    self._reply(401, "unauthorized\n")
                    return
                try:
                    length = int(self.headers.get("Content-Length", "0"))
                except ValueError:
                    length = -1
                if length < 0 or length > MAX_BODY_BYTES:
                    self._reply(413, "body too large\n")
                    return
                try:
                    events = parse_minio_event(self.rfile.read(length), source.bucket, source.prefix, source.name)
                except ValueError:
                    self._reply(400, "not JSON\n")
                    return
                for ev in events:
                    emit(ev)
                self._reply(200)

        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="gclo-webhook", daemon=True)
        self._thread.start()
        log.info("minio webhook listening on http://%s:%d/", *self.address)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
