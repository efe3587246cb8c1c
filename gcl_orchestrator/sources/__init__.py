"""Event sources: each an emitter of ObjectCreated events into the orchestrator's one queue."""
from .memory import MemoryPushSource
from .minio import MinioListenSource, MinioWebhookSource, parse_minio_event
from .polling import PollingSource, diff_listing
from .s3_records import objects_from_records, parse_notification
from .seaweedfs import SeaweedFilerSource, parse_filer_event
from .sqs import SqsEventSource
from .watch import LocalWatchSource

__all__ = ["PollingSource", "LocalWatchSource", "MemoryPushSource", "SqsEventSource", "MinioListenSource",
           "MinioWebhookSource", "SeaweedFilerSource", "diff_listing", "parse_notification", "parse_minio_event",
           "parse_filer_event", "objects_from_records"]
