"""Reading the timer table's DynamoDB stream shard by shard, with a durable position.

``forward_ttl_stream`` runs this for deployments without Lambda. Each shard's
position (the last record handled) is kept in the database (StreamCheckpoint),
so a restart resumes after it: at-least-once, never skipping a record. A record
whose send fails stops that shard's pass before it; the next pass retries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from . import metrics
from .models import StreamCheckpoint
from .ttl_forwarder import forward_records

logger = logging.getLogger(__name__)


@dataclass
class PassStats:
    shards: int = 0
    read: int = 0
    forwarded: int = 0
    failed: int = 0


@dataclass
class StreamReader:
    streams: Any  # a boto3 "dynamodbstreams" client
    sqs: Any
    stream_arn: str
    queue_url: str
    queue_name: str
    batch_size: int = 1000

    def shards(self) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        start: str | None = None
        while True:
            kwargs: dict[str, Any] = {"StreamArn": self.stream_arn}
            if start:
                kwargs["ExclusiveStartShardId"] = start
            description = self.streams.describe_stream(**kwargs)["StreamDescription"]
            shards += description["Shards"]
            start = description.get("LastEvaluatedShardId")
            if not start:
                return shards

    def run_once(self) -> PassStats:
        """Forward everything the stream holds now; returns what was done."""
        stats = PassStats()
        shards = self.shards()
        known = {shard["ShardId"] for shard in shards}
        finished = set(
            StreamCheckpoint.objects.filter(stream_arn=self.stream_arn, finished=True).values_list(
                "shard_id", flat=True
            )
        )
        for shard in shards:
            shard_id = shard["ShardId"]
            parent = shard.get("ParentShardId")
            if shard_id in finished or (parent in known and parent not in finished):
                continue  # done, or its parent's records must go first
            stats.shards += 1
            if self._read_shard(shard, stats):
                finished.add(shard_id)
        return stats

    def _iterator(self, shard_id: str, after: str) -> str | None:
        """An iterator after ``after`` (or at the oldest record); None if the shard is gone."""
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard_id}
        if after:
            kwargs |= {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}
        else:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        try:
            return str(self.streams.get_shard_iterator(**kwargs)["ShardIterator"])
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "TrimmedDataAccessException" and after:
                # The position is older than the stream keeps (24 h): the records in
                # between are gone. Say so loudly; the overdue sweep releases their steps.
                logger.error(
                    "stream %s shard %s: records after %s were trimmed before they were "
                    "read; resuming at the oldest record kept (the overdue sweep releases "
                    "the steps whose removals were lost)",
                    self.stream_arn,
                    shard_id,
                    after,
                )
                return self._iterator(shard_id, "")
            if code == "ResourceNotFoundException":
                return None  # the shard itself was trimmed away
            raise

    def _read_shard(self, shard: dict[str, Any], stats: PassStats) -> bool:
        """Read one shard as far as it goes now. True when the shard is closed and done.

        An open shard is read until a page comes back empty (caught up). A closed
        shard (it has an ending sequence number) is read until the stream stops
        handing out iterators: DynamoDB may return empty pages in the middle of one.
        """
        shard_id = shard["ShardId"]
        closed = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
        checkpoint, _ = StreamCheckpoint.objects.get_or_create(
            stream_arn=self.stream_arn, shard_id=shard_id
        )
        iterator = self._iterator(shard_id, checkpoint.sequence_number)
        while iterator:
            try:
                response = self.streams.get_records(ShardIterator=iterator, Limit=self.batch_size)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ExpiredIteratorException":
                    raise
                iterator = self._iterator(shard_id, checkpoint.sequence_number)
                continue
            records = response["Records"]
            if records:
                sent, failed = forward_records(records, send=self._send, queue_name=self.queue_name)
                stats.read += len(records)
                stats.forwarded += sent
                metrics.STEPS_RELEASED.labels("dynamodb_ttl").inc(sent)
                stats.failed += len(failed)
                done = records
                if failed:
                    first = [r["dynamodb"]["SequenceNumber"] for r in records].index(failed[0])
                    done = records[:first]
                if done:
                    checkpoint.sequence_number = done[-1]["dynamodb"]["SequenceNumber"]
                    checkpoint.save(update_fields=["sequence_number", "updated_at"])
                if failed:
                    logger.warning(
                        "stream %s shard %s: %s send(s) failed; retrying from sequence %s",
                        self.stream_arn,
                        shard_id,
                        len(failed),
                        failed[0],
                    )
                    return False
            iterator = response.get("NextShardIterator")
            if not records and not closed:
                break  # caught up with an open shard
        if not iterator:
            checkpoint.finished = True
            checkpoint.save(update_fields=["finished", "updated_at"])
            return True
        return False

    def _send(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
