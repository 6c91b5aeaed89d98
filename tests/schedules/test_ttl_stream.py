"""The stream reader's paging rules: closed shards, trimmed positions, expired iterators.

These are the DynamoDB Streams behaviours moto does not reproduce (it never closes
a shard, trims a stream or expires an iterator), so the streams client here is a
scripted stand-in that answers as the DynamoDB Streams API documents; the reader's
happy path runs against moto's real stream in tests/engines/test_dynamodb_ttl.py.
"""

from __future__ import annotations

import json
import logging
import signal
from io import StringIO
from typing import Any

import pytest
from botocore.exceptions import ClientError
from django.core.management import call_command

from schedules.models import StreamCheckpoint
from schedules.ttl_stream import StreamReader
from tests.fixtures_aws import ttl_removal

pytestmark = pytest.mark.django_db


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "GetRecords")


class ScriptedStreams:
    """One shard whose GetRecords answers are the ``pages`` given, in order."""

    def __init__(self, pages: list[list[dict]], *, closed: bool, trimmed_before: str = "") -> None:
        self.pages = pages
        self.closed = closed
        self.trimmed_before = trimmed_before
        self.iterator_requests: list[dict[str, Any]] = []
        self.expire_next = False

    def describe_stream(self, **kwargs: Any) -> dict:
        shard: dict[str, Any] = {
            "ShardId": "s1",
            "SequenceNumberRange": {"StartingSequenceNumber": "1"},
        }
        if self.closed:
            shard["SequenceNumberRange"]["EndingSequenceNumber"] = "999"
        return {"StreamDescription": {"Shards": [shard]}}

    def get_shard_iterator(self, **kwargs: Any) -> dict:
        self.iterator_requests.append(kwargs)
        after = kwargs.get("SequenceNumber", "")
        if after and self.trimmed_before and int(after) < int(self.trimmed_before):
            raise client_error("TrimmedDataAccessException")
        # The iterator is the index of the first page holding a record after ``after``.
        for index, page in enumerate(self.pages):
            if any(int(r["dynamodb"]["SequenceNumber"]) > int(after or 0) for r in page):
                return {"ShardIterator": str(index)}
        return {"ShardIterator": str(len(self.pages))}

    def get_records(self, ShardIterator: str, Limit: int) -> dict:
        if self.expire_next:
            self.expire_next = False
            raise client_error("ExpiredIteratorException")
        index = int(ShardIterator)
        page = self.pages[index] if index < len(self.pages) else []
        response: dict[str, Any] = {"Records": page}
        if index + 1 < len(self.pages) or not self.closed:
            response["NextShardIterator"] = str(index + 1)
        return response  # a closed shard's last page has no next iterator


class RecordingSQS:
    def __init__(self) -> None:
        self.steps: list[list[int]] = []

    def send_message(self, QueueUrl: str, MessageBody: str) -> None:
        self.steps.append(json.loads(json.loads(MessageBody)["body"])[0])


def reader_for(streams: ScriptedStreams, sqs: RecordingSQS) -> StreamReader:
    return StreamReader(streams=streams, sqs=sqs, stream_arn="arn:s", queue_url="u", queue_name="q")


def test_a_closed_shard_is_read_past_empty_pages_and_finished():
    streams = ScriptedStreams(
        [[ttl_removal(1, 1, "10")], [], [], [ttl_removal(2, 1, "20")]], closed=True
    )
    sqs = RecordingSQS()
    stats = reader_for(streams, sqs).run_once()
    assert sqs.steps == [[1, 1], [2, 1]]  # the record after the empty pages is not lost
    assert stats.read == 2
    assert StreamCheckpoint.objects.get().finished


def test_an_open_shard_stops_at_an_empty_page_and_stays_open():
    streams = ScriptedStreams([[ttl_removal(1, 1, "10")], []], closed=False)
    sqs = RecordingSQS()
    reader_for(streams, sqs).run_once()
    checkpoint = StreamCheckpoint.objects.get()
    assert (checkpoint.sequence_number, checkpoint.finished) == ("10", False)


