"""The local-directory ObjectStore, the embedded default: an object's key is its path under the root, so
`cp data.csv ROOT/incoming/` drops a file. Metadata lives under `ROOT/.gclo/meta/`, never beside user files.
"""
from __future__ import annotations

import errno
import fcntl
import itertools
import json
import os
import stat
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from ..errors import InvalidKeyError, ObjectAlreadyExists, ObjectNotFound, PermanentStorageError, TransientStorageError
from ..interfaces import ObjectInfo, ObjectStore, StoredObject
from ..model import RESERVED_PREFIX, check_key, normalize_metadata

# The store's own files: invisible in listings and not addressable as keys.
INTERNAL_DIR = RESERVED_PREFIX + "local/"
META_DIR = INTERNAL_DIR + "meta/"
TMP_DIR = INTERNAL_DIR + "tmp/"
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, errno.EIO}


def file_version(st: os.stat_result) -> str:
    """The etag of a local object. It changes whenever the file is replaced or rewritten in place, which is
    also how stale metadata (left by a `cp` over a file we wrote) is recognised."""
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"


class LocalDirectoryStore(ObjectStore):
    def __init__(self, root: str | os.PathLike[str], create: bool = True):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            if not create:
                raise PermanentStorageError(f"store directory {self.root} does not exist")
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise PermanentStorageError(f"cannot create store directory {self.root}: {exc.strerror}") from None
        (self.root / TMP_DIR).mkdir(parents=True, exist_ok=True)
        self._lock_path = self.root / INTERNAL_DIR / "write.lock"
        self._root_prefix = str(self.root) + os.sep
        self._thread_lock = threading.Lock()
        self._lock_file: tuple[int, int] | None = None  # (pid that opened it, descriptor): see _locked
        self._tmp_dir = str(self.root / TMP_DIR)
        self._names = itertools.count()

    @property
    def uri(self) -> str:
        return f"file://{self.root}"

    # --- paths -------------------------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        check_key(key, allow_reserved=True)
        if key.startswith(INTERNAL_DIR):
            raise InvalidKeyError(key, f"{INTERNAL_DIR!r} holds the local store's own files")
        path = self.root / key
        # A symlink inside the store must not lead reads or writes outside it. The root is resolved already, so
        # only the key's own components can be links: the whole path is resolved only when one of them is.
        cur = self._root_prefix
        for part in key.split("/"):
            cur += part
            try:
                is_link = stat.S_ISLNK(os.lstat(cur).st_mode)
            except (FileNotFoundError, NotADirectoryError):
                break  # nothing further down exists, so nothing further down is a link
            if is_link:
                if not os.path.realpath(path).startswith(self._root_prefix):
                    raise InvalidKeyError(key, "resolves outside the store directory (through a symbolic link)")
                break
            cur += "/"
        return path

    def _meta_path(self, key: str) -> Path:
        return self.root / META_DIR / (key + ".json")

    # --- reads -------------------------------------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        with _os_errors(key):
            st = _stat_file(path, key, self.uri)
            return self._info(key, st, with_metadata=True)

    def get(self, key: str) -> StoredObject:
        path = self._path(key)
        with _os_errors(key):
            try:
                with open(path, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    if not _is_file(st):
                        raise ObjectNotFound(key, self.uri)
                    body = fh.read()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise ObjectNotFound(key, self.uri) from None
            return StoredObject(self._info(key, st, with_metadata=True), body)

    def _info(self, key: str, st: os.stat_result, with_metadata: bool) -> ObjectInfo:
        version = file_version(st)
        meta: dict[str, str] | None = None
        if with_metadata:
            meta = {}
            try:
                with open(self._meta_path(key), "rb") as fh:
                    record = json.loads(fh.read())
                if record.get("version") == version:
                    meta = dict(record.get("metadata") or {})
            except (FileNotFoundError, NotADirectoryError, ValueError):
                pass
        return ObjectInfo(key, version, st.st_size, st.st_mtime, meta)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Walks only the directories that can hold keys with `prefix`; skips our temp files."""
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        found: list[ObjectInfo] = []
        stack = [(start, base + "/" if base else "")]
        while stack:
            directory, key_prefix = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise _translate(exc, key_prefix or "/") from None
            for entry in entries:
                key = key_prefix + entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if key + "/" == INTERNAL_DIR:
                            continue
                        if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                            stack.append((Path(entry.path), key + "/"))
                    elif entry.is_file(follow_symlinks=False) and key.startswith(prefix):
                        found.append(self._info(key, entry.stat(follow_symlinks=False), with_metadata=False))
                except FileNotFoundError:
                    continue  # removed while we walked
        found.sort(key=lambda info: info.key)
        return iter(found)

    # --- writes ------------------------------------------------------------------------------------------------

    def put(self, key: str, body: bytes, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        return self._write(key, body, metadata, exclusive=False)

    def create(self, key: str, body: bytes, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        return self._write(key, body, metadata, exclusive=True)

    def _write(self, key: str, body: bytes, metadata: Mapping[str, str] | None, exclusive: bool) -> ObjectInfo:
        path = self._path(key)
        meta = normalize_metadata(metadata)
        with _os_errors(key):
            if not _check_parents(self.root, key):
                path.parent.mkdir(parents=True, exist_ok=True)
            tmp: str | None = self._temp_file(body)
            meta_tmp: str | None = None
            try:
                st = os.stat(tmp)
                version = file_version(st)
                if meta:  # without metadata none is written: an older metadata file no longer matches the version
                    meta_tmp = self._temp_file(json.dumps({"version": version, "metadata": meta}).encode())
                # The object's rename is the commit point; its metadata goes first so that it is never missing.
                # The lock makes check-and-renames one step, so racing writers never mix object and metadata.
                with self._locked():
                    if exclusive and path.exists():
                        raise ObjectAlreadyExists(key, self.uri)
                    if meta_tmp is not None:
                        meta_path = self._meta_path(key)
                        meta_path.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(meta_tmp, meta_path)
                        meta_tmp = None
                    os.replace(tmp, path)
                    tmp = None
            finally:
                for leftover in (tmp, meta_tmp):
                    if leftover is not None:
                        _unlink(leftover)
            return ObjectInfo(key, version, st.st_size, st.st_mtime, meta)

    def _temp_file(self, body: bytes) -> str:
        # Unique by process, thread and a counter; O_EXCL still refuses to reuse a name left by a crash.
        name = f"{self._tmp_dir}/w-{os.getpid()}-{threading.get_ident():x}-{next(self._names)}"
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            _unlink(name)
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
        except BaseException:
            _unlink(name)
            raise
        return name

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time across threads (the thread lock) and processes (flock on a lock file). The lock
        file stays open for the store's life, one open per write less; a forked child opens its own, because an
        inherited descriptor shares its lock with the parent and would exclude nothing between them."""
        with self._thread_lock:
            pid = os.getpid()
            if self._lock_file is not None and self._lock_file[0] == pid and os.fstat(self._lock_file[1]).st_nlink == 0:
                os.close(self._lock_file[1])  # the lock file was removed (by hand): others lock a new one now
                self._lock_file = None
            if self._lock_file is None or self._lock_file[0] != pid:
                self._lock_file = (pid, os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644))
            fd = self._lock_file[1]
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._thread_lock:
            if self._lock_file is not None and self._lock_file[0] == os.getpid():
                os.close(self._lock_file[1])
            self._lock_file = None

    def delete(self, key: str) -> None:
        path = self._path(key)
        with _os_errors(key):
            _unlink(path)
            _unlink(self._meta_path(key))


