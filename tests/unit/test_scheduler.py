"""The scheduling core, rule by rule: events in, instructions out, no I/O and no sleeps."""
from __future__ import annotations

import pytest

from gcl_orchestrator.core import Scheduler
from gcl_orchestrator.model import (
    ComputationFailed,
    ComputationSucceeded,
    Dispatch,
    ObjectAvailable,
    Reject,
    Settle,
    SpecsSubmitted,
    State,
)
from gcl_orchestrator.gcl import spec_from_mapping


def spec(name, inputs, output, priority="normal", handler_type="h", **extra):
    return spec_from_mapping(dict(computation=name, inputs=list(inputs), output=output, handler_type=handler_type,
                                  priority=priority, **extra))


def dispatched(instructions):
    return [i.spec.computation for i in instructions if isinstance(i, Dispatch)]


def arrive(key, *specs):
    return ObjectAvailable(key, tuple(specs))


def succeed(core, name, *specs):
    rec = core.record(name)
    return ComputationSucceeded(name, rec.attempts, "etag", tuple(specs))


# --- readiness -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("events, expected", [
    # a spec whose inputs all exist runs at once
    ([arrive("a", spec("c", ["a"], "b"))], ["c"]),
    # a spec waiting on a key that has not arrived does not run...
    ([arrive("a", spec("c", ["a", "x"], "b"))], []),
    # ...until it arrives, in the same batch or later
    ([arrive("a", spec("c", ["a", "x"], "b")), arrive("x")], ["c"]),
    # a spec with no inputs is ready at once
    ([SpecsSubmitted("cli", (spec("c", [], "b"),))], ["c"]),
    # a spec declared before its input's object appears
    ([SpecsSubmitted("cli", (spec("c", ["a"], "b"),)), arrive("a")], ["c"]),
])
def test_readiness(events, expected):
    core = Scheduler(slots=4)
    assert dispatched(core.handle(events, now=0.0)) == expected


def test_an_arrival_wakes_only_its_own_waiters():
    core = Scheduler(slots=10)
    core.handle([SpecsSubmitted("cli", tuple(spec(f"c{i}", [f"in{i}"], f"out{i}") for i in range(100)))], 0.0)
    assert dispatched(core.handle([arrive("in42")], 1.0)) == ["c42"]
    assert core.record("c41").state is State.WAITING and core.record("c41").missing == {"in41"}


def test_fan_in_waits_for_every_part():
    # Given a join over five parts
    core = Scheduler(slots=1)
    parts = [f"part{i}" for i in range(5)]
    core.handle([SpecsSubmitted("cli", (spec("join", parts, "total"),))], 0.0)
    # When four of five parts arrive, the join still waits for the last one
    core.handle([arrive(p) for p in parts[:4]], 1.0)
    assert core.record("join").missing == {"part4"}
    # Then the fifth makes it run
    assert dispatched(core.handle([arrive("part4")], 2.0)) == ["join"]


# --- dispatch order and capacity -------------------------------------------------------------------------------

def test_one_slot_runs_ready_work_by_priority_then_arrival():
    core = Scheduler(slots=1)
    specs = [spec("n1", ["a"], "o1"), spec("low", ["a"], "o2", "low"), spec("crit", ["a"], "o3", "critical"),
             spec("high", ["a"], "o4", "high"), spec("n2", ["a"], "o5"), spec("int", ["a"], "o6", 150)]
    order = dispatched(core.handle([SpecsSubmitted("cli", tuple(specs)), arrive("a")], 0.0))
    while True:
        running = [r.name for r in core.records() if r.state is State.RUNNING]
        if not running:
            break
        order += dispatched(core.handle([succeed(core, running[0])], 1.0))
    assert order == ["crit", "int", "high", "n1", "n2", "low"]


def test_never_more_running_than_slots():
    core = Scheduler(slots=3)
    out = core.handle([arrive("a", *(spec(f"c{i}", ["a"], f"o{i}") for i in range(10)))], 0.0)
    assert len(dispatched(out)) == 3
    assert core.counts()[State.READY] == 7
    assert len(dispatched(core.handle([succeed(core, "c0")], 1.0))) == 1


