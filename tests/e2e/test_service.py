"""The orchestrator as a long-running service, through `gclo run` as a user runs it: waiting for a late upload,
a large emission that survives kill -9, handler logs that name the attempt, submissions that answer, and bad
input that is reported against its key without holding anyone up."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import boto3
import pytest

from gcl_orchestrator.gcl import encode_gcl, spec_from_mapping
from gcl_orchestrator.storage import LocalDirectoryStore, open_store

from ..conftest import wait_until
from .test_gclo_cli import GCLO, TEST_HANDLERS

pytestmark = pytest.mark.e2e


def step(name, handler_type, inputs, output, **fields):
    return {"computation": name, "handler_type": handler_type, "inputs": inputs, "output": output, **fields}


def put(store, key, body, *steps):
    encoded = encode_gcl([spec_from_mapping(s) for s in steps])
    encoded.write_sidecar(store)
    store.put(key, body, encoded.metadata)


def status(store_args):
    proc = subprocess.run([*GCLO, "status", *store_args, "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    return doc, {c["computation"]: c for c in doc["computations"]}


class Service:
    """`gclo run` without --until-idle, its stderr collected line by line, stopped with SIGTERM."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([*GCLO, "run", *args], stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self._reader.join(10)
        return code


def test_a_service_runs_a_join_whose_input_arrives_after_the_grace_period(tmp_path):
    # Given a join that needs a file uploaded later, and a service (no --until-idle) with a short grace period
    store = LocalDirectoryStore(tmp_path / "bucket")
    put(store, "today.csv", b"today", step("join", "echo", ["today.csv", "tomorrow.csv"], "joined.txt"))
    service = Service("--store", str(store.root), "--handlers", TEST_HANDLERS, "--workers", "1",
                      "--deadlock-grace", "1")
    try:
        # When the grace period passes, the join is reported as stalled, not failed
        wait_until(lambda: "STALLED" in service.log, 30, "the stalled report")
        assert "'join' waits for 'tomorrow.csv'" in service.log and "FAILED" not in service.log
        time.sleep(1.5)  # well past the grace period once more: still waiting, reported once
        assert service.log.count("STALLED") == 1
        # When the file arrives, the join runs
        (store.root / "tomorrow.csv").write_text("tomorrow")
        wait_until(lambda: store.exists("joined.txt"), 30, "the join's output")
    finally:
        code = service.stop()
    assert code == 130 and "Traceback" not in service.log
    _, by_name = status(["--store", str(store.root)])
    assert by_name["join"]["state"] == "done"


