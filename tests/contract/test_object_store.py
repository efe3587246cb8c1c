"""The ObjectStore contract, run against every implementation (see conftest.STORES)."""
from __future__ import annotations

import threading

import pytest

from gcl_orchestrator.errors import InvalidKeyError, ObjectAlreadyExists, ObjectChanged, ObjectNotFound
from gcl_orchestrator.storage import open_store


def test_put_then_get_and_head_round_trip_body_and_metadata(store):
    info = store.put("in/a.csv", b"x,y\n1,2\n", {"GCL": "[]", "owner": "me"})
    got = store.get("in/a.csv")
    assert got.body == b"x,y\n1,2\n"
    assert got.info.metadata == {"gcl": "[]", "owner": "me"}  # names come back lower-cased
    head = store.head("in/a.csv")
    assert head.etag == info.etag == got.info.etag and head.size == 8 and head.metadata == got.info.metadata


def test_empty_and_large_bodies(store):
    store.put("empty", b"")
    assert store.get("empty").body == b"" and store.head("empty").size == 0
    big = bytes(range(256)) * 8192
    store.put("big/blob.bin", big)
    assert store.get("big/blob.bin").body == big


def test_missing_objects_raise_object_not_found_naming_the_key(store):
    for call in (store.get, store.head):
        with pytest.raises(ObjectNotFound, match="'no/such/key'"):
            call("no/such/key")


def test_exists_says_whether_a_key_is_there(store):
    assert not store.exists("k")
    store.create("k", b"1")
    assert store.exists("k") and not store.exists("k/below") and not store.exists("other")
    store.delete("k")
    assert not store.exists("k")


def test_put_replaces_and_changes_the_etag(store):
    first = store.put("k", b"one", {"a": "1"})
    second = store.put("k", b"two!")
    assert first.etag != second.etag
    assert store.get("k").body == b"two!" and store.head("k").metadata == {}


def test_create_writes_only_when_absent(store):
    store.create("out/result.json", b"first", {"gcl": "x"})
    with pytest.raises(ObjectAlreadyExists, match="out/result.json"):
        store.create("out/result.json", b"second")
    got = store.get("out/result.json")
    assert got.body == b"first" and got.info.metadata == {"gcl": "x"}


