"""Per-attempt logs through `gclo run` and `gclo logs`, as a user runs them: worker processes on a local
directory store."""
from __future__ import annotations

import json

import pytest

from gcl_orchestrator.gcl import encode_gcl, spec_from_mapping
from gcl_orchestrator.storage import LocalDirectoryStore

from .test_gclo_cli import gclo, run_until_idle

pytestmark = pytest.mark.e2e


def test_a_failed_attempt_leaves_its_output_and_traceback_for_gclo_logs(tmp_path):
    # Given a computation whose handler prints, logs and fails on its first attempt, and a silent one beside it
    store = LocalDirectoryStore(tmp_path / "bucket")
    specs = [{"computation": "talk", "handler_type": "chatty", "inputs": ["in.txt"], "output": "talk.out",
              "retry": {"max_attempts": 2, "initial_delay_s": 0.2}},
             {"computation": "copy", "handler_type": "echo", "inputs": ["in.txt"], "output": "copy.out"}]
    encoded = encode_gcl([spec_from_mapping(s) for s in specs])
    encoded.write_sidecar(store)
    store.put("in.txt", b"x", encoded.metadata)

    # When it runs in worker processes until idle
    proc = run_until_idle(store.root, workers=1, timeout=90)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(gclo("status", "--store", store.root, "--json").stdout)
    assert status["counts"]["done"] == 2

    # Then the first attempt's log holds what it printed, logged, and the traceback it failed with
    first = gclo("logs", "talk", "--attempt", "1", "--store", store.root)
    assert first.returncode == 0, first.stderr
    header, _, text = first.stdout.partition("\n")
    assert header == "# log of computation 'talk', attempt 1 (.gclo/logs/talk/1.log)"
    assert "printed by talk\n" in text and "a warning on stderr\n" in text
    assert " INFO    logged through ctx.log, attempt 1\n" in text
    assert "the attempt failed: ValueError: the first attempt always fails (at pipeline.py:" in text
    assert "Traceback (most recent call last):" in text and "pipeline.py\", line" in text
    assert text.rstrip().endswith("ValueError: the first attempt always fails")

    # and by default gclo logs shows the latest attempt, which succeeded
    latest = gclo("logs", "talk", "--store", store.root)
    assert latest.returncode == 0 and "attempt 2 (.gclo/logs/talk/2.log; attempts with a log: 1, 2)" in latest.stdout
    assert "logged through ctx.log, attempt 2" in latest.stdout and "Traceback" not in latest.stdout

    # and the silent handler left no log at all
    silent = gclo("logs", "copy", "--store", store.root)
    assert silent.returncode == 1 and silent.stdout == ""
    assert "no log for computation 'copy' in" in silent.stderr
    assert [i.key for i in store.list(".gclo/logs/")] == [".gclo/logs/talk/1.log", ".gclo/logs/talk/2.log"]
