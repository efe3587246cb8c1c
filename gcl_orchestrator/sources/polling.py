"""The polling source: list the store, diff against the last listing, report what is new or changed.
Works with every ObjectStore; paired with push sources it is the reconciliation that makes a lost
notification a delay instead of a loss.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Mapping

from ..errors import GclError
from ..interfaces import Emit, ObjectStore
from ..model import ObjectCreated, ObjectRemoved, is_reserved
from .looping import LoopingSource

log = logging.getLogger("gclo.sources")


def diff_listing(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Keys that are new in `new` or whose etag changed, in key order. Deletions report nothing."""
    return sorted(k for k, etag in new.items() if old.get(k) != etag)


class PollingSource(LoopingSource):
    """Lists `store` every `interval_s` seconds (or less often when a listing takes long); given the `initial`
    listing, the first of its own comes an interval later. Objects modified less than `settle_s` ago are left for
    the next round, so a file still being copied into a local directory is not reported half-written."""

    name = "poll"

    def __init__(self, store: ObjectStore, interval_s: float = 1.0, *, prefix: str = "",
                 initial: Mapping[str, str] | None = None, settle_s: float = 0.0,
                 clock: Callable[[], float] = time.time):
        super().__init__()
        self.store = store
        self.interval_s = interval_s
        self.prefix = prefix
        self.settle_s = settle_s
        self._clock = clock
        self._known: dict[str, str] = dict(initial or {})
        self._listed_at_start = initial is not None

    def scan(self) -> list[ObjectCreated | ObjectRemoved]:
        """One listing, diffed against the previous one (public for tests and one-shot reconciliation): what is
        new or changed, and what is gone."""
        now = self._clock()
        listing: dict[str, str] = {}
        present: set[str] = set()
        for info in self.store.list(self.prefix, reserved=False):
            if is_reserved(info.key):
                continue
            present.add(info.key)
            if self.settle_s and now - info.modified < self.settle_s and info.key not in self._known:
                continue  # still being written, perhaps: the next round reports it
            listing[info.key] = info.etag
        changed = diff_listing(self._known, listing)
        gone = sorted(k for k in self._known if k not in present)
        for key in gone:
            del self._known[key]
        self._known.update(listing)
        return ([ObjectCreated(k, listing[k], None, self.name) for k in changed]
                + [ObjectRemoved(k, self.name) for k in gone])

    def _loop(self, emit: Emit) -> None:
        passes = 0
        if self._listed_at_start:
            # The listing it was given is its first pass: the next comes one interval later, not while the
            # orchestrator still works through that listing (at a restart, a second listing of the whole store).
            self._stopping.wait(self.interval_s)
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                for ev in self.scan():
                    emit(ev)
            except GclError as exc:
                log.warning("polling %s failed: %s (next try in %.1fs)", self.store.describe(), exc, self.interval_s)
                self._stopping.wait(self.interval_s)  # an outage is not a slow listing: no spacing out for it
                continue
            took = time.monotonic() - started
            passes += 1
            # A pass never takes more than a fifth of the time: on a large store the passes space out.
            wait = max(self.interval_s, 4 * took)
            if wait > self.interval_s and (passes == 1 or passes % 100 == 0):
                log.info("%s: a full listing of %s took %.1fs (%d objects); the next in %.0fs", self.name,
                         self.store.describe(), took, len(self._known), wait)
            self._stopping.wait(wait)
