"""`make bench` as a smoke run: every benchmark completes and reports every figure. Nothing is timed here."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_every_benchmark_runs_and_reports_every_figure(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--results", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = tmp_path.glob("smoke-*.json")
    figures = [row["figure"] for row in json.loads(result.read_text())["rows"]]
    for expected in ("core chain @", "core dynamic growth", "local store: steady throughput",
                     "local store: write-to-dispatch p50", "Dask wall / our wall", "SeaweedFS: S3 requests per computation",
                     "with the API and a client following every event", "API event stream: a state change published"):
        assert any(f.startswith(expected) for f in figures), (expected, figures)


def test_the_scale_benchmark_runs_a_small_tree_and_its_restarts(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--sizes", "300,600", "--fan-in", "300",
                           "--seaweedfs", "300", "--results", str(tmp_path)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = tmp_path.glob("scale-*.json")
    report = json.loads(result.read_text())
    raw = report["raw"]
    fan_in = raw.pop("fan-in")
    seaweedfs = raw.pop("seaweedfs")  # the tree on a SeaweedFS of its own: its restart counts what it asked
    asked = seaweedfs["restart"]["journal"]["requests"]
    assert asked["ListObjectsV2"] >= 1 and "HeadObject" not in asked, asked  # a listing, no object read one by one
    assert any(row["figure"].startswith("SeaweedFS, ") and row["figure"].endswith("requests of that restart")
               for row in report["rows"])
    assert fan_in["parts"] == 300 and fan_in["restart"]["exit_code"] == 0 and fan_in["restart"]["reran"] == 0
    assert any(row["figure"].startswith("fan-in of 300 parts: wall") and row["target"] == "< 15 s"
               for row in report["rows"])
    for size in [*raw.values(), seaweedfs]:
        journal, rebuild = size["restart"]["journal"], size["restart"]["rebuild"]
        assert journal["exit_code"] == rebuild["exit_code"] == 0 and journal["reran"] == rebuild["reran"] == 0
        assert journal["from_journal"] == journal["listed"] and rebuild["from_journal"] == 0
