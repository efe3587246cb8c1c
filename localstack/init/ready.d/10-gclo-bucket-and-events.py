"""LocalStack init hook (READY stage): create the bucket, the SQS queue and the bucket notification that feeds
it. It runs the very code `gclo setup-events` runs (gcl_orchestrator/sources/s3_notifications.py, mounted into
the container and loaded from its file, since the package itself is not installed inside LocalStack).

Settings (environment): GCLO_BUCKET (default gclo), GCLO_QUEUE (default gclo-events), GCLO_PREFIX (default
none), GCLO_SETUP_MODULE (default /opt/gclo/s3_notifications.py), AWS_ENDPOINT_URL (default localhost:4566).
"""
import importlib.util
import os

import boto3

BUCKET = os.environ.get("GCLO_BUCKET", "gclo")
QUEUE = os.environ.get("GCLO_QUEUE", "gclo-events")
PREFIX = os.environ.get("GCLO_PREFIX", "")
MODULE = os.environ.get("GCLO_SETUP_MODULE", "/opt/gclo/s3_notifications.py")
ENDPOINT = os.environ.get("AWS_ENDPOINT_URL", "http://localhost:4566")


def _setup_module():
    spec = importlib.util.spec_from_file_location("gclo_s3_notifications", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    session = boto3.session.Session(aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
                                    aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
                                    region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    s3 = session.client("s3", endpoint_url=ENDPOINT)
    sqs = session.client("sqs", endpoint_url=ENDPOINT)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if BUCKET not in existing:
        s3.create_bucket(Bucket=BUCKET)
    result = _setup_module().ensure_notifications(s3, sqs, BUCKET, QUEUE, PREFIX)
    print(f"gclo: bucket {BUCKET!r} sends object-created events to {result['queue_url']}")


main()
