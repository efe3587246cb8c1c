"""The SQS source: S3 bucket notifications delivered to a queue (AWS, LocalStack, moto). A message is deleted
only after the runtime has handled every object it announced; until then SQS redelivers it."""
from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from ..errors import ConfigError
from ..interfaces import Emit
from .looping import LoopingSource
from .s3_records import parse_notification

log = logging.getLogger("gclo.sources")


class SqsEventSource(LoopingSource):
    name = "sqs"

    def __init__(self, queue_url: str, bucket: str, prefix: str = "", *, client: Any = None,
                 endpoint_url: str | None = None, wait_s: int = 1, visibility_timeout_s: int = 120):
        super().__init__()
        self.queue_url = queue_url
        self.bucket = bucket
        self.prefix = prefix
        self.wait_s = wait_s
        self.visibility_timeout_s = visibility_timeout_s
        self.client = client or boto3.session.Session().client(
            "sqs", endpoint_url=endpoint_url, config=Config(retries={"total_max_attempts": 1}, read_timeout=wait_s + 10))

    @classmethod
    def connect(cls, queue: str, bucket: str, prefix: str = "", *, endpoint_url: str | None = None) -> "SqsEventSource":
        """A source for `queue` (a name or URL), which must exist: `gclo setup-events` creates it."""
        source = cls(queue, bucket, prefix, endpoint_url=endpoint_url)
        if "://" not in queue:
            try:
                source.queue_url = source.client.get_queue_url(QueueName=queue)["QueueUrl"]
            except source.client.exceptions.QueueDoesNotExist:
                raise ConfigError(f"SQS queue {queue!r} does not exist: run `gclo setup-events --store "
                                  f"s3://{bucket} --queue {queue}` first") from None
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                raise ConfigError(f"cannot look up SQS queue {queue!r}: {exc}") from None
        return source

    def _acker(self, receipt: str, count: int):
        remaining = [count]
        lock = threading.Lock()

        def ack() -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0] != 0:
                    return
            self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)

        return ack

    def poll_once(self, emit: Emit) -> int:
        """One receive; returns how many messages came (public for tests)."""
        r = self.client.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                        WaitTimeSeconds=self.wait_s, VisibilityTimeout=self.visibility_timeout_s)
        messages = r.get("Messages", [])
        for message in messages:
            receipt = message["ReceiptHandle"]
            try:
                events = parse_notification(message.get("Body", ""), self.bucket, self.prefix, self.name)
            except ValueError:
                log.warning("sqs: dropping a message that is not JSON: %.200s", message.get("Body", ""))
                events = []
            if not events:  # a test event, another bucket, another event type: nothing to wait for
                self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
                continue
            ack = self._acker(receipt, len(events))
            for ev in events:
                emit(dataclasses.replace(ev, ack=ack))
        return len(messages)

    def _loop(self, emit: Emit) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                self.poll_once(emit)
                backoff = 0.5
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                log.warning("sqs: receiving from %s failed: %s (next try in %.1fs)", self.queue_url, exc, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)
