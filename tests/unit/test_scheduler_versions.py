"""A living bucket in the core: new versions of inputs make what read them run again (and stop where a result
comes out the same), re-declared GCL replaces and retires, deleted outputs are computed again, deleted inputs
are marked, reruns are asked for, and an output's recorded run tells at registration whether it is current.
Every step is followed by validate_state() (tests/unit/conftest.py)."""
from __future__ import annotations

import random

import pytest

from gcl_orchestrator.core import Scheduler, SchedulerConfig
from gcl_orchestrator.gcl import spec_from_mapping
from gcl_orchestrator.model import (
    Cancel,
    ComputationFailed,
    ComputationSucceeded,
    Dispatch,
    ObjectAvailable,
    ObjectRemoved,
    PoolSpec,
    Reject,
    RerunRequested,
    Settle,
    Stale,
    State,
    run_id,
    variant,
)


def spec(name, inputs=("in",), output=None, **fields):
    return spec_from_mapping({"computation": name, "inputs": list(inputs), "output": output or f"out/{name}",
                              "handler_type": fields.pop("handler_type", "h"), **fields})


def core(slots=4):
    return Scheduler(config=SchedulerConfig(pools=(PoolSpec("general", slots),), deadlock_grace_s=None),
                     rng=random.Random(0))


def obj(key, identity, *specs, stamp=None, run=None):
    return ObjectAvailable(key, tuple(specs), None, stamp or f"stamp-{identity}", identity, run)


def started(out):
    return [(i.spec.computation, i.attempt) for i in out if isinstance(i, Dispatch)]


def of(out, kind):
    return [i for i in out if isinstance(i, kind)]


def ok(c, name, identity, specs=(), now=1.0, stamp=None):
    rec = c.record(name)
    return c.handle([ComputationSucceeded(name, rec.running_attempt, stamp or f"stamp-{identity}", tuple(specs),
                                          output_identity=identity)], now)


def chain():
    """in -> [b] -> out/b -> [c] -> out/c, all done once."""
    c = core()
    c.handle([obj("in", "v1", spec("b"), spec("c", inputs=["out/b"]))], 0.0)
    ok(c, "b", "b1")
    ok(c, "c", "c1")
    assert c.record("c").state is State.DONE
    return c


def test_a_new_version_of_an_input_runs_what_reads_it_again_replacing_its_output():
    c = chain()
    out = c.handle([obj("in", "v2", spec("b"), spec("c", inputs=["out/b"]))], 2.0)
    assert of(out, Stale) == [Stale("b", "its input 'in' has a new version")]
    (dispatch,) = of(out, Dispatch)
    assert dispatch.spec.computation == "b" and dispatch.replaces == "stamp-b1" and dispatch.run_seq == 2
    assert dispatch.inputs == (("in", "v2"),)
    # its new output differs: what reads it runs again too
    assert started(ok(c, "b", "b2", now=3.0)) == [("c", 2)]


def test_a_result_that_comes_out_the_same_stops_the_propagation():
    c = chain()
    c.handle([obj("in", "v2", spec("b"), spec("c", inputs=["out/b"]))], 2.0)
    # byte-identical to the previous version (early cut-off), though written anew (a local store's new stamp)
    out = ok(c, "b", "b1", now=3.0, stamp="stamp-of-the-rewrite")
    assert started(out) == [] and of(out, Stale) == []
    assert c.record("c").state is State.DONE and c.record("c").attempts == 1


@pytest.mark.parametrize("event", [
    obj("in", "v1", spec("b"), spec("c", inputs=["out/b"]), stamp="a-new-stamp"),  # the same bytes and GCL again
    obj("in", "v1", spec("b"), spec("c", inputs=["out/b"])),  # a duplicate notification
])
def test_the_same_bytes_and_gcl_again_run_nothing(event):
    c = chain()
    assert c.handle([event], 2.0) == []


def test_an_input_that_changes_while_its_reader_runs_runs_it_again_once_that_attempt_reports():
    c = core()
    c.handle([obj("in", "v1", spec("b"))], 0.0)
    assert c.handle([obj("in", "v2", spec("b"))], 0.5) == []  # b is running: nothing to do yet
    out = ok(c, "b", "b1")
    assert [i.computation for i in of(out, Settle)] == ["b"] and started(out) == [("b", 2)]


