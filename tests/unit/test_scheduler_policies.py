"""Adaptive scheduling in the pure core, rule by rule: priorities and ageing, resources and pools, retries,
time-outs, alternatives, upstream failure, deadlocks and completion notifications. Events in, instructions
out, time passed in; no sleeps."""
from __future__ import annotations

import random


from gcl_orchestrator.core import Scheduler, SchedulerConfig
from gcl_orchestrator.model import (
    AttemptFailed,
    CapacityChanged,
    Cancel,
    ComputationFailed,
    ComputationSucceeded,
    Deadlock,
    Dispatch,
    FrozenDict,
    Notify,
    ObjectAvailable,
    PoolSpec,
    Settle,
    SpecsSubmitted,
    State,
)
from gcl_orchestrator.gcl import spec_from_mapping


def spec(name, inputs=("in",), output=None, **fields):
    return spec_from_mapping({"computation": name, "inputs": list(inputs), "output": output or f"out/{name}",
                              "handler_type": fields.pop("handler_type", "h"), **fields})


def core(slots=1, pools=None, grace=None, ageing=1.0, seed=0):
    config = SchedulerConfig(pools=tuple(pools or (PoolSpec("general", slots),)), ageing_per_s=ageing,
                             deadlock_grace_s=grace)
    return Scheduler(config=config, rng=random.Random(seed))


def dispatches(instructions):
    return [(i.spec.computation, i.attempt) for i in instructions if isinstance(i, Dispatch)]


def names(instructions):
    return [i.spec.computation for i in instructions if isinstance(i, Dispatch)]


def submit(c, *specs, now=0.0):
    return c.handle([SpecsSubmitted("test", tuple(specs)), ObjectAvailable("in")], now)


def ok(c, name, now, specs=(), subscriber=None):
    return c.handle([ComputationSucceeded(name, c.record(name).attempts, "etag", tuple(specs),
                                          subscriber=subscriber)], now)


def fail(c, name, now, error="boom", permanent=False, worker_lost=False):
    return c.handle([ComputationFailed(name, c.record(name).attempts, error, permanent, worker_lost=worker_lost)],
                    now)


def run_all(c, first, now=1.0):
    """Complete whatever runs, one at a time, and return the order in which things were dispatched."""
    order = names(first)
    while True:
        running = [r.name for r in c.records() if r.state is State.RUNNING]
        if not running:
            return order
        order += names(ok(c, running[0], now))


# --- priorities and ageing -------------------------------------------------------------------------------------

def test_with_one_worker_eight_ready_together_run_critical_high_normal_low():
    c = core(slots=1)
    levels = ["low", "normal", "critical", "high"] * 2
    specs = [spec(f"{p}{i}", priority=p) for i, p in enumerate(levels)]
    order = run_all(c, submit(c, *specs))
    assert order == ["critical2", "critical6", "high3", "high7", "normal1", "normal5", "low0", "low4"]


def test_ageing_lets_long_waiting_low_priority_work_overtake_fresh_high_priority_work():
    # Given one worker busy with a long task, and low-priority work ready at t=0
    c = core(slots=1, ageing=1.0)
    c.handle([SpecsSubmitted("t", (spec("busy", inputs=()),))], 0.0)
    c.handle([SpecsSubmitted("t", (spec("old-low", inputs=(), priority="low"),))], 0.0)
    # When high-priority work becomes ready 250 s later (200 points apart, 250 s of ageing)
    c.handle([SpecsSubmitted("t", (spec("new-high", inputs=(), priority="high"),))], 250.0)
    # Then the low one, having waited, goes first
    assert names(ok(c, "busy", 251.0)) == ["old-low"]


def test_without_ageing_priority_is_absolute():
    c = core(slots=1, ageing=0.0)
    c.handle([SpecsSubmitted("t", (spec("busy", inputs=()),))], 0.0)
    c.handle([SpecsSubmitted("t", (spec("old-low", inputs=(), priority="low"),))], 0.0)
    c.handle([SpecsSubmitted("t", (spec("new-high", inputs=(), priority="high"),))], 250.0)
    assert names(ok(c, "busy", 251.0)) == ["new-high"]


