"""The filesystem-watch source for the local directory store (watchdog: inotify, FSEvents, kqueue...).

Reports a file when it is closed after writing or renamed into place, so a `cp` still in progress is never
reported; a file moved in from elsewhere (no write) is reported on creation when its mtime is not fresh.
A file that lands in a new directory before the watch on that directory exists raises no event at all, so a
new directory is scanned once, when files written in that window have settled.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from ..errors import InvalidKeyError
from ..interfaces import Emit, EventSource
from ..model import IncidentReported, ObjectCreated, ObjectRemoved, check_key
from ..storage.local import file_version

FRESH_S = 1.0
log = logging.getLogger("gclo.sources")

# watchdog's inotify emitter logs this at ERROR when events race with its own shutdown; nothing is lost (the
# source is stopping) and users would read it as a failure.
logging.getLogger("watchdog.observers.inotify").addFilter(
    lambda record: "called when the thread is inactive" not in record.getMessage())
# Its inotify observer also warns when a directory created in a burst gets its watch twice; the second simply
# replaces the first.
warnings.filterwarnings("ignore", message="Callback with id .* already exists", category=RuntimeWarning,
                        module="watchdog.observers.inotify")


class LocalWatchSource(EventSource):
    name = "watch"

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()
        self._observer: Observer | None = None
        self._timers: set[threading.Timer] = set()
        self._lock = threading.Lock()
        self._stopped = False

    def _key(self, path: str | bytes) -> str | None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        try:
            rel = Path(path).relative_to(self.root).as_posix()
            return check_key(rel)  # also drops the reserved prefix and names no key can have
        except (ValueError, InvalidKeyError):
            return None

    def _report(self, emit: Emit, path: str | bytes, require_settled: bool) -> None:
        key = self._key(path)
        if key is not None:
            self._report_file(emit, key, path, require_settled)

    def _report_removed(self, emit: Emit, path: str | bytes) -> None:
        key = self._key(path)
        if key is not None and not os.path.lexists(path):
            emit(ObjectRemoved(key, self.name))

    def _report_file(self, emit: Emit, key: str, path: str | bytes, require_settled: bool) -> None:
        """Report `key` (the file at `path`) with its version, unless it is gone or, if asked, still fresh."""
        try:
            st = os.stat(path)
        except OSError:
            return  # gone again
        if require_settled and time.time() - st.st_mtime < FRESH_S:
            return  # being written: its close event will follow
        emit(ObjectCreated(key, file_version(st), None, self.name))

    def _scan_later(self, emit: Emit, directory: str | bytes) -> None:
        def scan() -> None:
            with self._lock:
                self._timers.discard(timer)
                if self._stopped:
                    return
            try:
                for parent, _dirs, files in os.walk(os.fsdecode(directory)):
                    for name in files:
                        self._report(emit, os.path.join(parent, name), True)
            except Exception as exc:  # a timer thread dies alone otherwise; the reconciliation listing covers it
                log.exception("scanning %s failed", os.fsdecode(directory))
                emit(IncidentReported("gclo-watch", f"scanning a new directory failed: {type(exc).__name__}: {exc}"))

        timer = threading.Timer(FRESH_S + 0.05, scan)
        timer.daemon = True
        with self._lock:
            if self._stopped:
                return
            self._timers.add(timer)
        timer.start()

    def start(self, emit: Emit) -> None:
        source = self
        self._stopped = False

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                try:
                    self._on_event(event)
                except Exception as exc:  # watchdog's thread goes on; the event is covered by reconciliation
                    log.exception("handling a filesystem event failed")
                    emit(IncidentReported("gclo-watch", f"handling a filesystem event failed: "
                                                        f"{type(exc).__name__}: {exc}"))

            def _on_event(self, event: FileSystemEvent) -> None:
                if isinstance(event, DirCreatedEvent):
                    source._scan_later(emit, event.src_path)
                elif isinstance(event, DirMovedEvent):
                    source._scan_later(emit, event.dest_path)
                if event.is_directory:
                    return
                if isinstance(event, FileClosedEvent):
                    source._report(emit, event.src_path, False)
                elif isinstance(event, FileMovedEvent):
                    source._report_removed(emit, event.src_path)
                    source._report(emit, event.dest_path, False)
                elif isinstance(event, FileDeletedEvent):
                    source._report_removed(emit, event.src_path)
                elif isinstance(event, FileCreatedEvent):
                    source._report(emit, event.src_path, True)

        self._observer = Observer()
        self._observer.schedule(Handler(), str(self.root), recursive=True)
        self._observer.daemon = True
        self._observer.start()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.unschedule_all()  # first, so no emitter is handed events while it stops
            self._observer.stop()
            self._observer.join()
            self._observer = None
        with self._lock:
            self._stopped = True
            timers, self._timers = list(self._timers), set()
        for timer in timers:
            timer.cancel()
            if timer.is_alive():
                timer.join()
