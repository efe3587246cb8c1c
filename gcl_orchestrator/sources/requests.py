"""Requests to the running orchestrator that arrive through the store: `gclo rerun` writes one object per request
under `.gclo/requests/`, from any process or machine; this source lists them every few seconds, emits each as an
event into the one queue, and deletes it."""
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

    def poll_once(self, emit: Emit) -> int:
        handled = 0
        for info in self.store.list(REQUESTS_PREFIX):
            try:
                request = json.loads(self.store.get(info.key).body)
                target = request["rerun"]
                if not isinstance(target, str) or not target:
                    raise ValueError("'rerun' must name a computation or a key")
                emit(RerunRequested(target, bool(request.get("downstream")), str(request.get("by", ""))[:200]))
            except ObjectNotFound:
                continue
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring the request %s: %s", info.key, exc)
            self.store.delete(info.key)
            handled += 1
        return handled

    def _loop(self, emit: Emit) -> None:
        while not self._stopping.is_set():
            try:
                self.poll_once(emit)
            except GclError as exc:
                log.warning("reading requests from %s failed: %s", self.store.describe(), exc)
            self._stopping.wait(self.interval_s)