# --- resources and pools ---------------------------------------------------------------------------------------

def test_resources_are_counted_against_capacity():
    c = core(pools=[PoolSpec("general", 4, FrozenDict({"cpu": 4, "memory_mb": 8000}))])
    first = submit(c, spec("a", resources={"cpu": 2, "memory_mb": 5000}), spec("b", resources={"cpu": 2}),
                   spec("c", resources={"memory_mb": 4000}), spec("d", resources={"cpu": 1}))
    # a and b take all 4 cpus; c does not fit beside a's memory; strict order keeps d behind c
    assert names(first) == ["a", "b"]
    assert names(ok(c, "a", 1.0)) == ["c", "d"]


def test_a_demand_no_pool_can_ever_meet_fails_at_once_saying_what_was_asked_and_what_exists():
    c = core(pools=[PoolSpec("general", 2, FrozenDict({"memory_mb": 1000}))])
    out = submit(c, spec("huge", resources={"gpu": 1, "memory_mb": 500}))
    (settle,) = [i for i in out if isinstance(i, Settle)]
    assert settle.state is State.FAILED
    assert "asks for gpu=1, memory_mb=500, more than pool 'general' will ever have (cpu=2, memory_mb=1000)" \
        in settle.detail


def test_pools_follow_the_workers_a_cluster_reports_as_they_join_and_leave():
    c = core(pools=[PoolSpec("general", 1)])
    assert names(submit(c, *(spec(f"s{i}") for i in range(5)))) == ["s0"]
    grown = c.handle([CapacityChanged((PoolSpec("general", 3),))], 1.0)
    assert names(grown) == ["s1", "s2"]
    assert c.slots == 3
    # Every worker leaves: what runs keeps running and may finish; nothing more starts until workers come back.
    assert names(c.handle([CapacityChanged((PoolSpec("general", 0),))], 2.0)) == []
    assert names(ok(c, "s0", 3.0)) == []
    assert names(c.handle([CapacityChanged((PoolSpec("general", 1),))], 4.0)) == []  # s1, s2 still hold it
    assert names(ok(c, "s1", 5.0)) == []
    assert names(ok(c, "s2", 6.0)) == ["s3"]


def test_work_asking_for_what_left_with_a_worker_waits_for_it_and_what_never_existed_fails():
    c = core(pools=[PoolSpec("general", 2, FrozenDict({"gpu": 1}))])
    c.handle([CapacityChanged((PoolSpec("general", 1),))], 0.0)  # the gpu worker left
    out = submit(c, spec("train", resources={"gpu": 1}), spec("big", resources={"tpu": 1}), now=1.0)
    assert names(out) == []
    (settle,) = [i for i in out if isinstance(i, Settle)]
    assert settle.computation == "big" and settle.state is State.FAILED and "tpu=1" in settle.detail
    assert c.record("train").state is State.READY
    back = c.handle([CapacityChanged((PoolSpec("general", 2, FrozenDict({"gpu": 1})),))], 2.0)
    assert names(back) == ["train"]


def test_dispatch_carries_the_aged_priority_the_core_ordered_by():
    c = core(slots=1, ageing=1.0)
    submit(c, spec("first"), now=0.0)
    c.handle([SpecsSubmitted("test", (spec("urgent", priority=50), spec("late", priority=0)))], 10.0)
    (first,) = [i for i in ok(c, "first", 11.0) if isinstance(i, Dispatch)]
    assert first.spec.computation == "urgent" and first.priority == 50 - 10.0
    (late,) = [i for i in ok(c, "urgent", 12.0) if isinstance(i, Dispatch)]
    assert late.priority == 0 - 10.0 < first.priority


