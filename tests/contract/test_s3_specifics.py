"""S3-only behaviour against real servers: notification set-up, SQS acknowledgement, the MinIO guard, the
webhook receiver, the LocalStack init hook, and clear errors for a wrong bucket or wrong credentials."""
from __future__ import annotations

import http.client
import importlib.util
import json
import uuid
from pathlib import Path

import boto3
import pytest

from gcl_orchestrator.errors import ConfigError, ObjectAlreadyExists, PermanentStorageError, TransientStorageError
from gcl_orchestrator.sources import MinioListenSource, MinioWebhookSource, SqsEventSource
from gcl_orchestrator.sources.s3_notifications import ensure_notifications
from gcl_orchestrator.storage import S3ObjectStore

from ..conftest import wait_until
from .conftest import new_bucket

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def moto_clients(moto):
    return boto3.client("s3", endpoint_url=moto.endpoint), boto3.client("sqs", endpoint_url=moto.endpoint)


def test_setting_up_notifications_is_idempotent_and_keeps_other_configurations(moto, moto_clients):
    s3, sqs = moto_clients
    bucket = new_bucket(moto.endpoint)
    other = sqs.create_queue(QueueName=f"other-{bucket}")["QueueUrl"]
    other_arn = sqs.get_queue_attributes(QueueUrl=other, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [
        {"Id": "someone-else", "QueueArn": other_arn, "Events": ["s3:ObjectRemoved:*"]}]})
    first = ensure_notifications(s3, sqs, bucket, f"q-{bucket}", prefix="in/")
    second = ensure_notifications(s3, sqs, bucket, f"q-{bucket}", prefix="in/")
    assert first == second
    configs = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    assert sorted(c["Id"] for c in configs) == sorted(["someone-else", first["configuration_id"]])


