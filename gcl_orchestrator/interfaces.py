"""Every pluggable part of gcl-orchestrator, with its contract: ObjectStore, EventSource, Executor.

Implementations live in `storage/`, `sources/` and `executors/`; each interface has a complete
in-memory implementation that defines the reference semantics, and one contract test suite runs against all.
"""
from __future__ import annotations

import abc
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

from .errors import ObjectAlreadyExists, ObjectChanged, ObjectNotFound, PermanentStorageError
from .model import RESERVED_PREFIX, ComputationSpec, ObjectCreated


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows of an object. `metadata` is None when the call did not fetch it (listings). `etag` is
    the store's name for the version of the object, what `replace` compares (on S3 the ETag, which two writes of
    the same bytes share; on a local directory a stamp that changes with every write); `digest` identifies its
    bytes where the store knows it (two objects with the same bytes have the same digest), else None."""

    key: str
    etag: str
    size: int
    modified: float  # seconds since the epoch
    metadata: Mapping[str, str] | None = None
    digest: str | None = None


@dataclass(frozen=True)
class StoredObject:
    info: ObjectInfo
    body: bytes


class ObjectStore(abc.ABC):
    """A flat namespace of immutable-once-written objects addressed by `/`-separated keys.

    Contract, for every implementation:
    - Keys are checked with `model.check_key(key, allow_reserved=True)`; a bad key raises InvalidKeyError before
      any I/O. The reserved prefix (`.gclo/`) is writable here: policy about it lives above the store.
    - Metadata names come back lower-cased; values are printable one-line ASCII (`model.normalize_metadata`),
      anything else raises ValueError before any I/O.
    - `put` and `create` are atomic: a reader sees the whole old object, the whole new one, or none, never a
      part, and an object is never visible without its metadata.
    - Missing objects raise ObjectNotFound; a server that may answer later raises TransientStorageError; one
      that will not raises PermanentStorageError. Nothing else escapes, apart from the two ValueErrors above.
    - Methods are thread-safe and may be called from several processes on the same store at once.
    """

    etag_is_digest: bool = True  # an object's etag identifies its bytes (S3's ETag), not merely its version

    @property
    @abc.abstractmethod
    def uri(self) -> str:
        """A string that `config.open_store` turns back into an equivalent store in another process."""

    @abc.abstractmethod
    def get(self, key: str) -> StoredObject:
        """Body and info (with metadata) of `key`."""

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Info of `key` with its metadata, without the body."""

    def exists(self, key: str) -> bool:
        """Whether `key` is there now. Storage errors other than "not found" are raised, not taken for "no"."""
        try:
            self.head(key)
        except ObjectNotFound:
            return False
        return True

    @abc.abstractmethod
    def put(self, key: str, body: bytes, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        """Write `key`, replacing any object there. Returns the new object's info (etag included)."""

    @abc.abstractmethod
    def create(self, key: str, body: bytes, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        """Write `key` only if no object is there; else raise ObjectAlreadyExists and change nothing.

        Of several racing `create` calls on one key exactly one succeeds.
        """

    @abc.abstractmethod
    def replace(self, key: str, body: bytes, metadata: Mapping[str, str] | None = None, *,
                expected_etag: str) -> ObjectInfo:
        """Write `key` only if it holds the version `expected_etag` now (compare-and-swap: `If-Match` on S3);
        else raise ObjectChanged and change nothing, also when the key holds nothing.

        Of several racing `replace` calls expecting the same version exactly one succeeds, so a late writer can
        never replace a version newer than the one it read. A version is its ETag, which on S3 (and in every
        backend here) is the MD5 of the body: two writes of the same bytes with other metadata are one version
        to this check, so of two runs that wrote identical bytes the later one's metadata (its GCL, its run)
        may stand.
        """

    @abc.abstractmethod
    def list(self, prefix: str = "", *, reserved: bool = True) -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, in ascending key order, with `metadata=None`. With
        `reserved=False` keys under `.gclo/` are left out, and not even read where the store can skip them
        (a directory is not walked; S3 is listed around the prefix)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`. Removing a missing key is not an error (idempotent)."""

    def startup_check(self, verify_create: bool = True) -> list[str]:
        """Run once by an orchestrator before it uses the store: exactly-once commits rest on `create`, so it
        is checked here rather than assumed. Creates a probe object under `.gclo/probe/` twice and replaces it
        expecting the right and a wrong version; if the second create or the wrong replace succeeds, the store
        (or the server behind it) ignores the condition and PermanentStorageError is raised. Backends may also clean up what crashed writers left. Returns notes worth logging."""
        if not verify_create:
            return []
        probe = f"{RESERVED_PREFIX}probe/create-{uuid.uuid4().hex}"
        first = self.create(probe, b"1")
        try:
            try:
                self.create(probe, b"2")
            except ObjectAlreadyExists:
                pass
            else:
                raise PermanentStorageError(
                    f"{self.describe()} does not honour create-if-absent (a second create of {probe!r} succeeded, "
                    "where S3 answers 412 to If-None-Match: *): outputs could be written twice. Use a server that "
                    "supports conditional writes, or pass --unsafe-skip-create-check to run anyway")
            second = self.replace(probe, b"3", expected_etag=first.etag)
            try:
                self.replace(probe, b"4", expected_etag=first.etag)
            except ObjectChanged:
                return []
            raise PermanentStorageError(
                f"{self.describe()} does not honour conditional replacement (a replace of {probe!r} expecting a "
                f"version it no longer held, {first.etag!r} instead of {second.etag!r}, succeeded, where S3 answers "
                "412 to If-Match): a late writer could replace a newer output. Use a server that supports "
                "conditional writes, or pass --unsafe-skip-create-check to run anyway")
        finally:
            self.delete(probe)

    def close(self) -> None:
        """Release connections. The default does nothing."""

    def describe(self) -> str:
        """A short name for logs; never contains credentials."""
        return self.uri

    def request_count(self) -> int | None:
        """How many requests this store object has sent to its server so far; None where nothing is counted."""
        return None

    def calls_by_kind(self) -> Mapping[str, int]:
        """Calls made through this store object so far, by operation (get, head, put, create, replace, list,
        delete), for metrics; empty where nothing is counted. Retries of one call count once."""
        return {}


Emit = Callable[[object], None]


class EventSource(abc.ABC):
    """An emitter of ObjectCreated (and, where it can tell, ObjectRemoved) events into the orchestrator's one
    queue.

    Contract:
    - `start(emit)` returns promptly; events are then pushed with `emit(ObjectCreated(...))` from any thread.
    - Delivery is at-least-once: an object written after `start` returned is reported at least once while the
      source runs; duplicates are allowed (the runtime drops them by key and etag).
    - Keys under the reserved prefix are never reported.
    - `stop()` is idempotent, returns only when no more events will be emitted, and leaves no thread behind.
    """

    name: str = "source"

    @abc.abstractmethod
    def start(self, emit: Emit) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...


@dataclass(frozen=True)
class Task:
    """One attempt of one computation, as handed to an executor. Picklable: it crosses process boundaries.
    `lent`: it runs on a slot lent by a handler waiting for it, so it must start at once (on an idle worker, or
    one started for it), never queued behind another task. A task that `replaces` a version writes its output
    only over that version, and `inputs` are what its output records it was computed from."""

    spec: ComputationSpec
    attempt: int
    store_uri: str
    pool: str = "general"
    lent: bool = False
    replaces: str | None = None  # the output's version this run replaces (compare-and-swap); None: create it
    inputs: tuple[tuple[str, str], ...] = ()  # (key, identity) the run is computed from, as dispatched
    run_seq: int = 1  # which run of the computation: an older run never replaces a newer run's output
    priority: float = 0.0  # the aged priority the core ordered it by (Dispatch.priority): higher first


class Executor(abc.ABC):
    """Runs tasks somewhere and reports each outcome as an event into the orchestrator's queue.

    Contract:
    - `start(emit)` before any `submit`; `capacity` says how many tasks run at once in all, and `task.pool`
      names the worker pool a task runs in. The core submits to a pool at most its slots × (1 + `prefetch`)
      tasks at once: an executor with `prefetch` N holds up to N more tasks per slot itself, so that a worker
      that finishes finds its next task without waiting for the orchestrator; it still runs at most `slots`
      at once (the core never hands it a task with a time-out beyond the slots: that clock starts at dispatch).
    - `submit(task)` never blocks on the task. Exactly one ComputationSucceeded or ComputationFailed is emitted
      per submitted task, carrying the task's computation and attempt, also when the handler crashes its
      worker, is cancelled, hangs past `stop`, or the worker cannot start.
    - `cancel(computation, attempt)` ends that attempt if it is queued or running (a time-out); its outcome is
      still emitted (as a failure, unless it finished first). Cancelling what is not there does nothing.
    - `deliver(computation, attempt, message)` hands the core's answer (a WaitOver, a SubmitAnswer) to that
      attempt's handler if it still runs; otherwise it is dropped. It never blocks on the handler.
    - Events a running handler raises (submissions, waits) are emitted like outcomes, in the order raised.
    - A task with `lent` set starts at once, on an idle worker or one started for it; other tasks never make
      more than a pool's slots run at once.
    - `stop(grace_s)` lets running tasks finish for up to `grace_s` seconds, then ends them; idempotent; leaves
      no thread or process behind. An executor that cannot go on emits ComponentFailed after failing every task
      it holds, so that no computation is left running with no attempt behind it.
    """

    @property
    @abc.abstractmethod
    def capacity(self) -> int: ...

    prefetch: int = 0  # tasks per slot the executor may hold beyond what it runs (see above)

    @abc.abstractmethod
    def cancel(self, computation: str, attempt: int) -> None: ...

    @abc.abstractmethod
    def start(self, emit: Callable[[object], None]) -> None: ...

    @abc.abstractmethod
    def submit(self, task: Task) -> None: ...

    def submit_all(self, tasks: Sequence[Task]) -> None:
        """Several tasks at once, in order (an executor may hand them over in one step)."""
        for task in tasks:
            self.submit(task)

    @abc.abstractmethod
    def deliver(self, computation: str, attempt: int, message: object) -> None: ...

    def expedite(self, computation: str, attempt: int) -> None:
        """That attempt, submitted earlier, is now needed by a waiting handler: if it still waits in a queue of
        this executor's, start it at once as if it had been submitted with `lent`. The default does nothing (an
        executor that queues nothing ahead)."""

    @abc.abstractmethod
    def stop(self, grace_s: float = 5.0) -> None: ...

    def describe(self) -> str:
        """Where handlers run, in a few words for the start-up line."""
        return f"{self.capacity} worker(s)"


__all__ = [
    "ObjectInfo", "StoredObject", "ObjectStore", "EventSource", "Executor", "Task", "Emit", "ObjectCreated",
]
