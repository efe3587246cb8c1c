"""Running one task: call the handler, encode its result, write the output with the emitted GCL, and the
attempt's log (`.gclo/logs/`). `run_task` is shared by every executor; `worker_main` is the loop of a worker
process, whose handler logs and standard output also reach the orchestrator's log, each line naming the
computation and attempt.
"""
from __future__ import annotations

import collections
import io
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from ..errors import (
    GclError,
    HandlerError,
    ObjectAlreadyExists,
    ObjectChanged,
    ObjectNotFound,
    PermanentHandlerError,
    SpecError,
    StorageError,
    TransientStorageError,
    UnknownHandlerType,
)
from ..interfaces import ObjectStore, Task
from ..model import (
    ComputationBlocked,
    ComputationFailed,
    ComputationResumed,
    ComputationSucceeded,
    identity,
    metadata_get,
    run_id,
)
from ..gcl import encode_gcl
from ..gcl.metadata import META_RUN, encode_lineage, gcl_fingerprint
from ..views.logs import LOG_METADATA, log_key
from . import audit
from .attempt_log import AttemptLogBuffer, capture_every_thread, capturing
from .context import HandlerContext, ReplyBox
from .handlers import HandlerRegistry, describe_exception

log = logging.getLogger("gclo.worker")
MAX_LOG_LINE = 4000  # characters of one forwarded log line


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
             channel: ReplyBox | None = None) -> ComputationSucceeded | ComputationFailed:
    """Run one attempt. `channel` carries what the handler asks of the orchestrator while it runs (submissions,
    waits) and brings back the answers. What the handler writes (ctx.log, stdout, stderr, the traceback it fails
    with) is its attempt's log, written to the store before the outcome is returned, unless it is empty."""
    requests_before = store.request_count() or 0
    record = AttemptLogBuffer()
    with capturing(record):
        outcome = _attempt(task, registry, store, channel, record)
    if record:
        _write_log(store, task, record)
    return outcome._replace(requests=(store.request_count() or 0) - requests_before)


def _write_log(store: ObjectStore, task: Task, record: AttemptLogBuffer) -> None:
    key = log_key(task.spec.computation, task.attempt)
    try:
        store.put(key, record.text().encode("utf-8", "backslashreplace"), LOG_METADATA)
    except Exception as exc:  # a log that cannot be kept must not fail the attempt it describes
        log.warning("could not write the log of attempt %s #%d to %r: %s", task.spec.computation, task.attempt,
                    key, exc)


def _attempt(task: Task, registry: HandlerRegistry, store: ObjectStore, channel: ReplyBox | None,
             record: AttemptLogBuffer) -> ComputationSucceeded | ComputationFailed:
    spec = task.spec
    started = time.perf_counter()

    def failed(error: str, permanent: bool = False, raised: BaseException | None = None) -> ComputationFailed:
        if raised is not None:
            record.failure(raised, error)
        return ComputationFailed(spec.computation, task.attempt, error, permanent, time.perf_counter() - started)

    fn = registry.get(spec.handler_type)
    if fn is None:
        return failed(str(UnknownHandlerType(spec.handler_type, registry.types())), permanent=True)
    handler_file = getattr(getattr(fn, "__code__", None), "co_filename", None)
    ctx = HandlerContext(spec, task.attempt, store, channel, record)
    audit.record("start", spec.computation, task.attempt)
    try:
        result = fn(ctx)
        body = encode_result(result)
    except PermanentHandlerError as exc:
        return failed(f"gave up: {describe_exception(exc, handler_file)}", permanent=True, raised=exc)
    except SpecError as exc:
        return failed(f"emitted invalid GCL: {exc.one_line()}", raised=exc)
    except Exception as exc:
        return failed(describe_exception(exc, handler_file), raised=exc)
    except SystemExit as exc:
        return failed(f"the handler called exit({exc.code})", raised=exc)

    inputs = dict(task.inputs)
    inputs.update((k, v) for k, v in ctx.read_versions.items() if k in inputs)  # as read, where it was read
    run = f"{task.run_seq}:{run_id(spec, inputs.items())}"
    try:
        lineage = encode_lineage(run, sorted(inputs.items()))
        encoded = encode_gcl(ctx.emitted, other=lineage.metadata)
        lineage.write_sidecar(store)
        encoded.write_sidecar(store)
        info, kept = _commit(store, task, body, encoded.metadata, run)
    except TransientStorageError as exc:
        return failed(f"could not write output {spec.output!r}: {exc}")
    except (StorageError, ValueError) as exc:
        return failed(f"could not write output {spec.output!r}: {exc}", permanent=True)
    if kept:
        # Someone committed this output first (an earlier attempt of this run, a newer run, another writer):
        # theirs stands, and its own GCL says what follows.
        audit.record("kept", spec.computation, task.attempt, key=spec.output, etag=info.etag, run=run)
        return ComputationSucceeded(spec.computation, task.attempt, info.etag, None, info.metadata,
                                    time.perf_counter() - started, committed_at=time.time(),
                                    output_identity=identity(info.digest, gcl_fingerprint(info.metadata)),
                                    run=metadata_get(info.metadata, META_RUN), output_digest=info.digest)
    audit.record("commit", spec.computation, task.attempt, key=spec.output, etag=info.etag, run=run)
    return ComputationSucceeded(spec.computation, task.attempt, info.etag, ctx.emitted, encoded.metadata,
                                time.perf_counter() - started,
                                spec.handler_type if ctx.wants_completions else None,
                                committed_at=time.time(),
                                output_identity=identity(info.digest, gcl_fingerprint(encoded.metadata)), run=run,
                                output_digest=info.digest)


