"""The orchestrator loop: drain the one event queue, turn source events into core events (reading GCL from
metadata, sidecars or rules), feed the core, carry out its instructions, and keep the status in the store.
"""
from __future__ import annotations

import collections
import dataclasses
import gc
import logging
import os
import queue
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from ..core import ComputationRecord, Scheduler, SchedulerConfig
from ..errors import GclError, InvalidKeyError, ObjectNotFound, RulesError, UnknownHandlerType, UnreadableObject
from ..interfaces import EventSource, Executor, ObjectStore, Task
from ..model import (
    AttemptFailed,
    AttemptsRestored,
    CapacityChanged,
    Cancel,
    CancelRequested,
    Completion,
    ComponentFailed,
    ComputationBlocked,
    ComputationFailed,
    ComputationResumed,
    ComputationSpec,
    ComputationSucceeded,
    Deadlock,
    Dispatch,
    Expedite,
    IncidentReported,
    Notify,
    ObjectAvailable,
    ObjectCreated,
    ObjectRemoved,
    PoolSpec,
    ReadGcl,
    Reject,
    Reply,
    RerunRequested,
    RESERVED_PREFIX,
    Settle,
    SpecsSubmitted,
    Stale,
    Stalled,
    State,
    check_key,
    identity,
    is_reserved,
    metadata_get,
)
from ..gcl import RuleSet, what_follows
from ..gcl.metadata import META_RUN, gcl_fingerprint, read_gcl_fields, valid_sidecar_key
from ..journal import Journal, JournalConflict, Known, load_journal
from ..sources.requests import RequestSource
from ..supervise import start_thread
from ..views.status import StatusParts, write_status
from .handlers import HandlerRegistry
from .notifier import Notifier

log = logging.getLogger("gclo")
RULES_KEY = RESERVED_PREFIX + "rules.yaml"
_STOP = object()
_TRY_AGAIN = object()
_HEAD = object()  # _resolve: a HEAD is due
MAX_COMMIT_TIMES = 100_000  # outputs whose commit time is kept, for the write-to-dispatch statistic
MAX_REFUSED_KEYS = 100_000  # keys refused once and remembered, so a redelivery is not reported again
EXIT_COMPONENT_FAILED = 3


GC_THRESHOLDS = (50_000, 20, 20)


def tune_garbage_collection() -> None:
    """The graph is many small objects that live as long as the run. CPython's default collector (a young
    collection every 700 allocations, full ones as the heap grows) re-scans them so often that at 100,000
    computations it takes a quarter of the core's time and makes the cost per computation grow with the graph;
    fewer, larger young collections keep it flat (see README, Speed). For a process of our own (`gclo run`, the
    benchmarks); thresholds someone else set are left alone."""
    if gc.get_threshold() == (700, 10, 10):
        gc.set_threshold(*GC_THRESHOLDS)


class EventQueue:
    """The one queue every emitter (sources, executors, later the HTTP API) pushes into."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def put(self, event: Any) -> None:
        self._q.put(event)

    def drain(self, timeout: float, limit: int = 10_000) -> list[Any]:
        """Wait up to `timeout` for one event, then take whatever else is already there (up to `limit`)."""
        try:
            items = [self._q.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(items) < limit:
            try:
                items.append(self._q.get_nowait())
            except queue.Empty:
                break
        return items

    def empty(self) -> bool:
        return self._q.empty()

    def size(self) -> int:
        """Events waiting (approximate, as the queue's own count is)."""
        return self._q.qsize()


@dataclass
class RunOptions:
    until_idle: bool = False
    quiet_s: float = 1.0  # --until-idle: how long nothing may happen before the run counts as finished
    status_interval_s: float = 1.0
    progress_interval_s: float = 5.0
    stop_grace_s: float = 5.0
    check_create: bool = True  # probe the store's create-if-absent before running (--unsafe-skip-create-check)
    request_interval_s: float = 2.0  # how often .gclo/requests/ (gclo rerun) is looked at
    journal: bool = True  # keep the journal under .gclo/journal/ (and read it at start)
    rebuild: bool = False  # at start, ignore the journal and read every object's metadata (--rebuild)
    journal_interval_s: float = 1.0  # how often what was learned is written as a journal segment
    metadata_readers: int = 16  # HEADs in parallel when many objects need their metadata read (a restart)


class Thinned:
    """A bounded record of a long series: every value until `limit`, then every other one kept (and from then on
    one in `stride`), so that a run of any length keeps at most `limit` values spread evenly over it."""

    def __init__(self, limit: int = 100_000):
        self.limit = limit
        self.values: list[float] = []
        self.stride = 1
        self.count = 0  # values offered, kept or not

    def append(self, value: float) -> None:
        if self.count % self.stride == 0:
            self.values.append(value)
            if len(self.values) >= self.limit:
                del self.values[1::2]
                self.stride *= 2
        self.count += 1

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class RunStats:
    """What a run cost: for benchmarks, and the end-of-run log line."""

    started: float = 0.0
    finished: float = 0.0
    first_dispatch: float | None = None
    last_success: float | None = None
    succeeded: int = 0
    worker_requests: int = 0
    orchestrator_requests: int = 0
    # seconds from an output's commit (in a worker) to the dispatch of a computation that reads it (bounded)
    write_to_dispatch_s: Thinned = field(default_factory=Thinned)
    success_times: Thinned = field(default_factory=Thinned)  # monotonic, in order (bounded)

    def steady_rate(self) -> float | None:
        """Successes per second between the 10th and the 90th percentile of success times: the rate once work
        flows, without start-up, a slow first computation or a long last one (a join reading every part)."""
        times = self.success_times.values
        n = len(times)
        if n < 10:
            span = (self.last_success - self.first_dispatch) if self.first_dispatch and self.last_success else 0
            return self.succeeded / span if span else None
        lo, hi = n // 10, n - 1 - n // 10
        span = times[hi] - times[lo]
        return (hi - lo) * self.success_times.stride / span if span > 0 else None

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.write_to_dispatch_s.values)

        def pct(p: float) -> float | None:
            return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else None

        wall = self.finished - self.started
        requests = self.worker_requests + self.orchestrator_requests
        return {"wall_s": wall, "succeeded": self.succeeded,
                "to_last_result_s": (self.last_success - self.started) if self.last_success else None,
                "steady_per_s": self.steady_rate(),
                "write_to_dispatch_p50_s": pct(0.5), "write_to_dispatch_p99_s": pct(0.99),
                "requests": requests, "worker_requests": self.worker_requests,
                "orchestrator_requests": self.orchestrator_requests,
                "requests_per_computation": requests / self.succeeded if self.succeeded else None}


