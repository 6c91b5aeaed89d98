"""The DynamoDB TTL engine, its forwarder and the stream command, against moto over HTTP.

moto never expires items and its stream records carry no ``userIdentity``, so a
TTL removal is built the way AWS sends it; moto's real stream drives the
command for INSERT and user REMOVE records.
"""

from __future__ import annotations

import datetime as dt
import json
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
    count, failed = forward_records(
        [insert, modify, user_delete, other_service, ttl_removal(4, 2)],
        send=sent.append,
        queue_name="q",
    )
    assert (count, failed) == (1, [])
    assert json.loads(json.loads(sent[0])["body"])[0] == [4, 2]


def test_the_forwarder_sends_the_message_step_functions_sends():
    """One message format for both AWS engines (pinned in test_stepfunctions too)."""
    from schedules.engines.stepfunctions import render_definition

    states = render_definition(queue_url="u", queue_name="q")["States"]
    shape = states["SendToQueue"]["Parameters"]["MessageBody"]
    embed = states["BuildMessage"]["Parameters"]["embed"]
    message = json.loads(celery_message(7, 2, queue_name="q", message_id="m"))
    assert {k.removesuffix(".$") for k in shape} == set(message)
    assert {k.removesuffix(".$") for k in shape["headers"]} == set(message["headers"])
    assert shape["properties"]["delivery_info"] == message["properties"]["delivery_info"]
    assert json.loads(message["body"]) == [[7, 2], {}, embed]


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
    settings.SCHEDULES_ENGINES = {"precise": "local", "relaxed": "dynamodb_ttl"}
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


def test_item_keys_carry_step_and_version():
    assert item_key(timer(step_id=12, version=3)) == "step#12#v3"


def test_provision_maps_the_stream_to_a_forwarder_function(aws: Provisioned, settings):
    import io
    import zipfile

    from schedules.aws_provision import TTL_REMOVAL_FILTER

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
