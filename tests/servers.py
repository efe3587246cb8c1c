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
