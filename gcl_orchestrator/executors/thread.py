"""The thread executor: handlers in threads of this process (the reference, for tests with the in-memory store)."""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence

from ..interfaces import Executor, ObjectStore, Task
from ..model import ComputationFailed, ComputationSucceeded, PoolSpec
from ..runtime.handlers import HandlerRegistry
from ..runtime.worker import run_task
from .pools import as_pools

log = logging.getLogger("gclo.executor")
Outcome = ComputationSucceeded | ComputationFailed


class ThreadExecutor(Executor):
    """Handlers in threads of this process, all pools sharing one thread pool of their total size. A running
    handler cannot be stopped: `cancel` only drops queued work (the core ignores a cancelled attempt's late
    outcome), so time-outs are enforced by the process executor alone."""

    def __init__(self, pools: int | Sequence[PoolSpec], registry: HandlerRegistry, store: ObjectStore):
        self._slots = sum(p.slots for p in as_pools(pools))
        # Slots lent by blocked handlers need threads of their own: the core bounds what runs at once.
        self._threads = self._slots + 32
        self._registry = registry
        self._store = store
        self._pool: ThreadPoolExecutor | None = None
        self._emit: Callable[[Outcome], None] | None = None

    @property
    def capacity(self) -> int:
        return self._slots

    def start(self, emit: Callable[[Outcome], None]) -> None:
        self._emit = emit
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="gclo-handler")

    def submit(self, task: Task) -> None:
        assert self._pool is not None and self._emit is not None, "start() first"
        emit = self._emit

        def done(fut: Future[Outcome]) -> None:
            exc = fut.exception()
            emit(fut.result() if exc is None else
                 ComputationFailed(task.spec.computation, task.attempt, f"executor error: {exc!r}"))

        self._pool.submit(run_task, task, self._registry, self._store, emit).add_done_callback(done)

    def cancel(self, computation: str, attempt: int) -> None:
        log.debug("thread executor: %s attempt %d cannot be stopped; its outcome will be ignored",
                  computation, attempt)

    def stop(self, grace_s: float = 5.0) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


