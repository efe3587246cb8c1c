"""`gclo run` restarted on a finished store: it reads the journal and lists the store, and reads one by one only
what changed while nothing ran, on the local store and on SeaweedFS; a second orchestrator on the same journal
is refused."""
from __future__ import annotations

import json
import re
import subprocess
import uuid

import boto3
import pytest

from gcl_orchestrator.journal import Journal, load_journal
from gcl_orchestrator.storage import open_store

from ..conftest import wait_until
from .test_gclo_cli import GCLO, TEST_HANDLERS, gcl, gclo, run_until_idle

pytestmark = pytest.mark.e2e
START_UP = re.compile(r"start-up: (\d+) object\(s\) listed, (\d+) known from the journal, (\d+) read one by one"
                      r"(?: \((\d+) store request\(s\)\))?")


@pytest.fixture(params=["local", "seaweedfs"])
def target(request, tmp_path):
    if request.param == "local":
        return [str(tmp_path / "bucket")], []
    server = request.getfixturevalue("seaweedfs")
    bucket = f"restart-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket=bucket)
    return [f"s3://{bucket}", "--endpoint-url", server.endpoint], ["--filer", server.filer]


def test_a_restart_reads_what_changed_not_every_object(target, tmp_path):
    store_args, event_args = target
    runs = tmp_path / "runs.log"
    numbers = tmp_path / "numbers.txt"
    numbers.write_text(" ".join(str(i) for i in range(1, 41)))
    spec = gcl(computation="split", handler_type="split", inputs=["in/numbers.txt"], output="numbers.json",
               params={"runs": str(runs)})
    assert gclo("put", numbers, "in/numbers.txt", "--store", *store_args, "--gcl", spec).returncode == 0
    first = run_until_idle(store_args[0], *store_args[1:], *event_args)
    assert first.returncode == 0, first.stderr
    executed = runs.read_text().split()
    assert len(executed) == 42  # split, 40 doubles, total

    again = run_until_idle(store_args[0], *store_args[1:], *event_args)
    assert again.returncode == 0, again.stderr
    listed, known, one_by_one, requests = START_UP.search(again.stderr).groups()
    assert int(known) == int(listed) == 43 and one_by_one == "0"
    # S3: no HEAD of the 43; the sidecar of the split's 41 specs, and what the sources just started ask meanwhile
    assert requests is None or int(requests) <= 5
    assert "43 computation(s) already done" not in again.stderr  # 42: the input is not a computation
    assert "42 computation(s) already done" in again.stderr and runs.read_text().split() == executed

    numbers.write_text(" ".join(str(i) for i in range(1, 42)))  # replaced while nothing runs
    assert gclo("put", numbers, "in/numbers.txt", "--store", *store_args, "--gcl", spec).returncode == 0
    third = run_until_idle(store_args[0], *store_args[1:], *event_args)
    assert third.returncode == 0, third.stderr
    listed, known, one_by_one, _ = START_UP.search(third.stderr).groups()
    assert (listed, known, one_by_one) == ("43", "42", "1")
    store = open_store(store_args[0] + (f"?endpoint_url={store_args[2]}" if len(store_args) > 1 else ""))
    assert json.loads(store.get("total.json").body) == {"sum": 41 * 42, "parts": 41}

    rebuilt = run_until_idle(store_args[0], *store_args[1:], *event_args, "--rebuild")
    assert rebuilt.returncode == 0 and "--rebuild, so every object's metadata is read" in rebuilt.stderr


def test_a_join_over_thousands_of_parts_is_recovered_at_restart_and_runs_when_its_last_part_comes(target, tmp_path):
    """Given a run that ended with a join over 2,001 parts (1,001 on SeaweedFS) waiting for the one part nobody produces, when that
    part is uploaded and `gclo run` starts again, then the journal brings back the join (declared as a range
    in its handler's output GCL), the 2,000 parts count as done, and the join alone runs."""
    store_args, event_args = target
    runs, parts = tmp_path / "runs.log", 1000 if store_args[0].startswith("s3://") else 2000
    numbers = tmp_path / "numbers.txt"
    numbers.write_text(" ".join(str(i) for i in range(1, parts + 1)))
    spec = gcl(computation="split", handler_type="split_range", inputs=["in/numbers.txt"], output="numbers.json",
               params={"runs": str(runs), "count": parts + 1})
    assert gclo("put", numbers, "in/numbers.txt", "--store", *store_args, "--gcl", spec).returncode == 0
    first = run_until_idle(store_args[0], *store_args[1:], *event_args, timeout=300)
    assert f"waiting  total: lacks parts/{parts:05d}.json" in first.stderr, first.stderr[-2000:]
    assert len(runs.read_text().split()) == parts + 1  # split and the parts; not the join

    last = tmp_path / "last.json"
    last.write_text("1")
    assert gclo("put", last, f"parts/{parts:05d}.json", "--store", *store_args).returncode == 0
    again = run_until_idle(store_args[0], *store_args[1:], *event_args, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    listed, known, one_by_one, _ = START_UP.search(again.stderr).groups()
    assert (int(listed), int(known), one_by_one) == (parts + 3, parts + 2, "1")  # only the uploaded part
    assert f"{parts + 1} computation(s) already done" in again.stderr
    assert runs.read_text().split()[parts + 1:] == ["total"]  # the join, once; nothing else again
    store = open_store(store_args[0] + (f"?endpoint_url={store_args[2]}" if len(store_args) > 1 else ""))
    assert json.loads(store.get("total.json").body) == {"sum": parts * (parts + 1) + 1, "parts": parts + 1}


def test_a_second_writer_of_the_journal_stops_the_orchestrator_with_exit_code_3(tmp_path):
    store_dir = tmp_path / "bucket"
    data = tmp_path / "data.txt"
    data.write_text("x")
    echo = gcl(computation="copy", handler_type="echo", inputs=["in/a.txt"], output="out/a.txt")
    assert gclo("put", data, "in/a.txt", "--store", store_dir, "--gcl", echo).returncode == 0
    proc = subprocess.Popen([*GCLO, "run", "--store", str(store_dir), "--handlers", TEST_HANDLERS, "--workers", "1"],
                            stderr=subprocess.PIPE, text=True)
    try:
        store = open_store(str(store_dir))
        wait_until(lambda: "out/a.txt" in load_journal(store).objects, 30)
        intruder = Journal(store, load_journal(store).next_seq)  # another orchestrator, one segment ahead
        intruder.seen("in/other.txt", "e", None, {})
        intruder.flush()
        echo_b = gcl(computation="copy-b", handler_type="echo", inputs=["in/b.txt"], output="out/b.txt")
        assert gclo("put", data, "in/b.txt", "--store", store_dir, "--gcl", echo_b).returncode == 0
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 3, err
    assert "was written by another orchestrator" in err and "only one orchestrator may run on a store" in err
    assert "Traceback" not in err