def test_racing_creates_have_exactly_one_winner(store):
    winners, losers = [], []
    barrier = threading.Barrier(8)

    def writer(i):
        barrier.wait()
        try:
            store.create("race", f"writer {i}".encode(), {"who": str(i)})
            winners.append(i)
        except ObjectAlreadyExists:
            losers.append(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 7
    got = store.get("race")
    assert got.body == f"writer {winners[0]}".encode() and got.info.metadata == {"who": str(winners[0])}


def test_replace_swaps_only_the_version_it_expects(store):
    first = store.put("doc", b"v1", {"gcl": "one"})
    second = store.replace("doc", b"v2", {"gcl": "two"}, expected_etag=first.etag)
    assert second.etag != first.etag
    got = store.get("doc")
    assert got.body == b"v2" and got.info.metadata == {"gcl": "two"} and got.info.etag == second.etag
    # a late writer that read v1 cannot replace v2
    with pytest.raises(ObjectChanged, match="doc"):
        store.replace("doc", b"late", {"gcl": "late"}, expected_etag=first.etag)
    assert store.get("doc").body == b"v2"
    with pytest.raises(ObjectChanged):
        store.replace("never-written", b"x", expected_etag=first.etag)
    assert not store.exists("never-written")


def test_racing_replaces_of_one_version_have_exactly_one_winner(store):
    base = store.put("contested", b"base")
    winners, losers = [], []
    barrier = threading.Barrier(6)

    def writer(i):
        barrier.wait()
        try:
            store.replace("contested", f"writer {i}".encode(), {"who": str(i)}, expected_etag=base.etag)
            winners.append(i)
        except ObjectChanged:
            losers.append(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 5
    assert store.get("contested").info.metadata == {"who": str(winners[0])}


def test_the_same_bytes_have_the_same_digest(store):
    a = store.put("a", b"same bytes")
    store.put("b", b"same bytes", {"gcl": "other metadata"})
    store.put("c", b"other bytes")
    digests = {k: store.head(k).digest for k in ("a", "b", "c")}
    assert digests["a"] == digests["b"] != digests["c"] and digests["a"]
    assert a.digest in (None, digests["a"])


def test_list_is_ordered_filtered_by_prefix_and_carries_no_metadata(store):
    for key in ("b/2", "a/1", "a/10", "ab", "a/sub/3", "c"):
        store.put(key, key.encode(), {"m": "v"})
    assert [i.key for i in store.list()] == ["a/1", "a/10", "a/sub/3", "ab", "b/2", "c"]
    assert [i.key for i in store.list("a/")] == ["a/1", "a/10", "a/sub/3"]
    assert [i.key for i in store.list("a")] == ["a/1", "a/10", "a/sub/3", "ab"]
    assert [i.key for i in store.list("a/1")] == ["a/1", "a/10"]
    assert list(store.list("zzz")) == []
    infos = list(store.list())
    assert all(i.metadata is None for i in infos)
    assert {i.key: i.etag for i in infos} == {k: store.head(k).etag for k in (i.key for i in infos)}


@pytest.mark.parametrize("key", ["with space/a b.txt", "plus+sign", "percent%20not-decoded", "tilde~(paren)",
                                 "unicode/naïve-東京", "query?and#hash", "semi;colon=eq&amp", "trailing.dot."])
def test_keys_with_characters_urls_treat_specially_round_trip(store, key):
    written = store.create(key, b"body", {"m": "v"})
    assert store.get(key).body == b"body" and store.head(key).metadata == {"m": "v"}
    assert store.head(key).etag == written.etag
    assert [i.key for i in store.list()] == [key]


def test_reserved_prefix_is_an_ordinary_namespace_at_this_level(store):
    store.put(".gclo/state/status.json", b"{}")
    store.put("data", b"d")
    assert [i.key for i in store.list(".gclo/")] == [".gclo/state/status.json"]
    assert ".gclo/state/status.json" in [i.key for i in store.list()]


def test_a_listing_without_reserved_keys_leaves_out_only_gclo(store):
    keys = ["-first", ".gclo/journal/seg/000000000001.jsonl.gz", ".gclo/state/status.json", ".gclo-not-reserved",
            ".gclo0", ".gclp", "a/1", "a/.gclo/not-reserved", "z"]
    for key in keys:
        store.put(key, b"x")
    mine = [k for k in keys if not k.startswith(".gclo/")]
    assert [i.key for i in store.list(reserved=False)] == sorted(mine)
    assert [i.key for i in store.list("a/", reserved=False)] == ["a/.gclo/not-reserved", "a/1"]
    assert [i.key for i in store.list(".gclo/", reserved=False)] == []
    assert [i.key for i in store.list()] == sorted(keys)


def test_delete_is_idempotent(store):
    store.put("gone", b"x", {"a": "b"})
    store.delete("gone")
    store.delete("gone")
    with pytest.raises(ObjectNotFound):
        store.head("gone")
    assert [i.key for i in store.list()] == []


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../escape", "a/../../b", "a//b", "a/./b", "tab\there",
                                 "nul\x00", "trailing/", "back\\slash", "x" * 1100])
def test_keys_that_could_escape_or_confuse_are_rejected_before_any_io(store, key):
    for call in (lambda: store.put(key, b"x"), lambda: store.create(key, b"x"), lambda: store.get(key),
                 lambda: store.head(key), lambda: store.delete(key)):
        with pytest.raises(InvalidKeyError):
            call()
    assert list(store.list()) == []


@pytest.mark.parametrize("metadata", [{"gcl": "line\nbreak"}, {"gcl": "naïve"}, {"bad name": "v"},
                                      {"gcl": "x" * 2046}])
def test_metadata_that_cannot_travel_in_headers_is_refused_and_nothing_is_written(store, metadata):
    with pytest.raises(ValueError):
        store.put("k", b"x", metadata)
    assert list(store.list()) == []


def test_the_uri_reopens_the_same_store(store):
    store.put("shared", b"yes")
    again = open_store(store.uri)
    assert again.get("shared").body == b"yes"


def test_the_startup_check_confirms_create_if_absent_and_leaves_nothing_behind(store):
    assert isinstance(store.startup_check(), list)
    assert list(store.list(".gclo/probe/")) == []


def test_the_startup_check_refuses_a_store_that_overwrites_on_create(store):
    from gcl_orchestrator.errors import PermanentStorageError

    class Overwriting(type(store)):  # a server that ignores If-None-Match: * behaves like this
        def create(self, key, body, metadata=None):
            return self.put(key, body, metadata)

    careless = object.__new__(Overwriting)
    careless.__dict__.update(store.__dict__)
    with pytest.raises(PermanentStorageError, match="does not honour create-if-absent"):
        careless.startup_check()
    assert careless.startup_check(verify_create=False) is not None
