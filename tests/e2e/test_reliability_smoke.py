"""`make reliability` in its smoke profile: every fault scenario on the local store and on SeaweedFS, one small run
each; nothing lost, nothing duplicated, every scenario's own checks met."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_the_fault_suite_loses_and_duplicates_nothing(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "reliability" / "run.py"), "--profile", "smoke",
                           "--results", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (result,) = tmp_path.glob("smoke-*.json")
    rows = json.loads(result.read_text())["rows"]
    assert {(r["scenario"], r["store"]) for r in rows} == {
        (s, b) for s in ("orchestrator kill -9", "worker kill -9", "events chaos", "late writer", "changing inputs",
                         "dask: worker + orchestrator kill -9")
        for b in ("local", "seaweedfs")} | {("store outage", "seaweedfs")}
    for r in rows:
        assert (r["lost"], r["duplicated"], r["checks"]) == (0, 0, "ok"), r
        assert r["faults"] > 0 and r["computations"] > 0, r
