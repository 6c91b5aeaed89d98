"""The EventBridge Scheduler engine, its provisioning and health check, against moto over HTTP.

moto's scheduler keeps schedules (create, get, list, delete, conflicts) and echoes
every field of a request, but never fires one: what a schedule would send is read
back from moto and sent by the end-to-end test (tests/e2e/test_eventbridge_engine.py).
"""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.utils import timezone

from schedules import services
from schedules.aws import aws_client
from schedules.aws_provision import scheduler_role_policy, scheduler_trust_policy
from schedules.engines import Timer, get_engine
from schedules.engines.eventbridge import (
    EventBridgeEngine,
    at_expression,
    fire_minute,
    parse_at,
    round_up_to_minute,
)
from schedules.models import ArmState, Run, RunStatus, Step, StepState
from schedules.ttl_forwarder import celery_message
from tests.fixtures_aws import Provisioned

ROOT = Path(__file__).resolve().parents[2]
UTC = dt.UTC


def timer(step_id: int = 1, version: int = 1, due_at: dt.datetime | None = None) -> Timer:
    return Timer(
        step_id=step_id,
        version=version,
        engine="eventbridge",
        due_at=due_at or timezone.now() + dt.timedelta(hours=1),
    )


def schedule(aws: Provisioned, name: str) -> dict[str, Any]:
    return dict(aws_client("scheduler").get_schedule(GroupName=aws.schedule_group, Name=name))


def names(aws: Provisioned) -> set[str]:
    pages = (
        aws_client("scheduler")
        .get_paginator("list_schedules")
        .paginate(GroupName=aws.schedule_group)
    )
    return {s["Name"] for page in pages for s in page["Schedules"]}


def all_on_eventbridge(settings: Any) -> None:
    """Every precision class on this engine, whatever the classes are called."""
    settings.SCHEDULES_ENGINES = dict.fromkeys(settings.SCHEDULES_ENGINES, "eventbridge")
    get_engine.cache_clear()


# -- the minute ---------------------------------------------------------------------------


def test_due_times_are_rounded_up_to_the_whole_minute():
    on_the_minute = dt.datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert round_up_to_minute(on_the_minute) == on_the_minute  # a whole minute stays
    assert round_up_to_minute(on_the_minute + dt.timedelta(milliseconds=1)) == dt.datetime(
        2026, 12, 1, 10, 1, tzinfo=UTC
    )
    assert round_up_to_minute(on_the_minute + dt.timedelta(seconds=59.999999)) == dt.datetime(
        2026, 12, 1, 10, 1, tzinfo=UTC
    )
    # Aware but not UTC: the same instant, written in UTC.
    paris = dt.timezone(dt.timedelta(hours=1))
    minute = round_up_to_minute(dt.datetime(2026, 12, 1, 11, 0, 30, tzinfo=paris))
    assert minute == dt.datetime(2026, 12, 1, 10, 1, tzinfo=UTC) and minute.tzinfo is UTC
    assert at_expression(minute) == "at(2026-12-01T10:01:00)"
    assert parse_at("at(2026-12-01T10:01:00)") == minute
    assert parse_at("rate(5 minutes)") is None
    with pytest.raises(ValueError, match="naive"):
        round_up_to_minute(dt.datetime(2026, 12, 1, 10, 0))


def test_a_step_already_due_is_scheduled_for_the_next_minute_ahead():
    now = dt.datetime(2026, 12, 1, 10, 0, 57, tzinfo=UTC)
    # Due in the future: its own minute, rounded up.
    assert fire_minute(now + dt.timedelta(minutes=5), now=now) == dt.datetime(
        2026, 12, 1, 10, 6, tzinfo=UTC
    )
    # Due already (run now, an overdue step armed again): the first whole minute at
    # least ARM_LEAD_SECONDS ahead, since a one-time schedule is for a future time.
    assert fire_minute(now - dt.timedelta(hours=1), now=now) == dt.datetime(
        2026, 12, 1, 10, 2, tzinfo=UTC
    )
    assert fire_minute(now, now=now.replace(second=30)) == dt.datetime(
        2026, 12, 1, 10, 1, tzinfo=UTC
    )


