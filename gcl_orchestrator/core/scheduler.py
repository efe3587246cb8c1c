"""The scheduling core: the global graph, changed only by `handle(events, now) -> instructions`.

No I/O, no clock, no threads; randomness (retry jitter) comes from an injected generator. Every change of a
computation's state goes through `_transition`, which checks it against `TRANSITIONS` and does what leaving the
old state and entering the new one entail; `validate_state()` checks every invariant of the tables. Cost per
event is what the event touches (the waiters of one key, the specs it carries, one pool's queue), never the size
of the graph; only the deadlock check scans, and only after the graph has been quiet for the grace period.

How to read it: `handle` takes a batch; `_apply` routes each event to one `_on_*` method; those change state only
through `_transition`, whose `_enter_*` methods carry the consequences (a ready queue entry, a Settle, the wave of
upstream failures); `_dispatch` then starts what fits.
"""
from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import AbstractSet, Collection, Iterable, Iterator, Mapping, NamedTuple

from ..errors import CycleError
from ..model import (
    AttemptFailed,
    Cancel,
    Completion,
    ComputationBlocked,
    ComputationFailed,
    ComputationResumed,
    ComputationSpec,
    ComputationSucceeded,
    Deadlock,
    Dispatch,
    Expedite,
    Instruction,
    KeyOutcome,
    Notify,
    ObjectAvailable,
    ObjectRemoved,
    PoolSpec,
    ReadGcl,
    Reject,
    Reply,
    Stale,
    RerunRequested,
    AttemptsRestored,
    CancelRequested,
    CapacityChanged,
    RetryPolicy,
    Settle,
    SpecsSubmitted,
    Stalled,
    State,
    SubmitAnswer,
    WaitOver,
    run_id,
    variant,
    variant_label,
)

# `State.DONE` is a descriptor call on CPython 3.11; module constants are plain lookups.
WAITING, READY, RUNNING, RETRYING = State.WAITING, State.READY, State.RUNNING, State.RETRYING
DONE, FAILED, UPSTREAM_FAILED, RETIRED = State.DONE, State.FAILED, State.UPSTREAM_FAILED, State.RETIRED
FINAL = (DONE, FAILED, UPSTREAM_FAILED, RETIRED)
NEW = None  # the "state" of a computation before it is registered
# What most records hold most of the time, shared: a record gets a set (or dict) of its own only when it has
# something to put in it (empty containers were two fifths of a settled record's memory)
NOTHING: frozenset[str] = frozenset()
NONE_DELETED: Mapping[str, None] = MappingProxyType({})

# Every state change the core makes, and nothing else. The commit is the fact: an output that appears settles
# its producer as done from any state, failed ones included (their dependents then come back). A run that is done
# goes back to waiting or ready when it is stale (an input has a new version, its output was deleted, a rerun was
# asked for); a failed one too, when an input has a new version. A computation that no object declares any more
# is retired, from any state. At a restart a ready computation whose next attempt the journal says is not due yet
# waits out its retry delay. A cancel fails a computation that has not settled, from any state.
TRANSITIONS: frozenset[tuple[State | None, State]] = frozenset({
    (NEW, WAITING), (NEW, READY), (NEW, DONE), (NEW, FAILED), (NEW, UPSTREAM_FAILED),
    (WAITING, READY), (WAITING, DONE), (WAITING, FAILED), (WAITING, UPSTREAM_FAILED),
    (READY, RUNNING), (READY, DONE), (READY, WAITING), (READY, RETRYING), (READY, FAILED),
    (RUNNING, DONE), (RUNNING, RETRYING), (RUNNING, READY), (RUNNING, WAITING), (RUNNING, FAILED),
    (RETRYING, READY), (RETRYING, WAITING), (RETRYING, DONE), (RETRYING, FAILED),
    (DONE, WAITING), (DONE, READY),
    (FAILED, DONE), (FAILED, WAITING), (FAILED, READY),
    (UPSTREAM_FAILED, WAITING), (UPSTREAM_FAILED, READY), (UPSTREAM_FAILED, DONE), (UPSTREAM_FAILED, FAILED),
    *((state, RETIRED) for state in (WAITING, READY, RUNNING, RETRYING, DONE, FAILED, UPSTREAM_FAILED)),
})


class Version(NamedTuple):
    """What the core knows of an available key: the store's stamp for it (what `replace` compares), its
    identity (model.identity: bytes and GCL; None when not known), the tick of the clock at which this identity
    arrived, and the run that computed it, as `seq:run_id` (None: not written by a run)."""

    stamp: str | None
    identity: str | None
    changed_at: int
    run: str | None = None


class InvariantError(AssertionError):
    """The core's tables disagree with each other: a bug in the core, never a user error."""


@dataclass(frozen=True)
class SchedulerConfig:
    """Pools (the first one without handler types is the general pool); ageing of ready work in priority points
    per second; how long the graph must be quiet before work waiting for inputs nothing produces is dealt with
    (None: never), and how: `"fail"` (a batch run, `--until-idle`) or `"wait"` (a service: it is reported as
    stalled and still runs when its inputs arrive); the retry policy for specs that declare none; how many
    attempts lost with their worker process (a crash, a kill, the OOM killer) are granted on top of any policy;
    attempts per slot dispatched beyond a pool's slots for the executor to queue (Executor.prefetch; never work
    with a time-out, whose clock starts at dispatch); and how long an attempt may still run after its output
    appeared before it is cancelled (it is usually the one that wrote it, and about to report)."""

    pools: tuple[PoolSpec, ...] = (PoolSpec("general", 1),)
    ageing_per_s: float = 1.0
    deadlock_grace_s: float | None = 60.0
    missing_inputs: str = "fail"
    default_retry: RetryPolicy = RetryPolicy()
    lost_worker_retries: int = 2
    prefetch: int = 0
    commit_grace_s: float = 5.0


