"""kill -9 of the orchestrator and its workers a third of the way through a 60-part fan-out, then a restart:
the right aggregate, every part committed once, at most the in-flight parts executed again. On the local store
and on SeaweedFS."""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess

import pytest

from gcl_orchestrator.gcl import encode_gcl, spec_from_mapping
from gcl_orchestrator.storage import open_store

from ..conftest import wait_until
from ..servers import start_seaweedfs, stop_seaweedfs
from .test_gclo_cli import GCLO, TEST_HANDLERS

pytestmark = pytest.mark.e2e
PARTS = 60
WORKERS = 2


def seed(store, runs):
    step = {"computation": "split", "handler_type": "split", "inputs": ["numbers.txt"], "output": "numbers.json",
            "params": {"runs": str(runs), "sleep": 0.05}}
    store.put("numbers.txt", " ".join(str(i) for i in range(1, PARTS + 1)).encode(),
              encode_gcl([spec_from_mapping(step)]).metadata)


def executions(runs):
    return collections.Counter(runs.read_text().split()) if runs.exists() else collections.Counter()


def crash_and_restart(store_args, store, runs):
    # Given a run a third of the way through the fan-out
    proc = subprocess.Popen([*GCLO, "run", *store_args, "--handlers", TEST_HANDLERS, "--workers", str(WORKERS)],
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: sum(executions(runs).values()) >= PARTS // 3, 60, "a third of the parts")
    finally:
        # When the orchestrator and every worker are killed at once
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    before = executions(runs)
    committed_before = {k for k in (f"parts/{i:03d}.json" for i in range(PARTS)) if store.exists(k)}
    # Then a restart finishes the job
    done = subprocess.run([*GCLO, "run", *store_args, "--handlers", TEST_HANDLERS, "--workers", str(WORKERS),
                           "--until-idle", "--quiet-period", "0.5"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return before, committed_before


def check(store, runs, before, committed_before):
    assert json.loads(store.get("total.json").body) == {"sum": PARTS * (PARTS + 1), "parts": PARTS}
    after = executions(runs)
    parts = [f"double:{i}" for i in range(PARTS)]
    assert all(after[p] >= 1 for p in parts)
    again = [p for p in parts if after[p] > 1]
    # only what was running when the crash came runs again; nothing committed before the crash ran again
    assert len(again) <= WORKERS, again
    assert all(f"parts/{int(p.split(':')[1]):03d}.json" not in committed_before for p in again)
    assert after["split"] == 1 and after["total"] == 1
    assert sum(before.values()) >= PARTS // 3


def test_kill_9_and_restart_on_the_local_store(tmp_path):
    store = open_store(str(tmp_path / "bucket"))
    runs = tmp_path / "runs.log"
    seed(store, runs)
    before, committed = crash_and_restart(["--store", str(tmp_path / "bucket")], store, runs)
    check(store, runs, before, committed)


def test_kill_9_and_restart_on_seaweedfs(tmp_path):
    server = start_seaweedfs(tmp_path / "seaweedfs")
    try:
        server.create_bucket("crash")
        uri = f"s3://crash?endpoint_url={server.endpoint}"
        store = open_store(uri)
        runs = tmp_path / "runs.log"
        seed(store, runs)
        args = ["--store", "s3://crash", "--endpoint-url", server.endpoint, "--filer", server.filer]
        before, committed = crash_and_restart(args, store, runs)
        check(store, runs, before, committed)
    finally:
        stop_seaweedfs(server)
