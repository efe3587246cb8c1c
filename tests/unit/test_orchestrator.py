"""The orchestrator loop over the in-memory store with handlers in threads: every rule of a run, fast."""
from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest

from gcl_orchestrator.interfaces import Task
from gcl_orchestrator.model import ComputationSucceeded
from gcl_orchestrator.executors import ThreadExecutor
from gcl_orchestrator.runtime import HandlerRegistry, Orchestrator, RunOptions
from gcl_orchestrator.views import read_status
from gcl_orchestrator.runtime import audit
from gcl_orchestrator.runtime.worker import run_task
from gcl_orchestrator.sources import MemoryPushSource, PollingSource
from gcl_orchestrator.gcl import RuleSet, encode_gcl, load_gcl, spec_from_mapping
from gcl_orchestrator.storage import MemoryObjectStore

HANDLERS = str(Path(__file__).parent.parent / "handlers" / "pipeline.py")


@pytest.fixture
def store():
    return MemoryObjectStore(f"orch-{uuid.uuid4().hex[:8]}")


def put(store, key, body, *specs):
    store.put(key, body, encode_gcl([spec_from_mapping(s) for s in specs]).metadata)


def step(name, handler_type, inputs, output, **params):
    return {"computation": name, "handler_type": handler_type, "inputs": inputs, "output": output,
            **({"params": params} if params else {})}


def run(store, workers=2, rules=None, push=True, quiet_s=0.2):
    registry = HandlerRegistry.from_sources([HANDLERS])
    executor = ThreadExecutor(workers, registry, store)

    def sources(listing):
        return [MemoryPushSource(store)] if push else [PollingSource(store, 0.05, initial=listing)]

    orch = Orchestrator(store, executor, registry, make_sources=sources, rules=rules,
                        options=RunOptions(until_idle=True, quiet_s=quiet_s, status_interval_s=0.05))
    return orch, orch.run()


def test_a_result_picks_the_branch_that_runs(store):
    put(store, "n.txt", b"7", step("classify", "classify", ["n.txt"], "class.json"))
    orch, result = run(store)
    assert result.exit_code == 0
    assert store.get("odd.txt").body == b"took the odd branch"
    assert orch.core.record("even-branch") is None


def test_fan_out_joins_in_one_aggregate_each_part_once(store, tmp_path):
    runs = tmp_path / "runs.log"
    numbers = list(range(1, 41))
    put(store, "numbers.txt", " ".join(map(str, numbers)).encode(),
        step("split", "split", ["numbers.txt"], "numbers.json", runs=str(runs)))
    orch, result = run(store, workers=4)
    assert result.exit_code == 0
    assert json.loads(store.get("total.json").body) == {"sum": 2 * sum(numbers), "parts": 40}
    executed = runs.read_text().split()
    assert sorted(executed) == sorted(["split", "total", *(f"double:{i}" for i in range(40))])
    assert len(executed) == len(set(executed)) == 42
    # every output carries the GCL its handler emitted (41 specs exceed 2 KB: a sidecar holds them)
    ref = store.head("numbers.json").metadata["gcl-ref"]
    assert len(load_gcl(store.get(ref).body)) == 41


def test_bad_gcl_on_one_object_is_reported_with_its_key_while_the_rest_proceeds(store):
    store.put("broken.csv", b"x", {"gcl": '{"computation": "c", "inputs": "oops"}'})
    put(store, "fine.txt", b"ok", step("copy", "echo", ["fine.txt"], "copy.txt"))
    orch, result = run(store)
    assert result.exit_code == 1 and result.rejected == 1
    assert store.get("copy.txt").body == b"ok"
    status = read_status(store)
    (rejected,) = status["rejected"]
    assert rejected["source"] == "broken.csv" and "inputs: must be a list" in rejected["reason"]