# --- completion and growth -------------------------------------------------------------------------------------

def test_success_registers_emitted_specs_and_makes_the_output_available():
    core = Scheduler(slots=4)
    core.handle([arrive("in", spec("first", ["in"], "mid"))], 0.0)
    out = core.handle([succeed(core, "first", spec("second", ["mid"], "end"))], 1.0)
    assert dispatched(out) == ["second"]
    assert core.record("first").state is State.DONE
    assert core.record("second").source == "mid"


def test_failure_is_recorded_and_dependents_are_upstream_failed_naming_it():
    core = Scheduler(slots=4)
    core.handle([arrive("in", spec("first", ["in"], "mid"), spec("second", ["mid"], "end"),
                        spec("third", ["end", "in"], "last"))], 0.0)
    out = [i for i in core.handle([ComputationFailed("first", 1, "boom")], 1.0) if isinstance(i, Settle)]
    assert [(i.computation, i.state) for i in out] == [("first", State.FAILED), ("second", State.UPSTREAM_FAILED),
                                                       ("third", State.UPSTREAM_FAILED)]
    rec = core.record("first")
    assert (rec.state, rec.attempts, rec.last_error) == (State.FAILED, 1, "boom")
    assert core.record("third").last_error == "upstream computation 'first' failed, so 'end' will not be produced"
    # a dependent declared later is upstream-failed at once
    late = core.handle([SpecsSubmitted("x", (spec("late", ["mid"], "z"), spec("later", ["z"], "zz")))], 2.0)
    assert [(i.computation, i.state) for i in late] == [("late", State.UPSTREAM_FAILED),
                                                       ("later", State.UPSTREAM_FAILED)]
    # still named after the computation that failed, not the one between
    assert core.record("later").last_error.startswith("upstream computation 'first' failed")


def test_results_for_an_attempt_never_made_or_an_unknown_computation_are_ignored():
    core = Scheduler(slots=1)
    core.handle([arrive("in", spec("c", ["in"], "out"))], 0.0)
    assert core.handle([ComputationSucceeded("c", 7, "e"), ComputationFailed("zzz", 1, "x")], 1.0) == []
    assert core.record("c").state is State.RUNNING


# --- idempotence: duplicates never run anything twice ----------------------------------------------------------

def test_duplicate_events_and_specs_run_nothing_twice():
    core = Scheduler(slots=4)
    s = spec("c", ["a"], "b")
    first = core.handle([arrive("a", s), arrive("a", s)], 0.0)
    again = core.handle([arrive("a", s), SpecsSubmitted("x", (s,))], 1.0)
    assert dispatched(first) == ["c"] and again == []
    core.handle([succeed(core, "c")], 2.0)
    assert core.handle([arrive("b"), arrive("a", s)], 3.0) == []
    assert core.record("c").attempts == 1


def test_existing_output_means_done_not_rerun():
    # Given a listing where both the input and the output already exist, handed over in one batch
    core = Scheduler(slots=4)
    out = core.handle([arrive("in", spec("c", ["in"], "out")), arrive("out")], 0.0)
    # Then the computation is done without running, even though its input came first in the batch
    assert dispatched(out) == []
    assert core.record("c").state is State.DONE and core.record("c").attempts == 0
    assert any(isinstance(i, Settle) and i.state is State.DONE for i in out)


def test_output_written_by_someone_else_settles_a_waiting_computation():
    core = Scheduler(slots=4)
    core.handle([arrive("a", spec("c", ["a", "never"], "out"))], 0.0)
    core.handle([arrive("out")], 1.0)
    assert core.record("c").state is State.DONE
    assert core.handle([arrive("never")], 2.0) == []


# --- rejections ------------------------------------------------------------------------------------------------

def test_same_name_with_a_different_spec_is_rejected_naming_both_sources():
    core = Scheduler(slots=4)
    core.handle([arrive("a", spec("c", ["a"], "b"))], 0.0)
    out = core.handle([arrive("x", spec("c", ["x"], "y"))], 1.0)
    assert [type(i) for i in out] == [Reject]
    assert "'c'" in out[0].reason and "'a'" in out[0].reason and out[0].source == "x"