# -- arm, disarm, describe ----------------------------------------------------------------


def test_arm_creates_one_one_time_schedule_per_step_version(aws: Provisioned, settings):
    engine = get_engine("eventbridge")
    due = round_up_to_minute(timezone.now() + dt.timedelta(hours=2)) + dt.timedelta(milliseconds=1)
    t = timer(step_id=41, version=3, due_at=due)
    arn = engine.arm(t)
    assert arn.endswith(f":schedule/{aws.schedule_group}/step-41-v3")
    assert engine.arm(t) == arn  # arming twice: ConflictException, the same schedule
    assert names(aws) == {"step-41-v3"}

    got = schedule(aws, "step-41-v3")
    minute = due.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    assert got["ScheduleExpression"] == f"at({minute:%Y-%m-%dT%H:%M:%S})"
    assert got["ScheduleExpressionTimezone"] == "UTC"
    assert got["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert got["ActionAfterCompletion"] == "DELETE"
    assert got["State"] == "ENABLED"
    target = got["Target"]
    assert target["Arn"] == aws.queue_arn and target["Arn"].endswith(f":{aws.queue_name}")
    assert target["RoleArn"] == aws.scheduler_role_arn
    assert target["DeadLetterConfig"] == {"Arn": aws.dlq_arn}
    assert target["RetryPolicy"] == {
        "MaximumEventAgeInSeconds": settings.SCHEDULES_EVENTBRIDGE_MAX_EVENT_AGE,
        "MaximumRetryAttempts": settings.SCHEDULES_EVENTBRIDGE_MAX_RETRY_ATTEMPTS,
    }
    # The input is the TTL forwarder's Celery message: ids and the version, nothing else.
    assert target["Input"] == celery_message(
        41, 3, queue_name=aws.queue_name, message_id="eb-step-41-v3"
    )
    envelope = json.loads(target["Input"])
    assert json.loads(envelope["body"])[:2] == [[41, 3], {}]
    assert envelope["headers"]["task"] == "schedules.run_step"
    assert envelope["properties"]["delivery_info"] == {
        "exchange": "",
        "routing_key": aws.queue_name,
    }

    status = engine.describe(Timer(**{**t.__dict__, "external_ref": arn}))
    assert status.state == "waiting" and f"at({minute:%Y-%m-%dT%H:%M:%S})" in status.detail
    assert status.url.endswith(f"#schedules/{aws.schedule_group}/step-41-v3")


def test_a_name_holding_another_message_is_an_error(aws: Provisioned):
    engine = get_engine("eventbridge")
    t = timer(step_id=5)
    request = engine.request(t)
    request["Target"]["Input"] = "{}"  # e.g. another deployment sharing the group
    aws_client("scheduler").create_schedule(**request)
    with pytest.raises(Exception, match="ConflictException"):
        engine.arm(t)


def test_disarm_deletes_and_is_idempotent(aws: Provisioned):
    engine = get_engine("eventbridge")
    t = timer(step_id=6)
    armed = Timer(**{**t.__dict__, "external_ref": engine.arm(t)})
    engine.disarm(armed)
    assert names(aws) == set()
    engine.disarm(armed)  # already gone: not an error
    engine.disarm(timer(step_id=999))  # never existed: not an error
    assert engine.describe(armed).state == "absent"


def test_describe_tells_a_fired_schedule_from_a_missing_one(aws: Provisioned):
    """A one-time schedule deletes itself after it fired: past its minute, absence
    means released; before it, absence means missing (reconcile re-arms it)."""
    engine = get_engine("eventbridge")
    now = timezone.now()
    due = now - dt.timedelta(minutes=3)
    assert engine.describe(timer(due_at=due), now=now).state == "released"
    ahead = timer(due_at=now + dt.timedelta(minutes=3))
    assert engine.describe(ahead, now=now).state == "absent"
    # Still inside the minute it may fire in: not yet released.
    inside = round_up_to_minute(now) - dt.timedelta(seconds=1)
    assert engine.describe(timer(due_at=inside), now=inside + dt.timedelta(seconds=30)).state == (
        "absent"
    )


def test_a_disabled_schedule_is_stopped(aws: Provisioned):
    """Disabled behind the product's back: it will not fire, reconcile moves the step on."""
    engine = get_engine("eventbridge")
    t = timer(step_id=8)
    engine.arm(t)
    aws_client("scheduler").update_schedule(**{**engine.request(t), "State": "DISABLED"})
    status = engine.describe(t)
    assert status.state == "stopped" and "DISABLED" in status.detail


def test_list_timers_reads_every_page(aws: Provisioned):
    """Injected client (boto3's own, on moto through AWS_ENDPOINT_URL), 3 per page."""
    import boto3

    client = boto3.client("scheduler", region_name="us-east-1")
    calls: list[str] = []
    client.meta.events.register(
        "after-call.scheduler.ListSchedules", lambda **kwargs: calls.append("list")
    )
    engine = EventBridgeEngine(client=client)
    engine.list_page_size = 3
    for step_id in range(1, 8):
        engine.arm(timer(step_id=step_id, version=2))
    foreign = engine.request(timer(step_id=99))
    client.create_schedule(**{**foreign, "Name": "someone-elses"})  # not ours: skipped
    timers = list(engine.list_timers())
    assert len(calls) == 3  # 8 schedules, 3 per page
    assert sorted((t.step_id, t.version) for t in timers) == [(i, 2) for i in range(1, 8)]
    assert all(
        t.external_ref.endswith(f"/step-{t.step_id}-v2") and t.engine == "eventbridge"
        for t in timers
    )


def test_console_link_and_expected_lateness(aws: Provisioned, settings):
    engine = get_engine("eventbridge")
    url = engine.console_url(timer(step_id=8))
    assert url == (
        "https://us-east-1.console.aws.amazon.com/scheduler/home?region=us-east-1"
        f"#schedules/{aws.schedule_group}/step-8-v1"
    )
    assert "rounded up to the whole minute" in engine.expected_lateness
    # The sweep waits out the rounding and the minute's precision before releasing.
    settings.SCHEDULES_REDELIVER_AFTER = 300
    assert engine.release_overdue_after == 300 + 120


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SCHEDULES_EVENTBRIDGE_ROLE_ARN", "", "needs SCHEDULES_EVENTBRIDGE_ROLE_ARN"),
        ("SCHEDULES_SQS_QUEUE_ARN", "", "needs SCHEDULES_SQS_QUEUE_ARN"),
        ("SCHEDULES_EVENTBRIDGE_GROUP", "", "needs SCHEDULES_EVENTBRIDGE_GROUP"),
        ("SCHEDULES_EVENTBRIDGE_MAX_EVENT_AGE", 30, "between 60 and 86400"),
        ("SCHEDULES_EVENTBRIDGE_MAX_RETRY_ATTEMPTS", 186, "between 0 and 185"),
    ],
)
def test_missing_or_wrong_settings_name_the_variable(settings, variable, value, message):
    settings.SCHEDULES_EVENTBRIDGE_ROLE_ARN = "arn:aws:iam::123456789012:role/r"
    settings.SCHEDULES_SQS_QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:schedules"
    setattr(settings, variable, value)
    with pytest.raises(ImproperlyConfigured) as info:
        EventBridgeEngine()
    assert variable in str(info.value) and message in str(info.value)


