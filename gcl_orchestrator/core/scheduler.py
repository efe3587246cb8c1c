"""The scheduling core: the global graph, mutated only by `handle(events, now) -> instructions`.

No I/O, no clock, no threads; randomness (retry jitter) comes from an injected generator. Cost per event is
what the event touches (the waiters of one key, the specs it carries, one pool's heap), never the size of the
graph; only deadlock resolution scans, and only after the graph has been quiet for the grace period.
"""
from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from heapq import heappop, heappush
from operator import attrgetter
from typing import Iterable, Iterator

from ..errors import CycleError
from ..model import (
    Cancel,
    Completion,
    ComputationBlocked,
    ComputationResumed,
    ComputationFailed,
    ComputationSpec,
    ComputationSucceeded,
    Deadlock,
    Dispatch,
    Instruction,
    Notify,
    ObjectAvailable,
    PoolSpec,
    Reject,
    RetryPolicy,
    Settle,
    SpecsSubmitted,
    State,
    variant,
    variant_label,
)

# The states as module constants: `State.DONE` is a descriptor call on CPython 3.11 (about 0.2 µs, several per
# computation on the hot path); a module global is a dictionary lookup.
WAITING, READY, RUNNING, RETRYING = State.WAITING, State.READY, State.RUNNING, State.RETRYING
DONE, FAILED, UPSTREAM_FAILED = State.DONE, State.FAILED, State.UPSTREAM_FAILED
# The NamedTuples' generated __new__ is a Python function with defaults; the hot path builds its per-computation
# instructions from a complete tuple instead (half the cost; same objects).
_new = tuple.__new__
ACTIVE = (WAITING, READY, RUNNING, RETRYING)
FINAL = (DONE, FAILED, UPSTREAM_FAILED)


@dataclass(frozen=True)
class SchedulerConfig:
    """Pools (the first one without handler types is the general pool), ageing of ready work in priority
    points per second, how long the graph must be quiet before waiting work counts as deadlocked (None: never),
    the retry policy for specs that declare none, and how many attempts lost with their worker process (a crash,
    a kill, the OOM killer) are granted on top of any policy: infrastructure failures are retried even when the
    handler's own errors are not."""

    pools: tuple[PoolSpec, ...] = (PoolSpec("general", 1),)
    ageing_per_s: float = 1.0
    deadlock_grace_s: float | None = 60.0
    default_retry: RetryPolicy = RetryPolicy()
    lost_worker_retries: int = 2
    # Attempts per slot dispatched beyond a pool's slots, for the executor to queue (Executor.prefetch). Work with
    # a time-out is never dispatched into that queue: its clock starts at dispatch.
    prefetch: int = 0


_NOTHING_MISSING: frozenset[str] = frozenset()
_by_name = attrgetter("spec.computation")


def _each(waiting: ComputationRecord | set[ComputationRecord] | tuple) -> Iterable[ComputationRecord]:
    """The computations of one `Scheduler._waiters` entry (a record alone, or a set of them)."""
    return (waiting,) if type(waiting) is ComputationRecord else waiting


@dataclass(slots=True, init=False, eq=False)
class ComputationRecord:
    """What the core knows of one computation. Read it; only the Scheduler changes it. Compared and hashed by
    identity: the core's indexes hold records, not names, to spare a lookup per step."""

    spec: ComputationSpec
    source: str  # the object key (or other origin) whose GCL declared it
    state: State
    missing: set[str] | frozenset[str]  # inputs not yet available (a shared empty frozenset once there are none)
    attempts: int  # all attempts, every alternative included; also the id of the current one
    variant_attempts: int  # attempts of the current variant
    lost_attempts: int  # attempts whose worker process died under them
    alternative: int  # 0: the spec itself; i: spec.alternatives[i - 1]
    pool: str
    last_error: str | None
    errors: tuple[str, ...]  # every failed attempt and unplaceable variant, oldest first
    note: str
    produced_by: str | None  # name of the variant that produced the output
    registered_at: float
    ready_at: float | None
    started_at: float | None
    finished_at: float | None
    retry_at: float | None
    blocked_on: tuple[str, ...]  # keys a running handler waits for; its slot is lent meanwhile
    subscribers: tuple[str, ...]  # handler types told when this computation ends (notify + ctx requests)

    def __init__(self, spec: ComputationSpec, source: str, state: State, registered_at: float = 0.0,
                 subscribers: tuple[str, ...] = ()):
        # Written out rather than generated: one record per computation, and the generated __init__ (keyword
        # defaults, two default factories) costs twice as much.
        self.spec = spec
        self.source = source
        self.state = state
        self.missing = _NOTHING_MISSING
        self.attempts = self.variant_attempts = self.lost_attempts = self.alternative = 0
        self.pool = self.note = ""
        self.last_error = self.produced_by = None
        self.errors = ()
        self.registered_at = registered_at
        self.ready_at = self.started_at = self.finished_at = self.retry_at = None
        self.blocked_on = ()
        self.subscribers = subscribers

    @property
    def name(self) -> str:
        return self.spec.computation

    @property
    def current(self) -> ComputationSpec:
        """The spec of the variant being tried (the spec itself, or an alternative applied to it)."""
        # The plain spec needs no lookup: hashing a spec for the cache is the costliest step on the hot path.
        return variant(self.spec, self.alternative) if self.alternative else self.spec

    @property
    def label(self) -> str:
        """The name of the variant being tried."""
        return variant_label(self.spec, self.alternative) if self.alternative else self.spec.computation


