"""Settings objects and the wiring that turns them into a store, event sources, an executor and an
orchestrator. The CLI fills these settings; nothing here parses arguments.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from .errors import ConfigError, ExecutorUnavailable, GclError, RulesError
from .interfaces import EventSource, Executor, ObjectStore
from .core import SchedulerConfig
from .model import FrozenDict, PoolSpec
from .executors import ProcessExecutor, ThreadExecutor
from .runtime import HandlerRegistry, Orchestrator, RunOptions
from .runtime.orchestrator import Watcher
from .sources import (
    LocalWatchSource,
    MemoryPushSource,
    MinioListenSource,
    MinioWebhookSource,
    PollingSource,
    SeaweedFilerSource,
)
from .sources.inotify import InotifySource
from .sources.inotify import available as inotify_available
from .gcl import RuleSet
from .gcl.loader import MAX_EMIT_LIMIT
from .storage import LocalDirectoryStore, MemoryObjectStore, RetryingStore, is_s3_store, open_store

if TYPE_CHECKING:
    from .storage.s3 import S3ObjectStore

EVENT_CHOICES = ("auto", "watch", "poll", "memory", "sqs", "seaweedfs", "minio", "minio-webhook")
# A file copied into a local store by hand may still be growing: the polling source waits this long.
LOCAL_SETTLE_S = 1.0
log = logging.getLogger("gclo")


@dataclass
class RunSettings:
    store: str
    handlers: Sequence[str]
    workers: int | None = None
    until_idle: bool = False
    rules: str | None = None
    events: str = "auto"
    poll_interval_s: float = 1.0
    reconcile_interval_s: float | None = None  # default: 5 s on a directory, 15 s on S3
    quiet_s: float = 1.0
    executor: str = "process"
    endpoint_url: str | None = None
    sqs_queue: str | None = None
    filer: str | None = None
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 9010
    webhook_secret: str | None = None
    resources: str | None = None  # capacity of the general pool: "cpu=4,memory_mb=8000,gpu=1"
    pools: Sequence[str] = ()  # affinity pools: "ml_handler=1:gpu=1"
    ageing_per_s: float = 1.0
    deadlock_grace_s: float | None = 60.0
    max_emit: int | None = None  # computations one attempt may emit (default 10,000)
    fsync: bool = False  # local store: every commit durable before it counts
    check_create: bool = True  # probe create-if-absent at start
    rebuild: bool = False  # read every object at start, not the journal
    api: str | None = None  # HOST:PORT of the HTTP API (none by default)
    options: RunOptions = field(default_factory=RunOptions)


@dataclass
class DevSettings:
    """`gclo dev`: a local SeaweedFS, a bucket, and an orchestrator on it."""

    handlers: Sequence[str]
    rules: str | None = None
    bucket: str = "gclo"
    data_dir: str | None = None
    s3_port: int | None = None
    workers: int | None = None
    until_idle: bool = False
    quiet_s: float = 1.0
    puts: Sequence[tuple[str, str]] = ()
    show: Sequence[str] = ()
    executor: str = "process"
    api: str | None = None


def parse_resources(text: str | None, what: str = "--resources") -> dict[str, float]:
    """`cpu=4,memory_mb=8000,gpu=1` -> {"cpu": 4.0, ...}."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, sep, amount = item.partition("=")
        try:
            if not sep or not name.isidentifier():
                raise ValueError
            value = float(amount)
            if value < 0:
                raise ValueError
        except ValueError:
            raise ConfigError(f"{what}: {item!r} is not NAME=AMOUNT (e.g. cpu=4,memory_mb=8000,gpu=1)") from None
        out[name] = value
    return out


def parse_pool(text: str) -> PoolSpec:
    """`ml_handler=1:gpu=1`: a pool of 1 worker, with 1 gpu, that alone runs handler type ml_handler."""
    head, _, resources = text.partition(":")
    handler_type, sep, slots = head.partition("=")
    try:
        if not sep or not handler_type:
            raise ValueError
        count = int(slots)
        if count < 1:
            raise ValueError
    except ValueError:
        raise ConfigError(f"--pool {text!r}: expected HANDLER_TYPE=WORKERS[:RESOURCE=AMOUNT,...], "
                          "e.g. ml_handler=1:gpu=1") from None
    return PoolSpec(handler_type, count, FrozenDict(parse_resources(resources, f"--pool {text}")), (handler_type,))