def _commit(store: ObjectStore, task: Task, body: bytes, metadata: dict[str, str], run: str) -> tuple[Any, bool]:
    """Write the output once for this run: create it, or replace the version the run was dispatched to
    replace. (info, kept): kept when another write stands instead, one this run must not replace: the same run
    committed already (a retried request, an earlier attempt), a newer run did, or someone outside did. Only an
    older run's output is replaced, and only by compare-and-swap on the version just read."""
    key = task.spec.output
    expected = task.replaces
    for _ in range(5):
        try:
            if expected is None:
                return store.create(key, body, metadata), False
            return store.replace(key, body, metadata, expected_etag=expected), False
        except (ObjectAlreadyExists, ObjectChanged):
            try:
                current = store.head(key)
            except ObjectNotFound:
                expected = None  # deleted meanwhile: create it
                continue
        theirs = metadata_get(current.metadata, META_RUN)
        if theirs == run or not _older_run(theirs, task.run_seq):
            return current, True
        expected = current.etag  # an older run wrote after this one was dispatched: this one is newer
    raise TransientStorageError(f"output {key!r} kept changing while attempt {task.attempt} tried to commit it")


def _older_run(recorded: str | None, seq: int) -> bool:
    """Whether the output's recorded run is an earlier run of the computation than run number `seq`."""
    if recorded is None:
        return False  # written from outside: not ours to replace
    number = recorded.split(":", 1)[0]
    return number.isdigit() and int(number) < seq


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
    inbox = _Inbox(conn)
    _forward_logs(inbox)
    capture_every_thread()  # one attempt at a time here: output of the threads a handler starts is its too
    from ..storage import open_store  # the storage layer is only needed in the worker

    try:
        registry = HandlerRegistry.from_sources(handler_sources)
        store = open_store(store_uri)
    except GclError as exc:
        inbox.send(("fatal", str(exc)))
        return
    inbox.send(("ready", os.getpid()))
    while True:
        task = inbox.next()
        if task is None:
            return
        inbox.current = f"[{task.spec.computation} #{task.attempt}]"
        try:
            outcome = run_task(task, registry, store, inbox.channel())
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            inbox.current = "[worker]"
        inbox.send(("result", outcome))


class _Inbox:
    """The worker's side of its pipe. A reader thread takes what arrives: tasks, kept so the next one is here
    when the current one ends, and the core's replies to the running handler. While a handler blocks in a wait,
    tasks waiting behind it (and any that arrive) are sent back, so they can run elsewhere: the work the handler
    waits for may be among them."""

    def __init__(self, conn: Any):
        self._conn = conn
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._tasks: collections.deque[Task] = collections.deque()
        self._closed = False
        self._blocked = False
        self._replies: ReplyBox | None = None
        self.current = "[worker]"  # names the running attempt in forwarded log lines
        threading.Thread(target=self._read, name="gclo-worker-inbox", daemon=True).start()

    def send(self, message: tuple[str, Any]) -> None:
        with self._send_lock:
            self._conn.send(message)

    def next(self) -> Task | None:
        with self._cond:
            while not self._tasks and not self._closed:
                self._cond.wait()
            return self._tasks.popleft() if self._tasks else None

    def channel(self) -> ReplyBox:
        """A fresh reply box for the task about to run (replies to an earlier attempt are not its business)."""
        self._replies = ReplyBox(self._signal)
        return self._replies

    def _signal(self, event: object) -> None:
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
                item = self._conn.recv()
            except (EOFError, OSError):
                item = None
            if isinstance(item, tuple) and item and item[0] == "reply":
                replies = self._replies
                if item[1] is not None and replies is not None:
                    with self._cond:
                        self._blocked = False  # a reply ends a wait (or answers a submission)
                    replies.put(item[1])
                continue
            with self._cond:
                if item is None:
                    # Told to stop, or the orchestrator is gone (killed): the running attempt ends and commits,
                    # but what waits behind it is not started: nobody would hear of it, and a restarted
                    # orchestrator dispatches it again.
                    self._closed = True
                    self._tasks.clear()
                    self._cond.notify()
                    return
                if self._blocked:
                    self.send(("returned", item))
                    continue
                self._tasks.append(item)
                self._cond.notify()


class _ForwardingHandler(logging.Handler):
    """Log records of handlers (ctx.log, anything under the `gclo` loggers) go to the orchestrator's log."""

    def __init__(self, inbox: _Inbox):
        super().__init__()
        self._inbox = inbox

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self._inbox.send(("log", (record.levelno, text[:MAX_LOG_LINE])))
        except Exception:
            self.handleError(record)


class _LineStream(io.TextIOBase):
    """sys.stdout / sys.stderr of a worker: each complete line goes to the orchestrator's log, prefixed with the
    running attempt and the stream's name."""

    def __init__(self, inbox: _Inbox, name: str, level: int):
        self._inbox = inbox
        self._name = name
        self._level = level
        self._partial = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._partial += text
            *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._send(line)
        if len(self._partial) > MAX_LOG_LINE:
            self.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            line, self._partial = self._partial, ""
        if line:
            self._send(line)

    def _send(self, line: str) -> None:
        try:
            self._inbox.send(("log", (self._level, f"{self._inbox.current} {self._name}: {line[:MAX_LOG_LINE]}")))
        except (OSError, ValueError):
            pass  # the orchestrator is gone; nobody is reading


def _forward_logs(inbox: _Inbox) -> None:
    handler = _ForwardingHandler(inbox)
    root = logging.getLogger("gclo")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    sys.stdout = _LineStream(inbox, "stdout", logging.INFO)  # type: ignore[assignment]
    sys.stderr = _LineStream(inbox, "stderr", logging.WARNING)  # type: ignore[assignment]
