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
    assert summary["parts"] == {"done": {"key": part_key("done"), "count": 2},
                                "failed": {"key": part_key("failed"), "count": 1}}
    assert [c["computation"] for c in json.loads(gzip.decompress(store.get(part_key("done")).body))] == ["a", "c"]


def test_a_reader_of_one_state_reads_only_its_part():
    store = MemoryObjectStore()
    write_status(store, doc([item("a", "done"), item("b", "failed", last_error="boom")]))
    store.delete(part_key("done"))  # had it been read, it would be missing now
    failed = read_status(store, ["failed"])
    assert [c["computation"] for c in failed["computations"]] == ["b"]
    assert "error: boom" in render_status(failed, state_filter="failed")
    assert read_status(store, states=())["computations"] == [] and read_status(store, ())["counts"]["done"] == 1


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
