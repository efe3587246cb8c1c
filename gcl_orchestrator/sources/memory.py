"""The in-memory push source: a MemoryObjectStore tells it of every write, metadata included (as MinIO's
notifications do), so the runtime needs no HEAD. The reference for push sources in tests."""
from __future__ import annotations

from ..interfaces import Emit, EventSource, ObjectInfo
from ..model import ObjectCreated, ObjectRemoved, is_reserved
from ..storage.memory import MemoryObjectStore


class MemoryPushSource(EventSource):
    name = "memory"

    def __init__(self, store: MemoryObjectStore):
        self.store = store
        self._emit: Emit | None = None

    def _on_write(self, info: ObjectInfo) -> None:
        emit = self._emit
        if emit is not None and not is_reserved(info.key):
            emit(ObjectCreated(info.key, info.etag, dict(info.metadata or {}), self.name))

    def _on_delete(self, key: str) -> None:
        emit = self._emit
        if emit is not None and not is_reserved(key):
            emit(ObjectRemoved(key, self.name))

    def start(self, emit: Emit) -> None:
        self._emit = emit
        self.store.subscribe(self._on_write)
        self.store.subscribe_removals(self._on_delete)

    def stop(self) -> None:
        self.store.unsubscribe(self._on_write)
        self.store.unsubscribe_removals(self._on_delete)
        self._emit = None
