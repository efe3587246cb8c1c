"""The thread executor: handlers in threads of this process (the reference, for tests with the in-memory store).
One thread per attempt: the core bounds how many are dispatched at once, lent slots included."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Sequence

from ..interfaces import Executor, ObjectStore, Task
from ..model import ComputationFailed, PoolSpec
from ..runtime.context import ReplyBox
from ..runtime.handlers import HandlerRegistry
from ..runtime.worker import run_task
from .pools import as_pools

log = logging.getLogger("gclo.executor")


class ThreadExecutor(Executor):
    """A running handler cannot be stopped: `cancel` only drops work not started yet (the core ignores a
    cancelled attempt's late outcome), so time-outs are enforced by the process executor alone. Handlers'
    `ctx.log` lines reach the log as they do from worker processes; their standard output is not forwarded there,
    but what the handler's own thread prints goes into its attempt's log (`runtime.attempt_log`)."""

    def __init__(self, pools: int | Sequence[PoolSpec], registry: HandlerRegistry, store: ObjectStore):
        self._slots = sum(p.slots for p in as_pools(pools))
        self._registry = registry
        self._store = store
        self._emit: Callable[[object], None] | None = None
        self._lock = threading.Lock()
        self._running: dict[tuple[str, int], tuple[threading.Thread, ReplyBox]] = {}
        self._cancelled: set[tuple[str, int]] = set()
        self._stopping = False

    @property
    def capacity(self) -> int:
        return self._slots

    def start(self, emit: Callable[[object], None]) -> None:
        self._emit = emit
        self._stopping = False

    def submit(self, task: Task) -> None:
        assert self._emit is not None, "start() first"
        ident = (task.spec.computation, task.attempt)
        box = ReplyBox(self._emit)
        thread = threading.Thread(target=self._run, args=(task, box), name=f"gclo-handler-{task.spec.computation}",
                                  daemon=True)
        with self._lock:
            if self._stopping:
                self._emit(ComputationFailed(*ident, "the orchestrator stopped before this task started"))
                return
            self._running[ident] = (thread, box)
        thread.start()

    def _run(self, task: Task, box: ReplyBox) -> None:
        ident = (task.spec.computation, task.attempt)
        assert self._emit is not None
        try:
            with self._lock:
                skip = ident in self._cancelled or self._stopping
            outcome = (ComputationFailed(*ident, "cancelled before it started") if skip
                       else run_task(task, self._registry, self._store, box))
        except Exception as exc:  # run_task reports handler errors itself; this is the executor's own
            outcome = ComputationFailed(*ident, f"executor error: {exc!r}")
        finally:
            with self._lock:
                self._running.pop(ident, None)
                self._cancelled.discard(ident)
        self._emit(outcome)

    def deliver(self, computation: str, attempt: int, message: object) -> None:
        with self._lock:
            entry = self._running.get((computation, attempt))
        if entry is not None:
            entry[1].put(message)

    def cancel(self, computation: str, attempt: int) -> None:
        with self._lock:
            self._cancelled.add((computation, attempt))
        log.debug("thread executor: %s attempt %d cannot be stopped once started; its outcome will be ignored",
                  computation, attempt)

    def stop(self, grace_s: float = 5.0) -> None:
        """Wait up to `grace_s` for running handlers; those still running then (a hanging handler, one waiting
        for an answer that will not come now) are reported failed and left to end with the process."""
        with self._lock:
            self._stopping = True
            running = list(self._running.items())
        deadline = time.monotonic() + grace_s
        for ident, (thread, _) in running:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                with self._lock:
                    self._cancelled.add(ident)
                if self._emit is not None:
                    self._emit(ComputationFailed(*ident, f"the orchestrator stopped while this task ran (still "
                                                         f"running after {grace_s:g}s)"))
