"""Event sources: each an emitter of ObjectCreated events into the orchestrator's one queue.

`SqsEventSource` is imported when first asked for (it needs boto3, a fifth of a second to import)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .memory import MemoryPushSource
from .minio import MinioListenSource, MinioWebhookSource, parse_minio_event
from .polling import PollingSource, diff_listing
from .s3_records import objects_from_records, parse_notification
from .seaweedfs import SeaweedFilerSource, parse_filer_event
from .watch import LocalWatchSource

if TYPE_CHECKING:
    from .sqs import SqsEventSource


def __getattr__(name: str) -> Any:
    if name == "SqsEventSource":
        from .sqs import SqsEventSource
        return SqsEventSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PollingSource", "LocalWatchSource", "MemoryPushSource", "SqsEventSource", "MinioListenSource",
           "MinioWebhookSource", "SeaweedFilerSource", "diff_listing", "parse_notification", "parse_minio_event",
           "parse_filer_event", "objects_from_records"]
