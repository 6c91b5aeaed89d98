"""Reading the timer table's DynamoDB stream shard by shard, with a durable position.

``forward_ttl_stream`` runs this for deployments without Lambda. Each shard's
position (the last record handled) is kept in the database (StreamCheckpoint),
so a restart resumes after it: at-least-once. A record whose send fails stops
that shard's pass before it and the next pass retries it, up to
SCHEDULES_TTL_STREAM_MAX_TRIES passes in a row (counted on the checkpoint, so
restarts do not reset it); then the reader logs an error and moves past it, and
the overdue sweep releases its step. A TTL removal that names no step is logged,
counted and skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from . import metrics
from .models import StreamCheckpoint
from .ttl_forwarder import MalformedRecord, forward_records, sequence_number, step_of

logger = logging.getLogger(__name__)


@dataclass
class PassStats:
    shards: int = 0
    read: int = 0
    forwarded: int = 0
    failed: int = 0
    malformed: int = 0  # TTL removals naming no step: skipped
    abandoned: int = 0  # records moved past after SCHEDULES_TTL_STREAM_MAX_TRIES failed sends


@dataclass
class StreamReader:
    streams: Any  # a boto3 "dynamodbstreams" client
    sqs: Any
    stream_arn: str
    queue_url: str
    queue_name: str
    batch_size: int = 1000
    #: Passes in a row whose send of one record may fail before the reader moves past it.
    max_tries: int = 5

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
                result = forward_records(records, send=self._send, queue_name=self.queue_name)
                stats.read += len(records)
                stats.forwarded += result.sent
                stats.failed += len(result.failed)
                stats.malformed += len(result.malformed)
                metrics.STEPS_RELEASED.labels("dynamodb_ttl").inc(result.sent)
                metrics.TTL_RECORDS_MALFORMED.inc(len(result.malformed))
                if not self._settle(checkpoint, records, result.failed, stats):
                    return False
            iterator = response.get("NextShardIterator")
            if not records and not closed:
                break  # caught up with an open shard
        if not iterator:
            checkpoint.finished = True
            checkpoint.save(update_fields=["finished", "updated_at"])
            return True
        return False

    def _settle(
        self,
        checkpoint: StreamCheckpoint,
        records: list[dict[str, Any]],
        failed: list[str],
        stats: PassStats,
    ) -> bool:
        """Move the checkpoint past what this page handled. False: stop the shard's pass.

        It stops before the first record whose send failed, and counts the failure on the
        checkpoint. The record that fails for the ``max_tries``-th pass in a row is
        abandoned: logged as an error, and the checkpoint moves past it (its step is
        released by the overdue sweep, SCHEDULES_TTL_MAX_LATENESS after its due time).
        """
        sequence = [sequence_number(r) for r in records]
        failing, tries = checkpoint.failing_sequence_number, checkpoint.failed_tries
        stop_at: int | None = None
        for seq in failed:
            tries = tries + 1 if seq == failing else 1
            failing = seq
            if tries < max(1, self.max_tries):
                stop_at = sequence.index(seq)
                break
            self._abandon(checkpoint.shard_id, records[sequence.index(seq)], tries)
            stats.abandoned += 1
        if stop_at is None:
            failing, tries = "", 0  # nothing holds the shard back now
        done = records if stop_at is None else records[:stop_at]
        if done:
            checkpoint.sequence_number = sequence_number(done[-1])
        checkpoint.failing_sequence_number, checkpoint.failed_tries = failing, tries
        checkpoint.save(
            update_fields=[
                "sequence_number",
                "failing_sequence_number",
                "failed_tries",
                "updated_at",
            ]
        )
        if stop_at is None:
            return True
        logger.warning(
            "stream %s shard %s: %s send(s) failed; retrying from sequence %s (try %s of %s)",
            self.stream_arn,
            checkpoint.shard_id,
            len(failed),
            failing,
            tries,
            self.max_tries,
        )
        return False

    def _abandon(self, shard_id: str, record: dict[str, Any], tries: int) -> None:
        try:
            step_id, version = step_of(record)
        except MalformedRecord:  # forward_records skips these; never sent, never failed
            step_id = version = 0
        logger.error(
            "stream %s shard %s: moving past the TTL removal at sequence %s (step %s version "
            "%s, engine dynamodb_ttl) after %s failed sends in a row "
            "(SCHEDULES_TTL_STREAM_MAX_TRIES); the overdue sweep releases that step "
            "SCHEDULES_TTL_MAX_LATENESS after its due time",
            self.stream_arn,
            shard_id,
            sequence_number(record),
            step_id,
            version,
            tries,
        )
        metrics.TTL_RECORDS_ABANDONED.inc()

    def _send(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
