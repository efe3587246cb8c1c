"""The status in the store: a small summary and one part per state, so that a reader that shows one state reads
the summary and that part alone."""
from __future__ import annotations

import gzip
import json

import pytest

from gcl_orchestrator.errors import StorageError
from gcl_orchestrator.storage import MemoryObjectStore
from gcl_orchestrator.views.status import STATUS_KEY, part_key, read_status, render_status, write_status


def item(name, state, **extra):
    return {"computation": name, "state": state, "handler_type": "h", "priority": 0, "inputs": ["in"],
            "output": f"out/{name}", "source": "test", "attempts": 1, **extra}


def doc(computations):
    counts = {}
    for c in computations:
        counts[c["state"]] = counts.get(c["state"], 0) + 1
    return {"format": 2, "updated_at": 1.0, "orchestrator": {"state": "running", "pid": 1, "host": "h"},
            "counts": counts, "computations": computations, "rejected": [], "deadlocks": [], "incidents": []}


def test_the_summary_names_one_part_per_state_and_holds_no_computation():
    store = MemoryObjectStore()
    write_status(store, doc([item("a", "done"), item("b", "failed", last_error="boom"), item("c", "done")]))
    summary = json.loads(store.get(STATUS_KEY).body)
    assert "computations" not in summary
    assert summary["parts"] == {"done": {"keys": [part_key("done")], "count": 2},
                                "failed": {"keys": [part_key("failed")], "count": 1}}
    assert [c["computation"] for c in json.loads(gzip.decompress(store.get(part_key("done")).body))] == ["a", "c"]


def test_a_reader_of_one_state_reads_only_its_part():
    store = MemoryObjectStore()
    write_status(store, doc([item("a", "done"), item("b", "failed", last_error="boom")]))
    store.delete(part_key("done"))  # had it been read, it would be missing now
    failed = read_status(store, ["failed"])
    assert [c["computation"] for c in failed["computations"]] == ["b"]
    assert "error: boom" in render_status(failed, state_filter="failed")
    assert read_status(store, states=())["computations"] == [] and read_status(store, ())["counts"]["done"] == 1


def test_a_reader_gets_the_settled_computations_before_those_that_run_and_those_that_wait():
    store = MemoryObjectStore()
    write_status(store, doc([item("w", "waiting"), item("r", "running"), item("d", "done"), item("f", "failed")]))
    assert [c["computation"] for c in read_status(store)["computations"]] == ["d", "f", "r", "w"]


def test_a_state_that_emptied_is_no_longer_read_and_a_summary_of_the_first_format_still_is():
    store = MemoryObjectStore()
    write_status(store, doc([item("a", "failed")]))
    write_status(store, doc([item("a", "done")]))  # rerun, now done: the failed part is stale, and not named
    assert read_status(store, ["failed"])["computations"] == []
    store.put(STATUS_KEY, json.dumps({**doc([item("x", "done"), item("y", "failed")]), "format": 1}).encode())
    assert [c["computation"] for c in read_status(store, ["failed"])["computations"]] == ["y"]


def test_a_damaged_part_is_a_storage_error_naming_it():
    store = MemoryObjectStore()
    write_status(store, doc([item("a", "failed")]))
    store.put(part_key("failed"), b"not gzip")
    with pytest.raises(StorageError, match="failed.json.gz .* is not gzip'd JSON"):
        read_status(store)


# --- the parts kept up to date from state changes (StatusParts) -----------------------------------------------

from gcl_orchestrator.core import Scheduler  # noqa: E402
from gcl_orchestrator.gcl import spec_from_mapping  # noqa: E402
from gcl_orchestrator.model import ComputationSucceeded, ObjectAvailable, SpecsSubmitted  # noqa: E402
from gcl_orchestrator.views import status as status_view  # noqa: E402
from gcl_orchestrator.views.status import StatusParts  # noqa: E402


