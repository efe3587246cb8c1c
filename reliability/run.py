"""gcl-orchestrator fault suite. `make reliability` (every scenario on the local store and on SeaweedFS, a few runs
each), `make soak` (more runs, several crashes per run at random points, a longer outage), `--smoke` (one run of
each, smaller: what the test suite runs). Prints a table and writes JSON to reliability/results/; exits 1 when any
row lost or duplicated anything or failed a check.

Scenarios (the workload is a 60-part fan-out grown from a result, joined by a total; or files a user drops):
  orchestrator kill -9   the orchestrator and its workers killed together at a random point, then restarted
  worker kill -9         worker processes killed mid-computation while the run goes on
  events chaos           store notifications dropped, duplicated and reordered on their way to the orchestrator
  late writer            stale attempts replay committed computations (a worker thought dead writes late)
  store outage           the S3 server stopped mid-run, started again later (SeaweedFS only)
  changing inputs        a user replaces the input again and again while the orchestrator and its workers are
                         killed and restarted
  dask: worker + orchestrator kill -9
                         with --executor dask://: Dask workers killed mid-computation (and replaced), then the
                         orchestrator killed and restarted against the same scheduler

Columns, counted from the audit trail every process appends to ($GCLO_AUDIT_LOG) and from the store at the end:
  faults         faults injected (kills, outages, notifications dropped + duplicated + reordered, late writes)
  computations   computations the workload declares (per run, summed over runs)
  lost           declared outputs missing or wrong at the end
  duplicated     runs that committed more than once (a key written twice by the same run: its inputs' same
                 versions); a key may be written once per run when its inputs change
  re-executions  handler executions beyond the first, per computation
  checks         scenario-specific promises: only in-flight work re-runs after a crash, a killed attempt is
                 retried and counted, the orchestrator said it was waiting for the store, every output is current
                 (its recorded run is of the last versions of its inputs)
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gcl_orchestrator.config import RunSettings, build_orchestrator  # noqa: E402
from gcl_orchestrator.devservers import SeaweedFS  # noqa: E402
from gcl_orchestrator.devservers.dask import DaskCluster  # noqa: E402
from gcl_orchestrator.errors import ObjectNotFound  # noqa: E402
from gcl_orchestrator.interfaces import EventSource, Task  # noqa: E402
from gcl_orchestrator.model import ObjectCreated  # noqa: E402
from gcl_orchestrator.runtime import HandlerRegistry, audit  # noqa: E402
from gcl_orchestrator.runtime.worker import run_task  # noqa: E402
from gcl_orchestrator.sources import PollingSource  # noqa: E402
from gcl_orchestrator.gcl import encode_gcl, load_gcl, read_gcl_fields, spec_from_mapping  # noqa: E402
from gcl_orchestrator.storage import open_store  # noqa: E402
from gcl_orchestrator.views import lineage_lines  # noqa: E402

HANDLERS = str(HERE / "handlers.py")
RESULTS = HERE / "results"
GCLO = [str(Path(sys.executable).with_name("gclo"))]
if not Path(GCLO[0]).exists():
    GCLO = [sys.executable, "-m", "gcl_orchestrator.cli"]
WORKERS = 2


@dataclass
class Profile:
    runs: int
    parts: int  # fan-out width: computations = parts + 2
    sleep_s: float  # per part: the window faults land in
    drops: int  # files dropped by the "user" in the events scenario
    crashes: tuple[int, int]  # orchestrator crashes per run (min, max)
    worker_kills: tuple[int, int]
    late_writes: int
    outage_s: float


PROFILES = {
    "smoke": Profile(runs=1, parts=30, sleep_s=0.03, drops=20, crashes=(1, 1), worker_kills=(2, 2), late_writes=8,
                     outage_s=5.0),
    "quick": Profile(runs=3, parts=60, sleep_s=0.05, drops=40, crashes=(1, 1), worker_kills=(3, 3),
                     late_writes=15, outage_s=12.0),
    "soak": Profile(runs=10, parts=60, sleep_s=0.05, drops=60, crashes=(1, 3), worker_kills=(2, 8),
                    late_writes=40, outage_s=30.0),
}


def record_pid(pid: int | None, forget: bool = False) -> None:
    """So that .ci/run can stop, by PID, whatever a crash of this suite leaves behind."""
    directory = os.environ.get("GCLO_TEST_PIDDIR")
    if directory and pid:
        path = Path(directory, str(pid))
        path.unlink(missing_ok=True) if forget else path.write_text("")


# --- where a run's data lives ------------------------------------------------------------------------------------


@dataclass
class Target:
    """One run's store, with the audit trail and logs beside it."""

    backend: "Backend"
    uri: str
    args: list[str]  # how `gclo run` finds the store
    settings: dict[str, Any]  # the same for RunSettings
    work: Path

    @property
    def trail(self) -> Path:
        return self.work / "audit.jsonl"

    def store(self):
        return open_store(self.uri)

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.backend.env(), audit.ENV: str(self.trail)}


