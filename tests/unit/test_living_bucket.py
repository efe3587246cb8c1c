"""The living bucket through the orchestrator loop, on the in-memory store with handlers in threads: inputs
replaced while it runs and while it is down, the same bytes again, fixed GCL, deleted objects, reruns through
the store, and what every output records of its run."""
from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from gcl_orchestrator.executors import ThreadExecutor
from gcl_orchestrator.gcl import encode_gcl, spec_from_mapping
from gcl_orchestrator.gcl.metadata import read_lineage
from gcl_orchestrator.runtime import HandlerRegistry, Orchestrator, RunOptions
from gcl_orchestrator.sources import MemoryPushSource
from gcl_orchestrator.sources.requests import RequestSource, request_rerun
from gcl_orchestrator.storage import MemoryObjectStore
from gcl_orchestrator.views import lineage_lines

from ..conftest import wait_until

HANDLERS = str(Path(__file__).parent.parent / "handlers" / "pipeline.py")


@pytest.fixture
def store():
    return MemoryObjectStore(f"living-{uuid.uuid4().hex[:8]}")


def gcl(*steps):
    return encode_gcl([spec_from_mapping(s) for s in steps]).metadata


def step(name, handler_type, inputs, output, **params):
    return {"computation": name, "handler_type": handler_type, "inputs": inputs, "output": output,
            **({"params": params} if params else {})}


def pipeline(runs):
    """numbers.txt -> [count] -> count.json -> [report] -> report.txt (report also reads numbers.txt)."""
    return (step("count", "echo", ["numbers.txt"], "count.txt", runs=str(runs)),
            step("report", "echo", ["count.txt", "numbers.txt"], "report.txt", runs=str(runs)))


class Service:
    """An orchestrator running until stopped, on a thread, with the in-memory push source."""

    def __init__(self, store, request_interval_s=0.05):
        registry = HandlerRegistry.from_sources([HANDLERS])
        self.orch = Orchestrator(store, ThreadExecutor(2, registry, store), registry,
                                 make_sources=lambda listing: [MemoryPushSource(store)],
                                 options=RunOptions(quiet_s=0.2, status_interval_s=0.05,
                                                    request_interval_s=request_interval_s))
        self.thread = threading.Thread(target=self.orch.run)

    def __enter__(self):
        self.thread.start()
        return self.orch

    def __exit__(self, *exc):
        self.orch.request_stop()
        self.thread.join(30)


def idle(orch):
    return orch.core.is_quiescent() and orch.queue.empty()


def settled(orch, name, attempts):
    def check():
        rec = orch.core.record(name)
        return rec is not None and rec.state.value == "done" and rec.attempts >= attempts and idle(orch)
    return check


def executions(runs):
    return runs.read_text().split() if runs.exists() else []


def run_once(store):
    registry = HandlerRegistry.from_sources([HANDLERS])
    orch = Orchestrator(store, ThreadExecutor(2, registry, store), registry,
                        make_sources=lambda listing: [MemoryPushSource(store)],
                        options=RunOptions(until_idle=True, quiet_s=0.2, status_interval_s=0.05))
    return orch, orch.run()


def test_an_input_replaced_while_running_reruns_what_reads_it_once_each_in_order(store, tmp_path):
    runs = tmp_path / "runs.log"
    store.put("numbers.txt", b"1 2 3", gcl(*pipeline(runs)))
    with Service(store) as orch:
        wait_until(settled(orch, "report", 1), 10, "the first run")
        store.put("numbers.txt", b"4 5 6", gcl(*pipeline(runs)))  # an edited file uploaded over the old one
        wait_until(settled(orch, "report", 2), 10, "the rerun")
        assert store.get("report.txt").body == b"4 5 6"
        store.put("numbers.txt", b"4 5 6", gcl(*pipeline(runs)))  # the same bytes and GCL again
        wait_until(lambda: idle(orch), 10, "quiet")
    assert executions(runs) == ["count", "report", "count", "report"]


def test_a_result_that_comes_out_the_same_stops_there(store, tmp_path):
    runs = tmp_path / "runs.log"
    steps = (step("first", "echo", ["a.txt"], "first.txt", runs=str(runs)),
             step("second", "echo", ["first.txt"], "second.txt", runs=str(runs)))
    store.put("a.txt", b"same", gcl(*steps))
    with Service(store) as orch:
        wait_until(settled(orch, "second", 1), 10, "the first run")
        store.put("a.txt", b"same", gcl(*steps, step("third", "echo", ["a.txt"], "third.txt")))  # only GCL changes
        wait_until(settled(orch, "third", 1), 10, "the new computation")
        wait_until(lambda: idle(orch), 10, "quiet")
    # the new GCL is a new version: first runs again, comes out byte-identical, and second does not run again
    assert executions(runs) == ["first", "second", "first"]