def test_an_sqs_message_is_deleted_only_after_every_event_in_it_is_acknowledged(moto, moto_clients):
    s3, sqs = moto_clients
    bucket = new_bucket(moto.endpoint)
    setup = ensure_notifications(s3, sqs, bucket, f"q-{bucket}")
    source = SqsEventSource(setup["queue_url"], bucket, client=sqs, visibility_timeout_s=1)
    got = []
    s3.put_object(Bucket=bucket, Key="a.csv", Body=b"x")
    wait_until(lambda: source.poll_once(got.append) >= 0 and any(e.key == "a.csv" for e in got), 10, "the event")
    # not acknowledged: the message comes back after its visibility timeout
    got.clear()
    wait_until(lambda: source.poll_once(got.append) >= 0 and any(e.key == "a.csv" for e in got), 10, "redelivery")
    next(e for e in got if e.key == "a.csv").ack()
    # acknowledged: the queue is empty for good
    attrs = sqs.get_queue_attributes(QueueUrl=setup["queue_url"], AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_connecting_to_a_missing_queue_says_to_run_setup_events(moto):
    with pytest.raises(ConfigError, match="gclo setup-events"):
        SqsEventSource.connect("no-such-queue", "bucket1", endpoint_url=moto.endpoint)


def test_the_minio_listener_refuses_servers_that_are_not_minio(seaweedfs):
    store = S3ObjectStore(new_bucket(seaweedfs.endpoint), endpoint_url=seaweedfs.endpoint)
    with pytest.raises(ConfigError, match="needs a MinIO server"):
        MinioListenSource(seaweedfs.endpoint, store.bucket, "", "k", "s", store.server())


@pytest.fixture
def webhook():
    got = []
    source = MinioWebhookSource("bucket1", "", secret="s" * 20, port=0)
    source.start(got.append)
    yield source, got
    source.stop()


def post(source, body: bytes, auth: str | None, declared_length: int | None = None):
    """POST and return the status. With `declared_length`, only the headers go out: the receiver must refuse a
    body by its declared size, without reading it."""
    host, port = source.address
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.putrequest("POST", "/")
        conn.putheader("Content-Length", str(declared_length if declared_length is not None else len(body)))
        if auth is not None:
            conn.putheader("Authorization", auth)
        conn.endheaders()
        if declared_length is None:
            conn.send(body)
        return conn.getresponse().status
    finally:
        conn.close()


def test_the_webhook_binds_to_loopback_and_takes_events_with_the_secret(webhook):
    from ..unit.test_s3_notifications import MINIO_EVENT

    source, got = webhook
    assert source.address[0] == "127.0.0.1"
    assert post(source, json.dumps(MINIO_EVENT).encode(), "Bearer " + "s" * 20) == 200
    assert [(e.key, e.metadata["gcl"]) for e in got] == [("incoming/data file.csv", "{\"computation\":\"c\"}")]


@pytest.mark.parametrize("auth, body, declared, code", [
    (None, b"{}", None, 401),
    ("Bearer wrong-secret-wrong-secret", b"{}", None, 401),
    ("Bearer " + "s" * 20, b"not json", None, 400),
    ("Bearer " + "s" * 20, b"", 5 << 20, 413),
])
def test_the_webhook_refuses_what_it_must(webhook, auth, body, declared, code):
    source, got = webhook
    assert post(source, body, auth, declared) == code
    assert got == []


def test_the_webhook_requires_a_real_secret():
    with pytest.raises(ConfigError, match="at least 16 characters"):
        MinioWebhookSource("bucket1", "", secret="short")


def test_the_localstack_init_hook_runs_the_same_setup_code(moto, moto_clients, monkeypatch):
    s3, sqs = moto_clients
    monkeypatch.setenv("GCLO_BUCKET", f"ls-{uuid.uuid4().hex[:10]}")
    monkeypatch.setenv("GCLO_QUEUE", "gclo-events")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    monkeypatch.setenv("GCLO_SETUP_MODULE", str(ROOT / "gcl_orchestrator" / "sources" / "s3_notifications.py"))
    spec = importlib.util.spec_from_file_location("gclo_init_hook", ROOT / "localstack" / "init" / "ready.d" /
                                                  "10-gclo-bucket-and-events.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    hook.main()
    hook.main()  # twice: idempotent
    bucket = hook.BUCKET
    configs = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    assert len(configs) == 1 and configs[0]["Events"] == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]


def test_a_missing_bucket_or_bad_credentials_is_one_clear_permanent_error(seaweedfs):
    missing = S3ObjectStore("no-such-bucket-here", endpoint_url=seaweedfs.endpoint)
    with pytest.raises(PermanentStorageError, match=f"bucket 'no-such-bucket-here' at {seaweedfs.endpoint} does not exist"):
        list(missing.list())
    bucket = new_bucket(seaweedfs.endpoint)
    wrong = S3ObjectStore(bucket, client=boto3.client("s3", endpoint_url=seaweedfs.endpoint,
                                                      aws_access_key_id="nobody", aws_secret_access_key="wrong"))
    with pytest.raises(PermanentStorageError, match=f"access denied to bucket '{bucket}'"):
        wrong.head("x")


def test_an_unreachable_endpoint_is_transient():
    from gcl_orchestrator.devservers import free_port

    store = S3ObjectStore("bucket1", endpoint_url=f"http://127.0.0.1:{free_port()}", connect_timeout_s=0.5)
    with pytest.raises(TransientStorageError, match="cannot reach"):
        store.head("x")


def test_requests_are_counted_by_operation(seaweedfs):
    store = S3ObjectStore(new_bucket(seaweedfs.endpoint), endpoint_url=seaweedfs.endpoint)
    store.put("a", b"1")
    store.head("a")
    store.get("a")
    list(store.list())
    assert store.requests == {"PutObject": 1, "HeadObject": 1, "GetObject": 1, "ListObjectsV2": 1}


def test_a_listing_reads_its_timestamps_without_botocores_slow_parser(seaweedfs, monkeypatch):
    import time

    import botocore.parsers

    from gcl_orchestrator.storage.s3 import _timestamp

    def refused(value):  # what every client's parser uses unless told otherwise
        raise AssertionError(f"botocore's own timestamp parser was asked for {value!r}")
    monkeypatch.setattr(botocore.parsers, "DEFAULT_TIMESTAMP_PARSER", refused)
    store = S3ObjectStore(new_bucket(seaweedfs.endpoint), endpoint_url=seaweedfs.endpoint)
    store.put("a", b"1")
    (listed,) = list(store.list())
    assert abs(listed.modified - time.time()) < 120
    assert abs(store.head("a").modified - listed.modified) < 2  # a header's HTTP date, the same instant
    assert _timestamp("2026-12-04T17:53:25.123Z").timestamp() == 1796406805.123
    assert _timestamp("Fri, 04 Dec 2026 17:53:25 GMT").timestamp() == 1796406805.0


@pytest.fixture
def no_proxy(monkeypatch):
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def test_small_writes_go_direct_and_land_as_the_client_would_write_them(seaweedfs, no_proxy):
    # Small PUTs skip the client's pipeline (signed by its signer, sent by urllib3); what lands is the same.
    store = S3ObjectStore(new_bucket(seaweedfs.endpoint), endpoint_url=seaweedfs.endpoint)
    through_client = []
    store.client.meta.events.register("before-send.s3.PutObject", lambda request, **_: through_client.append(1))
    info = store.create("out/a b.json", b'{"x": 1}', {"gcl": '{"computation": "c"}'})
    assert through_client == [] and store.requests == {"PutObject": 1}
    raw = boto3.client("s3", endpoint_url=seaweedfs.endpoint).head_object(Bucket=store.bucket, Key="out/a b.json")
    assert raw["Metadata"] == {"gcl": '{"computation": "c"}'} and raw["ETag"].strip('"') == info.etag
    with pytest.raises(ObjectAlreadyExists):
        store.create("out/a b.json", b"again")
    assert through_client == []


def test_a_direct_write_the_server_refuses_gets_the_clients_error(seaweedfs, no_proxy):
    missing = S3ObjectStore("no-such-bucket-here", endpoint_url=seaweedfs.endpoint)
    with pytest.raises(PermanentStorageError, match="bucket 'no-such-bucket-here' at .* does not exist"):
        missing.create("x", b"1")
    assert missing.requests == {"PutObject": 2}  # the direct attempt, then the client's for the canonical error


def test_a_direct_write_to_an_unreachable_endpoint_is_transient(no_proxy):
    from gcl_orchestrator.devservers import free_port

    store = S3ObjectStore("bucket1", endpoint_url=f"http://127.0.0.1:{free_port()}", connect_timeout_s=0.5)
    with pytest.raises(TransientStorageError, match="cannot reach"):
        store.create("x", b"1")


def test_the_direct_path_is_only_for_plain_http_without_a_proxy(monkeypatch):
    from gcl_orchestrator.storage.s3 import _direct_applies

    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    assert _direct_applies("http://127.0.0.1:8333")
    assert not _direct_applies("https://s3.eu-west-1.amazonaws.com")  # the client's certificate settings
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert not _direct_applies("http://10.1.2.3:9000")  # the client's proxy settings
    monkeypatch.setenv("NO_PROXY", "10.1.2.3")
    assert _direct_applies("http://10.1.2.3:9000")
    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.setenv("ALL_PROXY", "http://proxy.example:3128")
    assert not _direct_applies("http://10.1.2.4:9000")


def test_a_large_put_goes_through_the_client_and_asks_for_100_continue(seaweedfs):
    # A body the server may refuse is worth one round trip before sending it; small ones are not.
    store = S3ObjectStore(new_bucket(seaweedfs.endpoint), endpoint_url=seaweedfs.endpoint)
    sent = []
    store.client.meta.events.register("before-send.s3.PutObject",
                                      lambda request, **_: sent.append("Expect" in request.headers))
    size = 2 << 20
    store.create("out.bin", b"x" * size)
    assert sent == [True]
    assert store.get("out.bin").info.size == size


def test_a_listing_goes_direct_and_finds_what_the_client_finds(seaweedfs, no_proxy, monkeypatch):
    # Listing pages skip the client's pipeline and XML parser (a restart lists every object); keys that XML or a
    # URL would mangle come back whole, across pages, with .gclo/ left out when asked.
    from gcl_orchestrator.storage.s3 import _Direct

    monkeypatch.setattr(_Direct, "page_size", 2)
    store = S3ObjectStore(new_bucket(seaweedfs.endpoint), endpoint_url=seaweedfs.endpoint)
    keys = ["a b.json", "x+y&z<w>'\".txt", "ünï/cödé €", "p/q%20r", ".gclo/status.json", "~z", "n=1;m=2?"]
    for key in keys:
        store.put(key, key.encode())
    through_client = []
    store.client.meta.events.register("before-send.s3.ListObjectsV2", lambda **_: through_client.append(1))
    direct, direct_user = list(store.list()), list(store.list(reserved=False))
    assert not through_client and store.requests["ListObjectsV2"] >= 6  # pages of two
    assert sorted(i.key for i in direct) == sorted(keys)
    assert [i.key for i in direct_user] == sorted(k for k in keys if not k.startswith(".gclo/"))
    store._direct = None  # the same listings through the client
    for mine, theirs in ((direct, list(store.list())), (direct_user, list(store.list(reserved=False)))):
        assert [(i.key, i.etag, i.size) for i in mine] == [(i.key, i.etag, i.size) for i in theirs]
        assert all(abs(a.modified - b.modified) < 0.01 for a, b in zip(mine, theirs))
    assert through_client


def test_a_direct_listing_the_server_refuses_is_asked_again_through_the_client(seaweedfs, no_proxy):
    store = S3ObjectStore("no-such-bucket-" + uuid.uuid4().hex[:8], endpoint_url=seaweedfs.endpoint)
    with pytest.raises(PermanentStorageError, match="does not exist"):
        list(store.list())
    assert store.requests["ListObjectsV2"] == 2  # the direct page refused, then the client's answer
