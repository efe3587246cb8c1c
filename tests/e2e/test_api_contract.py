"""The HTTP API against its own OpenAPI document, with schemathesis: generated requests to every operation
(valid and invalid parameters and bodies) get answers that the document describes, never a server error.
Bounded in time: a few examples per operation and a time budget for the whole run."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gcl_orchestrator.storage import LocalDirectoryStore

from .test_api import TOKEN, ApiService

pytestmark = pytest.mark.e2e
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


def test_every_operation_answers_as_its_document_says(tmp_path):
    root = tmp_path / "bucket"
    LocalDirectoryStore(root)
    (root / "in.txt").write_text("x")
    service = ApiService(root)
    try:
        with service.client() as api:  # something to read, cancel and rerun
            assert api.post("/v1/specs", content="computation: copy\nhandler_type: echo\ninputs: [in.txt]\n"
                                                 "output: copy.txt\n").status_code == 202
        run = subprocess.run(
            [SCHEMATHESIS, "run", f"{service.url}/openapi.json", "--header", f"Authorization: Bearer {TOKEN}",
             "--exclude-path", "/v1/events",  # an endless stream: tested on its own (test_api.py)
             "--max-examples", "10", "--max-time", "45", "--request-timeout", "30",
             "--phases", "examples,coverage,fuzzing", "--generation-deterministic",
             "--suppress-health-check", "all", "--no-color",
             # GCL is checked beyond what a JSON schema can say (key syntax, ranges, cycles): a body that fits
             # the document's schema may still be refused with 400 and its problems, as it should be
             "--exclude-checks", "positive_data_acceptance"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    finally:
        code = service.stop()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Traceback" not in service.log, service.log[-3000:]
    assert code == 130