def scheduling_config(settings: RunSettings, workers: int) -> SchedulerConfig:
    general = PoolSpec("general", workers, FrozenDict(parse_resources(settings.resources)))
    pools = [general]
    for text in settings.pools:
        pool = parse_pool(text)
        if any(p.name == pool.name for p in pools):
            raise ConfigError(f"--pool {text!r}: a pool named {pool.name!r} is already declared")
        pools.append(pool)
    if settings.deadlock_grace_s is not None and settings.deadlock_grace_s < 0:
        raise ConfigError("--deadlock-grace must be >= 0 seconds, or off")
    # A batch run (--until-idle) ends, so work whose inputs nothing will produce fails; a service keeps it
    # waiting (reported as stalled), because the file may still be uploaded.
    return SchedulerConfig(pools=tuple(pools), ageing_per_s=settings.ageing_per_s,
                           deadlock_grace_s=settings.deadlock_grace_s,
                           missing_inputs="fail" if settings.until_idle else "wait")


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


def choose_s3_events(store: S3ObjectStore, settings: RunSettings) -> str:
    """What `--events auto` means on S3: what the settings point at, else what the server is."""
    if settings.sqs_queue:
        return "sqs"
    if settings.filer:
        return "seaweedfs"
    if settings.webhook_secret:
        return "minio-webhook"
    server = store.server()
    if "minio" in server.lower():
        return "minio"
    if "seaweedfs" in server.lower():
        log.info("SeaweedFS detected: pass --filer HOST:PORT to follow its metadata stream instead of polling")
    else:
        log.info("no notification source configured: polling (for S3 notifications run `gclo setup-events` "
                 "and pass --sqs-queue)")
    return "poll"


