"""The process executor: handlers in worker processes, so a handler that crashes or hangs cannot take the
orchestrator down, and a dead worker is replaced. One supervised thread here feeds the workers, collects what
they send (outcomes, handler events, log lines), and carries the core's replies to them."""
from __future__ import annotations

import collections
import dataclasses
import logging
import multiprocessing
import os
import selectors
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..interfaces import Executor, Task
from ..model import ComputationBlocked, ComputationFailed, ComputationResumed, PoolSpec, WaitOver
from ..runtime.worker import worker_main
from ..supervise import start_thread
from .pools import as_pools

log = logging.getLogger("gclo.executor")
handler_log = logging.getLogger("gclo.handler")
_SENTINEL = object()
PIPELINE = 4  # tasks a worker holds at most: the one it runs and those it starts next
RESPAWN_GIVE_UP_S = 30.0  # a slot whose worker cannot be started for this long ends the executor


@dataclass
class _Worker:
    process: Any
    conn: Any
    pool: str = "general"
    tasks: collections.deque[Task] = field(default_factory=collections.deque)  # sent; the first one runs
    ready: bool = False
    blocked: bool = False  # its handler waits and has lent its slot
    extra: bool = False  # started for a lent task, beyond the pool's slots
    retiring: bool = False  # told to exit (an idle extra worker)

    @property
    def task(self) -> Task | None:
        """The task it runs, if any."""
        return self.tasks[0] if self.tasks else None


