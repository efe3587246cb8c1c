"""The log of one attempt while it runs: what its handler says through `ctx.log`, prints to stdout and stderr, and
the traceback it fails with, kept in memory within fixed bounds until the worker writes it to the store."""
from __future__ import annotations

import collections
import contextlib
import logging
import sys
import threading
import time
import traceback
from typing import Any, Iterator

HEAD_CHARS = 16 * 1024  # a long log keeps its beginning (what the handler said first) ...
TAIL_CHARS = 48 * 1024  # ... and its end (what it said last, and why it failed), and says how much fell between


def stamp(when: float | None = None) -> str:
    """UTC, to the millisecond: `2024-05-01T12:00:00.123Z`."""
    when = time.time() if when is None else when
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1000):03d}Z"


class AttemptLogBuffer:
    """Text appended from any thread. `text()` gives back the first `head_chars` and the last `tail_chars`
    characters, with a line between them saying how many were cut; memory stays within those bounds however
    much is written."""

    def __init__(self, head_chars: int = HEAD_CHARS, tail_chars: int = TAIL_CHARS):
        self._head_limit = head_chars
        self._tail_limit = tail_chars
        self._lock = threading.Lock()
        self._head: list[str] = []
        self._head_len = 0
        self._tail: collections.deque[str] = collections.deque()
        self._tail_len = 0
        self.cut = 0  # characters dropped between head and tail

    def __bool__(self) -> bool:
        return self._head_len > 0

    def write(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            room = self._head_limit - self._head_len
            if room > 0:
                self._head.append(text[:room])
                self._head_len += min(room, len(text))
                text = text[room:]
                if not text:
                    return
            self._tail.append(text)
            self._tail_len += len(text)
            excess = self._tail_len - self._tail_limit
            while excess > 0:
                first = self._tail[0]
                if len(first) <= excess:
                    self._tail.popleft()
                    dropped = len(first)
                else:
                    self._tail[0] = first[excess:]
                    dropped = excess
                self._tail_len -= dropped
                self.cut += dropped
                excess -= dropped

    def line(self, level: str, message: str, when: float | None = None) -> None:
        """One entry: time stamp, level, message (which may span lines)."""
        self.write(f"{stamp(when)} {level:<7} {message.rstrip(chr(10))}\n")

    def log_call(self, level: int, msg: Any, args: tuple[Any, ...], exc_info: Any = None) -> None:
        """A logging call, formatted as `logging` would (`msg % args`, the traceback of `exc_info`)."""
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError) as exc:
            text = f"{msg!r} with arguments {args!r} (cannot format: {exc})"
        if exc_info:
            if isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            elif not isinstance(exc_info, tuple):
                exc_info = sys.exc_info()
            if exc_info[0] is not None:
                text += "\n" + "".join(traceback.format_exception(*exc_info))
        self.line(logging.getLevelName(level), text)

    def failure(self, exc: BaseException, summary: str) -> None:
        """The attempt failed with `exc`, raised by the handler: its whole traceback, from the handler's frame."""
        tb = exc.__traceback__
        tb = (tb.tb_next or tb) if tb is not None else None  # the first frame is the worker's call of the handler
        self.line("ERROR", f"the attempt failed: {summary}\n"
                  + "".join(traceback.format_exception(type(exc), exc, tb)))

    def text(self) -> str:
        with self._lock:
            head, tail, cut = "".join(self._head), "".join(self._tail), self.cut
        if not cut:
            return head + tail
        return (f"{head}{'' if head.endswith(chr(10)) else chr(10)}"
                f"[... {cut:,} characters cut here: a log keeps its first {self._head_limit:,} and its last "
                f"{self._tail_limit:,} characters ...]\n{tail}")


# Which attempt a thread's output belongs to. Threads do not inherit it: output of threads a handler starts
# itself reaches its log only in a worker process, where `capture_every_thread` says the one attempt owns it.
_local = threading.local()
_every_thread = False
_process_buffer: AttemptLogBuffer | None = None
_install_lock = threading.Lock()


def _current() -> AttemptLogBuffer | None:
    if getattr(_local, "muted", False):
        return None
    buffer = getattr(_local, "buffer", None)
    return _process_buffer if buffer is None and _every_thread else buffer


class AttemptOutput:
    """Stands in for sys.stdout or sys.stderr: what a thread running an attempt writes goes into that attempt's
    log, and everything, from every thread, on to the stream it replaced."""

    def __init__(self, inner: Any):
        self._inner = inner

    def write(self, text: str) -> int:
        buffer = _current()
        if buffer is not None:
            buffer.write(text)
        return self._inner.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _install() -> None:
    """Put AttemptOutput in front of sys.stdout and sys.stderr, once, and again should something (a test
    harness) have replaced them since."""
    with _install_lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, AttemptOutput):
                setattr(sys, name, AttemptOutput(stream))


def capture_every_thread() -> None:
    """This process runs one attempt at a time (a worker process): what any of its threads writes belongs to the
    attempt running."""
    global _every_thread
    _every_thread = True


@contextlib.contextmanager
def capturing(buffer: AttemptLogBuffer) -> Iterator[AttemptLogBuffer]:
    """While inside, what this thread writes to stdout and stderr also goes into `buffer`."""
    global _process_buffer
    _install()
    previous = getattr(_local, "buffer", None)
    _local.buffer = buffer
    if _every_thread:
        _process_buffer = buffer
    try:
        yield buffer
    finally:
        _local.buffer = previous
        if _every_thread:
            _process_buffer = None


@contextlib.contextmanager
def muted() -> Iterator[None]:
    """What this thread writes meanwhile stays out of its attempt's log (a ctx.log line, recorded already, that
    a logging handler also prints to stderr)."""
    before = getattr(_local, "muted", False)
    _local.muted = True
    try:
        yield
    finally:
        _local.muted = before
