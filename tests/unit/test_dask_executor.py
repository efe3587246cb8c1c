"""The Dask executor's bookkeeping above a fake client: exactly one outcome per submitted attempt, whichever path
reports it first (the run's Dask topic, the sweep of futures, a cancel), also when the outcome comes before
Dask has taken the task; what each task asks of Dask, and tasks waiting together handed over together. Real
clusters are in tests/e2e/test_dask.py."""
from __future__ import annotations

import pickle

from gcl_orchestrator.executors.dask import DaskExecutor
from gcl_orchestrator.gcl import spec_from_mapping
from gcl_orchestrator.interfaces import Task
from gcl_orchestrator.model import ComputationFailed

from ..e2e.test_dask import HANDLERS


class FakeFuture:
    def __init__(self, key, payload=None):
        self.key = key
        self.payload = payload
        self.status = "pending"
        self.callbacks = []
        self.outcome = None

    def cancel(self):
        self.status = "cancelled"

    def add_done_callback(self, callback):
        self.callbacks.append(callback)

    def result(self, timeout=None):
        return pickle.dumps(self.outcome)


class FakeClient:
    status = "running"

    def __init__(self, during_submit=None):
        self.during_submit = during_submit
        self.submitted = []
        self.calls = []  # one per graph handed to Dask
        self.cancelled = []  # one list per cancel call
        self.futures = {}

    def cancel(self, futures):
        self.cancelled.append(list(futures))

    def close(self, timeout=None):
        pass

    def scheduler_info(self, n_workers=-1):
        return {"workers": {"tcp://127.0.0.1:1": {"nthreads": 2, "resources": {"gpu": 1}}}}

    def map(self, fn, payloads, plugins, topics, task_keys, **options):
        self.calls.append((list(task_keys), options))
        futures = []
        for payload, topic, task_key in zip(payloads, topics, task_keys):
            self.submitted.append((task_key, options))
            if self.during_submit is not None:
                self.during_submit(pickle.loads(payload), topic, task_key)
            futures.append(FakeFuture(task_key, payload))
            self.futures[task_key] = futures[-1]
        return futures


def executor(client):
    ex = DaskExecutor(client, None, "dask://127.0.0.1:1", [HANDLERS], ["part"], "file:///tmp/store")
    emitted = []
    ex._emit = emitted.append
    return ex, emitted


def hand_over(ex):
    """What the executor's thread does with what the loop asked of it."""
    ex._carry_out(ex._drain(0))


def task(name="c", attempt=1, **fields):
    spec = spec_from_mapping({"computation": name, "inputs": ["in"], "output": f"out/{name}", "handler_type": "part",
                              **fields})
    return Task(spec, attempt, "file:///tmp/store", priority=fields.get("priority", 0) - 100.0)


def outcome_event(computation, attempt, error="boom"):
    return (0.0, {"key": "k", "outcome": pickle.dumps(ComputationFailed(computation, attempt, error))})


def test_an_outcome_that_comes_before_submit_returns_is_emitted_once_and_the_attempt_is_not_left_in_flight():
    box = {}
    client = FakeClient(lambda t, topic, key: box["ex"]._on_event(outcome_event(t.spec.computation, t.attempt)))
    ex, emitted = executor(client)
    box["ex"] = ex
    ex.submit(task())
    hand_over(ex)
    assert emitted == [ComputationFailed("c", 1, "boom")]
    assert ex._futures == {}
    ex._on_event(outcome_event("c", 1, "again"))  # a duplicate on the topic
    ex._sweep({})
    assert len(emitted) == 1


def test_a_cancelled_attempt_reports_once_even_when_its_outcome_comes_later():
    ex, emitted = executor(FakeClient())
    ex.submit(task())
    hand_over(ex)
    ex._cancel(("c", 1))
    ex._on_event(outcome_event("c", 1))
    assert emitted == [ComputationFailed("c", 1, "cancelled")]
    assert ex._futures == {}


def test_each_attempt_asks_dask_for_its_key_aged_priority_resources_and_no_retries():
    client = FakeClient()
    ex, _ = executor(client)
    ex.submit(task(attempt=3, priority=50, resources={"gpu": 1}))
    hand_over(ex)
    ((key, options),) = client.submitted
    assert key.endswith("-c-3")
    assert options == {"key": [key], "resources": {"gpu": 1.0}, "priority": int((50 - 100.0) * 1000),
                       "retries": 0, "pure": False}


