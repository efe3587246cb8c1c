"""Behaviour only the local directory store has: keys are paths, so plain file tools work on it.
Backend-specific tests, marked as such by living here."""
from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from gcl_orchestrator.errors import InvalidKeyError, ObjectAlreadyExists, PermanentStorageError
from gcl_orchestrator.storage import LocalDirectoryStore


@pytest.fixture(params=["xattrs", "files"])
def local(request, tmp_path):
    """Both ways of keeping metadata: an attribute of the object's file, and a file of its own."""
    return LocalDirectoryStore(tmp_path / "bucket", xattrs=request.param == "xattrs")


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
        local.get(".gclo/local/tmp/anything")


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
    shutil.rmtree(local.root / ".gclo" / "local" / "meta" / "analysis", ignore_errors=True)  # its metadata too
    local.put("analysis/b.json", b"2", {"gcl": "y"})
    assert local.head("analysis/b.json").metadata == {"gcl": "y"}


def _create_racing(store: LocalDirectoryStore, i: int, go, results) -> None:
    go.wait()
    try:
        store.create("race", f"writer {i}".encode(), {"who": str(i)})
        results.put(("won", i))
    except ObjectAlreadyExists:
        results.put(("lost", i))


def test_racing_processes_create_exclusively_without_any_lock(local):
    import multiprocessing

    local.put("warm", b"the parent has written before forking")
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


def test_create_refuses_a_key_another_tool_wrote_meanwhile(local):
    # A `cp` or rsync knows nothing of our writers; create still never replaces what it put there
    (local.root / "out").mkdir()
    (local.root / "out" / "result.json").write_text("written by cp")
    with pytest.raises(ObjectAlreadyExists):
        local.create("out/result.json", b"ours", {"gcl": "x"})
    assert (local.root / "out" / "result.json").read_text() == "written by cp"
    assert local.head("out/result.json").metadata == {}


def test_a_losing_create_leaves_the_winners_metadata_alone(local):
    local.create("k", b"first", {"who": "first"})
    with pytest.raises(ObjectAlreadyExists):
        local.create("k", b"second", {"who": "second"})
    assert local.head("k").metadata == {"who": "first"}
    assert os.listdir(local.root / ".gclo" / "local" / "tmp") == []


def test_replacing_an_object_removes_the_old_versions_metadata(tmp_path):
    local = LocalDirectoryStore(tmp_path / "bucket", xattrs=False)
    local.put("k", b"v1", {"n": "1"})
    local.put("k", b"v2", {"n": "2"})
    metas = sorted(p.name for p in (local.root / ".gclo" / "local" / "meta").iterdir())
    assert len(metas) == 1 and metas[0].startswith("k~") and local.head("k").metadata == {"n": "2"}


def test_startup_removes_temporary_files_of_writers_that_died(local):
    tmp = local.root / ".gclo" / "local" / "tmp"
    (tmp / "w-999999999-1-0").write_bytes(b"a crashed writer's half-written output")
    (tmp / f"w-{os.getpid()}-1-0").write_bytes(b"a live writer's file")
    notes = local.startup_check()
    assert notes == ["removed 1 temporary file(s) left by writers that stopped"]
    assert os.listdir(tmp) == [f"w-{os.getpid()}-1-0"]


def test_metadata_written_by_an_earlier_release_is_still_read(tmp_path):
    local = LocalDirectoryStore(tmp_path / "bucket", xattrs=False)  # as earlier releases wrote
    local.put("old", b"x")
    st = os.stat(local.root / "old")
    from gcl_orchestrator.storage.local import file_version

    legacy = local.root / ".gclo" / "local" / "meta" / "old.json"
    for current in legacy.parent.glob("old~*.json"):
        current.unlink()  # as a store from before per-version metadata files looks
    legacy.write_text('{"version": "%s", "metadata": {"gcl": "kept"}}' % file_version(st))
    assert local.head("old").metadata == {"gcl": "kept"}


def test_fsync_round_trips_and_is_carried_by_the_uri(tmp_path):
    from gcl_orchestrator.storage import open_store

    store = open_store(str(tmp_path / "durable"), fsync=True)
    store.create("a/b", b"safe", {"gcl": "x"})
    assert store.uri.endswith("?fsync=1")
    again = open_store(store.uri)
    assert again.inner.fsync and again.head("a/b").metadata == {"gcl": "x"}


def test_metadata_is_an_attribute_of_the_file_where_the_filesystem_has_them(tmp_path):
    local = LocalDirectoryStore(tmp_path / "bucket")
    if not local._xattrs or not _attributes_work(tmp_path):
        pytest.skip("this filesystem keeps no extended attributes")
    local.create("out/a.json", b"1", {"gcl": "x"})
    local.put("out/a.json", b"22", {"gcl": "y"})  # a new version: the attribute travels with the new file
    assert not (local.root / ".gclo" / "local" / "meta").exists()  # no metadata file was written
    assert local.head("out/a.json").metadata == {"gcl": "y"} and local.get("out/a.json").info.metadata == {"gcl": "y"}
    info = local.head("out/a.json")
    assert info.digest == hashlib.md5(b"22").hexdigest()


def test_metadata_too_large_for_an_attribute_goes_to_a_file(tmp_path):
    local = LocalDirectoryStore(tmp_path / "bucket")
    big = {"gcl": '"' * 2000}  # within S3's 2 KB, but each quote is escaped: beyond ext4's 4 KB attribute
    local.put("big", b"b", big)
    assert local.head("big").metadata == big and local.get("big").info.metadata == big


def test_a_store_written_with_metadata_files_reads_the_same_with_attributes(tmp_path):
    LocalDirectoryStore(tmp_path / "bucket", xattrs=False).put("k", b"v", {"gcl": "files"})
    again = LocalDirectoryStore(tmp_path / "bucket")
    assert again.head("k").metadata == {"gcl": "files"}
    again.put("k", b"w", {"gcl": "attribute"})
    assert LocalDirectoryStore(tmp_path / "bucket", xattrs=False).head("k").metadata == {"gcl": "attribute"}


def _attributes_work(path) -> bool:
    probe = path / "xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()
