"""The local-directory ObjectStore, the embedded default: an object's key is its path under the root, so
`cp data.csv ROOT/incoming/` drops a file. An object's metadata (with the MD5 of its bytes and the version it
belongs to) is an extended attribute of its file, `user.gclo.meta`, where the filesystem has them; otherwise, and
for metadata too large for one, a file under `ROOT/.gclo/local/meta/`, one per version of an object, never beside
user files. Either way it belongs to one version: a file rewritten by another tool (`cp` over it) has none.

Writes are atomic without any lock: the body goes to a temporary file first, with its metadata (the attribute,
or a file named by the temporary file's version), then `put` renames the file into place and `create`
hard-links it there, which fails if the key exists (whoever links first wins, and a tool that ignores our locks,
`cp` or rsync, cannot make two `create`s both succeed). With `fsync`, the file and its directory are flushed to
disk before a write returns.

Why an attribute: creating a file is most of what a write costs here, and the attribute saves one file per
object (a metadata file is an inode of its own, and the filesystem's inode allocation dominated the workers'
time at scale).
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import itertools
import json
import os
import stat
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping
from urllib.parse import parse_qs

from ..errors import (
    InvalidKeyError,
    ObjectAlreadyExists,
    ObjectChanged,
    ObjectNotFound,
    PermanentStorageError,
    TransientStorageError,
)
from ..interfaces import ObjectInfo, ObjectStore, StoredObject
from ..model import RESERVED_PREFIX, check_key, normalize_metadata

# The store's own files: invisible in listings and not addressable as keys.
INTERNAL_DIR = RESERVED_PREFIX + "local/"
META_DIR = INTERNAL_DIR + "meta/"
TMP_DIR = INTERNAL_DIR + "tmp/"
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, errno.EIO}
XATTR = "user.gclo.meta"
_NO_XATTRS = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES}  # the filesystem keeps none for us
_NO_ATTRIBUTE = {errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES}


def file_version(st: os.stat_result) -> str:
    """The etag of a local object. It changes whenever the file is replaced or rewritten in place, which is
    also how stale metadata (left by a `cp` over a file we wrote) is recognised."""
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"


STALE_TEMP_S = 3600.0  # a temporary file this old is a crashed writer's, whoever wrote it
STALE_LOCK_S = 30.0  # a replace lock this old is a crashed writer's
LOCK_DIR = INTERNAL_DIR + "lock/"


class LocalDirectoryStore(ObjectStore):
    etag_is_digest = False  # an etag here is a stamp of the file (inode, size, time); the digest is kept apart

    def __init__(self, root: str | os.PathLike[str], create: bool = True, fsync: bool = False,
                 xattrs: bool = True):
        """`xattrs=False` keeps every object's metadata in a file (as on a filesystem without extended
        attributes, which is also found out at the first write); both ways are read whichever is used."""
        self.root = Path(root).expanduser().resolve()
        self.fsync = fsync
        self._xattrs = xattrs and hasattr(os, "setxattr")
        if not self.root.is_dir():
            if not create:
                raise PermanentStorageError(f"store directory {self.root} does not exist")
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise PermanentStorageError(f"cannot create store directory {self.root}: {exc.strerror}") from None
        (self.root / TMP_DIR).mkdir(parents=True, exist_ok=True)
        self._root_prefix = str(self.root) + os.sep
        self._tmp_dir = str(self.root / TMP_DIR)
        self._meta_prefix = self._root_prefix + META_DIR  # paths are built as strings: pathlib costs more than
        # the system calls on a read, and a join reads a hundred thousand objects
        self._names = itertools.count()

    @classmethod
    def from_uri(cls, uri: str, create: bool = True) -> "LocalDirectoryStore":
        """`file://DIR[?fsync=1]`."""
        path, _, query = uri[len("file://"):].partition("?")
        options = parse_qs(query)
        return cls(path, create=create, fsync=options.get("fsync", ["0"])[-1] in ("1", "true", "yes"))

    @property
    def uri(self) -> str:
        return f"file://{self.root}" + ("?fsync=1" if self.fsync else "")

    # --- paths -------------------------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        check_key(key, allow_reserved=True)
        if key.startswith(INTERNAL_DIR):
            raise InvalidKeyError(key, f"{INTERNAL_DIR!r} holds the local store's own files")
        path = self._root_prefix + key
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

    def _meta_path(self, key: str, version: str) -> str:
        return f"{self._meta_prefix}{key}~{version}.json"

    def _legacy_meta_path(self, key: str) -> str:
        """Where stores written by earlier releases kept an object's metadata (with its version inside)."""
        return self._meta_prefix + key + ".json"

    # --- reads -------------------------------------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        with _os_errors(key):
            st = _stat_file(path, key, self.uri)
            info = self._info(key, st, with_metadata=True)
            if info.digest is None:  # a file written by another tool: its digest is read once and kept
                digest = _file_md5(path)
                if file_version(os.stat(path)) == info.etag:
                    self._keep_digest(key, info, digest)
                info = dataclasses.replace(info, digest=digest)
            return info

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
            info = self._info(key, st, with_metadata=True)
            if info.digest is None:
                info = dataclasses.replace(info, digest=hashlib.md5(body).hexdigest())
            return StoredObject(info, body)

    def _info(self, key: str, st: os.stat_result, with_metadata: bool) -> ObjectInfo:
        version = file_version(st)
        meta: dict[str, str] | None = None
        digest = None
        if with_metadata:
            meta = {}
            record = _read_xattr(self._root_prefix + key)
            if isinstance(record, dict) and record.get("version") == version:
                return ObjectInfo(key, version, st.st_size, st.st_mtime, dict(record.get("metadata") or {}),
                                  record.get("md5"))
            for path in (self._meta_path(key, version), self._legacy_meta_path(key)):
                try:
                    with open(path, "rb") as fh:
                        record = json.loads(fh.read())
                except (FileNotFoundError, NotADirectoryError, ValueError):
                    continue
                if isinstance(record, dict) and record.get("version") == version:
                    meta = dict(record.get("metadata") or {})
                    digest = record.get("md5")
                    break
        return ObjectInfo(key, version, st.st_size, st.st_mtime, meta, digest)

    def _keep_digest(self, key: str, info: ObjectInfo, digest: str) -> None:
        try:
            self._write_meta(self._meta_path(key, info.etag), {"version": info.etag, "metadata": dict(
                info.metadata or {}), "md5": digest})
        except OSError:
            pass  # only a cache: the digest is read again next time

    def list(self, prefix: str = "", *, reserved: bool = True) -> Iterator[ObjectInfo]:
        """Walks only the directories that can hold keys with `prefix`; skips our temp files, and with
        `reserved=False` the whole of `.gclo/`."""
        if not reserved and prefix.startswith(RESERVED_PREFIX):
            return iter(())
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
                        if key + "/" == INTERNAL_DIR or (not reserved and key + "/" == RESERVED_PREFIX):
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

    def replace(self, key: str, body: bytes, metadata: Mapping[str, str] | None = None, *,
                expected_etag: str) -> ObjectInfo:
        return self._write(key, body, metadata, exclusive=False, expected=expected_etag)

    def _write(self, key: str, body: bytes, metadata: Mapping[str, str] | None, exclusive: bool,
               expected: str | None = None) -> ObjectInfo:
        path = self._path(key)
        meta = normalize_metadata(metadata)
        digest = hashlib.md5(body).hexdigest()
        with _os_errors(key):
            if not _check_parents(self._root_prefix, key):
                os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp, st, in_xattr = self._temp_file(body, meta, digest)
            meta_path: str | None = None
            try:
                version = file_version(st)
                if not in_xattr:
                    meta_path = self._meta_path(key, version)
                    self._write_meta(meta_path, {"version": version, "metadata": meta, "md5": digest})
                old = None if exclusive else _version_or_none(path)
                if exclusive:
                    try:
                        os.link(tmp, path)  # the commit point: fails if the key exists
                    except FileExistsError:
                        raise ObjectAlreadyExists(key, self.uri) from None
                elif expected is not None:
                    with self._key_lock(key):  # compare and swap: the check and the rename as one step
                        old = _version_or_none(path)
                        if old != expected:
                            raise ObjectChanged(key, expected, self.uri)
                        os.replace(tmp, path)  # the commit point
                        tmp = None
                else:
                    os.replace(tmp, path)  # the commit point
                    tmp = None
                meta_path = None  # committed: it belongs to the object now
                if self.fsync:
                    _fsync_directory(os.path.dirname(path))
                if old is not None and old != version:
                    _unlink(self._meta_path(key, old))  # the replaced version's metadata
            finally:
                for leftover in (tmp, meta_path):
                    if leftover is not None:
                        _unlink(leftover)
            return ObjectInfo(key, version, st.st_size, st.st_mtime, meta, digest)

    @contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        """One replacing writer per key at a time, across processes: a lock file made with the store's own
        create-if-absent (O_EXCL). A lock whose holder died, or that is older than STALE_LOCK_S, is broken."""
        path = self.root / LOCK_DIR / (hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest() + ".lock")
        deadline = time.monotonic() + STALE_LOCK_S
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                continue
            except FileExistsError:
                if self._stale_lock(path) or time.monotonic() > deadline:
                    _unlink(path)
                else:
                    time.sleep(0.002)
                continue
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)
            break
        try:
            yield
        finally:
            _unlink(path)

    @staticmethod
    def _stale_lock(path: Path) -> bool:
        try:
            holder = path.read_text()
            age = time.time() - path.stat().st_mtime
        except (FileNotFoundError, OSError):
            return False
        return age > STALE_LOCK_S or (holder.isdigit() and not _alive(int(holder)))

    def _write_meta(self, path: str, record: dict) -> None:
        data = json.dumps(record).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if self.fsync:
                fh.flush()
                os.fsync(fh.fileno())
        if self.fsync:
            _fsync_directory(os.path.dirname(path))

    def _temp_file(self, body: bytes, meta: dict[str, str], digest: str) -> tuple[str, os.stat_result, bool]:
        """The body in a new temporary file, with the metadata as its attribute where it can be: (its name, its
        stat, whether the attribute holds the metadata)."""
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
                fh.flush()
                st = os.fstat(fd)  # the version: setting an attribute changes neither the size nor the time
                in_xattr = self._xattrs and self._set_xattr(fd, {"version": file_version(st), "metadata": meta,
                                                                 "md5": digest})
                if self.fsync:
                    os.fsync(fd)
        except BaseException:
            _unlink(name)
            raise
        return name, st, in_xattr

    def _set_xattr(self, fd: int, record: dict) -> bool:
        try:
            os.setxattr(fd, XATTR, json.dumps(record, separators=(",", ":")).encode())
            return True
        except OSError as exc:
            if exc.errno in _NO_XATTRS:
                self._xattrs = False  # this filesystem keeps none: metadata files from now on
            return False  # too large for one (ENOSPC, E2BIG): a metadata file for this one

    def startup_check(self, verify_create: bool = True) -> list[str]:
        """Temporary files left by writers that died are removed (a file whose writing process is gone, or
        that is older than an hour); then the base check of create-if-absent."""
        removed = 0
        now = time.time()
        try:
            entries = list(os.scandir(self._tmp_dir))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            parts = entry.name.split("-")
            pid = int(parts[1]) if len(parts) > 2 and parts[0] == "w" and parts[1].isdigit() else None
            try:
                old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_S
            except FileNotFoundError:
                continue
            if old or pid is None or not _alive(pid):
                _unlink(entry.path)
                removed += 1
        notes = [f"removed {removed} temporary file(s) left by writers that stopped"] if removed else []
        return notes + super().startup_check(verify_create)

    def close(self) -> None:
        pass

    def delete(self, key: str) -> None:
        path = self._path(key)
        with _os_errors(key):
            version = _version_or_none(path)
            _unlink(path)
            if version is not None:
                _unlink(self._meta_path(key, version))
            _unlink(self._legacy_meta_path(key))


