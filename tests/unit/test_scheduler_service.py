"""The core as a long-running service needs it: the commit is the fact in every order of events, handlers that
wait are woken by the core, submissions are answered, slot lending is bounded, waits that cannot be satisfied
are ended, and in service mode missing inputs stall instead of failing. Every step is followed by
validate_state() (tests/unit/conftest.py)."""
from __future__ import annotations

import random

import pytest

from gcl_orchestrator.core import Scheduler, SchedulerConfig
from gcl_orchestrator.core.scheduler import TRANSITIONS, InvariantError
from gcl_orchestrator.gcl import spec_from_mapping
from gcl_orchestrator.model import (
    AttemptFailed,
    Cancel,
    ComputationBlocked,
    ComputationFailed,
    ComputationResumed,
    ComputationSucceeded,
    Deadlock,
    Dispatch,
    FrozenDict,
    KeyOutcome,
    ObjectAvailable,
    PoolSpec,
    ReadGcl,
    Reply,
    Settle,
    SpecsSubmitted,
    Stalled,
    State,
    SubmitAnswer,
    WaitOver,
)


def spec(name, inputs=("in",), output=None, **fields):
    return spec_from_mapping({"computation": name, "inputs": list(inputs), "output": output or f"out/{name}",
                              "handler_type": fields.pop("handler_type", "h"), **fields})


def core(slots=1, grace=None, missing="fail", capacity=None, prefetch=0):
    pool = PoolSpec("general", slots, FrozenDict(capacity or {}))
    return Scheduler(config=SchedulerConfig(pools=(pool,), deadlock_grace_s=grace, missing_inputs=missing,
                                            prefetch=prefetch, commit_grace_s=5.0), rng=random.Random(0))


def started(out):
    return [(i.spec.computation, i.attempt) for i in out if isinstance(i, Dispatch)]


def settled(out):
    return [(i.computation, i.state) for i in out if isinstance(i, Settle)]


def of(out, kind):
    return [i for i in out if isinstance(i, kind)]


def submit(c, *specs, now=0.0):
    return c.handle([SpecsSubmitted("test", tuple(specs)), ObjectAvailable("in")], now)


def success(name, attempt, specs=(), etag="e1"):
    return ComputationSucceeded(name, attempt, etag, tuple(specs))


# --- the commit is the fact ------------------------------------------------------------------------------------

def timed_out_once(c):
    """`slow` (retried after 1 s) and its dependent `next`; attempt 1 of `slow` has timed out at t=5."""
    submit(c, spec("slow", timeout_s=5, retry={"max_attempts": 3, "initial_delay_s": 1}),
           spec("next", inputs=["out/slow"]))
    c.handle([], 5.0)
    assert c.record("slow").state is State.RETRYING


def test_an_attempt_that_committed_and_then_timed_out_is_done_when_its_late_report_comes():
    c = core(slots=2)
    timed_out_once(c)
    out = c.handle([success("slow", 1)], 5.5)
    assert settled(out) == [("slow", State.DONE)] and started(out) == [("next", 1)]
    assert c.handle([], 10.0) == []  # the retry that was due is void
    assert c.record("slow").attempts == 1


def test_a_late_success_of_an_earlier_attempt_cancels_the_attempt_running_now():
    c = core(slots=2)
    timed_out_once(c)
    assert started(c.handle([], 6.0)) == [("slow", 2)]
    out = c.handle([success("slow", 1)], 6.5)
    assert of(out, Cancel) == [Cancel("slow", 2, "attempt 1 committed the output")]
    assert settled(out) == [("slow", State.DONE)] and started(out) == [("next", 1)]
    assert c.record("slow").note == "attempt 1 committed its output"
    # whatever attempt 2 reports afterwards changes nothing
    assert c.handle([ComputationFailed("slow", 2, "cancelled"), success("slow", 2)], 7.0) == []
    assert c.record("slow").state is State.DONE


