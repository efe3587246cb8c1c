"""The filesystem-watch source on Linux: inotify read directly (inotify_simple), one thread, no watch on the
reserved prefix.

Why not watchdog here: watchdog passes every inotify event through several threads and queues, and it cannot
leave a subtree out of a recursive watch. Each output a worker commits to a local store touches `.gclo/` (temp
file, metadata) several times for the one event that matters, and the orchestrator spent more CPU on those than
on everything else together. Here `.gclo/` is not watched at all, and the one event left is decoded in place.

A file deleted or moved away is reported as removed. What is reported as created, as with the watchdog source: a file closed after writing (IN_CLOSE_WRITE) and a file renamed
into place (IN_MOVED_TO: a rename is atomic, so the file is complete; this is how `put` writes arrive); a file
created without writing (a hard link) only when its mtime is not fresh. So an output a worker commits with
`create` (a hard link of a file it has just written) is not reported here: the worker's own report announces it,
and should the worker die before reporting, the reconciliation listing finds it. A new directory gets its
watches at once and is scanned when files written before them have settled. A queue overflow rescans the tree.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from ..errors import InvalidKeyError
from ..interfaces import Emit
from ..model import RESERVED_PREFIX, ObjectRemoved, check_key
from ..supervise import start_thread
from .watch import LocalWatchSource

try:
    from inotify_simple import INotify, flags
except ImportError:  # not Linux, or not installed: the watchdog source is used instead
    INotify = None  # type: ignore[assignment,misc]

log = logging.getLogger("gclo.sources")
RESERVED_DIR = RESERVED_PREFIX.rstrip("/")


def available() -> bool:
    return INotify is not None


class InotifySource(LocalWatchSource):
    name = "watch"

    def __init__(self, root: str | os.PathLike[str]):
        super().__init__(root)
        self._thread: threading.Thread | None = None
        self._inotify: "INotify | None" = None
        self._dirs: dict[int, str] = {}  # watch descriptor -> directory, relative to the root ("" for the root)
        self._root_prefix = str(self.root) + os.sep
        self._mask = flags.CLOSE_WRITE | flags.MOVED_TO | flags.MOVED_FROM | flags.CREATE | flags.DELETE

    def start(self, emit: Emit) -> None:
        self._stopped = False
        self._stop_event = threading.Event()
        self._dirs = {}
        self._inotify = INotify()
        self._watch_tree("")
        self._thread = start_thread("gclo-watch", lambda: self._loop(emit), emit, self._stop_event)

    def stop(self) -> None:
        if self._thread is not None:
            self._stop_event.set()
            self._thread.join()
            self._thread = None
        super().stop()  # timers of pending directory scans
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    # --- watches ---------------------------------------------------------------------------------------------

    def _watch_tree(self, rel: str) -> None:
        """Watch `rel` and every directory below it, except the reserved prefix."""
        assert self._inotify is not None
        top = self.root / rel if rel else self.root
        for parent, dirs, _files in os.walk(top):
            prel = Path(parent).relative_to(self.root).as_posix()
            prel = "" if prel == "." else prel
            if not prel:
                dirs[:] = [d for d in dirs if d != RESERVED_DIR]
            try:
                wd = self._inotify.add_watch(parent, self._mask)
            except OSError as exc:  # removed meanwhile, or out of watches (fs.inotify.max_user_watches)
                log.warning("cannot watch %s: %s; the reconciliation listing still covers it", parent, exc)
                dirs[:] = []
                continue
            self._dirs[wd] = prel

    def _forget_tree(self, rel: str) -> None:
        prefix = rel + "/"
        for wd, path in list(self._dirs.items()):
            if path == rel or path.startswith(prefix):
                del self._dirs[wd]
                try:
                    assert self._inotify is not None
                    self._inotify.rm_watch(wd)
                except OSError:
                    pass  # already gone with its directory

    # --- events ----------------------------------------------------------------------------------------------

    def _loop(self, emit: Emit) -> None:
        assert self._inotify is not None
        inotify = self._inotify
        while not self._stop_event.is_set():
            try:
                events = inotify.read(timeout=200)
            except OSError as exc:
                if self._stop_event.is_set():
                    return
                log.warning("reading inotify events failed: %s", exc)
                continue
            for wd, mask, _cookie, name in events:
                if mask & flags.Q_OVERFLOW:
                    log.warning("the kernel dropped filesystem events (queue overflow); rescanning %s", self.root)
                    self._scan_later(emit, str(self.root))
                    continue
                if mask & flags.IGNORED:
                    self._dirs.pop(wd, None)
                    continue
                parent = self._dirs.get(wd)
                if parent is None or not name:
                    continue
                rel = f"{parent}/{name}" if parent else name
                if mask & flags.ISDIR:
                    if not parent and name == RESERVED_DIR:
                        continue
                    if mask & (flags.CREATE | flags.MOVED_TO):
                        self._watch_tree(rel)
                        self._scan_later(emit, str(self.root / rel))
                    elif mask & flags.MOVED_FROM:
                        self._forget_tree(rel)
                    continue
                if mask & (flags.CLOSE_WRITE | flags.MOVED_TO):
                    self._report_key(emit, rel, False)
                elif mask & flags.CREATE:
                    self._report_key(emit, rel, True)
                elif mask & (flags.DELETE | flags.MOVED_FROM):
                    self._report_gone(emit, rel)

    def _report_gone(self, emit: Emit, rel: str) -> None:
        try:
            key = check_key(rel)
        except InvalidKeyError:
            return
        if not os.path.lexists(self._root_prefix + rel):  # not replaced in the same breath
            emit(ObjectRemoved(key, self.name))

    def _report_key(self, emit: Emit, rel: str, require_settled: bool) -> None:
        """`_report` for a path already relative to the root (no path objects on the hot path)."""
        try:
            key = check_key(rel)
        except InvalidKeyError:
            return  # a name no key can have
        self._report_file(emit, key, self._root_prefix + rel, require_settled)
