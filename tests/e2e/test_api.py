"""The HTTP API of `gclo run --api`, as a client on another machine uses it: the token guards every request,
submissions answer 202 with each computation's state or 400 with every problem and nothing registered, the
event stream resumes after a dropped connection with nothing lost or repeated, a cancel stops a running
attempt, metrics parse, and `gclo submit` / `gclo cancel` say which way they went."""
from __future__ import annotations

import collections
import json
import re
import subprocess
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gcl_orchestrator.storage import LocalDirectoryStore

from ..conftest import wait_until
from .test_gclo_cli import GCLO, TEST_HANDLERS
from .test_service import Service

pytestmark = pytest.mark.e2e
TOKEN = "test-token-3b1f"


class ApiService(Service):
    """`gclo run --api 127.0.0.1:0` on a local directory; the address it printed."""

    def __init__(self, root, *extra: str, env_token: bool = True):
        import os
        self.root = root
        self._env = os.environ.copy()
        if env_token:
            self._env["GCLO_API_TOKEN"] = TOKEN
        else:
            self._env.pop("GCLO_API_TOKEN", None)
        self.proc = subprocess.Popen([*GCLO, "run", "--store", str(root), "--handlers", TEST_HANDLERS,
                                      "--workers", "2", "--api", "127.0.0.1:0", *extra],
                                     stderr=subprocess.PIPE, text=True, start_new_session=True, env=self._env)
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(lambda: "API at http://" in self.log and "start-up:" in self.log, 60, "the API to listen")
        self.url = re.search(r"API at (http://\S+?),", self.log).group(1)

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture
def service(tmp_path):
    root = tmp_path / "bucket"
    LocalDirectoryStore(root)
    svc = ApiService(root)
    yield svc
    code = svc.stop()
    assert code == 130, svc.log[-3000:]
    assert "Traceback" not in svc.log, svc.log[-3000:]


GOOD = """\
computation: copy
handler_type: echo
inputs: [in.txt]
output: copy.txt
---
computation: copy-again
handler_type: echo
inputs: [copy.txt]
output: copy2.txt
"""


def test_every_request_needs_the_token(service):
    for path in ("/v1/status", "/v1/computations", "/metrics", "/openapi.json", "/v1/events", "/"):
        assert service.client(None).get(path).status_code == 401, path
        refused = service.client("wrong").get(path)
        assert refused.status_code == 401 and "wrong token" in refused.json()["error"], path
    assert service.client().get("/v1/status").status_code == 200
    posted = service.client(None).post("/v1/specs", content=GOOD)
    assert posted.status_code == 401
    assert service.client().get("/v1/computations").json()["total"] == 0  # nothing registered by it


def test_a_submission_is_answered_with_each_state_and_kept_in_the_store(service):
    with service.client() as api:
        answer = api.post("/v1/specs", content=GOOD)
        assert answer.status_code == 202, answer.text
        doc = answer.json()
        assert doc["computations"] == [{"computation": "copy", "state": "waiting"},
                                       {"computation": "copy-again", "state": "waiting"}]
        assert doc["source"].startswith("submitted/") and (service.root / doc["source"]).exists()
        again = api.post("/v1/specs", content=GOOD)  # the same document again: the same answer, no new object
        assert again.status_code == 202 and again.json()["source"] == doc["source"]
        assert len(list((service.root / "submitted").iterdir())) == 1
        (service.root / "in.txt").write_text("hello")
        wait_until(lambda: api.get("/v1/computations/copy-again").json()["state"] == "done", 30, "the chain")
        detail = api.get("/v1/computations/copy").json()
        assert detail["spec"] == {"computation": "copy", "handler_type": "echo", "inputs": ["in.txt"],
                                  "output": "copy.txt"}
        assert detail["attempts"] == 1 and detail["times"]["finished"] >= detail["times"]["started"]
        assert any("in.txt" in line and "current" in line for line in detail["lineage"])
        by_key = api.get("/v1/computations/copy2.txt").json()  # a key names the computation producing it
        assert by_key["computation"] == "copy-again"
        page = api.get("/v1/computations", params={"state": "done", "limit": 1}).json()
        assert [c["computation"] for c in page["computations"]] == ["copy"] and page["next_cursor"] == 1
        rest = api.get("/v1/computations", params={"state": "done", "cursor": 1}).json()
        assert [c["computation"] for c in rest["computations"]] == ["copy-again"]


