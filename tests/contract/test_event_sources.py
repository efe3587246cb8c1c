"""The EventSource contract, run against every source on every store it works with."""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

import pytest

import boto3

from gcl_orchestrator.model import ObjectCreated, ObjectRemoved
from gcl_orchestrator.sources import (
    LocalWatchSource,
    MemoryPushSource,
    PollingSource,
    SeaweedFilerSource,
    SqsEventSource,
    diff_listing,
)
from gcl_orchestrator.sources.inotify import InotifySource
from gcl_orchestrator.sources.s3_notifications import ensure_notifications
from gcl_orchestrator.storage import LocalDirectoryStore

from ..conftest import wait_until
from .conftest import make_store

SOURCES = [
    ("poll", "memory"),
    ("poll", "local"),
    ("memory", "memory"),
    ("watch", "local"),
    ("inotify", "local"),
    ("poll", "s3-seaweedfs"),
    ("seaweedfs", "s3-seaweedfs"),
    ("sqs", "s3-moto"),
]


def make_source(kind, store, request):
    if kind == "poll":
        return PollingSource(store, interval_s=0.02)
    if kind == "memory":
        return MemoryPushSource(store)
    if kind == "watch":
        return LocalWatchSource(store.root)
    if kind == "inotify":
        return InotifySource(store.root)
    if kind == "seaweedfs":
        return SeaweedFilerSource(request.getfixturevalue("seaweedfs").filer, store.bucket, store.prefix)
    if kind == "sqs":
        endpoint = request.getfixturevalue("moto").endpoint
        sqs = boto3.client("sqs", endpoint_url=endpoint)
        setup = ensure_notifications(boto3.client("s3", endpoint_url=endpoint), sqs, store.bucket,
                                     f"q-{store.bucket}")
        return SqsEventSource(setup["queue_url"], store.bucket, client=sqs)
    raise ValueError(kind)


class Collector:
    def __init__(self):
        self.events: list[ObjectCreated] = []
        self._lock = threading.Lock()

    def __call__(self, event):
        with self._lock:
            self.events.append(event)

    def keys(self):
        with self._lock:
            return [e.key for e in self.events]


@pytest.fixture(params=SOURCES, ids=[f"{s}-on-{st}" for s, st in SOURCES])
def running(request, tmp_path):
    source_kind, store_kind = request.param
    store = make_store(store_kind, tmp_path, request)
    source = make_source(source_kind, store, request)
    got = Collector()
    source.start(got)
    yield store, source, got
    source.stop()


def test_an_object_written_after_start_is_reported(running):
    store, _, got = running
    info = store.put("incoming/a b+c.csv", b"a,b\n", {"gcl": "x"})
    wait_until(lambda: "incoming/a b+c.csv" in got.keys(), 10, "the event")
    event = next(e for e in got.events if e.key == "incoming/a b+c.csv")
    assert event.etag in (None, info.etag)
    if event.metadata is not None:  # a source that carries metadata must carry it right
        assert event.metadata.get("gcl") == "x"


def test_many_objects_are_each_reported(running):
    store, _, got = running
    keys = [f"part/{i:03d}" for i in range(50)]
    for k in keys:
        store.put(k, k.encode())
    wait_until(lambda: set(keys) <= set(got.keys()), 10, "50 events")


def test_a_deleted_object_is_reported_as_removed(running):
    store, _, got = running
    store.put("gone/soon.csv", b"x")
    wait_until(lambda: "gone/soon.csv" in got.keys(), 10, "the creation")
    store.delete("gone/soon.csv")
    wait_until(lambda: any(isinstance(e, ObjectRemoved) and e.key == "gone/soon.csv" for e in got.events), 10,
               "the removal")


def test_reserved_keys_are_never_reported(running):
    store, _, got = running
    store.put(".gclo/state/status.json", b"{}")
    store.put("after", b"x")
    wait_until(lambda: "after" in got.keys(), 10, "the event after the reserved write")
    assert not [k for k in got.keys() if k.startswith(".gclo/")]


def test_stop_is_idempotent_and_nothing_is_reported_after_it(running):
    store, source, got = running
    source.stop()
    source.stop()
    before = len(got.keys())
    store.put("late", b"x")
    # PollingSource and watchers have joined their threads: nothing can still emit.
    assert len(got.keys()) == before


# --- polling specifics -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("old, new, changed", [
    ({}, {"a": "1"}, ["a"]),
    ({"a": "1"}, {"a": "1"}, []),
    ({"a": "1"}, {"a": "2", "b": "1"}, ["a", "b"]),
    ({"a": "1", "gone": "1"}, {"a": "1"}, []),
])
def test_listing_diff(old, new, changed):
    assert diff_listing(old, new) == changed


