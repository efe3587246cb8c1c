"""The scheduling core: the global graph, mutated only by `handle(events, now) -> instructions`.

No I/O, no clock, no threads. Cost per event is proportional to what the event touches (the waiters of one
key, the specs it carries), never to the size of the graph.
"""
from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from ..errors import CycleError
from ..model import (
    ComputationFailed,
    ComputationSpec,
    ComputationSucceeded,
    Dispatch,
    Instruction,
    ObjectAvailable,
    Reject,
    Settle,
    SpecsSubmitted,
    State,
)


@dataclass
class ComputationRecord:
    """What the core knows of one computation. Read it; only the Scheduler changes it."""

    spec: ComputationSpec
    source: str  # the object key (or other origin) whose GCL declared it
    state: State
    missing: set[str] = field(default_factory=set)
    attempts: int = 0
    last_error: str | None = None
    note: str = ""
    registered_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def name(self) -> str:
        return self.spec.computation


@dataclass(frozen=True)
class Rejection:
    source: str
    computation: str | None
    reason: str
    at: float


class Scheduler:
    """Holds the graph and decides what runs. `slots` bounds how many computations run at once."""

    def __init__(self, slots: int = 1):
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self._records: dict[str, ComputationRecord] = {}
        self._producer: dict[str, str] = {}  # output key -> computation
        self._consumers: dict[str, set[str]] = {}  # input key -> computations reading it
        self._waiters: dict[str, set[str]] = {}  # missing key -> waiting computations
        self._available: set[str] = set()
        self._ready: list[tuple[int, int, str]] = []  # (-priority, arrival order, computation)
        self._seq = 0
        self._running = 0
        self._counts = {s: 0 for s in State}
        self._rejections: list[Rejection] = []
        self._rejection_seen: set[tuple[str, str | None, str]] = set()

    # --- the one way in ----------------------------------------------------------------------------------------

    def handle(self, events: Iterable[object], now: float) -> list[Instruction]:
        """Apply a batch of events and return what to do. Within a batch, every object becomes available
        before any spec is registered, so a listing handed over in one batch never reruns existing outputs."""
        events = list(events)
        out: list[Instruction] = []
        for ev in events:
            if isinstance(ev, ObjectAvailable):
                self._make_available(ev.key, now, out)
            elif isinstance(ev, ComputationSucceeded) and self._is_current(ev.computation, ev.attempt):
                self._make_available(self._records[ev.computation].spec.output, now, out)
        for ev in events:
            if isinstance(ev, ObjectAvailable):
                if ev.gcl_error:
                    self._reject(ev.key, None, ev.gcl_error, now, out)
                self._register_all(ev.key, ev.specs, now, out)
            elif isinstance(ev, SpecsSubmitted):
                self._register_all(ev.source, ev.specs, now, out)
            elif isinstance(ev, ComputationSucceeded):
                if self._is_current(ev.computation, ev.attempt):
                    rec = self._finish(ev.computation, State.DONE, now)
                    self._register_all(rec.spec.output, ev.specs or (), now, out)
            elif isinstance(ev, ComputationFailed):
                if self._is_current(ev.computation, ev.attempt):
                    rec = self._finish(ev.computation, State.FAILED, now)
                    rec.last_error = ev.error
                    out.append(Settle(rec.name, State.FAILED, ev.error))
            else:
                raise TypeError(f"the scheduler does not handle {type(ev).__name__}")
        self._dispatch(now, out)
        return out

    # --- queries (cheap; none scans the graph unless its name says so) ------------------------------------------

    def record(self, computation: str) -> ComputationRecord | None:
        return self._records.get(computation)

    def records(self) -> Iterator[ComputationRecord]:
        """Every computation, in registration order (a full scan: for status snapshots, not per event)."""
        return iter(self._records.values())

    @property
    def rejections(self) -> tuple[Rejection, ...]:
        return tuple(self._rejections)

    def counts(self) -> dict[State, int]:
        return dict(self._counts)

    def __len__(self) -> int:
        return len(self._records)

    def is_available(self, key: str) -> bool:
        return key in self._available

    def producer_state(self, key: str) -> State | None:
        """State of the computation that produces `key`, if one is registered."""
        name = self._producer.get(key)
        return self._records[name].state if name else None

    def is_quiescent(self) -> bool:
        """Nothing ready and nothing running: only new events can make progress."""
        return self._running == 0 and self._counts[State.READY] == 0

    def waiting(self) -> list[ComputationRecord]:
        """Waiting computations with what each lacks (a full scan: for the end of a run)."""
        return [r for r in self._records.values() if r.state is State.WAITING]

    # --- internals ---------------------------------------------------------------------------------------------

    def _is_current(self, name: str, attempt: int) -> bool:
        rec = self._records.get(name)
        return rec is not None and rec.state is State.RUNNING and rec.attempts == attempt

    def _finish(self, name: str, state: State, now: float) -> ComputationRecord:
        rec = self._records[name]
        self._running -= 1
        self._set_state(rec, state)
        rec.finished_at = now
        return rec

    def _set_state(self, rec: ComputationRecord, state: State) -> None:
        self._counts[rec.state] -= 1
        self._counts[state] += 1
        rec.state = state

    def _make_available(self, key: str, now: float, out: list[Instruction]) -> None:
        if key in self._available:
            return
        self._available.add(key)
        name = self._producer.get(key)
        if name is not None:
            rec = self._records[name]
            if rec.state in (State.WAITING, State.READY):
                # Someone else wrote the output: the computation is done without running.
                self._settle_existing(rec, now, out)
        for name in self._waiters.pop(key, ()):
            rec = self._records[name]
            rec.missing.discard(key)
            if not rec.missing and rec.state is State.WAITING:
                self._make_ready(rec)

    def _settle_existing(self, rec: ComputationRecord, now: float, out: list[Instruction]) -> None:
        for key in rec.missing:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(rec.name)
                if not waiters:
                    del self._waiters[key]
        rec.missing.clear()
        self._set_state(rec, State.DONE)
        rec.note = "output already present"
        rec.finished_at = now
        out.append(Settle(rec.name, State.DONE, f"output {rec.spec.output!r} already present; not run"))

    def _make_ready(self, rec: ComputationRecord) -> None:
        self._set_state(rec, State.READY)
        self._seq += 1
        heapq.heappush(self._ready, (-rec.spec.priority, self._seq, rec.name))

    def _reject(self, source: str, computation: str | None, reason: str, now: float,
                out: list[Instruction]) -> None:
        ident = (source, computation, reason)
        if ident in self._rejection_seen:
            return
        self._rejection_seen.add(ident)
        self._rejections.append(Rejection(source, computation, reason, now))
        out.append(Reject(source, computation, reason))

    def _register_all(self, source: str, specs: Iterable[ComputationSpec], now: float,
                      out: list[Instruction]) -> None:
        for spec in specs:
            self._register(source, spec, now, out)

    def _register(self, source: str, spec: ComputationSpec, now: float, out: list[Instruction]) -> None:
        existing = self._records.get(spec.computation)
        if existing is not None:
            if existing.spec != spec:
                self._reject(source, spec.computation,
                             f"computation {spec.computation!r} is already declared differently "
                             f"(by {existing.source!r}); names must be unique", now, out)
            return  # the same spec again: duplicate event or re-emission, nothing to do
        other = self._producer.get(spec.output)
        if other is not None:
            self._reject(source, spec.computation,
                         f"output {spec.output!r} is already produced by computation {other!r}", now, out)
            return
        cycle = self._find_cycle(spec)
        if cycle is not None:
            self._reject(source, spec.computation, str(CycleError(spec.computation, cycle)), now, out)
            return
        rec = ComputationRecord(spec=spec, source=source, state=State.WAITING, registered_at=now)
        self._counts[State.WAITING] += 1
        self._records[spec.computation] = rec
        self._producer[spec.output] = spec.computation
        for key in spec.inputs:
            self._consumers.setdefault(key, set()).add(spec.computation)
        if spec.output in self._available:
            self._settle_existing(rec, now, out)
            return
        rec.missing = {k for k in spec.inputs if k not in self._available}
        for key in rec.missing:
            self._waiters.setdefault(key, set()).add(spec.computation)
        if not rec.missing:
            self._make_ready(rec)

    def _find_cycle(self, spec: ComputationSpec) -> tuple[str, ...] | None:
        """The cycle `spec` would close, as key -> [computation] -> key ..., or None.

        A cycle needs a path from spec's output, through registered consumers, to one of its inputs. The
        common cases (nobody reads the output yet; nobody produces the inputs) are answered without a walk.
        """
        inputs = set(spec.inputs)
        if not self._consumers.get(spec.output) or not any(k in self._producer for k in inputs):
            return None
        parent: dict[str, tuple[str, str] | None] = {spec.output: None}
        frontier = deque([spec.output])
        while frontier:
            key = frontier.popleft()
            for name in sorted(self._consumers.get(key, ())):
                nxt = self._records[name].spec.output
                if nxt in parent:
                    continue
                parent[nxt] = (name, key)
                if nxt in inputs:
                    path = [nxt]
                    cur = nxt
                    while parent[cur] is not None:
                        via, prev = parent[cur]  # type: ignore[misc]
                        path += [f"[{via}]", prev]
                        cur = prev
                    path.reverse()
                    return tuple(path + [f"[{spec.computation}]", spec.output])
                frontier.append(nxt)
        return None

    def _dispatch(self, now: float, out: list[Instruction]) -> None:
        while self._running < self.slots and self._ready:
            _, _, name = heapq.heappop(self._ready)
            rec = self._records[name]
            if rec.state is not State.READY:
                continue  # settled while queued (its output appeared)
            self._set_state(rec, State.RUNNING)
            self._running += 1
            rec.attempts += 1
            rec.started_at = now
            out.append(Dispatch(rec.spec, rec.attempts))
