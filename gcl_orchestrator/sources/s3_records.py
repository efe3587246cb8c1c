"""Parsing S3 event notifications (AWS, LocalStack, moto, MinIO): pure functions, no I/O."""
from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import unquote_plus

from ..model import ObjectCreated, ObjectRemoved, is_reserved


def _mapping(value: Any) -> Mapping[str, Any]:
    """Notification payloads come from outside: a field that should hold a mapping and does not counts as empty."""
    return value if isinstance(value, Mapping) else {}


def _user_metadata(obj: Mapping[str, Any]) -> dict[str, str] | None:
    """MinIO puts the object's user metadata in the record (AWS does not: then None, and a HEAD is due)."""
    raw = obj.get("userMetadata")
    if not isinstance(raw, Mapping):
        return None
    out = {}
    for name, value in raw.items():
        lname = str(name).lower()
        if lname.startswith("x-amz-meta-") and isinstance(value, str):
            out[lname[len("x-amz-meta-"):]] = value
    return out


def objects_from_records(records: Iterable[Any], bucket: str, prefix: str, source: str,
                         ack: Callable[[], None] | None = None) -> list[ObjectCreated | ObjectRemoved]:
    """ObjectCreated and ObjectRemoved events for the object-created and object-removed records about `bucket`
    under `prefix` (keys made relative to the prefix; URL-encoded keys decoded). Other records are ignored."""
    out = []
    if not isinstance(records, (list, tuple)):
        return []
    for record in records:
        if not isinstance(record, Mapping):
            continue
        name = str(record.get("eventName", "")).removeprefix("s3:")
        removed = name.startswith("ObjectRemoved:")
        if not removed and not name.startswith("ObjectCreated:"):
            continue
        s3 = _mapping(record.get("s3"))
        if _mapping(s3.get("bucket")).get("name") != bucket:
            continue
        obj = _mapping(s3.get("object"))
        raw_key = obj.get("key")
        if not isinstance(raw_key, str):
            continue
        key = unquote_plus(raw_key)
        if not key.startswith(prefix):
            continue
        key = key[len(prefix):]
        if not key or is_reserved(key):
            continue
        if removed:
            out.append(ObjectRemoved(key, source, ack))
            continue
        etag = obj.get("eTag") or obj.get("etag")
        etag = etag.strip('"') if isinstance(etag, str) and etag else None
        out.append(ObjectCreated(key, etag, _user_metadata(obj), source, ack))
    return out


def load_json(body: str | bytes) -> Any:
    """JSON from outside; ValueError for anything that is not (nesting too deep for the parser included)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def parse_notification(body: str | bytes, bucket: str, prefix: str, source: str) -> list[ObjectCreated]:
    """One notification message: an S3 event (`Records`), the same wrapped by SNS (`Message`), MinIO's wrapper
    (`EventName`, `Key`, `Records`), or an `s3:TestEvent` (nothing). Raises ValueError if it is not JSON."""
    data = load_json(body)
    if isinstance(data, Mapping) and data.get("Type") == "Notification" and isinstance(data.get("Message"), str):
        data = load_json(data["Message"])  # S3 -> SNS -> SQS
    if not isinstance(data, Mapping) or data.get("Event") == "s3:TestEvent":
        return []
    return objects_from_records(data.get("Records"), bucket, prefix, source)
