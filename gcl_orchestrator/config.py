"""Settings objects and the wiring that turns them into a store, event sources, an executor and an
orchestrator. The CLI fills these settings; nothing here parses arguments.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .errors import ConfigError, GclError, RulesError
from .interfaces import EventSource, Executor, ObjectStore
from .runtime import HandlerRegistry, Orchestrator, ProcessExecutor, RunOptions, ThreadExecutor
from .sources import LocalWatchSource, MemoryPushSource, PollingSource
from .spec import RuleSet
from .storage import LocalDirectoryStore, MemoryObjectStore, RetryingStore, open_store

EVENT_CHOICES = ("auto", "watch", "poll", "memory")
# A file copied into a local store by hand may still be growing: the polling source waits this long.
LOCAL_SETTLE_S = 1.0


@dataclass
class RunSettings:
    store: str
    handlers: Sequence[str]
    workers: int | None = None
    until_idle: bool = False
    rules: str | None = None
    events: str = "auto"
    poll_interval_s: float = 1.0
    reconcile_interval_s: float = 5.0
    quiet_s: float = 1.0
    executor: str = "process"
    options: RunOptions = field(default_factory=RunOptions)


def base_store(store: ObjectStore) -> ObjectStore:
    return store.inner if isinstance(store, RetryingStore) else store


def load_rules(path: str | None) -> RuleSet:
    if not path:
        return RuleSet()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read rules file {path}: {exc.strerror}") from None
    return RuleSet.parse(text, source=path)


def handler_sources(sources: Sequence[str]) -> tuple[str, ...]:
    """File paths made absolute, so that worker processes find them whatever their directory."""
    if not sources:
        raise ConfigError("no handlers given: pass --handlers FILE.py or --handlers package.module")
    return tuple(str(Path(s).resolve()) if s.endswith(".py") or Path(s).exists() else s for s in sources)


def make_sources_factory(store: ObjectStore, settings: RunSettings):
    inner = base_store(store)
    events = settings.events
    if events not in EVENT_CHOICES:
        raise ConfigError(f"--events must be one of {', '.join(EVENT_CHOICES)}, not {events!r}")
    local = isinstance(inner, LocalDirectoryStore)
    if events == "watch" and not local:
        raise ConfigError("--events watch needs a local directory store")
    if events == "memory" and not isinstance(inner, MemoryObjectStore):
        raise ConfigError("--events memory needs a memory:// store")
    settle = LOCAL_SETTLE_S if local else 0.0

    def make(listing: Mapping[str, str]) -> list[EventSource]:
        if events == "poll":
            return [PollingSource(store, settings.poll_interval_s, initial=listing, settle_s=settle)]
        # A push source, paired with a slower reconciliation listing so a missed notification only delays.
        reconcile = PollingSource(store, settings.reconcile_interval_s, initial=listing, settle_s=settle)
        if local:
            return [LocalWatchSource(inner.root), reconcile]  # type: ignore[attr-defined]
        if isinstance(inner, MemoryObjectStore):
            return [MemoryPushSource(inner), reconcile]
        return [PollingSource(store, settings.poll_interval_s, initial=listing, settle_s=settle)]

    return make


def build_orchestrator(settings: RunSettings) -> Orchestrator:
    """Everything `gclo run` needs, checked before anything starts: handlers load, rules parse, store opens."""
    if settings.workers is not None and settings.workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {settings.workers}")
    if settings.quiet_s < 0 or settings.poll_interval_s <= 0:
        raise ConfigError("--quiet must be >= 0 and --poll-interval > 0")
    sources = handler_sources(settings.handlers)
    registry = HandlerRegistry.from_sources(sources)
    rules = load_rules(settings.rules)
    store = open_store(settings.store)
    workers = settings.workers or os.cpu_count() or 1
    executor: Executor
    if settings.executor == "thread":
        executor = ThreadExecutor(workers, registry, store)
    elif settings.executor == "process":
        if isinstance(base_store(store), MemoryObjectStore):
            raise ConfigError("a memory:// store lives in one process: use --executor thread with it")
        executor = ProcessExecutor(workers, sources, store.uri)
    else:
        raise ConfigError(f"--executor must be 'process' or 'thread', not {settings.executor!r}")
    options = settings.options
    options.until_idle = settings.until_idle
    options.quiet_s = settings.quiet_s
    return Orchestrator(store, executor, registry, make_sources=make_sources_factory(store, settings),
                        rules=rules, options=options)


__all__ = ["RunSettings", "build_orchestrator", "load_rules", "open_store", "ConfigError", "GclError", "RulesError"]