def test_a_failed_computation_runs_again_when_its_input_has_a_new_version():
    from gcl_orchestrator.model import ComputationFailed

    c = core()
    c.handle([obj("in", "v1", spec("b"))], 0.0)
    c.handle([ComputationFailed("b", 1, "ValueError: bad row 7")], 1.0)
    assert c.record("b").state is State.FAILED
    out = c.handle([obj("in", "v2", spec("b"))], 2.0)  # the input, fixed
    assert started(out) == [("b", 2)] and c.record("b").last_error is None


def test_a_new_version_of_an_object_re_declares_what_it_carries():
    # Given an object whose GCL declares two computations, one of them refused for a reason fixed later
    c = core()
    c.handle([obj("in", "v1", spec("keep"), spec("drop"))], 0.0)
    ok(c, "keep", "k1")
    ok(c, "drop", "d1")
    # When a new version declares `keep` with other params, no longer `drop`, and a new one
    out = c.handle([obj("in", "v2", spec("keep", params={"rows": 10}), spec("fresh"))], 2.0)
    # Then `keep` runs again with its new spec, `fresh` runs, and `drop` is retired with its output kept
    assert sorted(started(out)) == [("fresh", 1), ("keep", 2)]
    assert c.record("keep").spec.params == {"rows": 10}
    retired = c.record("drop")
    assert retired.state is State.RETIRED and "no longer declares it; its output is kept (orphaned)" in retired.note
    assert c.is_available("out/drop")


def test_a_rejected_spec_fixed_in_a_new_version_of_its_object_runs_at_once():
    c = core()
    c.handle([ObjectAvailable("in", (), "line 1: inputs: must be a list", "s1", "v1")], 0.0)
    out = c.handle([obj("in", "v2", spec("fixed"))], 1.0)
    assert started(out) == [("fixed", 1)]


def test_another_object_declaring_an_existing_name_differently_is_still_refused():
    c = core()
    c.handle([obj("in", "v1", spec("b"))], 0.0)
    out = c.handle([obj("other", "o1", spec("b", params={"x": 1}))], 1.0)
    assert [type(i) for i in out] == [Reject] and "already declared differently (by 'in')" in out[0].reason


def recorded_run(name, inputs, identities, seq=1):
    return f"{seq}:{run_id(spec(name, inputs=inputs), identities)}"


def test_at_registration_an_output_computed_from_the_current_inputs_is_done_and_one_from_old_inputs_runs():
    # Given a store where b's output records the run it came from, and c's records a run from an older input
    current = recorded_run("b", ["in"], [("in", "v2")])
    old = recorded_run("c", ["in"], [("in", "v1")], seq=3)
    c = core()
    out = c.handle([obj("in", "v2"), obj("out/b", "b2", run=current), obj("out/c", "c1", run=old),
                    obj("out/by-hand", "h1"), obj("x", "x1", spec("b"), spec("c"),
                                                   spec("hand", output="out/by-hand"))], 0.0)
    # Then only c runs again, as its run number 4, replacing its output; a file put there by hand is trusted
    assert started(out) == [("c", 1)]
    (dispatch,) = of(out, Dispatch)
    assert dispatch.run_seq == 4 and dispatch.replaces == "stamp-c1"
    assert c.record("b").state is State.DONE and c.record("hand").state is State.DONE


def test_a_deleted_output_is_computed_again_and_created_afresh():
    c = chain()
    out = c.handle([ObjectRemoved("out/b")], 2.0)
    (dispatch,) = of(out, Dispatch)
    assert dispatch.spec.computation == "b" and dispatch.replaces is None
    assert "its output 'out/b' was deleted" in c.record("b").note


def test_a_deleted_input_leaves_outputs_in_place_marked_and_work_not_yet_run_waits_for_it_again():
    c = core(slots=1)
    c.handle([obj("in", "v1", spec("b"), spec("queued"))], 0.0)
    ok(c, "b", "b1")  # b is done; `queued` is running now
    c.handle([obj("more", "m1", spec("later", inputs=["in", "more"]))], 1.0)
    out = c.handle([ObjectRemoved("in")], 2.0)
    assert started(out) == []
    assert c.record("b").state is State.DONE and "computed from a deleted source: 'in'" in c.record("b").note
    assert c.record("later").state is State.WAITING and c.record("later").missing == {"in"}
    # the same file uploaded again: nothing runs again, the marks go
    c.handle([obj("in", "v1", spec("b"), spec("queued"))], 3.0)
    assert c.record("b").note == "" and c.record("b").attempts == 1


