"""The journal (.gclo/journal/) on every store: what it writes and reads, compaction, a second writer."""
from __future__ import annotations

import gzip
import json

import pytest

from gcl_orchestrator.journal import JOURNAL_PREFIX, Journal, JournalConflict, load_journal


def test_what_is_recorded_is_read_back_later_records_winning(store):
    journal = Journal(store, load_journal(store).next_seq)
    journal.seen("a", "e1", "d1", {"gcl": "[]"})
    journal.seen("b", "e2", None, {})
    journal.flush()
    journal.seen("a", "e3", "d3", {"gcl-run": "2:x"})
    journal.removed("b")
    journal.seen("ignored", None, None, {"gcl": "[]"})  # no version: nothing a restart could use
    journal.flush()
    loaded = load_journal(store)
    assert set(loaded.objects) == {"a"}
    assert (loaded.objects["a"].etag, loaded.objects["a"].digest) == ("e3", "d3")
    assert loaded.objects["a"].metadata == {"gcl-run": "2:x"}
    assert loaded.next_seq == 3 and loaded.segments == 2


def test_compaction_writes_a_snapshot_and_deletes_what_it_covers(store):
    journal = Journal(store, 1, compact_every=3)
    for i in range(7):
        journal.seen(f"k{i}", f"e{i}", None, {"i": str(i)})
        journal.flush()
    keys = sorted(info.key for info in store.list(JOURNAL_PREFIX))
    assert keys == [f"{JOURNAL_PREFIX}seg/{7:012d}.jsonl.gz", f"{JOURNAL_PREFIX}snap/{6:012d}.json.gz"]
    loaded = load_journal(store)
    assert sorted(loaded.objects) == [f"k{i}" for i in range(7)]
    assert (loaded.snapshot_seq, loaded.segments, loaded.next_seq) == (6, 1, 8)


def test_a_second_writer_is_refused_not_interleaved(store):
    first = Journal(store, 1)
    second = Journal(store, 1)  # started from the same journal: it would write the same segment numbers
    first.seen("a", "e1", None, {})
    first.flush()
    second.seen("b", "e2", None, {})
    with pytest.raises(JournalConflict, match="segment 1 .*another orchestrator"):
        second.flush()
    assert second.pending() == 1  # nothing lost: still buffered
    assert set(load_journal(store).objects) == {"a"}


def test_a_segment_whose_create_was_retried_after_success_is_our_own(store):
    journal = Journal(store, 1)
    real_create = store.create

    def create_twice(key, body, metadata=None):  # the answer to the first create was lost; the retry finds it
        real_create(key, body, metadata)
        return real_create(key, body, metadata)

    store.create = create_twice
    journal.seen("a", "e1", None, {})
    journal.flush()
    store.create = real_create
    assert journal.next_seq == 2 and set(load_journal(store).objects) == {"a"}


def test_a_damaged_journal_is_ignored_with_a_warning_and_its_numbers_not_reused(store, caplog):
    store.put(f"{JOURNAL_PREFIX}seg/{4:012d}.jsonl.gz", b"not gzip")
    loaded = load_journal(store)
    assert loaded.objects == {} and loaded.next_seq == 5
    assert "cannot be read" in caplog.text and "reading the objects instead" in caplog.text


def test_a_journal_of_another_format_is_not_misread(store):
    body = gzip.compress(json.dumps({"journal": 99, "seq": 1}).encode() + b"\n")
    store.put(f"{JOURNAL_PREFIX}seg/{1:012d}.jsonl.gz", body)
    assert load_journal(store).objects == {}


def test_metadata_too_large_for_s3_is_not_journaled(store):
    journal = Journal(store, 1)
    journal.seen("huge", "e1", None, {"gcl": "x" * 100_000})
    journal.seen("fine", "e2", None, {"gcl": "[]"})
    journal.flush()
    assert set(load_journal(store).objects) == {"fine"}


def test_a_large_snapshot_is_rewritten_only_once_enough_has_changed(store):
    journal = Journal(store, 1, compact_every=2, snapshot_objects=10)  # the newest snapshot holds 10 objects
    for i in range(4):
        journal.seen(f"k{i}", "e", None, {})
        journal.flush()
    assert journal.snapshot_seq == 0  # 4 records: less than half of 10
    journal.seen("k4", "e", None, {})
    journal.flush()
    assert journal.snapshot_seq == 5 and journal.snapshot_objects == 5


def test_a_segment_damaged_behind_the_writers_back_restarts_the_journal_instead_of_stopping_it(store, caplog):
    journal = Journal(store, 1, compact_every=2)
    journal.seen("a", "e1", None, {})
    journal.flush()
    store.put(f"{JOURNAL_PREFIX}seg/{1:012d}.jsonl.gz", b"damaged")
    journal.seen("b", "e2", None, {})
    journal.flush()  # compacts: segment 1 cannot be read
    assert "starting it afresh" in caplog.text
    assert load_journal(store).objects == {}  # knows nothing, so a restart reads the objects themselves


def test_a_segment_damaged_inside_its_compressed_body_is_ignored_not_fatal(store, caplog):
    journal = Journal(store, 1)
    for i in range(50):
        journal.seen(f"key-{i}", f"etag-{i}", None, {"gcl": "[]" * i})
    journal.flush()
    key = f"{JOURNAL_PREFIX}seg/{1:012d}.jsonl.gz"
    body = bytearray(store.get(key).body)
    body[len(body) // 2] ^= 0xFF  # a flipped byte in the deflate stream (zlib.error, not BadGzipFile)
    store.put(key, bytes(body))
    loaded = load_journal(store)
    assert loaded.objects == {} and loaded.next_seq == 2 and "cannot be read" in caplog.text


def test_records_that_are_not_objects_are_damage(store):
    body = gzip.compress(json.dumps({"journal": 1, "seq": 1}).encode() + b"\n[1, 2]\n")
    store.put(f"{JOURNAL_PREFIX}seg/{1:012d}.jsonl.gz", body)
    assert load_journal(store).objects == {}


def test_a_trickle_of_records_is_still_compacted_after_a_bounded_number_of_segments(store, monkeypatch):
    from gcl_orchestrator.journal import log as journal_log

    monkeypatch.setattr(journal_log, "MAX_SEGMENTS", 5)
    journal = Journal(store, 1, compact_every=2, snapshot_objects=1_000_000)
    for i in range(5):
        journal.seen(f"k{i}", "e", None, {})
        journal.flush()
    assert journal.snapshot_seq == 5
