"""No thread dies alone: a background loop that raises is logged, reported as an incident and restarted; an
executor whose feeder keeps failing ends the run with exit code 3 and leaves no computation running."""
from __future__ import annotations

import queue
import threading
from pathlib import Path

import pytest

from gcl_orchestrator import supervise
from gcl_orchestrator.executors import ProcessExecutor
from gcl_orchestrator.gcl import encode_gcl, spec_from_mapping
from gcl_orchestrator.model import ComponentFailed, IncidentReported, ObjectCreated, State
from gcl_orchestrator.runtime import HandlerRegistry, Orchestrator, RunOptions
from gcl_orchestrator.sources import PollingSource
from gcl_orchestrator.sources.looping import LoopingSource
from gcl_orchestrator.storage import LocalDirectoryStore
from gcl_orchestrator.views import read_status

HANDLERS = str(Path(__file__).parent.parent / "handlers" / "pipeline.py")


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(supervise, "FIRST_BACKOFF_S", 0.01)
    monkeypatch.setattr(supervise, "MAX_BACKOFF_S", 0.02)


class FlakySource(LoopingSource):
    name = "flaky"

    def __init__(self, failures: int):
        super().__init__()
        self.failures = failures

    def _loop(self, emit):
        if self.failures:
            self.failures -= 1
            raise OSError("Too many open files")
        emit(ObjectCreated("after-restart", "e", {}, self.name))
        self._stopping.wait()


def test_a_source_loop_that_raises_is_reported_and_restarted():
    events: queue.Queue = queue.Queue()
    source = FlakySource(failures=2)
    source.start(events.put)
    try:
        got = [events.get(timeout=10) for _ in range(3)]
    finally:
        source.stop()
    assert [type(e) for e in got] == [IncidentReported, IncidentReported, ObjectCreated]
    assert got[0].where == "gclo-flaky" and "OSError: Too many open files" in got[0].message
    assert "restarted" in got[0].message


def test_a_critical_loop_that_keeps_failing_hands_back_its_work_and_reports_a_failed_component():
    events: queue.Queue = queue.Queue()
    handed_back = []

    def always():
        raise RuntimeError("cannot spawn")

    thread = supervise.start_thread("gclo-test", always, events.put, threading.Event(), critical=True,
                                    on_give_up=handed_back.append)
    thread.join(10)
    got = []
    while not events.empty():
        got.append(events.get())
    assert [type(e) for e in got] == [IncidentReported] * (supervise.CRITICAL_FAILURES - 1) + [ComponentFailed]
    assert handed_back and "failed 5 times in a row" in handed_back[0]


def run_orchestrator(tmp_path, parts=6):
    store = LocalDirectoryStore(tmp_path / "bucket")
    spec = spec_from_mapping({"computation": "split", "handler_type": "split", "inputs": ["numbers.txt"],
                              "output": "numbers.json"})
    store.put("numbers.txt", " ".join(str(i) for i in range(parts)).encode(), encode_gcl([spec]).metadata)
    registry = HandlerRegistry.from_sources([HANDLERS])
    executor = ProcessExecutor(2, (HANDLERS,), store.uri)
    orch = Orchestrator(store, executor, registry,
                        make_sources=lambda listing: [PollingSource(store, 0.05, initial=listing)],
                        options=RunOptions(until_idle=True, quiet_s=0.3, status_interval_s=0.05))
    return store, orch, orch.run()


def test_the_executor_loop_survives_an_exception_and_the_run_finishes(tmp_path, monkeypatch):
    original = ProcessExecutor._assign
    calls = {"n": 0}

    def assign_failing_once(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("Too many open files")
        original(self)

    monkeypatch.setattr(ProcessExecutor, "_assign", assign_failing_once)
    store, orch, result = run_orchestrator(tmp_path)
    assert result.exit_code == 0
    assert store.exists("total.json")
    incidents = read_status(store)["incidents"]
    assert any("gclo-executor" in i["message"] and "Too many open files" in i["message"] for i in incidents)


def test_an_executor_that_cannot_go_on_ends_the_run_with_exit_code_3_and_nothing_left_running(tmp_path,
                                                                                               monkeypatch):
    original = ProcessExecutor._assign
    calls = {"n": 0}

    def assign_failing_after_a_while(self):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError("Too many open files")
        original(self)

    monkeypatch.setattr(ProcessExecutor, "_assign", assign_failing_after_a_while)
    store, orch, result = run_orchestrator(tmp_path)
    assert result.exit_code == 3
    assert orch.core.counts()[State.RUNNING] == 0
    assert read_status(store)["orchestrator"]["state"] == "failed"