def test_a_rerun_runs_a_computation_again_and_with_downstream_what_follows_it_even_if_unchanged():
    c = chain()
    out = c.handle([RerunRequested("b", downstream=True, source="gclo rerun")], 2.0)
    assert started(out) == [("b", 2)]
    out = ok(c, "b", "b1", now=3.0)  # the same result: downstream runs anyway, as asked
    assert started(out) == [("c", 2)]
    assert of(c.handle([RerunRequested("nope", source="gclo rerun")], 4.0), Reject)


def test_a_late_report_of_an_older_run_changes_nothing():
    c = chain()
    c.handle([obj("in", "v2", spec("b"), spec("c", inputs=["out/b"]))], 2.0)  # b's run 2 starts (attempt 2)
    old = ComputationSucceeded("b", 1, "stamp-old", (), output_identity="b-old")
    assert c.handle([old], 2.5) == []
    assert c.record("b").state is State.RUNNING and c.record("b").running_attempt == 2


def test_a_retired_computations_running_attempt_is_cancelled():
    c = core()
    c.handle([obj("in", "v1", spec("b"))], 0.0)
    out = c.handle([obj("in", "v2")], 1.0)
    assert of(out, Cancel) == [Cancel("b", 1, "retired: 'in' no longer declares it")]
    assert c.record("b").state is State.RETIRED


@pytest.mark.parametrize("b_changes", [True, False])
def test_a_change_upstream_runs_each_computation_once_in_order(b_changes):
    # Given a diamond: c reads the input and b's output, which is computed from the input too
    c = core()
    c.handle([obj("in", "v1", spec("b"), spec("c", inputs=["in", "out/b"]))], 0.0)
    ok(c, "b", "b1")
    ok(c, "c", "c1")
    # When the input changes, c does not run on b's old output: it waits for b's new run
    out = c.handle([obj("in", "v2", spec("b"), spec("c", inputs=["in", "out/b"]))], 2.0)
    assert started(out) == [("b", 2)] and c.record("c").state is State.WAITING
    # Then once b has committed (a new result or the same one), c runs, once
    assert started(ok(c, "b", "b2" if b_changes else "b1", now=3.0)) == [("c", 2)]
    ok(c, "c", "c2", now=4.0)
    assert c.record("c").attempts == 2 and c.record("c").state is State.DONE


@pytest.mark.parametrize("b_changes", [True, False])
def test_a_change_two_steps_up_still_runs_each_computation_once(b_changes):
    # Given in -> [b] -> out/b -> [m] -> out/m, and d reading both the input and out/m
    specs = (spec("b"), spec("m", inputs=["out/b"]), spec("d", inputs=["in", "out/m"]))
    c = core()
    c.handle([obj("in", "v1", *specs)], 0.0)
    ok(c, "b", "b1")
    ok(c, "m", "m1")
    ok(c, "d", "d1")
    # When the input changes, d waits: out/m may change too, once b has run again
    out = c.handle([obj("in", "v2", *specs)], 2.0)
    assert started(out) == [("b", 2)] and c.record("d").state is State.WAITING
    out = ok(c, "b", "b2" if b_changes else "b1", now=3.0)
    if b_changes:  # m runs on b's new output, and d only after it
        assert started(out) == [("m", 2)]
        out = ok(c, "m", "m2", now=4.0)
    assert started(out) == [("d", 2)]
    ok(c, "d", "d2", now=5.0)
    assert c.record("d").attempts == 2 and c.record("m").attempts == (2 if b_changes else 1)


def test_a_rerun_that_no_pool_can_run_says_why_and_leaves_the_computation_as_it_was():
    c = core()
    gpu = spec("g", resources={"gpu": 1})
    c.handle([obj("in", "v1", gpu, spec("b"))], 0.0)
    assert c.record("g").state is State.FAILED
    ok(c, "b", "b1")
    out = c.handle([obj("in", "v2", gpu, spec("b"))], 1.0)  # a new input version: g cannot run still
    assert c.record("g").state is State.FAILED and "gpu=1" in c.record("g").last_error
    assert any("cannot run" in s.reason for s in of(out, Stale))
    # a done computation asked to run again where no pool can run it any more stays done, saying so
    c2 = core()
    c2.handle([obj("out/g", "g1"), obj("in", "v1", gpu)], 0.0)
    assert c2.record("g").state is State.DONE
    c2.handle([RerunRequested("g", source="gclo rerun")], 1.0)
    assert c2.record("g").state is State.DONE and "cannot run again" in c2.record("g").note