def test_two_producers_for_one_output_are_rejected():
    core = Scheduler(slots=4)
    core.handle([SpecsSubmitted("s1", (spec("p1", [], "same"),))], 0.0)
    out = core.handle([SpecsSubmitted("s2", (spec("p2", [], "same"),))], 1.0)
    assert isinstance(out[0], Reject) and "already produced by computation 'p1'" in out[0].reason


@pytest.mark.parametrize("existing, closing, cycle", [
    # two computations feeding each other
    ([spec("ab", ["a"], "b")], spec("ba", ["b"], "a"), "a -> [ab] -> b -> [ba] -> a"),
    # a longer loop, closed by the last spec
    ([spec("ab", ["a"], "b"), spec("bc", ["b"], "c")], spec("ca", ["c", "z"], "a"),
     "a -> [ab] -> b -> [bc] -> c -> [ca] -> a"),
])
def test_a_spec_that_would_close_a_cycle_is_rejected_naming_the_cycle(existing, closing, cycle):
    core = Scheduler(slots=4)
    core.handle([SpecsSubmitted("cli", tuple(existing))], 0.0)
    out = core.handle([arrive("later", closing)], 1.0)
    rejects = [i for i in out if isinstance(i, Reject)]
    assert len(rejects) == 1 and cycle in rejects[0].reason and rejects[0].source == "later"
    assert core.record(closing.computation) is None
    assert core.rejections[0].computation == closing.computation


def test_a_cycle_emitted_by_a_handler_is_rejected_and_the_rest_proceeds():
    core = Scheduler(slots=4)
    core.handle([arrive("in", spec("first", ["in"], "mid"))], 0.0)
    out = core.handle([succeed(core, "first", spec("back", ["mid"], "in"), spec("fine", ["mid"], "end"))], 1.0)
    assert dispatched(out) == ["fine"]
    assert [i.computation for i in out if isinstance(i, Reject)] == ["back"]


def test_gcl_errors_on_an_object_are_recorded_once_and_the_object_still_counts():
    core = Scheduler(slots=4)
    core.handle([SpecsSubmitted("cli", (spec("c", ["bad"], "out"),))], 0.0)
    out = core.handle([ObjectAvailable("bad", (), "line 1: priority: nope"),
                       ObjectAvailable("bad", (), "line 1: priority: nope")], 1.0)
    assert dispatched(out) == ["c"]
    assert [(r.source, r.reason) for r in core.rejections] == [("bad", "line 1: priority: nope")]


# --- queries used by the runtime -------------------------------------------------------------------------------

def test_quiescence_and_waiting_report():
    core = Scheduler(slots=1)
    assert core.is_quiescent()
    core.handle([arrive("a", spec("c", ["a"], "b"), spec("w", ["b", "never"], "z"))], 0.0)
    assert not core.is_quiescent()
    core.handle([succeed(core, "c")], 1.0)
    assert core.is_quiescent()
    assert [(r.name, r.missing) for r in core.waiting()] == [("w", {"never"})]
    assert core.counts() == {State.WAITING: 1, State.READY: 0, State.RUNNING: 0, State.RETRYING: 0, State.DONE: 1,
                             State.FAILED: 0, State.UPSTREAM_FAILED: 0, State.RETIRED: 0}


def test_cost_per_arrival_does_not_depend_on_graph_size():
    # A long chain registered link by link: each registration and arrival touches O(1) state. Checked by
    # counting cycle-search walks, not by timing.
    core = Scheduler(slots=1)
    walks = 0
    original = core._find_cycle

    def counting(s):
        nonlocal walks
        result = original(s)
        walks += bool(core._consumers.get(s.output))
        return result

    core._find_cycle = counting
    core.handle([arrive("k0", spec("c0", ["k0"], "k1"))], 0.0)
    for i in range(1, 2000):
        core.handle([succeed(core, f"c{i - 1}", spec(f"c{i}", [f"k{i}"], f"k{i + 1}"))], float(i))
    assert walks == 0
    assert core.counts()[State.DONE] == 1999
