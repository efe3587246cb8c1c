"""Background threads under one policy. Every loop that runs on a thread of its own (event sources, the executor's
feeder, the notifier, reconciliation listings) is started here: an exception is logged with its traceback,
reported as an incident into the one event queue, and the loop is started again after a backoff. A critical loop
that keeps failing is reported as a failed component, which ends the run loudly instead of leaving work behind.
"""
from __future__ import annotations

import logging
import subprocess
import threading
import time
from typing import Callable

from .model import ComponentFailed, IncidentReported

log = logging.getLogger("gclo")
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STABLE_S = 60.0  # a loop that ran this long before failing starts its backoff afresh
CRITICAL_FAILURES = 5  # failures in a row after which a critical loop gives up


def start_thread(name: str, loop: Callable[[], None], report: Callable[[object], None] | None,
                 stopping: threading.Event, *, critical: bool = False,
                 on_give_up: Callable[[str], None] | None = None) -> threading.Thread:
    """Run `loop()` on a daemon thread named `name` until it returns or `stopping` is set, restarting it after
    each exception. `report` receives IncidentReported (and ComponentFailed) events. For a critical loop,
    `on_give_up(message)` runs before the component is reported failed, so that it can hand back its work."""

    def supervised() -> None:
        failures = 0
        delay = FIRST_BACKOFF_S
        while not stopping.is_set():
            started = time.monotonic()
            try:
                loop()
                return
            except Exception as exc:
                if stopping.is_set():
                    return
                if time.monotonic() - started > STABLE_S:
                    failures, delay = 0, FIRST_BACKOFF_S
                failures += 1
                what = f"{type(exc).__name__}: {exc}"
                if critical and failures >= CRITICAL_FAILURES:
                    message = f"{name} failed {failures} times in a row and cannot go on (last: {what})"
                    log.error("%s", message, exc_info=True)
                    if on_give_up is not None:
                        try:
                            on_give_up(message)
                        except Exception:
                            log.exception("%s: handing back its work failed", name)
                    if report is not None:
                        report(ComponentFailed(name, message))
                    return
                log.error("%s crashed (%s); restarting it in %.1fs", name, what, delay, exc_info=True)
                if report is not None:
                    report(IncidentReported(name, f"crashed ({_short(what)}); restarted after {delay:.1f}s"))
                stopping.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)

    thread = threading.Thread(target=supervised, name=name, daemon=True)
    thread.start()
    return thread


def end_process(proc: subprocess.Popen, timeout_s: float = 5.0) -> None:
    """Stop a child process if it still runs (SIGTERM, then SIGKILL after `timeout_s`) and reap it."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
