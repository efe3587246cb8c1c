"""Transient storage failures are retried here and nowhere else: a wrapper that runs every ObjectStore call
inside one tenacity policy (exponential backoff with jitter, bounded). Backends only classify their errors.
"""
from __future__ import annotations

import collections
import logging
from typing import Callable, Iterator, Mapping, TypeVar

import tenacity

from ..errors import TransientStorageError
from ..interfaces import ObjectInfo, ObjectStore, StoredObject

log = logging.getLogger("gclo.storage")
T = TypeVar("T")


class RetryingStore(ObjectStore):
    """Delegates to `inner`, retrying TransientStorageError for up to `give_up_after_s` seconds."""

    def __init__(self, inner: ObjectStore, give_up_after_s: float = 60.0, first_wait_s: float = 0.1,
                 max_wait_s: float = 5.0):
        self.inner = inner
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientStorageError),
            wait=tenacity.wait_exponential(multiplier=first_wait_s, max=max_wait_s)
            + tenacity.wait_random(0, first_wait_s),
            stop=tenacity.stop_after_delay(give_up_after_s),
            before_sleep=self._say_waiting,
            reraise=True,
        )
        self._calls: collections.Counter[str] = collections.Counter()  # for metrics; a lost increment is harmless

    def calls_by_kind(self) -> Mapping[str, int]:
        return dict(self._calls)

    def _say_waiting(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("store %s not answering (%s); retry %d in %.1fs", self.inner.describe(), exc,
                    state.attempt_number, state.next_action.sleep if state.next_action else 0)

    def _call(self, fn: Callable[[], T]) -> T:
        try:  # the first attempt without tenacity's bookkeeping: nearly every call succeeds at once
            return fn()
        except TransientStorageError:
            pass
        return self._retrying(fn)

    @property
    def uri(self) -> str:
        return self.inner.uri

    @property
    def etag_is_digest(self) -> bool:  # type: ignore[override]
        return self.inner.etag_is_digest

    def describe(self) -> str:
        return self.inner.describe()

    def request_count(self) -> int | None:
        return self.inner.request_count()

    def get(self, key: str) -> StoredObject:
        self._calls["get"] += 1
        return self._call(lambda: self.inner.get(key))

    def head(self, key: str) -> ObjectInfo:
        self._calls["head"] += 1
        return self._call(lambda: self.inner.head(key))

    def put(self, key: str, body: bytes, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        self._calls["put"] += 1
        return self._call(lambda: self.inner.put(key, body, metadata))

    def create(self, key: str, body: bytes, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        self._calls["create"] += 1
        return self._call(lambda: self.inner.create(key, body, metadata))

    def replace(self, key: str, body: bytes, metadata: Mapping[str, str] | None = None, *,
                expected_etag: str) -> ObjectInfo:
        # A replace that the server applied but whose answer was lost comes back as ObjectChanged when retried:
        # callers tell their own commit from someone else's by what the object says (its run).
        self._calls["replace"] += 1
        return self._call(lambda: self.inner.replace(key, body, metadata, expected_etag=expected_etag))

    def list(self, prefix: str = "", *, reserved: bool = True) -> Iterator[ObjectInfo]:
        self._calls["list"] += 1
        return iter(self._call(lambda: list(self.inner.list(prefix, reserved=reserved))))

    def delete(self, key: str) -> None:
        self._calls["delete"] += 1
        self._call(lambda: self.inner.delete(key))

    def startup_check(self, verify_create: bool = True) -> list[str]:
        notes = self.inner.startup_check(verify_create=False)  # the backend's own clean-up, then the probe
        return notes + super().startup_check(verify_create)

    def close(self) -> None:
        self.inner.close()
