"""Completion notifications, off the orchestrator's loop: calls `@handler.on_complete` functions and writes a
completion event per finished computation under `.gclo/events/`, on one thread, so that neither a slow callback
nor a store round trip delays scheduling. Completion handlers run in the orchestrator's process: keep them short."""
from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from dataclasses import asdict
from typing import Any, Callable

from ..errors import GclError
from ..interfaces import ObjectStore
from ..model import RESERVED_PREFIX, Completion
from .handlers import HandlerRegistry, describe_exception

log = logging.getLogger("gclo")
EVENTS_PREFIX = RESERVED_PREFIX + "events/"
_STOP = object()


def event_key(computation: str, at: float) -> str:
    """Keys sort by time, so a reader can list after the last key it saw (StartAfter on S3)."""
    digest = hashlib.sha1(computation.encode()).hexdigest()[:12]
    return f"{EVENTS_PREFIX}{int(at * 1e6):017d}-{digest}.json"


class Notifier:
    def __init__(self, store: ObjectStore, registry: HandlerRegistry,
                 incident: Callable[[str | None, str], None], publish: bool = True):
        self.store = store
        self.registry = registry
        self.incident = incident
        self.publish_events = publish
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gclo-notifier", daemon=True)
        self._thread.start()

    def notify(self, handler_type: str, completion: Completion) -> None:
        self._q.put(("notify", handler_type, completion))

    def publish(self, completion: Completion) -> None:
        if self.publish_events:
            self._q.put(("publish", completion, time.time()))

    def stop(self) -> None:
        """Deliver what is queued, then stop."""
        if self._thread is not None:
            self._q.put(_STOP)
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            if item[0] == "notify":
                self._call(item[1], item[2])
            else:
                self._write(item[1], item[2])

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

    def _write(self, completion: Completion, at: float) -> None:
        body = {**asdict(completion), "state": completion.state.value, "at": at}
        try:
            self.store.put(event_key(completion.computation, at), json.dumps(body).encode(),
                           {"content-type": "application/json"})
        except GclError as exc:
            log.warning("could not write the completion event of %s: %s", completion.computation, exc)