def _is_file(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)


def _stat_file(path: Path, key: str, uri: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise ObjectNotFound(key, uri) from None
    if not _is_file(st):
        raise ObjectNotFound(key, uri)
    return st


def _check_parents(root: Path, key: str) -> bool:
    """A key whose parent 'directory' is an object cannot be stored in a directory tree: say so plainly.
    True when the parent directory exists already."""
    parts = key.split("/")[:-1]
    try:
        if not parts or stat.S_ISDIR(os.stat(root.joinpath(*parts)).st_mode):
            return True  # the parent is a directory, so every ancestor is one too: one stat in the common case
    except OSError:
        pass
    cur = root
    for part in parts:
        cur = cur / part
        if cur.exists() and not cur.is_dir():
            raise PermanentStorageError(
                f"cannot store key {key!r}: {'/'.join(parts[:parts.index(part) + 1])!r} is an object, and a local "
                "directory store cannot hold both a key and keys below it")
    return False


def _unlink(path: str | Path) -> None:
    try:
        os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):
        pass


def _translate(exc: OSError, key: str) -> Exception:
    if exc.errno in _TRANSIENT_ERRNOS:
        return TransientStorageError(f"local store: {exc.strerror} for key {key!r}")
    return PermanentStorageError(f"local store: {exc.strerror} for key {key!r}")


@contextmanager
def _os_errors(key: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _translate(exc, key) from None