def test_a_trimmed_position_resumes_at_the_oldest_record_kept(caplog):
    StreamCheckpoint.objects.create(stream_arn="arn:s", shard_id="s1", sequence_number="5")
    streams = ScriptedStreams([[ttl_removal(3, 1, "30")], []], closed=False, trimmed_before="20")
    sqs = RecordingSQS()
    with caplog.at_level(logging.ERROR, logger="schedules.ttl_stream"):
        reader_for(streams, sqs).run_once()
    assert sqs.steps == [[3, 1]]
    assert streams.iterator_requests[-1]["ShardIteratorType"] == "TRIM_HORIZON"
    assert "trimmed before they were read" in caplog.text
    assert StreamCheckpoint.objects.get().sequence_number == "30"


def test_an_expired_iterator_is_renewed_from_the_checkpoint():
    streams = ScriptedStreams([[ttl_removal(1, 1, "10")], [ttl_removal(2, 1, "20")]], closed=True)
    streams.expire_next = True
    sqs = RecordingSQS()
    reader_for(streams, sqs).run_once()
    assert sqs.steps == [[1, 1], [2, 1]]
    assert len(streams.iterator_requests) == 2


def test_the_stream_command_survives_a_failed_pass(settings, monkeypatch):
    """A pass that raises is logged and retried; the command keeps running until stopped."""
    from schedules.management.commands import forward_ttl_stream
    from schedules.ttl_stream import PassStats

    settings.SCHEDULES_SQS_QUEUE_URL = "http://127.0.0.1:1/queue/jobs"
    handlers: dict[int, Any] = {}
    monkeypatch.setattr(
        signal, "signal", lambda signum, handler: handlers.update({signum: handler})
    )
    monkeypatch.setattr(forward_ttl_stream, "aws_client", lambda name: object())
    monkeypatch.setattr(forward_ttl_stream, "ERROR_BACKOFF_BASE", 0.01)
    passes: list[str] = []

    def run_once(self: StreamReader) -> PassStats:
        passes.append("pass")
        if len(passes) == 1:
            raise client_error("InternalServerError")
        handlers[signal.SIGTERM](signal.SIGTERM, None)  # as a SIGTERM would
        return PassStats()

    monkeypatch.setattr(StreamReader, "run_once", run_once)
    out = StringIO()
    call_command(
        "forward_ttl_stream", "--stream-arn", "arn:s", "--poll-interval", "0.01", stdout=out
    )
    assert passes == ["pass", "pass"]
    assert out.getvalue().rstrip().endswith("stopped")


class FailingSQS(RecordingSQS):
    """Sends every message except those of the steps in ``poison``, which always fail."""

    def __init__(self, poison: set[tuple[int, int]]) -> None:
        super().__init__()
        self.poison = poison

    def send_message(self, QueueUrl: str, MessageBody: str) -> None:
        step = json.loads(json.loads(MessageBody)["body"])[0]
        if tuple(step) in self.poison:
            raise ConnectionError("the queue refuses this message")
        self.steps.append(step)


def test_a_malformed_ttl_removal_is_skipped_counted_and_passed(caplog):
    from schedules import metrics

    hand_added = ttl_removal(2, 1, "20")
    del hand_added["dynamodb"]["OldImage"]["step_id"]  # an item added to the table by hand
    streams = ScriptedStreams(
        [[ttl_removal(1, 1, "10"), hand_added, ttl_removal(3, 1, "30")], []], closed=False
    )
    sqs = RecordingSQS()
    before = metrics.TTL_RECORDS_MALFORMED._value.get()
    with caplog.at_level(logging.ERROR, logger="schedules.ttl_forwarder"):
        stats = reader_for(streams, sqs).run_once()
    assert sqs.steps == [[1, 1], [3, 1]]  # the good records around it are forwarded
    assert (stats.read, stats.forwarded, stats.failed, stats.malformed) == (3, 2, 0, 1)
    assert metrics.TTL_RECORDS_MALFORMED._value.get() == before + 1
    assert StreamCheckpoint.objects.get().sequence_number == "30"  # not held back by it
    assert "sequence 20" in caplog.text


