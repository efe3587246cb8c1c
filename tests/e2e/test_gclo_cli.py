"""End to end through the `gclo` command, as a user runs it: subprocesses on a local directory store."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gcl_orchestrator.gcl import encode_gcl, spec_from_mapping
from gcl_orchestrator.storage import LocalDirectoryStore

from ..conftest import wait_until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
TEST_HANDLERS = str(ROOT / "tests" / "handlers" / "pipeline.py")
GCLO = [str(Path(sys.executable).with_name("gclo"))]
if not Path(GCLO[0]).exists():
    GCLO = [sys.executable, "-m", "gcl_orchestrator.cli"]


def gclo(*args, timeout=60, cwd=None):
    proc = subprocess.run([*GCLO, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def gcl(**fields):
    return json.dumps(fields)


def run_until_idle(store, *extra, workers=2, timeout=60):
    return gclo("run", "--store", store, "--handlers", TEST_HANDLERS, "--workers", workers, "--until-idle",
                "--quiet-period", "0.5", *extra, timeout=timeout)


def test_the_demo_pipeline_runs_on_real_data(tmp_path):
    store = tmp_path / "bucket"
    (store / "incoming").mkdir(parents=True)
    shutil.copy(ROOT / "handlers" / "data" / "seattle-weather.csv", store / "incoming")
    proc = gclo("run", "--store", store, "--handlers", ROOT / "handlers" / "analytics.py", "--rules",
                ROOT / "handlers" / "rules.yaml", "--until-idle", "--quiet-period", "0.5")
    assert proc.returncode == 0, proc.stderr
    report = (store / "reports" / "seattle-weather.md").read_text()
    assert "1,461 rows, 6 columns" in report and "sun 49%" in report and "outliers outside" in report
    status = json.loads(gclo("status", "--store", store, "--json").stdout)
    assert status["counts"]["done"] == len(status["computations"]) == 10
    assert "done    report:seattle-weather #1 -> reports/seattle-weather.md" in proc.stderr


def test_put_then_run_a_fan_out_that_joins_with_each_part_run_once(tmp_path):
    store, runs = tmp_path / "bucket", tmp_path / "runs.log"
    numbers = tmp_path / "numbers.txt"
    numbers.write_text(" ".join(str(i) for i in range(1, 37)))
    put = gclo("put", numbers, "in/numbers.txt", "--store", store, "--gcl",
               gcl(computation="split", handler_type="split", inputs=["in/numbers.txt"], output="numbers.json",
                   params={"runs": str(runs)}))
    assert put.returncode == 0 and "with 1 computation(s)" in put.stdout
    proc = run_until_idle(store)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((store / "total.json").read_text()) == {"sum": 36 * 37, "parts": 36}
    executed = runs.read_text().split()
    assert len(executed) == len(set(executed)) == 38


def test_bad_input_fails_only_where_it_is_and_everything_is_reported(tmp_path):
    store = tmp_path / "bucket"
    data = tmp_path / "data.txt"
    data.write_text("payload")
    steps = {
        "broken.txt": '{"computation": "c", "inputs": [1], "output": "o", "handler_type": "echo"}',
        "unknown.txt": gcl(computation="mystery", handler_type="nobody_registered_this", inputs=["unknown.txt"],
                           output="m.out"),
        "cycle.txt": json.dumps([{"computation": "ab", "handler_type": "echo", "inputs": ["a"], "output": "b"},
                                 {"computation": "ba", "handler_type": "echo", "inputs": ["b"], "output": "a"}]),
        "lonely.txt": gcl(computation="join", handler_type="echo", inputs=["lonely.txt", "never.txt"],
                          output="joined"),
        "crash.txt": gcl(computation="crasher", handler_type="crash", inputs=["crash.txt"], output="crashed"),
        "good.txt": gcl(computation="copy", handler_type="echo", inputs=["good.txt"], output="copy.txt"),
    }
    for key, text in steps.items():
        if key != "broken.txt":
            assert gclo("put", data, key, "--store", store, "--gcl", text).returncode == 0
    # `gclo put` validates GCL, so malformed GCL is written as a plain S3 client would
    LocalDirectoryStore(store).put("broken.txt", b"x", {"gcl": steps["broken.txt"]})

    proc = run_until_idle(store)
    assert proc.returncode == 1
    assert (store / "copy.txt").read_text() == "payload"
    err = proc.stderr
    assert "rejected GCL from broken.txt" in err
    assert "inputs[0]: must be a key or a range of keys ({pattern, count}), not an integer" in err
    assert "no handler registered for handler_type 'nobody_registered_this'" in err
    assert "would close a cycle: a -> [ab] -> b -> [ba] -> a" in err
    assert "waiting  join: lacks never.txt" in err
    assert "crasher" in err and "worker process died" in err
    status = gclo("status", "--store", store)
    assert status.returncode == 0
    for text in ("broken.txt", "mystery", "waiting for never.txt", "crasher", "cycle"):
        assert text in status.stdout


def test_a_live_run_picks_up_files_dropped_with_cp_and_stops_on_ctrl_c(tmp_path):
    store = tmp_path / "bucket"
    (store / "incoming").mkdir(parents=True)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: [{match: 'incoming/*.txt', gcl: {computation: 'copy:{stem}', handler_type: echo, "
                     "inputs: ['{key}'], output: 'copies/{name}'}}]\n")
    proc = subprocess.Popen([*GCLO, "run", "--store", str(store), "--handlers", TEST_HANDLERS, "--workers", "1",
                             "--rules", str(rules)], stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (store / ".gclo" / "state" / "status.json").exists(), 20, "the orchestrator to start")
        src = tmp_path / "hello.txt"
        src.write_text("dropped by cp")
        subprocess.run(["cp", str(src), str(store / "incoming" / "hello.txt")], check=True)
        wait_until(lambda: (store / "copies" / "hello.txt").exists(), 20, "the copy")
        assert (store / "copies" / "hello.txt").read_text() == "dropped by cp"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    status = json.loads(gclo("status", "--store", store, "--json").stdout)
    assert status["orchestrator"]["state"] == "interrupted"


@pytest.mark.parametrize("args, code, message", [
    (["run", "--store", "{tmp}/s", "--handlers", "{tmp}/missing.py"], 2, "handler file {tmp}/missing.py does not exist"),
    (["run", "--store", "{tmp}/s", "--handlers", "no_such_module_xyz"], 2, "cannot import handlers 'no_such_module_xyz'"),
    (["run", "--store", "gs://bucket", "--handlers", TEST_HANDLERS], 2, "scheme 'gs' is not available"),
    (["run", "--store", "s3://Bad_Bucket", "--handlers", TEST_HANDLERS], 2, "'Bad_Bucket' is not a valid bucket name"),
    (["run", "--store", "s3://bucket1?colour=red", "--handlers", TEST_HANDLERS], 2, "unknown option(s) colour"),
    (["run", "--store", "{tmp}/s", "--handlers", TEST_HANDLERS, "--events", "sqs"], 2, "needs an s3:// store"),
    (["setup-events", "--store", "{tmp}/s"], 2, "setup-events needs an s3:// store"),
    (["run", "--store", "{tmp}/s", "--handlers", TEST_HANDLERS, "--workers", "0"], 2, "--workers must be at least 1"),
    (["run", "--store", "{tmp}/s", "--handlers", TEST_HANDLERS, "--rules", "{tmp}/nope.yaml"], 2,
     "cannot read rules file"),
    (["status", "--store", "{tmp}/empty"], 1, "no orchestrator has run on this store"),
    (["put", "{tmp}/nothing.txt", "k", "--store", "{tmp}/s"], 2, "cannot read {tmp}/nothing.txt"),
    (["put", "{tmp}/f.txt", "../escape", "--store", "{tmp}/s"], 2, "invalid key '../escape'"),
    (["put", "{tmp}/f.txt", "k", "--store", "{tmp}/s", "--gcl", "{{\"computation\": 1}}"], 2, "invalid GCL in --gcl"),
    (["put", "{tmp}/f.txt", "k", "--store", "{tmp}/s", "--gcl", "notafile.yaml"], 2, "neither an existing file"),
])
def test_bad_arguments_get_one_clear_line_and_a_trustworthy_exit_code(tmp_path, args, code, message):
    (tmp_path / "f.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    proc = gclo(*[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == code, proc.stderr
    assert message.format(tmp=tmp_path) in proc.stderr


def test_validate_prints_every_problem_and_exits_by_the_result(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("computation: c\ninputs: [a]\noutput: b\nhandler_type: h\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("computation: c\ninputs: [a]\noutput: b\nhandler_type: h\ncolour: red\npriority: soon\n")
    ok = gclo("validate", good)
    assert ok.returncode == 0 and "ok (1 computation: c)" in ok.stdout
    fails = gclo("validate", good, bad)
    assert fails.returncode == 1
    assert f"{bad}: line 5: colour: unknown field" in fails.stdout
    assert f"{bad}: line 6: priority: 'soon' is not a priority" in fails.stdout


@pytest.mark.parametrize("command", [[], ["run"], ["put"], ["status"], ["logs"], ["validate"]])
def test_help_is_there_for_every_command(command):
    proc = gclo(*command, "--help")
    assert proc.returncode == 0 and "usage: gclo" in proc.stdout


def test_status_into_a_closed_pipe_ends_quietly_and_json_follows_the_state_filter(tmp_path):
    store = LocalDirectoryStore(tmp_path / "bucket")
    encoded = encode_gcl([spec_from_mapping(
        {"computation": f"c{i}", "handler_type": "fail" if i == 7 else "echo", "inputs": ["in.txt"],
         "output": f"out/{i}"}) for i in range(400)])
    encoded.write_sidecar(store)
    store.put("in.txt", b"x", encoded.metadata)
    gclo("run", "--store", str(store.root), "--handlers", TEST_HANDLERS, "--until-idle", "--quiet-period", "0.3")
    piped = subprocess.run(f"{' '.join(GCLO)} status --store {store.root} | head -2", shell=True,
                           capture_output=True, text=True, timeout=60)
    assert len(piped.stdout.splitlines()) == 2 and piped.stderr == ""
    failed = json.loads(gclo("status", "--store", str(store.root), "--json", "--state", "failed").stdout)
    assert [c["computation"] for c in failed["computations"]] == ["c7"] and failed["counts"]["done"] == 399