class Backend:
    name = ""

    def target(self, work: Path, n: int) -> Target:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        pass


class LocalBackend(Backend):
    name = "local"

    def target(self, work: Path, n: int) -> Target:
        root = work / "store"
        root.mkdir(parents=True)
        return Target(self, str(root), ["--store", str(root)], {"store": str(root)}, work)


class SeaweedBackend(Backend):
    """One SeaweedFS for the whole suite, a bucket per run; the outage scenario stops and starts it."""

    name = "seaweedfs"

    def __init__(self, data_dir: Path):
        self.server = SeaweedFS.prepare(data_dir)
        self.start()

    def start(self) -> None:
        self.server.start()
        record_pid(self.server.pid)

    def stop(self) -> None:
        pid = self.server.pid
        self.server.stop()
        record_pid(pid, forget=True)

    def env(self) -> dict[str, str]:
        return self.server.credentials_env()

    def target(self, work: Path, n: int) -> Target:
        bucket = f"reliability-{n}"
        self.server.create_bucket(bucket)
        os.environ.update(self.env())  # for this process's own store handles
        return Target(self, f"s3://{bucket}?endpoint_url={self.server.endpoint}",
                      ["--store", f"s3://{bucket}", "--endpoint-url", self.server.endpoint, "--filer",
                       self.server.filer],
                      {"store": f"s3://{bucket}", "endpoint_url": self.server.endpoint, "filer": self.server.filer},
                      work)

    def close(self) -> None:
        self.stop()


# --- the workload and what is counted -----------------------------------------------------------------------------


def seed_fanout(target: Target, p: Profile, offset: int = 0) -> dict[str, Any]:
    """The fan-out's input (numbers from 1 + offset); returns every output the run must end with, and its value.
    Called again with another offset, it writes a new version of the input over the old one."""
    numbers = list(range(1 + offset, p.parts + 1 + offset))
    step = spec_from_mapping({"computation": "split", "handler_type": "split", "inputs": ["numbers.txt"],
                              "output": "numbers.json", "params": {"sleep": p.sleep_s}})
    target.store().put("numbers.txt", " ".join(map(str, numbers)).encode(), encode_gcl([step]).metadata)
    expected: dict[str, Any] = {"numbers.json": numbers, "total.json": {"sum": sum(numbers) * 2, "parts": p.parts}}
    expected.update({f"parts/{i:03d}.json": n * 2 for i, n in enumerate(numbers)})
    return expected


@dataclass
class Trail:
    entries: list[dict[str, Any]]

    @classmethod
    def of(cls, target: Target) -> "Trail":
        return cls(audit.read(target.trail))

    def commits(self) -> collections.Counter:
        """Commits per key and run: a key is written once per run (a new run when its inputs change)."""
        return collections.Counter((e["key"], e.get("run")) for e in self.entries if e["event"] == "commit")

    def starts(self) -> collections.Counter:
        return collections.Counter(e["computation"] for e in self.entries if e["event"] == "start")

    def started_after_commit(self) -> list[str]:
        """Computations started again after their output was committed (the trail is in append order)."""
        committed, again = set(), []
        for e in self.entries:
            if e["event"] == "commit":
                committed.add(e["computation"])
            elif e["event"] == "start" and e["computation"] in committed:
                again.append(e["computation"])
        return sorted(set(again))

    def in_flight(self) -> list[dict[str, Any]]:
        """Attempts started and not yet ended by a commit (or a kept output), latest first."""
        ended = {(e["computation"], e["attempt"]) for e in self.entries if e["event"] in ("commit", "kept")}
        return [e for e in reversed(self.entries)
                if e["event"] == "start" and (e["computation"], e["attempt"]) not in ended]