def test_an_output_that_appears_while_its_attempt_runs_lets_dependents_run_at_once_and_settles_on_the_report():
    # Given a running computation whose output is noticed (a notification, a listing) before its report arrives
    c = core(slots=2)
    submit(c, spec("p"), spec("reader", inputs=["out/p"]))
    out = c.handle([ObjectAvailable("out/p", None, None, "e1")], 1.0)
    # Then its dependent runs at once, and the attempt, which is about to report, is left alone
    assert started(out) == [("reader", 1)] and not of(out, Cancel) and not of(out, ReadGcl)
    # When the report comes, with what the attempt emitted
    out = c.handle([success("p", 1, [spec("grown", inputs=["out/p"])], etag="e1")], 1.1)
    # Then it settles once, as its own commit, and what it emitted runs
    assert settled(out) == [("p", State.DONE)] and started(out) == [("grown", 1)] and not of(out, ReadGcl)
    assert c.record("p").produced_by == "p"


def test_an_attempt_that_never_reports_after_its_output_appeared_is_cancelled_after_the_grace_and_its_gcl_read():
    c = core(slots=2)
    submit(c, spec("p"))
    c.handle([ObjectAvailable("out/p", None, None, "e1")], 1.0)
    assert c.next_wakeup() == 6.0
    out = c.handle([], 6.0)
    assert of(out, Cancel) == [Cancel("p", 1, "its output is there already")] and of(out, ReadGcl) == [
        ReadGcl("out/p")]
    assert settled(out) == [("p", State.DONE)] and "did not report; it was cancelled" in c.record("p").note
    # the metadata, once read, is not a duplicate of the version already seen
    out = c.handle([ObjectAvailable("out/p", (spec("grown", inputs=["out/p"]),), None, "e1")], 6.5)
    assert started(out) == [("grown", 1)]


def test_an_attempt_that_fails_after_its_output_appeared_is_not_retried():
    c = core(slots=2)
    submit(c, spec("p", retry={"max_attempts": 3}))
    c.handle([ObjectAvailable("out/p", None, None, "e1")], 1.0)
    out = c.handle([ComputationFailed("p", 1, "crashed after the commit", worker_lost=True)], 1.5)
    assert settled(out) == [("p", State.DONE)] and of(out, ReadGcl) == [ReadGcl("out/p")]
    assert c.record("p").attempts == 1 and "not retried" in c.record("p").note


def test_an_output_that_appears_after_its_computation_failed_settles_it_and_revives_its_dependents():
    c = core(slots=2)
    submit(c, spec("p"), spec("mid", inputs=["out/p"]), spec("end", inputs=["out/mid"]))
    c.handle([ComputationFailed("p", 1, "boom")], 1.0)
    assert c.record("end").state is State.UPSTREAM_FAILED
    out = c.handle([ObjectAvailable("out/p", (), None, "e9")], 2.0)
    assert settled(out) == [("p", State.DONE)] and started(out) == [("mid", 1)]
    assert c.record("end").state is State.WAITING and c.record("end").missing == {"out/mid"}
    assert started(c.handle([success("mid", 1)], 3.0)) == [("end", 1)]


def test_a_dependent_with_another_failed_input_stays_upstream_failed():
    c = core(slots=2)
    submit(c, spec("a"), spec("b"), spec("join", inputs=["out/a", "out/b"]))
    c.handle([ComputationFailed("a", 1, "x"), ComputationFailed("b", 1, "y")], 1.0)
    c.handle([ObjectAvailable("out/a", (), None, "e")], 2.0)
    rec = c.record("join")
    assert rec.state is State.UPSTREAM_FAILED and "'b' failed" in rec.last_error


@pytest.mark.parametrize("order", ["report first", "notification first"])
def test_report_and_notification_in_either_order_settle_once_and_register_once(order):
    c = core(slots=2)
    submit(c, spec("p"))
    report = success("p", 1, [spec("q", inputs=["out/p"])], etag="v1")
    notification = ObjectAvailable("out/p", None, None, "v1")
    events = [report, notification] if order == "report first" else [notification, report]
    out = c.handle(events[:1], 1.0) + c.handle(events[1:], 1.1)
    assert settled(out) == [("p", State.DONE)] and started(out) == [("q", 1)] and not of(out, ReadGcl)
    assert c.handle([notification], 1.2) == []  # a duplicate notification


