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
        return f"{where}: {self.message}"


class SpecError(GclError):
    """A GCL document or spec is invalid. Carries every problem found, not only the first."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...], source: str | None = None):
        self.problems = tuple(problems)
        self.source = source
        head = f"invalid GCL in {source}" if source else "invalid GCL"
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{head} ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):\n{lines}")

    def one_line(self) -> str:
        """The problems joined on one line, for status tables and logs."""
        return "; ".join(str(p) for p in self.problems)


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


# --- configuration ---------------------------------------------------------------------------------------------


class ConfigError(GclError):
    """A command-line argument or setting is unusable (bad store URI, bad worker count...)."""
