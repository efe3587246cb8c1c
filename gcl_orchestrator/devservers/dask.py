"""A Dask scheduler and workers on 127.0.0.1, as separate `dask` processes, for tests and the fault suite: the
cluster the Dask executor meets in production, not one inside the orchestrator's process."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping

from ..supervise import end_process
from .ports import free_port


class DaskCluster:
    """`dask scheduler` and `dask worker` processes on 127.0.0.1, started as the README starts them. The
    scheduler fails an attempt at the first worker lost under it (allowed-failures 0), so the orchestrator
    counts and retries it. Workers run without a nanny, so that the PID a test kills is the worker itself."""

    def __init__(self, env: Mapping[str, str] | None = None, *, on_start: Callable[[int], None] | None = None,
                 on_stop: Callable[[int], None] | None = None) -> None:
        self.port = free_port()
        self._on_start, self._on_stop = on_start, on_stop
        self.env = {**os.environ, **(env or {}), "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
        self.procs: dict[str, subprocess.Popen] = {}
        self._dask = str(Path(sys.executable).with_name("dask"))  # the `dask` command beside this Python
        self._spawn("scheduler", [self._dask, "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                  "--no-dashboard"])
        self._wait(lambda names: True, "the scheduler")

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def target(self) -> str:
        return f"dask://127.0.0.1:{self.port}"

    def add_worker(self, name: str, resources: str | None = None, nthreads: int = 2,
                   wait: bool = True) -> subprocess.Popen:
        """Start a worker; with `wait`, return once the scheduler counts it."""
        args = [self._dask, "worker", self.address, "--host", "127.0.0.1", "--name", name, "--nthreads",
                str(nthreads), "--no-nanny", "--no-dashboard"]
        if resources:
            args += ["--resources", resources]
        proc = self._spawn(name, args)
        if wait:
            self._wait(lambda names: name in names, f"worker {name}")
        return proc

    def name_of(self, pid: int) -> str | None:
        return next((n for n, p in self.procs.items() if p.pid == pid and n != "scheduler"), None)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(10)
        self._stopped(proc.pid)

    def stop(self) -> None:
        for name in [n for n in self.procs if n != "scheduler"] + ["scheduler"]:
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            end_process(proc, 15)
            self._stopped(proc.pid)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        if self._on_start is not None:
            self._on_start(proc.pid)
        self.procs[name] = proc
        return proc

    def _stopped(self, pid: int) -> None:
        if self._on_stop is not None:
            self._on_stop(pid)

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