def test_unknown_handler_type_fails_only_its_computation(store):
    put(store, "in.txt", b"data", step("mystery", "no_such_type", ["in.txt"], "m.out"),
        step("copy", "echo", ["in.txt"], "copy.txt"))
    orch, result = run(store)
    assert result.exit_code == 1
    assert [name for name, _ in result.failed] == ["mystery"]
    assert "no handler registered for handler_type 'no_such_type'" in result.failed[0][1]
    assert store.get("copy.txt").body == b"data"


@pytest.mark.parametrize("handler_type, error", [
    ("fail", "ValueError: bad value in in.txt (at pipeline.py:"),
    ("give_up", "gave up: PermanentHandlerError: the input can never work"),
    ("bad_emit", "emitted invalid GCL: inputs[0]: has an empty, '.' or '..' path segment"),
    # raised inside ctx, reported at the handler's own line
    ("read_other", "'not/an/input' is not an input of computation 'c' (inputs: in.txt); declare it in the GCL "
                   "inputs (at pipeline.py:"),
    ("returns_object", "the handler returned object, which is neither bytes, str nor JSON data"),
])
def test_handler_errors_are_recorded_with_a_useful_message(store, handler_type, error):
    put(store, "in.txt", b"data", step("c", handler_type, ["in.txt"], "c.out"))
    _, result = run(store)
    assert result.exit_code == 1
    (name, message), = result.failed
    assert error in message
    assert read_status(store)["computations"][0]["last_error"] == message


def test_a_cycle_is_rejected_and_named(store):
    put(store, "a", b"1", step("ab", "echo", ["a"], "b"), step("ba", "echo", ["b"], "a"))
    _, result = run(store)
    assert result.exit_code == 1
    (rejected,) = read_status(store)["rejected"]
    assert "would close a cycle: a -> [ab] -> b -> [ba] -> a" in rejected["reason"]


def test_a_cycle_emitted_by_a_handler_is_rejected(store):
    put(store, "seed", b"s", step("start", "emit_cycle", ["seed"], "grown"))
    _, result = run(store)
    assert result.exit_code == 1 and result.rejected == 1
    assert "seed -> [start] -> grown -> [loop-back] -> seed" in read_status(store)["rejected"][0]["reason"]


def test_waiting_on_an_input_that_never_comes_does_not_hang(store):
    put(store, "have.txt", b"x", step("join", "echo", ["have.txt", "never/arrives.txt"], "joined"))
    _, result = run(store)
    assert result.exit_code == 1
    assert result.waiting == [("join", ["never/arrives.txt"])]


def test_a_restart_reruns_nothing_that_is_done(store, tmp_path):
    runs = tmp_path / "runs.log"
    put(store, "numbers.txt", b"1 2 3", step("split", "split", ["numbers.txt"], "numbers.json", runs=str(runs)))
    assert run(store)[1].exit_code == 0
    first = runs.read_text()
    orch, result = run(store)
    assert result.exit_code == 0 and runs.read_text() == first
    assert all(r.state.value == "done" for r in orch.core.records()) and len(orch.core) == 5


def test_plain_files_start_pipelines_through_rules(store):
    rules = RuleSet.parse("rules: [{match: 'in/*.txt', gcl: {computation: 'copy:{stem}', handler_type: echo,"
                          " inputs: ['{key}'], output: 'out/{name}'}}]")
    store.put("in/a.txt", b"A")
    store.put("in/b.txt", b"B")
    _, result = run(store, rules=rules)
    assert result.exit_code == 0
    assert store.get("out/a.txt").body == b"A" and store.get("out/b.txt").body == b"B"


@pytest.mark.parametrize("restart", [False, True])
def test_rules_never_apply_to_an_output_live_or_at_restart(store, restart):
    # Given a rule for *.txt, and a computation whose output is a .txt key
    rules = RuleSet.parse("rules: [{match: '**/*.txt', gcl: {computation: 'copy:{stem_id}', handler_type: echo,"
                          " inputs: ['{key}'], output: 'copies/{name}.copy'}}]")
    put(store, "in.dat", b"x", step("make", "echo", ["in.dat"], "made/result.txt"))
    orch, result = run(store, rules=rules)
    if restart:  # the same store again: one listing of everything, the one decision made at restart
        orch, result = run(store, rules=rules)
    # Then the rule made nothing for the output, neither live nor at the restart
    assert result.exit_code == 0
    assert orch.core.record("copy:result") is None and not store.exists("copies/result.txt.copy")


