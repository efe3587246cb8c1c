"""A bucket that keeps changing, through `gclo run` as a service, with plain tools: `cp` on a local directory, and
a plain S3 client (what `aws s3 cp` sends) on SeaweedFS. The demo pipeline profiles and reports a CSV; an edited
CSV uploaded over it re-runs exactly what read it; the same file again runs nothing; a fixed GCL uploaded over a
rejected one on the same bytes runs at once; `gclo lineage` names every input version the report came from."""
from __future__ import annotations

import collections
import csv
import io
import json
import re
import subprocess
import time
import uuid
from pathlib import Path

import boto3
import pytest

from gcl_orchestrator.storage import LocalDirectoryStore

from ..conftest import wait_until
from .test_gclo_cli import GCLO, ROOT
from .test_service import Service

pytestmark = pytest.mark.e2e
HANDLERS = str(ROOT / "handlers" / "analytics.py")
RULES = str(ROOT / "handlers" / "rules.yaml")
DATA = (ROOT / "handlers" / "data" / "seattle-weather.csv").read_bytes()
REPORT = "reports/seattle-weather.md"
FIXED = json.dumps({"computation": "copy:fixed", "handler_type": "csv_profile", "inputs": ["extra/fixed.csv"],
                    "output": "profiles/fixed.json"}, separators=(",", ":"))
BROKEN = '{"computation":"copy:fixed","handler_type":"csv_profile","inputs":"extra/fixed.csv"}'


def edited(data: bytes) -> bytes:
    rows = list(csv.reader(io.StringIO(data.decode())))
    rows[10][1] = "123.4"  # one precipitation value
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def starts(log: str) -> collections.Counter:
    return collections.Counter(re.findall(r"start   (\S+) #\d+", log))


class LocalDrop:
    def __init__(self, tmp_path: Path):
        self.root = tmp_path / "bucket"
        (self.root / "incoming").mkdir(parents=True)
        self.args = ["--store", str(self.root)]

    def put(self, key: str, body: bytes, gcl: str | None = None) -> None:
        if gcl is None:  # what a user does: cp
            path = self.root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(body)
            tmp.rename(path)
        else:  # metadata on a directory goes through the store (gclo put would refuse the broken GCL)
            LocalDirectoryStore(self.root).put(key, body, {"gcl": gcl})

    def read(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.exists() else None


class S3Drop:
    def __init__(self, server):
        self.bucket = f"living-{uuid.uuid4().hex[:8]}"
        self.client = boto3.client("s3", endpoint_url=server.endpoint)
        self.client.create_bucket(Bucket=self.bucket)
        self.args = ["--store", f"s3://{self.bucket}", "--endpoint-url", server.endpoint]
        self.run_args = self.args + ["--filer", server.filer]

    def put(self, key: str, body: bytes, gcl: str | None = None) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata={"gcl": gcl} if gcl else {})

    def read(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None


def scenario(drop, run_args):
    service = Service(*run_args, "--handlers", HANDLERS, "--rules", RULES, "--workers", "2")
    try:
        # Given the demo's CSV, profiled and reported
        drop.put("incoming/seattle-weather.csv", DATA)
        wait_until(lambda: drop.read(REPORT) is not None, 60, "the first report")
        wait_until(lambda: "progress: 10/10 done" in service.log or "done    report:" in service.log, 30, "done")
        time.sleep(1.0)
        first = starts(service.log)
        assert first["profile:seattle-weather"] == 1 and first["report:seattle-weather"] == 1
        old_report = drop.read(REPORT)
        # When an edited CSV is uploaded to the same key
        drop.put("incoming/seattle-weather.csv", edited(DATA))
        wait_until(lambda: drop.read(REPORT) != old_report, 60, "the report to change")
        time.sleep(1.5)
        second = starts(service.log) - first
        # Then exactly what read the changed data ran again, each once, and the report has the new value
        assert second["profile:seattle-weather"] == 1 and second["report:seattle-weather"] == 1, second
        assert max(second.values()) == 1, second
        assert "123.4" in drop.read(REPORT).decode()
        # When the same file is uploaded again, nothing runs
        drop.put("incoming/seattle-weather.csv", edited(DATA))
        time.sleep(3.0)
        assert starts(service.log) - first == second
        # When a GCL is rejected, then fixed and uploaded again on the same bytes, it runs at once
        drop.put("extra/fixed.csv", b"a,b\n1,2\n", BROKEN)
        wait_until(lambda: "rejected GCL from extra/fixed.csv" in service.log, 30, "the rejection")
        drop.put("extra/fixed.csv", b"a,b\n1,2\n", FIXED)
        wait_until(lambda: drop.read("profiles/fixed.json") is not None, 30, "the fixed GCL to run")
    finally:
        code = service.stop()
    assert code == 130 and "Traceback" not in service.log, service.log[-3000:]
    # And the lineage of the report names every input version it came from, all current
    lineage = subprocess.run([*GCLO, "lineage", REPORT, *drop.args], capture_output=True, text=True, timeout=60)
    assert lineage.returncode == 0, lineage.stdout + lineage.stderr
    assert "incoming/seattle-weather.csv @ " in lineage.stdout and "CHANGED" not in lineage.stdout
    assert lineage.stdout.count("(run 2)") >= 2  # the report and what it read were computed again


def test_a_changing_csv_on_the_local_store(tmp_path):
    drop = LocalDrop(tmp_path)
    scenario(drop, drop.args)


def test_a_changing_csv_on_seaweedfs_with_a_plain_s3_client(seaweedfs):
    drop = S3Drop(seaweedfs)
    scenario(drop, drop.run_args)


def test_gclo_rerun_from_another_process_runs_a_computation_and_what_follows_again(tmp_path):
    from gcl_orchestrator.gcl import encode_gcl, spec_from_mapping

    store = LocalDirectoryStore(tmp_path / "bucket")
    steps = [{"computation": "first", "handler_type": "echo", "inputs": ["in.txt"], "output": "first.txt"},
             {"computation": "second", "handler_type": "echo", "inputs": ["first.txt"], "output": "second.txt"}]
    store.put("in.txt", b"x", encode_gcl([spec_from_mapping(s) for s in steps]).metadata)
    service = Service("--store", str(store.root), "--handlers", str(ROOT / "tests" / "handlers" / "pipeline.py"),
                      "--workers", "1")
    try:
        wait_until(lambda: "done    second #1" in service.log, 30, "the first run")
        asked = subprocess.run([*GCLO, "rerun", "first", "--downstream", "--store", str(store.root)],
                               capture_output=True, text=True, timeout=60)
        assert asked.returncode == 0 and "picks it up within seconds" in asked.stdout, asked.stdout + asked.stderr
        wait_until(lambda: "done    second #2" in service.log, 30, "the rerun, downstream included")
    finally:
        service.stop()
    assert "rerun   first and downstream requested (gclo rerun on" in service.log