class ComputationRecord:
    """What the core knows of one computation. Read it; only the Scheduler changes it."""

    __slots__ = ("spec", "current", "alternative", "source", "state", "missing", "attempts", "variant_attempts",
                 "lost_attempts", "pool", "running_attempt", "lent", "blocked_on", "wait_id", "blocked_at",
                 "awaited", "last_error", "errors", "note", "produced_by", "registered_at",
                 "ready_at", "started_at", "finished_at", "retry_at", "subscribers", "stalled", "run_seq",
                 "run_started_at", "stale", "forced", "from_deleted", "held_inputs", "cancelled")

    def __init__(self, spec: ComputationSpec, source: str, registered_at: float, subscribers: tuple[str, ...]):
        self.spec = spec
        self.current = spec  # the variant being tried: the spec itself, or an alternative applied to it
        self.alternative = 0  # 0: the spec itself; i: spec.alternatives[i - 1]
        self.source = source  # the object key (or other origin) whose GCL declared it
        self.state: State | None = NEW
        self.missing: AbstractSet[str] = NOTHING  # inputs not yet available, while WAITING (a set of its own)
        self.attempts = 0  # every attempt, alternatives included; also the number of the latest one
        self.variant_attempts = 0  # attempts of the current variant
        self.lost_attempts = 0  # attempts whose worker process died under them
        self.pool = ""
        self.running_attempt: int | None = None  # the attempt holding a slot: dispatched, not yet reported
        self.lent = False  # that attempt runs on a slot lent by a waiting handler
        self.blocked_on: AbstractSet[str] = NOTHING  # keys that attempt waits for (its slot is lent meanwhile)
        self.wait_id = 0
        self.blocked_at = 0.0
        self.awaited = False  # a waiting handler needs its output: it may run on a lent slot
        self.last_error: str | None = None
        self.errors: tuple[str, ...] = ()  # every failed attempt and unplaceable variant, oldest first
        self.note = ""
        self.produced_by: str | None = None  # name of the variant that produced the output
        self.registered_at = registered_at
        self.ready_at: float | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.retry_at: float | None = None
        self.subscribers = subscribers  # handler types told when it ends (notify + ctx requests)
        self.stalled = False
        self.run_seq = 1  # which run of this computation the current one is; a rerun is the next
        self.run_started_at = 1  # the first attempt of the current run: reports of earlier ones are of old runs
        self.stale = False  # an input changed while its attempt ran: it runs again once that one reports
        self.forced = False  # a rerun was asked for, downstream included: its consumers run again after it
        # inputs deleted since its output was computed, in the order deleted (a dict: a join's parts may all go)
        self.from_deleted: Mapping[str, None] = NONE_DELETED
        # How many of its inputs are held for a new run (in Scheduler._pending): counted as keys are held and
        # released, so that a join over a hundred thousand parts knows in one step whether it still reads one.
        self.held_inputs = 0
        self.cancelled = False  # failed because someone cancelled it (until it runs again)

    @property
    def name(self) -> str:
        return self.spec.computation

    @property
    def label(self) -> str:
        """The name of the variant being tried."""
        return variant_label(self.spec, self.alternative)

    def __repr__(self) -> str:
        return f"<ComputationRecord {self.name!r} {self.state}>"


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
    # (negated aged priority) and a FIFO of computations per key. Entries of records that left READY are
    # skipped when they come up.
    ready: list[float] = field(default_factory=list)
    queued: dict[float, deque[ComputationRecord]] = field(default_factory=dict)
    awaited: deque[ComputationRecord] = field(default_factory=deque)  # ready work a waiting handler needs
    expedite: deque[ComputationRecord] = field(default_factory=deque)  # dispatched work it needs, maybe queued
    running: int = 0  # attempts on its own slots (blocked ones included: they keep their slot's place)
    lent_out: int = 0  # slots lent by blocked attempts
    on_lent: int = 0  # attempts running on lent slots
    used: dict[str, float] = field(default_factory=dict)  # resources held by its attempts, blocked ones too
    limit: int = 0  # attempts it may hold on its own slots: the slots, plus what the executor queues ahead
    # The most each resource has been offered (a cluster's pools shrink and grow): what registration refuses by,
    # so that work asking for what left with a worker waits for it to come back instead of failing.
    ceiling: dict[str, float] = field(default_factory=dict)
    held_most: int = 0  # the highest `limit` it has had: attempts dispatched before a shrink still count


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
        if config.missing_inputs not in ("fail", "wait"):
            raise ValueError("missing_inputs is 'fail' or 'wait'")
        self.config = config
        self._rng = rng or random.Random(0)
        self._pools = {p.name: _Pool(p, limit=p.slots * (1 + config.prefetch), ceiling=dict(p.capacity),
                                     held_most=p.slots * (1 + config.prefetch)) for p in config.pools}
        general = [p for p in config.pools if not p.handler_types]
        self._general = general[0].name if general else None
        self._affinity = {t: p.name for p in config.pools for t in p.handler_types}
        self._records: dict[str, ComputationRecord] = {}
        self._producer: dict[str, ComputationRecord] = {}  # output key -> the computation producing it
        self._consumers: dict[str, list[ComputationRecord]] = {}  # input key -> computations reading it
        # Ordered sets (dicts with None values), so that what a key wakes moves on in registration order.
        self._waiters: dict[str, dict[ComputationRecord, None]] = {}  # missing key -> WAITING computations
        self._blocked_waiters: dict[str, dict[ComputationRecord, None]] = {}  # key -> blocked attempts
        self._blocked: dict[str, ComputationRecord] = {}  # computations whose running attempt is blocked
        self._versions: dict[str, Version] = {}  # available key -> what is known of its current version
        self._clock = 0  # ticks with every new identity of any key: staleness compares ticks
        self._declared: dict[str, set[str]] = {}  # object key -> names of the computations its GCL declares
        self._deleted: dict[str, Version] = {}  # deleted key -> its last version, to compare a re-upload with
        # Outputs being computed again while their previous version is still there: what reads them waits for
        # the new run, so that a change upstream makes each computation run once, in order.
        self._pending: set[str] = set()
        self._failed_keys: dict[str, str] = {}  # output of a failed computation -> the computation to blame
        self._gcl_unread: set[str] = set()  # available keys whose metadata has not been read yet
        self._failing: deque[ComputationRecord] = deque()  # failed, their dependents not yet upstream-failed
        self._timers: list[tuple[float, int, str, str, int]] = []  # (due, order, kind, computation, attempt)
        self._seq = 0
        self._counts = {s: 0 for s in State}
        self._outstanding = 0  # attempts holding a slot, in all pools
        self._rejections: list[Rejection] = []
        self._rejection_seen: set[tuple[str, str | None, str]] = set()
        self._deadlocks: list[Deadlock] = []
        self._last_activity = 0.0
        self._paused = False
        # When a list: every state change, as (computation, new state, time), appended in order, for the runtime
        # to take (an event stream of the HTTP API). None: not recorded, at no cost.
        self.changes: list[tuple[str, State, float]] | None = None

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
        out: list[Instruction] = []
        events = events if type(events) is list else list(events)
        if events:
            self._last_activity = now
            self._apply(events, now, out)
        if self._timers and self._timers[0][0] <= now:
            self._fire_timers(now, out)
        self._dispatch(now, out)
        if (self._grace is not None and now >= self._last_activity + self._grace
                and (self._counts[WAITING] or self._blocked)):
            self._check_deadlock(now, out)
        return out

    @property
    def _grace(self) -> float | None:
        return self.config.deadlock_grace_s

    def _apply(self, events: list[object], now: float, out: list[Instruction]) -> None:
        # (source, specs, subscriber, request, declares): `declares` when `source` is an object whose GCL is
        # all there is of it, so that a new version of it re-declares (replaces, retires) what it declared
        registrations: list[tuple[str, tuple[ComputationSpec, ...], str | None, tuple | None, bool]] = []
        restored: list[AttemptsRestored] = []
        for ev in events:
            kind = type(ev)
            if kind is ComputationSucceeded:
                self._on_success(ev, now, out, registrations)  # type: ignore[arg-type]
            elif kind is ObjectAvailable:
                self._on_object(ev, now, out, registrations)  # type: ignore[arg-type]
            elif kind is ComputationFailed:
                self._on_failure(ev, now, out)  # type: ignore[arg-type]
            elif kind is SpecsSubmitted:
                registrations.append((ev.source, ev.specs, ev.subscriber, ev.request, False))  # type: ignore[attr-defined]
            elif kind is ComputationBlocked:
                self._on_blocked(ev, now, out)  # type: ignore[arg-type]
            elif kind is ComputationResumed:
                rec = self._records.get(ev.computation)  # type: ignore[attr-defined]
                if rec is not None and rec.running_attempt == ev.attempt and rec.blocked_on:  # type: ignore[attr-defined]
                    self._unblock(rec)
            elif kind is ObjectRemoved:
                self._on_removed(ev.key, now, out)  # type: ignore[attr-defined]
            elif kind is RerunRequested:
                self._on_rerun(ev, now, out)  # type: ignore[arg-type]
            elif kind is CancelRequested:
                self._on_cancel(ev, now, out)  # type: ignore[arg-type]
            elif kind is AttemptsRestored:
                restored.append(ev)  # once the specs of this batch are registered
            elif kind is CapacityChanged:
                self._resize(ev)  # type: ignore[arg-type]
            else:
                raise TypeError(f"the scheduler does not handle {type(ev).__name__}")
        for source, specs, subscriber, request, declares in registrations:
            if declares:
                self._declare(source, specs, now, out, subscriber)
                continue
            if request is None:
                for spec in specs:
                    self._register(source, spec, now, out, subscriber)
                continue
            accepted, rejected = [], []
            for spec in specs:
                reason = self._register(source, spec, now, out, subscriber)
                if reason is None:
                    accepted.append((spec.computation, self._records[spec.computation].state.value))
                else:
                    rejected.append((spec.computation, reason))
            name, attempt, request_id = request
            out.append(Reply(name, attempt, SubmitAnswer(request_id, tuple(accepted), tuple(rejected))))
        for ev in restored:
            self._restore_attempts(ev, now, out)

    # --- events ------------------------------------------------------------------------------------------------

    def _on_object(self, ev: ObjectAvailable, now: float, out: list[Instruction], registrations: list) -> None:
        key = ev.key
        known = self._versions.get(key)
        if known is not None:
            if ev.specs is None and self.expects_report(key):
                return  # a new version being written by its running producer, whose report will say what it is
            if ev.specs is not None and key in self._gcl_unread:
                self._gcl_unread.discard(key)  # the GCL that was not read when the object appeared
                self._versions[key] = known._replace(identity=ev.identity or known.identity,
                                                     run=ev.run or known.run)
            elif ev.identity is not None and known.identity is not None:  # what it is, not which write it was
                if ev.identity == known.identity:
                    self._versions[key] = known._replace(stamp=ev.etag or known.stamp)  # the same again
                    return
                self._new_version(key, ev.etag, ev.identity, ev.run, now, out)
            elif ev.etag is None or ev.etag == known.stamp:
                if known.identity is None and ev.identity is not None:  # the same version, better known now
                    self._versions[key] = known._replace(identity=ev.identity)
                return  # a duplicate notification: this version is known
            else:
                self._new_version(key, ev.etag, ev.identity, ev.run, now, out)
        else:
            self._versions[key] = Version(ev.etag, ev.identity, self._tick(), ev.run)
            self._make_available(key, now, out)
            gone = self._deleted.pop(key, None)
            if gone is not None:  # uploaded again after it was deleted
                self._restored(key, gone.identity is not None and gone.identity == ev.identity, now, out)
            if ev.specs is None:
                self._gcl_unread.add(key)
                rec = self._producer.get(key)
                if rec is None or rec.running_attempt is None:
                    out.append(ReadGcl(key))  # no report will carry it
        if ev.gcl_error:
            self._reject(key, None, ev.gcl_error, now, out)
        if ev.specs or (ev.specs is not None and key in self._declared):  # () re-declares: nothing now
            registrations.append((key, ev.specs, None, None, True))

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _new_version(self, key: str, stamp: str | None, identity: str | None, run: str | None, now: float,
                     out: list[Instruction]) -> None:
        """A known key holds other bytes or GCL now: whatever read the old version is stale."""
        self._versions[key] = Version(stamp, identity, self._tick(), run)
        rec = self._producer.get(key)
        if rec is not None and rec.state is DONE and run is None:
            rec.note = "its output was replaced from outside; what reads it runs again"
        for consumer in list(self._consumers.get(key, ())):
            self._input_changed(consumer, key, now, out)

    def _input_changed(self, rec: ComputationRecord, key: str, now: float, out: list[Instruction]) -> None:
        state = rec.state
        if state is DONE or state is FAILED:
            self._rerun(rec, f"its input {key!r} has a new version", now, out)
        elif state is RUNNING:
            rec.stale = True  # its attempt may have read the old version: it runs again after reporting

    def _on_success(self, ev: ComputationSucceeded, now: float, out: list[Instruction], registrations: list) -> None:
        rec = self._records.get(ev.computation)
        if rec is None or not 0 < ev.attempt <= rec.attempts or rec.state is RETIRED:
            return  # not an attempt this core dispatched, or of a computation no longer declared
        if rec.running_attempt == ev.attempt:
            self._end_attempt(rec)
        elif ev.attempt < rec.run_started_at:
            return  # a late report of an earlier run: the current run replaces whatever it wrote
        elif rec.running_attempt is not None:
            # An earlier attempt of this run committed (it reports late, after a time-out): the attempt running
            # now can only find the output taken.
            out.append(Cancel(rec.name, rec.running_attempt, f"attempt {ev.attempt} committed the output"))
            self._end_attempt(rec)
        output = rec.spec.output
        known = self._versions.get(output)
        changed = known is None or not (ev.output_etag == known.stamp or (
            ev.output_identity is not None and ev.output_identity == known.identity))
        if known is None:
            self._versions[output] = Version(ev.output_etag, ev.output_identity, self._tick(), ev.run)
        if rec.state is not DONE:  # from any state: the commit is the fact
            self._settle(rec, now, out, committed_by=ev.attempt)
        if known is None:
            self._make_available(output, now, out)
            gone = self._deleted.pop(output, None)
            if gone is not None:  # computed again after it was deleted
                self._restored(output, gone.identity is not None and gone.identity == ev.output_identity, now, out)
        elif changed:
            self._new_version(output, ev.output_etag, ev.output_identity, ev.run, now, out)
        else:  # the run wrote what was there (early cut-off): what reads it need not run again
            self._versions[output] = known._replace(stamp=ev.output_etag or known.stamp, run=ev.run or known.run,
                                                    identity=known.identity or ev.output_identity)
        if output in self._pending:
            self._release(output, now, out)
        if rec.forced:
            rec.forced = False
            for consumer in list(self._consumers.get(output, ())):
                if consumer.forced and consumer.state is DONE:
                    self._rerun(consumer, f"a rerun of {rec.name!r} and what follows it was asked for", now, out)
        if rec.stale:
            rec.stale = False
            self._rerun(rec, "an input changed while it ran", now, out)
        if known is not None and not changed and ev.specs is None:
            return  # it found the output already there, and that object's own notification says what follows
        self._gcl_unread.discard(output)
        if ev.gcl_error:
            self._reject(output, None, ev.gcl_error, now, out)
        if ev.specs or (ev.specs is not None and output in self._declared):
            registrations.append((output, ev.specs, ev.subscriber, None, True))

    def _on_failure(self, ev: ComputationFailed, now: float, out: list[Instruction]) -> None:
        rec = self._records.get(ev.computation)
        if rec is None or rec.running_attempt != ev.attempt:
            return  # a late or repeated report of an attempt that no longer counts
        self._end_attempt(rec)
        if rec.stale:  # an input changed while it ran: the new version may well not fail
            rec.stale = False
            self._rerun(rec, f"an input changed while attempt {ev.attempt} ran (it failed: {ev.error[:200]})",
                        now, out)
            return
        if rec.spec.output in self._versions:  # its output appeared while it ran: that settles it
            self._settle(rec, now, out, why=f"its output appeared while attempt {ev.attempt} ran, which then "
                                            f"failed ({ev.error[:200]}); not retried")
            return
        if ev.worker_lost:
            rec.lost_attempts += 1
        self._failed_attempt(rec, ev.error, ev.permanent, now, out)

    def _on_blocked(self, ev: ComputationBlocked, now: float, out: list[Instruction]) -> None:
        rec = self._records.get(ev.computation)
        if rec is None or rec.running_attempt != ev.attempt or rec.blocked_on:
            return
        failures = self._key_failures(ev.keys)
        pending = {k for k in ev.keys if k not in self._versions}
        if failures or not pending:
            out.append(Reply(rec.name, ev.attempt, WaitOver(ev.wait_id, failures)))
            return
        rec.blocked_on = pending
        rec.wait_id = ev.wait_id
        rec.blocked_at = now
        self._blocked[rec.name] = rec
        for key in sorted(pending):
            self._blocked_waiters.setdefault(key, {})[rec] = None
            producer = self._producer.get(key)
            if producer is not None:
                self._mark_awaited(producer)
        self._pools[rec.pool].lent_out += 1  # its slot goes to the work it waits for; its resources stay held

    def _key_failures(self, keys: Iterable[str]) -> tuple[KeyOutcome, ...]:
        """Keys that will never come: their producer failed or was upstream-failed."""
        failures = []
        for key in keys:
            if key in self._versions:
                continue
            producer = self._producer.get(key)
            if producer is not None and producer.state in (FAILED, UPSTREAM_FAILED):
                failures.append(KeyOutcome(key, producer.name, producer.state.value, producer.last_error))
        return tuple(failures)

    def _mark_awaited(self, rec: ComputationRecord) -> None:
        """A waiting handler needs `rec`'s output, so `rec` and everything it waits for may use lent slots."""
        stack = [rec]
        while stack:
            rec = stack.pop()
            if rec.awaited:
                continue
            rec.awaited = True
            if rec.state is READY:
                self._pools[rec.pool].awaited.append(rec)
            elif rec.state is RUNNING and not rec.lent:
                self._pools[rec.pool].expedite.append(rec)  # dispatched ahead, perhaps still in a queue
            elif rec.state is WAITING:
                stack.extend(p for k in rec.missing if (p := self._producer.get(k)) is not None)

    def _unblock(self, rec: ComputationRecord) -> None:
        """The attempt stops waiting and takes its slot back."""
        _unindex(self._blocked_waiters, rec.blocked_on, rec)
        rec.blocked_on = NOTHING
        del self._blocked[rec.name]
        self._pools[rec.pool].lent_out -= 1

    def _wake(self, rec: ComputationRecord, out: list[Instruction], failures: tuple[KeyOutcome, ...] = (),
              deadlock: str | None = None) -> None:
        out.append(Reply(rec.name, rec.running_attempt or rec.attempts, WaitOver(rec.wait_id, failures, deadlock)))
        self._unblock(rec)

    # --- the one door for state changes ------------------------------------------------------------------------

    def _transition(self, rec: ComputationRecord, new: State, now: float, out: list[Instruction],
                    detail: str = "") -> None:
        old = rec.state
        if (old, new) not in TRANSITIONS:
            raise InvariantError(f"computation {rec.name!r} cannot go from {old} to {new}")
        if old is WAITING:
            self._unwait(rec)
        elif old is RETRYING:
            rec.retry_at = None  # its timer is void now (timers are checked when they fire)
        elif old is FAILED:
            rec.cancelled = False  # it runs again, or its output came after all
        if old is not NEW:
            self._counts[old] -= 1
        self._counts[new] += 1
        rec.state = new
        if self.changes is not None:
            self.changes.append((rec.spec.computation, new, now))
        if new is READY:
            self._enter_ready(rec, now)
        elif new is DONE:
            self._enter_done(rec, now, out, detail)
        elif new is FAILED or new is UPSTREAM_FAILED:
            self._enter_failed(rec, now, out, detail)
        elif new is WAITING:
            waiters = self._waiters
            for key in rec.missing:
                waiting = waiters.get(key)
                if waiting is None:
                    waiters[key] = {rec: None}
                else:
                    waiting[rec] = None

    def _enter_ready(self, rec: ComputationRecord, now: float) -> None:
        rec.ready_at = now
        if rec.stalled:  # what it waited for has come
            rec.stalled = False
            rec.note = ""
        # Ageing: effective priority p + rate * (t - ready_at) orders like p - rate * ready_at at any time t,
        # so a static key ages every entry without touching it. The heap is a min-heap: the key is negated.
        key = self.config.ageing_per_s * now - rec.current.priority
        pool = self._pools[rec.pool]
        fifo = pool.queued.get(key)
        if fifo is None:
            pool.queued[key] = fifo = deque()
            heapq.heappush(pool.ready, key)
        fifo.append(rec)
        if rec.awaited:
            pool.awaited.append(rec)

    def _enter_done(self, rec: ComputationRecord, now: float, out: list[Instruction], detail: str) -> None:
        rec.finished_at = now
        rec.last_error = None  # the errors of earlier attempts stay in rec.errors
        rec.note = detail  # what it said while on its way (a rerun's reason, an alternative) is history now
        out.append(Settle(rec.name, DONE, detail))
        self._announce(rec, out)

    def _enter_failed(self, rec: ComputationRecord, now: float, out: list[Instruction], error: str) -> None:
        """A failed or upstream-failed computation's output will not come: its dependents and the handlers
        waiting for it hear so. The wave through its dependents runs in a loop, not by recursion (a chain can
        be a hundred thousand long)."""
        rec.finished_at = now
        rec.last_error = error
        out.append(Settle(rec.name, rec.state, error))  # type: ignore[arg-type]
        self._announce(rec, out)
        key = rec.spec.output
        if rec.state is FAILED:
            self._failed_keys[key] = rec.name
        else:
            self._failed_keys[key] = next(self._failed_keys[k] for k in rec.spec.inputs
                                          if k in self._failed_keys and k not in self._versions)
        blocked = self._blocked_waiters.get(key)
        if blocked:
            outcome = KeyOutcome(key, rec.name, rec.state.value, error)  # type: ignore[union-attr]
            for attempt in list(blocked):
                self._wake(attempt, out, (outcome,))
        if key in self._pending:  # its new run failed: what reads it goes on with the version that is there
            self._release(key, now, out)
            return
        self._failing.append(rec)
        if len(self._failing) == 1:  # not inside the loop below already
            self._fail_downstream(now, out)

    # --- registration ------------------------------------------------------------------------------------------

    def _declare(self, source: str, specs: tuple[ComputationSpec, ...], now: float, out: list[Instruction],
                 subscriber: str | None) -> None:
        """What the object at `source` declares, now: new specs join the graph, changed ones replace what the
        previous version of the object declared, and those it no longer declares are retired (outputs kept)."""
        names = {spec.computation for spec in specs}
        before = self._declared.get(source, set())
        for name in sorted(before - names):
            rec = self._records.get(name)
            if rec is not None and rec.source == source and rec.state is not RETIRED:
                self._retire(rec, f"{source!r} no longer declares it", now, out)
        for spec in specs:
            self._register(source, spec, now, out, subscriber)
        accepted = {spec.computation for spec in specs if (r := self._records.get(spec.computation)) is not None
                    and r.source == source and r.spec == spec}
        if accepted:
            self._declared[source] = accepted
        else:
            self._declared.pop(source, None)

    def _register(self, source: str, spec: ComputationSpec, now: float, out: list[Instruction],
                  subscriber: str | None) -> str | None:
        """Add `spec` to the graph; the reason it was refused, or None (also for the same spec again). A spec
        that the same object declared before, differently, replaces the earlier one; one declared by another
        object is refused."""
        name = spec.computation
        existing = self._records.get(name)
        if existing is not None:
            if existing.spec == spec and existing.state is not RETIRED:
                return None  # the same spec again: a duplicate event or a re-emission
            if existing.source != source and existing.state is not RETIRED:
                return self._reject(source, name, f"computation {name!r} is already declared differently "
                                                  f"(by {existing.source!r}); names must be unique", now, out)
            self._forget(existing, now, out)  # re-declared: the new spec takes its place
        other = self._producer.get(spec.output)
        if other is not None and other.state is not RETIRED:
            return self._reject(source, name, f"output {spec.output!r} is already produced by computation "
                                              f"{other.name!r}", now, out)
        if spec.output in self._consumers:  # only then can this spec close a cycle
            cycle = self._find_cycle(spec)
            if cycle is not None:
                return self._reject(source, name, str(CycleError(name, cycle)), now, out)
        subscribers = tuple(dict.fromkeys(spec.notify + (subscriber,))) if subscriber else spec.notify
        rec = ComputationRecord(spec, source, now, subscribers)
        if existing is not None:  # attempt numbers never repeat for a name: reports of the old spec's are ignored
            rec.attempts = existing.attempts
            rec.run_started_at = existing.attempts + 1
            rec.run_seq = existing.run_seq + 1
        self._records[name] = rec
        self._producer[spec.output] = rec
        for key in spec.inputs:
            self._consumers.setdefault(key, []).append(rec)
        if self._pending:
            pending = self._pending
            rec.held_inputs = sum(1 for key in spec.inputs if key in pending)
        version = self._versions.get(spec.output)
        if version is not None:
            recorded = _run_seq(version.run) or 0  # run numbers go on from the output's (a restart starts at 1)
            rec.run_seq = max(rec.run_seq, recorded)
            changed = existing is not None and existing.spec != spec
            stale = "its spec changed: it runs again" if changed else self._stale_output(rec, version)
            if stale is None:
                self._transition(rec, DONE, now, out, f"output {spec.output!r} already present; not run")
                return None
            rec.note = stale
            out.append(Stale(name, stale))
            rec.run_seq = max(rec.run_seq, recorded + 1)
        upstream = self._failed_input(rec)
        if upstream is not None:
            self._transition(rec, UPSTREAM_FAILED, now, out, upstream)
            return None
        problem = self._choose_variant(rec)
        if problem is not None:
            self._transition(rec, FAILED, now, out, problem)
            return None
        if rec.alternative:
            rec.note = f"alternative {rec.alternative} ({rec.label}): no pool can run the ones before"
        rec.missing = self._lacking(spec.inputs)
        self._transition(rec, WAITING if rec.missing else READY, now, out)
        if version is not None:  # it runs again over an output that is there
            self._hold_readers(rec, now, out)
        if self._blocked and (spec.output in self._blocked_waiters or any(
                c.awaited and c.state is WAITING for c in self._consumers.get(spec.output, ()))):
            self._mark_awaited(rec)  # a waiting handler needs it, directly or through what it feeds
        return None

    def _stale_output(self, rec: ComputationRecord, version: Version) -> str | None:
        """Why the output that is there is not this computation's current run (None: it is, or nothing says
        otherwise). The output records its run: the spec and the identities of the inputs it was computed from;
        the same run computed now has the same id only if nothing changed."""
        if _run_seq(version.run) is None:
            return None  # not written by a run (put there by hand, or before runs were recorded): trusted
        identities = []
        for key in rec.spec.inputs:
            known = self._versions.get(key)
            if known is None or known.identity is None:
                return None  # cannot be checked now (an input is missing or unread): trusted
            identities.append((key, known.identity))
        recorded = version.run.split(":", 1)[1]  # type: ignore[union-attr]
        # The run is recorded with the variant that ran: the spec, or one of its alternatives.
        if any(recorded == run_id(variant(rec.spec, i), identities) for i in range(len(rec.spec.alternatives) + 1)):
            return None
        return "its output was computed from other inputs or another spec: it runs again"

    def _forget(self, rec: ComputationRecord, now: float, out: list[Instruction]) -> None:
        """Take a computation out of every table, to be replaced by a new spec of the same name."""
        if rec.state is not RETIRED:
            self._retire(rec, "declared again, differently", now, out, announce=False)
        for key in rec.spec.inputs:
            readers = self._consumers.get(key)
            if readers is not None:
                readers.remove(rec)
                if not readers:
                    del self._consumers[key]
        if self._producer.get(rec.spec.output) is rec:
            del self._producer[rec.spec.output]
        self._counts[RETIRED] -= 1
        del self._records[rec.name]

    def _retire(self, rec: ComputationRecord, why: str, now: float, out: list[Instruction],
                announce: bool = True) -> None:
        """No object declares `rec` any more: it stops (an attempt still running is cancelled); its output,
        if any, stays in the store."""
        if rec.running_attempt is not None:
            out.append(Cancel(rec.name, rec.running_attempt, f"retired: {why}"))
            self._end_attempt(rec)
        rec.note = f"retired: {why}" + ("; its output is kept (orphaned)" if rec.spec.output in self._versions else "")
        rec.finished_at = now
        self._transition(rec, RETIRED, now, out)
        if rec.spec.output in self._pending:
            self._release(rec.spec.output, now, out)
        if announce:
            out.append(Settle(rec.name, RETIRED, rec.note))

    def _rerun(self, rec: ComputationRecord, why: str, now: float, out: list[Instruction]) -> None:
        """Run `rec` again, as a new run: its attempts budget afresh, the spec itself first. Its output stays
        where it is until the new run replaces it. A computation that cannot run (an input will not come, no
        pool can run it) stays as it is, saying why; a failed one that can brings back what waited on it."""
        upstream = self._failed_input(rec)
        if upstream is not None:
            self._cannot_rerun(rec, why, upstream, now, out, fail=False)
            return
        alternative, current, variant_attempts = rec.alternative, rec.current, rec.variant_attempts
        self._set_variant(rec, 0)
        problem = self._choose_variant(rec)
        if problem is not None:
            if rec.state is not UPSTREAM_FAILED:  # it stays done, or failed, as its last run left it
                rec.alternative, rec.current, rec.variant_attempts = alternative, current, variant_attempts
            self._cannot_rerun(rec, why, problem, now, out, fail=True)
            return
        was_failed = rec.state is FAILED or rec.state is UPSTREAM_FAILED
        if was_failed:
            self._failed_keys.pop(rec.spec.output, None)
        rec.run_seq += 1
        rec.run_started_at = rec.attempts + 1
        rec.lost_attempts = 0
        rec.retry_at = None
        rec.last_error = None
        rec.finished_at = None
        rec.from_deleted = NONE_DELETED
        rec.note = f"runs again: {why}"
        out.append(Stale(rec.name, why))
        rec.missing = self._lacking(rec.spec.inputs)
        self._transition(rec, WAITING if rec.missing else READY, now, out)
        if was_failed:  # what was upstream-failed because of it waits for the new run
            self._revive_downstream(rec, now, out)
        self._hold_readers(rec, now, out)

    def _cannot_rerun(self, rec: ComputationRecord, why: str, problem: str, now: float, out: list[Instruction],
                      fail: bool) -> None:
        """`rec` was to run again and cannot: it says why, and stays as it is (an upstream-failed one that no
        pool can run fails: that is its own problem now)."""
        out.append(Stale(rec.name, f"{why}, but it cannot run: {problem}"))
        if rec.state is UPSTREAM_FAILED and fail:
            self._transition(rec, FAILED, now, out, problem)
        elif rec.state is FAILED or rec.state is UPSTREAM_FAILED:
            rec.last_error = problem
        else:
            rec.note = f"cannot run again ({why}): {problem}"

    def _hold_readers(self, rec: ComputationRecord, now: float, out: list[Instruction]) -> None:
        """`rec` runs again while its previous output is there: what reads that output, directly or through
        computations that may run again because of it, waits for the new run rather than run on the old
        version (each key is held until its producer settles, or until nothing upstream of it changes after
        all; see `_release`)."""
        output = rec.spec.output
        if output not in self._versions or output in self._pending:
            return
        pending = self._pending
        self._hold(output)
        stack = [output]
        while stack:
            key = stack.pop()
            for reader in self._consumers.get(key, ()):
                state = reader.state
                if state is READY:
                    reader.missing = {key}
                    self._transition(reader, WAITING, now, out)
                elif state is WAITING:
                    if key not in reader.missing:
                        reader.missing.add(key)  # type: ignore[attr-defined]  # a waiting record's own set
                        self._waiters.setdefault(key, {})[reader] = None
                elif state is DONE:  # it runs again if `key` changes: what reads its output waits too
                    held = reader.spec.output
                    if held in self._versions and held not in pending:
                        self._hold(held)
                        stack.append(held)

    def _lacking(self, inputs: Iterable[str]) -> AbstractSet[str]:
        """The inputs a computation must wait for: those not there, and those being computed again (a set of
        its own; NOTHING when none)."""
        versions, pending = self._versions, self._pending
        return {k for k in inputs if k not in versions or k in pending} or NOTHING

    def _release(self, key: str, now: float, out: list[Instruction], wake: bool = True) -> None:
        """`key`'s producer settled (its new run committed, came out the same, failed or was retired): what
        waited for the new run goes on with what is there now (`wake`; not when `key` was deleted, and what
        reads it waits for it anyway). Keys held further down (`_hold_readers`) whose producer did not run
        again, and reads no other held key, are released with it."""
        self._unhold(key)
        if wake:
            self._go_on(key, now, out)
        stack = [key]
        while stack:
            for reader in self._consumers.get(stack.pop(), ()):
                held = reader.spec.output
                if held in self._pending and reader.state is DONE and not self._holds_pending(reader):
                    self._unhold(held)
                    self._go_on(held, now, out)
                    stack.append(held)

    def _go_on(self, key: str, now: float, out: list[Instruction]) -> None:
        """What waited for the version of `key` that is there now has it."""
        for reader in self._waiters.pop(key, None) or ():
            reader.missing.discard(key)  # type: ignore[attr-defined]  # a waiting record's own set
            if not reader.missing:  # leaving WAITING, it drops its set
                self._transition(reader, READY, now, out)

    def _holds_pending(self, rec: ComputationRecord) -> bool:
        return rec.held_inputs > 0

    def _hold(self, key: str) -> None:
        """`key` is being computed again: what reads it waits for the new run (see `_hold_readers`)."""
        self._pending.add(key)
        for reader in self._consumers.get(key, ()):
            reader.held_inputs += 1

    def _unhold(self, key: str) -> None:
        if key in self._pending:
            self._pending.discard(key)
            for reader in self._consumers.get(key, ()):
                reader.held_inputs -= 1

    def _on_removed(self, key: str, now: float, out: list[Instruction]) -> None:
        """The object at `key` was deleted. A deleted output is computed again (its inputs permitting); a deleted
        input leaves what was computed from it in place, marked as from a deleted source, and what has not run
        yet waits for it again."""
        version = self._versions.pop(key, None)
        if version is None:
            return
        if key in self._pending:  # its readers wait for it anyway now: it is not there
            self._release(key, now, out, wake=False)
        self._deleted[key] = version
        self._tick()
        self._gcl_unread.discard(key)
        producer = self._producer.get(key)
        if producer is not None:
            if producer.state is DONE:
                self._rerun(producer, f"its output {key!r} was deleted", now, out)
            elif producer.state is RUNNING:
                producer.stale = True
        for rec in list(self._consumers.get(key, ())):
            if rec.state is DONE:
                if rec.from_deleted is NONE_DELETED:
                    rec.from_deleted = {}
                rec.from_deleted[key] = None  # type: ignore[index]  # its own dict
                rec.note = f"computed from a deleted source: {_keys(rec.from_deleted)}"
            elif rec.state is READY:
                rec.missing = {key}
                self._transition(rec, WAITING, now, out)
            elif rec.state is WAITING:
                rec.missing.add(key)  # type: ignore[attr-defined]  # a waiting record's own set
                self._waiters.setdefault(key, {})[rec] = None

    def _restored(self, key: str, same: bool, now: float, out: list[Instruction]) -> None:
        """A deleted key is back: what was computed from it is current again if it is the same version, and
        stale if not."""
        for rec in list(self._consumers.get(key, ())):
            if key in rec.from_deleted:
                del rec.from_deleted[key]  # type: ignore[attr-defined]  # its own dict: it holds the key
                if not rec.from_deleted:
                    rec.from_deleted = NONE_DELETED
                rec.note = f"computed from a deleted source: {_keys(rec.from_deleted)}" if rec.from_deleted else ""
                if not same:
                    self._input_changed(rec, key, now, out)

    def _resize(self, ev: CapacityChanged) -> None:
        """Pools take the slots and capacity their workers offer now. Attempts already running keep theirs (a
        shrunk pool starts nothing until it is under its new limit again); the ceiling keeps the most offered."""
        for new in ev.pools:
            pool = self._pools.get(new.name)
            if pool is None:
                continue
            pool.spec = PoolSpec(pool.spec.name, new.slots, new.capacity, pool.spec.handler_types)
            pool.limit = new.slots * (1 + self.config.prefetch)
            pool.held_most = max(pool.held_most, pool.limit)
            for r, a in pool.spec.capacity.items():
                if a > pool.ceiling.get(r, 0.0):
                    pool.ceiling[r] = a

    def _restore_attempts(self, ev: AttemptsRestored, now: float, out: list[Instruction]) -> None:
        """A computation registered afresh at a restart goes on from the attempts made before it: its retry budget
        is what was left (a computation that had failed for good gets one more attempt, then fails), its
        alternative the one reached, and a retry not yet due waits out its delay. Ignored for a computation that
        is not fresh (done, running, or already attempted in this run)."""
        rec = self._records.get(ev.computation)
        if rec is None or rec.attempts or rec.state not in (READY, WAITING):
            return
        if 0 < ev.alternative <= len(rec.spec.alternatives) and ev.alternative != rec.alternative:
            was_ready = rec.state is READY
            if was_ready:  # it is queued in the first variant's pool: out of the queue until it is due again
                rec.retry_at = now
                self._transition(rec, RETRYING, now, out)
            self._set_variant(rec, ev.alternative)
            if self._choose_variant(rec) is not None:
                self._set_variant(rec, 0)
                self._choose_variant(rec)
        rec.attempts = ev.attempts
        rec.variant_attempts = ev.variant_attempts
        rec.lost_attempts = ev.lost_attempts
        rec.errors = tuple(ev.errors) + rec.errors
        rec.last_error = ev.errors[-1] if ev.errors else None
        rec.run_started_at = 1
        rec.note = f"{ev.attempts} attempt(s) before the restart"
        if ev.cancelled:
            self._transition(rec, FAILED, now, out, rec.last_error or "cancelled")
            rec.cancelled = True
            return
        due = ev.retry_at if ev.retry_at is not None and ev.retry_at > now else now
        if rec.state is READY and due > now:
            rec.retry_at = due
            self._transition(rec, RETRYING, now, out)
        if rec.state is RETRYING:
            rec.retry_at = due
            self._timer(due, "retry", rec)

    def _on_rerun(self, ev: RerunRequested, now: float, out: list[Instruction]) -> None:
        rec = self._records.get(ev.computation)
        if rec is None or rec.state is RETIRED:
            self._reject(ev.source or "rerun", ev.computation, f"no computation {ev.computation!r} to run again, "
                                                               "and none produces a key of that name", now, out)
            return
        targets = [rec]
        if ev.downstream:  # everything that reads what it makes, and so on: each runs after what it reads
            seen = {rec.name}
            queue = deque([rec])
            while queue:
                for consumer in self._consumers.get(queue.popleft().spec.output, ()):
                    if consumer.name not in seen and consumer.state is not RETIRED:
                        seen.add(consumer.name)
                        consumer.forced = True
                        targets.append(consumer)
                        queue.append(consumer)
            rec.forced = True
        why = f"a rerun was asked for ({ev.source})" if ev.source else "a rerun was asked for"
        if rec.state is RUNNING:
            rec.stale = True
        elif rec.state in (DONE, FAILED, UPSTREAM_FAILED):
            self._rerun(rec, why, now, out)
        for consumer in targets[1:]:
            if consumer.state is FAILED or consumer.state is UPSTREAM_FAILED:
                self._rerun(consumer, why, now, out)

    def _on_cancel(self, ev: CancelRequested, now: float, out: list[Instruction]) -> None:
        rec = self._records.get(ev.computation)
        if rec is None or rec.state is RETIRED:
            self._reject(ev.source or "cancel", ev.computation, f"no computation {ev.computation!r} to cancel",
                         now, out)
            return
        if rec.state in FINAL:
            return  # settled already: a cancel that comes after the end changes nothing
        error = f"cancelled ({ev.source})" if ev.source else "cancelled"
        if rec.state is RUNNING:
            assert rec.running_attempt is not None
            out.append(Cancel(rec.name, rec.running_attempt, error))
            self._end_attempt(rec)
            rec.stale = False
        rec.errors += (f"attempt {rec.attempts} ({rec.label}): {error}",) if rec.attempts else (error,)
        self._transition(rec, FAILED, now, out, error)
        rec.cancelled = True

    def _failed_input(self, rec: ComputationRecord) -> str | None:
        """Why `rec` can never run because an input of it will not be produced, or None."""
        if not self._failed_keys:
            return None
        for key in rec.spec.inputs:
            if key in self._failed_keys and key not in self._versions:
                return (f"upstream computation {self._failed_keys[key]!r} failed, so {key!r} will not be "
                        "produced")
        return None

    def _reject(self, source: str, computation: str | None, reason: str, now: float,
                out: list[Instruction]) -> str:
        ident = (source, computation, reason)
        if ident not in self._rejection_seen:
            self._rejection_seen.add(ident)
            self._rejections.append(Rejection(source, computation, reason, now))
            out.append(Reject(source, computation, reason))
        return reason

    def _route(self, rec: ComputationRecord) -> str | None:
        """Assign the pool for the current variant; the reason when no pool could ever run it."""
        spec = rec.current
        name = self._affinity.get(spec.handler_type, self._general)
        if name is None:
            return (f"handler type {spec.handler_type!r} has no pool and there is no general pool "
                    f"(pools: {', '.join(self._pools)})")
        ceiling = self._pools[name].ceiling
        short = {r: a for r, a in (spec.resources or {}).items() if a > ceiling.get(r, 0.0)}
        if short:
            asked = ", ".join(f"{r}={a:g}" for r, a in sorted((spec.resources or {}).items()))
            has = ", ".join(f"{r}={a:g}" for r, a in sorted(ceiling.items())) or "nothing declared"
            return (f"computation {rec.label!r} asks for {asked}, more than pool {name!r} will ever have "
                    f"({has}); declare capacity with --resources or --pool")
        rec.pool = name
        return None

    def _choose_variant(self, rec: ComputationRecord) -> str | None:
        """From the current variant on, the first one some pool can run is chosen; else the last reason why not."""
        while True:
            problem = self._route(rec)
            if problem is None:
                return None
            rec.errors += (problem,)
            if rec.alternative >= len(rec.spec.alternatives):
                return problem
            self._set_variant(rec, rec.alternative + 1)

    def _set_variant(self, rec: ComputationRecord, alternative: int) -> None:
        rec.alternative = alternative
        rec.current = variant(rec.spec, alternative)
        rec.variant_attempts = 0

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
            for reader in sorted(self._consumers.get(key, ()), key=lambda r: r.name):
                nxt = reader.spec.output
                if nxt in parent:
                    continue
                parent[nxt] = (reader.name, key)
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

    # --- keys becoming available, and what follows ---------------------------------------------------------------

    def _make_available(self, key: str, now: float, out: list[Instruction]) -> None:
        """`key` exists now (its version is already recorded): its producer is done, whatever it was doing, and
        whoever waited for it moves on. A producer whose attempt is running settles when that attempt reports
        (it is usually the writer, its report on the way), or after the commit grace at the latest."""
        self._failed_keys.pop(key, None)
        rec = self._producer.get(key)
        if rec is not None and rec.state is RUNNING:
            self._timer(now + self.config.commit_grace_s, "commit-grace", rec)
        elif rec is not None and rec.state is not DONE and rec.state is not NEW:
            self._settle(rec, now, out)
        self._go_on(key, now, out)
        blocked = self._blocked_waiters.pop(key, None)
        if blocked:
            for attempt in blocked:
                attempt.blocked_on.discard(key)  # type: ignore[attr-defined]  # a blocked attempt's own set
                if not attempt.blocked_on:
                    self._wake(attempt, out)

    def _settle(self, rec: ComputationRecord, now: float, out: list[Instruction], committed_by: int | None = None,
                why: str = "") -> None:
        """`rec`'s output exists: it is done, whatever state it was in (`committed_by`: the attempt that reported
        the commit). Failed ones bring back what was upstream-failed because of them."""
        state = rec.state
        if committed_by is not None:
            rec.produced_by = rec.label  # the variant of the attempt reported, which may be an earlier one
            detail = "" if committed_by == rec.attempts else f"attempt {committed_by} committed its output"
        elif why:
            detail = why
        elif state in (FAILED, UPSTREAM_FAILED):
            detail = f"its output appeared after it had {state.value.replace('-', ' ')}; its dependents go on"
        elif rec.attempts:
            detail = f"its output appeared after attempt {rec.attempts}; not run again"
        else:
            detail = f"output {rec.spec.output!r} already present; not run"
        self._transition(rec, DONE, now, out, detail)
        if state is UPSTREAM_FAILED or state is FAILED:
            self._failed_keys.pop(rec.spec.output, None)
            self._revive_downstream(rec, now, out)
        if rec.spec.output in self._gcl_unread and committed_by is None:
            out.append(ReadGcl(rec.spec.output))  # no report carried its GCL

    def _revive_downstream(self, rec: ComputationRecord, now: float, out: list[Instruction]) -> None:
        """A failed computation's output appeared after all: what was upstream-failed because of it, and has no
        other failed input, waits or runs again, and so on down."""
        queue = deque([rec.spec.output])
        while queue:
            key = queue.popleft()
            for consumer in self._consumers.get(key, ()):
                if consumer.state is not UPSTREAM_FAILED:
                    continue
                still = self._failed_input(consumer)
                if still is not None:
                    consumer.last_error = still  # blamed on another failed input now
                    continue
                del self._failed_keys[consumer.spec.output]
                consumer.finished_at = None
                if consumer.spec.output in self._versions:
                    self._transition(consumer, DONE, now, out, "its output is present")
                    continue
                consumer.last_error = None
                consumer.missing = self._lacking(consumer.spec.inputs)
                self._transition(consumer, WAITING if consumer.missing else READY, now, out)
                queue.append(consumer.spec.output)

    def _fail_downstream(self, now: float, out: list[Instruction]) -> None:
        """Everything that needs a failed output, directly or through others, is upstream-failed, naming the
        computation to blame (each transition queues its own record here)."""
        failing = self._failing
        while failing:
            rec = failing[0]
            key = rec.spec.output
            waiting = self._waiters.get(key)
            for consumer in list(waiting) if waiting else ():
                if consumer.state is WAITING:
                    self._transition(consumer, UPSTREAM_FAILED, now, out, f"upstream computation "
                                     f"{self._failed_keys[key]!r} failed, so {key!r} will not be produced")
            failing.popleft()

    def _unwait(self, rec: ComputationRecord) -> None:
        _unindex(self._waiters, rec.missing, rec)
        rec.missing = NOTHING

    def _announce(self, rec: ComputationRecord, out: list[Instruction]) -> None:
        for handler_type in rec.subscribers:
            out.append(Notify(handler_type, Completion(rec.name, rec.state, rec.spec.output, rec.attempts,
                                                       rec.last_error if rec.state is not DONE else None,
                                                       rec.produced_by)))

    # --- attempts: their slots, failures, retries ----------------------------------------------------------------

    def _end_attempt(self, rec: ComputationRecord) -> None:
        """The running attempt is over (reported, or cancelled): its slot and resources go back."""
        if rec.blocked_on:
            self._unblock(rec)
        pool = self._pools[rec.pool]
        if rec.lent:
            pool.on_lent -= 1
            rec.lent = False
        else:
            pool.running -= 1
        for name, amount in (rec.current.resources or {}).items():
            pool.used[name] = pool.used.get(name, 0.0) - amount
        rec.running_attempt = None
        self._outstanding -= 1

    def _failed_attempt(self, rec: ComputationRecord, error: str, permanent: bool, now: float,
                        out: list[Instruction]) -> None:
        """One attempt failed (its slot is back already): retry after a delay, else the next alternative, else
        fail for good."""
        attempt = rec.attempts
        rec.last_error = error
        rec.errors += (f"attempt {attempt} ({rec.label}): {error}",)
        policy = self._retry_policy(rec.spec)
        granted = policy.max_attempts + min(rec.lost_attempts, self.config.lost_worker_retries)
        if not permanent and rec.variant_attempts < granted:
            delay = policy.delay(rec.variant_attempts, self._rng)
            out.append(AttemptFailed(rec.name, attempt, error, f"attempt {attempt + 1} in {delay:.3g}s", delay))
            rec.retry_at = now + delay
            self._transition(rec, RETRYING, now, out)
            self._timer(rec.retry_at, "retry", rec)
            return
        if rec.alternative < len(rec.spec.alternatives):
            self._set_variant(rec, rec.alternative + 1)
            problem = self._choose_variant(rec)
            if problem is None:
                out.append(AttemptFailed(rec.name, attempt, error, f"alternative {rec.label!r} next"))
                rec.note = f"alternative {rec.alternative} ({rec.label}) after the previous variant failed"
                self._run_next(rec, now, out)
                return
            error = f"{error}; no alternative left that a pool can run ({problem})"
        why = "permanent error" if permanent else f"no attempts left ({rec.variant_attempts} made)"
        out.append(AttemptFailed(rec.name, attempt, error, why))
        self._transition(rec, FAILED, now, out, error)

    def _run_next(self, rec: ComputationRecord, now: float, out: list[Instruction]) -> None:
        """Its next attempt is due: it runs when its inputs are there (one may have been deleted, or be being
        computed again, since the last attempt started)."""
        rec.missing = self._lacking(rec.spec.inputs)
        self._transition(rec, WAITING if rec.missing else READY, now, out)

    def _retry_policy(self, spec: ComputationSpec) -> RetryPolicy:
        return RetryPolicy.from_spec(spec.retry) if spec.retry is not None else self.config.default_retry

    # --- time: retries, time-outs, deadlocks -------------------------------------------------------------------

    def _timer(self, due: float, kind: str, rec: ComputationRecord) -> None:
        self._seq += 1
        attempt = rec.running_attempt if kind != "retry" else rec.attempts
        heapq.heappush(self._timers, (due, self._seq, kind, rec.name, attempt or 0))

    def _timer_valid(self, timer: tuple[float, int, str, str, int]) -> bool:
        _, _, kind, name, attempt = timer
        rec = self._records.get(name)
        if rec is None:
            return False  # re-declared, and the new spec was refused
        if kind == "retry":
            return rec.state is RETRYING and rec.attempts == attempt
        return rec.state is RUNNING and rec.running_attempt == attempt  # a time-out, or the commit grace

    def _fire_timers(self, now: float, out: list[Instruction]) -> None:
        while self._timers and self._timers[0][0] <= now:
            timer = heapq.heappop(self._timers)
            if not self._timer_valid(timer):
                continue
            _, _, kind, name, attempt = timer
            rec = self._records[name]
            if kind == "retry":
                self._run_next(rec, now, out)
            elif kind == "timeout" and rec.spec.output not in self._versions:  # the attempt failed
                limit = rec.current.timeout_s
                out.append(Cancel(name, attempt, f"timed out after {limit:g}s"))
                self._end_attempt(rec)
                self._failed_attempt(rec, f"timed out after {limit:g}s", False, now, out)
            else:  # its output appeared, and the attempt has not reported since (or ran out of time)
                why = f"its output appeared while attempt {attempt} ran, which did not report; it was cancelled"
                out.append(Cancel(name, attempt, "its output is there already"))
                self._end_attempt(rec)
                self._settle(rec, now, out, why=why)

    def _orphan(self, key: str) -> bool:
        """No computation in the graph will produce `key` (none declares it, or the one that did is retired)."""
        producer = self._producer.get(key)
        return producer is None or producer.state is RETIRED

    def _progress_possible(self) -> bool:
        """Something runs (and is not waiting) or is due for a retry: time alone may move the graph."""
        return self._outstanding > len(self._blocked) or self._counts[RETRYING] > 0

    def _check_deadlock(self, now: float, out: list[Instruction]) -> None:
        """With nothing running and nothing arriving for the grace period, work waiting for inputs that no
        registered computation produces can only go on if someone uploads them. In a batch run it fails (and
        its dependents are upstream-failed); in a service it is reported as stalled and keeps waiting. A handler
        waiting for such a key is told (batch) or reported (service) likewise."""
        grace = self._grace
        if grace is None or self._progress_possible() or now < self._last_activity + grace:
            return
        self._last_activity = now  # one check per quiet grace period
        stuck = []
        for rec in self.waiting():
            orphans = sorted(k for k in rec.missing if self._orphan(k))
            if orphans and not rec.stalled:
                stuck.append((rec, orphans))
        blocked = []
        for rec in sorted(self._blocked.values(), key=lambda r: r.name):
            orphans = sorted(k for k in rec.blocked_on if self._orphan(k))
            if orphans and not rec.stalled:
                blocked.append((rec, orphans))
        if not stuck and not blocked:
            return
        what = "; ".join(f"{rec.name!r} waits for {_keys(keys)}" for rec, keys in (stuck + blocked)[:20])
        more = f" (and {len(stuck) + len(blocked) - 20} more)" if len(stuck) + len(blocked) > 20 else ""
        names = tuple(rec.name for rec, _ in stuck + blocked)
        if self.config.missing_inputs == "wait":
            for rec, keys in stuck + blocked:
                rec.stalled = True
                rec.note = f"stalled: waits for {_keys(keys)}, which no registered computation produces"
            out.append(Stalled(names, f"nothing ran or arrived for {grace:g}s and no registered computation "
                                      f"produces what these wait for: {what}{more}; they run once it arrives"))
            return
        deadlock = Deadlock("missing-inputs", names, f"nothing ran or arrived for {grace:g}s and no registered "
                                                     f"computation produces what these wait for: {what}{more}")
        self._deadlocks.append(deadlock)
        out.append(deadlock)
        for rec, keys in stuck:
            if rec.state is WAITING:  # not upstream-failed by an earlier one in this loop
                self._transition(rec, FAILED, now, out, f"deadlock: no computation produces {_keys(keys)} and "
                                                        f"nothing arrived for {grace:g}s")
        for rec, keys in blocked:
            if rec.blocked_on:
                self._wake(rec, out, deadlock=f"no computation produces {_keys(keys)} and nothing arrived for "
                                              f"{grace:g}s")

    # --- dispatch ----------------------------------------------------------------------------------------------

    def _dispatch(self, now: float, out: list[Instruction]) -> None:
        if self._paused:
            return
        for pool in self._pools.values():
            if pool.awaited or pool.expedite:
                self._dispatch_awaited(pool, now, out)
            if pool.ready and pool.running < pool.limit:
                self._dispatch_ready(pool, now, out)

    def _dispatch_awaited(self, pool: _Pool, now: float, out: list[Instruction]) -> None:
        """Work a waiting handler needs runs on the slot that handler lent: one lent slot, one attempt. Work
        dispatched ahead of time (it may still wait in the executor's queue, behind the waiting handler) moves
        onto a lent slot first."""
        expedite = pool.expedite
        while expedite and pool.on_lent < pool.lent_out:
            rec = expedite.popleft()
            if rec.state is RUNNING and not rec.lent and not rec.blocked_on:
                pool.running -= 1
                pool.on_lent += 1
                rec.lent = True
                out.append(Expedite(rec.name, rec.attempts))
        awaited = pool.awaited
        while awaited and awaited[0].state is not READY:
            awaited.popleft()  # it started through the ready queue, or its output appeared
        while awaited and pool.on_lent < pool.lent_out:
            rec = awaited[0]
            if rec.state is not READY:
                awaited.popleft()
                continue
            if not self._fits(pool, rec):
                self._resolve_held_resources(pool, rec, now, out)
                return
            awaited.popleft()
            self._start(pool, rec, now, out, lent=True)

    def _dispatch_ready(self, pool: _Pool, now: float, out: list[Instruction]) -> None:
        ready, queued, slots = pool.ready, pool.queued, pool.spec.slots
        while ready and pool.running < pool.limit:
            fifo = queued[ready[0]]
            rec = fifo[0]
            if rec.state is not READY:  # left READY while queued (its output appeared; it ran on a lent slot)
                fifo.popleft()
            else:
                if rec.current.timeout_s is not None and pool.running >= slots:
                    return  # would wait in the executor's queue while its clock runs
                if not self._fits(pool, rec):
                    return  # strict priority: the head waits for capacity rather than being overtaken
                fifo.popleft()
                self._start(pool, rec, now, out, lent=False)
            if not fifo:
                del queued[heapq.heappop(ready)]

    def _fits(self, pool: _Pool, rec: ComputationRecord) -> bool:
        demand = rec.current.resources
        if not demand:
            return True
        used, capacity = pool.used, pool.spec.capacity
        return all(used.get(r, 0.0) + a <= capacity.get(r, 0.0) for r, a in demand.items())

    def _start(self, pool: _Pool, rec: ComputationRecord, now: float, out: list[Instruction], lent: bool) -> None:
        spec = rec.current
        for r, a in (spec.resources or {}).items():
            pool.used[r] = pool.used.get(r, 0.0) + a
        if lent:
            pool.on_lent += 1
        else:
            pool.running += 1
        rec.lent = lent
        rec.attempts += 1
        rec.variant_attempts += 1
        rec.running_attempt = rec.attempts
        rec.started_at = now
        self._outstanding += 1
        self._transition(rec, RUNNING, now, out)
        if spec.timeout_s is not None:
            self._timer(now + spec.timeout_s, "timeout", rec)
        versions = self._versions
        output = versions.get(rec.spec.output)
        inputs = tuple((k, versions[k].identity or "") for k in spec.inputs)
        aged = spec.priority - self.config.ageing_per_s * (rec.ready_at or now)
        out.append(Dispatch(spec, rec.attempts, pool.spec.name, lent, output.stamp if output else None, inputs,
                            rec.run_seq, aged))

    def _resolve_held_resources(self, pool: _Pool, rec: ComputationRecord, now: float,
                                out: list[Instruction]) -> None:
        """`rec`, which a waiting handler needs, does not fit beside what blocked handlers hold. If it could not
        fit even once every running attempt that is not waiting has finished, only a blocked handler giving up
        can make room: the most recent such wait is ended, with the reason."""
        demand = rec.current.resources or {}
        held = {r: 0.0 for r in demand}
        holders = []
        for blocked in self._blocked.values():
            if blocked.pool != pool.spec.name:
                continue
            mine = blocked.current.resources or {}
            if any(mine.get(r) for r in demand):
                holders.append(blocked)
            for r in demand:
                held[r] += mine.get(r, 0.0)
        capacity = pool.ceiling  # the most it has offered: a pool shrunk for a while is not a deadlock
        short = [r for r, a in demand.items() if a > capacity.get(r, 0.0) - held[r]]
        if not short or not holders:
            return  # room will come when running work finishes
        victim = max(holders, key=lambda r: (r.blocked_at, r.name))
        asked = ", ".join(f"{r}={demand[r]:g}" for r in short)
        explanation = (f"{victim.name!r} waits for {_keys(sorted(victim.blocked_on))} while holding resources that "
                       f"{rec.name!r} needs ({asked}; pool {pool.spec.name!r} has "
                       f"{', '.join(f'{r}={capacity.get(r, 0.0):g}' for r in short)}); its wait is ended")
        deadlock = Deadlock("held-resources", (victim.name, rec.name), explanation)
        self._deadlocks.append(deadlock)
        out.append(deadlock)
        self._wake(victim, out, deadlock=explanation)

    # --- queries (cheap; none scans the graph unless its name says so) ------------------------------------------

    def refusals(self, source: str, specs: Iterable[ComputationSpec]) -> list[tuple[str, str]]:
        """What registering `specs` from `source` now would refuse, as (computation, reason), without
        registering anything: a name declared differently by another source, an output another computation
        produces, a cycle through the graph. (A cycle among the specs themselves is the loader's to find.)"""
        refused = []
        for spec in specs:
            name = spec.computation
            existing = self._records.get(name)
            if existing is not None and existing.state is not RETIRED:
                if existing.spec == spec:
                    continue
                if existing.source != source:
                    refused.append((name, f"computation {name!r} is already declared differently "
                                          f"(by {existing.source!r}); names must be unique"))
                    continue
            other = self._producer.get(spec.output)
            if other is not None and other.state is not RETIRED and other is not existing:
                refused.append((name, f"output {spec.output!r} is already produced by computation "
                                      f"{other.name!r}"))
                continue
            if spec.output in self._consumers:
                cycle = self._find_cycle(spec)
                if cycle is not None:
                    refused.append((name, str(CycleError(name, cycle))))
        refused += self._cycles_among(specs)
        return refused

    @staticmethod
    def _cycles_among(specs: Iterable[ComputationSpec]) -> list[tuple[str, str]]:
        """Cycles the specs close among themselves (what reads an output of theirs is theirs too)."""
        by_output = {spec.output: spec for spec in specs}
        found: list[tuple[str, str]] = []
        done: set[str] = set()
        for start in by_output.values():
            path: list[str] = []  # depth-first, with an explicit stack: a chain may be long
            stack = [(start, iter(start.inputs))]
            on_path = {start.computation}
            path.append(start.computation)
            while stack:
                spec, inputs = stack[-1]
                nxt = next((by_output[k] for k in inputs if k in by_output), None)
                if nxt is None:
                    stack.pop()
                    done.add(path.pop())
                    on_path.discard(spec.computation)
                    continue
                if nxt.computation in on_path:
                    cycle = path[path.index(nxt.computation):] + [nxt.computation]
                    found.append((nxt.computation, f"computation {nxt.computation!r} is part of a cycle: "
                                                   + " -> ".join(cycle)))
                    return found
                if nxt.computation not in done:
                    stack.append((nxt, iter(nxt.inputs)))
                    on_path.add(nxt.computation)
                    path.append(nxt.computation)
        return found

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
        return key in self._versions

    def knows(self, key: str, etag: str | None, identity: str | None = None) -> bool:
        """Whether an ObjectAvailable for this version of `key` would change nothing: a duplicate notification
        (the same stamp), or the same bytes and GCL again (the same identity, when the caller knows it). The
        runtime asks before it reads an object's metadata, and again after."""
        known = self._versions.get(key)
        if known is None or key in self._gcl_unread:
            return False
        if identity is not None:
            return known.identity == identity
        return etag is None or known.stamp == etag

    def expects_report(self, key: str) -> bool:
        """Whether an attempt producing `key` is running: its report will carry the GCL, so the object's
        metadata need not be read when it appears."""
        rec = self._producer.get(key)
        return rec is not None and rec.state is RUNNING

    def producer_of(self, key: str) -> str | None:
        """The name of the computation that produces `key`, if one is registered."""
        rec = self._producer.get(key)
        return rec.name if rec is not None else None

    def producer_state(self, key: str) -> State | None:
        """State of the computation that produces `key`, if one is registered."""
        rec = self._producer.get(key)
        return rec.state if rec is not None else None

    def is_quiescent(self) -> bool:
        """Nothing ready, running or due for a retry, and no attempt still out: only new events can make
        progress."""
        return self._outstanding == 0 and self._counts[READY] == 0 and self._counts[RETRYING] == 0

    def next_wakeup(self) -> float | None:
        """When time alone will change something (a retry, a time-out, the deadlock grace), if ever."""
        while self._timers and not self._timer_valid(self._timers[0]):
            heapq.heappop(self._timers)
        due = self._timers[0][0] if self._timers else None
        grace = self._grace
        if grace is not None and (self._counts[WAITING] or self._blocked) and not self._progress_possible():
            deadline = self._last_activity + grace
            due = deadline if due is None else min(due, deadline)
        return due

    def waiting(self) -> list[ComputationRecord]:
        """Waiting computations with what each lacks (a full scan: for the end of a run and the deadlock check)."""
        return [r for r in self._records.values() if r.state is WAITING]

    def stalled(self) -> list[ComputationRecord]:
        """Computations reported as stalled (a full scan)."""
        return [r for r in self._records.values() if r.stalled]

    # --- invariants --------------------------------------------------------------------------------------------

    def validate_state(self) -> None:
        """Check that every table agrees with every record (a full scan: the tests call it after each step).
        Raises InvariantError naming the first disagreement."""
        def check(ok: bool, what: str) -> None:
            if not ok:
                raise InvariantError(what)

        counts = {s: 0 for s in State}
        per_pool = {name: {"running": 0, "on_lent": 0, "lent_out": 0, "used": {}} for name in self._pools}
        outstanding = 0
        for name, rec in self._records.items():
            check(rec.name == name and rec.state is not NEW, f"{name!r} is recorded under another name or as new")
            counts[rec.state] += 1  # type: ignore[index]
            check(self._producer.get(rec.spec.output) is rec or rec.state is RETIRED,
                  f"{name!r} is not the producer of its output")
            check(0 < rec.run_started_at <= rec.attempts + 1, f"{name!r}: its run starts at an attempt not made")
            check(not rec.cancelled or rec.state is FAILED, f"{name!r} is marked cancelled but is {rec.state}")
            check(rec.current == variant(rec.spec, rec.alternative), f"{name!r}: current spec is not its variant")
            for key in rec.spec.inputs:
                check(any(c is rec for c in self._consumers.get(key, ())), f"{name!r} not a consumer of {key!r}")
            held = sum(1 for key in rec.spec.inputs if key in self._pending)
            check(rec.held_inputs == held, f"{name!r} counts {rec.held_inputs} held inputs, {held} are held")
            if rec.state is WAITING:
                check(bool(rec.missing), f"{name!r} waits for nothing")
                for key in rec.missing:
                    check(key not in self._versions or key in self._pending,
                          f"{name!r} waits for {key!r}, which is available")
                    check(rec in self._waiters.get(key, ()), f"{name!r} missing from the waiters of {key!r}")
            else:
                check(not rec.missing, f"{name!r} is {rec.state} but lacks {sorted(rec.missing)}")
            check(bool(rec.missing) or rec.missing is NOTHING, f"{name!r} keeps an empty set of missing inputs")
            check(bool(rec.blocked_on) or rec.blocked_on is NOTHING, f"{name!r} keeps an empty set of keys waited for")
            check(bool(rec.from_deleted) or rec.from_deleted is NONE_DELETED,
                  f"{name!r} keeps an empty table of deleted inputs")
            if rec.state is DONE:
                check(rec.spec.output in self._versions, f"{name!r} is done but its output is not available")
            if rec.state in (FAILED, UPSTREAM_FAILED):
                check(rec.spec.output in self._failed_keys, f"{name!r} failed but its output is not marked failed")
            if rec.state is RUNNING:
                check(rec.running_attempt == rec.attempts, f"{name!r} runs without its latest attempt out")
            else:
                check(rec.running_attempt is None, f"{name!r} is {rec.state} with attempt {rec.running_attempt} out")
            if rec.state is READY:
                check(not any(k not in self._versions or k in self._pending for k in rec.spec.inputs),
                      f"{name!r} is ready but an input of it is not there or is being computed again")
                pool = self._pools[rec.pool]
                check(any(rec in fifo for fifo in pool.queued.values()), f"{name!r} is ready but not queued")
            if rec.running_attempt is not None:
                outstanding += 1
                usage = per_pool[rec.pool]
                usage["on_lent" if rec.lent else "running"] += 1  # type: ignore[operator]
                for r, a in (rec.current.resources or {}).items():
                    usage["used"][r] = usage["used"].get(r, 0.0) + a  # type: ignore[index,union-attr]
            else:
                check(not rec.blocked_on and not rec.lent, f"{name!r} waits or holds a lent slot with no attempt")
            if rec.blocked_on:
                check(self._blocked.get(name) is rec, f"{name!r} is blocked but not in the blocked table")
                per_pool[rec.pool]["lent_out"] += 1  # type: ignore[operator]
                for key in rec.blocked_on:
                    check(rec in self._blocked_waiters.get(key, ()), f"{name!r} not among the waiters of {key!r}")
        check(counts == self._counts, f"state counts {self._counts} do not match the records {counts}")
        check(outstanding == self._outstanding, f"{self._outstanding} attempts counted out, {outstanding} found")
        check(all(r.blocked_on for r in self._blocked.values()), "a computation in the blocked table waits for nothing")
        for key in self._pending:
            producer = self._producer.get(key)
            check(key in self._versions and producer is not None and (
                producer.state in (WAITING, READY, RUNNING, RETRYING)
                or (producer.state is DONE and self._holds_pending(producer))),
                  f"{key!r} is held for a new version, but its producer is not at it and reads nothing held")
        for key, waiting in self._waiters.items():
            check(bool(waiting), f"an empty waiter set is kept for {key!r}")
            for rec in waiting:
                check(rec.state is WAITING and key in rec.missing, f"{rec.name!r} is listed as waiting for {key!r}")
        for key, attempts in self._blocked_waiters.items():
            for rec in attempts:
                check(key in rec.blocked_on, f"{rec.name!r} is listed as blocked on {key!r}")
        for name, pool in self._pools.items():
            usage = per_pool[name]
            check(pool.running == usage["running"], f"pool {name!r} counts {pool.running} running, "
                                                    f"records say {usage['running']}")
            check(pool.on_lent == usage["on_lent"], f"pool {name!r} counts {pool.on_lent} on lent slots, "
                                                    f"records say {usage['on_lent']}")
            check(pool.lent_out == usage["lent_out"], f"pool {name!r} counts {pool.lent_out} lent slots, "
                                                      f"records say {usage['lent_out']}")
            for r in set(pool.used) | set(usage["used"]):  # type: ignore[arg-type]
                check(abs(pool.used.get(r, 0.0) - usage["used"].get(r, 0.0)) < 1e-9,  # type: ignore[union-attr]
                      f"pool {name!r} counts {pool.used.get(r, 0.0):g} {r} in use, records say "
                      f"{usage['used'].get(r, 0.0):g}")  # type: ignore[union-attr]
            check(pool.running <= pool.held_most, f"pool {name!r} holds {pool.running} attempts, "
                                                  f"limit {pool.held_most}")
            check(len(pool.ready) == len(pool.queued) and all(k in pool.queued for k in pool.ready),
                  f"pool {name!r}: the ready heap and its queues disagree")


def _unindex(index: dict[str, dict[ComputationRecord, None]], keys: Iterable[str], rec: ComputationRecord) -> None:
    """Take `rec` out of `index` under each of `keys`, dropping entries left empty."""
    for key in keys:
        entries = index.get(key)
        if entries is not None:
            entries.pop(rec, None)
            if not entries:
                del index[key]


def _run_seq(run: str | None) -> int | None:
    """The run number in an output's recorded run (`seq:run_id`), or None when there is none or it is not one
    (the metadata field is anybody's to write: a malformed one counts as not written by a run)."""
    if not run:
        return None
    number, sep, rest = run.partition(":")
    return int(number) if sep and rest and number.isdigit() and len(number) < 19 else None


def _keys(keys: Collection[str]) -> str:
    """The first five keys, and how many more: a join's parts are named by their number, never all listed."""
    shown = ", ".join(repr(k) for k in itertools.islice(keys, 5))
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