@dataclass(frozen=True)
class Rejection:
    source: str
    computation: str | None
    reason: str
    at: float


@dataclass
class _Pool:
    spec: PoolSpec
    # Ready work, highest aged priority first and first come first within one: a heap of the distinct keys
    # (negated aged priority) and a FIFO of computations per key. Computations made ready together share a key,
    # so the heap stays small and compares floats, not (key, order, name) tuples.
    ready: list[float] = field(default_factory=list)
    queued: dict[float, deque[ComputationRecord]] = field(default_factory=dict)
    running: int = 0
    used: dict[str, float] = field(default_factory=dict)
    limit: int = 0  # attempts it may hold: its slots, plus what the executor queues ahead (prefetch per slot)


class Scheduler:
    """Holds the graph and decides what runs where, when to retry, what to give up on, and whom to tell."""

    def __init__(self, slots: int | None = None, *, config: SchedulerConfig | None = None,
                 rng: random.Random | None = None):
        if config is None:
            config = SchedulerConfig(pools=(PoolSpec("general", slots or 1),))
        elif slots is not None:
            raise ValueError("give either slots or config")
        if not config.pools or any(p.slots < 1 for p in config.pools):
            raise ValueError("every pool needs at least one slot")
        self.config = config
        self._rng = rng or random.Random(0)
        self._pools = {p.name: _Pool(p, limit=p.slots * (1 + config.prefetch)) for p in config.pools}
        general = [p for p in config.pools if not p.handler_types]
        self._general = general[0].name if general else None
        self._affinity = {t: p.name for p in config.pools for t in p.handler_types}
        self._plain_route = self._general if not self._affinity else None
        self._ageing = config.ageing_per_s
        self._grace = config.deadlock_grace_s
        self._records: dict[str, ComputationRecord] = {}
        self._producer: dict[str, ComputationRecord] = {}  # output key -> the computation producing it
        # input key -> computations reading it: the name itself while there is one (most keys), a list after;
        # a one-element set per key would triple this index's memory, and at 100k keys memory is time. Both
        # indexes are filled inline in _register: a shared helper, one call per input, cost 5% at fan-in.
        self._consumers: dict[str, str | list[str]] = {}
        # missing key -> computations waiting for it: the record itself while one waits (most keys), a set after
        # (a set, unlike the consumers' list, because waiters leave one at a time: _unwait)
        self._waiters: dict[str, ComputationRecord | set[ComputationRecord]] = {}
        self._available: set[str] = set()
        self._failed_keys: dict[str, str] = {}  # output of a failed computation -> that computation
        self._timers: list[tuple[float, int, str, str, int]] = []  # (due, order, kind, computation, attempt)
        self._seq = 0
        self._counts = {s: 0 for s in State}
        self._rejections: list[Rejection] = []
        self._rejection_seen: set[tuple[str, str | None, str]] = set()
        self._deadlocks: list[Deadlock] = []
        self._last_activity = 0.0
        self._paused = False

    def pause(self) -> None:
        """Dispatch nothing more (the executor is stopping); everything else goes on, ready work stays ready."""
        self._paused = True

    @property
    def slots(self) -> int:
        return sum(p.spec.slots for p in self._pools.values())

    # --- the one way in ----------------------------------------------------------------------------------------

    def handle(self, events: Iterable[object], now: float) -> list[Instruction]:
        """Apply a batch of events at time `now` and return what to do. An empty batch lets time pass (retry
        delays, time-outs, deadlock grace). Within a batch, every object becomes available before any spec is
        registered, so a listing handed over in one batch never reruns existing outputs."""
        if type(events) is not list:
            events = list(events)
        out: list[Instruction] = []
        if events:
            self._last_activity = now
            self._apply(events, now, out)
        if self._timers and self._timers[0][0] <= now:
            self._fire_timers(now, out)
        self._dispatch(now, out)
        grace = self._grace
        if grace is not None and now >= self._last_activity + grace and self._counts[WAITING]:
            self._check_deadlock(now, out)
        return out

    def _apply(self, events: list[object], now: float, out: list[Instruction]) -> None:
        records = self._records
        counts = self._counts
        pools = self._pools
        register: list[tuple[str, tuple[ComputationSpec, ...], str | None]] = []  # after every object is there
        for ev in events:
            kind = type(ev)
            if kind is ComputationSucceeded:
                rec = records.get(ev[0])
                if rec is None or rec.state is not RUNNING or rec.attempts != ev[1]:
                    continue  # a late or repeated report of an attempt that no longer counts
                spec = rec.spec
                self._make_available(spec.output, now, out)
                if rec.blocked_on or rec.alternative or spec.resources:
                    self._release(rec)
                else:
                    pools[rec.pool].running -= 1  # _release, inline for the plain case
                counts[RUNNING] -= 1  # _set_state(rec, DONE), inline
                counts[DONE] += 1
                rec.state = DONE
                rec.finished_at = now
                rec.produced_by = spec.computation if not rec.alternative else rec.label
                out.append(_new(Settle, (spec.computation, DONE, "")))
                if rec.subscribers:
                    self._announce(rec, out)
                if ev.specs:
                    register.append((spec.output, ev.specs, ev.subscriber))
            elif kind is ObjectAvailable:
                self._make_available(ev[0], now, out)
                if ev.gcl_error:
                    self._reject(ev.key, None, ev.gcl_error, now, out)
                if ev.specs:
                    register.append((ev.key, ev.specs, None))
            elif kind is SpecsSubmitted:
                register.append((ev.source, ev.specs, ev.subscriber))
            elif kind is ComputationFailed:
                if self._is_current(ev.computation, ev.attempt):
                    rec = records[ev.computation]
                    if ev.worker_lost:
                        rec.lost_attempts += 1
                    self._failed_attempt(rec, ev.error, ev.permanent, now, out, release=True)
            elif kind is ComputationBlocked:
                if self._is_current(ev.computation, ev.attempt):
                    self._block(records[ev.computation], ev.keys, out)
            elif kind is ComputationResumed:
                rec = records.get(ev.computation)
                if rec is not None and self._is_current(ev.computation, ev.attempt) and rec.blocked_on:
                    rec.blocked_on = ()
                    pools[rec.pool].running += 1  # may exceed the slots until someone finishes
            else:
                raise TypeError(f"the scheduler does not handle {type(ev).__name__}")
        for source, specs, subscriber in register:
            for spec in specs:
                self._register(source, spec, now, out, subscriber)

    # --- queries (cheap; none scans the graph unless its name says so) ------------------------------------------

    def record(self, computation: str) -> ComputationRecord | None:
        return self._records.get(computation)

    def records(self) -> Iterator[ComputationRecord]:
        """Every computation, in registration order (a full scan: for status snapshots, not per event)."""
        return iter(self._records.values())

    @property
    def rejections(self) -> tuple[Rejection, ...]:
        return tuple(self._rejections)

    @property
    def deadlocks(self) -> tuple[Deadlock, ...]:
        return tuple(self._deadlocks)

    def counts(self) -> dict[State, int]:
        return dict(self._counts)

    def __len__(self) -> int:
        return len(self._records)

    def is_available(self, key: str) -> bool:
        return key in self._available

    def producer_state(self, key: str) -> State | None:
        """State of the computation that produces `key`, if one is registered."""
        rec = self._producer.get(key)
        return rec.state if rec is not None else None

    def is_quiescent(self) -> bool:
        """Nothing ready, running or due for a retry: only new events can make progress."""
        return (self._counts[RUNNING] == 0 and self._counts[READY] == 0
                and self._counts[RETRYING] == 0)

    def next_wakeup(self) -> float | None:
        """When time alone will change something (a retry, a time-out, the deadlock grace), if ever."""
        while self._timers and not self._timer_valid(self._timers[0]):
            heapq.heappop(self._timers)
        due = self._timers[0][0] if self._timers else None
        grace = self.config.deadlock_grace_s
        if grace is not None and self._counts[WAITING] and self.is_quiescent():
            deadline = self._last_activity + grace
            due = deadline if due is None else min(due, deadline)
        return due

    def waiting(self) -> list[ComputationRecord]:
        """Waiting computations with what each lacks (a full scan: for the end of a run)."""
        return [r for r in self._records.values() if r.state is WAITING]

    # --- state changes -----------------------------------------------------------------------------------------

    def _is_current(self, name: str, attempt: int) -> bool:
        rec = self._records.get(name)
        return rec is not None and rec.state is RUNNING and rec.attempts == attempt

    def _set_state(self, rec: ComputationRecord, state: State) -> None:
        self._counts[rec.state] -= 1
        self._counts[state] += 1
        rec.state = state

    def _block(self, rec: ComputationRecord, keys: tuple[str, ...], out: list[Instruction]) -> None:
        """A handler waiting for other work keeps its process but not its slot: had it held the last slot of
        its pool, the work it waits for could never run there."""
        if rec.blocked_on:
            return
        pool = self._pools[rec.pool]
        was_full = pool.running >= pool.spec.slots
        rec.blocked_on = tuple(keys)
        pool.running -= 1
        if was_full:
            deadlock = Deadlock("blocked-worker", (rec.name,),
                                f"{rec.name!r} waits for {', '.join(repr(k) for k in keys)} while holding the last "
                                f"worker slot of pool {rec.pool!r}; its slot is lent to other work until it resumes")
            self._deadlocks.append(deadlock)
            out.append(deadlock)

    def _release(self, rec: ComputationRecord) -> None:
        pool = self._pools[rec.pool]
        if rec.blocked_on:
            rec.blocked_on = ()  # its slot was lent out already
        else:
            pool.running -= 1
        resources = (rec.current if rec.alternative else rec.spec).resources
        if resources:
            for name, amount in resources.items():
                pool.used[name] = pool.used.get(name, 0.0) - amount

    def _announce(self, rec: ComputationRecord, out: list[Instruction]) -> None:
        for handler_type in rec.subscribers:
            out.append(Notify(handler_type, Completion(rec.name, rec.state, rec.spec.output, rec.attempts,
                                                       rec.last_error if rec.state is not DONE else None,
                                                       rec.produced_by)))

    def _failed_attempt(self, rec: ComputationRecord, error: str, permanent: bool, now: float,
                        out: list[Instruction], release: bool) -> None:
        """One attempt failed: retry after a delay, else the next alternative, else fail for good."""
        if release:
            self._release(rec)
        rec.last_error = error
        rec.errors += (f"attempt {rec.attempts} ({rec.label}): {error}",)
        policy = self._retry_policy(rec.spec)
        granted = policy.max_attempts + min(rec.lost_attempts, self.config.lost_worker_retries)
        if not permanent and rec.variant_attempts < granted:
            delay = policy.delay(rec.variant_attempts, self._rng)
            self._set_state(rec, RETRYING)
            rec.retry_at = now + delay
            self._timer(rec.retry_at, "retry", rec)
            return
        if rec.alternative < len(rec.spec.alternatives):
            self._set_state(rec, WAITING)  # leaves WAITING at once: the inputs are there
            self._next_alternative(rec, now, out, "after the previous variant failed")
            return
        self._fail(rec, now, out, error)

    def _next_alternative(self, rec: ComputationRecord, now: float, out: list[Instruction], why: str) -> None:
        """After the current variant failed (its inputs are all there): run the next placeable alternative."""
        rec.alternative += 1
        rec.variant_attempts = 0
        problem = self._choose_variant(rec)
        if problem is not None:
            self._fail(rec, now, out, f"{rec.last_error}; no alternative left that a pool can run ({problem})")
            return
        rec.note = f"alternative {rec.alternative} ({rec.label}) {why}"
        self._make_ready(rec, now)

    def _choose_variant(self, rec: ComputationRecord) -> str | None:
        """From the current variant on, the first one some pool can run is routed; else the last reason why not."""
        while True:
            problem = self._route(rec)
            if problem is None:
                return None
            rec.errors += (problem,)
            if rec.alternative >= len(rec.spec.alternatives):
                return problem
            rec.alternative += 1

    def _fail(self, rec: ComputationRecord, now: float, out: list[Instruction], error: str) -> None:
        self._set_state(rec, FAILED)
        rec.finished_at = now
        rec.last_error = error
        out.append(Settle(rec.name, FAILED, error))
        self._announce(rec, out)
        self._fail_downstream(rec, now, out)

    def _fail_downstream(self, failed: ComputationRecord, now: float, out: list[Instruction],
                         culprit: str | None = None) -> None:
        """Everything that needs the failed output, directly or through others, is upstream-failed, naming the
        computation that failed (`culprit`, when `failed` is itself upstream-failed)."""
        queue = deque([(failed.spec.output, culprit or failed.name)])
        while queue:
            key, culprit = queue.popleft()
            self._failed_keys[key] = culprit
            for rec in sorted(_each(self._waiters.pop(key, ())), key=_by_name):
                if rec.state is not WAITING:
                    continue
                self._unwait(rec)
                self._set_state(rec, UPSTREAM_FAILED)
                rec.finished_at = now
                rec.last_error = f"upstream computation {culprit!r} failed, so {key!r} will not be produced"
                out.append(Settle(rec.name, UPSTREAM_FAILED, rec.last_error))
                self._announce(rec, out)
                queue.append((rec.spec.output, culprit))

    def _unwait(self, rec: ComputationRecord) -> None:
        for key in rec.missing:
            waiting = self._waiters.get(key)
            if waiting is rec:
                del self._waiters[key]
            elif waiting is not None and type(waiting) is set:
                waiting.discard(rec)
                if not waiting:
                    del self._waiters[key]
        rec.missing = _NOTHING_MISSING

    def _make_available(self, key: str, now: float, out: list[Instruction]) -> None:
        available = self._available
        if key in available:
            return
        available.add(key)
        if self._failed_keys:
            self._failed_keys.pop(key, None)
        rec = self._producer.get(key)
        if rec is not None:
            state = rec.state
            if state is WAITING or state is READY or state is RETRYING:
                # Someone else wrote the output: the computation is done without running (again).
                self._settle_existing(rec, now, out)
        waiting = self._waiters.pop(key, None)
        if waiting is not None:
            for rec in (waiting,) if type(waiting) is ComputationRecord else waiting:  # _each, inline
                missing = rec.missing
                missing.discard(key)
                if not missing and rec.state is WAITING:
                    self._make_ready(rec, now)

    def _settle_existing(self, rec: ComputationRecord, now: float, out: list[Instruction]) -> None:
        self._unwait(rec)
        self._set_state(rec, DONE)
        rec.note = "output already present"
        rec.finished_at = now
        out.append(Settle(rec.name, DONE, f"output {rec.spec.output!r} already present; not run"))
        self._announce(rec, out)

    def _make_ready(self, rec: ComputationRecord, now: float) -> None:
        counts = self._counts  # _set_state, inline: this runs once per computation
        counts[rec.state] -= 1
        counts[READY] += 1
        rec.state = READY
        rec.ready_at = now
        spec = rec.current if rec.alternative else rec.spec
        # Ageing: effective priority p + rate * (t - ready_at) orders like p - rate * ready_at at any time t,
        # so a static key ages every entry without touching it. The heap is a min-heap: the key is negated.
        key = self._ageing * now - spec.priority
        pool = self._pools[rec.pool]
        fifo = pool.queued.get(key)
        if fifo is None:
            pool.queued[key] = fifo = deque()
            heappush(pool.ready, key)
        fifo.append(rec)

    def _reject(self, source: str, computation: str | None, reason: str, now: float,
                out: list[Instruction]) -> None:
        ident = (source, computation, reason)
        if ident in self._rejection_seen:
            return
        self._rejection_seen.add(ident)
        self._rejections.append(Rejection(source, computation, reason, now))
        out.append(Reject(source, computation, reason))

    # --- registration ------------------------------------------------------------------------------------------

    def _register(self, source: str, spec: ComputationSpec, now: float, out: list[Instruction],
                  subscriber: str | None) -> None:
        name = spec.computation
        records = self._records
        existing = records.get(name)
        if existing is not None:
            if existing.spec != spec:
                self._reject(source, name,
                             f"computation {name!r} is already declared differently "
                             f"(by {existing.source!r}); names must be unique", now, out)
            return  # the same spec again: duplicate event or re-emission, nothing to do
        output = spec.output
        other = self._producer.get(output)
        if other is not None:
            self._reject(source, name, f"output {output!r} is already produced by computation {other.name!r}", now,
                         out)
            return
        consumers = self._consumers
        if output in consumers:  # only then can this spec close a cycle
            cycle = self._find_cycle(spec)
            if cycle is not None:
                self._reject(source, name, str(CycleError(name, cycle)), now, out)
                return
        subscribers = tuple(dict.fromkeys(spec.notify + (subscriber,))) if subscriber else spec.notify
        rec = ComputationRecord(spec, source, WAITING, now, subscribers)
        self._counts[WAITING] += 1
        records[name] = rec
        self._producer[output] = rec
        inputs = spec.inputs
        for key in inputs:
            readers = consumers.get(key)
            if readers is None:
                consumers[key] = name
            elif type(readers) is str:
                consumers[key] = [readers, name]
            else:
                readers.append(name)
        available = self._available
        if output in available:
            self._settle_existing(rec, now, out)
            return
        if self._failed_keys:
            failed = self._failed_keys
            upstream = next((k for k in inputs if k in failed and k not in available), None)
            if upstream is not None:
                culprit = failed[upstream]
                self._set_state(rec, UPSTREAM_FAILED)
                rec.finished_at = now
                rec.last_error = f"upstream computation {culprit!r} failed, so {upstream!r} will not be produced"
                out.append(Settle(name, UPSTREAM_FAILED, rec.last_error))
                self._announce(rec, out)
                self._fail_downstream(rec, now, out, culprit)
                return
        if self._plain_route and not spec.resources:
            rec.pool = self._plain_route  # no affinity pools, no resources: the general pool, no questions
        else:
            problem = self._choose_variant(rec)
            if problem is not None:
                self._fail(rec, now, out, problem)
                return
            if rec.alternative:
                rec.note = f"alternative {rec.alternative} ({rec.label}): no pool can run the ones before"
        missing = None
        for key in inputs:
            if key not in available:
                if missing is None:
                    missing = {key}
                else:
                    missing.add(key)
        if missing is None:
            self._make_ready(rec, now)
            return
        rec.missing = missing
        waiters = self._waiters
        for key in missing:
            waiting = waiters.get(key)
            if waiting is None:
                waiters[key] = rec
            elif type(waiting) is set:
                waiting.add(rec)
            else:
                waiters[key] = {waiting, rec}

    def _route(self, rec: ComputationRecord) -> str | None:
        """Assign the pool for the current variant; the reason when no pool could ever run it."""
        spec = rec.current
        name = self._affinity.get(spec.handler_type, self._general) if self._affinity else self._general
        if name is not None and not spec.resources:
            rec.pool = name
            return None
        if name is None:
            return (f"handler type {spec.handler_type!r} has no pool and there is no general pool "
                    f"(pools: {', '.join(self._pools)})")
        pool = self._pools[name].spec
        short = {r: a for r, a in (spec.resources or {}).items() if a > pool.capacity.get(r, 0.0)}
        if short:
            asked = ", ".join(f"{r}={a:g}" for r, a in sorted((spec.resources or {}).items()))
            has = ", ".join(f"{r}={a:g}" for r, a in sorted(pool.capacity.items())) or "nothing declared"
            return (f"computation {rec.label!r} asks for {asked}, more than pool {name!r} will ever have "
                    f"({has}); declare capacity with --resources or --pool")
        rec.pool = name
        return None

    def _retry_policy(self, spec: ComputationSpec) -> RetryPolicy:
        return RetryPolicy.from_spec(spec.retry) if spec.retry is not None else self.config.default_retry

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
            readers = self._consumers.get(key, ())
            for name in sorted((readers,) if type(readers) is str else readers):
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

    # --- time: retries, time-outs, deadlocks -------------------------------------------------------------------

    def _timer(self, due: float, kind: str, rec: ComputationRecord) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (due, self._seq, kind, rec.name, rec.attempts))

    def _timer_valid(self, timer: tuple[float, int, str, str, int]) -> bool:
        _, _, kind, name, attempt = timer
        rec = self._records[name]
        wanted = RETRYING if kind == "retry" else RUNNING
        return rec.state is wanted and rec.attempts == attempt

    def _fire_timers(self, now: float, out: list[Instruction]) -> None:
        while self._timers and self._timers[0][0] <= now:
            timer = heapq.heappop(self._timers)
            if not self._timer_valid(timer):
                continue
            _, _, kind, name, attempt = timer
            rec = self._records[name]
            if kind == "retry":
                rec.retry_at = None
                self._set_state(rec, WAITING)
                self._make_ready(rec, now)
            else:  # a time-out: the attempt failed; the executor must end it
                limit = rec.current.timeout_s
                out.append(Cancel(name, attempt, f"timed out after {limit:g}s"))
                self._failed_attempt(rec, f"timed out after {limit:g}s", False, now, out, release=True)

    def _check_deadlock(self, now: float, out: list[Instruction]) -> None:
        """Waiting work with nothing running, nothing due and nothing arriving for the grace period can only
        be waiting for inputs that nothing will produce. Those whose missing inputs have no producer fail;
        everything downstream of them is then upstream-failed."""
        grace = self.config.deadlock_grace_s
        if (grace is None or not self._counts[WAITING] or not self.is_quiescent()
                or now < self._last_activity + grace):
            return
        stuck = []
        for rec in self.waiting():
            orphans = sorted(k for k in rec.missing if k not in self._producer)
            if orphans:
                stuck.append((rec, orphans))
        if not stuck:  # every missing key has a waiting producer: a cycle, which registration prevents
            return
        explanation = "; ".join(f"{rec.name!r} waits for {', '.join(repr(k) for k in keys)}"
                                for rec, keys in stuck[:20])
        deadlock = Deadlock("missing-inputs", tuple(rec.name for rec, _ in stuck),
                            f"nothing ran or arrived for {grace:g}s and no registered computation produces "
                            f"what these wait for: {explanation}" + (" ..." if len(stuck) > 20 else ""))
        self._deadlocks.append(deadlock)
        out.append(deadlock)
        self._last_activity = now
        for rec, keys in stuck:
            if rec.state is not WAITING:
                continue  # upstream-failed by an earlier one in this loop
            self._unwait(rec)
            self._fail(rec, now, out, f"deadlock: no computation produces {', '.join(repr(k) for k in keys)} "
                                      f"and nothing arrived for {grace:g}s")

    # --- dispatch ----------------------------------------------------------------------------------------------

    def _dispatch(self, now: float, out: list[Instruction]) -> None:
        if self._paused:
            return
        for pool in self._pools.values():
            ready = pool.ready
            if not ready:
                continue
            running = pool.running
            limit = pool.limit
            if running >= limit:
                continue
            queued = pool.queued
            fifo = queued[ready[0]]
            slots = pool.spec.slots
            pool_name = pool.spec.name
            while running < limit:
                rec = fifo[0]
                if rec.state is not READY:  # settled while queued (its output appeared)
                    fifo.popleft()
                    if not fifo:
                        del queued[heappop(ready)]
                        if not ready:
                            break
                        fifo = queued[ready[0]]
                    continue
                spec = rec.current if rec.alternative else rec.spec
                if spec.timeout_s is not None and running >= slots:
                    break  # would wait in the executor's queue while its clock runs
                demand = spec.resources
                if demand:
                    used, capacity = pool.used, pool.spec.capacity
                    if any(used.get(r, 0.0) + a > capacity.get(r, 0.0) for r, a in demand.items()):
                        break  # strict priority: the head waits for capacity rather than being overtaken
                    for r, a in demand.items():
                        used[r] = used.get(r, 0.0) + a
                fifo.popleft()
                running += 1
                rec.state = RUNNING
                rec.attempts = attempt = rec.attempts + 1
                rec.variant_attempts += 1
                rec.started_at = now
                if spec.timeout_s is not None:
                    self._timer(now + spec.timeout_s, "timeout", rec)
                out.append(_new(Dispatch, (spec, attempt, pool_name)))
                if not fifo:
                    del queued[heappop(ready)]
                    if not ready:
                        break
                    fifo = queued[ready[0]]
            dispatched = running - pool.running
            if dispatched:
                pool.running = running
                counts = self._counts  # _set_state(rec, RUNNING) for each, inline
                counts[READY] -= dispatched
                counts[RUNNING] += dispatched
