"""Requests to the running orchestrator that arrive through the store: `gclo rerun` and `gclo cancel` (where no
HTTP API answers) write one object per request under `.gclo/requests/`, from any process or machine; this source lists them every few seconds and emits each as
an event into the one queue, which deletes it once the runtime has handed it to the core (a request left when the
orchestrator stopped is taken up by the next run). A request that cannot be read is reported and deleted.

Submitted GCL (`gclo submit` where no HTTP API answers, and every submission the API accepts) is kept as an
object of its own under `submitted/`, its body the document and its metadata the GCL, so that the graph holds
it after a restart as it holds any object's GCL; the event sources pick it up like any other object."""
from __future__ import annotations

import json
import logging
import uuid
import time
from typing import Sequence

from ..errors import GclError, ObjectNotFound
from ..gcl import encode_gcl
from ..interfaces import Emit, ObjectStore
from ..model import RESERVED_PREFIX, CancelRequested, ComputationSpec, RerunRequested
from .looping import LoopingSource

log = logging.getLogger("gclo.sources")
REQUESTS_PREFIX = RESERVED_PREFIX + "requests/"
SUBMISSIONS_PREFIX = "submitted/"


def submission_key() -> str:
    """A new key under `submitted/`: the time of the submission (UTC) and a random suffix."""
    return f"{SUBMISSIONS_PREFIX}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}.gcl"


def write_submission(store: ObjectStore, key: str, text: str, specs: Sequence[ComputationSpec]) -> None:
    """Keep submitted GCL at `key`: the document as its body, the specs as its GCL (a sidecar when large)."""
    encoded = encode_gcl(specs)
    encoded.write_sidecar(store)
    store.put(key, text.encode("utf-8"), encoded.metadata)


def request_rerun(store: ObjectStore, target: str, downstream: bool, by: str) -> str:
    """Leave a rerun request for whichever orchestrator runs on `store`; returns its key."""
    return _leave(store, {"rerun": target, "downstream": downstream, "by": by})


def request_cancel(store: ObjectStore, target: str, by: str) -> str:
    """Leave a cancel request for whichever orchestrator runs on `store`; returns its key."""
    return _leave(store, {"cancel": target, "by": by})


def _leave(store: ObjectStore, request: dict) -> str:
    key = f"{REQUESTS_PREFIX}{int(time.time() * 1e6):017d}-{uuid.uuid4().hex[:8]}.json"
    store.put(key, json.dumps(request).encode())
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
                verb = "cancel" if "cancel" in request else "rerun"
                target = request[verb]
                if not isinstance(target, str) or not target:
                    raise ValueError(f"{verb!r} must name a computation or a key")
            except ObjectNotFound:
                continue
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring the request %s: %s", info.key, exc)
                self.store.delete(info.key)
                continue
            self._in_flight.add(info.key)
            by, ack = str(request.get("by", ""))[:200], (lambda key=info.key: self._done(key))
            if verb == "cancel":
                emit(CancelRequested(target, by, ack=ack))
            else:
                emit(RerunRequested(target, bool(request.get("downstream")), by, ack=ack))
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
