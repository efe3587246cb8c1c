"""Completion notifications, off the orchestrator's loop: calls `@handler.on_complete` functions and writes
completion events under `.gclo/events/`, on one thread, so that neither a slow callback nor a store round trip
delays scheduling. Events are batched, one JSON-lines object per half second (or 500 events), so following a
run costs a request per batch, not per computation. Completion handlers run in the orchestrator's process: keep
them short."""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import queue
import threading
import time
from typing import Any, Callable

from ..errors import GclError, ObjectAlreadyExists, ObjectNotFound
from ..interfaces import ObjectStore
from ..model import RESERVED_PREFIX, Completion, IncidentReported
from ..supervise import start_thread
from .handlers import HandlerRegistry, describe_exception

log = logging.getLogger("gclo")
EVENTS_PREFIX = RESERVED_PREFIX + "events/"
ARCHIVE_PREFIX = RESERVED_PREFIX + "events-archive/"
BATCH_S = 0.5
BATCH_MAX = 500
ROLLUP_AGE_S = 3600.0  # batches older than this are rolled up into one archive object...
ROLLUP_EVERY = 1000  # ...once at start and after every this many batches written
ROLLUP_MAX = 1000  # batches in one archive (a store with months of batches is rolled up over several passes)
_STOP = object()


def event_key(first: str, at: float, count: int) -> str:
    """Keys sort by time, so a reader can list after the last key it saw (StartAfter on S3)."""
    digest = hashlib.sha1(f"{first}/{at}".encode()).hexdigest()[:12]
    return f"{EVENTS_PREFIX}{int(at * 1e6):017d}-{digest}-{count}.jsonl"


class Notifier:
    def __init__(self, store: ObjectStore, registry: HandlerRegistry, report: Callable[[object], None],
                 publish: bool = True, on_told: Callable[[Completion], None] | None = None):
        self.store = store
        self.registry = registry
        self.report = report  # into the orchestrator's queue: incidents
        self.publish_events = publish
        self.on_told = on_told  # called (on the notifier's thread) for each completion once its event is written
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._warned: set[str] = set()
        self._batch: list[tuple[Completion, float]] = []
        self._written_since_rollup = ROLLUP_EVERY  # so the first write also rolls up what earlier runs left

    def incident(self, key: str | None, message: str) -> None:
        self.report(IncidentReported("notifier", message, key))

    def start(self) -> None:
        self._stopping.clear()
        self._thread = start_thread("gclo-notifier", self._loop, self.report, self._stopping)

    def notify(self, handler_type: str, completion: Completion) -> None:
        self._q.put(("notify", handler_type, completion))

    def publish(self, completion: Completion) -> None:
        if self.publish_events:
            self._q.put(("publish", completion, time.time()))
        elif self.on_told is not None:
            self.on_told(completion)

    def stop(self) -> None:
        """Deliver what is queued, then stop."""
        if self._thread is not None:
            self._q.put(_STOP)
            self._thread.join()
            self._thread = None
            self._stopping.set()

    def _loop(self) -> None:
        batch = self._batch  # kept on the instance: a restarted loop goes on with what was collected
        deadline = time.monotonic() + BATCH_S if batch else None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                self._write(batch)
                batch.clear()
                return
            if item is not None and item[0] == "notify":
                self._call(item[1], item[2])
            elif item is not None:
                batch.append((item[1], item[2]))
                deadline = deadline or time.monotonic() + BATCH_S
            if batch and (len(batch) >= BATCH_MAX or time.monotonic() >= (deadline or 0)):
                self._write(batch)
                batch.clear()
                deadline = None

    def _call(self, handler_type: str, completion: Completion) -> None:
        fn = self.registry.completion(handler_type)
        if fn is None:
            if handler_type not in self._warned:
                self._warned.add(handler_type)
                self.incident(None, f"no @handler.on_complete({handler_type!r}) is registered; its completion "
                                    "notifications are dropped")
            return
        try:
            fn(completion)
        except Exception as exc:
            self.incident(completion.output, f"completion handler for {handler_type!r} failed on "
                                             f"{completion.computation!r}: {describe_exception(exc)}")

    def _write(self, batch: list[tuple[Completion, float]]) -> None:
        if not batch:
            return
        lines = [json.dumps({**c._asdict(), "state": c.state.value, "at": at}) for c, at in batch]
        try:
            self.store.put(event_key(batch[0][0].computation, batch[0][1], len(batch)),
                           ("\n".join(lines) + "\n").encode(), {"content-type": "application/x-ndjson"})
        except GclError as exc:
            log.warning("could not write %d completion event(s): %s", len(batch), exc)
            return
        if self.on_told is not None:
            for completion, _ in batch:
                self.on_told(completion)
        self._written_since_rollup += 1
        if self._written_since_rollup >= ROLLUP_EVERY:
            self._written_since_rollup = 0
            try:
                self.roll_up(time.time())
            except GclError as exc:
                log.warning("could not roll up old completion events: %s (tried again later)", exc)

    def roll_up(self, now: float, age_s: float = ROLLUP_AGE_S) -> int:
        """Move the batches under .gclo/events/ older than `age_s` into one gzip'd archive under
        .gclo/events-archive/ (its key: the first and last batch's times, and the event count), so that
        .gclo/events/ holds about the last hour however long the service runs. Returns the batches rolled up."""
        cutoff = int((now - age_s) * 1e6)
        archived_until = max((_archive_end(i.key) for i in self.store.list(ARCHIVE_PREFIX)), default=-1)
        old = [info.key for info in self.store.list(EVENTS_PREFIX)
               if "/" not in info.key[len(EVENTS_PREFIX):] and _batch_time(info.key) < cutoff]
        done = [k for k in old if _batch_time(k) <= archived_until]  # archived by a pass that stopped early
        for key in done:
            self.store.delete(key)
        old = [k for k in old if _batch_time(k) > archived_until][:ROLLUP_MAX]
        if not old:
            return len(done)
        bodies = []
        for key in old:
            try:
                bodies.append(self.store.get(key).body)
            except ObjectNotFound:
                continue  # rolled up by someone else meanwhile
        body = b"".join(b if b.endswith(b"\n") else b + b"\n" for b in bodies)
        count = body.count(b"\n")
        archive = f"{ARCHIVE_PREFIX}{_batch_time(old[0]):017d}-{_batch_time(old[-1]):017d}-{count}.jsonl.gz"
        try:
            self.store.create(archive, gzip.compress(body, compresslevel=6),
                              {"content-type": "application/gzip"})
        except ObjectAlreadyExists:
            pass  # the same batches, rolled up before a crash
        for key in old:
            self.store.delete(key)
        log.info("completion events: %d batch(es) older than %.0f min rolled up into %s", len(old), age_s / 60,
                 archive)
        return len(old) + len(done)


def _archive_end(key: str) -> int:
    """The time of the last batch an archive key says it holds (FIRST-LAST-COUNT.jsonl.gz); -1 if unreadable."""
    parts = key.rsplit("/", 1)[-1].split("-")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else -1


def _batch_time(key: str) -> int:
    """The microseconds a batch key starts with (event_key); a key of another shape sorts as the newest."""
    digits = key.rsplit("/", 1)[-1].split("-", 1)[0]
    return int(digits) if digits.isdigit() else 1 << 62
