"""Requests to the running orchestrator that arrive through the store: `gclo rerun` writes one object per request
under `.gclo/requests/`, from any process or machine; this source lists them every few seconds and emits each as
an event into the one queue, which deletes it once the runtime has handed it to the core (a request left when the
orchestrator stopped is taken up by the next run). A request that cannot be read is reported and deleted."""
from __future__ import annotations

import json
import logging
import uuid
import time

from ..errors import GclError, ObjectNotFound
from ..interfaces import Emit, ObjectStore
from ..model import RESERVED_PREFIX, RerunRequested
from .looping import LoopingSource

log = logging.getLogger("gclo.sources")
REQUESTS_PREFIX = RESERVED_PREFIX + "requests/"


def request_rerun(store: ObjectStore, target: str, downstream: bool, by: str) -> str:
    """Leave a rerun request for whichever orchestrator runs on `store`; returns its key."""
    key = f"{REQUESTS_PREFIX}{int(time.time() * 1e6):017d}-{uuid.uuid4().hex[:8]}.json"
    store.put(key, json.dumps({"rerun": target, "downstream": downstream, "by": by}).encode())
    return key


class RequestSource(LoopingSource):
    name = "requests"

    def __init__(self, store: ObjectStore, interval_s: float = 2.0):
        super().__init__()
        self.store = store
        self.interval_s = interval_s
        self._in_flight: set[str] = set()  # emitted, not yet handled: not emitted again meanwhile

    def poll_once(self, emit: Emit) -> int:
        handled = 0
        for info in self.store.list(REQUESTS_PREFIX):
            if info.key in self._in_flight:
                continue
            try:
                request = json.loads(self.store.get(info.key).body)
                target = request["rerun"]
                if not isinstance(target, str) or not target:
                    raise ValueError("'rerun' must name a computation or a key")
            except ObjectNotFound:
                continue
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring the request %s: %s", info.key, exc)
                self.store.delete(info.key)
                continue
            self._in_flight.add(info.key)
            emit(RerunRequested(target, bool(request.get("downstream")), str(request.get("by", ""))[:200],
                                ack=lambda key=info.key: self._done(key)))
            handled += 1
        return handled

    def _done(self, key: str) -> None:
        try:
            self.store.delete(key)
        finally:
            self._in_flight.discard(key)

    def _loop(self, emit: Emit) -> None:
        while not self._stopping.is_set():
            try:
                self.poll_once(emit)
            except GclError as exc:
                log.warning("reading requests from %s failed: %s", self.store.describe(), exc)
            self._stopping.wait(self.interval_s)