@dataclass
class Outcome:
    faults: int = 0
    computations: int = 0
    lost: int = 0
    duplicated: int = 0
    reexecuted: int = 0
    problems: list[str] = field(default_factory=list)


def settle(target: Target, expected: dict[str, Any], outcome: Outcome) -> Outcome:
    """Count lost, duplicated and re-executed from the store and the audit trail."""
    store = target.store()
    for key, value in expected.items():
        try:
            got = json.loads(store.get(key).body)
        except ObjectNotFound:
            outcome.lost += 1
            outcome.problems.append(f"{key} missing")
            continue
        if got != value:
            outcome.lost += 1
            outcome.problems.append(f"{key} holds {got!r}, not {value!r}")
    trail = Trail.of(target)
    outcome.duplicated += sum(1 for n in trail.commits().values() if n > 1)
    outcome.reexecuted += sum(n - 1 for n in trail.starts().values())
    outcome.computations += len(expected)
    return outcome


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"gclo run exited with code {proc.returncode} before {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {timeout_s:.0f}s")
        time.sleep(0.02)


def gclo_run(target: Target, *extra: str, until_idle: bool = True, executor: str | None = None) -> subprocess.Popen:
    where = ["--executor", executor] if executor else ["--workers", str(WORKERS)]
    args = [*GCLO, "run", *target.args, "--handlers", HANDLERS, *where, *extra]
    if until_idle:
        args += ["--until-idle", "--quiet-period", "0.5"]
    log = open(target.work / "gclo.log", "ab")
    proc = subprocess.Popen(args, stdout=log, stderr=log, env=target.env(), start_new_session=True,
                            stdin=subprocess.DEVNULL)
    log.close()
    record_pid(proc.pid)
    return proc


def finish(proc: subprocess.Popen, outcome: Outcome, timeout_s: float = 180) -> None:
    try:
        code = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        outcome.problems.append(f"gclo run did not finish within {timeout_s:.0f}s")
        code = None
    record_pid(proc.pid, forget=True)
    if code not in (0, None):
        outcome.problems.append(f"gclo run exited with code {code}")


def log_text(target: Target) -> str:
    path = target.work / "gclo.log"
    return path.read_text(errors="replace") if path.exists() else ""


# --- scenarios ------------------------------------------------------------------------------------------------------