def test_handler_type_affinity_sends_work_to_its_own_pool():
    pools = [PoolSpec("general", 1), PoolSpec("ml", 1, FrozenDict({"gpu": 1}), ("ml",))]
    c = core(pools=pools)
    out = submit(c, spec("g1"), spec("g2"), spec("m1", handler_type="ml", resources={"gpu": 1}),
                 spec("m2", handler_type="ml", resources={"gpu": 1}))
    assert {(i.spec.computation, i.pool) for i in out if isinstance(i, Dispatch)} == {("g1", "general"),
                                                                                      ("m1", "ml")}
    assert names(ok(c, "m1", 1.0)) == ["m2"]


def test_an_alternative_in_another_pool_rescues_an_unplaceable_demand():
    pools = [PoolSpec("general", 1), PoolSpec("gpu-pool", 1, FrozenDict({"gpu": 2}), ("train_gpu",))]
    c = core(pools=pools)
    s = spec("train", resources={"gpu": 1}, handler_type="train_cpu",
             alternatives=[{"handler_type": "train_gpu", "computation": "train-on-gpu"}])
    out = submit(c, s)
    assert [(i.spec.handler_type, i.pool) for i in out if isinstance(i, Dispatch)] == [("train_gpu", "gpu-pool")]
    ok(c, "train", 1.0)
    assert c.record("train").produced_by == "train-on-gpu"


# --- retries, time-outs, alternatives --------------------------------------------------------------------------

def test_a_handler_that_fails_twice_then_succeeds_is_done_with_three_attempts():
    c = core()
    retry = {"max_attempts": 3, "initial_delay_s": 2, "multiplier": 3}
    assert dispatches(submit(c, spec("flaky", retry=retry))) == [("flaky", 1)]
    (failed,) = fail(c, "flaky", 10.0)  # a retry is scheduled: nothing runs, nothing settles
    assert (failed, c.record("flaky").state) == (AttemptFailed("flaky", 1, "boom", "attempt 2 in 2s", 2.0),
                                                 State.RETRYING)
    assert c.next_wakeup() == 12.0  # initial delay
    assert c.handle([], 11.9) == []  # not before it is due
    assert dispatches(c.handle([], 12.0)) == [("flaky", 2)]
    fail(c, "flaky", 13.0)
    assert c.next_wakeup() == 19.0  # 2 * 3
    assert dispatches(c.handle([], 19.0)) == [("flaky", 3)]
    ok(c, "flaky", 20.0)
    rec = c.record("flaky")
    assert (rec.state, rec.attempts, len(rec.errors)) == (State.DONE, 3, 2)


def test_retry_delays_are_capped_and_jittered_within_bounds():
    c = core(seed=7)
    submit(c, spec("j", retry={"max_attempts": 10, "initial_delay_s": 10, "max_delay_s": 15, "jitter_s": 1}))
    now = 0.0
    for expected in (10, 15, 15):
        fail(c, "j", now)
        delay = c.record("j").retry_at - now
        assert expected <= delay <= expected + 1
        now = c.record("j").retry_at
        c.handle([], now)


def test_attempts_lost_with_their_worker_are_retried_on_top_of_the_policy_up_to_the_limit():
    c = core()
    submit(c, spec("w"))  # the default policy: one attempt, handler errors are not retried
    for n in (1, 2):
        fail(c, "w", float(n), "its worker process died", worker_lost=True)
        assert c.record("w").state is State.RETRYING
        assert dispatches(c.handle([], c.record("w").retry_at)) == [("w", n + 1)]
    out = fail(c, "w", 9.0, "its worker process died", worker_lost=True)  # SchedulerConfig.lost_worker_retries
    assert [(i.computation, i.state) for i in out if isinstance(i, Settle)] == [("w", State.FAILED)]
    assert c.record("w").attempts == 3 and c.record("w").lost_attempts == 3
    submit(c, spec("h", inputs=["in"], output="h.out"))
    out = fail(c, "h", 10.0, "ValueError")  # the handler's own error: the policy alone decides
    assert [(i.computation, i.state) for i in out if isinstance(i, Settle)] == [("h", State.FAILED)]