def test_rules_stored_in_the_reserved_object_apply_too(store):
    store.put(".gclo/rules.yaml", b"rules: [{match: '*.txt', gcl: {computation: 'c:{stem}', handler_type: echo,"
                                  b" inputs: ['{key}'], output: 'out/{name}'}}]")
    store.put("x.txt", b"X")
    _, result = run(store)
    assert result.exit_code == 0 and store.get("out/x.txt").body == b"X"


def test_gcl_in_a_sidecar_is_followed(store):
    big = [step(f"copy{i}", "echo", ["in.txt"], f"out/{i}", pad="p" * 50) for i in range(30)]
    enc = encode_gcl([spec_from_mapping(s) for s in big])
    enc.write_sidecar(store)
    store.put("in.txt", b"hello", enc.metadata)
    _, result = run(store)
    assert result.exit_code == 0 and store.get("out/29").body == b"hello"


def test_the_sidecars_of_many_objects_are_read_in_parallel_and_a_missing_one_refuses_only_its_object():
    class Recording(MemoryObjectStore):
        def get(self, key):
            if key.startswith(".gclo/gcl/"):
                threads.add(threading.current_thread().name)
            return super().get(key)
    threads: set[str] = set()
    store = Recording(f"orch-{uuid.uuid4().hex[:8]}")
    for g in range(10):
        specs = [spec_from_mapping(step(f"g{g}:c{i}", "echo", [f"in/{g}.txt"], f"out/{g}/{i}", pad="p" * 60))
                 for i in range(20)]
        enc = encode_gcl(specs)
        assert enc.sidecar_key is not None
        if g != 3:  # the GCL of in/3.txt names a sidecar that was never written
            enc.write_sidecar(store)
        store.put(f"in/{g}.txt", f"v{g}".encode(), enc.metadata)
    orch, result = run(store, push=False)  # every object found by the first listing: one batch
    assert result.exit_code != 0  # a refused object fails the run
    assert all(store.get(f"out/{g}/{i}").body == f"v{g}".encode() for g in range(10) if g != 3 for i in range(20))
    assert not any(info.key.startswith("out/3/") for info in store.list())
    (refused,) = [r for r in orch.core.rejections if r.source == "in/3.txt"]
    assert "does not exist" in refused.reason
    assert threads and all(name.startswith("gclo-gcl") for name in threads), threads


def test_polling_finds_work_like_push_does(store):
    put(store, "n.txt", b"4", step("classify", "classify", ["n.txt"], "class.json"))
    _, result = run(store, push=False)
    assert result.exit_code == 0 and store.get("even.txt").body == b"took the even branch"


def test_duplicate_notifications_run_nothing_twice(store, tmp_path):
    runs = tmp_path / "runs.log"
    registry = HandlerRegistry.from_sources([HANDLERS])
    executor = ThreadExecutor(2, registry, store)

    class Duplicating(MemoryPushSource):
        def start(self, emit):
            super().start(lambda ev: [emit(ev) for _ in range(5)])

    orch = Orchestrator(store, executor, registry, make_sources=lambda _: [Duplicating(store)],
                        options=RunOptions(until_idle=True, quiet_s=0.3))
    done = threading.Event()
    result_box = []
    thread = threading.Thread(target=lambda: (result_box.append(orch.run()), done.set()))
    thread.start()
    put(store, "numbers.txt", b"5 6 7", step("split", "split", ["numbers.txt"], "numbers.json", runs=str(runs)))
    thread.join(30)
    assert result_box and result_box[0].exit_code == 0
    assert sorted(runs.read_text().split()) == ["double:0", "double:1", "double:2", "split", "total"]


