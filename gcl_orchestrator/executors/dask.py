"""The Dask executor: each attempt is one task on a Dask distributed cluster, an existing one
(`dask://HOST:PORT`, `tls://HOST:PORT`) or a LocalCluster of N worker processes gclo starts and stops
(`dask-local:N`).

What stays ours: the graph and its state (in the store and the core), retries, alternatives, time-outs and
deadlocks (the core decides; tasks go with `retries=0`), and the commit (the worker writes the output itself,
create-if-absent, with its GCL). What Dask gives: placement on workers, their resources, and the cluster's size.
Data never flows through Dask: a task carries the attempt (spec, store URI, input identities), and returns its
small outcome; workers read and write the store with credentials from their own environment.

Conventions (README, "Scaling out"):
- A worker resource named after a registered handler type (`--resources "ml_handler=1"`) makes that worker one
  of the only ones that run that type, that many at once; decided from the workers there at start.
- Other resources a computation declares in GCL are Dask resource restrictions of the same name; `cpu`, unless
  workers declare it, is counted by the core against worker threads and not sent to Dask.
- The core's pools follow the workers the scheduler reports, polled every second: the general pool has every
  worker's threads and resources, a handler type's pool the workers that offer it.
- Handler sources reach workers through a worker plugin (workers that join later get it too): a file is loaded
  from its own path where the worker has that same file, else from a copy of its text the plugin carries;
  module names are imported, so they must be installed on the workers.
- A handler that blocks in `ctx.wait_for` or on a submit handle secedes from its worker's thread pool while it
  waits, and rejoins when answered, so the work it waits for can run there.
- Set `distributed.scheduler.allowed-failures` to 0 on the scheduler (dask-local does) so that a worker lost
  under a task ends the attempt as lost (counted and retried by the core) instead of being re-run by Dask.
- Attempts go to Dask from the executor's thread, all those waiting in one graph per (priority, resources); the
  attempt and its outcome travel pickled, as bytes, which Dask sizes and ships without walking them.
- dask-local's workers run without Dask's statistical profiler (a stack sample every 10 ms) and without sizing
  each message to choose whether to serialise it on another thread: on a small machine both cost more than the
  handlers. Workers of a cluster of your own can be started the same way (README, "Scaling out").
"""
from __future__ import annotations

import hashlib
import logging
import pickle
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence

import dask
import distributed
from distributed import Client, WorkerPlugin, get_worker, rejoin, secede

from ..interfaces import Executor, Task
from .dask_pools import (affinity_types, describe, fits_one, parse_target, pools_from_workers,
                         restrictions, task_key)
from ..model import CapacityChanged, ComponentFailed, ComputationFailed
from ..runtime.context import ReplyBox
from ..runtime.handlers import HandlerRegistry
from ..runtime.worker import run_task
from ..supervise import start_thread

log = logging.getLogger("gclo.executor")
handler_log = logging.getLogger("gclo.handler")
POLL_S = 1.0  # how often the scheduler is asked for its workers
SCHEDULER_GONE_S = 30.0  # the scheduler unreachable this long ends the executor
_SUBMITTING = object()  # an attempt handed to Dask whose future is not known yet
LENT_PRIORITY = 2**31  # Dask's priority of an attempt on a slot lent by a handler waiting for it: before the
#                        attempts queued on that worker (each else carries the core's priority times 1,000)
SECEDE_AFTER_S = 0.5  # a handler waiting longer than this for an answer leaves its worker's thread pool
EVENT_MAX_BYTES = 8192  # outcomes up to this size travel as Dask events; larger ones are fetched
SWEEP_S = 0.2  # how often the futures in flight are looked at for outcomes that did not come on the topic
FETCH_AFTER_S = 2.0  # a task finished this long ago whose outcome has not come on the topic: its result is fetched
CONNECT_S = 10  # how long a scheduler that does not answer is tried at start


# --- the worker side ---------------------------------------------------------------------------------------------