class ProcessExecutor(Executor):
    """Worker processes, each running one task at a time.

    A worker that dies mid-task (segfault, os._exit, OOM kill) turns into a ComputationFailed for that task and
    is replaced. Workers load the handler sources themselves, so handlers cross the process boundary as
    `--handlers` strings, never as pickled functions.

    Keeping workers busy: the core dispatches up to `prefetch` tasks per slot beyond the slots, and each worker
    is sent its next tasks while it still runs the current one (up to PIPELINE in all), so it starts the next at
    once. A task with a time-out only goes to an idle worker (its clock runs from dispatch). A worker whose
    handler blocks sends back what waits behind it. A lent task (work a blocked handler waits for) goes to an
    idle worker, or to one started for it; such extra workers exit once idle. So no more than a pool's slots run
    at once, plus one per slot lent by a waiting handler.
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
        self._lent: dict[str, collections.deque[Task]] = {p.name: collections.deque() for p in self._pools}
        self._cancels: set[tuple[str, int]] = set()
        self._deliveries: collections.deque[tuple[str, int, object]] = collections.deque()
        self._expedited: set[tuple[str, int]] = set()  # queued tasks a waiting handler needs: start them at once
        self._killed: set[tuple[str, int]] = set()  # running attempts ended on purpose (cancelled), not lost
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = threading.Event()
        self._grace_deadline = 0.0
        self._fatal: str | None = None
        self._failed_starts = 0  # workers in a row that died before they were ready
        self._unstartable_since: float | None = None  # since when a slot's worker could not be started
        self._thread: threading.Thread | None = None
        self._emit: Callable[[object], None] | None = None
        self._env: dict[str, str] = {}

    @property
    def capacity(self) -> int:
        return self._n

    def start(self, emit: Callable[[object], None]) -> None:
        self._emit = emit
        # Workers fork from a server process that may predate this executor; they get the store settings
        # (credentials, endpoint, region) as they are now, explicitly.
        self._env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "GCLO_"))}
        self._workers = [_Worker(None, None, p.name) for p in self._pools for _ in range(p.slots)]
        self._start_missing()
        self._thread = start_thread("gclo-executor", self._loop, emit, self._stopping, critical=True,
                                    on_give_up=self._give_up)

    def _spawn(self, pool: str, extra: bool = False) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        try:
            proc = self._ctx.Process(target=worker_main, args=(child, self._sources, self._store_uri, self._env),
                                     name=f"gclo-worker-{pool}-{len(self._workers)}", daemon=True)
            proc.start()
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        return _Worker(proc, parent, pool, extra=extra)

    def _start_missing(self) -> None:
        """Start a worker in every slot that has none (at start, and after one died and could not be replaced
        at once). A slot that stays empty for RESPAWN_GIVE_UP_S ends the executor: that is not a task's fault."""
        missing = [i for i, w in enumerate(self._workers) if w.process is None and not w.extra]
        for i in missing:
            try:
                self._workers[i] = self._spawn(self._workers[i].pool)
            except OSError as exc:
                now = time.monotonic()
                self._unstartable_since = self._unstartable_since or now
                log.warning("cannot start a worker process: %s; trying again", exc)
                if now - self._unstartable_since > RESPAWN_GIVE_UP_S:
                    raise RuntimeError(f"no worker process could be started for {RESPAWN_GIVE_UP_S:g}s: "
                                       f"{exc}") from exc
                return
        if missing:
            self._unstartable_since = None

    def submit(self, task: Task) -> None:
        self.submit_all((task,))

    def submit_all(self, tasks: Sequence[Task]) -> None:
        with self._lock:
            for task in tasks:
                queue = (self._lent if task.lent else self._pending).get(task.pool)
                if queue is None:
                    self._fail(task, f"no worker pool named {task.pool!r}")
                else:
                    queue.append(task)
        self._wake()  # one wake-up for the lot

    def cancel(self, computation: str, attempt: int) -> None:
        with self._lock:
            self._cancels.add((computation, attempt))
        self._wake()

    def deliver(self, computation: str, attempt: int, message: object) -> None:
        with self._lock:
            self._deliveries.append((computation, attempt, message))
        self._wake()

    def expedite(self, computation: str, attempt: int) -> None:
        with self._lock:
            self._expedited.add((computation, attempt))
        self._wake()

    def _apply_expedited(self) -> None:
        if not self._expedited:
            return
        with self._lock:
            for pool, queue in self._pending.items():
                for task in [t for t in queue if (t.spec.computation, t.attempt) in self._expedited]:
                    queue.remove(task)
                    self._expedited.discard((task.spec.computation, task.attempt))
                    self._lent[pool].append(dataclasses.replace(task, lent=True))
            running = {(w.task.spec.computation, w.task.attempt) for w in self._workers if w.task is not None}
            self._expedited -= running  # started already: nothing to do

    def _wake(self) -> None:
        fd = self._wake_w
        if fd < 0:
            return  # stopped: the pipe is closed, and its number may belong to another file by now
        try:
            os.write(fd, b"x")
        except OSError:
            pass

    def _take_pending(self) -> list[Task]:
        with self._lock:
            tasks = [t for queues in (self._lent, self._pending) for queue in queues.values() for t in queue]
            for queues in (self._lent, self._pending):
                for queue in queues.values():
                    queue.clear()
        return tasks

    def _fail(self, task: Task, error: str, worker_lost: bool = False) -> None:
        assert self._emit is not None
        self._emit(ComputationFailed(task.spec.computation, task.attempt, error, worker_lost=worker_lost))

    def _give_up(self, message: str) -> None:
        """The feeder cannot go on: every task it holds fails, and the workers are ended."""
        self._fatal = message
        for w in self._workers:
            for task in list(w.tasks):
                self._fail(task, f"the executor stopped: {message}")
            w.tasks.clear()
            if w.process is not None:
                w.process.kill()
        for task in self._take_pending():
            self._fail(task, f"the executor stopped: {message}")

    # --- the feeding thread ------------------------------------------------------------------------------------

    def _apply_cancels(self) -> None:
        if not self._cancels:  # the common case, without scanning the queues
            return
        with self._lock:
            cancels, self._cancels = self._cancels, set()
            for queues in (self._lent, self._pending):
                for queue in queues.values():
                    for task in [t for t in queue if (t.spec.computation, t.attempt) in cancels]:
                        queue.remove(task)
                        cancels.discard((task.spec.computation, task.attempt))
                        self._fail(task, "cancelled before it started")
        for w in self._workers:
            for task in list(w.tasks)[1:]:  # queued behind the running one: taken back unstarted
                if (task.spec.computation, task.attempt) in cancels:
                    w.tasks.remove(task)
                    cancels.discard((task.spec.computation, task.attempt))
                    self._killed.add((task.spec.computation, task.attempt))
            if w.task is not None and (w.task.spec.computation, w.task.attempt) in cancels:
                log.warning("ending worker %s: %s attempt %d was cancelled", w.process.name,
                            w.task.spec.computation, w.task.attempt)
                self._killed.add((w.task.spec.computation, w.task.attempt))
                w.process.kill()  # its sentinel reports the task as failed and a new worker takes the slot

    def _apply_deliveries(self) -> None:
        while self._deliveries:
            with self._lock:
                computation, attempt, message = self._deliveries.popleft()
            for w in self._workers:
                task = w.task
                if task is not None and task.spec.computation == computation and task.attempt == attempt:
                    if isinstance(message, WaitOver):
                        w.blocked = False  # its handler runs again (and has its slot back)
                    try:
                        w.conn.send(("reply", message))
                    except (OSError, ValueError):
                        pass  # the worker is dying; its sentinel will tell
                    break

    def _assign(self) -> None:
        self._assign_lent()
        # Idle workers first, then the queues behind running tasks.
        for w in self._workers:
            if w.ready and not w.tasks and not w.retiring and self._running(w.pool) < self._slots[w.pool]:
                self._send_next(w, behind=False)
        for w in self._workers:
            while w.ready and w.tasks and not w.blocked and not w.task.lent and len(w.tasks) < PIPELINE:  # type: ignore[union-attr]
                if not self._send_next(w, behind=True):
                    break

    def _assign_lent(self) -> None:
        """Lent tasks go to idle workers, or to workers started for them; idle extra workers exit."""
        for pool, queue in self._lent.items():
            idle = [w for w in self._workers if w.pool == pool and w.ready and not w.tasks and not w.retiring]
            while queue and idle:
                w = idle.pop()
                with self._lock:
                    task = queue.popleft()
                if not self._send(w, task):
                    with self._lock:
                        queue.appendleft(task)
            starting = sum(1 for w in self._workers if w.pool == pool and w.process is not None and not w.ready)
            for _ in range(len(queue) - starting):
                log.info("pool %s: a handler waits for work it lent its slot to; starting a worker for it", pool)
                self._workers.append(self._spawn(pool, extra=True))
            if not queue:
                for w in idle:
                    if w.extra:
                        w.retiring = True
                        try:
                            w.conn.send(None)
                        except (OSError, ValueError):
                            pass

    def _send_next(self, w: _Worker, behind: bool) -> bool:
        with self._lock:
            queue = self._pending[w.pool]
            if not queue or (behind and queue[0].spec.timeout_s is not None):
                return False
            task = queue.popleft()
        if self._send(w, task):
            return True
        with self._lock:
            queue.appendleft(task)  # the worker is dying; its sentinel will tell
        return False

    def _send(self, w: _Worker, task: Task) -> bool:
        try:
            w.conn.send(task)
        except (OSError, ValueError) as exc:
            log.debug("sending to %s failed: %s", w.process.name, exc)
            return False
        w.tasks.append(task)
        return True

    def _running(self, pool: str) -> int:
        """Tasks on the pool's own slots: lent ones run beside them; blocked ones keep their place (the slot
        they lent serves only the work they wait for, which the core sends as lent tasks)."""
        return sum(1 for w in self._workers if w.pool == pool and w.task is not None and not w.task.lent)

    def _receive(self, w: _Worker) -> bool:
        """Handle one message from `w`; False when its pipe is closed (the sentinel handles the death)."""
        try:
            kind, payload = w.conn.recv()
        except (EOFError, OSError):
            return False
        assert self._emit is not None
        if kind == "ready":
            w.ready = True
            self._failed_starts = 0
        elif kind == "result":
            w.tasks.popleft()
            w.blocked = False
            self._emit(payload)
        elif kind == "log":
            level, text = payload
            handler_log.log(level, "%s", text)
        elif kind == "event":  # raised by the running handler: a submission, or a wait
            if isinstance(payload, ComputationBlocked):
                w.blocked = True
            elif isinstance(payload, ComputationResumed):
                w.blocked = False
            self._emit(payload)
        elif kind == "returned":  # it waited behind a handler that blocked: back to the front of the queue
            try:
                w.tasks.remove(payload)
            except ValueError:
                log.debug("%s returned a task it was not holding: %s", w.process.name, payload.spec.computation)
            with self._lock:
                (self._lent if payload.lent else self._pending)[w.pool].appendleft(payload)
            self._apply_expedited()
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
            for task in w.tasks:  # what waited behind it never started
                key = (task.spec.computation, task.attempt)
                if key in self._killed:
                    self._killed.discard(key)
                    self._fail(task, "cancelled before it started")
                else:
                    with self._lock:
                        (self._lent if task.lent else self._pending)[w.pool].appendleft(task)
            w.tasks.clear()
        w.conn.close()
        if not w.ready and not w.retiring:
            self._failed_starts += 1
            if self._failed_starts >= 3 and not self._fatal:
                # Replacing it again would only loop: the cause is in how workers start, not in a task.
                self._fatal = (f"worker processes exit (code {code}) before they are ready, "
                               f"{self._failed_starts} in a row; see the error above")
                log.error("%s", self._fatal)
        if w.extra:
            self._workers.pop(i)  # an extra worker is not replaced: lent tasks start their own
            return
        self._workers[i] = _Worker(None, None, w.pool)
        if self._stopping.is_set() or self._fatal:
            return
        log.warning("worker %s exited with code %s; starting a new one", w.process.name, code)
        self._start_missing()

    def _loop(self) -> None:
        """Runs under the supervisor: an exception here is logged and the loop starts again with the same
        workers and queues; one that keeps coming ends the executor (`_give_up`)."""
        selector: selectors.BaseSelector = selectors.DefaultSelector()
        watched: tuple[int, ...] = ()
        try:
            while True:
                alive = [w for w in self._workers if w.process is not None]
                if self._fatal:
                    for task in self._take_pending():
                        self._fail(task, f"no worker could start: {self._fatal}")
                if self._stopping.is_set():
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
                    if not self._fatal:
                        self._start_missing()
                    self._apply_cancels()
                    self._apply_expedited()
                    self._apply_deliveries()
                    self._assign()
                    alive = [w for w in self._workers if w.process is not None]
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
                if not died and not self._stopping.is_set():
                    continue
                # Sentinels after connections, so a result sent just before a worker exited is not lost.
                for i in range(len(self._workers) - 1, -1, -1):
                    w = self._workers[i]
                    if w.process is not None and not w.process.is_alive():
                        try:
                            while w.conn.poll() and self._receive(w):
                                pass
                        except OSError:
                            pass
                        self._replace_dead(i)
        finally:
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
        self._stopping.set()
        self._wake()
        self._thread.join()
        self._thread = None
        for w in self._workers:  # only when the loop could not finish its own clean-up
            if w.process is not None and w.process.is_alive():
                w.process.kill()
                w.process.join()
            for task in w.tasks:
                self._fail(task, "the orchestrator stopped while this task ran")
            w.tasks.clear()
        for task in self._take_pending():
            self._fail(task, "the orchestrator stopped before this task started")
        wake_r, wake_w = self._wake_r, self._wake_w
        self._wake_r = self._wake_w = -1
        os.close(wake_r)
        os.close(wake_w)