def test_a_broken_submission_is_refused_with_every_problem_and_nothing_registered(service):
    broken = "computation: a\nhandler_type: echo\ninputs: in.txt\noutputs: a.txt\n"
    with service.client() as api:
        answer = api.post("/v1/specs", content=broken)
        assert answer.status_code == 400
        problems = answer.json()["problems"]
        assert len(problems) == 3 and any("must be a list" in p for p in problems)
        assert any("outputs: unknown field" in p for p in problems)
        assert any("missing required field 'output'" in p for p in problems)
        # a conflict with the graph is refused as a whole, the valid part of the document included
        assert api.post("/v1/specs", content=GOOD).status_code == 202
        clash = GOOD.replace("copy2.txt", "other.txt") + "---\ncomputation: fresh\nhandler_type: echo\n" \
                                                        "inputs: [in.txt]\noutput: fresh.txt\n"
        refused = api.post("/v1/specs", content=clash)
        assert refused.status_code == 400, refused.text
        assert refused.json()["problems"] == [
            "copy-again: computation 'copy-again' is already declared differently (by "
            f"'{api.get('/v1/computations/copy').json()['source']}'); names must be unique"]
        assert api.get("/v1/computations/fresh").status_code == 404
        cycle = ("computation: ca\nhandler_type: echo\ninputs: [cb.txt]\noutput: ca.txt\n---\n"
                 "computation: cb\nhandler_type: echo\ninputs: [ca.txt]\noutput: cb.txt\n")
        refused = api.post("/v1/specs", content=cycle)
        assert refused.status_code == 400 and "cycle: ca -> cb -> ca" in refused.json()["problems"][0]
        assert api.get("/v1/computations/ca").status_code == 404
        too_big = api.post("/v1/specs", content=b"#" * (1 << 21))
        assert too_big.status_code == 413 and "limit" in too_big.json()["error"]
        assert len(list((service.root / "submitted").iterdir())) == 1  # only the accepted one was kept
    assert "Traceback" not in service.log


def _read_events(response, into, stop_after=None, others=None):
    """Collect (message id, change) of the changes in `states` messages from an open stream, until it is closed
    (or `stop_after` changes have come); messages of other kinds go to `others` as (kind, data)."""
    event_id, kind = None, None
    try:
        for line in response.iter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "states":
                into.extend((event_id, change) for change in json.loads(line[6:]))
                if stop_after is not None and len(into) >= stop_after:
                    return
            elif line.startswith("data: ") and others is not None:
                others.append((kind, line[6:]))
    except httpx.HTTPError:
        return  # the test closed the stream


