"""A restart that reads the journal (.gclo/journal/) instead of every object, and what happens without it."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from gcl_orchestrator.executors import ThreadExecutor
from gcl_orchestrator.gcl import encode_gcl, spec_from_mapping
from gcl_orchestrator.journal import JOURNAL_PREFIX, load_journal
from gcl_orchestrator.runtime import HandlerRegistry, Orchestrator, RunOptions
from gcl_orchestrator.sources import MemoryPushSource, PollingSource
from gcl_orchestrator.storage import LocalDirectoryStore, MemoryObjectStore

HANDLERS = str(Path(__file__).parent.parent / "handlers" / "pipeline.py")


@pytest.fixture(params=["memory", "local"])  # the journal on every store: tests/contract/test_journal_store.py
def store(request, tmp_path):
    if request.param == "memory":
        return MemoryObjectStore(f"journal-{uuid.uuid4().hex[:8]}")
    return LocalDirectoryStore(tmp_path / "store")


# --- a restart that reads the journal --------------------------------------------------------------------------

def put(store, key, body, *specs):
    store.put(key, body, encode_gcl([spec_from_mapping(s) for s in specs]).metadata)


def step(name, handler_type, inputs, output, **params):
    return {"computation": name, "handler_type": handler_type, "inputs": inputs, "output": output,
            **({"params": params} if params else {})}


class Heads:
    """Counts HEADs made on a store (the per-object reads a restart should not need)."""

    def __init__(self, store):
        self.keys: list[str] = []
        real = store.head

        def head(key):
            self.keys.append(key)
            return real(key)

        store.head = head


def run(store, rebuild=False):
    push = isinstance(store, MemoryObjectStore)
    registry = HandlerRegistry.from_sources([HANDLERS])
    executor = ThreadExecutor(2, registry, store)

    def sources(listing):
        return [MemoryPushSource(store)] if push else [PollingSource(store, 0.05, initial=listing)]

    orch = Orchestrator(store, executor, registry, make_sources=sources,
                        options=RunOptions(until_idle=True, quiet_s=0.2, status_interval_s=0.05, rebuild=rebuild,
                                           journal_interval_s=0.05))
    return orch, orch.run()


def test_a_restart_reads_the_journal_not_every_object_and_reruns_nothing(store, tmp_path):
    runs = tmp_path / "runs.log"
    put(store, "numbers.txt", b"1 2 3 4 5 6 7 8 9 10 11 12",
        step("split", "split", ["numbers.txt"], "numbers.json", runs=str(runs)))
    assert run(store)[1].exit_code == 0
    first = runs.read_text()
    heads = Heads(store)
    orch, result = run(store)
    assert result.exit_code == 0 and runs.read_text() == first
    assert len(orch.core) == 14 and all(r.state.value == "done" for r in orch.core.records())
    assert heads.keys == []  # 14 objects, every one known to the journal in its version
    assert orch.restart["from_journal"] == orch.restart["listed"] == 15


def test_an_object_changed_while_nothing_ran_is_read_and_what_reads_it_runs_again(store, tmp_path):
    runs = tmp_path / "runs.log"
    put(store, "numbers.txt", b"1 2 3", step("split", "split", ["numbers.txt"], "numbers.json", runs=str(runs)))
    assert run(store)[1].exit_code == 0
    put(store, "numbers.txt", b"1 2 3 4", step("split", "split", ["numbers.txt"], "numbers.json", runs=str(runs)))
    heads = Heads(store)
    orch, result = run(store)
    assert result.exit_code == 0
    assert heads.keys[0] == "numbers.txt"  # the one object the journal knew in another version
    assert json.loads(store.get("total.json").body) == {"sum": 20, "parts": 4}


def test_an_output_deleted_while_nothing_ran_is_computed_again(store, tmp_path):
    runs = tmp_path / "runs.log"
    put(store, "numbers.txt", b"1 2", step("split", "split", ["numbers.txt"], "numbers.json", runs=str(runs)))
    assert run(store)[1].exit_code == 0
    store.delete("total.json")
    assert run(store)[1].exit_code == 0
    assert json.loads(store.get("total.json").body) == {"sum": 6, "parts": 2}
    assert load_journal(store).objects["total.json"].etag == store.head("total.json").etag


def test_rebuild_reads_every_object_and_gives_the_same_graph(store, tmp_path):
    runs = tmp_path / "runs.log"
    put(store, "numbers.txt", b"1 2 3", step("split", "split", ["numbers.txt"], "numbers.json", runs=str(runs)))
    assert run(store)[1].exit_code == 0
    heads = Heads(store)
    orch, result = run(store, rebuild=True)
    assert result.exit_code == 0 and len(orch.core) == 5
    assert len(set(heads.keys)) == orch.restart["listed"] == 6 and orch.restart["from_journal"] == 0


def test_a_lost_journal_means_reading_the_objects_not_losing_the_graph(store, tmp_path):
    runs = tmp_path / "runs.log"
    put(store, "numbers.txt", b"1 2 3", step("split", "split", ["numbers.txt"], "numbers.json", runs=str(runs)))
    assert run(store)[1].exit_code == 0
    first = runs.read_text()
    for info in list(store.list(JOURNAL_PREFIX)):
        store.delete(info.key)
    orch, result = run(store)
    assert result.exit_code == 0 and runs.read_text() == first and len(orch.core) == 5


def completions(store):
    lines = []
    for info in store.list(".gclo/events/"):
        lines += [json.loads(line) for line in store.get(info.key).body.splitlines()]
    return sorted((e["computation"], e["state"]) for e in lines)


def test_a_restart_does_not_tell_completions_again_unless_the_output_changed(store, tmp_path):
    runs = tmp_path / "runs.log"
    put(store, "numbers.txt", b"1 2", step("split", "split", ["numbers.txt"], "numbers.json", runs=str(runs)))
    assert run(store)[1].exit_code == 0
    told = completions(store)
    assert len(told) == 4
    assert run(store)[1].exit_code == 0
    assert completions(store) == told  # nothing ran, nothing told twice
    put(store, "numbers.txt", b"1 5", step("split", "split", ["numbers.txt"], "numbers.json", runs=str(runs)))
    assert run(store)[1].exit_code == 0
    again = completions(store)
    assert len(again) > len(told) and ("split", "done") in [e for e in again if again.count(e) == 2]


def test_attempts_and_a_pending_retry_survive_a_restart(store, tmp_path):
    import threading
    import time

    from gcl_orchestrator.model import State

    runs = tmp_path / "runs.log"
    put(store, "in.txt", b"x", {**step("c", "flaky", ["in.txt"], "out.txt", succeed_on=99, runs=str(runs)),
                               "retry": {"max_attempts": 3, "initial_delay_s": 2.0, "jitter_s": 0}})
    registry = HandlerRegistry.from_sources([HANDLERS])
    push = isinstance(store, MemoryObjectStore)
    orch = Orchestrator(store, ThreadExecutor(2, registry, store), registry,
                        make_sources=lambda listing: [MemoryPushSource(store)] if push else
                        [PollingSource(store, 0.05, initial=listing)],
                        options=RunOptions(status_interval_s=0.05, journal_interval_s=0.05))
    thread = threading.Thread(target=orch.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not (orch.core.record("c") and orch.core.record("c").state is State.RETRYING):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        retry_at = orch.core.record("c").retry_at
    finally:
        orch.request_stop()
        thread.join()
    assert runs.read_text().split() == ["c"]
    orch, result = run(store)  # restarted within the 2 s delay: it waits it out, then makes attempts 2 and 3 only
    rec = orch.core.record("c")
    assert result.exit_code == 1 and rec.state is State.FAILED and rec.attempts == 3
    assert runs.read_text().split() == ["c", "c", "c"]
    assert orch.restart["attempts_restored"] == 1
    assert any("attempt 1" in e for e in rec.errors)
    assert retry_at is not None and time.time() >= retry_at - 0.1


def test_a_completion_whose_event_could_not_be_written_is_told_after_the_restart(store, tmp_path):
    from gcl_orchestrator.errors import TransientStorageError

    runs = tmp_path / "runs.log"
    put(store, "numbers.txt", b"1 2", step("split", "split", ["numbers.txt"], "numbers.json", runs=str(runs)))
    real_put = store.put

    def refuse_events(key, body, metadata=None):
        if key.startswith(".gclo/events/"):
            raise TransientStorageError("the store is not answering")
        return real_put(key, body, metadata)

    store.put = refuse_events
    assert run(store)[1].exit_code == 0
    store.put = real_put
    assert completions(store) == []
    assert run(store)[1].exit_code == 0
    assert len(completions(store)) == 4  # told now, since it never was


def test_rebuild_does_not_tell_completions_again(store, tmp_path):
    runs = tmp_path / "runs.log"
    put(store, "numbers.txt", b"1 2", step("split", "split", ["numbers.txt"], "numbers.json", runs=str(runs)))
    assert run(store)[1].exit_code == 0
    told = completions(store)
    assert run(store, rebuild=True)[1].exit_code == 0
    assert completions(store) == told
