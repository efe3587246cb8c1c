"""ObjectStore implementations and `open_store`, which turns a store URI or directory into one.

`S3ObjectStore` is imported when first asked for: boto3 takes a fifth of a second to import, which every command
on a local store and every worker process would otherwise pay."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..interfaces import ObjectStore
from .local import LocalDirectoryStore
from .memory import MemoryObjectStore
from .retry import RetryingStore

if TYPE_CHECKING:
    from .s3 import S3ObjectStore


def __getattr__(name: str) -> Any:
    if name == "S3ObjectStore":
        from .s3 import S3ObjectStore
        return S3ObjectStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_s3_store(store: ObjectStore) -> bool:
    """Whether `store` (not wrapped) is an S3ObjectStore, without importing boto3 to find out."""
    s3 = sys.modules.get(__name__ + ".s3")
    return s3 is not None and isinstance(store, s3.S3ObjectStore)


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
        from .s3 import S3ObjectStore
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


__all__ = ["open_store", "is_s3_store", "LocalDirectoryStore", "MemoryObjectStore", "RetryingStore", "S3ObjectStore"]