def test_prefetch_dispatches_one_more_per_slot_but_never_work_whose_clock_would_run_in_a_queue():
    c = Scheduler(config=SchedulerConfig(pools=(PoolSpec("general", 2),), prefetch=1, deadlock_grace_s=None))
    out = submit(c, spec("a", priority=9), spec("b", priority=8), spec("timed", priority=7, timeout_s=5),
                 spec("c", priority=6))
    assert dispatches(out) == [("a", 1), ("b", 1)]  # 'timed' heads the queue and waits for a slot of its own
    out = ok(c, "a", 1.0)
    assert dispatches(out) == [("timed", 1), ("c", 1)]  # one runs, one waits in the executor's queue


def test_a_permanent_error_skips_the_remaining_retries():
    c = core()
    submit(c, spec("p", retry={"max_attempts": 5}))
    out = fail(c, "p", 1.0, "cannot work", permanent=True)
    assert [(i.computation, i.state) for i in out if isinstance(i, Settle)] == [("p", State.FAILED)]
    assert c.record("p").attempts == 1


def test_after_the_last_attempt_the_alternatives_run_in_order_and_the_first_success_counts():
    c = core()
    s = spec("x", retry={"max_attempts": 2, "initial_delay_s": 0},
             alternatives=[{"handler_type": "plan_b"}, {"handler_type": "plan_c", "params": {"fast": True},
                                                        "computation": "x-fast"}])
    submit(c, s)
    assert dispatches(fail(c, "x", 1.0, "e1")) == [("x", 2)]  # a zero delay retries in the same step
    out = fail(c, "x", 2.0, "e2")
    assert [(i.spec.handler_type, i.attempt) for i in out if isinstance(i, Dispatch)] == [("plan_b", 3)]
    assert dispatches(fail(c, "x", 3.0, "b1")) == [("x", 4)]  # each alternative gets the same retries
    out = fail(c, "x", 3.0, "b2")
    dispatched = [i for i in out if isinstance(i, Dispatch)]
    assert [(d.spec.handler_type, dict(d.spec.params)) for d in dispatched] == [("plan_c", {"fast": True})]
    ok(c, "x", 4.0)
    rec = c.record("x")
    assert (rec.state, rec.produced_by, rec.alternative) == (State.DONE, "x-fast", 2)
    assert [e.split(":")[0] for e in rec.errors] == ["attempt 1 (x)", "attempt 2 (x)", "attempt 3 (x#alternative1)",
                                                     "attempt 4 (x#alternative1)"]


def test_a_time_out_cancels_the_attempt_and_counts_as_a_failure():
    c = core()
    submit(c, spec("slow", timeout_s=5, retry={"max_attempts": 2, "initial_delay_s": 1}))
    assert c.next_wakeup() == 5.0
    out = c.handle([], 5.0)
    assert out == [Cancel("slow", 1, "timed out after 5s"),
                   AttemptFailed("slow", 1, "timed out after 5s", "attempt 2 in 1s", 1.0)]
    assert c.record("slow").state is State.RETRYING
    assert dispatches(c.handle([], 6.0)) == [("slow", 2)]


def test_when_everything_fails_dependents_are_upstream_failed_transitively_naming_the_failed_one():
    c = core(slots=2)
    submit(c, spec("root", output="k1"), spec("mid", inputs=["k1"], output="k2"),
           spec("leaf", inputs=["k2", "in"], output="k3"), spec("other", inputs=["in"], output="k4"))
    out = fail(c, "root", 1.0, "broken input")
    states = {i.computation: (i.state, i.detail) for i in out if isinstance(i, Settle)}
    assert states["root"] == (State.FAILED, "broken input")
    assert states["mid"][0] is State.UPSTREAM_FAILED and states["leaf"][0] is State.UPSTREAM_FAILED
    assert "upstream computation 'root' failed" in states["leaf"][1]
    assert c.record("other").state is State.RUNNING