def _leaf(i):
    return spec_from_mapping({"computation": f"c{i}", "handler_type": "h", "inputs": ["in"], "output": f"out/{i}"})


def _follow(core, parts, events, now):
    core.handle(events, now)
    changes, core.changes = core.changes, []
    parts.changed({c[0] for c in changes}, core)


def _finish(core, parts, names, now):
    _follow(core, parts, [ComputationSucceeded(n, core.record(n).attempts, "e", ()) for n in names], now)


def test_a_status_write_rebuilds_only_the_parts_whose_computations_changed(monkeypatch):
    monkeypatch.setattr(status_view, "CHUNK", 4)
    core, parts, store = Scheduler(slots=100), StatusParts(), MemoryObjectStore()
    core.changes = []
    _follow(core, parts, [SpecsSubmitted("t", tuple(_leaf(i) for i in range(10))), ObjectAvailable("in")], 1.0)
    _finish(core, parts, [f"c{i}" for i in range(8)], 2.0)
    first = parts.document(core, {}, [], 2.0)
    write_status(store, first)
    assert read_status(store, ["done"])["counts"]["done"] == 8
    assert sorted(c["computation"] for c in read_status(store, ["done"])["computations"]) == [f"c{i}" for i in range(8)]
    _finish(core, parts, ["c8"], 3.0)
    second = parts.document(core, {}, [], 3.0)
    # c8 left the running part and joined the newest done part: the two full done parts are not written again
    first_done = {k for k in first["part_items"] if "/done-" in k}
    assert len(first_done) == 2 and not first_done & set(second["part_items"])
    written = {k: [i["computation"] for i in v] for k, v in second["part_items"].items()}
    assert [k for k, v in written.items() if "/done-" in k] != [] and ["c8"] in written.values()
    assert sum(map(len, written.values())) <= 2  # c8 in its new part, and c9 if it shared c8's running part
    write_status(store, second)
    done = read_status(store, ["done"])
    assert sorted(c["computation"] for c in done["computations"]) == [f"c{i}" for i in range(9)]
    assert [c["computation"] for c in read_status(store, ["running"])["computations"]] == ["c9"]
    assert parts.document(core, {}, [], 4.0)["part_items"] == {}  # nothing changed: nothing to write


def test_a_waiting_computation_s_part_is_written_each_time_as_its_inputs_arrive():
    core, parts = Scheduler(slots=1), StatusParts()
    core.changes = []
    join = spec_from_mapping({"computation": "j", "handler_type": "h", "inputs": ["a", "b"], "output": "o"})
    _follow(core, parts, [SpecsSubmitted("t", (join,))], 1.0)
    assert parts.document(core, {}, [], 1.0)["part_items"]
    _follow(core, parts, [ObjectAvailable("a")], 2.0)  # no change of state, one input fewer missing
    (items,) = parts.document(core, {}, [], 2.0)["part_items"].values()
    assert items[0]["missing"] == ["b"]


def test_parts_a_failed_status_write_left_unwritten_go_with_the_next_write():
    from gcl_orchestrator.errors import TransientStorageError
    from gcl_orchestrator.runtime.orchestrator import _StatusWriter

    class FailsOnce(MemoryObjectStore):
        failed = False

        def put(self, key, body, metadata=None):
            if not self.failed:
                self.failed = True
                raise TransientStorageError("the store is away")
            return super().put(key, body, metadata)

    store = FailsOnce()
    writer = _StatusWriter(store, lambda event: None)
    a, b = part_key("done-a"), part_key("done-b")
    summary = {"counts": {"done": 2}, "parts": {"done": {"keys": [a, b], "count": 2}}}
    writer.write({**summary, "part_items": {a: [item("x", "done")]}})  # fails: nothing written
    writer.write({**summary, "part_items": {b: [item("y", "done")]}})  # a's part too
    assert sorted(c["computation"] for c in read_status(store, ["done"])["computations"]) == ["x", "y"]