def test_the_dead_letter_queue_defaults_to_the_one_aws_provision_makes(settings):
    settings.SCHEDULES_EVENTBRIDGE_ROLE_ARN = "arn:aws:iam::123456789012:role/r"
    settings.SCHEDULES_SQS_QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:jobs"
    settings.SCHEDULES_SQS_DLQ_ARN = ""
    engine = EventBridgeEngine()
    assert engine.dlq_arn == "arn:aws:sqs:us-east-1:123456789012:jobs-dlq"
    assert engine.queue_name == "jobs"  # the routing key: the queue the schedule sends to


# -- with the services --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_reconcile_on_eventbridge(aws: Provisioned, settings):
    all_on_eventbridge(settings)
    engine = get_engine("eventbridge")
    later = timezone.now() + dt.timedelta(hours=1)
    job = services.job_schedule(action="noop", due_at=later)
    step = job.steps.get()
    assert step.engine == "eventbridge" and step.arm_state == ArmState.ARMED
    assert step.external_ref.endswith(f"/step-{step.pk}-v1")
    cancelled = services.job_schedule(action="noop", due_at=later)
    services.job_cancel(job=cancelled)
    gone = cancelled.steps.get()
    assert f"step-{gone.pk}-v{gone.version}" not in names(aws)  # disarmed by the cancel
    # Behind the product's back: the schedule is deleted, and two strays are made.
    aws_client("scheduler").delete_schedule(GroupName=aws.schedule_group, Name=f"step-{step.pk}-v1")
    engine.arm(Timer(step_id=step.pk + 10_000, version=3, due_at=later, engine="x"))
    engine.arm(Timer(step_id=gone.pk, version=gone.version, due_at=later, engine="x"))

    before = names(aws)
    dry = StringIO()
    call_command("reconcile", "--dry-run", stdout=dry, stderr=StringIO())
    assert "1 missing to re-arm, 2 orphan(s) to disarm, 0 failure(s)" in dry.getvalue()
    assert names(aws) == before

    out = StringIO()
    call_command("reconcile", "--engine", "eventbridge", stdout=out, stderr=StringIO())
    text = out.getvalue()
    assert f"missing  step {step.pk} v1 on eventbridge: the engine has no timer" in text
    assert f"orphan   step {gone.pk} v{gone.version} on eventbridge: the step is cancelled" in text
    assert f"orphan   step {step.pk + 10_000} v3 on eventbridge: no such step" in text
    assert names(aws) == {f"step-{step.pk}-v1"}  # re-armed under the same version
    step.refresh_from_db()
    assert step.version == 1 and step.arm_state == ArmState.ARMED


