"""The Dask executor against a real cluster: `dask scheduler` and two `dask worker` processes on 127.0.0.1, one
offering `gpu=1,ml_handler=1`, the other nothing. A dynamic fan-out and fan-in; placement by GCL resources and
handler-type affinity, checked from where each handler says it ran; a worker killed mid-run; the orchestrator
killed and restarted against the same cluster; handlers that wait for work they submitted."""
from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from gcl_orchestrator.runtime import audit
from gcl_orchestrator.storage import LocalDirectoryStore

from ..conftest import wait_until
from gcl_orchestrator.devservers.dask import DaskCluster

from ..servers import forget_pid, record_pid
from .test_gclo_cli import GCLO, ROOT, gcl, gclo

pytestmark = pytest.mark.e2e
HANDLERS = str(ROOT / "tests" / "handlers" / "cluster.py")
PARTS = 24  # part i doubles i + 1; KINDS in the handlers: i % 4 == 1 asks for a gpu, i % 4 == 2 is ml_handler


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, aws_test_environment):
    trail = tmp_path_factory.mktemp("dask") / "audit.jsonl"
    c = DaskCluster({"GCLO_AUDIT_LOG": str(trail)}, on_start=record_pid, on_stop=forget_pid)
    try:
        c.add_worker("gpu-worker", "gpu=1,ml_handler=1")
        c.add_worker("cpu-worker")
        c.trail = trail
        yield c
    finally:
        c.stop()


@pytest.fixture
def job(cluster, tmp_path):
    """A store seeded with a fan of PARTS parts, and the files that say what ran where."""
    cluster.trail.write_text("")  # this test's commits only
    store = tmp_path / "bucket"
    runs = tmp_path / "runs.log"
    start = tmp_path / "start.txt"
    start.write_text("go")
    spec = gcl(computation="fan", handler_type="fan", inputs=["in/start.txt"], output="numbers.json",
               params={"parts": PARTS, "runs": str(runs), "sleep": 0.2})
    assert gclo("put", start, "in/start.txt", "--store", store, "--gcl", spec).returncode == 0
    return store, runs


def run_args(cluster, store, *extra):
    return [*GCLO, "run", "--store", str(store), "--handlers", HANDLERS, "--executor", cluster.target,
            "--quiet-period", "0.5", *extra]


def ran(runs):
    """computation -> the workers it finished on, in order; and the starts per worker."""
    done, started = collections.defaultdict(list), collections.Counter()
    for line in runs.read_text().splitlines() if runs.exists() else []:
        name, what, worker = line.split()
        if what == "done":
            done[name].append(worker)
        else:
            started[worker] += 1
    return done, started


def check_result(store, cluster):
    s = LocalDirectoryStore(store)
    total = json.loads(s.get("sum.json").body)
    assert total["sum"] == sum(2 * (i + 1) for i in range(PARTS)) and total["parts"] == PARTS
    commits = collections.Counter(e["key"] for e in audit.read(cluster.trail) if e["event"] == "commit")
    assert commits and max(commits.values()) == 1, [k for k, n in commits.items() if n > 1]
    assert set(commits) >= {f"parts/{i:03d}.json" for i in range(PARTS)} | {"sum.json", "numbers.json"}


