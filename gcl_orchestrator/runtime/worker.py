"""Running one task: call the handler, encode its result, write the output with the emitted GCL.
`run_task` is shared by every executor; `worker_main` is the loop of a worker process.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import signal
import threading
import time
from typing import Any, Callable

from ..errors import (
    GclError,
    HandlerError,
    ObjectAlreadyExists,
    PermanentHandlerError,
    SpecError,
    StorageError,
    TransientStorageError,
    UnknownHandlerType,
)
from ..interfaces import ObjectStore, Task
from ..model import ComputationBlocked, ComputationFailed, ComputationResumed, ComputationSucceeded
from ..gcl import encode_gcl
from . import audit
from .context import HandlerContext
from .handlers import HandlerRegistry, describe_exception

log = logging.getLogger("gclo.worker")


def encode_result(value: Any) -> bytes:
    """bytes stay bytes, str becomes UTF-8, anything else JSON."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    try:
        return json.dumps(value, ensure_ascii=False, indent=1, default=None).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise HandlerError(f"the handler returned {type(value).__name__}, which is neither bytes, str nor "
                           f"JSON data ({exc})") from None


def run_task(task: Task, registry: HandlerRegistry, store: ObjectStore,
             signal: Callable[[object], None] | None = None) -> ComputationSucceeded | ComputationFailed:
    """Run one attempt. `signal` carries events the handler raises while it runs (submissions, waiting) to the
    orchestrator's queue."""
    spec = task.spec
    started = time.perf_counter()
    requests_before = store.request_count() or 0

    def requests() -> int:
        return (store.request_count() or 0) - requests_before

    def failed(error: str, permanent: bool = False) -> ComputationFailed:
        return ComputationFailed(spec.computation, task.attempt, error, permanent, time.perf_counter() - started,
                                 requests())

    fn = registry.get(spec.handler_type)
    if fn is None:
        return failed(str(UnknownHandlerType(spec.handler_type, registry.types())), permanent=True)
    ctx = HandlerContext(spec, task.attempt, store, signal)
    audit.record("start", spec.computation, task.attempt)
    try:
        result = fn(ctx)
        body = encode_result(result)
    except PermanentHandlerError as exc:
        return failed(f"gave up: {describe_exception(exc)}", permanent=True)
    except SpecError as exc:
        return failed(f"emitted invalid GCL: {exc.one_line()}")
    except Exception as exc:
        return failed(describe_exception(exc))
    except SystemExit as exc:
        return failed(f"the handler called exit({exc.code})")

    encoded = encode_gcl(ctx.emitted)
    try:
        encoded.write_sidecar(store)
        try:
            info = store.create(spec.output, body, encoded.metadata)
        except ObjectAlreadyExists:
            # Someone committed this output first (an earlier attempt or another writer): theirs stands.
            existing = store.head(spec.output)
            audit.record("kept", spec.computation, task.attempt, key=spec.output, etag=existing.etag)
            return ComputationSucceeded(spec.computation, task.attempt, existing.etag, None, existing.metadata,
                                        time.perf_counter() - started, committed_at=time.time(),
                                        requests=requests())
    except TransientStorageError as exc:
        return failed(f"could not write output {spec.output!r}: {exc}")
    except (StorageError, ValueError) as exc:
        return failed(f"could not write output {spec.output!r}: {exc}", permanent=True)
    audit.record("commit", spec.computation, task.attempt, key=spec.output, etag=info.etag)
    return ComputationSucceeded(spec.computation, task.attempt, info.etag, ctx.emitted, None,
                                time.perf_counter() - started,
                                spec.handler_type if ctx.wants_completions else None,
                                committed_at=time.time(), requests=requests())


def worker_main(conn: Any, handler_sources: tuple[str, ...], store_uri: str,
                env: dict[str, str] | None = None) -> None:
    """A worker process: build the registry and store once, then run tasks from `conn` until None or EOF.
    `env` replaces the AWS_* and GCLO_* variables this process inherited."""
    # Ctrl-C reaches the whole process group; the orchestrator decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if env is not None:
        for name in [k for k in os.environ if k.startswith(("AWS_", "GCLO_"))]:
            del os.environ[name]
        os.environ.update(env)
    from ..storage import open_store  # the storage layer is only needed in the worker

    try:
        registry = HandlerRegistry.from_sources(handler_sources)
        store = open_store(store_uri)
    except GclError as exc:
        conn.send(("fatal", str(exc)))
        return
    inbox = _Inbox(conn)
    inbox.send(("ready", os.getpid()))
    while True:
        task = inbox.next()
        if task is None:
            return
        inbox.send(("result", run_task(task, registry, store, inbox.signal)))


class _Inbox:
    """The worker's side of its pipe. A reader thread takes tasks as they arrive, so the next task is here when
    the current one ends. While a handler blocks in ctx.wait_for, tasks waiting behind it (and any that arrive)
    are sent back, so they can run elsewhere: work the handler waits for may be among them."""

    def __init__(self, conn: Any):
        self._conn = conn
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._tasks: collections.deque[Task] = collections.deque()
        self._closed = False
        self._blocked = False
        threading.Thread(target=self._read, name="gclo-worker-inbox", daemon=True).start()

    def send(self, message: tuple[str, Any]) -> None:
        with self._send_lock:
            self._conn.send(message)

    def next(self) -> Task | None:
        with self._cond:
            while not self._tasks and not self._closed:
                self._cond.wait()
            return self._tasks.popleft() if self._tasks else None

    def signal(self, event: object) -> None:
        """Events a running handler raises go to the orchestrator; blocking also hands back waiting tasks."""
        if isinstance(event, ComputationBlocked):
            with self._cond:
                self._blocked = True
                while self._tasks:
                    self.send(("returned", self._tasks.popleft()))
        elif isinstance(event, ComputationResumed):
            with self._cond:
                self._blocked = False
        self.send(("event", event))

    def _read(self) -> None:
        while True:
            try:
                task = self._conn.recv()
            except (EOFError, OSError):
                task = None
            with self._cond:
                if task is None:
                    self._closed = True
                    self._cond.notify()
                    return
                if self._blocked:
                    self.send(("returned", task))
                    continue
                self._tasks.append(task)
                self._cond.notify()
