"""The change feed: every state change of every computation, numbered, kept in a bounded window for the HTTP
API's event stream (server-sent events) and its metrics. The loop thread appends; the API's threads read.

Changes are numbered `RUN.SEQ`: RUN names this orchestrator process, SEQ counts from 1; the stream sends them in
messages of up to 1,000, each message's id the number of its last change. A client that reconnects with
`Last-Event-ID` gets every change after it while they are still kept; one whose id is of another run, or older
than the window, is told to reload (a `reset` event) and then gets what follows. Nothing is lost without the
client being told so.
"""
from __future__ import annotations

import bisect
import threading
import time
from typing import Any, Callable

from ..core import ComputationRecord, Scheduler
from ..model import State

MAX_EVENTS = 50_000  # kept for clients that reconnect: minutes of a busy run
SHOWN_INPUTS = 50  # inputs an event carries (a join over 100,000 parts says how many)
FAILED_STATES = (State.FAILED, State.UPSTREAM_FAILED)
STATE_TEXT = {state: state.value for state in State}  # an enum's .value is a property: slow per change


class Change:
    """One state change as a reader gets it; `event()` renders it. The record is looked up by name when the
    change is read and read when it is rendered, for the attempt and error: a client is told the state the
    change entered, and the computation as it is by the time it is sent."""

    __slots__ = ("seq", "state", "at", "rec", "published")

    def __init__(self, seq: int, state: State, at: float, rec: ComputationRecord, published: float):
        self.seq, self.state, self.at, self.rec = seq, state, at, rec
        self.published = published  # when the feed got it: the end of the core's batch that made it

    def event(self) -> dict[str, Any]:
        rec, state = self.rec, self.state
        spec = rec.spec
        inputs = spec.inputs
        doc: dict[str, Any] = {"computation": spec.computation, "state": STATE_TEXT[state], "at": self.at,
                               "published": self.published, "attempt": rec.attempts,
                               "handler_type": spec.handler_type, "output": spec.output,
                               "inputs": inputs[:SHOWN_INPUTS]}  # a tuple's whole slice is the tuple
        if len(inputs) > SHOWN_INPUTS:
            doc["inputs_count"] = len(inputs)
        if state in FAILED_STATES:
            if rec.last_error:
                doc["error"] = rec.last_error[:2000]
            if rec.cancelled and state is State.FAILED:
                doc["cancelled"] = True
        return doc


class ChangeFeed:
    """Appended to by `watch` on the loop thread (Orchestrator(watcher=feed.watch)); read from any thread.

    The loop's side costs a batch one append: the feed keeps the core's list of `(name, state, at)` changes as
    it is, with the batch's first number and its time. Readers number the changes, look up their records and
    render them on their own threads. (Rendering them on the loop instead, while someone follows the stream,
    cost the loop 50 ms for a batch of 10,000 registrations here and did not bring the batch's last change to
    the client sooner.)"""

    def __init__(self, max_events: int = MAX_EVENTS, run: str | None = None):
        self.run = run or f"{int(time.time() * 1000):x}"
        # The last `max_events` changes at least (up to twice as many: trimmed in one step when it doubles), as
        # batches: `_firsts[i]` numbers the first change of `_batches[i]`, published at `_published[i]`
        self._max = max_events
        self._firsts: list[int] = []
        self._published: list[float] = []
        self._batches: list[list[tuple[str, State, float]]] = []
        self._seq = 0
        self._record: Callable[[str], ComputationRecord | None] = lambda name: None
        self._lock = threading.Lock()
        self._listeners: list[Callable[[list[tuple[str, State, float]]], None]] = []
        self._wakers: set[Callable[[], None]] = set()

    # --- the loop's side ---------------------------------------------------------------------------------------

    def watch(self, changes: list[tuple[str, State, float]], core: Scheduler) -> None:
        """The orchestrator's watcher: called once per batch with the batch's state changes, in order. The list
        is the feed's from then on (the core starts a new one for its next batch)."""
        if not changes:
            return
        published = time.time()
        with self._lock:
            self._record = core.record
            self._firsts.append(self._seq + 1)
            self._published.append(published)
            self._batches.append(changes)
            self._seq += len(changes)
            if self._seq - self._firsts[0] + 1 > 2 * self._max:  # the changes held
                self._trim()
            wakers = list(self._wakers) if self._wakers else ()
        for listener in self._listeners:
            listener(changes)
        for wake in wakers:
            wake()

    def _trim(self) -> None:
        """Keep the last `max_events` changes: whole batches go, the oldest one kept may be cut."""
        cut = self._seq - self._max + 1  # the first number kept
        drop = bisect.bisect_right(self._firsts, cut) - 1
        del self._firsts[:drop], self._published[:drop], self._batches[:drop]
        self._batches[0] = self._batches[0][cut - self._firsts[0]:]
        self._firsts[0] = cut

    def listen(self, listener: Callable[[list[tuple[str, State, float]]], None]) -> None:
        """`listener` hears each batch's `(name, state, at)` changes on the loop thread (metrics); it must be
        quick."""
        self._listeners.append(listener)

    # --- readers -----------------------------------------------------------------------------------------------

    @property
    def last_id(self) -> str:
        return f"{self.run}.{self._seq}"

    def after(self, last_id: str | None, limit: int = 1_000) -> tuple[list[Change], bool]:
        """The changes after `last_id` (None: none, only what comes next), at most `limit`, and whether the
        client must reload first (its id is of another run, or older than what is kept)."""
        with self._lock:
            if last_id is None:
                return [], False
            run, _, seq_text = last_id.partition(".")
            if run != self.run or not seq_text.isdigit() or int(seq_text) > self._seq:
                return [], True
            seq = int(seq_text)
            oldest = self._firsts[0] if self._firsts else self._seq + 1
            if seq < oldest - 1:
                return [], True
            if seq == self._seq:
                return [], False
            record, out = self._record, []
            start = bisect.bisect_right(self._firsts, seq + 1) - 1
            offset = seq + 1 - self._firsts[start]  # into the batch holding seq + 1; later ones from their start
            for i in range(start, len(self._batches)):
                first, published, batch = self._firsts[i], self._published[i], self._batches[i]
                for n in range(offset, len(batch)):
                    name, state, at = batch[n]
                    rec = record(name)
                    if rec is not None:  # else the computation has left the graph since: nothing to show
                        out.append(Change(first + n, state, at, rec, published))
                        if len(out) == limit:
                            return out, False
                offset = 0
            return out, False

    def add_waker(self, wake: Callable[[], None]) -> None:
        """`wake()` is called (from the loop thread) after each batch of changes, until removed."""
        with self._lock:
            self._wakers.add(wake)

    def remove_waker(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._wakers.discard(wake)

    def wake_all(self) -> None:
        """Every reader waiting for a change looks again (at shutdown: to see that it is time to end)."""
        with self._lock:
            wakers = list(self._wakers)
        for wake in wakers:
            wake()