def test_tasks_waiting_together_go_to_dask_in_one_graph_per_priority_and_resources():
    client = FakeClient()
    ex, emitted = executor(client)
    ex.submit_all([task("a"), task("b"), task("g", resources={"gpu": 1})])
    ex.submit(task("d"))
    hand_over(ex)
    assert [(len(keys), options["resources"]) for keys, options in client.calls] == [(3, None), (1, {"gpu": 1.0})]
    assert [key.rsplit("-", 2)[-2] for keys, _ in client.calls for key in keys] == ["a", "b", "d", "g"]
    for key, future in client.futures.items():  # each key carries its own attempt
        assert key.endswith(f"-{pickle.loads(future.payload).spec.computation}-1")
    assert set(ex._futures) == {("a", 1), ("b", 1), ("d", 1), ("g", 1)} and not emitted


def test_an_attempt_settled_before_dask_took_it_is_never_handed_over_and_reports_once():
    client = FakeClient()
    ex, emitted = executor(client)
    ex.submit(task())
    ex._give_up("the scheduler went away")  # before the executor's thread got to the submission
    hand_over(ex)
    assert not client.submitted
    assert emitted == [ComputationFailed("c", 1, "the executor stopped: the scheduler went away", worker_lost=True)]
    assert ex._futures == {}


def test_a_demand_no_worker_ever_offered_fails_at_once_saying_what_the_closest_offers():
    client = FakeClient()
    ex, emitted = executor(client)
    ex.submit(task(resources={"gpu": 2}))
    hand_over(ex)
    (failed,) = emitted
    assert failed.permanent and not client.submitted
    assert failed.error == "asks for gpu=2 on one worker; no Dask worker seen offers that (closest: gpu=1)"


def test_a_large_outcome_is_announced_and_fetched_from_the_task_result():
    ex, _ = executor(FakeClient())
    ex._on_event((0.0, {"key": "k", "fetch": ["c", 1]}))
    assert ex._commands.get_nowait() == ("fetch", ("c", 1))


def test_an_attempt_on_a_lent_slot_goes_before_everything_queued_on_dask():
    client = FakeClient()
    ex, _ = executor(client)
    lent = task("w", priority=50)
    ex.submit_all([task("a", priority=50), Task(lent.spec, 1, lent.store_uri, priority=lent.priority, lent=True)])
    hand_over(ex)
    priorities = {keys[0].rsplit("-", 2)[-2]: options["priority"] for keys, options in client.calls}
    assert priorities["w"] > 2**30 > priorities["a"]


def test_a_large_outcome_is_fetched_once_however_often_the_sweep_finds_it_finished():
    client = FakeClient()
    ex, emitted = executor(client)
    ex.submit(task())
    hand_over(ex)
    (future,) = client.futures.values()
    future.status = "finished"
    for _ in range(3):
        ex._fetch(("c", 1))
    assert len(future.callbacks) == 1
    future.outcome = ComputationFailed("c", 1, "large")
    future.callbacks[0](future)
    assert emitted == [ComputationFailed("c", 1, "large")] and ex._futures == {} and not ex._fetching


def test_a_request_the_scheduler_refuses_does_not_lose_the_others_drained_with_it(monkeypatch):
    ex, emitted = executor(FakeClient())
    ex.submit_all([task("a"), task("b")])
    hand_over(ex)

    def refused(*args):
        raise OSError("the scheduler refused")

    monkeypatch.setattr(ex, "_deliver", refused)
    ex.deliver("a", 1, "an answer")
    ex.cancel("b", 1)
    hand_over(ex)
    assert emitted == [ComputationFailed("b", 1, "cancelled")]


def test_stop_cancels_every_task_in_flight_in_one_request_and_reports_each_once():
    client = FakeClient()
    ex, emitted = executor(client)
    ex.submit_all([task("a"), task("b")])
    hand_over(ex)
    ex.stop(grace_s=0)
    assert [len(futures) for futures in client.cancelled] == [2]
    assert sorted(e.computation for e in emitted) == ["a", "b"] and ex._futures == {}