@dataclass
class RunResult:
    exit_code: int  # 0 all done; 1 something failed, waits or was rejected; 3 a component failed; 130 stopped
    counts: dict[str, int]
    failed: list[tuple[str, str]] = field(default_factory=list)
    waiting: list[tuple[str, list[str]]] = field(default_factory=list)
    rejected: int = 0
    interrupted: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


SourceFactory = Callable[[Mapping[str, str]], Sequence[EventSource]]


class _StatusWriter:
    """Encodes and writes the status document on a thread of its own: the loop only builds it (that reads the
    core), so a large graph's document never holds up scheduling. Only the newest summary waiting is written,
    with the parts of every document it replaced."""

    def __init__(self, store: ObjectStore, report: Callable[[object], None]):
        self.store = store
        self.report = report
        self._cond = threading.Condition()
        self._pending: dict[str, Any] | None = None
        self._unwritten: dict[str, Any] = {}  # status parts a failed write left unwritten
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_write_s = 0.0  # how long the last document took to encode and write

    def start(self) -> None:
        self._stopping.clear()
        self._thread = start_thread("gclo-status", self._loop, self.report, self._stopping)

    def submit(self, doc: dict[str, Any]) -> None:
        with self._cond:
            if self._pending is not None:  # not written yet: its parts go with the newer summary (newer win)
                doc["part_items"] = {**self._pending.get("part_items", {}), **doc.get("part_items", {})}
            self._pending = doc
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopping.is_set():
                    self._cond.wait(0.5)
                doc, self._pending = self._pending, None
            if doc is None:
                return  # stopping, nothing left to write
            self.write(doc)

    def write(self, doc: dict[str, Any]) -> None:
        started = time.monotonic()
        with self._cond:  # the parts a failed write did not write go with this one (newer win)
            unwritten, self._unwritten = self._unwritten, {}
        if unwritten:
            doc["part_items"] = {**unwritten, **doc.get("part_items", {})}
        try:
            write_status(self.store, doc)
        except GclError as exc:
            log.warning("could not write status to %s: %s", self.store.describe(), exc)
            with self._cond:
                self._unwritten = {**doc.get("part_items", {}), **self._unwritten}
        self.last_write_s = time.monotonic() - started

    def stop(self) -> None:
        """Write what is waiting, then stop."""
        self._stopping.set()
        with self._cond:
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class _Seen(NamedTuple):
    """An object as the runtime saw it: its metadata (None: not read, its producer's report brings the GCL),
    its version (the store's stamp, and the digest of its bytes where known), and why it cannot be read, if it
    cannot."""

    key: str
    metadata: Mapping[str, str] | None
    etag: str | None
    unreadable: str | None = None
    digest: str | None = None

    @property
    def identity(self) -> str | None:
        if self.metadata is None or self.digest is None:
            return None
        return identity(self.digest, gcl_fingerprint(self.metadata))

    @property
    def run(self) -> str | None:
        return metadata_get(self.metadata, META_RUN) if self.metadata is not None else None


class LoopStopped(GclError):
    """A call to the loop came when it had stopped."""


class LoopCall(NamedTuple):
    """`fn` to be called on the loop's thread, between two batches, its result (or exception) set on `future`:
    how another thread (the HTTP API) reads the graph or hands the core an event and hears what came of it,
    without a lock on the core."""

    fn: Callable[[], Any]
    future: Future


Watcher = Callable[[list[tuple[str, State, float]], Scheduler], None]