def _read_xattr(path: str) -> object:
    """The metadata record kept as the file's attribute, or None."""
    try:
        return json.loads(os.getxattr(path, XATTR))
    except OSError as exc:
        if exc.errno in _NO_ATTRIBUTE or exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise
    except (ValueError, AttributeError):
        return None  # damaged, or a platform without attributes: the metadata files say


def _is_file(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)


def _stat_file(path: str, key: str, uri: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise ObjectNotFound(key, uri) from None
    if not _is_file(st):
        raise ObjectNotFound(key, uri)
    return st


def _check_parents(root: str, key: str) -> bool:
    """A key whose parent 'directory' is an object cannot be stored in a directory tree: say so plainly.
    True when the parent directory exists already. `root` ends with the separator."""
    parts = key.split("/")[:-1]
    try:
        if not parts or stat.S_ISDIR(os.stat(root + "/".join(parts)).st_mode):
            return True  # the parent is a directory, so every ancestor is one too: one stat in the common case
    except OSError:
        pass
    cur = Path(root)
    for part in parts:
        cur = cur / part
        if cur.exists() and not cur.is_dir():
            raise PermanentStorageError(
                f"cannot store key {key!r}: {'/'.join(parts[:parts.index(part) + 1])!r} is an object, and a local "
                "directory store cannot hold both a key and keys below it")
    return False


def _file_md5(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _version_or_none(path: str) -> str | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return file_version(st) if stat.S_ISREG(st.st_mode) else None


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