def test_a_key_noticed_without_metadata_and_no_attempt_to_report_it_is_read():
    c = core()
    assert c.handle([ObjectAvailable("dropped.csv", None, None, "e")], 0.0) == [ReadGcl("dropped.csv")]
    assert not c.knows("dropped.csv", "e")  # its version is known, its GCL is not yet: not a duplicate
    c.handle([ObjectAvailable("dropped.csv", (), None, "e")], 0.5)
    assert c.knows("dropped.csv", "e") and not c.knows("dropped.csv", "other")


def test_a_new_version_of_a_key_registers_the_specs_it_carries():
    # a GCL that was rejected, fixed and uploaded again (new bytes, new etag) is read and registered
    c = core()
    c.handle([ObjectAvailable("x.csv", (), "line 1: inputs: must be a list", "v1")], 0.0)
    out = c.handle([ObjectAvailable("x.csv", (spec("fixed", inputs=["x.csv"]),), None, "v2")], 1.0)
    assert started(out) == [("fixed", 1)]


# --- waiting handlers ----------------------------------------------------------------------------------------

def blocked(c, name, *keys, wait_id=1, now=1.0):
    return c.handle([ComputationBlocked(name, c.record(name).running_attempt, keys, wait_id)], now)


def test_a_wait_for_keys_that_exist_is_answered_at_once_without_lending_anything():
    c = core(slots=1)
    submit(c, spec("parent"), spec("other"))
    assert blocked(c, "parent", "in") == [Reply("parent", 1, WaitOver(1))]
    assert c.record("parent").blocked_on == set()


def test_a_handler_waiting_for_a_child_that_fails_is_told_at_once_with_the_childs_error():
    c = core(slots=2)
    submit(c, spec("parent"))
    c.handle([SpecsSubmitted("submitted by parent", (spec("child", output="child.out"),))], 1.0)
    blocked(c, "parent", "child.out")
    out = c.handle([ComputationFailed("child", 1, "ValueError: bad row")], 2.0)
    assert of(out, Reply) == [Reply("parent", 1, WaitOver(1, (KeyOutcome("child.out", "child", "failed",
                                                                          "ValueError: bad row"),)))]
    # and a wait that starts after the failure is answered the same way
    out = blocked(c, "parent", "child.out", wait_id=2, now=3.0)
    assert out == [Reply("parent", 1, WaitOver(2, (KeyOutcome("child.out", "child", "failed",
                                                              "ValueError: bad row"),)))]


def test_what_the_awaited_work_waits_for_also_runs_on_the_lent_slot():
    c = core(slots=1)
    submit(c, spec("parent"))
    c.handle([SpecsSubmitted("p", (spec("prep", inputs=[], output="prep.out"),
                                   spec("child", inputs=["prep.out"], output="child.out")))], 1.0)
    out = blocked(c, "parent", "child.out")
    assert [(i.spec.computation, i.lent) for i in of(out, Dispatch)] == [("prep", True)]
    out = c.handle([success("prep", 1)], 2.0)
    assert [(i.spec.computation, i.lent) for i in of(out, Dispatch)] == [("child", True)]
    out = c.handle([success("child", 1)], 3.0)
    assert of(out, Reply) == [Reply("parent", 1, WaitOver(1))]


def test_two_hundred_parents_waiting_for_their_children_in_a_two_slot_pool_never_run_more_than_four_at_once():
    # Given 200 parents, each of which submits one child and waits for it, in a pool of 2 slots
    c = core(slots=2)
    submit(c, *(spec(f"parent{i}") for i in range(200)))
    most = 0
    now = 1.0
    c.handle([], now)
    running = {r.name for r in c.records() if r.running_attempt is not None}
    for _ in range(2000):  # steps, bounded: a core that stops lending would spin here for ever
        if not running:
            break
        now += 1.0
        events = []
        for name in sorted(running):
            rec = c.record(name)
            if name.startswith("parent") and c.record("child" + name[6:]) is None:
                events.append(SpecsSubmitted(f"by {name}", (spec("child" + name[6:], inputs=[],
                                                                 output=f"child{name[6:]}.out"),)))
                events.append(ComputationBlocked(name, rec.running_attempt, (f"child{name[6:]}.out",), 1))
            elif not rec.blocked_on:
                events.append(success(name, rec.running_attempt))
        c.handle(events, now)
        running = {r.name for r in c.records() if r.running_attempt is not None}
        most = max(most, len(running))
    # Then everything finished, and at most each slot's parent plus the child it lent its slot to ran at once
    assert c.counts()[State.DONE] == 400
    assert most <= 4