class HandlerPlugin(WorkerPlugin):
    """On every worker, present and future: the handler registry and one store per URI, loaded once."""

    def __init__(self, name: str, sources: Sequence[str], files: Mapping[str, str]):
        self.name = name
        self.sources = tuple(sources)
        self.files = dict(files)  # absolute path -> text, for workers that do not have the same file
        self.registry: HandlerRegistry | None = None
        self.error: str | None = None
        self._stores: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "sources": self.sources, "files": self.files}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"], state["sources"], state["files"])  # type: ignore[misc]

    def setup(self, worker: Any) -> None:
        resolved = []
        for source in self.sources:
            text = self.files.get(source)
            if text is None or _same_file(source, text):
                resolved.append(source)
                continue
            folder = Path(worker.local_directory) / "gclo-handlers" / hashlib.sha1(source.encode()).hexdigest()[:8]
            folder.mkdir(parents=True, exist_ok=True)
            copy = folder / Path(source).name
            copy.write_text(text, encoding="utf-8")
            resolved.append(str(copy))
        try:
            self.registry = HandlerRegistry.from_sources(resolved)
        except Exception as exc:  # reported by every task this worker is given
            self.error = f"{type(exc).__name__}: {exc}"

    def store(self, uri: str) -> Any:
        from ..storage import open_store  # the storage layer is only needed on workers

        with self._lock:
            store = self._stores.get(uri)
            if store is None:
                store = self._stores[uri] = open_store(uri)
            return store


def _same_file(path: str, text: str) -> bool:
    try:
        return Path(path).read_text(encoding="utf-8") == text
    except OSError:
        return False


class _TaskChannel(ReplyBox):
    """A running attempt's line to the orchestrator: events go out as Dask events on the run's topic; answers
    come back on a Dask queue named after the task. Once it has waited SECEDE_AFTER_S for one, the handler
    secedes from the worker's thread pool, so the work it waits for can run there."""

    def __init__(self, worker: Any, topic: str, key: str):
        super().__init__(self._publish)
        self._worker = worker
        self._topic = topic
        self._key = key
        self._inbox: Any = None
        self._seceded = False  # this wait left the worker's thread pool

    def close(self) -> None:
        if self._inbox is not None:
            try:
                self._inbox.close()
            except Exception:  # the scheduler is gone: nothing to let go of
                pass

    def _publish(self, event: object) -> None:
        self._worker.log_event(self._topic, {"key": self._key, "event": pickle.dumps(event)})

    def receive(self, accept: Callable[[object], bool], timeout_s: float | None) -> object | None:
        self._seceded = False
        try:
            return super().receive(accept, timeout_s)
        finally:
            if self._seceded:
                rejoin()

    def _wait(self, remaining: float | None) -> None:
        """Take one answer from the task's Dask queue. Answers that come at once (a submission accepted) are taken
        without leaving the thread pool, which would cost a wait to rejoin it; a longer wait gives the thread to
        other work."""
        if self._inbox is None:
            self._inbox = distributed.Queue(reply_queue(self._key))
        step = 5.0 if self._seceded else SECEDE_AFTER_S
        try:
            raw = self._inbox.get(timeout=step if remaining is None else min(remaining, step))
        except TimeoutError:
            if not self._seceded:
                secede()
                self._seceded = True
            return
        self._replies.append(pickle.loads(raw))


def reply_queue(key: str) -> str:
    return f"{key}-replies"


def run_attempt(payload: bytes, plugin_name: str, topic: str, key: str) -> bytes:
    """The Dask task: one attempt (`payload`: the Task, pickled), run by the worker side of runtime/ with the
    plugin's registry and store. The outcome goes out on the run's topic, behind the attempt's other events and
    ahead of Dask's own word that the task finished, so the orchestrator need not fetch it; it is also the task's
    result (pickled), for when it must. Both travel as bytes, which Dask sizes and ships without walking them."""
    task: Task = pickle.loads(payload)
    worker = get_worker()
    plugin = worker.plugins.get(plugin_name)
    where = worker.name if worker.name is not None else worker.address
    channel = _TaskChannel(worker, topic, key)
    if plugin is None or plugin.registry is None:
        why = plugin.error if plugin is not None else "the handler plugin is not installed"
        outcome: object = ComputationFailed(task.spec.computation, task.attempt,
                                            f"Dask worker {where} cannot load the handlers: {why}")
    else:
        try:
            outcome = run_task(task, plugin.registry, plugin.store(task.store_uri), channel)
        finally:
            channel.close()
    encoded = pickle.dumps(outcome)
    # The scheduler keeps a topic's last events (1,000 by default): a large outcome (a handler that emitted
    # thousands of specs) is only announced there, and fetched from this task's result.
    message = {"key": key, "outcome": encoded} if len(encoded) <= EVENT_MAX_BYTES else \
        {"key": key, "fetch": [task.spec.computation, task.attempt]}
    worker.log_event(topic, message)
    return encoded


