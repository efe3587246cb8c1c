"""The shape most sources share: one loop in one supervised thread, ended by `stop()`."""
from __future__ import annotations

import threading

from ..interfaces import Emit, EventSource
from ..supervise import start_thread


class LoopingSource(EventSource):
    """Subclasses write `_loop(emit)`, which runs until `self._stopping` is set, and `_interrupt()` when the loop
    can block somewhere that setting the event does not reach (a subprocess, a streaming response)."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self, emit: Emit) -> None:
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Unblock the loop; the default has nothing to do."""

    def start(self, emit: Emit) -> None:
        """The loop runs under the supervisor: an exception it does not handle itself is logged, reported into
        the queue as an incident, and the loop starts again after a backoff."""
        self._stopping.clear()
        self._thread = start_thread(f"gclo-{self.name}", lambda: self._loop(emit), emit, self._stopping)

    def stop(self) -> None:
        self._stopping.set()
        self._interrupt()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
