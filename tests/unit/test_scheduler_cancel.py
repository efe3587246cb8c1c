"""Cancel as the core sees it: a computation that has not settled fails as cancelled from any state (a running
attempt is cancelled and its slot given back), its dependents are upstream-failed, a late report of the cancelled
attempt changes nothing, an output that comes anyway is the fact, and a cancel after the end changes nothing.
The core also records every state change when asked to (the HTTP API's event stream). validate_state() follows
every step (tests/unit/conftest.py)."""
from __future__ import annotations

from gcl_orchestrator.model import (
    AttemptsRestored,
    Cancel,
    CancelRequested,
    ComputationFailed,
    ComputationSucceeded,
    ObjectAvailable,
    Reject,
    RerunRequested,
    State,
)

from .test_scheduler_service import core, of, settled, spec, started, submit


def test_a_running_computation_cancelled_stops_its_attempt_fails_and_upstream_fails_its_dependents():
    c = core(slots=1)
    out = submit(c, spec("long"), spec("after", inputs=["out/long"]), spec("other"))
    assert started(out) == [("long", 1)]
    out = c.handle([CancelRequested("long", "gclo cancel by ann")], 1.0)
    assert [(i.computation, i.attempt) for i in of(out, Cancel)] == [("long", 1)]
    assert c.record("long").state is State.FAILED
    assert c.record("long").last_error == "cancelled (gclo cancel by ann)"
    assert c.record("long").cancelled
    assert c.record("after").state is State.UPSTREAM_FAILED
    assert started(out) == [("other", 1)]  # the slot went back at once, to the next ready work
    late = c.handle([ComputationFailed("long", 1, "killed")], 2.0)  # the cancelled attempt's own report
    assert settled(late) == [] and c.record("long").state is State.FAILED


def test_waiting_ready_and_retrying_computations_can_be_cancelled():
    c = core(slots=1)
    submit(c, spec("busy"), spec("queued"), spec("waits", inputs=["never"]),
           spec("flaky", retry={"max_attempts": 3, "initial_delay_s": 100}))
    assert c.record("queued").state is State.READY
    c.handle([CancelRequested("queued"), CancelRequested("waits")], 1.0)
    assert c.record("queued").state is State.FAILED and c.record("waits").state is State.FAILED
    c.handle([ComputationSucceeded("busy", 1, "e1", ())], 2.0)
    assert c.record("flaky").state is State.RUNNING
    c.handle([ComputationFailed("flaky", c.record("flaky").attempts, "boom")], 3.0)
    assert c.record("flaky").state is State.RETRYING
    c.handle([CancelRequested("flaky")], 4.0)
    assert c.record("flaky").state is State.FAILED
    assert c.handle([], 200.0) == [] and c.record("flaky").state is State.FAILED  # its retry timer is void


def test_a_cancel_after_the_end_or_of_an_unknown_name_changes_nothing():
    c = core(slots=1)
    submit(c, spec("a"))
    c.handle([ComputationSucceeded("a", 1, "e1", ())], 1.0)
    assert of(c.handle([CancelRequested("a")], 2.0), Cancel) == []
    assert c.record("a").state is State.DONE
    out = c.handle([CancelRequested("nobody", "api")], 3.0)
    assert [r.reason for r in of(out, Reject)] == ["no computation 'nobody' to cancel"]


def test_an_output_committed_by_the_cancelled_attempt_anyway_settles_it_as_done():
    c = core(slots=1)
    submit(c, spec("a"), spec("b", inputs=["out/a"]))
    c.handle([CancelRequested("a")], 1.0)
    assert c.record("b").state is State.UPSTREAM_FAILED
    c.handle([ObjectAvailable("out/a", (), None, "e1")], 2.0)  # the commit is the fact
    assert c.record("a").state is State.DONE and not c.record("a").cancelled
    assert c.record("b").state is State.RUNNING


def test_a_cancelled_computation_runs_again_when_a_rerun_is_asked_for():
    c = core(slots=1)
    submit(c, spec("a"))
    c.handle([CancelRequested("a")], 1.0)
    out = c.handle([RerunRequested("a")], 2.0)
    assert started(out) == [("a", 2)] and not c.record("a").cancelled


def test_a_cancel_kept_by_the_journal_keeps_the_computation_failed_after_a_restart():
    c = core(slots=1)
    out = c.handle([ObjectAvailable("in"), ObjectAvailable("g", (spec("a"), spec("b", inputs=["out/a"])), None,
                                                               "e1"),
                    AttemptsRestored("a", 1, errors=("attempt 1 (a): cancelled (api)",), cancelled=True)], 0.0)
    assert started(out) == []
    assert c.record("a").state is State.FAILED and c.record("a").last_error == "attempt 1 (a): cancelled (api)"
    assert c.record("b").state is State.UPSTREAM_FAILED


def test_state_changes_are_recorded_in_order_only_when_asked_for():
    c = core(slots=1)
    submit(c, spec("quiet"))
    assert c.changes is None
    c.changes = []
    c.handle([ComputationSucceeded("quiet", 1, "e1", ()), ObjectAvailable("g", (spec("x", inputs=["out/quiet"]),),
                                                                          None, "e2")], 5.0)
    assert c.changes == [("quiet", State.DONE, 5.0), ("x", State.READY, 5.0), ("x", State.RUNNING, 5.0)]


def test_refusals_name_a_cycle_the_submitted_specs_close_among_themselves_and_register_nothing():
    c = core(slots=1)
    a, b = spec("ca", inputs=["out/cb"]), spec("cb", inputs=["out/ca"])
    refused = c.refusals("api", [spec("free"), a, b])
    assert refused == [("ca", "computation 'ca' is part of a cycle: ca -> cb -> ca")]
    assert c.record("ca") is None and len(c) == 0
    assert c.refusals("api", [spec("x", inputs=["out/y"]), spec("y")]) == []  # a chain is no cycle