# --- the orchestrator side ---------------------------------------------------------------------------------------

class DaskExecutor(Executor):
    """Attempts as Dask tasks. `connect` opens the client (starting a LocalCluster for dask-local:N) and waits for
    the first worker; `pools` then says what the cluster offers, for the core's configuration. Outcomes and handler
    events come on the run's Dask event topic; a supervised thread sweeps the futures in flight for what the topic
    cannot say (a worker lost, a task dropped, a large outcome to fetch), polls the scheduler for its workers,
    and carries cancels and replies, so that the loop never waits on Dask."""

    # Tasks queued in Dask per slot, so that a worker that finishes starts its next task without waiting for the
    # orchestrator (Dask runs them in the core's aged-priority order, which each task carries). Deep, because the
    # orchestrator's process is what limits short handlers: while it is busy the workers go on, and what came
    # meanwhile is then handled and handed over in bigger batches (32 ran the 1,002-computation bench fan-out
    # about 15% faster than 8 on two cores). The cost: a worker that dies takes its queued tasks with it, each
    # counted as one attempt lost with the worker (the core grants `lost_worker_retries` more for those).
    prefetch = 32

    def __init__(self, client: Client, cluster: Any, target: str, handler_sources: Sequence[str],
                 handler_types: Collection[str], store_uri: str):
        self._client = client
        self._cluster = cluster  # the LocalCluster we started, or None
        self._target = target
        self._store_uri = store_uri
        self._namespace = hashlib.sha1(store_uri.encode()).hexdigest()[:10]
        self._topic = f"gclo-{self._namespace}"
        files = {s: Path(s).read_text(encoding="utf-8") for s in handler_sources if Path(s).is_file()}
        digest = hashlib.sha1(repr((tuple(handler_sources), sorted(files.items()))).encode()).hexdigest()[:10]
        self._plugin = HandlerPlugin(f"gclo-handlers-{digest}", handler_sources, files)
        self._lock = threading.Lock()
        self._futures: dict[tuple[str, int], Any] = {}  # in flight: its Dask future (or _SUBMITTING)
        self._replies: dict[tuple[str, int], Any] = {}  # the reply queues of attempts that were answered
        self._fetching: set[tuple[str, int]] = set()  # attempts whose result is being fetched
        self._waiting_for: set[str] = set()  # demands already logged as waiting for a worker
        self._current: tuple[str, ...] = ()  # the workers there now
        self._offers_now: list[dict[str, float]] = []  # the resources each of them offers
        # Every distinct offer a worker has made in this run (a cluster that adapts for months repeats a few)
        self._offers_ever: dict[tuple[tuple[str, float], ...], dict[str, float]] = {}
        self._absent: set[str] = set()  # resources some worker offered and none offers now
        workers = self._workers()
        self._affinity = affinity_types(workers, handler_types)
        self.pools = pools_from_workers(workers, self._affinity)
        self._declared = {r for info in workers.values() for r in (info.get("resources") or {})}
        self._note_workers(workers)
        self._commands: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stopping = threading.Event()
        self._emit: Callable[[object], None] | None = None
        self._thread: threading.Thread | None = None
        self._unreachable_since: float | None = None
        self._closed = False

    @classmethod
    def connect(cls, target: str, handler_sources: Sequence[str], handler_types: Collection[str], store_uri: str,
                *, wait_s: float = 60.0) -> "DaskExecutor":
        """Raises ValueError (a bad target) or ConnectionError (no scheduler, or no worker within `wait_s`)."""
        address, local = parse_target(target)
        cluster = None
        if local is not None:
            # Every worker lost under a task is the core's to count; tasks go to workers as soon as they are
            # submitted, so that a worker finishing one starts the next without asking the scheduler for it; no
            # profiler and no message sizing on the workers (the nanny sets that variable in this process
            # before each worker process it starts, so processes started here later inherit it too; only Dask
            # reads it, and this process sizes no message after its cluster has started).
            with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                                  "distributed.scheduler.worker-saturation": float("inf"),
                                  "distributed.worker.profile.enabled": False,
                                  "distributed.nanny.pre-spawn-environ": {
                                      **dask.config.get("distributed.nanny.pre-spawn-environ", {}),
                                      "DASK_DISTRIBUTED__COMM__OFFLOAD": "False"}}):
                cluster = distributed.LocalCluster(n_workers=local, threads_per_worker=1, processes=True,
                                                   host="127.0.0.1", dashboard_address=None,
                                                   silence_logs=logging.WARNING)
            address = cluster.scheduler_address
        try:
            try:
                client = Client(address, timeout=f"{CONNECT_S}s", set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ConnectionError(f"no Dask scheduler answers at {target}: {exc}") from None
            try:
                client.wait_for_workers(1, timeout=wait_s)
            except BaseException as exc:
                client.close()
                if isinstance(exc, TimeoutError):
                    raise ConnectionError(f"the Dask scheduler at {target} has no worker, and none joined in "
                                          f"{wait_s:g} s") from None
                raise
            try:
                return cls(client, cluster, target, handler_sources, handler_types, store_uri)
            except BaseException:
                client.close()
                raise
        except BaseException:
            if cluster is not None:
                cluster.close()
            raise

    @property
    def capacity(self) -> int:
        return sum(p.slots for p in self.pools if not p.handler_types)

    def describe(self) -> str:
        where = f"a local Dask cluster at {self._client.scheduler.address}" if self._cluster else \
            f"the Dask scheduler at {self._target}"
        pools = "; ".join(f"{p.slots} slot(s) for {p.name}" for p in self.pools)
        return f"{len(self._current)} Dask worker(s) of {where} ({pools})"

    def start(self, emit: Callable[[object], None]) -> None:
        self._emit = emit
        self._client.register_plugin(self._plugin, name=self._plugin.name)
        self._client.subscribe_topic(self._topic, self._on_event)
        self._thread = start_thread("gclo-dask", self._loop, emit, self._stopping, critical=True,
                                    on_give_up=self._give_up)

    # --- what the loop calls ---------------------------------------------------------------------------------

    def submit(self, task: Task) -> None:
        self.submit_all((task,))

    def submit_all(self, tasks: Sequence[Task]) -> None:
        """Hands the tasks to the executor's thread, which gives Dask all the tasks waiting for it at once, in
        one graph per (priority, resources): under load, a few scheduler messages carry many tasks."""
        assert self._emit is not None, "start() first"
        ready = []
        for task in tasks:
            wanted = restrictions(task, self._affinity, self._declared)
            if not wanted or self._placeable(task, wanted):
                ready.append((task, wanted))
        if not ready:
            return
        with self._lock:
            for task, _ in ready:
                self._futures[(task.spec.computation, task.attempt)] = _SUBMITTING
        self._commands.put(("submit", ready))

    def _hand_over(self, ready: Sequence[tuple[Task, Mapping[str, float]]]) -> None:
        """On the executor's thread: the attempts still waiting to be handed to Dask (one settled meanwhile, by a
        cancel or the executor stopping, is left out), grouped by what Dask is told about each."""
        groups: dict[tuple[int, tuple[tuple[str, float], ...]], list[Task]] = {}
        with self._lock:
            for task, wanted in ready:
                if self._futures.get((task.spec.computation, task.attempt)) is _SUBMITTING:
                    priority = LENT_PRIORITY if task.lent else int(task.priority * 1000)
                    groups.setdefault((priority, tuple(sorted(wanted.items()))), []).append(task)
        for (priority, wanted), group in groups.items():
            keys = [task_key(self._namespace, task) for task in group]
            n = len(group)
            try:
                futures = self._client.map(run_attempt, [pickle.dumps(task) for task in group],
                                           [self._plugin.name] * n, [self._topic] * n, keys, key=keys,
                                           resources=dict(wanted) or None, priority=priority, retries=0, pure=False)
            except Exception as exc:  # the client is closed: the scheduler is gone (the poll ends the executor)
                for task in group:
                    self._settle((task.spec.computation, task.attempt),
                                 ComputationFailed(task.spec.computation, task.attempt,
                                                   f"could not hand it to Dask: {exc}"[:300], worker_lost=True))
                continue
            with self._lock:
                for task, future in zip(group, futures):
                    ident = (task.spec.computation, task.attempt)
                    if self._futures.get(ident) is _SUBMITTING:  # else settled already: its outcome came first
                        self._futures[ident] = future

    def _placeable(self, task: Task, wanted: Mapping[str, float]) -> bool:
        """False (and the attempt failed for good) when no worker of this run ever offered `wanted`; logs, once
        per demand, one that no worker there now offers."""
        with self._lock:
            ever, now = list(self._offers_ever.values()), list(self._offers_now)
        if not fits_one(wanted, ever):
            largest = max(ever, key=lambda o: sum(o.get(r, 0.0) >= a for r, a in wanted.items()), default={})
            assert self._emit is not None
            self._emit(ComputationFailed(task.spec.computation, task.attempt,
                                         f"asks for {describe(wanted)} on one worker; no Dask worker seen offers "
                                         f"that (closest: {describe(largest)})", permanent=True))
            return False
        if not fits_one(wanted, now) and describe(wanted) not in self._waiting_for:
            self._waiting_for.add(describe(wanted))
            log.info("waiting for a Dask worker with %s: none in the cluster now (%s and others wait for it)",
                     describe(wanted), task.spec.computation)
        return True

    def cancel(self, computation: str, attempt: int) -> None:
        self._commands.put(("cancel", (computation, attempt)))

    def deliver(self, computation: str, attempt: int, message: object) -> None:
        self._commands.put(("deliver", (computation, attempt, message)))

    def stop(self, grace_s: float = 5.0) -> None:
        if self._closed:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._futures:
                    break
            time.sleep(0.05)
        self._stopping.set()
        with self._lock:
            left = list(self._futures.items())
        for ident, _ in left:
            self._settle(ident, ComputationFailed(*ident, "the orchestrator stopped before this attempt ended"))
        futures = [future for _, future in left if future is not _SUBMITTING]
        if futures:
            try:
                self._client.cancel(futures)  # one message to the scheduler for all of them
            except Exception as exc:
                log.warning("could not cancel %d Dask task(s) at stop: %s", len(futures), exc)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._closed = True
        try:
            self._client.close(timeout=10)
        finally:
            if self._cluster is not None:
                self._cluster.close(timeout=20)

    # --- outcomes, events and the cluster ----------------------------------------------------------------------

    def _settle(self, ident: tuple[str, int], outcome: object) -> bool:
        """The one outcome of an attempt, emitted once whichever path reports it first."""
        with self._lock:
            if ident not in self._futures:
                return False
            del self._futures[ident]
            self._fetching.discard(ident)
            replies = self._replies.pop(ident, None)
        assert self._emit is not None
        self._emit(outcome)
        if replies is not None:
            try:
                replies.close()  # the scheduler lets go of the attempt's reply queue
            except Exception as exc:
                log.debug("closing the reply queue of %s #%d: %s", *ident, exc)
        return True

    def _sweep(self, finished: dict[tuple[str, int], float]) -> None:
        """Outcomes that did not come on the topic: a task that erred (its worker died under it), was dropped, or
        finished without its outcome arriving within FETCH_AFTER_S (then its result is fetched). Looks only at
        the futures in flight, which the core bounds by the slots."""
        now = time.monotonic()
        with self._lock:
            flight = list(self._futures.items())
        for ident in [i for i in finished if i not in self._futures]:
            del finished[ident]  # settled by its outcome on the topic: the usual case
        for ident, future in flight:
            if future is _SUBMITTING:
                continue
            status = future.status
            if status == "pending":
                continue
            if status == "finished":
                if now - finished.setdefault(ident, now) > FETCH_AFTER_S:
                    del finished[ident]
                    self._fetch(ident)
                continue
            self._done(ident, future)

    def _done(self, ident: tuple[str, int], future: Any) -> None:
        status = future.status
        if status == "error":
            exc = future.exception()
            if isinstance(exc, distributed.KilledWorker):
                last = getattr(exc, "last_worker", None)
                where = getattr(last, "address", last) or "a Dask worker"
                outcome = ComputationFailed(*ident, f"lost with its worker: {where} died while it ran or waited "
                                                    f"there", worker_lost=True)
            else:
                lost = "CommClosed" in type(exc).__name__
                outcome = ComputationFailed(*ident, f"Dask: {type(exc).__name__}: {exc}"[:500], worker_lost=lost)
        else:  # cancelled, not by us (we settle first): the scheduler forgot it
            outcome = ComputationFailed(*ident, f"Dask dropped the task ({status})", worker_lost=True)
        self._settle(ident, outcome)

    def _on_event(self, event: tuple[float, Mapping[str, Any]]) -> None:
        _, message = event
        if "fetch" in message:
            computation, attempt = message["fetch"]
            self._commands.put(("fetch", (computation, attempt)))
            return
        try:
            decoded = pickle.loads(message["outcome"] if "outcome" in message else message["event"])
        except Exception as exc:
            log.warning("an unreadable event on %s: %s", self._topic, exc)
            return
        if "outcome" in message:
            self._settle((decoded.computation, decoded.attempt), decoded)
            return
        assert self._emit is not None
        self._emit(decoded)

    def _fetch(self, ident: tuple[str, int]) -> None:
        """A task whose outcome did not come on the topic (too large, or late): its result says it, fetched on
        the client's callback thread so that this thread goes on handing work over meanwhile."""
        with self._lock:
            future = self._futures.get(ident)
            if future is None or future is _SUBMITTING or ident in self._fetching:
                return  # settled, not handed over yet, or already being fetched
            self._fetching.add(ident)
        future.add_done_callback(lambda done: self._fetched(ident, done))

    def _fetched(self, ident: tuple[str, int], future: Any) -> None:
        try:
            outcome = pickle.loads(future.result(timeout=30))
        except Exception as exc:  # the result could not be fetched: its worker went away meanwhile
            outcome = ComputationFailed(*ident, f"lost the result with its Dask worker: {exc}", worker_lost=True)
        self._settle(ident, outcome)

    def _workers(self) -> dict[str, Mapping[str, Any]]:
        return dict(self._client.scheduler_info(n_workers=-1).get("workers", {}))

    def _note_workers(self, workers: Mapping[str, Mapping[str, Any]]) -> None:
        offers = [{r: float(a) for r, a in (info.get("resources") or {}).items()} for info in workers.values()]
        with self._lock:
            for offer in offers:
                self._offers_ever.setdefault(tuple(sorted(offer.items())), offer)
            self._current = tuple(workers)
            self._offers_now = offers

    def _loop(self) -> None:
        last_poll = 0.0
        last_sweep = 0.0
        finished: dict[tuple[str, int], float] = {}  # attempts Dask says finished -> when it was first seen so
        while not self._stopping.is_set():
            self._carry_out(self._drain(0.05))
            if time.monotonic() - last_sweep >= SWEEP_S:
                last_sweep = time.monotonic()
                self._sweep(finished)
            if time.monotonic() - last_poll >= POLL_S:
                last_poll = time.monotonic()
                if not self._poll():
                    return

    def _drain(self, wait_s: float) -> list[tuple[str, Any]]:
        """What the loop asked of this thread: waits up to `wait_s` for the first request, then takes every one
        asked meanwhile."""
        try:
            commands = [self._commands.get(timeout=wait_s)]
        except queue.Empty:
            return []
        while True:
            try:
                commands.append(self._commands.get_nowait())
            except queue.Empty:
                return commands

    def _carry_out(self, commands: Sequence[tuple[str, Any]]) -> None:
        """The submissions among `commands` go to Dask together, ahead of the cancels, answers and fetches (which
        concern attempts handed over before)."""
        submissions = [item for kind, payload in commands if kind == "submit" for item in payload]
        if submissions:
            self._hand_over(submissions)
        for kind, payload in commands:
            try:
                if kind == "fetch":
                    self._fetch(payload)
                elif kind == "cancel":
                    self._cancel(payload)
                elif kind == "deliver":
                    self._deliver(*payload)
            except Exception as exc:  # one request the scheduler refused does not lose the others drained with it
                log.warning("Dask executor: could not %s for %s #%s: %s: %s", kind, payload[0], payload[1],
                            type(exc).__name__, exc)

    def _deliver(self, computation: str, attempt: int, message: object) -> None:
        ident = (computation, attempt)
        with self._lock:
            future = self._futures.get(ident)
            replies = self._replies.get(ident)
        if future is None or future is _SUBMITTING:
            return  # it ended: the answer is dropped
        if replies is None:
            replies = distributed.Queue(reply_queue(future.key), client=self._client)
            with self._lock:
                self._replies[ident] = replies
        replies.put(pickle.dumps(message))

    def _cancel(self, ident: tuple[str, int]) -> None:
        with self._lock:
            future = self._futures.get(ident)
        if self._settle(ident, ComputationFailed(*ident, "cancelled")) and future not in (None, _SUBMITTING):
            future.cancel()  # a running handler's thread goes on; a late commit of its output counts

    def _poll(self) -> bool:
        """False once the executor cannot go on."""
        if self._client.status in ("closing", "closed", "failed"):  # it gave up reconnecting: so do we
            message = f"lost the connection to the Dask scheduler at {self._target}"
            log.error("%s: every attempt in flight fails, and the run ends", message)
            self._give_up(message)
            assert self._emit is not None
            self._emit(ComponentFailed("gclo-dask", message))
            return False
        try:
            info = self._client.scheduler_info(n_workers=-1)
            if "workers" not in info:
                raise ConnectionError("it answered without its workers")
            workers = dict(info["workers"])
        except Exception as exc:
            self._unreachable_since = self._unreachable_since or time.monotonic()
            if time.monotonic() - self._unreachable_since > SCHEDULER_GONE_S:
                raise ConnectionError(f"the Dask scheduler at {self._target} has not answered for "
                                      f"{SCHEDULER_GONE_S:g} s: {exc}") from None
            return True
        self._unreachable_since = None
        before = set(self._current)
        self._note_workers(workers)
        joined, left = set(workers) - before, before - set(workers)
        if not joined and not left:
            return True
        for address in sorted(joined):
            log.info("Dask worker joined: %s (%s threads, %s)", address, workers[address].get("nthreads"),
                     describe(workers[address].get("resources") or {}))
        for address in sorted(left):
            log.info("Dask worker left: %s", address)
        offered = {r for offer in self._offers_now for r, n in offer.items() if n > 0}
        ever = {r for offer in self._offers_ever.values() for r, n in offer.items() if n > 0}
        for resource in sorted((ever - offered) - self._absent):
            log.info("no Dask worker offers %s now (one did): work that asks for it waits until one joins", resource)
        self._absent = ever - offered
        pools = pools_from_workers(workers, self._affinity)
        if pools != self.pools:
            self.pools = pools
            self._waiting_for.clear()
            assert self._emit is not None
            self._emit(CapacityChanged(pools))
        return True

    def _give_up(self, message: str) -> None:
        with self._lock:
            idents = list(self._futures)
        for ident in idents:
            self._settle(ident, ComputationFailed(*ident, f"the executor stopped: {message}", worker_lost=True))


__all__ = ["DaskExecutor", "HandlerPlugin", "parse_target", "pools_from_workers", "affinity_types", "restrictions",
           "run_attempt"]
