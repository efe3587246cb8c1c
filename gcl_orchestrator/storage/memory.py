"""The in-memory ObjectStore: the reference semantics of the interface and the fast path for tests."""
from __future__ import annotations

import bisect
import hashlib
import itertools
import threading
import time
from typing import Callable, Iterator, Mapping

from ..errors import ObjectAlreadyExists, ObjectChanged, ObjectNotFound
from ..interfaces import ObjectInfo, ObjectStore, StoredObject
from ..model import RESERVED_PREFIX, check_key, normalize_metadata

_names = itertools.count(1)
# memory://NAME stores shared inside one process, so a URI can be reopened (by thread executors, tests).
_shared: dict[str, "MemoryObjectStore"] = {}
_shared_lock = threading.Lock()


class MemoryObjectStore(ObjectStore):
    def __init__(self, name: str | None = None):
        self.name = name or f"mem{next(_names)}"
        self._objects: dict[str, StoredObject] = {}
        self._keys: list[str] = []  # sorted, for ordered listings
        self._lock = threading.Lock()
        self._listeners: list[Callable[[ObjectInfo], None]] = []
        self._removal_listeners: list[Callable[[str], None]] = []

    def subscribe(self, listener: Callable[[ObjectInfo], None]) -> None:
        """Call `listener(info)` after every write (what a push event source builds on)."""
        self._listeners = self._listeners + [listener]

    def unsubscribe(self, listener: Callable[[ObjectInfo], None]) -> None:
        self._listeners = [fn for fn in self._listeners if fn is not listener]

    def subscribe_removals(self, listener: Callable[[str], None]) -> None:
        """Call `listener(key)` after every delete of an existing key."""
        self._removal_listeners = self._removal_listeners + [listener]

    def unsubscribe_removals(self, listener: Callable[[str], None]) -> None:
        self._removal_listeners = [fn for fn in self._removal_listeners if fn is not listener]

    @classmethod
    def named(cls, name: str) -> "MemoryObjectStore":
        with _shared_lock:
            if name not in _shared:
                _shared[name] = cls(name)
            return _shared[name]

    @property
    def uri(self) -> str:
        with _shared_lock:
            _shared.setdefault(self.name, self)
        return f"memory://{self.name}"

    def get(self, key: str) -> StoredObject:
        check_key(key, allow_reserved=True)
        with self._lock:
            obj = self._objects.get(key)
        if obj is None:
            raise ObjectNotFound(key, self.uri)
        return obj

    def head(self, key: str) -> ObjectInfo:
        return self.get(key).info

    def put(self, key: str, body: bytes, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        return self._write(key, body, metadata, exclusive=False)

    def create(self, key: str, body: bytes, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        return self._write(key, body, metadata, exclusive=True)

    def replace(self, key: str, body: bytes, metadata: Mapping[str, str] | None = None, *,
                expected_etag: str) -> ObjectInfo:
        return self._write(key, body, metadata, exclusive=False, expected=expected_etag)

    def _write(self, key: str, body: bytes, metadata: Mapping[str, str] | None, exclusive: bool,
               expected: str | None = None) -> ObjectInfo:
        check_key(key, allow_reserved=True)
        meta = normalize_metadata(metadata)
        body = bytes(body)
        digest = hashlib.md5(body).hexdigest()  # as S3's ETag of a single-part upload: the same bytes, the same
        info = ObjectInfo(key, digest, len(body), time.time(), meta, digest)
        with self._lock:
            current = self._objects.get(key)
            if expected is not None and (current is None or current.info.etag != expected):
                raise ObjectChanged(key, expected, self.uri)
            if current is not None:
                if exclusive:
                    raise ObjectAlreadyExists(key, self.uri)
            else:
                bisect.insort(self._keys, key)
            self._objects[key] = StoredObject(info, body)
        for listener in self._listeners:
            listener(info)
        return info

    def list(self, prefix: str = "", *, reserved: bool = True) -> Iterator[ObjectInfo]:
        with self._lock:
            start = bisect.bisect_left(self._keys, prefix)
            found = []
            for key in itertools.islice(self._keys, start, None):
                if not key.startswith(prefix):
                    break
                if not reserved and key.startswith(RESERVED_PREFIX):
                    continue
                info = self._objects[key].info
                found.append(ObjectInfo(info.key, info.etag, info.size, info.modified, None))
        return iter(found)

    def delete(self, key: str) -> None:
        check_key(key, allow_reserved=True)
        with self._lock:
            removed = self._objects.pop(key, None)
            if removed is not None:
                self._keys.pop(bisect.bisect_left(self._keys, key))
        if removed is not None:
            for listener in self._removal_listeners:
                listener(key)