def test_a_record_whose_send_keeps_failing_is_passed_after_max_tries(caplog):
    """The try count lives on the checkpoint, so it survives restarts (a new reader per pass);
    at the last try the reader logs an error naming the record and moves past it."""
    from schedules import metrics

    streams = ScriptedStreams(
        [[ttl_removal(1, 1, "10"), ttl_removal(2, 7, "20"), ttl_removal(3, 1, "30")], []],
        closed=False,
    )
    sqs = FailingSQS(poison={(2, 7)})

    def one_pass() -> Any:
        reader = reader_for(streams, sqs)
        reader.max_tries = 3
        return reader.run_once()

    for tries in (1, 2):
        stats = one_pass()
        assert (stats.failed, stats.abandoned) == (1, 0)
        checkpoint = StreamCheckpoint.objects.get()
        assert checkpoint.sequence_number == "10"  # held before the failing record
        assert (checkpoint.failing_sequence_number, checkpoint.failed_tries) == ("20", tries)
    abandoned_before = metrics.TTL_RECORDS_ABANDONED._value.get()
    with caplog.at_level(logging.ERROR, logger="schedules.ttl_stream"):
        stats = one_pass()
    assert (stats.failed, stats.abandoned) == (1, 1)
    checkpoint = StreamCheckpoint.objects.get()
    assert checkpoint.sequence_number == "30"  # moved past it
    assert (checkpoint.failing_sequence_number, checkpoint.failed_tries) == ("", 0)
    assert metrics.TTL_RECORDS_ABANDONED._value.get() == abandoned_before + 1
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = error.getMessage()
    for fact in ("arn:s", "shard s1", "sequence 20", "step 2 version 7", "overdue sweep"):
        assert fact in message, (fact, message)
    assert one_pass().read == 0  # not tried again
    assert [3, 1] in sqs.steps  # the record after it was forwarded (at least once)


def test_a_record_that_fails_then_goes_through_clears_its_count():
    streams = ScriptedStreams([[ttl_removal(1, 1, "10")], []], closed=False)
    sqs = FailingSQS(poison={(1, 1)})
    reader = reader_for(streams, sqs)
    reader.run_once()
    assert StreamCheckpoint.objects.get().failed_tries == 1
    sqs.poison = set()
    reader.run_once()
    checkpoint = StreamCheckpoint.objects.get()
    assert (checkpoint.sequence_number, checkpoint.failing_sequence_number) == ("10", "")
    assert checkpoint.failed_tries == 0 and sqs.steps == [[1, 1]]


def test_the_stream_command_gives_up_after_schedules_ttl_stream_max_tries(settings, monkeypatch):
    from schedules.management.commands import forward_ttl_stream

    settings.SCHEDULES_SQS_QUEUE_URL = "http://127.0.0.1:1/queue/jobs"
    settings.SCHEDULES_TTL_STREAM_MAX_TRIES = 2
    streams = ScriptedStreams(
        [[ttl_removal(1, 1, "10"), ttl_removal(2, 1, "20")], []], closed=False
    )
    sqs = FailingSQS(poison={(1, 1)})
    clients = {"dynamodbstreams": streams, "sqs": sqs}
    monkeypatch.setattr(forward_ttl_stream, "aws_client", clients.__getitem__)

    def one_pass() -> dict:
        out = StringIO()
        call_command("forward_ttl_stream", "--stream-arn", "arn:s", "--once", "--json", stdout=out)
        return json.loads(out.getvalue())

    assert one_pass()["abandoned"] == 0
    second = one_pass()
    assert (second["failed"], second["abandoned"], second["malformed"]) == (1, 1, 0)
    assert StreamCheckpoint.objects.get().sequence_number == "20"