class Orchestrator:
    """One run over one store. `make_sources(listing)` builds the event sources once the initial listing
    (key -> etag) is known, so a polling source does not report the whole store again."""

    def __init__(self, store: ObjectStore, executor: Executor, registry: HandlerRegistry, *,
                 make_sources: SourceFactory, rules: RuleSet | None = None,
                 options: RunOptions | None = None, scheduling: SchedulerConfig | None = None,
                 publish_completions: bool = True, watcher: Watcher | None = None):
        self.store = store
        self.executor = executor
        self.handler_types = registry
        self.make_sources = make_sources
        self.rules = rules or RuleSet()
        self.options = options or RunOptions()
        scheduling = scheduling or SchedulerConfig(pools=(PoolSpec("general", executor.capacity),))
        self.core = Scheduler(config=dataclasses.replace(scheduling, prefetch=executor.prefetch))
        # Told every state change, on the loop thread, once per batch (the HTTP API's event stream). The status
        # parts follow them too: a status write rebuilds only the parts whose computations changed.
        self._watcher = watcher
        self.core.changes = []
        self._status_parts = StatusParts()
        self._status_changed: set[str] = set()  # computations whose state changed since the last status write
        self.queue = EventQueue()
        self._incidents: collections.deque[dict[str, Any]] = collections.deque(maxlen=200)
        self.incident_total = 0
        self._calls_closed = False
        self._refused_keys: set[str] = set()
        self._sources: list[EventSource] = []
        self._stop_requested = False
        self._failed_component: str | None = None
        self._dirty = True
        # Where an object's etag is the digest of its bytes, an event that carries the metadata says everything;
        # elsewhere (a local directory's stamps) a HEAD reads the digest.
        self._etag_is_digest = store.etag_is_digest
        self.notifier = Notifier(store, registry, self.queue.put, publish_completions, on_told=self._on_told)
        self._status = _StatusWriter(store, self.queue.put)
        self.stats = RunStats()
        self._committed_at: dict[str, float] = {}
        self.journal: Journal | None = None
        self._known: dict[str, Known] = {}  # at start: what the journal knew of each object (not with --rebuild)
        self._journal_objects: dict[str, Known] = {}  # at start: the same, --rebuild or not
        self._journal_failed = False  # another writer took the journal: nothing more is written to it
        self._told: set[str] = set()  # at start: outputs, in their current version, whose completion was told
        self._starting = False  # the start-up batch (the whole listing) is being handled
        self._found_done = 0  # computations the start-up batch found done
        self._restored: dict[str, list[Any]] = {}  # at start: the journal's attempts of computations before it
        self._attempted: set[str] = set()  # computations whose failed attempts the journal holds
        self._journal_stop = threading.Event()
        self._journal_thread: threading.Thread | None = None
        self.restart: dict[str, Any] = {}  # what the start-up cost: objects listed, known, read (for benchmarks)
        self._info: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(), "state": "starting",
                                      "store": store.describe(), "workers": executor.capacity}

    # --- control -----------------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Thread- and signal-safe: the loop stops at its next turn."""
        self._stop_requested = True
        self.queue.put(_STOP)

    def call(self, fn: Callable[[], Any]) -> Future:
        """Thread-safe: run `fn` on the loop's thread at its next turn (it may read the core, or feed it events
        with `feed`); the future holds its result. Keep `fn` short: the loop does nothing else meanwhile. Once
        the loop has stopped, a call fails with LoopStopped; wait on the future with a time-out all the same (the
        loop may be busy, or stop just as the call is made)."""
        future: Future = Future()
        if self._calls_closed:
            future.set_exception(LoopStopped("the orchestrator has stopped"))
        else:
            self.queue.put(LoopCall(fn, future))
        return future

    def feed(self, events: list[Any]) -> None:
        """From a `call` only (the loop's thread): hand these core events to the core now."""
        self._feed(events)

    @property
    def incidents(self) -> list[dict[str, Any]]:
        return list(self._incidents)

    @property
    def info(self) -> dict[str, Any]:
        """The orchestrator's pid, host, store, state and start time (as the status document has them)."""
        return dict(self._info)

    def run(self) -> RunResult:
        opts = self.options
        self._info["started_at"] = time.time()
        self.stats.started = time.monotonic()
        try:
            for note in self.store.startup_check(verify_create=opts.check_create):
                log.info("store %s: %s", self.store.describe(), note)
            if not opts.check_create:
                log.warning("store %s: create-if-absent was not checked (--unsafe-skip-create-check); outputs are "
                            "written once only if the store honours it", self.store.describe())
            self.executor.start(self.queue.put)
        except BaseException:
            self.executor.stop(0)  # a cluster it connected to or started is let go of
            raise
        self.notifier.start()
        self._status.start()
        interrupted = False
        try:
            self._load_store_rules()
            self._open_journal()
            listing = self._initial_listing()
            self._reconcile_journal(listing)
            self._sources = list(self.make_sources({k: e for k, e in listing.items() if e is not None}))
            self._sources.append(RequestSource(self.store, opts.request_interval_s))  # gclo rerun
            for source in self._sources:
                source.start(self.queue.put)
            self._info["events"] = [s.name for s in self._sources]
            self._info["state"] = "running"
            log.info("store %s: %d objects; listening with %s; %s", self.store.describe(),
                     len(listing), ", ".join(self._info["events"]) or "no event source", self.executor.describe())
            reads_before = self.store.request_count() or 0
            self._starting = True
            self._handle([ObjectCreated(k, e, None, "listing") for k, e in listing.items()],
                         self._attempts_restored())
            self._starting = False
            self._start_up_read(listing, (self.store.request_count() or 0) - reads_before)
            self._save_status()  # at once: other processes (gclo status, gclo rerun) see that it runs
            last_event = last_status = last_progress = time.monotonic()
            status_every = opts.status_interval_s
            last_counts: dict[State, int] = {}
            while not self._stop_requested:
                wake = self.core.next_wakeup()
                timeout = 0.1 if wake is None else max(0.0, min(0.1, wake - time.time()))
                events = self.queue.drain(timeout=timeout)
                now = time.monotonic()
                if events:
                    last_event = now
                    self._handle(events)
                if wake is not None and time.time() >= wake:
                    self._feed([])  # time alone changes things: a retry is due, a time-out, a deadlock
                if self._dirty and now - last_status >= status_every:
                    took = self._save_status(background=True)
                    last_status = time.monotonic()
                    # The document is a snapshot of the whole graph: on a large graph it is built less often, so
                    # that building it never takes more than a tenth of the loop's time, nor writing it (off the
                    # loop) more than a tenth of a core's: otherwise a graph that grows makes its run quadratic.
                    status_every = max(opts.status_interval_s, 10 * took, 10 * self._status.last_write_s)
                counts = self.core.counts()
                if now - last_progress >= opts.progress_interval_s and counts != last_counts:
                    log.info("progress: %s", _progress(counts))
                    last_counts, last_progress = counts, now
                if (opts.until_idle and self.core.is_quiescent() and self.queue.empty()
                        and now - last_event >= opts.quiet_s):
                    break
            interrupted = self._stop_requested and self._failed_component is None
        except KeyboardInterrupt:
            interrupted = True
        finally:
            for source in self._sources:
                source.stop()
            self.core.pause()  # outcomes still count, but nothing new goes to an executor that is stopping
            self.executor.stop(0.0 if interrupted or self._failed_component else opts.stop_grace_s)
            self._drain_after_stop()
            self.notifier.stop()
            self._close_journal()
            self.stats.finished = time.monotonic()
            self.stats.orchestrator_requests = self.store.request_count() or 0
            self._info["state"] = ("failed" if self._failed_component else
                                   "interrupted" if interrupted else "finished")
            self._info["stopped_at"] = time.time()
            self._status.stop()  # what it was writing first, then the last word
            self._save_status()
        return self._result(interrupted)

    # --- turning events into core events -----------------------------------------------------------------------

    def _handle(self, events: list[Any], after: Sequence[Any] = ()) -> None:
        """`after`: core events that go into the same batch, after these (the start-up's restored attempts)."""
        objects: list[_Seen] = []
        acks: list[Callable[[], None]] = []
        batch: list[Any] = []
        calls: list[LoopCall] = []
        created = [ev for ev in events if type(ev) is ObjectCreated]
        for ev, resolved in zip(created, self._resolve_all(created)):
            if resolved is _TRY_AGAIN:
                continue  # not acknowledged: the notification comes again
            if resolved is not None:
                objects.append(resolved)
            if ev.ack is not None:
                acks.append(ev.ack)
        for ev in events:
            if ev is _STOP:
                continue
            kind = type(ev)
            if kind is ObjectCreated:
                continue  # resolved above, all at once
            elif kind is ComputationSucceeded:
                batch.append(self._succeeded(ev))
            elif kind is ComputationFailed:
                self.stats.worker_requests += ev.requests
                batch.append(ev)
            elif kind is ComputationBlocked:
                keys = ", ".join(ev.keys[:5]) + (f" and {len(ev.keys) - 5} more" if len(ev.keys) > 5 else "")
                log.info("wait    %s #%d for %s (its slot goes to that work meanwhile)", ev.computation,
                         ev.attempt, keys)
                batch.append(ev)
            elif kind in (ComputationResumed, SpecsSubmitted):
                batch.append(ev)
            elif kind is CapacityChanged:
                log.info("workers %s", "; ".join(f"pool {p.name}: {p.slots} slot(s), "
                                                  + ", ".join(f"{r}={a:g}" for r, a in sorted(p.capacity.items()))
                                                  for p in ev.pools))
                batch.append(ev)
            elif kind is ObjectRemoved:
                if not is_reserved(ev.key):
                    log.info("deleted %s", ev.key)
                    if self.journal is not None:
                        self.journal.removed(ev.key)
                    batch.append(ev)
            elif kind is RerunRequested or kind is CancelRequested:
                batch.append(self.requested(ev))
                if ev.ack is not None:
                    acks.append(ev.ack)
            elif kind is LoopCall:
                calls.append(ev)
            elif kind is IncidentReported:
                self._incident(ev.key, f"{ev.where}: {ev.message}")
            elif kind is ComponentFailed:
                self._component_failed(ev)
        if objects:
            batch = self._objects_available(objects) + batch
        batch.extend(after)
        if batch:
            self._feed(batch)
        for call in calls:  # after the batch: a caller sees what the events before its call did
            if call.future.set_running_or_notify_cancel():
                try:
                    call.future.set_result(call.fn())
                except Exception as exc:  # the caller's to report
                    call.future.set_exception(exc)
        for ack in acks:
            try:
                ack()
            except Exception as exc:  # a lost ack means a duplicate later, which is harmless
                log.debug("acknowledging an event failed: %s", exc)

    def _resolve_all(self, created: list[ObjectCreated]) -> list[Any]:
        """Each ObjectCreated to what `_resolve` makes of it; the HEADs due are made in parallel when there are
        many (a restart, a listing that found a directory of new files)."""
        first = [self._resolve(ev) for ev in created]
        due = [i for i, r in enumerate(first) if r is _HEAD]
        if not due:
            return first
        outcomes = self._in_parallel(self._head, [created[i].key for i in due], "gclo-head", chunksize=64)
        for i, outcome in zip(due, outcomes):
            first[i] = self._after_head(created[i], outcome)
        return first

    def _in_parallel(self, read: Callable[[str], Any], keys: list[str], thread_name: str,
                     chunksize: int) -> list[Any]:
        """`read(key)` of each key, in order: in `metadata_readers` threads when there are many keys."""
        if len(keys) < 8 or self.options.metadata_readers <= 1:
            return [read(k) for k in keys]
        with ThreadPoolExecutor(min(self.options.metadata_readers, len(keys)), thread_name_prefix=thread_name) as pool:
            return list(pool.map(read, keys, chunksize=chunksize))

    def _resolve(self, ev: ObjectCreated) -> Any:
        """An ObjectCreated to what was seen of the object, its metadata read where the event did not carry it
        and the core will want it; None when it brings nothing new (the core says what is a duplicate);
        _TRY_AGAIN when the store could not be asked (the event is not acknowledged); _HEAD when the store must
        be asked (`_after_head` then says)."""
        key = ev.key
        if is_reserved(key):
            return None
        try:
            check_key(key)
        except InvalidKeyError as exc:
            self._refuse_key(key, exc.reason)
            return None
        metadata, etag = ev.metadata, ev.etag
        if metadata is not None and self._etag_is_digest:
            # An event that says it all (bytes and GCL): the core compares identities, so the same bytes with
            # fixed GCL are a new version, and the same bytes and GCL again are not. No HEAD.
            seen = _Seen(key, metadata, etag, None, etag)
            if self.core.knows(key, etag, seen.identity):
                return None
            if self.journal is not None:
                self.journal.seen(key, etag, etag, metadata)
            return seen
        if self.core.knows(key, etag):
            return None  # a duplicate notification
        if metadata is None and self.core.expects_report(key):
            return _Seen(key, None, etag)  # its producer runs: the worker's report carries the GCL, no HEAD
        known = self._known.get(key)
        if known is not None and etag is not None and known.etag == etag:
            return _Seen(key, known.metadata, etag, None, known.digest)  # the journal has it in this version
        return _HEAD

    def _head(self, key: str) -> Any:
        try:
            return self.store.head(key)
        except GclError as exc:
            return exc

    def _after_head(self, ev: ObjectCreated, outcome: Any) -> Any:
        key, etag = ev.key, ev.etag
        if isinstance(outcome, ObjectNotFound):
            return None  # deleted since it was reported
        if isinstance(outcome, UnreadableObject):
            return _Seen(key, None, etag, outcome.reason)  # the object's own fault: reported against it, once
        if isinstance(outcome, GclError):
            self._incident(key, f"could not read metadata: {outcome}")
            return _TRY_AGAIN  # not remembered, so a later notification or listing tries again
        info = outcome
        if self.journal is not None:
            self.journal.seen(key, info.etag, info.digest, info.metadata)
        if self.core.knows(key, info.etag):
            return None
        return _Seen(key, info.metadata, info.etag, None, info.digest)  # the core tells a new version by identity

    def _objects_available(self, objects: list[_Seen]) -> list[ObjectAvailable]:
        """What follows each object, decided as one batch: rules never apply to a key that a registered
        computation, or a spec in this very batch, produces (at restart the whole store is one batch)."""
        declared: dict[str, tuple[tuple[ComputationSpec, ...], str | None]] = {}
        outputs: set[str] = set()
        read_sidecar = self._sidecars_read([s.metadata for s in objects if s.metadata is not None])
        for seen in objects:
            if seen.metadata is not None:
                specs, error = self._what_follows(seen.key, seen.metadata, produced=True, read_sidecar=read_sidecar)
                declared[seen.key] = (specs, error)
                outputs.update(s.output for s in specs)
        out = []
        for seen in objects:
            key = seen.key
            if seen.unreadable is not None:
                out.append(ObjectAvailable(key, (), f"its metadata cannot be read: {seen.unreadable}", seen.etag))
            elif seen.metadata is None:
                out.append(ObjectAvailable(key, None, None, seen.etag))  # its producer's report brings the GCL
            else:
                specs, error = declared[key]
                if not specs and error is None and key not in outputs and self.core.producer_state(key) is None:
                    specs, error = self._what_follows(key, seen.metadata, produced=False)  # rules may apply
                out.append(ObjectAvailable(key, specs, error, seen.etag, seen.identity, seen.run))
        return out

    def _what_follows(self, key: str, metadata: Mapping[str, str] | None, produced: bool,
                      read_sidecar: Callable[[str], bytes | None] | None = None,
                      ) -> tuple[tuple[ComputationSpec, ...], str | None]:
        return what_follows(key, metadata, rules=self.rules, produced=produced,
                            read_sidecar=read_sidecar or self._read_sidecar)

    def _sidecars_read(self, metadata: list[Mapping[str, str]]) -> Callable[[str], bytes | None]:
        """A `read_sidecar` for this batch: the sidecars its objects' GCL is in are read first, in parallel when
        there are many (a restart: every group head of a large tree keeps its GCL in one); any other, when asked."""
        fields = [read_gcl_fields(m) for m in metadata]
        refs = sorted({f.ref for f in fields if f.text is None and f.ref is not None and valid_sidecar_key(f.ref)})

        def fetch(ref: str) -> Any:
            try:
                return self._read_sidecar(ref)
            except GclError as exc:
                return exc
        bodies = dict(zip(refs, self._in_parallel(fetch, refs, "gclo-gcl", chunksize=16)))

        def read(ref: str) -> bytes | None:
            if ref not in bodies:
                return self._read_sidecar(ref)
            body = bodies[ref]
            if isinstance(body, GclError):
                raise body  # what_follows reports it as the reason, as it would one raised by a read of its own
            return body
        return read

    def _read_sidecar(self, ref: str) -> bytes | None:
        try:
            return self.store.get(ref).body
        except ObjectNotFound:
            return None

    def named(self, name: str) -> ComputationRecord | None:
        """The computation of that name, or the one producing the key of that name (read on the loop thread)."""
        rec = self.core.record(name)
        if rec is None:
            producer = self.core.producer_of(name)
            rec = self.core.record(producer) if producer is not None else None
        return rec

    def requested(self, ev: RerunRequested | CancelRequested) -> RerunRequested | CancelRequested:
        """A rerun or cancel asked for (`gclo rerun`, `gclo cancel`, the HTTP API), logged, and made about the
        computation it means: one naming a key is about the computation that produces that key."""
        rec = self.named(ev.computation)
        target = ev if rec is None or rec.name == ev.computation else dataclasses.replace(ev, computation=rec.name)
        produces = f" (which produces {ev.computation})" if target is not ev else ""
        if isinstance(ev, CancelRequested):
            log.warning("cancel  %s requested (%s)", target.computation, ev.source or "gclo cancel")
        else:
            log.info("rerun   %s%s%s requested (%s)", target.computation, produces,
                     " and downstream" if ev.downstream else "", ev.source or "gclo rerun")
        return target

    def _refuse_key(self, key: str, reason: str) -> None:
        """A key the S3 API allows but GCL does not (a console folder marker, `a//b`): acknowledged, reported
        once, and otherwise left alone."""
        if key in self._refused_keys:
            return
        if len(self._refused_keys) < MAX_REFUSED_KEYS:
            self._refused_keys.add(key)
        self._incident(key[:300], f"ignored: {reason} (gcl-orchestrator cannot use this key)")

    def _succeeded(self, ev: ComputationSucceeded) -> ComputationSucceeded:
        rec = self.core.record(ev.computation)
        if rec is None:
            return ev
        output = rec.spec.output
        if self.journal is not None:
            self.journal.seen(output, ev.output_etag, ev.output_digest, ev.metadata)
        self.stats.succeeded += 1
        self.stats.last_success = time.monotonic()
        self.stats.success_times.append(self.stats.last_success)
        self.stats.worker_requests += ev.requests
        if ev.committed_at:
            self._committed_at[output] = ev.committed_at
            if len(self._committed_at) > MAX_COMMIT_TIMES:  # statistics only: the oldest goes
                del self._committed_at[next(iter(self._committed_at))]
        if ev.specs is None:  # the output was already there: its own metadata says what follows
            specs, error = self._what_follows(output, ev.metadata, produced=True)
            log.info("done    %s #%d: output %s was already there; kept it", ev.computation, ev.attempt, output)
            return ev._replace(specs=specs, gcl_error=error)
        emitted = f", emitted {len(ev.specs)}" if ev.specs else ""
        log.info("done    %s #%d -> %s (%.2fs%s)", ev.computation, ev.attempt, output, ev.duration_s, emitted)
        return ev

    # --- feeding the core and carrying out its instructions ----------------------------------------------------

    def _feed(self, events: list[Any]) -> None:
        pending = events
        first = True
        while pending or first:
            first = False
            instructions = self.core.handle(pending, time.time())
            pending = []
            tasks: list[Task] = []
            for ins in instructions:
                kind = type(ins)
                if kind is Dispatch:
                    spec = ins.spec
                    if spec.handler_type not in self.handler_types:
                        pending.append(ComputationFailed(spec.computation, ins.attempt,
                                                         str(UnknownHandlerType(spec.handler_type,
                                                                                self.handler_types.types())),
                                                         permanent=True))
                        continue
                    rec = self.core.record(spec.computation)
                    label = f" as {rec.label}" if rec is not None and rec.alternative else ""
                    log.info("start   %s #%d [%s]%s%s", spec.computation, ins.attempt, spec.handler_type, label,
                             " on a lent slot" if ins.lent else "")
                    tasks.append(Task(spec, ins.attempt, self.store.uri, ins.pool, ins.lent, ins.replaces,
                                      ins.inputs, ins.run_seq, ins.priority))
                    if self.stats.first_dispatch is None:
                        self.stats.first_dispatch = time.monotonic()
                    committed = [self._committed_at[k] for k in spec.inputs if k in self._committed_at]
                    if committed:
                        self.stats.write_to_dispatch_s.append(time.time() - max(committed))
                elif kind is Settle:
                    self._settled(ins)
                elif kind is Reply:
                    self.executor.deliver(ins.computation, ins.attempt, ins.message)
                elif kind is Expedite:
                    if tasks:  # what it refers to may have been dispatched in this very step
                        self.executor.submit_all(tasks)
                        tasks = []
                    log.info("lend    %s #%d the slot of the handler waiting for it", ins.computation,
                             ins.attempt)
                    self.executor.expedite(ins.computation, ins.attempt)
                elif kind is AttemptFailed:
                    log.warning("attempt %s #%d failed: %s; %s", ins.computation, ins.attempt, ins.error, ins.then)
                    self._journal_attempts(ins.computation)
                elif kind is Cancel:
                    if tasks:  # in order: what was dispatched before this cancel is submitted before it
                        self.executor.submit_all(tasks)
                        tasks = []
                    log.warning("cancel  %s #%d: %s", ins.computation, ins.attempt, ins.reason)
                    self.executor.cancel(ins.computation, ins.attempt)
                elif kind is Reject:
                    what = f" computation {ins.computation!r}" if ins.computation else ""
                    log.warning("rejected GCL from %s%s: %s", ins.source, what, ins.reason)
                elif kind is Notify:
                    if not self._told_before(ins.completion):
                        self.notifier.notify(ins.handler_type, ins.completion)
                elif kind is ReadGcl:
                    pending.extend(self._read_gcl(ins.key))
                elif kind is Stale:
                    log.info("rerun   %s: %s", ins.computation, ins.reason)
                elif kind is Stalled:
                    log.warning("STALLED %s", ins.explanation)
                    self._incident(None, f"stalled: {ins.explanation}")
                elif kind is Deadlock:
                    resolution = {"missing-inputs": f"failing {len(ins.computations)} computation(s)",
                                  "held-resources": "ending the wait"}.get(ins.kind, "resolved")
                    log.warning("DEADLOCK (%s): %s; %s", ins.kind, ins.explanation, resolution)
            if tasks:
                self.executor.submit_all(tasks)
        changes = self.core.changes
        if changes:
            self.core.changes = []
            self._status_changed.update(change[0] for change in changes)
            if self._watcher is not None:
                try:
                    self._watcher(changes, self.core)
                except Exception:  # a watcher's bug must not stop the graph
                    log.exception("the state-change watcher failed; its changes are dropped")
        self._dirty = True

    def _read_gcl(self, key: str) -> list[ObjectAvailable]:
        """The core asks for the GCL of an object whose metadata nobody read (the attempt that was to report
        it ended without doing so)."""
        try:
            info = self.store.head(key)
        except ObjectNotFound:
            return []
        except UnreadableObject as exc:
            return [ObjectAvailable(key, (), f"its metadata cannot be read: {exc.reason}", None)]
        except GclError as exc:
            self._incident(key, f"could not read metadata: {exc}")
            return []
        seen = _Seen(key, info.metadata, info.etag, None, info.digest)
        if self.journal is not None:
            self.journal.seen(key, info.etag, info.digest, info.metadata)
        specs, error = self._what_follows(key, info.metadata, produced=True)
        return [ObjectAvailable(key, specs, error, info.etag, seen.identity, seen.run)]

    def _settled(self, ins: Settle) -> None:
        rec = self.core.record(ins.computation)
        if ins.state is State.FAILED:
            log.warning("FAILED  %s: %s", ins.computation, ins.detail)
        elif ins.state is State.UPSTREAM_FAILED:
            log.warning("UPSTREAM-FAILED %s: %s", ins.computation, ins.detail)
        elif self._starting and ins.state is State.DONE:
            self._found_done += 1  # one line for all of them, after the start-up batch
            log.debug("done    %s: %s", ins.computation, ins.detail)
        elif ins.detail:
            log.info("done    %s: %s", ins.computation, ins.detail)
        if rec is not None and rec.cancelled:
            self._journal_attempts(rec.name)  # a restart keeps it cancelled
        if rec is not None:
            completion = Completion(rec.name, rec.state, rec.spec.output, rec.attempts,
                                    rec.last_error if rec.state is not State.DONE else None, rec.produced_by)
            if self._told_before(completion):
                return
            self.notifier.publish(completion)  # the journal hears it is told once it is (_on_told)
            if rec.state is State.DONE and self.journal is not None:
                if rec.name in self._attempted:
                    self._attempted.discard(rec.name)
                    self.journal.attempts_done(rec.name)

    def _on_told(self, completion: Completion) -> None:
        """From the notifier's thread, once a completion event is written: a restart does not tell it again."""
        if completion.state is State.DONE and self.journal is not None:
            self.journal.told(completion.output)

    def _told_before(self, completion: Completion) -> bool:
        """At start-up, a computation found done whose completion an earlier run told (the journal says so) is
        not told again: completion handlers and `.gclo/events/` see each output's completion once."""
        return completion.state is State.DONE and completion.output in self._told

    def _component_failed(self, ev: ComponentFailed) -> None:
        log.error("%s cannot go on: %s; stopping (exit code %d)", ev.component, ev.message, EXIT_COMPONENT_FAILED)
        self._incident(None, f"{ev.component} failed: {ev.message}")
        self._failed_component = ev.component
        self.request_stop()

    # --- start-up, status, end ---------------------------------------------------------------------------------

    def _load_store_rules(self) -> None:
        try:
            text = self.store.get(RULES_KEY).body.decode("utf-8", "replace")
        except ObjectNotFound:
            return
        try:
            self.rules = self.rules + RuleSet.parse(text, source=RULES_KEY)
            log.info("rules: %d from %s", len(self.rules.rules), RULES_KEY)
        except RulesError as exc:
            self._incident(RULES_KEY, f"ignored: {exc}")

    def _initial_listing(self) -> dict[str, str | None]:
        return {info.key: info.etag for info in self.store.list(reserved=False) if not is_reserved(info.key)}

    # --- the journal -------------------------------------------------------------------------------------------

    def _open_journal(self) -> None:
        """Read what the journal knows (unless --rebuild), then keep writing it from a thread of its own."""
        opts = self.options
        if not opts.journal:
            return
        loaded = load_journal(self.store)
        self._journal_objects = loaded.objects  # for what was told and what is gone, --rebuild or not
        if opts.rebuild:
            log.info("journal: --rebuild, so every object's metadata is read (the journal goes on from "
                     "segment %d)", loaded.next_seq)
        else:
            self._known = loaded.objects
            if loaded.objects or loaded.segments:
                log.info("journal: %d object(s) known, from %s%d segment(s)", len(loaded.objects),
                         f"snapshot {loaded.snapshot_seq} and " if loaded.snapshot_seq else "", loaded.segments)
        self._restored = loaded.attempts  # --rebuild or not: attempts are not in the objects
        self.restart.update(journal_known=len(self._known), journal_reads=loaded.requests,
                            attempts_restored=len(self._restored))
        self.journal = Journal(self.store, loaded.next_seq, loaded.snapshot_seq,
                               snapshot_objects=max(0, len(loaded.objects) - loaded.records),
                               records_since=loaded.records)
        self._journal_stop.clear()
        self._journal_thread = start_thread("gclo-journal", self._journal_loop, self.queue.put,
                                            self._journal_stop, critical=True)

    def _attempts_restored(self) -> list[AttemptsRestored]:
        """The journal's attempts, for the core to go on from (it ignores those of computations that are done)."""
        restored = []
        for name, kept in self._restored.items():
            try:
                attempts, alternative, variant_attempts, lost, errors, retry_at = kept[:6]
                restored.append(AttemptsRestored(name, int(attempts), int(alternative), int(variant_attempts),
                                                 int(lost), tuple(str(e) for e in errors),
                                                 None if retry_at is None else float(retry_at),
                                                 cancelled=len(kept) > 6 and kept[6] == 1))
            except (TypeError, ValueError):
                log.warning("journal: the attempts kept for %s cannot be read; it starts afresh", name[:200])
        self._attempted.update(self._restored)
        self._restored = {}
        return restored

    def _journal_attempts(self, computation: str) -> None:
        rec = self.core.record(computation)
        if self.journal is None or rec is None:
            return
        self._attempted.add(computation)
        self.journal.attempts(computation, rec.attempts, rec.alternative, rec.variant_attempts, rec.lost_attempts,
                              rec.errors, rec.retry_at, rec.cancelled)

    def _reconcile_journal(self, listing: Mapping[str, str | None]) -> None:
        """What the journal knows of objects no longer in the store is recorded as gone; outputs still in the
        version whose completion was told are not told again."""
        if self.journal is None:
            return
        for key, known in self._journal_objects.items():
            etag = listing.get(key, False)
            if etag is False:
                self.journal.removed(key)
            elif known.told and known.etag == etag:
                self._told.add(key)

    def _start_up_read(self, listing: Mapping[str, str | None], requests: int) -> None:
        known = sum(1 for k, e in listing.items() if (j := self._known.get(k)) is not None and j.etag == e)
        self.restart.update(listed=len(listing), from_journal=known, metadata_requests=requests,
                            found_done=self._found_done)
        if self._found_done:
            log.info("start-up: %d computation(s) already done (their outputs are in the store); not run",
                     self._found_done)
        if self.journal is not None:
            counted = f" ({requests} store request(s))" if self.store.request_count() is not None else ""
            log.info("start-up: %d object(s) listed, %d known from the journal, %d read one by one%s",
                     len(listing), known, len(listing) - known, counted)
        self._known, self._told, self._journal_objects = {}, set(), {}  # only the start needs them

    def _journal_loop(self) -> None:
        while not self._journal_stop.wait(self.options.journal_interval_s):
            self._flush_journal()

    def _flush_journal(self) -> None:
        if self._journal_failed:
            return
        try:
            self.journal.flush()  # type: ignore[union-attr]
        except JournalConflict as exc:
            log.error("journal: %s", exc)
            self._journal_failed = True
            self.queue.put(ComponentFailed("journal", str(exc)))
            self._journal_stop.set()
        except GclError as exc:
            log.warning("journal: could not write to %s: %s (kept for the next try)", self.store.describe(), exc)

    def _close_journal(self) -> None:
        if self.journal is None:
            return
        self._journal_stop.set()
        if self._journal_thread is not None:
            self._journal_thread.join()
            self._journal_thread = None
        self._flush_journal()

    def _incident(self, key: str | None, message: str) -> None:
        log.warning("%s: %s", key or "orchestrator", message)
        self._incidents.append({"at": time.time(), "key": key, "message": message})
        self.incident_total += 1
        self._dirty = True

    def _save_status(self, background: bool = False) -> float:
        """Build the status document and write it, now or (`background`) from the status writer's thread;
        returns how long the loop spent on it."""
        started = time.monotonic()
        self._info["handlers"] = self.handler_types.types()
        changed, self._status_changed = self._status_changed, set()
        self._status_parts.changed(changed, self.core)
        doc = self._status_parts.document(self.core, dict(self._info), self._incidents, time.time())
        self._dirty = False
        if background:
            self._status.submit(doc)
        else:
            self._status.write(doc)
        return time.monotonic() - started

    def _drain_after_stop(self) -> None:
        """Outcomes the executor reported while stopping still count (a finished output is not 'running')."""
        events = self.queue.drain(timeout=0.0)
        outcomes = [e for e in events if isinstance(e, (ComputationSucceeded, ComputationFailed))]
        if outcomes:
            self._handle(outcomes)
        self._calls_closed = True  # from now on a call fails at once (and those still queued, here)
        for ev in events + self.queue.drain(timeout=0.0):
            if type(ev) is LoopCall and ev.future.set_running_or_notify_cancel():
                ev.future.set_exception(LoopStopped("the orchestrator has stopped"))

    def _result(self, interrupted: bool) -> RunResult:
        counts = {s.value: n for s, n in self.core.counts().items()}
        failed = [(r.name, r.last_error or "") for r in self.core.records()
                  if r.state in (State.FAILED, State.UPSTREAM_FAILED)]
        waiting = [(r.name, sorted(r.missing)) for r in self.core.waiting()]
        rejected = len(self.core.rejections)
        log.info("finished: %s%s", _progress(self.core.counts()), f", {rejected} rejected spec(s)" if rejected else "")
        for name, error in failed[:50]:
            log.warning("  failed   %s: %s", name, error)
        for name, missing in waiting[:50]:
            log.warning("  waiting  %s: lacks %s", name, ", ".join(missing[:5]) +
                        (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        for r in self.core.rejections[:50]:
            log.warning("  rejected GCL from %s%s: %s", r.source,
                        f" computation {r.computation!r}" if r.computation else "", r.reason)
        more = max(len(failed), len(waiting), rejected) - 50
        if more > 0:
            log.warning("  (lists cut at 50 entries each; gclo status shows them all)")
        ok = not failed and not waiting and not rejected and not interrupted and self.core.is_quiescent()
        if self._failed_component:
            code = EXIT_COMPONENT_FAILED
        else:
            code = 130 if interrupted else (0 if ok else 1)
        stats = self.stats.summary()
        log.debug("run statistics: %s", stats)
        return RunResult(code, counts, failed, waiting, rejected, interrupted, stats)


def _progress(counts: Mapping[State, int]) -> str:
    total = sum(counts.values())
    text = (f"{counts[State.DONE]}/{total} done, {counts[State.RUNNING]} running, {counts[State.READY]} ready, "
            f"{counts[State.WAITING]} waiting, {counts[State.FAILED]} failed")
    extra = [f"{counts[s]} {s.value}" for s in (State.RETRYING, State.UPSTREAM_FAILED) if counts[s]]
    return text + "".join(", " + e for e in extra)