@pytest.mark.django_db(transaction=True)
def test_overdue_steps_are_released_from_the_database(aws: Provisioned, settings, monkeypatch):
    """The schedule's message never came (lost, or its send failed past the retry
    policy): the sweep releases the step once the minute and SCHEDULES_REDELIVER_AFTER
    have passed, and a late message is skipped by fencing."""
    all_on_eventbridge(settings)
    settings.SCHEDULES_REDELIVER_AFTER = 60
    bound = get_engine("eventbridge").release_overdue_after
    assert bound == 180
    now = timezone.now()
    late = services.job_schedule(action="noop", due_at=now)
    recent = services.job_schedule(action="noop", due_at=now)
    assert late.steps.get().engine == "eventbridge"
    Step.objects.filter(job=late).update(due_at=now - dt.timedelta(seconds=bound + 1))
    Step.objects.filter(job=recent).update(due_at=now - dt.timedelta(seconds=bound - 30))
    published: list[tuple[int, int]] = []
    monkeypatch.setattr("schedules.services.dispatch.steps_publish", published.extend)
    assert services.steps_release_overdue(now=now) == 1
    step = late.steps.get()
    assert published == [(step.pk, step.version)]
    assert services.step_execute(step_id=step.pk, version=step.version).status == (
        RunStatus.SUCCEEDED
    )
    # The schedule's message, if it comes after all, is a duplicate: skipped.
    assert services.step_execute(step_id=step.pk, version=step.version).status == (
        RunStatus.SKIPPED
    )
    assert Run.objects.filter(step=step, status=RunStatus.SUCCEEDED).count() == 1
    assert Step.objects.get(job=recent).state == StepState.SCHEDULED


# -- provisioning, template, health -------------------------------------------------------


