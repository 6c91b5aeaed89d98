"""forward_ttl_stream: the TTL forwarder for deployments without Lambda."""

from __future__ import annotations

import json
import logging
import signal
import threading
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from schedules.aws import aws_client
from schedules.ttl_stream import StreamReader

logger = logging.getLogger(__name__)

#: Wait after a failed pass: 1 s, doubling per failed pass in a row, up to a minute.
ERROR_BACKOFF_BASE = 1.0
ERROR_BACKOFF_MAX = 60.0


class Command(BaseCommand):
    help = (
        "Read the DynamoDB timer table's stream shard by shard and send the message of every "
        "TTL removal to the jobs queue (INSERT, MODIFY and user deletes are ignored). The "
        "position of each shard is kept in the database, so a restart resumes where it "
        "stopped. A failed pass (AWS or the database unreachable) is logged and retried with "
        "a backoff of up to a minute. A record whose send fails is retried by the next pass, "
        "up to SCHEDULES_TTL_STREAM_MAX_TRIES passes in a row; then it is logged as an error "
        "and passed over (the overdue sweep releases its step). A TTL removal that names no "
        "step is logged and skipped. Runs until SIGTERM/Ctrl-C, or one pass with --once. "
        "Exit 0 on success, 1 if the stream or queue cannot be found."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="Forward what the stream holds now, then exit."
        )
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=settings.SCHEDULES_TTL_STREAM_POLL_INTERVAL,
            help="Seconds between passes when caught up (default: "
            "SCHEDULES_TTL_STREAM_POLL_INTERVAL).",
        )
        parser.add_argument(
            "--stream-arn",
            default="",
            help="Stream to read (default: the latest stream of SCHEDULES_TTL_TABLE_NAME).",
        )
        parser.add_argument(
            "--json", action="store_true", help="With --once: print the pass's counts as JSON."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.SCHEDULES_SQS_QUEUE_URL:
            raise CommandError("Set SCHEDULES_SQS_QUEUE_URL to the jobs queue (aws_provision).")
        stream_arn = options["stream_arn"] or self._latest_stream_arn()
        reader = StreamReader(
            streams=aws_client("dynamodbstreams"),
            sqs=aws_client("sqs"),
            stream_arn=stream_arn,
            queue_url=settings.SCHEDULES_SQS_QUEUE_URL,
            queue_name=settings.CELERY_TASK_DEFAULT_QUEUE,
            max_tries=settings.SCHEDULES_TTL_STREAM_MAX_TRIES,
        )
        if options["once"]:
            stats = reader.run_once()
            if options["json"]:
                self.stdout.write(json.dumps(stats.__dict__))
            else:
                self.stdout.write(self._summary(stats))
            return
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.stdout.write(f"forwarding TTL removals from {stream_arn}; Ctrl-C to stop")
        failures = 0
        while not stop.is_set():
            try:
                stats = reader.run_once()
            except Exception:  # AWS or the database away: log, back off, try again
                failures += 1
                delay = min(ERROR_BACKOFF_MAX, ERROR_BACKOFF_BASE * 2 ** (failures - 1))
                logger.exception("stream pass failed; retrying in %.1f s", delay)
                stop.wait(delay)
                continue
            failures = 0
            if stats.read:
                self.stdout.write(self._summary(stats))
            stop.wait(options["poll_interval"])
        self.stdout.write("stopped")

    def _summary(self, stats: Any) -> str:
        return (
            f"{stats.shards} shard(s): read {stats.read} record(s), forwarded {stats.forwarded} "
            f"TTL removal(s), {stats.failed} failed send(s), {stats.malformed} malformed "
            f"record(s) skipped, {stats.abandoned} record(s) given up after "
            f"{settings.SCHEDULES_TTL_STREAM_MAX_TRIES} failed sends"
        )

    def _latest_stream_arn(self) -> str:
        table = settings.SCHEDULES_TTL_TABLE_NAME
        try:
            description = aws_client("dynamodb").describe_table(TableName=table)["Table"]
        except Exception as exc:
            raise CommandError(
                f"Cannot read table {table!r} (SCHEDULES_TTL_TABLE_NAME): {exc}. "
                "Run aws_provision first."
            ) from exc
        arn = description.get("LatestStreamArn")
        if not arn:
            raise CommandError(f"Table {table!r} has no stream: run aws_provision.")
        return str(arn)