@pytest.mark.parametrize("store_kind", ["memory", "local"])
def test_polling_starts_from_a_known_listing_and_reports_changes_only(store_kind, tmp_path):
    store = make_store(store_kind, tmp_path)
    first = store.put("old", b"1")
    poll = PollingSource(store, initial={"old": first.etag})
    assert poll.scan() == []
    second = store.put("old", b"22")
    store.put("new", b"3")
    assert [(e.key, e.etag) for e in poll.scan()] == [("new", store.head("new").etag), ("old", second.etag)]
    assert poll.scan() == []


def test_polling_given_the_start_up_listing_lists_again_only_an_interval_later(tmp_path):
    # The orchestrator's own listing at start-up is the first pass: a second one at once would list the whole
    # store again while that listing is still being worked through.
    store = make_store("memory", tmp_path)
    first = store.put("old", b"1")
    listed = []
    real_list = store.list
    store.list = lambda *a, **k: listed.append(time.monotonic()) or real_list(*a, **k)  # type: ignore[method-assign]
    poll, got = PollingSource(store, interval_s=0.5, initial={"old": first.etag}), []
    started = time.monotonic()
    poll.start(got.append)
    try:
        store.put("new", b"2")
        wait_until(lambda: got, timeout=5)
    finally:
        poll.stop()
    assert [e.key for e in got] == ["new"] and listed[0] - started >= 0.45


def test_polling_waits_for_files_still_being_written(tmp_path):
    store = LocalDirectoryStore(tmp_path / "s")
    now = [1000.0]
    poll = PollingSource(store, settle_s=1.0, clock=lambda: now[0])
    info = store.put("growing.csv", b"partial")
    now[0] = info.modified + 0.2
    assert poll.scan() == []
    now[0] = info.modified + 1.5
    assert [e.key for e in poll.scan()] == ["growing.csv"]


# --- filesystem watch specifics --------------------------------------------------------------------------------

WATCHES = [LocalWatchSource, InotifySource]


@contextmanager
def watching(watch, root):
    """A directory watch on `root`, started; yields the source and what it reports; stopped afterwards."""
    got = Collector()
    source = watch(root)
    source.start(got)
    try:
        yield source, got
    finally:
        source.stop()


@pytest.mark.parametrize("watch", WATCHES, ids=["watchdog", "inotify"])
def test_watch_reports_a_file_written_in_pieces_once_it_is_closed(tmp_path, watch):
    store = LocalDirectoryStore(tmp_path / "s")
    with watching(watch, store.root) as (_, got):
        (store.root / "incoming").mkdir()
        with open(store.root / "incoming" / "big.csv", "wb") as fh:
            fh.write(b"header\n")
            fh.flush()
            fh.write(b"row\n" * 1000)
        final = store.head("incoming/big.csv").etag
        wait_until(lambda: "incoming/big.csv" in got.keys(), 5, "the close event")
        assert all(e.etag == final for e in got.events if e.key == "incoming/big.csv")


@pytest.mark.parametrize("watch", WATCHES, ids=["watchdog", "inotify"])
def test_watch_reports_files_of_a_directory_tree_copied_in_at_once(tmp_path, watch):
    store = LocalDirectoryStore(tmp_path / "s")
    with watching(watch, store.root) as (_, got):
        staged = tmp_path / "staged"
        (staged / "day1" / "hours").mkdir(parents=True)
        for name in ("day1/a.csv", "day1/hours/b.csv", "day1/hours/c.csv"):
            (staged / name).write_text(name)
        os.rename(staged / "day1", store.root / "day1")  # the whole tree appears in one step
        keys = {"day1/a.csv", "day1/hours/b.csv", "day1/hours/c.csv"}
        wait_until(lambda: keys <= set(got.keys()), 10, "the files of the moved-in tree")
        store.put("day1/hours/later.csv", b"x")  # and the moved-in directories are watched from then on
        wait_until(lambda: "day1/hours/later.csv" in got.keys(), 10, "a file written into the moved-in tree")


def test_inotify_reports_a_fresh_file_renamed_into_place_at_once(tmp_path):
    # a rename is atomic, so the file is complete; watchdog sees such a move from an unwatched directory as a bare
    # creation and must wait for the file to settle
    store = LocalDirectoryStore(tmp_path / "s")
    with watching(InotifySource, store.root) as (_, got):
        (store.root / "in").mkdir()
        outside = tmp_path / "fresh.csv"
        outside.write_text("complete")
        time.sleep(0.3)  # the new directory's own watch is in place
        os.rename(outside, store.root / "in" / "fresh.csv")
        wait_until(lambda: "in/fresh.csv" in got.keys(), 0.9, "the move, before the file could count as settled")


def test_inotify_does_not_watch_the_reserved_prefix(tmp_path):
    store = LocalDirectoryStore(tmp_path / "s")
    store.put(".gclo/state/status.json", b"{}")
    with watching(InotifySource, store.root) as (source, _):
        assert not [d for d in source._dirs.values() if d.startswith(".gclo")]
