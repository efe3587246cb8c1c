"""The error tree of gcl-orchestrator: one root, a small family per subsystem.

Every message names the thing to fix (the key, the computation, the field path, the cycle).
"""
from __future__ import annotations

from dataclasses import dataclass


class GclError(Exception):
    """Root of every error this package raises on purpose."""


# --- GCL specs -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a GCL document: where (field path, line) and what."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path or "(document)"
        if self.line is not None:
            where = f"line {self.line}: {where}"
        message = self.message if len(self.message) <= 500 else self.message[:500] + "..."
        return f"{where}: {message}"


SHOWN_PROBLEMS = 50  # a message lists this many problems at most, then says how many more there are


class SpecError(GclError):
    """A GCL document or spec is invalid. Carries every problem found, not only the first; its message shows
    the first SHOWN_PROBLEMS of them (`gclo validate` prints them all)."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...], source: str | None = None):
        self.problems = tuple(problems)
        self.source = source
        head = f"invalid GCL in {source}" if source else "invalid GCL"
        shown = [f"  {p}" for p in self.problems[:SHOWN_PROBLEMS]]
        if len(self.problems) > SHOWN_PROBLEMS:
            shown.append(f"  ... and {len(self.problems) - SHOWN_PROBLEMS} more")
        lines = "\n".join(shown)
        super().__init__(f"{head} ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):\n{lines}")

    def one_line(self, limit: int = 10) -> str:
        """The first `limit` problems joined on one line, for status tables and logs."""
        text = "; ".join(str(p) for p in self.problems[:limit])
        more = len(self.problems) - limit
        return text + (f"; and {more} more problem{'s' if more != 1 else ''}" if more > 0 else "")


class RulesError(GclError):
    """A rules file (key globs mapped to GCL templates) is invalid."""


class InvalidKeyError(GclError, ValueError):
    """An object key is not acceptable: escapes the store, has control characters, uses the reserved prefix..."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"invalid key {key!r}: {reason}")


# --- storage ---------------------------------------------------------------------------------------------------


class StorageError(GclError):
    """A store operation failed."""


class TransientStorageError(StorageError):
    """The store may answer if asked again (connection refused, timeout, 5xx, throttling)."""


class PermanentStorageError(StorageError):
    """Asking again will not help (missing bucket, access denied, bad credentials, invalid metadata)."""


class ObjectNotFound(PermanentStorageError):
    def __init__(self, key: str, store: str = ""):
        self.key = key
        super().__init__(f"no object at key {key!r}" + (f" in {store}" if store else ""))


class UnreadableObject(PermanentStorageError):
    """The object is there but cannot be read as it is (its headers are too large for the HTTP client, its
    metadata is not text): a fault of that object, recorded against its key, never a store outage."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"object {key!r} cannot be read: {reason}")


class ObjectChanged(StorageError):
    """`replace` found another version at the key than the one expected (or none): someone wrote since. Not a
    failure in itself: the newer version stands."""

    def __init__(self, key: str, expected: str, store: str = ""):
        self.key = key
        self.expected = expected
        super().__init__(f"the object at key {key!r} is no longer version {expected!r}" + (f" in {store}" if store else ""))


class ObjectAlreadyExists(StorageError):
    """`create` found the key taken. Not a failure in itself: whoever wrote first won."""

    def __init__(self, key: str, store: str = ""):
        self.key = key
        super().__init__(f"an object already exists at key {key!r}" + (f" in {store}" if store else ""))


# --- graph and scheduling --------------------------------------------------------------------------------------


class GraphError(GclError):
    """A spec cannot join the graph."""


class CycleError(GraphError):
    def __init__(self, computation: str, path: tuple[str, ...]):
        self.computation = computation
        self.path = path
        super().__init__(f"computation {computation!r} would close a cycle: {' -> '.join(path)}")


class ConflictError(GraphError):
    """Two specs disagree: same computation name with different contents, or two producers for one key."""


# --- handlers --------------------------------------------------------------------------------------------------


class HandlerError(GclError):
    """Loading or running a handler went wrong."""


class HandlerLoadError(HandlerError):
    """A `--handlers` source could not be imported, or registers a handler type twice."""


class UnknownHandlerType(HandlerError):
    def __init__(self, handler_type: str, known: tuple[str, ...] = ()):
        self.handler_type = handler_type
        known_text = ", ".join(known) if known else "none"
        super().__init__(f"no handler registered for handler_type {handler_type!r} (registered: {known_text})")


class PermanentHandlerError(HandlerError):
    """Raised by a handler to say that retrying this computation cannot help."""


class WaitFailed(HandlerError):
    """Raised in a handler by `ctx.wait_for` or a submit handle's `result()`: a key it waited for will never
    come, because the computation producing it failed, was upstream-failed or was refused. `outcomes` holds one
    `model.KeyOutcome` per such key."""

    def __init__(self, message: str, outcomes: tuple = ()):
        self.outcomes = outcomes
        super().__init__(message)


class SubmissionRejected(HandlerError):
    """Raised by a submit handle's `result()` when the orchestrator refused the submitted computation."""


class DeadlockError(HandlerError):
    """Raised in a handler whose wait the orchestrator ended because it could never be satisfied (the handler
    holds what the awaited work needs, or nothing will ever produce the key)."""


# --- configuration ---------------------------------------------------------------------------------------------


class ConfigError(GclError):
    """A command-line argument or setting is unusable (bad store URI, bad worker count...)."""


class ExecutorUnavailable(GclError):
    """The executor cannot start: no Dask scheduler answers, or it has no worker (exit code 3, like a store
    that cannot be used)."""