def test_a_retry_due_while_its_input_is_deleted_waits_for_the_input():
    c = core()
    c.handle([obj("in", "v1", spec("b", retry={"max_attempts": 3, "initial_delay_s": 1, "jitter_s": 0}))], 0.0)
    c.handle([ComputationFailed("b", 1, "boom")], 0.5)
    assert c.record("b").state is State.RETRYING
    c.handle([ObjectRemoved("in")], 0.6)
    assert started(c.handle([], 10.0)) == []
    assert c.record("b").state is State.WAITING and c.record("b").missing == {"in"}
    assert started(c.handle([obj("in", "v2", spec("b", retry={"max_attempts": 3, "initial_delay_s": 1, "jitter_s": 0}))], 11.0)) \
        == [("b", 2)]


@pytest.mark.parametrize("run", ["foo", ":", "x:y", "99999999999999999999999:z", ""])
def test_a_malformed_recorded_run_counts_as_not_written_by_a_run(run):
    c = core()
    out = c.handle([obj("in", "v1"), obj("out/b", "b1", run=run), obj("x", "x1", spec("b"))], 0.0)
    assert started(out) == [] and c.record("b").state is State.DONE


def test_a_recomputed_deleted_output_that_comes_out_different_reruns_its_readers():
    c = chain()
    c.handle([ObjectRemoved("out/b")], 2.0)
    assert "deleted source" in c.record("c").note
    out = ok(c, "b", "b2", now=3.0)  # its report comes before the object's own notification
    assert started(out) == [("c", 2)] and "deleted" not in c.record("c").note
    c.handle([obj("out/b", "b2", stamp="stamp-b2")], 3.1)
    assert c.record("c").attempts == 2


def test_a_failed_computation_that_succeeds_when_run_again_brings_back_what_waited_on_it():
    c = chain_failed()
    assert c.record("c").state is State.UPSTREAM_FAILED
    out = c.handle([RerunRequested("b", source="gclo rerun")], 5.0)
    assert started(out) == [("b", 2)] and c.record("c").state is State.WAITING
    assert started(ok(c, "b", "b1", now=6.0)) == [("c", 1)]


def test_a_rerun_of_an_upstream_failed_computation_says_what_it_waits_for_and_stays():
    c = chain_failed()
    out = c.handle([RerunRequested("c", source="gclo rerun")], 5.0)
    assert started(out) == [] and c.record("c").state is State.UPSTREAM_FAILED
    assert "upstream computation 'b' failed" in of(out, Stale)[0].reason


def chain_failed():
    c = core()
    c.handle([obj("in", "v1", spec("b", retry={"max_attempts": 1}), spec("c", inputs=["out/b"]))], 0.0)
    c.handle([ComputationFailed("b", 1, "boom", permanent=True)], 1.0)
    assert c.record("b").state is State.FAILED
    return c


def test_an_output_computed_by_an_alternative_is_current_at_restart():
    alt = spec("b", alternatives=[{"handler_type": "h2"}])
    primary, fallback = variant(alt, 0), variant(alt, 1)
    run = f"2:{run_id(fallback, [('in', 'v1')])}"
    c = core()
    out = c.handle([obj("in", "v1"), obj("out/b", "b1", run=run), obj("x", "x1", alt)], 0.0)
    assert started(out) == [] and c.record("b").state is State.DONE
    assert run_id(primary, [("in", "v1")]) != run.split(":")[1]
    assert c.record("b").run_seq == 2  # a rerun after the restart is run 3, newer than the recorded one
    (dispatch,) = of(c.handle([RerunRequested("b")], 1.0), Dispatch)
    assert dispatch.run_seq == 3


def test_what_waits_for_a_retired_computations_output_is_reported_as_stuck():
    c = Scheduler(config=SchedulerConfig(pools=(PoolSpec("general", 2),), deadlock_grace_s=5.0),
                  rng=random.Random(0))
    c.handle([obj("src", "s1", spec("b", inputs=["src"])), obj("in", "v1", spec("c", inputs=["in", "out/b"]))],
             0.0)
    c.handle([obj("src", "s2")], 0.5)  # b is retired before it produced anything; c can never run
    assert c.record("b").state is State.RETIRED
    out = c.handle([], 10.0)
    assert c.record("c").state is State.UPSTREAM_FAILED or c.record("c").state is State.FAILED, out