def test_a_pre_existing_output_is_kept_and_its_gcl_followed(store):
    # Given an output already committed by someone else, with GCL of its own
    spec = spec_from_mapping(step("c", "echo", ["in"], "out"))
    store.put("in", b"new")
    put(store, "out", b"theirs", step("after", "echo", ["out"], "after.txt"))
    registry = HandlerRegistry.from_sources([HANDLERS])
    # When a late attempt finishes, its result is discarded and the existing object's GCL is reported
    outcome = run_task(Task(spec, 1, store.uri), registry, store)
    assert isinstance(outcome, ComputationSucceeded) and outcome.specs is None
    assert store.get("out").body == b"theirs"
    assert load_gcl(outcome.metadata["gcl"])[0].computation == "after"


def test_status_is_in_the_store_for_other_processes(store):
    put(store, "in.txt", b"x", step("copy", "echo", ["in.txt"], "copy.txt"))
    run(store)
    status = read_status(store)
    assert status["orchestrator"]["state"] == "finished"
    assert status["counts"]["done"] == 1
    assert status["computations"][0] | {"duration_s": 0} == {
        "computation": "copy", "state": "done", "handler_type": "echo", "priority": 0, "inputs": ["in.txt"],
        "output": "copy.txt", "source": "in.txt", "attempts": 1, "duration_s": 0, "pool": "general"}


def test_a_handler_waiting_for_work_it_submitted_does_not_hang_the_only_thread(store):
    put(store, "in.txt", b"child data", step("parent", "parent_waits", ["in.txt"], "parent.out"))
    orch, result = run(store, workers=1)
    assert result.exit_code == 0
    assert store.get("parent.out").body == b"parent saw: child data"
    assert orch.core.deadlocks == ()  # the parent lent its slot to the child it waited for: routine, no deadlock


def test_a_submitted_computation_is_written_into_the_parents_output_gcl(store):
    # so that an orchestrator restarting from the store alone still knows the child
    put(store, "in.txt", b"child data", step("parent", "parent_waits", ["in.txt"], "parent.out"))
    run(store, workers=1)
    specs = load_gcl(store.head("parent.out").metadata["gcl"])
    assert [(s.computation, s.output) for s in specs] == [("child-of-parent", "parent.child")]


def test_the_audit_trail_records_each_start_and_commit_and_a_late_writer_keeps_the_first(store, tmp_path,
                                                                                          monkeypatch):
    trail = tmp_path / "audit.jsonl"
    monkeypatch.setenv(audit.ENV, str(trail))
    put(store, "in.txt", b"payload", step("copy", "echo", ["in.txt"], "out.txt"))
    run(store)
    first = store.head("out.txt").etag
    # a late duplicate writer (a worker thought dead) runs the same attempt again
    registry = HandlerRegistry.from_sources([HANDLERS])
    spec = load_gcl(store.head("in.txt").metadata["gcl"])[0]
    assert isinstance(run_task(Task(spec, 1, store.uri), registry, store), ComputationSucceeded)
    assert store.head("out.txt").etag == first
    entries = [(e["event"], e["computation"], e["attempt"], e.get("key")) for e in audit.read(trail)]
    assert entries == [("start", "copy", 1, None), ("commit", "copy", 1, "out.txt"),
                       ("start", "copy", 1, None), ("kept", "copy", 1, "out.txt")]


def test_run_statistics_stay_bounded_over_a_long_run_and_keep_the_rate():
    from gcl_orchestrator.runtime.orchestrator import RunStats, Thinned

    stats = RunStats(success_times=Thinned(limit=1000))
    for i in range(250_000):  # a success every millisecond
        stats.success_times.append(i / 1000)
    stats.succeeded = 250_000
    assert len(stats.success_times) < 1000
    assert stats.steady_rate() == pytest.approx(1000, rel=0.01)