def test_the_event_stream_resumed_after_a_dropped_connection_misses_and_repeats_nothing(service):
    # Given a client that follows the stream from the first event
    first: list = []
    second: list = []
    others: list = []
    fan = "computation: split\nhandler_type: split\ninputs: [numbers.txt]\noutput: numbers.json\n"
    with service.client() as api:
        start = api.get("/v1/status").json()["last_event_id"]
        with api.stream("GET", "/v1/events", headers={"Last-Event-ID": start}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            (service.root / "numbers.txt").write_text(" ".join(str(i) for i in range(1, 31)))
            assert api.post("/v1/specs", content=fan).status_code == 202
            # When its connection drops after ten events, while the fan-out goes on
            _read_events(response, first, stop_after=10, others=others)
        wait_until(lambda: (service.root / "total.json").exists(), 60, "the fan-out's join")
        # Then reconnecting with the last id it saw gives everything after it, once
        with api.stream("GET", "/v1/events", headers={"Last-Event-ID": first[-1][0]}) as response:
            reader = threading.Thread(target=_read_events, args=(response, second, None, others), daemon=True)
            reader.start()
            wait_until(lambda: any(d["computation"] == "total" and d["state"] == "done" for _, d in second), 30,
                       "the join's completion in the resumed stream")
    assert others == [], "a client that keeps up was told something else than state changes (a reload?)"
    # A message's id is its last change's; nothing leaves the graph here, so each message carries exactly the
    # changes since the one before it: a lost or repeated message (or change) breaks the chain
    carried = collections.Counter(int(i.rsplit(".", 1)[1]) for i, _ in first + second)
    previous = int(start.rsplit(".", 1)[1])
    for last in sorted(carried):
        assert last - previous == carried[last], f"message {last} carries {carried[last]} changes after {previous}"
        previous = last
    ids = [int(i.rsplit(".", 1)[1]) for i, _ in first + second]
    assert ids == sorted(ids), "messages out of order"
    seen = collections.Counter((d["computation"], d["state"]) for _, d in first + second)
    assert max(seen.values()) == 1, [pair for pair, n in seen.items() if n > 1]
    done = {d["computation"] for _, d in first + second if d["state"] == "done"}
    assert done == {"split", "total", *(f"double:{i}" for i in range(30))}
    # a client whose id is of another run is told to reload
    with service.client() as api, api.stream("GET", "/v1/events", headers={"Last-Event-ID": "0abc.5"}) as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                assert line == "event: reset"
                break


def test_a_cancel_stops_a_running_attempt_and_fails_its_dependents(service):
    spec = ("computation: long\nhandler_type: hang\ninputs: [in.txt]\noutput: long.txt\n---\n"
            "computation: after\nhandler_type: echo\ninputs: [long.txt]\noutput: after.txt\n")
    (service.root / "in.txt").write_text("x")
    with service.client() as api:
        assert api.post("/v1/specs", content=spec).status_code == 202
        wait_until(lambda: api.get("/v1/computations/long").json()["state"] == "running", 30, "the long run")
        started = time.monotonic()
        # the CLI finds the API from the environment and says which way it went
        cancel = subprocess.run([*GCLO, "cancel", "long", "--api", service.url], capture_output=True, text=True,
                                timeout=60, env={**service._env})
        assert cancel.returncode == 0, cancel.stderr
        assert "cancelled long (it was running) through the API" in cancel.stdout
        long = api.get("/v1/computations/long").json()
        assert long["state"] == "failed" and long["cancelled"] and long["last_error"].startswith("cancelled")
        assert api.get("/v1/computations/after").json()["state"] == "upstream-failed"
        assert time.monotonic() - started < 30
        again = api.post("/v1/computations/long/cancel")
        assert again.status_code == 409 and "nothing to cancel" in again.json()["error"]
        assert api.post("/v1/computations/nobody/cancel").status_code == 404
        # a rerun brings it back
        assert api.post("/v1/computations/long/rerun").status_code == 202
        wait_until(lambda: api.get("/v1/computations/long").json()["state"] == "running", 30, "the rerun")
        assert api.post("/v1/computations/long/cancel").status_code == 200
    assert "cancel  long #1: cancelled (" in service.log


def test_metrics_parse_and_count_what_ran(service):
    (service.root / "in.txt").write_text("x")
    with service.client() as api:
        assert api.post("/v1/specs", content=GOOD).status_code == 202
        wait_until(lambda: api.get("/v1/computations/copy-again").json()["state"] == "done", 30, "the chain")
        text = api.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    by_state = {s.labels["state"]: s.value for s in families["gclo_computations"].samples}
    assert by_state["done"] == 2 and by_state["failed"] == 0
    durations = [s for s in families["gclo_attempt_duration_seconds"].samples
                 if s.name.endswith("_count") and s.labels.get("outcome") == "done"]
    assert durations and durations[0].value == 2
    assert any(s.value > 0 for s in families["gclo_store_calls"].samples)
    assert "gclo_dispatch_latency_seconds" in families and "gclo_event_queue_depth" in families


def test_the_graph_comes_in_three_formats_with_the_filters_of_gclo_graph(service):
    (service.root / "in.txt").write_text("x")
    with service.client() as api:
        assert api.post("/v1/specs", content=GOOD).status_code == 202
        wait_until(lambda: api.get("/v1/computations/copy-again").json()["state"] == "done", 30, "the chain")
        doc = api.get("/v1/graph").json()
        assert {n["id"] for n in doc["nodes"] if n["type"] == "computation"} == {"copy", "copy-again"}
        assert "digraph" in api.get("/v1/graph", params={"format": "dot"}).text
        assert api.get("/v1/graph", params={"format": "mermaid"}).text.startswith("flowchart")
        one = api.get("/v1/graph", params={"limit": 1})
        assert one.headers["x-gclo-matched"] == "2" and one.headers["x-gclo-shown"] == "1"
        assert api.get("/v1/graph", params={"format": "svg"}).status_code == 400
        assert api.get("/v1/graph", params={"state": "nonsense"}).status_code == 400


def test_gclo_submit_goes_through_the_api_or_the_store_and_says_which(service, tmp_path):
    gcl = tmp_path / "step.yaml"
    gcl.write_text(GOOD)
    through_api = subprocess.run([*GCLO, "submit", str(gcl), "--api", service.url], capture_output=True,
                                 text=True, timeout=60, env={**service._env})
    assert through_api.returncode == 0, through_api.stderr
    assert "through the API" in through_api.stdout and "copy: waiting" in through_api.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("computation: x\n")
    refused = subprocess.run([*GCLO, "submit", str(bad), "--api", service.url], capture_output=True, text=True,
                             timeout=60, env={**service._env})
    assert refused.returncode == 1 and "missing required field" in refused.stdout
    other = tmp_path / "other.yaml"
    other.write_text(GOOD.replace("copy", "stored"))
    via_store = subprocess.run([*GCLO, "submit", str(other), "--store", str(service.root)], capture_output=True,
                               text=True, timeout=60)
    assert via_store.returncode == 0, via_store.stderr
    assert "into the store" in via_store.stdout
    with service.client() as api:
        wait_until(lambda: api.get("/v1/computations/stored").status_code == 200, 30, "the stored submission")


def test_gclo_cancel_through_the_store_names_a_key_and_the_orchestrator_takes_it_up(service):
    spec = "computation: slow\nhandler_type: hang\ninputs: [in.txt]\noutput: slow.txt\n"
    (service.root / "in.txt").write_text("x")
    with service.client() as api:
        assert api.post("/v1/specs", content=spec).status_code == 202
        wait_until(lambda: api.get("/v1/computations/slow").json()["state"] == "running", 30, "the slow run")
        asked = subprocess.run([*GCLO, "cancel", "slow.txt", "--store", str(service.root)], capture_output=True,
                               text=True, timeout=60)
        assert asked.returncode == 0, asked.stderr
        assert "asked the orchestrator" in asked.stdout and ".gclo/requests/" in asked.stdout
        wait_until(lambda: api.get("/v1/computations/slow").json()["state"] == "failed", 30, "the cancel")
        assert api.get("/v1/computations/slow").json()["cancelled"]
    assert "cancel  slow requested (gclo cancel on " in service.log


def test_a_join_over_many_parts_is_shown_with_its_first_inputs_and_their_count(service):
    join = ("computation: join\nhandler_type: echo\ninputs: [{pattern: 'parts/{i}.txt', count: 2000}]\n"
            "output: joined.txt\n")
    with service.client() as api:
        assert api.post("/v1/specs", content=join).status_code == 202
        detail = api.get("/v1/computations/join").json()
        assert detail["inputs_count"] == 2000 and len(detail["inputs"]) == 50
        assert detail["spec"]["inputs"] == detail["inputs"] and len(detail["missing"]) == 100
        listed = api.get("/v1/computations").json()["computations"][0]
        assert listed["inputs_count"] == 2000 and len(listed["inputs"]) == 50