def test_a_fan_out_and_in_runs_gpu_and_ml_handler_steps_only_on_the_worker_that_offers_them(cluster, job):
    store, runs = job
    proc = subprocess.run(run_args(cluster, store, "--until-idle"), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "2 Dask worker(s) of the Dask scheduler at dask://127.0.0.1:" in proc.stderr
    check_result(store, cluster)
    done, _ = ran(runs)
    placed = {i: done[f"part:{i}"] for i in range(PARTS)}
    assert all(len(w) == 1 for w in placed.values()), placed
    assert all(placed[i] == ["gpu-worker"] for i in range(PARTS) if i % 4 in (1, 2)), placed
    assert {w[0] for i, w in placed.items() if i % 4 in (0, 3)} <= {"gpu-worker", "cpu-worker"}
    assert "not-on-dask" not in runs.read_text()


def test_a_worker_killed_mid_run_loses_nothing_and_commits_every_output_once(cluster, job):
    store, runs = job
    cluster.add_worker("victim", nthreads=2)
    proc = subprocess.Popen(run_args(cluster, store, "--until-idle"), stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: ran(runs)[1]["victim"] >= 2, 60, "parts started on the victim")
        cluster.kill("victim")  # kill -9, mid-task: its attempts are lost with it
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    check_result(store, cluster)
    assert re.search(r"attempt part:\d+ #1 failed: lost with its worker: tcp://127.0.0.1:\d+ died while it ran or "
                     r"waited there; attempt 2 in", err), err[-3000:]
    assert "Dask worker left: tcp://127.0.0.1:" in err


def test_the_orchestrator_killed_and_restarted_against_the_same_cluster_finishes_the_graph(cluster, job):
    store, runs = job
    proc = subprocess.Popen(run_args(cluster, store), stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: len(ran(runs)[0]) >= PARTS // 3, 60, "a third of the parts")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator alone: the cluster goes on
        proc.wait(30)
    again = subprocess.run(run_args(cluster, store, "--until-idle"), capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    check_result(store, cluster)
    assert "known from the journal" in again.stderr


def test_handlers_that_wait_for_work_they_submitted_give_their_thread_to_it(cluster, tmp_path):
    """Four waiting parents on the cluster's four threads: their children run only because the parents secede."""
    store = tmp_path / "bucket"
    numbers = tmp_path / "numbers.json"
    numbers.write_text("[21]")
    specs = [{"computation": f"parent:{i}", "handler_type": "waiting_parent", "inputs": ["in/numbers.json"],
              "output": f"parent-{i}.json", "params": {"child": f"child-{i}"}} for i in range(4)]
    assert gclo("put", numbers, "in/numbers.json", "--store", store, "--gcl", json.dumps(specs)).returncode == 0
    proc = subprocess.run(run_args(cluster, store, "--until-idle"), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    s = LocalDirectoryStore(store)
    assert [json.loads(s.get(f"parent-{i}.json").body) for i in range(4)] == [{"child": 42}] * 4


def test_a_worker_that_joins_later_gets_the_handlers_and_what_it_offers_becomes_usable(cluster, tmp_path):
    """The handler file is gone by the time the newcomer joins: it runs from the copy the plugin carries."""
    store = tmp_path / "bucket"
    (store / "in").mkdir(parents=True)
    log = tmp_path / "gclo.log"
    handlers = tmp_path / "elsewhere" / "cluster_handlers.py"
    handlers.parent.mkdir()
    shutil.copy(HANDLERS, handlers)
    args = run_args(cluster, store)
    args[args.index(HANDLERS)] = str(handlers)
    with open(log, "w") as err:
        proc = subprocess.Popen(args, stderr=err, text=True)
    try:
        wait_until(lambda: "start-up:" in log.read_text(), 60, "the orchestrator started")
        handlers.unlink()
        cluster.add_worker("newcomer", "only_here=1", nthreads=1)
        wait_until(lambda: "only_here=1" in log.read_text(), 30, "the core told of the newcomer's resource")
        assert "Dask worker joined: tcp://127.0.0.1:" in log.read_text()
        numbers = tmp_path / "numbers.json"
        numbers.write_text("[8]")
        spec = gcl(computation="there", handler_type="part", inputs=["in/numbers.json"], output="there.json",
                   resources={"only_here": 1}, params={"index": 0, "kind": "any"})
        assert gclo("put", numbers, "in/numbers.json", "--store", store, "--gcl", spec).returncode == 0
        wait_until(lambda: (store / "there.json").exists(), 60, "the computation only the newcomer can run")
        assert json.loads((store / "there.json").read_text()) == {"value": 16, "kind": "any", "worker": "newcomer"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        cluster.kill("newcomer")
    assert "Traceback" not in log.read_text()


def test_a_handler_whose_outcome_is_too_large_for_a_dask_event_still_completes(cluster, tmp_path):
    """300 emitted specs: the outcome is announced on the topic and fetched from the task's result."""
    cluster.trail.write_text("")
    store = tmp_path / "bucket"
    start = tmp_path / "start.txt"
    start.write_text("go")
    spec = gcl(computation="fan", handler_type="fan", inputs=["in/start.txt"], output="numbers.json",
               params={"parts": 300})
    assert gclo("put", start, "in/start.txt", "--store", store, "--gcl", spec).returncode == 0
    proc = subprocess.run(run_args(cluster, store, "--until-idle"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    total = json.loads(LocalDirectoryStore(store).get("sum.json").body)
    assert total["sum"] == sum(2 * (i + 1) for i in range(300)) and total["parts"] == 300


def test_a_time_out_cancels_the_dask_task_and_fails_the_attempt_at_once(cluster, tmp_path):
    store = tmp_path / "bucket"
    numbers = tmp_path / "numbers.json"
    numbers.write_text("[1]")
    spec = gcl(computation="slow", handler_type="part", inputs=["in/numbers.json"], output="slow.json",
               timeout_s=1, retry={"max_attempts": 1}, params={"index": 0, "kind": "any", "sleep": 10})
    assert gclo("put", numbers, "in/numbers.json", "--store", store, "--gcl", spec).returncode == 0
    started = time.monotonic()
    proc = subprocess.run(run_args(cluster, store, "--until-idle"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "attempt slow #1 failed: timed out after 1s" in proc.stderr, proc.stderr[-2000:]
    assert time.monotonic() - started < 6  # neither the handler's 10 s nor a stop that waits for it


def test_when_the_scheduler_dies_the_orchestrator_fails_what_was_in_flight_and_exits_3(tmp_path, aws_test_environment):
    own = DaskCluster(on_start=record_pid, on_stop=forget_pid)
    try:
        own.add_worker("lonely", nthreads=1)
        store = tmp_path / "bucket"
        numbers = tmp_path / "numbers.json"
        numbers.write_text("[1]")
        spec = gcl(computation="slow", handler_type="part", inputs=["in/numbers.json"], output="slow.json",
                   params={"index": 0, "kind": "any", "sleep": 30, "runs": str(tmp_path / "runs.log")})
        assert gclo("put", numbers, "in/numbers.json", "--store", store, "--gcl", spec).returncode == 0
        proc = subprocess.Popen(run_args(own, store), stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: (tmp_path / "runs.log").exists(), 60, "the attempt started")
            own.kill("scheduler")
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 3, err[-3000:]
        assert "lost the connection to the Dask scheduler at dask://127.0.0.1:" in err, err[-3000:]
        assert "Traceback" not in err
    finally:
        own.stop()
