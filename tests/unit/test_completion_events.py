"""Completion events under .gclo/events/ stay bounded: old batches are rolled up into an archive, none lost."""
from __future__ import annotations

import gzip
import json
import time
import uuid

from gcl_orchestrator.model import Completion, State
from gcl_orchestrator.runtime import HandlerRegistry
from gcl_orchestrator.runtime.notifier import ARCHIVE_PREFIX, EVENTS_PREFIX, Notifier
from gcl_orchestrator.storage import MemoryObjectStore


def write_batch(notifier, at, names):
    notifier._write([(Completion(n, State.DONE, f"out/{n}", 1, None, None), at) for n in names])


def test_batches_older_than_an_hour_are_rolled_up_into_one_archive_and_newer_ones_stay():
    store = MemoryObjectStore(f"events-{uuid.uuid4().hex[:8]}")
    notifier = Notifier(store, HandlerRegistry.from_sources([]), lambda ev: None)
    notifier._written_since_rollup = -10_000  # no automatic roll-up in this test
    now = time.time()
    write_batch(notifier, now - 7200, ["a", "b"])
    write_batch(notifier, now - 3700, ["c"])
    write_batch(notifier, now - 60, ["d"])
    assert notifier.roll_up(now) == 2
    left = [info.key for info in store.list(EVENTS_PREFIX)]
    assert len(left) == 1 and json.loads(store.get(left[0]).body)["computation"] == "d"
    (archive,) = [info.key for info in store.list(ARCHIVE_PREFIX)]
    events = [json.loads(line) for line in gzip.decompress(store.get(archive).body).splitlines()]
    assert [e["computation"] for e in events] == ["a", "b", "c"] and archive.endswith("-3.jsonl.gz")
    assert notifier.roll_up(now) == 0  # nothing old is left


def test_a_long_run_rolls_up_as_it_writes():
    store = MemoryObjectStore(f"events-{uuid.uuid4().hex[:8]}")
    notifier = Notifier(store, HandlerRegistry.from_sources([]), lambda ev: None)
    old = time.time() - 7200
    for i in range(5):
        write_batch(notifier, old + i, [f"c{i}"])  # the first write already rolled up what was there before it
    assert len(list(store.list(EVENTS_PREFIX))) == 4 and len(list(store.list(ARCHIVE_PREFIX))) == 1


def test_a_roll_up_that_stopped_before_deleting_does_not_archive_the_same_events_twice():
    store = MemoryObjectStore(f"events-{uuid.uuid4().hex[:8]}")
    notifier = Notifier(store, HandlerRegistry.from_sources([]), lambda ev: None)
    notifier._written_since_rollup = -10_000
    now = time.time()
    write_batch(notifier, now - 7300, ["a"])
    write_batch(notifier, now - 7200, ["b"])
    real_delete = store.delete
    store.delete = lambda key: (_ for _ in ()).throw(RuntimeError("crash while deleting"))
    try:
        notifier.roll_up(now)
    except RuntimeError:
        pass
    store.delete = real_delete
    write_batch(notifier, now - 7100, ["c"])
    notifier.roll_up(now)
    archived = []
    for info in store.list(ARCHIVE_PREFIX):
        archived += [json.loads(line)["computation"] for line in gzip.decompress(store.get(info.key).body).splitlines()]
    assert sorted(archived) == ["a", "b", "c"] and list(store.list(EVENTS_PREFIX)) == []