def test_a_fixed_gcl_uploaded_over_a_rejected_one_on_the_same_bytes_runs_at_once(store):
    store.put("data.csv", b"a,b", {"gcl": '{"computation": "c", "inputs": "oops"}'})
    with Service(store) as orch:
        wait_until(lambda: orch.core.rejections, 10, "the rejection")
        store.put("data.csv", b"a,b", gcl(step("c", "echo", ["data.csv"], "c.out")))
        wait_until(settled(orch, "c", 1), 10, "the fixed computation")


def test_an_input_changed_while_the_orchestrator_was_down_reruns_each_stale_computation_once(store, tmp_path):
    runs = tmp_path / "runs.log"
    store.put("numbers.txt", b"1 2 3", gcl(*pipeline(runs)))
    assert run_once(store)[1].exit_code == 0
    store.put("numbers.txt", b"7 8 9", gcl(*pipeline(runs)))  # edited while nothing runs
    assert run_once(store)[1].exit_code == 0
    assert store.get("report.txt").body == b"7 8 9"
    run_once(store)  # and again: everything is current, nothing runs
    assert executions(runs) == ["count", "report", "count", "report"]


def test_every_output_records_its_run_and_lineage_names_every_input_version(store, tmp_path):
    store.put("numbers.txt", b"1 2 3", gcl(*pipeline(tmp_path / "runs.log")))
    run_once(store)
    run, inputs = read_lineage(store.head("report.txt").metadata)
    assert run.startswith("1:") and [k for k, _ in inputs] == ["count.txt", "numbers.txt"]
    lines = lineage_lines(store, "report.txt")
    assert lines[0].startswith("report.txt @ ") and "(run 1)" in lines[0]
    assert all("current" in line for line in lines[1:] if "@" in line)
    store.put("numbers.txt", b"changed", gcl(*pipeline(tmp_path / "runs.log")))
    assert any("CHANGED since" in line for line in lineage_lines(store, "report.txt"))


def test_a_deleted_output_is_computed_again(store, tmp_path):
    runs = tmp_path / "runs.log"
    store.put("numbers.txt", b"1 2 3", gcl(*pipeline(runs)))
    with Service(store) as orch:
        wait_until(settled(orch, "report", 1), 10, "the first run")
        store.delete("count.txt")
        wait_until(lambda: store.exists("count.txt") and idle(orch), 10, "count.txt again")
    # the same bytes again: what reads it does not run again
    assert executions(runs) == ["count", "report", "count"]


def test_a_deleted_input_leaves_outputs_in_place_marked_as_from_a_deleted_source(store, tmp_path):
    store.put("numbers.txt", b"1 2 3", gcl(*pipeline(tmp_path / "runs.log")))
    with Service(store) as orch:
        wait_until(settled(orch, "report", 1), 10, "the first run")
        store.delete("numbers.txt")
        wait_until(lambda: "deleted source" in (orch.core.record("report").note or ""), 10, "the mark")
    assert store.exists("report.txt") and store.exists("count.txt")


def test_a_rerun_asked_for_through_the_store_runs_again_and_downstream_too(store, tmp_path):
    runs = tmp_path / "runs.log"
    store.put("numbers.txt", b"1 2 3", gcl(*pipeline(runs)))
    with Service(store) as orch:
        wait_until(settled(orch, "report", 1), 10, "the first run")
        request_rerun(store, "count.txt", downstream=True, by="a test")  # a key: its producer runs again
        wait_until(settled(orch, "report", 2), 10, "the rerun downstream")
    assert executions(runs) == ["count", "report", "count", "report"]
    assert list(store.list(".gclo/requests/")) == []


def test_a_rerun_request_stays_in_the_store_until_the_runtime_has_handled_it(store):
    request_rerun(store, "count.txt", downstream=False, by="a test")
    source = RequestSource(store)
    got = []
    assert source.poll_once(got.append) == 1 and got[0].computation == "count.txt"
    assert len(list(store.list(".gclo/requests/"))) == 1  # an orchestrator stopping now leaves it for the next
    assert source.poll_once(got.append) == 0  # not emitted twice while in flight
    got[0].ack()
    assert list(store.list(".gclo/requests/")) == []


def test_a_request_left_while_nothing_ran_is_taken_up_by_the_next_run(store, tmp_path):
    runs = tmp_path / "runs.log"
    store.put("numbers.txt", b"1 2 3", gcl(*pipeline(runs)))
    run_once(store)
    request_rerun(store, "count", downstream=True, by="a test")
    run_once(store)
    assert executions(runs) == ["count", "report", "count", "report"]
    assert list(store.list(".gclo/requests/")) == []
