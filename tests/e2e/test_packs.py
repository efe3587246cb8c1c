"""The use-case packs end to end, on the local store and on SeaweedFS, with their results checked: the tuned
model beats the default one on held-out data, the simulation's error is under its tolerance against the exact
solution, the tree classifies held-out records clearly better than the majority class."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

pytestmark = pytest.mark.e2e
DEMO = Path(__file__).resolve().parents[2] / "handlers" / "packs" / "demo.py"


def figures(output: str) -> dict:
    return json.loads(re.findall(r"<!-- (\{.*\}) -->", output)[-1])


def run_pack(pack: str, *store_args: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([sys.executable, str(DEMO), pack, *store_args], capture_output=True, text=True,
                          timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc, figures(proc.stdout)


def check(pack: str, result: dict, stderr: str) -> None:
    if pack == "ml":
        assert result["tuned"] > result["baseline"] + 0.02  # a clear margin, not noise
        assert "rung 0 (3 epochs): kept" in stderr
    elif pack == "sim":
        assert result["worst_error"] <= result["bound"] and result["implicit"] > 0
        assert "the explicit solver diverged" in stderr and "alternative 'sim:seg:" in stderr
        assert result["segments"] > 10  # it refined itself somewhere
    else:
        assert result["accuracy"] >= result["majority"] + 0.1 and result["generation"] == 4
        assert "tree summary: tree:g1:evaluate: done" in stderr


@pytest.mark.parametrize("pack", ["ml", "sim", "tree"])
def test_each_pack_gives_the_right_result_on_the_local_store(pack, tmp_path):
    proc, result = run_pack(pack, "--store", str(tmp_path / "store"))
    check(pack, result, proc.stderr)


@pytest.mark.parametrize("pack", ["ml", "sim", "tree"])
def test_each_pack_gives_the_right_result_on_seaweedfs(pack, seaweedfs):
    bucket = f"pack-{pack}-{uuid.uuid4().hex[:6]}"
    boto3.client("s3", endpoint_url=seaweedfs.endpoint).create_bucket(Bucket=bucket)
    proc, result = run_pack(pack, "--store", f"s3://{bucket}", "--endpoint-url", seaweedfs.endpoint,
                            "--filer", seaweedfs.filer)
    check(pack, result, proc.stderr)