def test_an_emission_of_ten_thousand_computations_survives_kill_9_and_a_restart(tmp_path):
    # Given a handler that emits 10,000 computations in one attempt (its GCL goes to a sidecar of over 1 MB)
    store = LocalDirectoryStore(tmp_path / "bucket")
    put(store, "seed.txt", b"x", step("wide", "fan_wide", ["seed.txt"], "wide.json",
                                      params={"n": 10_000, "gate": "gate.txt"}))
    service = Service("--store", str(store.root), "--handlers", TEST_HANDLERS, "--workers", "1")
    try:
        wait_until(lambda: store.exists("wide.json"), 60, "the emitting handler's output")
        sidecar = store.head("wide.json").metadata["gcl-ref"]
        assert store.head(sidecar).size > 1 << 20
        wait_until(lambda: "progress:" in service.log or "done    wide" in service.log, 30, "the emission")
    finally:
        # When the orchestrator is killed mid-way (before any of the 10,000 could run: they wait for a gate)
        os.killpg(service.proc.pid, signal.SIGKILL)
        service.proc.wait(30)
    # Then a restart knows every one of them, and runs them once the gate opens
    store.put("gate.txt", b"open")
    done = subprocess.run([*GCLO, "run", "--store", str(store.root), "--handlers", TEST_HANDLERS, "--workers", "2",
                           "--until-idle", "--quiet-period", "0.5"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "too large" not in done.stderr and "rejected" not in done.stderr
    doc, _ = status(["--store", str(store.root)])
    assert doc["counts"]["done"] == 10_001
    assert len(list(store.list("wide/"))) == 10_000


def test_handler_output_and_failed_attempts_reach_the_log_naming_the_computation_and_attempt(tmp_path):
    store = LocalDirectoryStore(tmp_path / "bucket")
    put(store, "in.txt", b"x", step("talk", "chatty", ["in.txt"], "talk.out",
                                    retry={"max_attempts": 2, "initial_delay_s": 0.2}))
    proc = subprocess.run([*GCLO, "run", "--store", str(store.root), "--handlers", TEST_HANDLERS, "--workers", "1",
                           "--until-idle", "--quiet-period", "0.5"], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    for line in ("[talk #1] stdout: printed by talk", "[talk #1] stderr: a warning on stderr",
                 "[talk #1] logged through ctx.log, attempt 1", "[talk #2] logged through ctx.log, attempt 2"):
        assert line in proc.stderr, proc.stderr
    # the failed attempt, with its error (pointing at the handler's own line) and the delay before the next
    assert "attempt talk #1 failed: ValueError: the first attempt always fails (at pipeline.py:" in proc.stderr
    assert "; attempt 2 in 0.2s" in proc.stderr
    _, by_name = status(["--store", str(store.root)])
    assert "last_error" not in by_name["talk"]  # it succeeded in the end: the old error is history


def test_a_parent_whose_submitted_child_fails_gets_that_failure_from_its_handle(tmp_path):
    store = LocalDirectoryStore(tmp_path / "bucket")
    put(store, "in.txt", b"x", step("parent", "submit_failing_child", ["in.txt"], "parent.json"),
        step("rejecter", "submit_rejected", ["in.txt"], "rejecter.json"))
    proc = subprocess.run([*GCLO, "run", "--store", str(store.root), "--handlers", TEST_HANDLERS, "--workers", "1",
                           "--until-idle", "--quiet-period", "0.5"], capture_output=True, text=True, timeout=90)
    assert "Traceback" not in proc.stderr
    parent = json.loads(store.get("parent.json").body)
    assert parent["raised"] == "WaitFailed"
    assert "computation 'failing-child-of-parent' failed" in parent["message"]
    assert "ValueError: bad value in in.txt" in parent["message"]
    rejecter = json.loads(store.get("rejecter.json").body)
    assert rejecter["taken"][0] == "rejected" and "already produced by computation" in rejecter["taken"][1][0]
    assert rejecter["invalid"][0] == "rejected" and "priority" in rejecter["invalid"][1][0]


def test_an_object_with_a_100_kb_gcl_header_is_reported_and_does_not_hold_up_a_pipeline_beside_it(seaweedfs):
    client = boto3.client("s3", endpoint_url=seaweedfs.endpoint)
    args = ["--endpoint-url", seaweedfs.endpoint, "--handlers", TEST_HANDLERS, "--workers", "2",
            "--filer", seaweedfs.filer, "--until-idle", "--quiet-period", "0.5"]

    def pipeline_seconds(bucket: str, with_bad_object: bool) -> tuple[float, subprocess.CompletedProcess]:
        client.create_bucket(Bucket=bucket)
        store = open_store(f"s3://{bucket}?endpoint_url={seaweedfs.endpoint}")
        put(store, "numbers.txt", b"1 2 3 4 5 6 7 8", step("split", "split", ["numbers.txt"], "numbers.json"))
        if with_bad_object:
            client.put_object(Bucket=bucket, Key="incoming/huge.csv", Body=b"a,b\n", Metadata={"gcl": "x" * 100_000})
        started = time.monotonic()
        proc = subprocess.run([*GCLO, "run", "--store", f"s3://{bucket}", *args], capture_output=True, text=True,
                              timeout=120)
        return time.monotonic() - started, proc

    usual, _ = pipeline_seconds("usual-pipeline", with_bad_object=False)
    beside, proc = pipeline_seconds("with-bad-neighbour", with_bad_object=True)
    assert proc.returncode == 1  # the bad object's GCL is rejected: reported, not hidden
    assert "Traceback" not in proc.stderr and "not answering" not in proc.stderr
    assert beside < usual + 1.0, (usual, beside)
    doc, by_name = status(["--store", "s3://with-bad-neighbour", "--endpoint-url", seaweedfs.endpoint])
    assert by_name["total"]["state"] == "done"
    (rejected,) = [r for r in doc["rejected"] if r["source"] == "incoming/huge.csv"]
    assert len(rejected["reason"]) < 400
    # At a restart the object's headers are too large to read at all: the same object, reported the same way,
    # at once (no minute of retries), and nothing that was done is lost
    started = time.monotonic()
    again = subprocess.run([*GCLO, "run", "--store", "s3://with-bad-neighbour", *args], capture_output=True,
                           text=True, timeout=120)
    assert time.monotonic() - started < usual + 5.0
    assert "Traceback" not in again.stderr and "not answering" not in again.stderr
    doc, by_name = status(["--store", "s3://with-bad-neighbour", "--endpoint-url", seaweedfs.endpoint])
    assert by_name["total"]["state"] == "done"
    assert any(r["source"] == "incoming/huge.csv" and "cannot be read" in r["reason"] for r in doc["rejected"])


def test_a_key_gcl_refuses_is_acknowledged_and_reported_once_over_sqs(moto):
    from gcl_orchestrator.sources.s3_notifications import ensure_notifications

    s3 = boto3.client("s3", endpoint_url=moto.endpoint)
    sqs = boto3.client("sqs", endpoint_url=moto.endpoint)
    s3.create_bucket(Bucket="folders")
    setup = ensure_notifications(s3, sqs, "folders", "folders-events")
    redrive = sqs.get_queue_attributes(QueueUrl=setup["queue_url"], AttributeNames=["RedrivePolicy"])
    assert "deadLetterTargetArn" in redrive["Attributes"]["RedrivePolicy"]  # what keeps failing goes aside
    s3.put_object(Bucket="folders", Key="reports/", Body=b"")  # what the console makes for a "folder"
    s3.put_object(Bucket="folders", Key="a//b.csv", Body=b"x")
    store = open_store(f"s3://folders?endpoint_url={moto.endpoint}")
    put(store, "ok.txt", b"fine", step("copy", "echo", ["ok.txt"], "copy.txt"))
    args = ["--store", "s3://folders", "--endpoint-url", moto.endpoint, "--sqs-queue", "folders-events",
            "--handlers", TEST_HANDLERS, "--workers", "1", "--until-idle", "--quiet-period", "1"]
    proc = subprocess.run([*GCLO, "run", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("reports/: ignored:") == 1 and proc.stderr.count("a//b.csv: ignored:") == 1
    # every message about the objects was deleted; what is left is the final status write, made after the run
    # stopped listening (the next run deletes it)
    hidden = sqs.get_queue_attributes(QueueUrl=setup["queue_url"], AttributeNames=[
        "ApproximateNumberOfMessagesNotVisible"])["Attributes"]["ApproximateNumberOfMessagesNotVisible"]
    assert hidden == "0"  # nothing received and left undeleted, to come back later
    left = sqs.receive_message(QueueUrl=setup["queue_url"], MaxNumberOfMessages=10).get("Messages", [])
    keys = [r["s3"]["object"]["key"] for m in left for r in json.loads(m["Body"]).get("Records", [])]
    assert all(k.startswith(".gclo%2F") for k in keys), keys