def orchestrator_kill(target: Target, p: Profile, rng: random.Random) -> Outcome:
    """kill -9 of the orchestrator and all its workers at random points, then a restart that finishes."""
    expected = seed_fanout(target, p)
    outcome = Outcome()
    total = len(expected)
    in_flight: set[str] = set()
    for _ in range(rng.randint(*p.crashes)):
        done = sum(Trail.of(target).commits().values())
        if total - done < 4:
            break
        at = done + rng.randint(1, (total - done) // 2) if p.crashes[1] > 1 else \
            done + rng.randint(total // 4, total // 2)
        proc = gclo_run(target, until_idle=False)
        try:
            wait_until(lambda: sum(Trail.of(target).commits().values()) >= at, 120, f"{at} commits", proc)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator, its workers, its event tail: all at once
            proc.wait()
            record_pid(proc.pid, forget=True)
        outcome.faults += 1
        trail = Trail.of(target)
        in_flight |= {e["computation"] for e in trail.in_flight()}
    finish(gclo_run(target), outcome)
    settle(target, expected, outcome)
    trail = Trail.of(target)
    again = {c for c, n in trail.starts().items() if n > 1}
    if again - in_flight:
        outcome.problems.append(f"re-ran work that was not in flight at a crash: {sorted(again - in_flight)}")
    if trail.started_after_commit():
        outcome.problems.append(f"re-ran committed work: {trail.started_after_commit()}")
    return outcome


def worker_kill(target: Target, p: Profile, rng: random.Random) -> Outcome:
    """kill -9 of worker processes in the middle of a computation, while the orchestrator carries on."""
    expected = seed_fanout(target, p)
    outcome = Outcome()
    total = len(expected)
    proc = gclo_run(target)
    killed: list[tuple[str, int]] = []
    try:
        for _ in range(rng.randint(*p.worker_kills)):
            done = sum(Trail.of(target).commits().values())
            if total - done < 4:
                break
            at = done + rng.randint(1, max(1, (total - done) // 3))
            wait_until(lambda: sum(Trail.of(target).commits().values()) >= at, 120, f"{at} commits", proc)
            victim = None
            deadline = time.monotonic() + 5
            while victim is None and time.monotonic() < deadline:
                victim = next((e for e in Trail.of(target).in_flight() if e["pid"] != proc.pid), None)
                time.sleep(0.005)
            if victim is None:
                continue
            try:
                os.kill(victim["pid"], signal.SIGKILL)
            except ProcessLookupError:
                continue
            outcome.faults += 1
            killed.append((victim["computation"], victim["attempt"]))
    finally:
        finish(proc, outcome)
    settle(target, expected, outcome)
    attempts = collections.defaultdict(set)
    for e in Trail.of(target).entries:
        if e["event"] == "start":
            attempts[e["computation"]].add(e["attempt"])
    not_retried = [c for c, a in killed if not any(n > a for n in attempts[c])
                   and not _ended(target, c, a)]
    if not_retried:
        outcome.problems.append(f"killed attempts never retried: {not_retried}")
    return outcome


def dask_kills(target: Target, p: Profile, rng: random.Random) -> Outcome:
    """On a Dask cluster of separate `dask scheduler` and `dask worker` processes: workers killed mid-computation
    (each replaced by a new one), then the orchestrator killed, and restarted against the same cluster."""
    p = dataclasses.replace(p, sleep_s=max(p.sleep_s, 0.2))  # parts long enough for kills to land mid-run
    expected = seed_fanout(target, p)
    outcome = Outcome()
    total = len(expected)
    killed: list[tuple[str, int]] = []
    cluster = DaskCluster({audit.ENV: str(target.trail), **target.backend.env()}, on_start=record_pid,
                          on_stop=lambda pid: record_pid(pid, forget=True))
    try:
        for i in range(WORKERS):
            cluster.add_worker(f"worker-{i}", nthreads=1)

        def commits() -> int:
            return sum(Trail.of(target).commits().values())

        proc = gclo_run(target, until_idle=False, executor=cluster.target)
        try:
            for k in range(rng.randint(*p.worker_kills)):
                if total - commits() < 6:
                    break
                at = commits() + rng.randint(1, max(1, (total - commits()) // 4))
                wait_until(lambda: commits() >= at, 120, f"{at} commits", proc)
                victim = None
                deadline = time.monotonic() + 5
                while victim is None and time.monotonic() < deadline:
                    victim = next((e for e in Trail.of(target).in_flight() if cluster.name_of(e["pid"])), None)
                    time.sleep(0.005)
                if victim is None:
                    continue
                cluster.kill(cluster.name_of(victim["pid"]))  # type: ignore[arg-type]
                cluster.add_worker(f"worker-{WORKERS + k}", nthreads=1, wait=False)
                outcome.faults += 1
                killed.append((victim["computation"], victim["attempt"]))
            if total - commits() >= 4:
                at = commits() + (total - commits()) // 3
                wait_until(lambda: commits() >= at, 120, f"{at} commits", proc)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator alone: the cluster goes on
            proc.wait()
            record_pid(proc.pid, forget=True)
        outcome.faults += 1
        finish(gclo_run(target, executor=cluster.target), outcome)
    finally:
        cluster.stop()
    settle(target, expected, outcome)
    attempts = collections.defaultdict(set)
    for e in Trail.of(target).entries:
        if e["event"] == "start":
            attempts[e["computation"]].add(e["attempt"])
    not_retried = [c for c, a in killed if not any(n > a for n in attempts[c]) and not _ended(target, c, a)]
    if not_retried:
        outcome.problems.append(f"attempts killed with their Dask worker never retried: {not_retried}")
    return outcome


def _ended(target: Target, computation: str, attempt: int) -> bool:
    """The killed attempt had committed just before the kill (the kill landed between commit and report)."""
    return any(e["event"] in ("commit", "kept") and e["computation"] == computation and e["attempt"] == attempt
               for e in Trail.of(target).entries)


class Chaos:
    """Decides the fate of each notification: dropped, duplicated, held back (reordered), or passed on."""

    def __init__(self, rng: random.Random, drop: float = 0.25, duplicate: float = 0.25, hold: float = 0.25):
        self.rng, self.drop, self.duplicate, self.hold = rng, drop, duplicate, hold
        self.counts = collections.Counter()
        self.lock = threading.Lock()

    def fate(self) -> str:
        with self.lock:
            r = self.rng.random()
            fate = ("drop" if r < self.drop else "duplicate" if r < self.drop + self.duplicate
                    else "hold" if r < self.drop + self.duplicate + self.hold else "pass")
            self.counts[fate] += 1
            return fate

    def shuffle(self, items: list) -> None:
        with self.lock:
            self.rng.shuffle(items)

    @property
    def faults(self) -> int:
        return self.counts["drop"] + self.counts["duplicate"] + self.counts["hold"]


class ChaosSource(EventSource):
    """Wraps a push source: its notifications reach the queue dropped, duplicated or out of order."""

    def __init__(self, inner: EventSource, chaos: Chaos):
        self.inner, self.chaos = inner, chaos
        self.name = f"{inner.name}+chaos"
        self._held: list[Any] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self, emit: Callable[[Any], None]) -> None:
        def chaotic(event: Any) -> None:
            if not isinstance(event, ObjectCreated):
                emit(event)
                return
            fate = self.chaos.fate()
            if fate == "drop":
                return  # and no ack: a queue would deliver it again; the reconciliation listing finds it
            if fate == "pass":
                emit(event)
                return
            if fate == "duplicate":
                emit(event)
            with self._lock:
                self._held.append(event)

        def release() -> None:
            while not self._stop.wait(0.15):
                with self._lock:
                    held, self._held = self._held, []
                self.chaos.shuffle(held)
                for event in held:
                    emit(event)

        threading.Thread(target=release, name="chaos-release", daemon=True).start()
        self.inner.start(chaotic)

    def stop(self) -> None:
        self._stop.set()
        self.inner.stop()


def events_chaos(target: Target, p: Profile, rng: random.Random) -> Outcome:
    """A user drops files while the orchestrator runs; notifications are dropped, duplicated and reordered."""
    outcome = Outcome()
    os.environ[audit.ENV] = str(target.trail)  # the executor hands GCLO_* to its workers
    settings = RunSettings(handlers=[HANDLERS], workers=WORKERS, reconcile_interval_s=1.0, **target.settings)
    orch = build_orchestrator(settings)
    chaos = Chaos(rng)
    plain = orch.make_sources
    orch.make_sources = lambda listing: [s if isinstance(s, PollingSource) else ChaosSource(s, chaos)
                                         for s in plain(listing)]
    results: list[Any] = []
    runner = threading.Thread(target=lambda: results.append(orch.run()), name="orchestrator")
    runner.start()
    store = target.store()
    expected = {}
    try:
        wait_until(lambda: orch._info.get("state") == "running", 60, "the orchestrator to start")
        for i in range(p.drops):
            step = spec_from_mapping({"computation": f"square:{i:03d}", "handler_type": "square",
                                      "inputs": [f"inbox/{i:03d}.txt"], "output": f"squares/{i:03d}.json",
                                      "params": {"sleep": p.sleep_s}})
            store.put(f"inbox/{i:03d}.txt", str(i).encode(), encode_gcl([step]).metadata)
            expected[f"squares/{i:03d}.json"] = {"n": i, "square": i * i}
            time.sleep(rng.random() * 0.05)

        def all_there() -> bool:
            return all(store.exists(k) for k in expected)
        wait_until(all_there, 120, "every dropped file's output")
        time.sleep(2.0)  # late duplicates and the next reconciliation listing still arrive
    except RuntimeError as exc:
        outcome.problems.append(str(exc))
    finally:
        orch.request_stop()
        runner.join(60)
        del os.environ[audit.ENV]
    if results and results[0].failed:
        outcome.problems.append(f"failed: {results[0].failed}")
    outcome.faults = chaos.faults
    return settle(target, expected, outcome)


def late_writer(target: Target, p: Profile, rng: random.Random) -> Outcome:
    """While the run goes on, stale attempts of already committed computations run again and try to write."""
    expected = seed_fanout(target, p)
    outcome = Outcome()
    proc = gclo_run(target)
    store = target.store()
    registry = HandlerRegistry.from_sources([HANDLERS])
    os.environ[audit.ENV] = str(target.trail)
    try:
        wait_until(lambda: store.exists("numbers.json"), 60, "the fan-out", proc)
        specs = [*declared_by(store, "numbers.txt"), *declared_by(store, "numbers.json")]
        deadline = time.monotonic() + 120
        while outcome.faults < p.late_writes and time.monotonic() < deadline:
            committed = [s for s in specs if store.exists(s.output)]
            if proc.poll() is not None and not committed:
                break
            if committed:
                stale = rng.choice(committed)
                run_task(Task(stale, 1, target.uri), registry, store)
                outcome.faults += 1
            time.sleep(0.01)
    finally:
        del os.environ[audit.ENV]
        finish(proc, outcome)
    return settle(target, expected, outcome)


def declared_by(store, key: str) -> tuple:
    """The specs an object's GCL declares, inline or in its sidecar."""
    fields = read_gcl_fields(store.head(key).metadata)
    return load_gcl(fields.text if fields.text is not None else store.get(fields.ref).body, source=key)


def store_outage(target: Target, p: Profile, rng: random.Random) -> Outcome:
    """The S3 server stops for a while in the middle of the run, then comes back on the same ports and data."""
    backend = target.backend
    assert isinstance(backend, SeaweedBackend)
    expected = seed_fanout(target, p)
    outcome = Outcome()
    proc = gclo_run(target)
    try:
        at = rng.randint(len(expected) // 4, len(expected) // 2)
        wait_until(lambda: sum(Trail.of(target).commits().values()) >= at, 120, f"{at} commits", proc)
        backend.stop()
        outcome.faults += 1
        time.sleep(p.outage_s)  # the outage itself
        backend.start()
    finally:
        finish(proc, outcome, timeout_s=300)
    if "not answering" not in log_text(target):
        outcome.problems.append("the log never said it was waiting for the store")
    return settle(target, expected, outcome)


def changing_inputs(target: Target, p: Profile, rng: random.Random) -> Outcome:
    """A user replaces the input several times while the orchestrator and its workers run, are killed with
    kill -9 at random points and are restarted; a last run finishes. Every output must hold the value of the last
    version of the input, record a run of the last versions of its inputs, and no run may commit twice."""
    expected = seed_fanout(target, p)
    outcome = Outcome()
    versions = rng.randint(2, 4)
    for version in range(1, versions + 1):
        proc = gclo_run(target, until_idle=False)
        try:
            at = sum(Trail.of(target).commits().values()) + rng.randint(3, max(3, p.parts // 2))
            wait_until(lambda: sum(Trail.of(target).commits().values()) >= at, 120, "some commits", proc)
            expected = seed_fanout(target, p, offset=100 * version)  # an edited input uploaded over the old one
            outcome.faults += 1
            at = sum(Trail.of(target).commits().values()) + rng.randint(1, max(1, p.parts // 3))
            wait_until(lambda: sum(Trail.of(target).commits().values()) >= at, 120, "commits after the change",
                       proc)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator, its workers, its event tail: all at once
            proc.wait()
            record_pid(proc.pid, forget=True)
        outcome.faults += 1
    finish(gclo_run(target), outcome)
    settle(target, expected, outcome)
    stale = [line.strip() for line in lineage_lines(target.store(), "total.json") if "CHANGED" in line]
    if stale:
        outcome.problems.append(f"outputs not computed from the last versions: {stale[:3]}")
    return outcome


SCENARIOS: list[tuple[str, Callable[[Target, Profile, random.Random], Outcome], tuple[str, ...]]] = [
    ("orchestrator kill -9", orchestrator_kill, ("local", "seaweedfs")),
    ("worker kill -9", worker_kill, ("local", "seaweedfs")),
    ("events chaos", events_chaos, ("local", "seaweedfs")),
    ("late writer", late_writer, ("local", "seaweedfs")),
    ("store outage", store_outage, ("seaweedfs",)),
    ("changing inputs", changing_inputs, ("local", "seaweedfs")),
    ("dask: worker + orchestrator kill -9", dask_kills, ("local", "seaweedfs")),
]


# --- the table ------------------------------------------------------------------------------------------------------

COLUMNS = ("scenario", "store", "runs", "faults", "computations", "lost", "duplicated", "re-executions", "checks")


def row(name: str, backend: str, outcomes: list[Outcome]) -> dict[str, Any]:
    problems = [f"run {i + 1}: {msg}" for i, o in enumerate(outcomes) for msg in o.problems]
    return {"scenario": name, "store": backend, "runs": len(outcomes),
            "faults": sum(o.faults for o in outcomes), "computations": sum(o.computations for o in outcomes),
            "lost": sum(o.lost for o in outcomes), "duplicated": sum(o.duplicated for o in outcomes),
            "re-executions": sum(o.reexecuted for o in outcomes),
            "checks": "ok" if not problems else f"{len(problems)} failed", "problems": problems}


def render(rows: list[dict[str, Any]]) -> str:
    cells = [[str(r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) if cells else len(c) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(x.ljust(w) for x, w in zip(cell, widths)) for cell in cells]
    for r in rows:
        lines += [f"  {r['scenario']} on {r['store']}: {msg}" for msg in r["problems"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick",
                        help="smoke: one small run each (the test suite); quick: `make reliability`; "
                             "soak: `make soak`")
    parser.add_argument("--runs", type=int, help="runs per scenario and store (default: the profile's)")
    parser.add_argument("--store", choices=("local", "seaweedfs"), action="append",
                        help="only these stores (repeatable; default both)")
    parser.add_argument("--scenario", action="append", metavar="NAME",
                        help="only scenarios whose name contains NAME (repeatable)")
    parser.add_argument("--seed", type=int, help="random seed (default: from the clock; printed)")
    parser.add_argument("--keep", action="store_true", help="keep each run's store, audit trail and log")
    parser.add_argument("--results", type=Path, default=RESULTS, metavar="DIR",
                        help="where the JSON goes (default: reliability/results/)")
    parser.add_argument("--no-save", action="store_true", help="write no JSON")
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    runs = args.runs or profile.runs
    seed = args.seed if args.seed is not None else int(time.time())
    stores = args.store or ["local", "seaweedfs"]
    chosen = [(n, f, [b for b in bs if b in stores]) for n, f, bs in SCENARIOS
              if not args.scenario or any(s in n for s in args.scenario)]
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("gclo").setLevel(logging.CRITICAL)  # the events scenario's in-process orchestrator
    print(f"reliability ({args.profile}): {runs} run(s) per row, seed {seed}, {WORKERS} workers", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="gclo-reliability-"))
    backends: dict[str, Backend] = {}
    rows = []
    counter = 0
    try:
        for name, scenario, names in chosen:
            for backend_name in names:
                if backend_name not in backends:
                    backends[backend_name] = (SeaweedBackend(scratch / "seaweedfs") if backend_name == "seaweedfs"
                                              else LocalBackend())
                outcomes = []
                for i in range(runs):
                    counter += 1
                    rng = random.Random(f"{seed}/{name}/{backend_name}/{i}")
                    work = scratch / f"run-{counter:03d}"
                    work.mkdir()
                    started = time.monotonic()
                    try:
                        outcome = scenario(backends[backend_name].target(work, counter), profile, rng)
                    except Exception as exc:  # a broken run is a failed row, not a lost table
                        outcome = Outcome(problems=[f"{type(exc).__name__}: {exc}"])
                    outcomes.append(outcome)
                    print(f"  {name} on {backend_name}, run {i + 1}/{runs}: {outcome.faults} fault(s), "
                          f"{outcome.lost} lost, {outcome.duplicated} duplicated, {outcome.reexecuted} "
                          f"re-executed, {time.monotonic() - started:.1f}s"
                          + (f"; {'; '.join(outcome.problems)}" if outcome.problems else ""), flush=True)
                rows.append(row(name, backend_name, outcomes))
    finally:
        for backend in backends.values():
            backend.close()
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"kept {scratch}")
    print()
    print(render(rows))
    ok = all(r["lost"] == 0 and r["duplicated"] == 0 and r["checks"] == "ok" for r in rows)
    print(f"\n{'PASS' if ok else 'FAIL'}: lost and duplicated must be 0 and every check ok in every row")
    if not args.no_save:
        args.results.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        out = args.results / f"{args.profile}-{stamp}.json"
        out.write_text(json.dumps({"profile": args.profile, "runs": runs, "seed": seed, "workers": WORKERS,
                                   "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                                   "rows": rows}, indent=1) + "\n")
        print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