def test_work_a_handler_waits_for_that_was_dispatched_ahead_into_a_queue_moves_onto_the_lent_slot():
    from gcl_orchestrator.model import Expedite

    # Given one slot with room to dispatch ahead: the child is dispatched at once, but may sit in the executor's
    # queue behind the parent that submitted it
    c = core(slots=1, prefetch=1)
    submit(c, spec("parent"))
    out = c.handle([SpecsSubmitted("p", (spec("child", inputs=[], output="child.out"),))], 1.0)
    assert [(i.spec.computation, i.lent) for i in of(out, Dispatch)] == [("child", False)]
    # When the parent waits for it, the child is moved onto the slot the parent lends
    out = blocked(c, "parent", "child.out")
    assert of(out, Expedite) == [Expedite("child", 1)] and c.record("child").lent
    assert of(c.handle([success("child", 1)], 2.0), Reply) == [Reply("parent", 1, WaitOver(1))]


def test_a_parent_holding_the_only_gpu_while_waiting_for_a_child_that_needs_it_has_its_wait_ended():
    c = core(slots=2, capacity={"gpu": 1})
    submit(c, spec("parent", resources={"gpu": 1}))
    c.handle([SpecsSubmitted("p", (spec("child", inputs=[], output="child.out", resources={"gpu": 1}),))], 1.0)
    out = blocked(c, "parent", "child.out")
    (deadlock,) = of(out, Deadlock)
    assert deadlock.kind == "held-resources" and deadlock.computations == ("parent", "child")
    assert "'parent' waits for 'child.out' while holding resources that 'child' needs (gpu=1" in \
        deadlock.explanation
    assert of(out, Reply) == [Reply("parent", 1, WaitOver(1, (), deadlock.explanation))]
    # the parent's handler gives up (its attempt fails); the gpu is free and the child runs
    assert started(c.handle([ComputationFailed("parent", 1, "DeadlockError")], 2.0)) == [("child", 1)]


def test_a_handler_that_stops_waiting_by_itself_takes_its_slot_back():
    c = core(slots=1)
    submit(c, spec("parent"), spec("queued"))
    blocked(c, "parent", "never.txt")
    assert c.handle([ComputationResumed("parent", 1)], 2.0) == []
    assert c.record("parent").blocked_on == set() and c.record("queued").state is State.READY


def test_a_wait_for_a_key_nothing_produces_ends_after_the_grace_in_a_batch_run():
    c = core(slots=1, grace=30.0)
    submit(c, spec("parent"))
    blocked(c, "parent", "never.txt", now=0.0)
    assert c.next_wakeup() == 30.0
    out = c.handle([], 30.0)
    (deadlock,) = of(out, Deadlock)
    assert of(out, Reply) == [Reply("parent", 1, WaitOver(1, (), "no computation produces 'never.txt' and "
                                                                 "nothing arrived for 30s"))]
    assert deadlock.computations == ("parent",)


def test_in_service_mode_a_wait_for_a_key_nothing_produces_is_reported_as_stalled_and_goes_on():
    c = core(slots=1, grace=30.0, missing="wait")
    submit(c, spec("parent"))
    blocked(c, "parent", "later.txt", now=0.0)
    out = c.handle([], 30.0)
    assert [type(i) for i in out] == [Stalled] and out[0].computations == ("parent",)
    out = c.handle([ObjectAvailable("later.txt", (), None, "e")], 200.0)
    assert out == [Reply("parent", 1, WaitOver(1))]


# --- submissions are answered ----------------------------------------------------------------------------------

