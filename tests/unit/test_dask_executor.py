"""The Dask executor's bookkeeping above a fake client: exactly one outcome per submitted attempt, whichever path
reports it first (the run's Dask topic, the sweep of futures, a cancel), also when the outcome comes before
`submit` returns; what each task asks of Dask. Real clusters are in tests/e2e/test_dask.py."""
from __future__ import annotations

import pickle

from gcl_orchestrator.executors.dask import DaskExecutor
from gcl_orchestrator.gcl import spec_from_mapping
from gcl_orchestrator.interfaces import Task
from gcl_orchestrator.model import ComputationFailed

from ..e2e.test_dask import HANDLERS


class FakeFuture:
    def __init__(self, key):
        self.key = key
        self.status = "pending"

    def cancel(self):
        self.status = "cancelled"


class FakeClient:
    status = "running"

    def __init__(self, during_submit=None):
        self.during_submit = during_submit
        self.submitted = []

    def scheduler_info(self, n_workers=-1):
        return {"workers": {"tcp://127.0.0.1:1": {"nthreads": 2, "resources": {"gpu": 1}}}}

    def submit(self, fn, task, plugin, topic, task_key, **options):
        self.submitted.append((task_key, options))
        if self.during_submit is not None:
            self.during_submit(task, topic, task_key)
        return FakeFuture(task_key)


def executor(client):
    ex = DaskExecutor(client, None, "dask://127.0.0.1:1", [HANDLERS], ["part"], "file:///tmp/store")
    emitted = []
    ex._emit = emitted.append
    return ex, emitted


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
    assert emitted == [ComputationFailed("c", 1, "boom")]
    assert ex._futures == {}
    ex._on_event(outcome_event("c", 1, "again"))  # a duplicate on the topic
    ex._sweep({})
    assert len(emitted) == 1


def test_a_cancelled_attempt_reports_once_even_when_its_outcome_comes_later():
    ex, emitted = executor(FakeClient())
    ex.submit(task())
    ex._cancel(("c", 1))
    ex._on_event(outcome_event("c", 1))
    assert emitted == [ComputationFailed("c", 1, "cancelled")]
    assert ex._futures == {}


def test_each_attempt_asks_dask_for_its_key_aged_priority_resources_and_no_retries():
    client = FakeClient()
    ex, _ = executor(client)
    ex.submit(task(attempt=3, priority=50, resources={"gpu": 1}))
    ((key, options),) = client.submitted
    assert key.endswith("-c-3")
    assert options == {"key": key, "resources": {"gpu": 1.0}, "priority": int((50 - 100.0) * 1000),
                       "retries": 0, "pure": False}


def test_a_demand_no_worker_ever_offered_fails_at_once_saying_what_the_closest_offers():
    client = FakeClient()
    ex, emitted = executor(client)
    ex.submit(task(resources={"gpu": 2}))
    (failed,) = emitted
    assert failed.permanent and not client.submitted
    assert failed.error == "asks for gpu=2 on one worker; no Dask worker seen offers that (closest: gpu=1)"


def test_a_large_outcome_is_announced_and_fetched_from_the_task_result():
    ex, _ = executor(FakeClient())
    ex._on_event((0.0, {"key": "k", "fetch": ["c", 1]}))
    assert ex._commands.get_nowait() == ("fetch", ("c", 1))
