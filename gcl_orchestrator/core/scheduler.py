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

ACTIVE = (State.WAITING, State.READY, State.RUNNING, State.RETRYING)
FINAL = (State.DONE, State.FAILED, State.UPSTREAM_FAILED)


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


@dataclass(slots=True)
class ComputationRecord:
    """What the core knows of one computation. Read it; only the Scheduler changes it."""

    spec: ComputationSpec
    source: str  # the object key (or other origin) whose GCL declared it
    state: State
    missing: set[str] = field(default_factory=set)
    attempts: int = 0  # all attempts, every alternative included; also the id of the current one
    variant_attempts: int = 0  # attempts of the current variant
    lost_attempts: int = 0  # attempts whose worker process died under them
    alternative: int = 0  # 0: the spec itself; i: spec.alternatives[i - 1]
    pool: str = ""
    last_error: str | None = None
    errors: list[str] = field(default_factory=list)
    note: str = ""
    produced_by: str | None = None  # name of the variant that produced the output
    registered_at: float = 0.0
    ready_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    retry_at: float | None = None
    blocked_on: tuple[str, ...] = ()  # keys a running handler waits for; its slot is lent meanwhile
    subscribers: tuple[str, ...] = ()  # handler types told when this computation ends (notify + ctx requests)

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
    ready: list[tuple[float, int, str]] = field(default_factory=list)  # (-aged priority, order, computation)
    running: int = 0
    used: dict[str, float] = field(default_factory=dict)


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
        self._pools = {p.name: _Pool(p) for p in config.pools}
        general = [p for p in config.pools if not p.handler_types]
        self._general = general[0].name if general else None
        self._affinity = {t: p.name for p in config.pools for t in p.handler_types}
        self._plain_route = self._general if not self._affinity else None
        self._ageing = config.ageing_per_s
        self._records: dict[str, ComputationRecord] = {}
        self._producer: dict[str, str] = {}  # output key -> computation
        self._consumers: dict[str, set[str]] = {}  # input key -> computations reading it
        self._waiters: dict[str, set[str]] = {}  # missing key -> waiting computations
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
        if not isinstance(events, list):
            events = list(events)
        out: list[Instruction] = []
        if events:
            self._last_activity = now
        records = self._records
        counts = self._counts
        running = State.RUNNING
        for ev in events:
            kind = type(ev)
            if kind is ComputationSucceeded:
                rec = records.get(ev.computation)
                if rec is not None and rec.state is running and rec.attempts == ev.attempt:
                    self._make_available(rec.spec.output, now, out)
            elif kind is ObjectAvailable:
                self._make_available(ev.key, now, out)
        for ev in events:
            kind = type(ev)
            if kind is ComputationSucceeded:
                rec = records.get(ev.computation)
                if rec is not None and rec.state is running and rec.attempts == ev.attempt:
                    self._release(rec)
                    counts[running] -= 1  # _set_state(rec, DONE), inline
                    counts[State.DONE] += 1
                    rec.state = State.DONE
                    rec.finished_at = now
                    rec.produced_by = rec.label
                    out.append(Settle(rec.spec.computation, State.DONE, ""))
                    if rec.subscribers:
                        self._announce(rec, out)
                    if ev.specs:
                        output = rec.spec.output
                        for spec in ev.specs:
                            self._register(output, spec, now, out, ev.subscriber)
            elif kind is ObjectAvailable:
                if ev.gcl_error:
                    self._reject(ev.key, None, ev.gcl_error, now, out)
                self._register_all(ev.key, ev.specs, now, out)
            elif kind is SpecsSubmitted:
                self._register_all(ev.source, ev.specs, now, out, ev.subscriber)
            elif kind is ComputationFailed:
                if self._is_current(ev.computation, ev.attempt):
                    rec = self._records[ev.computation]
                    if ev.worker_lost:
                        rec.lost_attempts += 1
                    self._failed_attempt(rec, ev.error, ev.permanent, now, out, release=True)
            elif kind is ComputationBlocked:
                if self._is_current(ev.computation, ev.attempt):
                    self._block(self._records[ev.computation], ev.keys, out)
            elif kind is ComputationResumed:
                rec = self._records.get(ev.computation)
                if rec is not None and self._is_current(ev.computation, ev.attempt) and rec.blocked_on:
                    rec.blocked_on = ()
                    self._pools[rec.pool].running += 1  # may exceed the slots until someone finishes
            else:
                raise TypeError(f"the scheduler does not handle {type(ev).__name__}")
        if self._timers and self._timers[0][0] <= now:
            self._fire_timers(now, out)
        self._dispatch(now, out)
        if self.config.deadlock_grace_s is not None and counts[State.WAITING]:
            self._check_deadlock(now, out)
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
        name = self._producer.get(key)
        return self._records[name].state if name else None

    def is_quiescent(self) -> bool:
        """Nothing ready, running or due for a retry: only new events can make progress."""
        return (self._counts[State.RUNNING] == 0 and self._counts[State.READY] == 0
                and self._counts[State.RETRYING] == 0)

    def next_wakeup(self) -> float | None:
        """When time alone will change something (a retry, a time-out, the deadlock grace), if ever."""
        while self._timers and not self._timer_valid(self._timers[0]):
            heapq.heappop(self._timers)
        due = self._timers[0][0] if self._timers else None
        grace = self.config.deadlock_grace_s
        if grace is not None and self._counts[State.WAITING] and self.is_quiescent():
            deadline = self._last_activity + grace
            due = deadline if due is None else min(due, deadline)
        return due

    def waiting(self) -> list[ComputationRecord]:
        """Waiting computations with what each lacks (a full scan: for the end of a run)."""
        return [r for r in self._records.values() if r.state is State.WAITING]

    # --- state changes -----------------------------------------------------------------------------------------

    def _is_current(self, name: str, attempt: int) -> bool:
        rec = self._records.get(name)
        return rec is not None and rec.state is State.RUNNING and rec.attempts == attempt

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
        resources = rec.current.resources
        if resources:
            for name, amount in resources.items():
                pool.used[name] = pool.used.get(name, 0.0) - amount

    def _announce(self, rec: ComputationRecord, out: list[Instruction]) -> None:
        for handler_type in rec.subscribers:
            out.append(Notify(handler_type, Completion(rec.name, rec.state, rec.spec.output, rec.attempts,
                                                       rec.last_error if rec.state is not State.DONE else None,
                                                       rec.produced_by)))

    def _failed_attempt(self, rec: ComputationRecord, error: str, permanent: bool, now: float,
                        out: list[Instruction], release: bool) -> None:
        """One attempt failed: retry after a delay, else the next alternative, else fail for good."""
        if release:
            self._release(rec)
        rec.last_error = error
        rec.errors.append(f"attempt {rec.attempts} ({rec.label}): {error}")
        policy = self._retry_policy(rec.spec)
        granted = policy.max_attempts + min(rec.lost_attempts, self.config.lost_worker_retries)
        if not permanent and rec.variant_attempts < granted:
            delay = policy.delay(rec.variant_attempts, self._rng)
            self._set_state(rec, State.RETRYING)
            rec.retry_at = now + delay
            self._timer(rec.retry_at, "retry", rec)
            return
        if rec.alternative < len(rec.spec.alternatives):
            self._set_state(rec, State.WAITING)  # leaves WAITING at once: the inputs are there
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
            rec.errors.append(problem)
            if rec.alternative >= len(rec.spec.alternatives):
                return problem
            rec.alternative += 1

    def _fail(self, rec: ComputationRecord, now: float, out: list[Instruction], error: str) -> None:
        self._set_state(rec, State.FAILED)
        rec.finished_at = now
        rec.last_error = error
        out.append(Settle(rec.name, State.FAILED, error))
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
            for name in sorted(self._waiters.pop(key, ())):
                rec = self._records[name]
                if rec.state is not State.WAITING:
                    continue
                self._unwait(rec)
                self._set_state(rec, State.UPSTREAM_FAILED)
                rec.finished_at = now
                rec.last_error = f"upstream computation {culprit!r} failed, so {key!r} will not be produced"
                out.append(Settle(rec.name, State.UPSTREAM_FAILED, rec.last_error))
                self._announce(rec, out)
                queue.append((rec.spec.output, culprit))

    def _unwait(self, rec: ComputationRecord) -> None:
        for key in rec.missing:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(rec.name)
                if not waiters:
                    del self._waiters[key]
        rec.missing.clear()

    def _make_available(self, key: str, now: float, out: list[Instruction]) -> None:
        if key in self._available:
            return
        self._available.add(key)
        self._failed_keys.pop(key, None)
        name = self._producer.get(key)
        if name is not None:
            rec = self._records[name]
            if rec.state in (State.WAITING, State.READY, State.RETRYING):
                # Someone else wrote the output: the computation is done without running (again).
                self._settle_existing(rec, now, out)
        for name in self._waiters.pop(key, ()):
            rec = self._records[name]
            rec.missing.discard(key)
            if not rec.missing and rec.state is State.WAITING:
                self._make_ready(rec, now)

    def _settle_existing(self, rec: ComputationRecord, now: float, out: list[Instruction]) -> None:
        self._unwait(rec)
        self._set_state(rec, State.DONE)
        rec.note = "output already present"
        rec.finished_at = now
        out.append(Settle(rec.name, State.DONE, f"output {rec.spec.output!r} already present; not run"))
        self._announce(rec, out)

    def _make_ready(self, rec: ComputationRecord, now: float) -> None:
        counts = self._counts  # _set_state, inline: this runs once per computation
        counts[rec.state] -= 1
        counts[State.READY] += 1
        rec.state = State.READY
        rec.ready_at = now
        self._seq += 1
        # Ageing: effective priority p + rate * (t - ready_at) orders like p - rate * ready_at at any time t,
        # so a static heap key ages every entry without touching it.
        key = rec.current.priority - self._ageing * now
        heapq.heappush(self._pools[rec.pool].ready, (-key, self._seq, rec.name))

    def _reject(self, source: str, computation: str | None, reason: str, now: float,
                out: list[Instruction]) -> None:
        ident = (source, computation, reason)
        if ident in self._rejection_seen:
            return
        self._rejection_seen.add(ident)
        self._rejections.append(Rejection(source, computation, reason, now))
        out.append(Reject(source, computation, reason))

    # --- registration ------------------------------------------------------------------------------------------

    def _register_all(self, source: str, specs: Iterable[ComputationSpec], now: float,
                      out: list[Instruction], subscriber: str | None = None) -> None:
        for spec in specs:
            self._register(source, spec, now, out, subscriber)

    def _register(self, source: str, spec: ComputationSpec, now: float, out: list[Instruction],
                  subscriber: str | None) -> None:
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
        if self._consumers.get(spec.output):  # only then can this spec close a cycle
            cycle = self._find_cycle(spec)
            if cycle is not None:
                self._reject(source, spec.computation, str(CycleError(spec.computation, cycle)), now, out)
                return
        name = spec.computation
        subscribers = tuple(dict.fromkeys(spec.notify + (subscriber,))) if subscriber else spec.notify
        rec = ComputationRecord(spec, source, State.WAITING, registered_at=now, subscribers=subscribers)
        self._counts[State.WAITING] += 1
        self._records[name] = rec
        self._producer[spec.output] = name
        consumers = self._consumers
        for key in spec.inputs:
            readers = consumers.get(key)
            if readers is None:
                consumers[key] = {name}
            else:
                readers.add(name)
        if spec.output in self._available:
            self._settle_existing(rec, now, out)
            return
        upstream = next((k for k in spec.inputs if k in self._failed_keys and k not in self._available),
                        None) if self._failed_keys else None
        if upstream is not None:
            culprit = self._failed_keys[upstream]
            self._set_state(rec, State.UPSTREAM_FAILED)
            rec.finished_at = now
            rec.last_error = f"upstream computation {culprit!r} failed, so {upstream!r} will not be produced"
            out.append(Settle(rec.name, State.UPSTREAM_FAILED, rec.last_error))
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
        available = self._available
        missing = {k for k in spec.inputs if k not in available}
        if missing:
            rec.missing = missing
            waiters = self._waiters
            for key in missing:
                if key in waiters:
                    waiters[key].add(spec.computation)
                else:
                    waiters[key] = {spec.computation}
        else:
            self._make_ready(rec, now)

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

    # --- time: retries, time-outs, deadlocks -------------------------------------------------------------------

    def _timer(self, due: float, kind: str, rec: ComputationRecord) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (due, self._seq, kind, rec.name, rec.attempts))

    def _timer_valid(self, timer: tuple[float, int, str, str, int]) -> bool:
        _, _, kind, name, attempt = timer
        rec = self._records[name]
        wanted = State.RETRYING if kind == "retry" else State.RUNNING
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
                self._set_state(rec, State.WAITING)
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
        if (grace is None or not self._counts[State.WAITING] or not self.is_quiescent()
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
            if rec.state is not State.WAITING:
                continue  # upstream-failed by an earlier one in this loop
            self._unwait(rec)
            self._fail(rec, now, out, f"deadlock: no computation produces {', '.join(repr(k) for k in keys)} "
                                      f"and nothing arrived for {grace:g}s")

    # --- dispatch ----------------------------------------------------------------------------------------------

    def _dispatch(self, now: float, out: list[Instruction]) -> None:
        if self._paused:
            return
        prefetch = self.config.prefetch
        counts = self._counts
        for pool in self._pools.values():
            slots = pool.spec.slots
            while pool.ready and pool.running < slots * (1 + prefetch):
                _, _, name = pool.ready[0]
                rec = self._records[name]
                if rec.state is not State.READY:
                    heapq.heappop(pool.ready)  # settled while queued (its output appeared)
                    continue
                spec = rec.current
                if pool.running >= slots and spec.timeout_s is not None:
                    break  # would wait in the executor's queue while its clock runs
                demand = spec.resources
                if demand:
                    if any(pool.used.get(r, 0.0) + a > pool.spec.capacity.get(r, 0.0) for r, a in demand.items()):
                        break  # strict priority: the head waits for capacity rather than being overtaken
                    for r, a in demand.items():
                        pool.used[r] = pool.used.get(r, 0.0) + a
                heapq.heappop(pool.ready)
                pool.running += 1
                counts[State.READY] -= 1  # _set_state(rec, RUNNING), inline
                counts[State.RUNNING] += 1
                rec.state = State.RUNNING
                rec.attempts += 1
                rec.variant_attempts += 1
                rec.started_at = now
                if spec.timeout_s is not None:
                    self._timer(now + spec.timeout_s, "timeout", rec)
                out.append(Dispatch(spec, rec.attempts, pool.spec.name))