def test_a_submission_is_answered_with_the_state_of_each_computation_or_why_it_was_refused():
    c = core(slots=1)
    submit(c, spec("parent"), spec("taken", inputs=[], output="taken.out"))
    request = ("parent", 1, 7)
    out = c.handle([SpecsSubmitted("by parent", (spec("child", inputs=["in"], output="child.out"),
                                                 spec("dup", inputs=[], output="taken.out"),
                                                 spec("loop", inputs=["out/parent"], output="in")),
                                   request=request)], 1.0)
    (reply,) = of(out, Reply)
    assert reply.computation == "parent" and reply.attempt == 1
    assert reply.message.request_id == 7
    assert reply.message.accepted == (("child", "ready"),)
    rejected = dict(reply.message.rejected)
    assert "already produced by computation 'taken'" in rejected["dup"]
    assert "would close a cycle" in rejected["loop"]
    assert isinstance(reply.message, SubmitAnswer)


# --- service mode: waiting for an upload -----------------------------------------------------------------------

def test_in_service_mode_a_join_waiting_for_tomorrows_file_is_stalled_once_and_runs_when_it_arrives():
    c = core(slots=1, grace=60.0, missing="wait")
    submit(c, spec("join", inputs=["in", "tomorrow.csv"]), spec("after", inputs=["out/join"]))
    out = c.handle([], 60.0)
    assert [type(i) for i in out] == [Stalled]
    assert "'join' waits for 'tomorrow.csv'" in out[0].explanation
    rec = c.record("join")
    assert rec.state is State.WAITING and rec.stalled and "stalled" in rec.note
    assert c.handle([], 120.0) == []  # reported once
    out = c.handle([ObjectAvailable("tomorrow.csv", (), None, "e")], 180.0)
    assert started(out) == [("join", 1)] and not c.record("join").stalled


def test_in_a_batch_run_the_same_join_fails_after_the_grace():
    c = core(slots=1, grace=60.0, missing="fail")
    submit(c, spec("join", inputs=["in", "tomorrow.csv"]))
    assert settled(c.handle([], 60.0)) == [("join", State.FAILED)]


# --- failed attempts say what comes next -----------------------------------------------------------------------

def test_each_failed_attempt_says_what_follows_it():
    c = core(slots=1)
    submit(c, spec("x", retry={"max_attempts": 2, "initial_delay_s": 3},
                   alternatives=[{"handler_type": "plan_b", "computation": "x-b"}]))
    assert of(c.handle([ComputationFailed("x", 1, "e1")], 1.0), AttemptFailed) == [
        AttemptFailed("x", 1, "e1", "attempt 2 in 3s", 3.0)]
    c.handle([], 4.0)
    assert of(c.handle([ComputationFailed("x", 2, "e2")], 5.0), AttemptFailed) == [
        AttemptFailed("x", 2, "e2", "alternative 'x-b' next")]
    c.handle([ComputationFailed("x", 3, "b1", permanent=True)], 6.0)
    assert c.record("x").state is State.FAILED


# --- the transition table and the invariants -------------------------------------------------------------------

def test_a_change_outside_the_transition_table_is_refused():
    assert (State.DONE, State.RUNNING) not in TRANSITIONS
    c = core()
    submit(c, spec("a"))
    c.handle([success("a", 1)], 1.0)
    with pytest.raises(InvariantError, match="cannot go from done to running"):
        c._transition(c.record("a"), State.RUNNING, 2.0, [])


@pytest.mark.parametrize("corrupt, message", [
    (lambda c: c._counts.__setitem__(State.DONE, 5), "state counts"),
    (lambda c: c._pools["general"].__setattr__("running", 0), "counts 0 running"),
    (lambda c: c._waiters.clear(), "missing from the waiters"),
    (lambda c: c.record("w").missing.add("in"), "which is available"),
])
def test_validate_state_finds_a_table_that_disagrees_with_the_records(corrupt, message):
    c = core(slots=1)
    submit(c, spec("r"), spec("w", inputs=["in", "later"]))
    c.validate_state()
    corrupt(c)
    with pytest.raises(InvariantError, match=message):
        c.validate_state()
