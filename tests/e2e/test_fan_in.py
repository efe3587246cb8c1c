"""A fan-in of a few thousand parts through `gclo run`, as a user runs it: one handler emits the parts and a join
over a range of their keys; the join runs once, after the last part, and its lineage and status stay small."""
from __future__ import annotations

import collections
import json

import pytest

from gcl_orchestrator.gcl.metadata import META_INPUTS_REF, metadata_size, read_lineage
from gcl_orchestrator.model import METADATA_LIMIT_BYTES
from gcl_orchestrator.storage import open_store

from .test_gclo_cli import gcl, gclo, run_until_idle

pytestmark = pytest.mark.e2e
PARTS = 3000


def test_a_join_over_thousands_of_parts_declared_by_one_handler_runs_once_after_the_last(tmp_path):
    store_dir, runs = tmp_path / "bucket", tmp_path / "runs.log"
    numbers = tmp_path / "numbers.txt"
    numbers.write_text(" ".join(str(i) for i in range(1, PARTS + 1)))
    spec = gcl(computation="split", handler_type="split_range", inputs=["in/numbers.txt"], output="numbers.json",
               params={"runs": str(runs)})
    assert gclo("put", numbers, "in/numbers.txt", "--store", store_dir, "--gcl", spec).returncode == 0

    proc = run_until_idle(store_dir, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"emitted {PARTS + 1}" in proc.stderr
    executed = collections.Counter(runs.read_text().split())
    assert len(executed) == PARTS + 2 and set(executed.values()) == {1}  # split, the parts, total: each once
    store = open_store(str(store_dir))
    assert json.loads(store.get("total.json").body) == {"sum": PARTS * (PARTS + 1), "parts": PARTS}

    # The join's output records its 3,000 inputs in a sidecar, its metadata stays within S3's 2 KB
    info = store.head("total.json")
    assert metadata_size(info.metadata) < METADATA_LIMIT_BYTES and META_INPUTS_REF in info.metadata
    _, inputs = read_lineage(info.metadata, lambda key: store.get(key).body)
    assert [k for k, _ in inputs] == [f"parts/{i:05d}.json" for i in range(PARTS)]

    status = gclo("status", "--store", store_dir)
    assert status.returncode == 0 and f"computations: {PARTS + 2}" in status.stdout
