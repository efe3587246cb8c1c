"""ObjectStore implementations and `open_store`, which turns a store URI or directory into one."""
from __future__ import annotations

from ..errors import ConfigError
from ..interfaces import ObjectStore
from .local import LocalDirectoryStore
from .memory import MemoryObjectStore
from .retry import RetryingStore
from .s3 import S3ObjectStore


def open_store(uri: str, *, retry: bool = True, create: bool = True, endpoint_url: str | None = None,
               fsync: bool = False) -> ObjectStore:
    """`s3://BUCKET[/PREFIX][?endpoint_url=URL]`, `file://DIR`, a plain directory path, or `memory://NAME`
    (shared within one process). For S3 the endpoint comes from the URI, else `endpoint_url`, else boto3's
    own configuration (AWS_ENDPOINT_URL, profiles); credentials and region from the standard chain.

    The store comes wrapped in the one retry policy for transient errors unless `retry` is False. `fsync`
    (local directories only) makes every write durable before it returns.
    """
    if not uri:
        raise ConfigError("no store given: pass --store DIR, file://DIR or memory://NAME")
    if uri.startswith("s3://"):
        store: ObjectStore = S3ObjectStore.from_uri(uri, endpoint_url)
    elif uri.startswith("memory://"):
        store = MemoryObjectStore.named(uri[len("memory://"):] or "default")
    elif uri.startswith("file://"):
        store = LocalDirectoryStore.from_uri(uri, create=create)
    elif "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise ConfigError(f"unsupported store {uri!r}: scheme {scheme!r} is not available in this version "
                          "(use s3://BUCKET, a directory, file://DIR or memory://NAME)")
    else:
        store = LocalDirectoryStore(uri, create=create)
    if fsync:
        if not isinstance(store, LocalDirectoryStore):
            raise ConfigError("--fsync is for a local directory store; an S3 server decides its own durability")
        store.fsync = True
    return RetryingStore(store) if retry else store


__all__ = ["open_store", "LocalDirectoryStore", "MemoryObjectStore", "RetryingStore", "S3ObjectStore"]
