"""Behaviour only the local directory store has: keys are paths, so plain file tools work on it.
Backend-specific tests, marked as such by living here."""
from __future__ import annotations

import os
import shutil

import pytest

from gcl_orchestrator.errors import InvalidKeyError, ObjectAlreadyExists, PermanentStorageError
from gcl_orchestrator.storage import LocalDirectoryStore


@pytest.fixture
def local(tmp_path):
    return LocalDirectoryStore(tmp_path / "bucket")


def test_a_key_is_its_path_so_cp_drops_an_object(local, tmp_path):
    src = tmp_path / "data.csv"
    src.write_text("a,b\n")
    (local.root / "incoming").mkdir()
    shutil.copy(src, local.root / "incoming" / "data.csv")
    assert local.get("incoming/data.csv").body == b"a,b\n"
    assert local.head("incoming/data.csv").metadata == {}
    local.put("out/x.txt", b"hi")
    assert (local.root / "out" / "x.txt").read_bytes() == b"hi"


def test_metadata_lives_out_of_sight_and_never_collides_with_user_keys(local):
    local.put("report", b"r", {"gcl": "a"})
    local.put("report.json", b"j", {"gcl": "b"})
    assert [i.key for i in local.list()] == ["report", "report.json"]
    assert local.head("report").metadata == {"gcl": "a"} and local.head("report.json").metadata == {"gcl": "b"}


def test_overwriting_a_file_by_hand_drops_the_old_metadata(local):
    local.put("in/a.csv", b"old", {"gcl": "stale"})
    (local.root / "in" / "a.csv").write_bytes(b"new content by hand")
    assert local.head("in/a.csv").metadata == {}


def test_no_temporary_file_is_left_or_visible(local):
    for i in range(20):
        local.put(f"k{i}", b"x" * i, {"n": str(i)})
    assert len(list(local.list())) == 20
    assert os.listdir(local.root / ".gclo" / "local" / "tmp") == []


def test_internal_files_are_not_addressable(local):
    with pytest.raises(InvalidKeyError, match="local store's own files"):
        local.get(".gclo/local/write.lock")


def test_a_key_below_an_existing_object_is_refused_plainly(local):
    local.put("a", b"file")
    with pytest.raises(PermanentStorageError, match="'a' is an object"):
        local.put("a/b", b"below")


def test_symlinks_out_of_the_store_are_not_listed(local, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    os.symlink(outside, local.root / "link.txt")
    os.symlink(tmp_path, local.root / "linkdir")
    assert [i.key for i in local.list()] == []
    for key in ("link.txt", "linkdir/secret.txt"):
        with pytest.raises(InvalidKeyError, match="outside the store"):
            local.get(key)
    with pytest.raises(InvalidKeyError, match="outside the store"):
        local.put("linkdir/planted.txt", b"x")
    assert not (tmp_path / "planted.txt").exists()


def test_a_directory_removed_by_hand_is_made_again(local):
    local.put("analysis/a.json", b"1", {"gcl": "x"})
    shutil.rmtree(local.root / "analysis")
    shutil.rmtree(local.root / ".gclo" / "local" / "meta" / "analysis")
    local.put("analysis/b.json", b"2", {"gcl": "y"})
    assert local.head("analysis/b.json").metadata == {"gcl": "y"}


def _create_racing(store: LocalDirectoryStore, i: int, go, results) -> None:
    go.wait()
    try:
        store.create("race", f"writer {i}".encode(), {"who": str(i)})
        results.put(("won", i))
    except ObjectAlreadyExists:
        results.put(("lost", i))


def test_processes_forked_from_a_writing_store_still_create_exclusively(local):
    # The write lock's file stays open; a forked child must lock its own, not share the parent's.
    import multiprocessing

    local.put("warm", b"the parent has written, so it holds an open lock file")
    ctx = multiprocessing.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    children = [ctx.Process(target=_create_racing, args=(local, i, go, results)) for i in range(6)]
    for child in children:
        child.start()
    go.set()
    for child in children:
        child.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in children)
    winners = [i for what, i in outcomes if what == "won"]
    assert len(winners) == 1 and len(outcomes) == 6
    got = local.get("race")
    assert got.body == f"writer {winners[0]}".encode() and got.info.metadata == {"who": str(winners[0])}


def test_writes_go_on_after_the_lock_file_is_removed_by_hand(local):
    local.put("a", b"1")
    (local.root / ".gclo" / "local" / "write.lock").unlink()
    local.create("b", b"2", {"m": "v"})
    assert local.head("b").metadata == {"m": "v"} and (local.root / ".gclo" / "local" / "write.lock").exists()
