"""The process executor: handlers in worker processes, so a handler that crashes or hangs cannot take the
orchestrator down, and a dead worker is replaced."""
from __future__ import annotations

import collections
import logging
import multiprocessing
import os
import selectors
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..interfaces import Executor, Task
from ..model import ComputationBlocked, ComputationFailed, ComputationResumed, ComputationSucceeded, PoolSpec
from ..runtime.worker import worker_main
from .pools import as_pools

log = logging.getLogger("gclo.executor")
Outcome = ComputationSucceeded | ComputationFailed


_SENTINEL = object()
PIPELINE = 4  # tasks a worker holds at most: the one it runs and those it starts next


@dataclass
class _Worker:
    process: Any
    conn: Any
    pool: str = "general"
    tasks: collections.deque[Task] = field(default_factory=collections.deque)  # sent; the first one runs
    ready: bool = False
    blocked: bool = False  # its handler waits (ctx.wait_for) and has lent its slot

    @property
    def task(self) -> Task | None:
        """The task it runs, if any."""
        return self.tasks[0] if self.tasks else None


class ProcessExecutor(Executor):
    """`workers` processes, each running one task at a time. One thread here feeds them and collects results.

    A worker that dies mid-task (segfault, os._exit, OOM kill) turns into a ComputationFailed for that task and
    is replaced. Workers load the handler sources themselves, so handlers cross the process boundary as
    `--handlers` strings, never as pickled functions.

    Keeping workers busy: the core dispatches up to `prefetch` tasks per slot beyond the slots, and each worker
    is sent its next tasks while it still runs the current one (up to PIPELINE in all), so it starts the next at
    once, without waiting for this process. A task with a time-out only goes to an idle worker (its clock runs from
    dispatch), and a worker whose handler blocks in ctx.wait_for sends back what waits behind it. No more than
    a pool's slots run at once, plus one more worker per handler that lent its slot.
    """

    prefetch = 3

    def __init__(self, pools: int | Sequence[PoolSpec], handler_sources: tuple[str, ...], store_uri: str,
                 start_method: str = "forkserver"):
        self._pools = as_pools(pools)
        if any(p.slots < 1 for p in self._pools):
            raise ValueError("every pool needs at least one worker")
        self._n = sum(p.slots for p in self._pools)
        self._slots = {p.name: p.slots for p in self._pools}
        self._sources = tuple(handler_sources)
        self._store_uri = store_uri
        self._ctx = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            self._ctx.set_forkserver_preload(["gcl_orchestrator.runtime.worker"])
        self._workers: list[_Worker] = []
        self._pending: dict[str, collections.deque[Task]] = {p.name: collections.deque() for p in self._pools}
        self._cancels: set[tuple[str, int]] = set()
        self._killed: set[tuple[str, int]] = set()  # running attempts ended on purpose (cancelled), not lost
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._grace_deadline = 0.0
        self._fatal: str | None = None
        self._failed_starts = 0  # workers in a row that died before they were ready
        self._thread: threading.Thread | None = None
        self._emit: Callable[[Outcome], None] | None = None
        self._env: dict[str, str] = {}

    @property
    def capacity(self) -> int:
        return self._n

    def start(self, emit: Callable[[Outcome], None]) -> None:
        self._emit = emit
        # Workers fork from a server process that may predate this executor; they get the store settings
        # (credentials, endpoint, region) as they are now, explicitly.
        self._env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "GCLO_"))}
        self._workers = [self._spawn(i, p.name) for i, p in enumerate(p for p in self._pools
                                                                          for _ in range(p.slots))]
        self._thread = threading.Thread(target=self._loop, name="gclo-executor", daemon=True)
        self._thread.start()

    def _spawn(self, slot: int, pool: str) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=worker_main, args=(child, self._sources, self._store_uri, self._env),
                                 name=f"gclo-worker-{pool}-{slot}", daemon=True)
        proc.start()
        child.close()
        return _Worker(proc, parent, pool)

    def submit(self, task: Task) -> None:
        self.submit_all((task,))

    def submit_all(self, tasks: Sequence[Task]) -> None:
        with self._lock:
            for task in tasks:
                queue = self._pending.get(task.pool)
                if queue is None:
                    self._fail(task, f"no worker pool named {task.pool!r}")
                else:
                    queue.append(task)
        self._wake()  # one wake-up for the lot

    def cancel(self, computation: str, attempt: int) -> None:
        with self._lock:
            self._cancels.add((computation, attempt))
        self._wake()

    def _apply_cancels(self) -> None:
        if not self._cancels:  # the common case, without scanning the queues
            return
        with self._lock:
            cancels, self._cancels = self._cancels, set()
            for queue in self._pending.values():
                for task in [t for t in queue if (t.spec.computation, t.attempt) in cancels]:
                    queue.remove(task)
                    cancels.discard((task.spec.computation, task.attempt))
                    self._fail(task, "cancelled before it started")
        for w in self._workers:
            if w.task is not None and (w.task.spec.computation, w.task.attempt) in cancels:
                log.warning("ending worker %s: %s attempt %d was cancelled", w.process.name,
                            w.task.spec.computation, w.task.attempt)
                self._killed.add((w.task.spec.computation, w.task.attempt))
                w.process.kill()  # its sentinel reports the task as failed and a new worker takes the slot

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _take_pending(self) -> list[Task]:
        with self._lock:
            tasks = [t for queue in self._pending.values() for t in queue]
            for queue in self._pending.values():
                queue.clear()
        return tasks

    def _fail(self, task: Task, error: str, worker_lost: bool = False) -> None:
        assert self._emit is not None
        self._emit(ComputationFailed(task.spec.computation, task.attempt, error, worker_lost=worker_lost))

    # --- the feeding thread ------------------------------------------------------------------------------------

    def _grow(self) -> None:
        """A pool with queued work whose handlers have lent slots (blocked in ctx.wait_for, keeping their
        process) and no idle or starting worker: start one more worker for it."""
        if not any(w.blocked for w in self._workers):
            return  # the common case: nobody lent a slot
        with self._lock:
            queued = {name for name, queue in self._pending.items() if queue}
        for name in queued:
            members = [w for w in self._workers if w.pool == name and w.process is not None]
            if any(w.task is None for w in members):
                continue  # idle or still starting
            if sum(1 for w in members if not w.blocked) >= self._slots[name]:
                continue  # every slot is taken by work that runs
            log.info("pool %s: a handler is waiting for other work; starting an extra worker", name)
            self._workers.append(self._spawn(len(self._workers), name))

    def _assign(self) -> None:
        # Idle workers first, then the queues behind running tasks.
        for w in self._workers:
            if w.ready and not w.tasks and self._active(w.pool) < self._slots[w.pool]:
                # (an extra worker stays idle once the handler that lent its slot runs again)
                self._send_next(w, behind=False)
        for w in self._workers:
            while w.ready and w.tasks and not w.blocked and len(w.tasks) < PIPELINE:
                if not self._send_next(w, behind=True):
                    break

    def _send_next(self, w: _Worker, behind: bool) -> bool:
        with self._lock:
            queue = self._pending[w.pool]
            if not queue or (behind and queue[0].spec.timeout_s is not None):
                return False
            task = queue.popleft()
        try:
            w.conn.send(task)
            w.tasks.append(task)
            return True
        except (OSError, ValueError) as exc:
            with self._lock:
                queue.appendleft(task)  # the worker is dying; its sentinel will tell
            log.debug("sending to %s failed: %s", w.process.name, exc)
            return False

    def _active(self, pool: str) -> int:
        return sum(1 for w in self._workers if w.pool == pool and w.task is not None and not w.blocked)

    def _receive(self, w: _Worker) -> bool:
        """Handle one message from `w`; False when its pipe is closed (the sentinel handles the death)."""
        try:
            kind, payload = w.conn.recv()
        except (EOFError, OSError):
            return False
        if kind == "ready":
            w.ready = True
            self._failed_starts = 0
        elif kind == "result":
            w.tasks.popleft()
            w.blocked = False
            assert self._emit is not None
            self._emit(payload)
        elif kind == "event":  # raised by the running handler: a submission, or waiting
            if isinstance(payload, ComputationBlocked):
                w.blocked = True
            elif isinstance(payload, ComputationResumed):
                w.blocked = False
            assert self._emit is not None
            self._emit(payload)
        elif kind == "returned":  # it waited behind a handler that blocked: back to the front of the queue
            try:
                w.tasks.remove(payload)
            except ValueError:
                log.debug("%s returned a task it was not holding: %s", w.process.name, payload.spec.computation)
            with self._lock:
                self._pending[w.pool].appendleft(payload)
        elif kind == "fatal":
            self._fatal = payload
            log.error("a worker process could not start: %s", payload)
        return True

    def _replace_dead(self, i: int) -> None:
        w = self._workers[i]
        w.process.join(timeout=1)
        code = w.process.exitcode
        if w.tasks:
            running = w.tasks.popleft()
            cancelled = (running.spec.computation, running.attempt) in self._killed
            self._killed.discard((running.spec.computation, running.attempt))
            self._fail(running, f"its worker process died (exit code {code}) while running the handler",
                       worker_lost=not cancelled)
            with self._lock:  # what waited behind it never started
                self._pending[w.pool].extendleft(reversed(w.tasks))
            w.tasks.clear()
        w.conn.close()
        if not w.ready:
            self._failed_starts += 1
            if self._failed_starts >= 3 and not self._fatal:
                # Replacing it again would only loop: the cause is in how workers start, not in a task.
                self._fatal = (f"worker processes exit (code {code}) before they are ready, "
                               f"{self._failed_starts} in a row; see the error above")
                log.error("%s", self._fatal)
        if self._stopping or self._fatal:
            self._workers[i] = _Worker(None, None, w.pool)
            return
        log.warning("worker %s exited with code %s; starting a new one", w.process.name, code)
        self._workers[i] = self._spawn(i, w.pool)

    def _loop(self) -> None:
        selector: selectors.BaseSelector = selectors.DefaultSelector()
        watched: tuple[int, ...] = ()
        while True:
            alive = [w for w in self._workers if w.process is not None]
            if self._fatal:
                for task in self._take_pending():
                    self._fail(task, f"no worker could start: {self._fatal}")
            if self._stopping:
                for w in alive:
                    if w.task is None and w.process.is_alive():
                        try:
                            w.conn.send(None)
                        except (OSError, ValueError):
                            pass
                busy = [w for w in alive if w.task is not None]
                if not alive or (not busy and all(not w.process.is_alive() for w in alive)):
                    break
                if time.monotonic() > self._grace_deadline:
                    for w in busy:
                        w.process.kill()
            else:
                self._apply_cancels()
                self._assign()
                self._grow()
            members = tuple(id(w) for w in alive)
            if members != watched:  # the selector is rebuilt only when workers come or go
                selector.close()
                selector = selectors.DefaultSelector()
                selector.register(self._wake_r, selectors.EVENT_READ, None)
                for w in alive:
                    selector.register(w.conn, selectors.EVENT_READ, w)
                    selector.register(w.process.sentinel, selectors.EVENT_READ, _SENTINEL)
                watched = members
            died = False
            for key, _ in selector.select(timeout=0.5):
                if key.data is None:
                    os.read(self._wake_r, 4096)
                elif key.data is _SENTINEL:
                    died = True
                else:
                    # one message; if more are waiting, the selector reports the pipe again at once
                    # (Connection.poll would build a selector of its own for every call)
                    self._receive(key.data)
            if not died and not self._stopping:
                continue
            # Sentinels after connections, so a result sent just before a worker exited is not lost.
            for i, w in enumerate(self._workers):
                if w.process is not None and not w.process.is_alive():
                    try:
                        while w.conn.poll() and self._receive(w):
                            pass
                    except OSError:
                        pass
                    self._replace_dead(i)
        selector.close()
        for w in self._workers:
            if w.process is not None:
                w.process.join(timeout=2)
                if w.process.is_alive():
                    w.process.kill()
                    w.process.join()
                w.conn.close()

    def stop(self, grace_s: float = 5.0) -> None:
        if self._thread is None:
            return
        self._grace_deadline = time.monotonic() + grace_s
        self._stopping = True
        self._wake()
        self._thread.join()
        self._thread = None
        for task in self._take_pending():
            self._fail(task, "the orchestrator stopped before this task started")
        os.close(self._wake_r)
        os.close(self._wake_w)
