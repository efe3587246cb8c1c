"""Parsing every notification format, on recorded payloads: no server involved."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcl_orchestrator.sources import parse_filer_event, parse_minio_event, parse_notification
from gcl_orchestrator.sources.seaweedfs import FilerStreamDecoder

DATA = Path(__file__).parent.parent / "data"


def aws_record(key, bucket="bucket1", event="ObjectCreated:Put", etag="abc"):
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": event,
            "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 1, "eTag": etag}}}


def test_aws_records_give_url_decoded_keys_and_no_metadata():
    body = json.dumps({"Records": [aws_record("in%2Fa+b%2Bc.csv")]})  # moto encodes '/' too
    (ev,) = parse_notification(body, "bucket1", "", "sqs")
    assert (ev.key, ev.etag, ev.metadata) == ("in/a b+c.csv", "abc", None)


@pytest.mark.parametrize("body", [
    json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "bucket1"}),
    json.dumps({"Records": [aws_record("x", bucket="other")]}),
    json.dumps({"Records": [aws_record(".gclo/state/status.json")]}),
    json.dumps({"Records": [aws_record("x", event="ObjectRestore:Post")]}),
    json.dumps({"Records": [aws_record("elsewhere/x")]}),
])
def test_records_we_must_not_act_on(body):
    assert parse_notification(body, "bucket1", "" if "elsewhere" not in body else "mine/", "sqs") == []


def test_prefix_is_stripped_and_sns_wrapping_is_opened():
    inner = json.dumps({"Records": [aws_record("team%2Fin%2Fx.csv")]})
    body = json.dumps({"Type": "Notification", "Message": inner})
    (ev,) = parse_notification(body, "bucket1", "team/", "sqs")
    assert ev.key == "in/x.csv"


def test_a_removed_record_is_an_object_removed_event():
    from gcl_orchestrator.model import ObjectRemoved

    body = json.dumps({"Records": [aws_record("in%2Fold.csv", event="ObjectRemoved:Delete")]})
    assert parse_notification(body, "bucket1", "", "sqs") == [ObjectRemoved("in/old.csv", "sqs")]


def test_not_json_is_a_value_error():
    with pytest.raises(ValueError):
        parse_notification("<xml/>", "bucket1", "", "sqs")


# MinIO's webhook and listen payloads, in the format MinIO documents (wrapper with EventName and Key; records
# carry userMetadata with X-Amz-Meta-* names). MinIO's server cannot be installed here to record one live.
MINIO_EVENT = {
    "EventName": "s3:ObjectCreated:Put",
    "Key": "bucket1/incoming/data file.csv",
    "Records": [{
        "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "", "eventTime": "2026-11-28T01:00:00.000Z",
        "eventName": "s3:ObjectCreated:Put",
        "userIdentity": {"principalId": "minioadmin"},
        "s3": {
            "s3SchemaVersion": "1.0", "configurationId": "Config",
            "bucket": {"name": "bucket1", "ownerIdentity": {"principalId": "minioadmin"},
                       "arn": "arn:aws:s3:::bucket1"},
            "object": {"key": "incoming%2Fdata+file.csv", "size": 10, "eTag": "0f343b0931126a20f133d67c2b018a3b",
                       "contentType": "text/csv",
                       "userMetadata": {"X-Amz-Meta-Gcl": "{\"computation\":\"c\"}", "content-type": "text/csv"},
                       "sequencer": "17C7F3A9A0E1C4C2"},
        },
    }],
}


def test_minio_records_carry_the_user_metadata_so_no_head_is_needed():
    (ev,) = parse_minio_event(json.dumps(MINIO_EVENT), "bucket1", "", "minio")
    assert ev.key == "incoming/data file.csv"
    assert ev.metadata == {"gcl": "{\"computation\":\"c\"}"}
    assert ev.etag == "0f343b0931126a20f133d67c2b018a3b"


def recorded_filer_events():
    decoder = FilerStreamDecoder()
    events = []
    for line in (DATA / "seaweedfs-filer-events.txt").read_text().splitlines(keepends=True):
        event = decoder.feed(line)
        if event is not None:
            events.append(event)
    return events


def test_the_recorded_seaweedfs_stream_decodes_into_its_eight_events():
    assert len(recorded_filer_events()) == 8


def test_seaweedfs_events_give_keys_etags_and_metadata_and_skip_the_rest():
    from gcl_orchestrator.model import ObjectRemoved

    events = [parse_filer_event(e, "bucket1", "") for e in recorded_filer_events()]
    created = [e for e in events if e is not None and not isinstance(e, ObjectRemoved)]
    found = [(c.key, c.metadata) for c in created]
    gcl = json.dumps({"computation": "p", "handler_type": "h", "inputs": ["incoming/a b+c.csv"],
                      "output": "out.json"}, separators=(",", ":"))
    # directory entries and the reserved .gclo/ keys give nothing; the deletion is an ObjectRemoved
    assert found == [("incoming/a b+c.csv", {"gcl": gcl}), ("incoming/a b+c.csv", {}), ("plain.txt", {})]
    assert [e.key for e in events if isinstance(e, ObjectRemoved)] == ["plain.txt"]
    first = created[0]
    assert first.etag and len(first.etag) == 32  # the S3 ETag (MD5 hex), decoded from the filer's base64


def test_seaweedfs_events_for_other_buckets_or_prefixes_are_ignored():
    events = recorded_filer_events()
    assert [parse_filer_event(e, "other", "") for e in events] == [None] * 8
    keys = [c.key for c in (parse_filer_event(e, "bucket1", "incoming/") for e in events) if c]
    assert keys == ["a b+c.csv", "a b+c.csv"]  # the deleted plain.txt is not under the prefix
