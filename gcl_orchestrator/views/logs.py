"""Per-attempt logs as workers leave them in the store, `.gclo/logs/<quoted computation>/<attempt>.log`: the key of
each, which attempts of a computation have one, and reading one back (for the CLI, the HTTP API and the page)."""
from __future__ import annotations

import re
from urllib.parse import quote

from ..errors import ObjectNotFound
from ..interfaces import ObjectStore
from ..model import RESERVED_PREFIX

LOGS_PREFIX = f"{RESERVED_PREFIX}logs/"
LOG_METADATA = {"content-type": "text/plain; charset=utf-8"}
_LOG_NAME = re.compile(r"(0|[1-9][0-9]*)\.log")


def log_prefix(computation: str) -> str:
    """The prefix of one computation's logs. The name is quoted whole, `/` included, so no computation's logs
    can sit among another's."""
    return f"{LOGS_PREFIX}{quote(computation, safe='')}/"


def log_key(computation: str, attempt: int) -> str:
    return f"{log_prefix(computation)}{attempt}.log"


def attempts_with_logs(store: ObjectStore, computation: str) -> list[int]:
    """The attempts of `computation` that left a log, in ascending order (one listing of its prefix)."""
    prefix = log_prefix(computation)
    found = set()
    for info in store.list(prefix):
        match = _LOG_NAME.fullmatch(info.key[len(prefix):])
        if match:
            found.add(int(match.group(1)))
    return sorted(found)


def read_log(store: ObjectStore, computation: str, attempt: int | None = None) -> tuple[int, str] | None:
    """(attempt, text) of the log of that attempt, or of the latest attempt that has one when `attempt` is None;
    None when there is no such log."""
    if attempt is None:
        attempts = attempts_with_logs(store, computation)
        if not attempts:
            return None
        attempt = attempts[-1]
    try:
        body = store.get(log_key(computation, attempt)).body
    except ObjectNotFound:
        return None
    return attempt, body.decode("utf-8", "replace")


def tail(text: str, lines: int = 50) -> str:
    """The last `lines` lines of `text` (the whole text when it has no more)."""
    if lines <= 0:
        return ""
    ending = "\n" if text.endswith("\n") else ""
    kept = text[:len(text) - len(ending)].rsplit("\n", lines)
    return "\n".join(kept[-lines:]) + ending