def test_provision_makes_the_group_and_a_least_privilege_role(aws: Provisioned):
    scheduler = aws_client("scheduler")
    assert scheduler.get_schedule_group(Name=aws.schedule_group)["State"] == "ACTIVE"
    iam = aws_client("iam")
    role_name = aws.scheduler_role_arn.rsplit("/", 1)[-1]
    assert role_name == "schedules-step-scheduler-role"
    role = iam.get_role(RoleName=role_name)["Role"]
    account = aws.queue_arn.split(":")[4]
    assert role["AssumeRolePolicyDocument"] == scheduler_trust_policy(account)
    (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": account}}
    policy = iam.get_role_policy(RoleName=role_name, PolicyName="send-to-jobs-queue")
    assert policy["PolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": [aws.queue_arn, aws.dlq_arn]}
    ]
    assert iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"] == []

    out = StringIO()
    call_command("aws_provision", stdout=out)
    text = out.getvalue()
    assert f"unchanged schedule group: {aws.schedule_group}" in text
    assert f"unchanged iam role: {role_name}" in text
    for line in (
        f"SCHEDULES_EVENTBRIDGE_GROUP={aws.schedule_group}",
        f"SCHEDULES_EVENTBRIDGE_ROLE_ARN={aws.scheduler_role_arn}",
        f"SCHEDULES_SQS_QUEUE_ARN={aws.queue_arn}",
        f"SCHEDULES_SQS_DLQ_ARN={aws.dlq_arn}",
    ):
        assert line in text.splitlines()

    # Drift (the account condition removed, the policy widened) is put back.
    loose = scheduler_trust_policy(account)
    del loose["Statement"][0]["Condition"]
    iam.update_assume_role_policy(RoleName=role_name, PolicyDocument=json.dumps(loose))
    iam.put_role_policy(
        RoleName=role_name,
        PolicyName="send-to-jobs-queue",
        PolicyDocument=json.dumps(scheduler_role_policy("*", "*")),
    )
    out = StringIO()
    call_command("aws_provision", "--json", stdout=out)
    result = json.loads(out.getvalue())
    assert {"resource": "iam role", "name": role_name, "action": "updated"}.items() <= next(
        c for c in result["changes"] if c["name"] == role_name
    ).items()
    assert iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"] == (
        scheduler_trust_policy(account)
    )
    assert (result["schedule_group"], result["scheduler_role_arn"]) == (
        aws.schedule_group,
        aws.scheduler_role_arn,
    )


def test_the_template_declares_the_same_group_and_role(settings):
    template = yaml.safe_load((ROOT / "deploy" / "cloudformation.yaml").read_text())
    resources = template["Resources"]
    assert resources["StepSchedules"]["Type"] == "AWS::Scheduler::ScheduleGroup"
    assert resources["StepSchedules"]["Properties"]["Name"] == {"Ref": "ScheduleGroupName"}
    default_group = template["Parameters"]["ScheduleGroupName"]["Default"]
    assert default_group == f"{settings.SCHEDULES_AWS_NAME_PREFIX}-step-schedules"
    role = resources["StepSchedulerRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"] == scheduler_trust_policy({"Ref": "AWS::AccountId"})
    (policy,) = role["Policies"]
    assert policy["PolicyName"] == "send-to-jobs-queue"
    assert policy["PolicyDocument"] == scheduler_role_policy(
        {"Fn::GetAtt": ["JobsQueue", "Arn"]}, {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]}
    )
    outputs = {k: v.get("Description") for k, v in template["Outputs"].items()}
    assert outputs["ScheduleGroupName"] == "SCHEDULES_EVENTBRIDGE_GROUP"
    assert outputs["SchedulerRoleArn"] == "SCHEDULES_EVENTBRIDGE_ROLE_ARN"
    assert outputs["QueueArn"] == "SCHEDULES_SQS_QUEUE_ARN"
    assert outputs["DeadLetterQueueArn"] == "SCHEDULES_SQS_DLQ_ARN"


def test_health_checks_the_schedule_group(aws: Provisioned, settings):
    from schedules import health

    all_on_eventbridge(settings)
    settings.SCHEDULES_HEALTH_AWS_CACHE_SECONDS = 0
    health._Cached.outcomes.clear()
    assert "eventbridge" in [health.NAMES[type(c)] for c in health.configured_checks()]
    answer = health.report(health.run_checks(["eventbridge"]))
    assert answer["checks"]["eventbridge"]["ok"], answer
    aws_client("scheduler").delete_schedule_group(Name=aws.schedule_group)
    answer = health.report(health.run_checks(["eventbridge"]))
    assert "ResourceNotFoundException" in answer["checks"]["eventbridge"]["error"]
    health._Cached.outcomes.clear()
