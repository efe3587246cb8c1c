"""Real servers for the tests: SeaweedFS (`weed mini`) and moto's S3+SQS server, each on free loopback ports,
waited for until they answer, stopped by PID. A server that cannot start fails the tests that need it loudly.
PIDs are also written to $GCLO_TEST_PIDDIR so that .ci/run can stop by PID whatever a crash left behind."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gcl_orchestrator.devservers import SeaweedFS, free_port

TEST_ACCESS_KEY = "gclo-test-key"
TEST_SECRET_KEY = "gclo-test-secret-0123456789"


def record_pid(pid: int | None) -> None:
    directory = os.environ.get("GCLO_TEST_PIDDIR")
    if directory and pid:
        Path(directory, str(pid)).write_text("")


def forget_pid(pid: int | None) -> None:
    directory = os.environ.get("GCLO_TEST_PIDDIR")
    if directory and pid:
        Path(directory, str(pid)).unlink(missing_ok=True)


def start_seaweedfs(data_dir: Path) -> SeaweedFS:
    server = SeaweedFS.prepare(data_dir, access_key=TEST_ACCESS_KEY, secret_key=TEST_SECRET_KEY)
    server.start()
    record_pid(server.pid)
    return server


def stop_seaweedfs(server: SeaweedFS) -> None:
    pid = server.pid
    server.stop()
    forget_pid(pid)


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        binary = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        record_pid(self.proc.pid)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start on port {self.port}")
                time.sleep(0.05)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        forget_pid(self.proc.pid)


class DaskCluster:
    """`dask scheduler` and `dask worker` processes on 127.0.0.1, as a user starts them from the README. The
    scheduler fails an attempt at the first worker lost under it (allowed-failures 0), so the orchestrator
    counts and retries it. Workers run without a nanny, so that the PID a test kills is the worker itself."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
        self.procs: dict[str, subprocess.Popen] = {}
        self._dask = str(Path(sys.executable).with_name("dask"))
        self._spawn("scheduler", [self._dask, "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                  "--no-dashboard"])
        self._wait(lambda names: True, "the scheduler")

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def target(self) -> str:
        return f"dask://127.0.0.1:{self.port}"

    def add_worker(self, name: str, resources: str | None = None, nthreads: int = 2) -> subprocess.Popen:
        args = [self._dask, "worker", self.address, "--host", "127.0.0.1", "--name", name, "--nthreads",
                str(nthreads), "--no-nanny", "--no-dashboard"]
        if resources:
            args += ["--resources", resources]
        proc = self._spawn(name, args)
        self._wait(lambda names: name in names, f"worker {name}")
        return proc

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(10)
        forget_pid(proc.pid)

    def stop(self) -> None:
        for name in [n for n in self.procs if n != "scheduler"] + ["scheduler"]:
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            forget_pid(proc.pid)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        record_pid(proc.pid)
        self.procs[name] = proc
        return proc

    def _wait(self, ready, what: str) -> None:
        from distributed import Client

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs.values()):
                break
            try:
                with Client(self.address, timeout="2s") as client:
                    names = {w.get("name") for w in client.scheduler_info(n_workers=-1)["workers"].values()}
                if ready(names):
                    return
            except (OSError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{what} did not start (dask on port {self.port})")


@pytest.fixture(scope="session", autouse=True)
def aws_test_environment():
    """Credentials every test server accepts; nothing from the developer's own AWS setup leaks in."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                            "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN")}
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        os.environ.pop(k, None)
    os.environ.update(AWS_ACCESS_KEY_ID=TEST_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=TEST_SECRET_KEY,
                      AWS_DEFAULT_REGION="us-east-1")
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory, aws_test_environment):
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    stop_seaweedfs(server)


@pytest.fixture(scope="session")
def moto(aws_test_environment):
    server = MotoServer()
    yield server
    server.stop()