# --- deadlocks -------------------------------------------------------------------------------------------------

def test_waiting_on_inputs_nothing_produces_is_a_deadlock_once_quiet_for_the_grace_period():
    c = core(slots=1, grace=30.0)
    submit(c, spec("join", inputs=["in", "never.csv"], output="j"), spec("after", inputs=["j"], output="z"))
    assert c.next_wakeup() == 30.0
    assert c.handle([], 29.0) == []
    out = c.handle([], 30.0)
    (deadlock,) = [i for i in out if isinstance(i, Deadlock)]
    assert deadlock.kind == "missing-inputs" and deadlock.computations == ("join",)
    assert "'join' waits for 'never.csv'" in deadlock.explanation
    assert c.record("join").state is State.FAILED and c.record("after").state is State.UPSTREAM_FAILED
    assert c.deadlocks == (deadlock,)


def test_no_deadlock_while_work_runs_or_arrives():
    c = core(slots=1, grace=30.0)
    submit(c, spec("busy", inputs=()), spec("join", inputs=["never.csv"], output="j"))
    assert c.handle([], 100.0) == []  # something is running
    ok(c, "busy", 100.0)
    assert c.handle([ObjectAvailable("unrelated")], 120.0) == []  # something arrived at 120
    assert c.handle([], 149.0) == []
    assert any(isinstance(i, Deadlock) for i in c.handle([], 150.0))


def test_deadlock_detection_can_be_switched_off():
    c = core(slots=1, grace=None)
    submit(c, spec("join", inputs=["never.csv"], output="j"))
    assert c.next_wakeup() is None and c.handle([], 1e9) == []


# --- completion notifications ----------------------------------------------------------------------------------

def test_handler_types_named_in_notify_are_told_how_it_ended():
    c = core(slots=2)
    submit(c, spec("good", notify=["audit", "slack"]), spec("bad", notify=["audit"]))
    done = [i for i in ok(c, "good", 1.0) if isinstance(i, Notify)]
    assert [(n.handler_type, n.completion.state, n.completion.output) for n in done] == [
        ("audit", State.DONE, "out/good"), ("slack", State.DONE, "out/good")]
    failed = [i for i in fail(c, "bad", 1.0, "nope") if isinstance(i, Notify)]
    assert [(n.handler_type, n.completion.state, n.completion.error, n.completion.attempts) for n in failed] == [
        ("audit", State.FAILED, "nope", 1)]


def test_a_handler_can_ask_to_hear_about_the_computations_it_emitted():
    c = core(slots=2)
    submit(c, spec("parent"))
    ok(c, "parent", 1.0, specs=[spec("child", inputs=["out/parent"])], subscriber="parent_type")
    out = ok(c, "child", 2.0)
    assert [(n.handler_type, n.completion.computation) for n in out if isinstance(n, Notify)] == [
        ("parent_type", "child")]


def test_a_handler_waiting_for_work_it_submitted_lends_its_slot_to_that_work_and_is_woken_by_the_core():
    from gcl_orchestrator.model import ComputationBlocked, Reply, WaitOver

    c = core(slots=1)
    submit(c, spec("parent"), spec("queued"))
    # the parent submits a child and waits for it: with one slot, the child could never run on a slot of its own
    c.handle([SpecsSubmitted("submitted by parent", (spec("child", output="child.out"),))], 1.0)
    assert c.record("child").state is State.READY
    out = c.handle([ComputationBlocked("parent", 1, ("child.out",), wait_id=1)], 1.0)
    assert [(i.spec.computation, i.lent) for i in out if isinstance(i, Dispatch)] == [("child", True)]
    assert c.record("queued").state is State.READY  # the lent slot is only for what the parent waits for
    out = ok(c, "child", 2.0)
    assert [i for i in out if isinstance(i, Reply)] == [Reply("parent", 1, WaitOver(1))]
    assert names(out) == []  # the parent has its slot back
    assert names(ok(c, "parent", 3.0)) == ["queued"]


