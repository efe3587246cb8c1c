"""End to end on real S3 servers: SeaweedFS (filer metadata stream) and moto (S3 -> SQS), driven through the
`gclo` command with files dropped by a plain S3 client, as a user would."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import boto3
import botocore.exceptions
import pytest

from gcl_orchestrator.gcl import load_gcl

from ..conftest import wait_until
from ..servers import start_seaweedfs, stop_seaweedfs
from .test_gclo_cli import GCLO, ROOT, TEST_HANDLERS, gclo

pytestmark = pytest.mark.e2e


def new_bucket(client) -> str:
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    return name


def exists(client, bucket, key) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except botocore.exceptions.ClientError:
        return False
    except botocore.exceptions.BotoCoreError:
        return False  # the server is down for a moment


def read(client, bucket, key) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def drop(client, bucket, key, body: bytes, **gcl):
    """What any S3 client does: an object with GCL (compact JSON) in its `gcl` user metadata."""
    client.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"gcl": json.dumps(gcl, separators=(",", ":"))})


class LiveRun:
    def __init__(self, *args):
        self.proc = subprocess.Popen([*GCLO, "run", "--handlers", TEST_HANDLERS, "--workers", "2", *map(str, args)],
                                     stderr=subprocess.PIPE, text=True)

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err


def test_dynamic_pipelines_on_seaweedfs_from_files_dropped_by_a_plain_client(seaweedfs, tmp_path):
    client = seaweedfs.client()
    bucket = new_bucket(client)
    run = LiveRun("--store", f"s3://{bucket}", "--endpoint-url", seaweedfs.endpoint, "--filer", seaweedfs.filer)
    try:
        wait_until(lambda: exists(client, bucket, ".gclo/state/status.json"), 30, "the orchestrator to start")
        # a result picks the branch
        drop(client, bucket, "n.txt", b"7", computation="classify", handler_type="classify", inputs=["n.txt"],
             output="class.json")
        # a fan-out of dozens joins in one aggregate, each part once
        runs = tmp_path / "runs.log"
        drop(client, bucket, "numbers.txt", " ".join(str(i) for i in range(1, 31)).encode(), computation="split",
             handler_type="split", inputs=["numbers.txt"], output="numbers.json", params={"runs": str(runs)})
        wait_until(lambda: exists(client, bucket, "odd.txt") and exists(client, bucket, "total.json"), 60,
                   "both pipelines")
    finally:
        code, err = run.stop()
    assert code == 130 and "Traceback" not in err, err
    assert "listening with seaweedfs, poll" in err
    assert read(client, bucket, "odd.txt") == b"took the odd branch"
    assert not exists(client, bucket, "even.txt")
    assert json.loads(read(client, bucket, "total.json")) == {"sum": 30 * 31, "parts": 30}
    executed = runs.read_text().split()
    assert len(executed) == len(set(executed)) == 32
    # each output carries the GCL its handler emitted
    meta = client.head_object(Bucket=bucket, Key="class.json")["Metadata"]
    assert [s.computation for s in load_gcl(meta["gcl"])] == ["odd-branch"]


def test_the_sqs_path_on_moto_set_up_by_gclo_setup_events(moto, tmp_path):
    client = boto3.client("s3", endpoint_url=moto.endpoint)
    bucket = new_bucket(client)
    setup = gclo("setup-events", "--store", f"s3://{bucket}", "--endpoint-url", moto.endpoint, "--queue",
                 f"q-{bucket}")
    assert setup.returncode == 0, setup.stderr
    assert "now sends object-created events" in setup.stdout
    run = LiveRun("--store", f"s3://{bucket}", "--endpoint-url", moto.endpoint, "--sqs-queue", f"q-{bucket}")
    try:
        wait_until(lambda: exists(client, bucket, ".gclo/state/status.json"), 30, "the orchestrator to start")
        drop(client, bucket, "in/n.txt", b"10", computation="classify", handler_type="classify",
             inputs=["in/n.txt"], output="class.json")
        wait_until(lambda: exists(client, bucket, "even.txt"), 30, "the even branch")
        # every notification (the drop, and each output's) is handled, then deleted from the queue
        sqs = boto3.client("sqs", endpoint_url=moto.endpoint)
        url = sqs.get_queue_url(QueueName=f"q-{bucket}")["QueueUrl"]

        def drained():
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            return attrs["ApproximateNumberOfMessages"] == attrs["ApproximateNumberOfMessagesNotVisible"] == "0"

        wait_until(drained, 30, "the queue to drain")
    finally:
        code, err = run.stop()
    assert code == 130 and "Traceback" not in err, err
    assert "listening with sqs, poll" in err


def test_gclo_dev_runs_the_demo_through_a_local_s3_server():
    proc = subprocess.run([*GCLO, "dev", "--handlers", ROOT / "handlers" / "analytics.py", "--rules",
                           ROOT / "handlers" / "rules.yaml", "--put", ROOT / "handlers" / "data" / "seattle-weather.csv",
                           "incoming/seattle-weather.csv", "--until-idle", "--quiet-period", "0.5", "--show",
                           "reports/seattle-weather.md"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "aws s3 cp data.csv s3://gclo/incoming/data.csv" in proc.stdout
    assert "1,461 rows, 6 columns" in proc.stdout and "10 done" in proc.stdout
    pid = int(proc.stdout.split("(pid ", 1)[1].split(")", 1)[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the server it started is gone


def test_a_missing_bucket_is_one_clear_line_and_exit_code_3(seaweedfs):
    proc = gclo("run", "--store", "s3://no-such-bucket-e2e", "--endpoint-url", seaweedfs.endpoint, "--handlers",
                TEST_HANDLERS, "--until-idle")
    assert proc.returncode == 3
    assert f"bucket 'no-such-bucket-e2e' at {seaweedfs.endpoint} does not exist" in proc.stderr


def test_stopping_the_s3_server_mid_run_costs_a_delay_not_a_crash(tmp_path):
    # Given an S3 server of this test's own and a fan-out whose parts take a while
    server = start_seaweedfs(tmp_path / "seaweedfs")
    try:
        client = server.client()
        bucket = new_bucket(client)
        runs = tmp_path / "runs.log"
        drop(client, bucket, "numbers.txt", " ".join(str(i) for i in range(1, 25)).encode(), computation="split",
             handler_type="split", inputs=["numbers.txt"], output="numbers.json",
             params={"runs": str(runs), "sleep": 0.3})
        run = LiveRun("--store", f"s3://{bucket}", "--endpoint-url", server.endpoint, "--filer", server.filer)
        try:
            wait_until(lambda: runs.exists() and len(runs.read_text().split()) >= 5, 60, "the run to get going")
            # When the server goes away for a few seconds, and comes back on the same ports and data
            stop_seaweedfs(server)
            time.sleep(3)  # the outage itself, not synchronisation
            server.start()
            # Then the run finishes with the right aggregate, each part once
            wait_until(lambda: exists(client, bucket, "total.json"), 120, "the aggregate after the outage")
        finally:
            code, err = run.stop()
        assert run.proc.returncode == 130 and "Traceback" not in err, err
        assert "not answering" in err  # it said it was waiting for the store
        assert json.loads(read(client, bucket, "total.json")) == {"sum": 24 * 25, "parts": 24}
        executed = runs.read_text().split()
        assert sorted(set(executed)) == sorted(["split", "total", *(f"double:{i}" for i in range(24))])
    finally:
        stop_seaweedfs(server)
