"""Adaptive scheduling and failure handling as a user sees them: through `gclo run` on a local store."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from gcl_orchestrator.gcl import encode_gcl, spec_from_mapping
from gcl_orchestrator.storage import LocalDirectoryStore

from .test_gclo_cli import GCLO, TEST_HANDLERS

pytestmark = pytest.mark.e2e


def step(name, handler_type, inputs, output, **fields):
    return {"computation": name, "handler_type": handler_type, "inputs": inputs, "output": output, **fields}


def put(store, key, body, *steps):
    store.put(key, body, encode_gcl([spec_from_mapping(s) for s in steps]).metadata)


def run(store, *extra, workers=1, env=None, timeout=90):
    proc = subprocess.run([*GCLO, "run", "--store", str(store.root), "--handlers", TEST_HANDLERS, "--workers",
                           str(workers), "--until-idle", "--quiet-period", "0.5", *map(str, extra)],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def status(store):
    proc = subprocess.run([*GCLO, "status", "--store", str(store.root), "--json"], capture_output=True, text=True,
                          timeout=30)
    doc = json.loads(proc.stdout)
    return doc, {c["computation"]: c for c in doc["computations"]}


@pytest.fixture
def store(tmp_path):
    return LocalDirectoryStore(tmp_path / "bucket")


def test_with_one_worker_eight_ready_together_run_by_priority(store, tmp_path):
    runs = tmp_path / "runs.log"
    levels = ["low", "normal", "critical", "high"] * 2
    put(store, "in.txt", b"x", *[step(f"{p}-{i}", "echo", ["in.txt"], f"out/{i}", priority=p,
                                      params={"runs": str(runs)}) for i, p in enumerate(levels)])
    assert run(store).returncode == 0
    assert runs.read_text().split() == ["critical-2", "critical-6", "high-3", "high-7", "normal-1", "normal-5",
                                        "low-0", "low-4"]


def test_a_handler_that_fails_twice_then_succeeds_is_done_with_three_attempts(store):
    put(store, "in.txt", b"x", step("flaky", "flaky", ["in.txt"], "flaky.out", params={"succeed_on": 3},
                                    retry={"max_attempts": 3, "initial_delay_s": 0.1}))
    proc = run(store)
    assert proc.returncode == 0, proc.stderr
    assert (store.root / "flaky.out").read_text() == "succeeded on attempt 3"
    _, by_name = status(store)
    assert by_name["flaky"]["attempts"] == 3 and by_name["flaky"]["state"] == "done"
    assert len(by_name["flaky"]["errors"]) == 2


def test_one_that_always_fails_is_replaced_by_its_alternative(store):
    put(store, "in.txt", b"x", step("fragile", "fail", ["in.txt"], "result.txt", retry={"max_attempts": 2,
                                                                                        "initial_delay_s": 0},
                                    alternatives=[{"handler_type": "fallback", "computation": "plan-b"}]),
        step("after", "echo", ["result.txt"], "after.txt"))
    proc = run(store)
    assert proc.returncode == 0, proc.stderr
    assert (store.root / "result.txt").read_text() == "from the fallback"
    assert (store.root / "after.txt").read_text() == "from the fallback"
    _, by_name = status(store)
    assert by_name["fragile"]["produced_by"] == "plan-b" and by_name["fragile"]["attempts"] == 3
    table = subprocess.run([*GCLO, "status", "--store", str(store.root)], capture_output=True, text=True).stdout
    assert "by alternative 'plan-b'" in table


def test_a_failed_computation_marks_its_dependents_upstream_failed(store):
    put(store, "in.txt", b"x", step("broken", "give_up", ["in.txt"], "b.out"),
        step("next", "echo", ["b.out"], "n.out"), step("last", "echo", ["n.out"], "l.out"))
    proc = run(store)
    assert proc.returncode == 1
    _, by_name = status(store)
    assert [by_name[n]["state"] for n in ("broken", "next", "last")] == ["failed", "upstream-failed",
                                                                         "upstream-failed"]
    assert "upstream computation 'broken' failed" in by_name["last"]["last_error"]


def test_a_time_out_kills_the_handler_and_the_alternative_takes_over(store):
    put(store, "in.txt", b"payload", step("stuck", "hang", ["in.txt"], "stuck.out", timeout_s=1,
                                          alternatives=[{"handler_type": "echo"}]))
    proc = run(store, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (store.root / "stuck.out").read_text() == "payload"
    assert "timed out after 1s" in proc.stderr


def test_inputs_nothing_will_produce_are_a_reported_and_resolved_deadlock(store):
    put(store, "in.txt", b"x", step("join", "echo", ["in.txt", "never.txt"], "j.out"),
        step("after-join", "echo", ["j.out"], "a.out"))
    proc = subprocess.run([*GCLO, "run", "--store", str(store.root), "--handlers", TEST_HANDLERS, "--workers", "1",
                           "--until-idle", "--quiet-period", "3", "--deadlock-grace", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "DEADLOCK (missing-inputs)" in proc.stderr and "'join' waits for 'never.txt'" in proc.stderr
    doc, by_name = status(store)
    assert by_name["join"]["state"] == "failed" and by_name["after-join"]["state"] == "upstream-failed"
    assert doc["deadlocks"][0]["computations"] == ["join"]


def test_resources_no_pool_can_meet_fail_at_once_and_pools_give_affinity(store):
    put(store, "in.txt", b"x", step("needs-gpu", "echo", ["in.txt"], "g.out", resources={"gpu": 1}),
        step("on-fallback-pool", "fallback", ["in.txt"], "f.out", resources={"gpu": 1}))
    proc = run(store, "--resources", "cpu=1,memory_mb=1000", "--pool", "fallback=1:gpu=1")
    assert proc.returncode == 1
    _, by_name = status(store)
    assert by_name["needs-gpu"]["state"] == "failed"
    assert "asks for gpu=1, more than pool 'general' will ever have (cpu=1, memory_mb=1000)" in \
        by_name["needs-gpu"]["last_error"]
    assert by_name["on-fallback-pool"]["state"] == "done" and by_name["on-fallback-pool"]["pool"] == "fallback"


def test_completion_notifications_and_events(store, tmp_path):
    log = tmp_path / "completions.log"
    put(store, "in.txt", b"x", step("watched", "echo", ["in.txt"], "w.out", notify=["audit"]),
        step("parent", "follow_children", ["in.txt"], "p.out"))
    proc = run(store, workers=2, env={"GCLO_TEST_COMPLETIONS": str(log)})
    assert proc.returncode == 1  # child-bad fails, on purpose
    lines = sorted(log.read_text().splitlines())
    assert lines == ["child-bad failed 1 None", "child-ok done 1 child-ok", "watched done 1 watched"]
    events = [json.loads(line) for p in sorted((store.root / ".gclo" / "events").iterdir())
              for line in p.read_text().splitlines()]
    assert {e["computation"]: e["state"] for e in events} == {"watched": "done", "parent": "done",
                                                              "child-ok": "done", "child-bad": "failed"}


def test_the_graph_exports_with_each_nodes_state(store):
    put(store, "in.txt", b"x", step("copy", "echo", ["in.txt"], "copy.txt"),
        step("wait", "echo", ["copy.txt", "never.txt"], "w.txt"))
    run(store)
    dot = subprocess.run([*GCLO, "graph", "--store", str(store.root)], capture_output=True, text=True).stdout
    assert dot.startswith("digraph gclo {") and '"k:in.txt" -> "c:copy"' in dot and "[echo] done" in dot
    mermaid = subprocess.run([*GCLO, "graph", "--store", str(store.root), "--format", "mermaid"],
                             capture_output=True, text=True).stdout
    assert mermaid.startswith("flowchart LR") and "never.txt (missing)" in mermaid
    data = json.loads(subprocess.run([*GCLO, "graph", "--store", str(store.root), "--format", "json"],
                                     capture_output=True, text=True).stdout)
    states = {n["id"]: n.get("state") for n in data["nodes"] if n["type"] == "computation"}
    assert states == {"copy": "done", "wait": "waiting"}
    cut = subprocess.run([*GCLO, "graph", "--store", str(store.root), "--limit", "1"], capture_output=True,
                         text=True)
    assert cut.returncode == 0 and "drawing 1 of 2 computations" in cut.stderr and "c:wait" not in cut.stdout
    around = subprocess.run([*GCLO, "graph", "--store", str(store.root), "--around", "never.txt", "--format",
                             "json"], capture_output=True, text=True)
    ids = {n["id"] for n in json.loads(around.stdout)["nodes"] if n["type"] == "computation"}
    assert ids == {"wait", "copy"}  # wait reads never.txt; copy writes what wait reads
    nothing = subprocess.run([*GCLO, "graph", "--store", str(store.root), "--around", "nope"],
                             capture_output=True, text=True)
    assert nothing.returncode == 1 and "no computation reads, writes or is named 'nope'" in nothing.stderr


def test_a_handler_waiting_on_work_it_submitted_in_the_only_slot_does_not_hang(store):
    put(store, "in.txt", b"from the child", step("parent", "parent_waits", ["in.txt"], "parent.out"))
    proc = run(store, workers=1, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (store.root / "parent.out").read_text() == "parent saw: from the child"
    assert "wait    parent #1 for parent.child (its slot goes to that work meanwhile)" in proc.stderr
    # the child runs on the parent's slot (it was either dispatched onto it, or moved there from the queue)
    assert ("start   child-of-parent #1 [echo] on a lent slot" in proc.stderr
            or "lend    child-of-parent #1 the slot of the handler waiting for it" in proc.stderr)
    doc, by_name = status(store)
    assert by_name["child-of-parent"]["state"] == "done"
    assert doc["deadlocks"] == []  # lending the slot to the awaited work is routine, not a deadlock


def test_a_fan_out_beyond_the_limit_fails_with_a_clear_error(store, tmp_path):
    put(store, "numbers.txt", b" ".join(str(i).encode() for i in range(30)),
        step("split", "split", ["numbers.txt"], "numbers.json"))
    proc = run(store, "--max-emit", "10")
    assert proc.returncode == 1
    _, by_name = status(store)
    assert "emitted more than 10 computations; if this fan-out is intended, raise the limit with gclo run " \
           "--max-emit" in by_name["split"]["last_error"]


def test_credentials_never_appear_in_logs_or_status(seaweedfs, tmp_path):
    env = {"AWS_ACCESS_KEY_ID": "gclo-test-key", "AWS_SECRET_ACCESS_KEY": "not-the-secret-but-a-secret-anyway"}
    proc = subprocess.run([*GCLO, "run", "--store", "s3://no-such-bucket-creds", "--endpoint-url",
                           seaweedfs.endpoint, "--handlers", TEST_HANDLERS, "--until-idle"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert proc.returncode == 3
    assert "not-the-secret" not in proc.stderr + proc.stdout and "access denied" in proc.stderr
