"""Shared fixtures: every test must leave no thread and no child process behind."""
from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from .servers import aws_test_environment, moto, seaweedfs  # noqa: F401  (session fixtures)


def _wait_for(condition, timeout: float = 5.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@pytest.fixture(autouse=True)
def no_leaks():
    """Fails a test that leaves threads or worker processes running (the forkserver itself may stay)."""
    before = {t.ident for t in threading.enumerate()}
    yield

    def leaked_threads():
        return [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]

    def leaked_children():
        return [p for p in multiprocessing.active_children() if p.name.startswith("gclo-")]

    _wait_for(lambda: not leaked_threads() and not leaked_children(), timeout=5.0)
    assert not leaked_threads(), f"threads left running: {leaked_threads()}"
    assert not leaked_children(), f"processes left running: {leaked_children()}"


def wait_until(condition, timeout: float = 10.0, message: str = "condition") -> None:
    """Wait on a condition with a deadline (never a bare sleep as synchronisation)."""
    if not _wait_for(condition, timeout):
        raise AssertionError(f"timed out after {timeout}s waiting for {message}")
