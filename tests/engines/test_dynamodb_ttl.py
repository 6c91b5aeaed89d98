"""The DynamoDB TTL engine, its forwarder and the stream command, against moto over HTTP.

moto never expires items and its stream records carry no ``userIdentity``, so a
TTL removal is built the way AWS sends it; moto's real stream drives the
command for INSERT and user REMOVE records.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from schedules import services
from schedules.aws import aws_client
from schedules.engines import Timer, get_engine
from schedules.engines.dynamodb_ttl import DynamoDBTTLEngine, item_key
from schedules.models import Run, RunStatus, Step, StepState, StreamCheckpoint
from schedules.ttl_forwarder import celery_message, forward_records, is_ttl_removal, lambda_handler
from tests.fixtures_aws import Provisioned, ttl_removal


def timer(step_id: int = 1, version: int = 1, minutes: float = 30) -> Timer:
    return Timer(
        step_id=step_id,
        version=version,
        engine="dynamodb_ttl",
        due_at=timezone.now() + dt.timedelta(minutes=minutes, microseconds=1),
    )


def messages(queue_url: str) -> list[dict]:
    found = (
        aws_client("sqs")
        .receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        .get("Messages", [])
    )
    return [json.loads(m["Body"]) for m in found]


def test_arm_writes_one_item_with_a_ttl_in_epoch_seconds(aws: Provisioned):
    engine = DynamoDBTTLEngine()
    t = timer(step_id=3, version=2)
    assert engine.arm(t) == "step#3#v2"
    assert engine.arm(t) == "step#3#v2"  # conditional put: arming twice is harmless
    items = aws_client("dynamodb").scan(TableName="schedules-step-timers")["Items"]
    assert len(items) == 1
    (item,) = items
    # Ids, version and due time only; the TTL in seconds, never before the due time.
    assert set(item) == {"pk", "step_id", "version", "due_at", "expires_at"}
    assert int(item["expires_at"]["N"]) == math.ceil(t.due_at.timestamp())
    assert int(item["expires_at"]["N"]) < 10**10  # seconds, not milliseconds
    assert engine.describe(t).state == "waiting"
    engine.disarm(t)
    engine.disarm(t)  # already gone: not an error
    assert engine.describe(t).state == "absent"


def test_provision_enables_ttl_and_a_new_and_old_images_stream(aws: Provisioned):
    dynamodb = aws_client("dynamodb")
    table = dynamodb.describe_table(TableName="schedules-step-timers")["Table"]
    assert table["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    ttl = dynamodb.describe_time_to_live(TableName="schedules-step-timers")
    assert ttl["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "expires_at",
    }


def test_only_ttl_removals_are_forwarded():
    insert = {**ttl_removal(1, 1), "eventName": "INSERT"}
    modify = {**ttl_removal(1, 1), "eventName": "MODIFY"}
    user_delete = {k: v for k, v in ttl_removal(1, 1).items() if k != "userIdentity"}
    other_service = {
        **ttl_removal(1, 1),
        "userIdentity": {"type": "Service", "principalId": "example.com"},
    }
    assert is_ttl_removal(ttl_removal(1, 1))
    assert not any(map(is_ttl_removal, [insert, modify, user_delete, other_service]))
    sent: list[str] = []
    result = forward_records(
        [insert, modify, user_delete, other_service, ttl_removal(4, 2)],
        send=sent.append,
        queue_name="q",
    )
    assert (result.sent, result.failed, result.malformed) == (1, [], [])
    assert json.loads(json.loads(sent[0])["body"])[0] == [4, 2]


def hand_added_removal(seq: str, **image: dict) -> dict:
    """The TTL removal of an item that was not written by the engine (no step in it)."""
    record = ttl_removal(1, 1, seq)
    record["dynamodb"]["OldImage"] = {"pk": {"S": "added-by-hand"}, **image}
    return record


def test_a_malformed_ttl_removal_is_logged_and_skipped_without_stopping_the_batch(caplog):
    """No step_id/version in the old image, or not numbers: logged, counted, skipped; the
    good records of the same batch are still sent."""
    records = [
        ttl_removal(1, 1, "10"),
        hand_added_removal("20", expires_at={"N": "1700000000"}),
        hand_added_removal("30", step_id={"N": "abc"}, version={"N": "1"}),
        hand_added_removal("40", step_id={"S": "7"}, version={"S": "1"}),
        ttl_removal(2, 1, "50"),
    ]
    sent: list[str] = []
    with caplog.at_level(logging.ERROR, logger="schedules.ttl_forwarder"):
        result = forward_records(records, send=sent.append, queue_name="q")
    assert [json.loads(json.loads(body)["body"])[0] for body in sent] == [[1, 1], [2, 1]]
    assert (result.sent, result.failed, result.malformed) == (2, [], ["20", "30", "40"])
    assert [r.levelno for r in caplog.records] == [logging.ERROR] * 3
    assert "sequence 20" in caplog.records[0].getMessage()
    assert "names no step" in caplog.records[0].getMessage()


def test_lambda_handler_does_not_report_a_malformed_record_for_retry(aws: Provisioned, monkeypatch):
    """Retrying it could never succeed: it is left out of the batch item failures."""
    monkeypatch.setenv("JOBS_QUEUE_URL", aws.queue_url)
    monkeypatch.setenv("JOBS_QUEUE_NAME", aws.queue_name)
    records = [hand_added_removal("1"), ttl_removal(8, 1, "2")]
    assert lambda_handler({"Records": records}, None) == {"batchItemFailures": []}
    assert [json.loads(m["body"])[0] for m in messages(aws.queue_url)] == [[8, 1]]


def test_the_forwarder_sends_the_message_step_functions_sends():
    """One message format for both AWS engines (pinned in test_stepfunctions too)."""
    from schedules.engines.stepfunctions import execution_input, render_definition

    states = render_definition(queue_url="u", queue_name="q")["States"]
    shape = states["SendToQueue"]["Parameters"]["MessageBody"]
    message = json.loads(celery_message(7, 2, queue_name="q", message_id="m"))
    assert {k.removesuffix(".$") for k in shape} == set(message)
    assert {k.removesuffix(".$") for k in shape["headers"]} == set(message["headers"])
    assert shape["properties"]["delivery_info"] == message["properties"]["delivery_info"]
    # The state machine sends the body the engine wrote in the execution's input.
    assert shape["body.$"] == "$.body"
    sent = json.loads(execution_input(timer(step_id=7, version=2)))["body"]
    assert json.loads(message["body"]) == json.loads(sent) == [[7, 2], {}, {}]


def test_lambda_handler_reports_partial_batch_failures(aws: Provisioned, monkeypatch):
    monkeypatch.setenv("JOBS_QUEUE_URL", aws.queue_url)
    monkeypatch.setenv("JOBS_QUEUE_NAME", aws.queue_name)
    response = lambda_handler({"Records": [ttl_removal(5, 1, "1"), ttl_removal(6, 1, "2")]}, None)
    assert response == {"batchItemFailures": []}
    bodies = [json.loads(m["body"])[0] for m in messages(aws.queue_url)]
    assert sorted(bodies) == [[5, 1], [6, 1]]
    monkeypatch.setenv("JOBS_QUEUE_URL", aws.queue_url + "-missing")
    response = lambda_handler({"Records": [ttl_removal(7, 1, "3")]}, None)
    assert response == {"batchItemFailures": [{"itemIdentifier": "3"}]}


@pytest.mark.django_db(transaction=True)
def test_stream_command_ignores_inserts_and_user_deletes_and_resumes(aws: Provisioned, settings):
    settings.SCHEDULES_SQS_QUEUE_URL = aws.queue_url
    engine = DynamoDBTTLEngine()
    engine.arm(timer(step_id=1))  # INSERT
    engine.disarm(timer(step_id=1))  # a user delete (cancel): REMOVE without userIdentity

    def one_pass() -> dict:
        out = StringIO()
        call_command("forward_ttl_stream", "--once", "--json", stdout=out)
        return json.loads(out.getvalue())

    first = one_pass()
    assert (first["read"], first["forwarded"]) == (2, 0)
    assert messages(aws.queue_url) == []
    checkpoint = StreamCheckpoint.objects.get()
    assert checkpoint.sequence_number
    # A restart resumes after the position kept in the database.
    assert one_pass()["read"] == 0
    engine.arm(timer(step_id=2))
    assert one_pass()["read"] == 1


@pytest.mark.django_db(transaction=True)
def test_the_stream_reader_forwards_ttl_removals_and_stops_before_a_failed_send(
    aws: Provisioned,
):
    """Same reader, fed TTL removals (moto cannot make them): failures are retried."""
    from schedules.ttl_stream import StreamReader

    class FakeStreams:
        def __init__(self, records: list[dict]) -> None:
            self.records = records

        def describe_stream(self, **kwargs):
            return {"StreamDescription": {"Shards": [{"ShardId": "s1"}]}}

        def get_shard_iterator(self, **kwargs):
            after = kwargs.get("SequenceNumber")
            start = (
                0
                if after is None
                else [r["dynamodb"]["SequenceNumber"] for r in self.records].index(after) + 1
            )
            return {"ShardIterator": str(start)}

        def get_records(self, ShardIterator, Limit):
            start = int(ShardIterator)
            return {"Records": self.records[start:], "NextShardIterator": str(len(self.records))}

    class FlakySQS:
        failures = 1

        def __init__(self) -> None:
            self.sent: list[str] = []

        def send_message(self, QueueUrl, MessageBody):
            if json.loads(json.loads(MessageBody)["body"])[0] == [2, 1] and self.failures:
                self.failures -= 1
                raise ConnectionError("SQS unreachable")
            self.sent.append(json.loads(MessageBody)["body"])

    streams = FakeStreams(
        [ttl_removal(1, 1, "10"), ttl_removal(2, 1, "20"), ttl_removal(3, 1, "30")]
    )
    sqs = FlakySQS()
    reader = StreamReader(
        streams=streams, sqs=sqs, stream_arn="arn:s", queue_url="u", queue_name="q"
    )
    first = reader.run_once()
    assert (first.forwarded, first.failed) == (2, 1)
    assert StreamCheckpoint.objects.get().sequence_number == "10"  # not past the failure
    second = reader.run_once()
    assert (second.forwarded, second.failed) == (2, 0)  # 2 again, 3 again: at-least-once
    assert StreamCheckpoint.objects.get().sequence_number == "30"
    assert reader.run_once().read == 0


@pytest.mark.django_db(transaction=True)
def test_overdue_relaxed_steps_are_released_from_the_database(
    aws: Provisioned, settings, monkeypatch
):
    settings.SCHEDULES_ENGINES = {"seconds": "local", "relaxed": "dynamodb_ttl"}
    settings.SCHEDULES_TTL_MAX_LATENESS = 15 * 60
    get_engine.cache_clear()
    now = timezone.now()
    late = services.job_schedule(action="noop", precision="relaxed", due_at=now)
    recent = services.job_schedule(action="noop", precision="relaxed", due_at=now)
    assert late.steps.get().engine == "dynamodb_ttl"
    Step.objects.filter(job=late).update(due_at=now - dt.timedelta(minutes=16))
    Step.objects.filter(job=recent).update(due_at=now - dt.timedelta(minutes=10))
    published: list[tuple[int, int]] = []
    monkeypatch.setattr("schedules.services.dispatch.steps_publish", published.extend)
    assert services.steps_release_overdue(now=now) == 1
    step = late.steps.get()
    assert published == [(step.pk, 1)]
    # It runs once; the TTL removal that comes later is skipped by fencing.
    assert services.step_execute(step_id=step.pk, version=1).status == RunStatus.SUCCEEDED
    assert services.step_execute(step_id=step.pk, version=1).status == RunStatus.SKIPPED
    assert Run.objects.filter(step=step, status=RunStatus.SUCCEEDED).count() == 1
    assert Step.objects.get(job=recent).state == StepState.SCHEDULED


@pytest.mark.django_db(transaction=True)
def test_the_sweep_deletes_the_item_of_a_relaxed_step_it_released(
    aws: Provisioned, settings, monkeypatch, caplog
):
    """No TTL removal (and no duplicate message, 3 SQS requests) comes after the sweep: the
    released step's item is deleted after the commit. The release is logged at INFO: for
    this engine the sweep is part of its guarantee, not a fault."""
    settings.SCHEDULES_ENGINES = {
        **dict.fromkeys(settings.SCHEDULES_ENGINES, "local"),
        "relaxed": "dynamodb_ttl",
    }
    settings.SCHEDULES_TTL_MAX_LATENESS = 15 * 60
    get_engine.cache_clear()
    now = timezone.now()
    late = services.job_schedule(action="noop", precision="relaxed", due_at=now).steps.get()
    recent = services.job_schedule(action="noop", precision="relaxed", due_at=now).steps.get()
    assert late.engine == "dynamodb_ttl"
    engine = DynamoDBTTLEngine()

    def item_of(step: Step) -> str:
        return engine.describe(Timer(step.pk, step.version, step.due_at, "dynamodb_ttl")).state

    assert (item_of(late), item_of(recent)) == ("waiting", "waiting")  # armed on commit
    Step.objects.filter(pk=late.pk).update(due_at=now - dt.timedelta(minutes=16))
    Step.objects.filter(pk=recent.pk).update(due_at=now - dt.timedelta(minutes=10))
    monkeypatch.setattr("schedules.services.dispatch.steps_publish", lambda pairs: None)
    with caplog.at_level(logging.INFO, logger="schedules.services.dispatch"):
        assert services.steps_release_overdue(now=now) == 1
    assert (item_of(late), item_of(recent)) == ("absent", "waiting")
    keys = [i["pk"]["S"] for i in aws_client("dynamodb").scan(TableName=engine.table_name)["Items"]]
    assert keys == [item_key(Timer(recent.pk, 1, recent.due_at, "dynamodb_ttl"))]
    (record,) = [r for r in caplog.records if r.name == "schedules.services.dispatch"]
    assert record.levelno == logging.INFO and f"{late.pk} v1" in record.getMessage()


def test_expected_lateness_reads_a_bound_under_a_minute_in_seconds(settings):
    engine = DynamoDBTTLEngine(client=object(), table_name="t")
    settings.SCHEDULES_TTL_MAX_LATENESS = 45
    assert "at most 45 s (SCHEDULES_TTL_MAX_LATENESS)" in engine.expected_lateness
    settings.SCHEDULES_TTL_MAX_LATENESS = 15 * 60
    assert "at most 15 min (SCHEDULES_TTL_MAX_LATENESS)" in engine.expected_lateness
    settings.SCHEDULES_TTL_MAX_LATENESS = 90  # not rounded down to "1 min"
    assert "at most 1 min 30 s (SCHEDULES_TTL_MAX_LATENESS)" in engine.expected_lateness


def test_item_keys_carry_step_and_version():
    assert item_key(timer(step_id=12, version=3)) == "step#12#v3"


def test_provision_maps_the_stream_to_a_forwarder_function(aws: Provisioned, settings):
    import io
    import zipfile

    from schedules.aws_provision import (
        FORWARDER_MAX_RECORD_AGE_SECONDS,
        FORWARDER_MAX_RETRY_ATTEMPTS,
        TTL_REMOVAL_FILTER,
    )

    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.write("schedules/ttl_forwarder.py", "ttl_forwarder.py")
    role = aws_client("iam").create_role(RoleName="forwarder", AssumeRolePolicyDocument="{}")
    function = aws_client("lambda").create_function(
        FunctionName="ttl-forwarder",
        Runtime="python3.11",
        Role=role["Role"]["Arn"],
        Handler="ttl_forwarder.lambda_handler",
        Code={"ZipFile": package.getvalue()},
    )
    settings.SCHEDULES_TTL_FORWARDER_FUNCTION_ARN = function["FunctionArn"]
    out = StringIO()
    call_command("aws_provision", stdout=out)
    assert "created   event source mapping" in out.getvalue()
    (mapping,) = aws_client("lambda").list_event_source_mappings(
        FunctionName=function["FunctionArn"]
    )["EventSourceMappings"]
    assert mapping["EventSourceArn"].startswith("arn:aws:dynamodb:")
    assert json.loads(mapping["FilterCriteria"]["Filters"][0]["Pattern"]) == TTL_REMOVAL_FILTER
    # A failing batch is split and retried a bounded number of times, then described in the
    # ttl-failures queue instead of stalling its shard until the records expire.
    sqs = aws_client("sqs")
    failures_url = sqs.get_queue_url(QueueName=f"{aws.queue_name}-ttl-failures")["QueueUrl"]
    failures_arn = sqs.get_queue_attributes(QueueUrl=failures_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    bounded = {
        "BisectBatchOnFunctionError": True,
        "MaximumRetryAttempts": FORWARDER_MAX_RETRY_ATTEMPTS,
        "MaximumRecordAgeInSeconds": FORWARDER_MAX_RECORD_AGE_SECONDS,
        "DestinationConfig": {"OnFailure": {"Destination": failures_arn}},
    }
    assert {key: mapping.get(key) for key in bounded} == bounded
    assert FORWARDER_MAX_RETRY_ATTEMPTS > 0
    out = StringIO()
    call_command("aws_provision", stdout=out)
    assert "unchanged event source mapping" in out.getvalue()
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    # Drift is put back in place.
    aws_client("lambda").update_event_source_mapping(UUID=mapping["UUID"], BatchSize=7)
    out = StringIO()
    call_command("aws_provision", stdout=out)
    assert "updated   event source mapping" in out.getvalue()
    (mapping,) = aws_client("lambda").list_event_source_mappings(
        FunctionName=function["FunctionArn"]
    )["EventSourceMappings"]
    assert mapping["BatchSize"] == 100
    # A mapping made before the retries were bounded (Lambda's defaults) is updated too.
    for drift in [
        {"MaximumRetryAttempts": -1},
        {"BisectBatchOnFunctionError": False},
        {"MaximumRecordAgeInSeconds": -1},
        {"DestinationConfig": {"OnFailure": {}}},
    ]:
        aws_client("lambda").update_event_source_mapping(UUID=mapping["UUID"], **drift)
        out = StringIO()
        call_command("aws_provision", stdout=out)
        assert "updated   event source mapping" in out.getvalue(), drift
        (mapping,) = aws_client("lambda").list_event_source_mappings(
            FunctionName=function["FunctionArn"]
        )["EventSourceMappings"]
        assert {key: mapping.get(key) for key in bounded} == bounded
