"""The audit trail: one JSON line per attempt start and per output commit, appended by whichever process runs the
attempt, to the file named by $GCLO_AUDIT_LOG (off when unset). Executors pass GCLO_* variables to their workers,
so one file collects every process of a run, and of later runs on the same store.

Lines are single O_APPEND writes under 4 KiB, so lines from concurrent processes never interleave on a local disk.
It is the ground truth the reliability suite counts re-executions and duplicated commits from; it also answers
"which process wrote this key, in which attempt" when debugging.

    {"event": "start",  "computation": c, "attempt": n, "pid": p, "at": t}
    {"event": "commit", "computation": c, "attempt": n, "pid": p, "at": t, "key": k, "etag": e}
    {"event": "kept",   "computation": c, "attempt": n, "pid": p, "at": t, "key": k, "etag": e}   (already there)
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

ENV = "GCLO_AUDIT_LOG"


def record(event: str, computation: str, attempt: int, **fields: Any) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"event": event, "computation": computation, "attempt": attempt, "pid": os.getpid(),
                       "at": round(time.time(), 6), **fields}, separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete line of an audit file (a line cut short by a kill -9 is skipped)."""
    entries = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return entries