def test_a_paused_core_dispatches_nothing_but_still_takes_outcomes():
    c = core(slots=1)
    submit(c, spec("a"), spec("b"))
    c.pause()
    assert names(ok(c, "a", 1.0)) == []
    assert c.record("a").state is State.DONE and c.record("b").state is State.READY


# --- attempts across a restart (the journal's AttemptsRestored) ----------------------------------------------------

def _restart_core():
    from gcl_orchestrator.core import Scheduler
    return Scheduler(slots=2)


def test_a_restart_goes_on_from_the_attempts_made_and_waits_out_a_pending_retry():
    from gcl_orchestrator.model import AttemptsRestored, ComputationFailed, Dispatch, ObjectAvailable, State
    from gcl_orchestrator.gcl import spec_from_mapping

    s = spec_from_mapping({"computation": "c", "handler_type": "h", "inputs": ["a"], "output": "b",
                           "retry": {"max_attempts": 3, "initial_delay_s": 1, "jitter_s": 0}})
    core = _restart_core()
    out = core.handle([ObjectAvailable("a", (s,)),
                       AttemptsRestored("c", 2, 0, 2, 0, ("attempt 2 (c): boom",), retry_at=110.0)], 100.0)
    core.validate_state()
    rec = core.record("c")
    assert not [i for i in out if isinstance(i, Dispatch)]  # its retry is not due yet
    assert rec.state is State.RETRYING and rec.attempts == 2 and rec.last_error == "attempt 2 (c): boom"
    out = core.handle([], 110.0)
    core.validate_state()
    (dispatch,) = [i for i in out if isinstance(i, Dispatch)]
    assert dispatch.attempt == 3
    core.handle([ComputationFailed("c", 3, "boom again")], 111.0)
    core.validate_state()
    assert core.record("c").state is State.FAILED  # 3 of 3 made: not a fresh budget after the restart


def test_restored_attempts_never_touch_a_computation_that_is_done_or_already_running():
    from gcl_orchestrator.model import AttemptsRestored, Dispatch, ObjectAvailable, State
    from gcl_orchestrator.gcl import spec_from_mapping

    s = spec_from_mapping({"computation": "c", "handler_type": "h", "inputs": ["a"], "output": "b"})
    core = _restart_core()
    core.handle([ObjectAvailable("a", (s,)), ObjectAvailable("b", ())], 100.0)  # its output is there: done
    core.handle([AttemptsRestored("c", 5, retry_at=200.0)], 101.0)
    core.validate_state()
    assert core.record("c").state is State.DONE and core.record("c").attempts == 0
    core2 = _restart_core()
    out = core2.handle([ObjectAvailable("a", (s,))], 100.0)
    assert [i for i in out if isinstance(i, Dispatch)]
    core2.handle([AttemptsRestored("c", 5, retry_at=200.0)], 101.0)  # too late: it runs already
    core2.validate_state()
    assert core2.record("c").state is State.RUNNING and core2.record("c").attempts == 1


def test_a_restart_goes_on_with_the_alternative_it_had_reached():
    from gcl_orchestrator.model import AttemptsRestored, Dispatch, ObjectAvailable
    from gcl_orchestrator.gcl import spec_from_mapping

    s = spec_from_mapping({"computation": "c", "handler_type": "fast", "inputs": ["a"], "output": "b",
                           "alternatives": [{"computation": "c-slow", "handler_type": "slow"}]})
    core = _restart_core()
    out = core.handle([ObjectAvailable("a", (s,)), AttemptsRestored("c", 3, 1, 0, 0, ("attempt 3 (c): x",))],
                      100.0)
    core.validate_state()
    out += core.handle([], 100.0)
    (dispatch,) = [i for i in out if isinstance(i, Dispatch)]
    assert dispatch.spec.handler_type == "slow" and dispatch.attempt == 4
