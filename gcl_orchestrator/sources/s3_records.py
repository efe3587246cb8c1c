"""Parsing S3 event notifications (AWS, LocalStack, moto, MinIO): pure functions, no I/O."""
from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import unquote_plus

from ..model import ObjectCreated, is_reserved


def _user_metadata(obj: Mapping[str, Any]) -> dict[str, str] | None:
    """MinIO puts the object's user metadata in the record (AWS does not: then None, and a HEAD is due)."""
    raw = obj.get("userMetadata")
    if not isinstance(raw, Mapping):
        return None
    out = {}
    for name, value in raw.items():
        lname = str(name).lower()
        if lname.startswith("x-amz-meta-"):
            out[lname[len("x-amz-meta-"):]] = str(value)
    return out


def objects_from_records(records: Iterable[Any], bucket: str, prefix: str, source: str,
                         ack: Callable[[], None] | None = None) -> list[ObjectCreated]:
    """ObjectCreated events for the object-created records about `bucket` under `prefix` (keys made relative
    to the prefix; URL-encoded keys decoded). Other records are ignored."""
    out = []
    for record in records:
        if not isinstance(record, Mapping):
            continue
        name = str(record.get("eventName", ""))
        if not name.removeprefix("s3:").startswith("ObjectCreated:"):
            continue
        s3 = record.get("s3") or {}
        if (s3.get("bucket") or {}).get("name") != bucket:
            continue
        obj = s3.get("object") or {}
        key = unquote_plus(str(obj.get("key", "")))
        if not key.startswith(prefix):
            continue
        key = key[len(prefix):]
        if not key or is_reserved(key):
            continue
        etag = obj.get("eTag") or obj.get("etag")
        out.append(ObjectCreated(key, str(etag).strip('"') if etag else None, _user_metadata(obj), source, ack))
    return out


def parse_notification(body: str | bytes, bucket: str, prefix: str, source: str) -> list[ObjectCreated]:
    """One notification message: an S3 event (`Records`), the same wrapped by SNS (`Message`), MinIO's wrapper
    (`EventName`, `Key`, `Records`), or an `s3:TestEvent` (nothing). Raises ValueError if it is not JSON."""
    data = json.loads(body)
    if isinstance(data, Mapping) and data.get("Type") == "Notification" and isinstance(data.get("Message"), str):
        data = json.loads(data["Message"])  # S3 -> SNS -> SQS
    if not isinstance(data, Mapping) or data.get("Event") == "s3:TestEvent":
        return []
    return objects_from_records(data.get("Records") or [], bucket, prefix, source)