def _s3_push_source(kind: str, store: S3ObjectStore, settings: RunSettings) -> EventSource:
    if kind == "sqs":
        if not settings.sqs_queue:
            raise ConfigError("--events sqs needs --sqs-queue NAME_OR_URL (see gclo setup-events)")
        from .sources.sqs import SqsEventSource
        return SqsEventSource.connect(settings.sqs_queue, store.bucket, store.prefix,
                                      endpoint_url=store.explicit_endpoint)
    if kind == "seaweedfs":
        if not settings.filer:
            raise ConfigError("--events seaweedfs needs --filer HOST:PORT (the filer's HTTP address)")
        return SeaweedFilerSource(settings.filer, store.bucket, store.prefix)
    if kind == "minio":
        import boto3

        creds = boto3.session.Session().get_credentials()
        if creds is None:
            raise ConfigError("--events minio needs credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
        frozen = creds.get_frozen_credentials()
        return MinioListenSource(store.endpoint, store.bucket, store.prefix, frozen.access_key,
                                 frozen.secret_key, store.server())
    if kind == "minio-webhook":
        secret = settings.webhook_secret or os.environ.get("GCLO_WEBHOOK_SECRET")
        if not secret:
            raise ConfigError("--events minio-webhook needs a shared secret: set GCLO_WEBHOOK_SECRET "
                              "(or --webhook-secret)")
        return MinioWebhookSource(store.bucket, store.prefix, secret, settings.webhook_host, settings.webhook_port)
    raise ConfigError(f"--events {kind} does not work with an S3 store")


def make_sources_factory(store: ObjectStore, settings: RunSettings):
    """Decides the event sources now (so a wrong choice fails before anything runs) and returns a factory that
    builds them once the start-up listing is known."""
    inner = base_store(store)
    events = settings.events
    if events not in EVENT_CHOICES:
        raise ConfigError(f"--events must be one of {', '.join(EVENT_CHOICES)}, not {events!r}")
    local = isinstance(inner, LocalDirectoryStore)
    memory = isinstance(inner, MemoryObjectStore)
    s3 = is_s3_store(inner)
    if events == "auto":
        events = "watch" if local else "memory" if memory else choose_s3_events(inner, settings)  # type: ignore[arg-type]
    if events == "watch" and not local:
        raise ConfigError("--events watch needs a local directory store")
    if events == "memory" and not memory:
        raise ConfigError("--events memory needs a memory:// store")
    if events in ("sqs", "seaweedfs", "minio", "minio-webhook") and not s3:
        raise ConfigError(f"--events {events} needs an s3:// store")
    push: EventSource | None = None
    if s3 and events != "poll":
        push = _s3_push_source(events, inner, settings)  # type: ignore[arg-type]
    settle = LOCAL_SETTLE_S if local else 0.0
    reconcile_s = settings.reconcile_interval_s or (5.0 if local or memory else 15.0)

    def make(listing: Mapping[str, str]) -> list[EventSource]:
        if events == "poll":
            return [PollingSource(store, settings.poll_interval_s, initial=listing, settle_s=settle)]
        # Every push source is paired with a slower reconciliation listing: a lost notification only delays.
        reconcile = PollingSource(store, reconcile_s, initial=listing, settle_s=settle)
        if events == "watch":
            watch = InotifySource if inotify_available() else LocalWatchSource
            return [watch(inner.root), reconcile]  # type: ignore[attr-defined]
        if events == "memory":
            return [MemoryPushSource(inner), reconcile]  # type: ignore[arg-type]
        assert push is not None
        return [push, reconcile]

    return make


def build_orchestrator(settings: RunSettings, watcher: Watcher | None = None) -> Orchestrator:
    """Everything `gclo run` needs, checked before anything starts: handlers load, rules parse, store opens.
    `watcher` hears every state change (the HTTP API's feed)."""
    if settings.workers is not None and settings.workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {settings.workers}")
    if settings.quiet_s < 0 or settings.poll_interval_s <= 0:
        raise ConfigError("--quiet-period must be >= 0 and --poll-interval > 0")
    if settings.max_emit is not None:
        if not 1 <= settings.max_emit <= MAX_EMIT_LIMIT:
            raise ConfigError(f"--max-emit must be between 1 and {MAX_EMIT_LIMIT:,}, not {settings.max_emit}")
        os.environ["GCLO_MAX_EMIT"] = str(settings.max_emit)  # workers get GCLO_* from the executor
    sources = handler_sources(settings.handlers)
    registry = HandlerRegistry.from_sources(sources)
    rules = load_rules(settings.rules)
    # An explicit endpoint becomes part of the store's URI, which is how worker processes reopen it.
    store = open_store(settings.store, endpoint_url=settings.endpoint_url, fsync=settings.fsync)
    workers = settings.workers or os.cpu_count() or 1
    scheduling = scheduling_config(settings, workers)
    for pool in scheduling.pools[1:]:
        if pool.name not in registry:
            log.warning("--pool %s: no handler of that type is registered", pool.name)
    executor: Executor
    on_dask = settings.executor not in ("process", "thread")
    if on_dask:
        check_dask_target(settings)
        if isinstance(base_store(store), MemoryObjectStore):
            raise ConfigError("a memory:// store lives in one process: Dask workers cannot reach it")
    if settings.executor == "thread":
        executor = ThreadExecutor(scheduling.pools, registry, store)
    elif settings.executor == "process":
        if isinstance(base_store(store), MemoryObjectStore):
            raise ConfigError("a memory:// store lives in one process: use --executor thread with it")
        executor = ProcessExecutor(scheduling.pools, sources, store.uri)
    options = settings.options
    options.until_idle = settings.until_idle
    options.quiet_s = settings.quiet_s
    options.check_create = settings.check_create
    options.rebuild = settings.rebuild
    make_sources = make_sources_factory(store, settings)
    if on_dask:  # last: it connects to a cluster, or starts one, which nothing after it may leave running
        executor = connect_dask(settings, sources, registry, store.uri)
        scheduling = dataclasses.replace(scheduling, pools=executor.pools)  # type: ignore[attr-defined]
    try:
        return Orchestrator(store, executor, registry, make_sources=make_sources, rules=rules, options=options,
                            scheduling=scheduling, watcher=watcher)
    except BaseException:
        if on_dask:
            executor.stop(0)
        raise


def check_dask_target(settings: RunSettings) -> None:
    """A Dask cluster's workers say how many handlers run and with what: the flags that would say it here
    cannot be given with it."""
    from .executors.dask_pools import parse_target

    try:
        parse_target(settings.executor)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    given = [flag for flag, value in (("--workers", settings.workers), ("--resources", settings.resources),
                                      ("--pool", settings.pools)) if value]
    if given:
        raise ConfigError(f"{', '.join(given)} cannot be used with --executor {settings.executor}: the Dask "
                          "workers' threads and --resources say what runs where (README, \"Scaling out\")")


def connect_dask(settings: RunSettings, sources: tuple[str, ...], registry: HandlerRegistry,
                 store_uri: str) -> Executor:
    try:
        from .executors.dask import DaskExecutor
    except ImportError as exc:
        raise ConfigError(f"--executor {settings.executor} needs Dask distributed ({exc.name} is not installed): "
                          "pip install 'gcl-orchestrator[dask]'") from None
    try:
        return DaskExecutor.connect(settings.executor, sources, registry.types(), store_uri)
    except ConnectionError as exc:
        raise ExecutorUnavailable(str(exc)) from None


__all__ = ["RunSettings", "DevSettings", "build_orchestrator", "load_rules", "handler_sources", "base_store",
           "HandlerRegistry", "open_store", "ConfigError", "GclError", "RulesError"]
