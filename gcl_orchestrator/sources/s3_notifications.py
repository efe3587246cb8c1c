"""Set up S3 bucket notifications to an SQS queue, idempotently: what `gclo setup-events` runs, and what the
LocalStack init hook runs. Imports only boto3 and the standard library, so the hook can load this file alone.
"""
from __future__ import annotations

import json
from typing import Any

CONFIG_ID_PREFIX = "gclo-"
DEAD_LETTER_SUFFIX = "-dead-letters"
# A message received this often without being deleted goes to the dead-letter queue. The orchestrator deletes
# every message it has handled, a refused key included, so only what it keeps failing to read ends up there.
MAX_RECEIVES = 10


def queue_policy(queue_arn: str, bucket: str) -> str:
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "gclo-s3-to-sqs",
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}},
        }],
    })


def ensure_queue(sqs: Any, queue: str) -> str:
    """The URL of queue `queue` (a name or a URL), created if missing."""
    if queue.startswith(("http://", "https://")):
        return queue
    try:
        return sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        return sqs.create_queue(QueueName=queue)["QueueUrl"]


def ensure_notifications(s3: Any, sqs: Any, bucket: str, queue: str, prefix: str = "") -> dict[str, str]:
    """Create the queue and its dead-letter queue if needed, let the bucket send to the queue, and add (or
    replace) our queue configuration in the bucket's notification configuration, leaving every other
    configuration as it was. Safe to run again."""
    url = ensure_queue(sqs, queue)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    dead_url = ensure_queue(sqs, url.rstrip("/").rsplit("/", 1)[-1] + DEAD_LETTER_SUFFIX)
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": str(MAX_RECEIVES)})
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": queue_policy(arn, bucket), "RedrivePolicy": redrive})
    config_id = CONFIG_ID_PREFIX + arn.rsplit(":", 1)[-1]
    ours: dict[str, Any] = {"Id": config_id, "QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
    if prefix:
        ours["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    current.pop("ResponseMetadata", None)
    queues = [c for c in current.get("QueueConfigurations", []) if c.get("Id") != config_id]
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={**current, "QueueConfigurations": queues + [ours]})
    return {"queue_url": url, "queue_arn": arn, "configuration_id": config_id, "dead_letter_url": dead_url}
