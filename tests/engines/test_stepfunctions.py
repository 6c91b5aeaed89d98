"""The Step Functions engine and its provisioning, against moto's server over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import time
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from schedules.aws import aws_client
from schedules.engines import Timer
from schedules.engines.stepfunctions import (
    StepFunctionsEngine,
    execution_input,
    load_definition,
    render_definition,
)
from tests.fixtures_aws import Provisioned


def timer(step_id: int = 1, version: int = 1, seconds: float = 60) -> Timer:
    return Timer(
        step_id=step_id,
        version=version,
        engine="stepfunctions",
        due_at=timezone.now() + dt.timedelta(seconds=seconds),
    )


def receive(queue_url: str, wait: float) -> list[dict]:
    deadline = time.time() + wait
    messages: list[dict] = []
    while time.time() < deadline and not messages:
        messages = (
            aws_client("sqs")
            .receive_message(QueueUrl=queue_url, WaitTimeSeconds=1, MaxNumberOfMessages=10)
            .get("Messages", [])
        )
    return messages


def test_provision_creates_everything_then_changes_nothing(aws: Provisioned):
    out = StringIO()
    call_command("aws_provision", stdout=out)
    text = out.getvalue()
    # With the schedule group and its role, and the forwarder's ttl-failures queue.
    assert text.count("unchanged") == 8, text
    assert f"SCHEDULES_SFN_STATE_MACHINE_ARN={aws.state_machine_arn}" in text
    sqs = aws_client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=aws.queue_url, AttributeNames=["All"])[
        "Attributes"
    ]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(f":{aws.queue_name}-dlq")
    assert int(redrive["maxReceiveCount"]) == 5
    assert int(attributes["VisibilityTimeout"]) > 300  # longer than the claim lease


def test_provision_updates_what_drifted(aws: Provisioned, settings):
    settings.SCHEDULES_SQS_MAX_RECEIVE_COUNT = 9
    out = StringIO()
    call_command("aws_provision", stdout=out)
    assert "updated   sqs queue: schedules\n" in out.getvalue()


def test_role_may_only_send_to_the_jobs_queue(aws: Provisioned):
    iam = aws_client("iam")
    role_arn = aws_client("stepfunctions").describe_state_machine(
        stateMachineArn=aws.state_machine_arn
    )["roleArn"]
    role_name = role_arn.rsplit("/", 1)[-1]
    trust = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "states.amazonaws.com"}
    policy = iam.get_role_policy(RoleName=role_name, PolicyName="send-to-jobs-queue")[
        "PolicyDocument"
    ]
    queue_arn = aws_client("sqs").get_queue_attributes(
        QueueUrl=aws.queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert policy["Statement"] == [
        {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": queue_arn}
    ]
    assert iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"] == []


def test_role_is_trusted_by_this_accounts_state_machine_only_and_an_old_trust_is_updated(
    aws: Provisioned,
):
    """Confused-deputy protection: Step Functions may assume the role only on behalf of the
    state machine of this name in this account (the account and region come from the jobs
    queue's ARN). A role made with the old trust policy is updated in place."""
    iam = aws_client("iam")
    role_name = "schedules-step-timer-role"
    wanted = {
        "StringEquals": {"aws:SourceAccount": "123456789012"},  # moto's account
        "ArnLike": {"aws:SourceArn": aws.state_machine_arn},
    }
    assert aws.state_machine_arn == (
        "arn:aws:states:us-east-1:123456789012:stateMachine:schedules-step-timer"
    )
    (statement,) = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "states.amazonaws.com"}
    assert statement["Condition"] == wanted
    old = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "states.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    iam.update_assume_role_policy(RoleName=role_name, PolicyDocument=json.dumps(old))
    out = StringIO()
    call_command("aws_provision", stdout=out)
    assert f"updated   iam role: {role_name}\n" in out.getvalue()
    (statement,) = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Condition"] == wanted


def test_provision_without_credentials_fails_clearly(monkeypatch, moto_server):
    from django.core.management.base import CommandError

    from schedules.aws import aws_client_reset

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    aws_client_reset()
    try:
        with pytest.raises(CommandError, match="No AWS credentials found"):
            call_command("aws_provision")
    finally:
        aws_client_reset()


def test_arm_twice_makes_one_execution_named_by_step_and_version(aws: Provisioned):
    engine = StepFunctionsEngine()
    t = timer(step_id=41, version=3)
    first = engine.arm(t)
    second = engine.arm(t)
    assert first == second and first.endswith(":step-41-v3")
    executions = aws_client("stepfunctions").list_executions(stateMachineArn=aws.state_machine_arn)[
        "executions"
    ]
    assert [e["name"] for e in executions] == ["step-41-v3"]
    description = aws_client("stepfunctions").describe_execution(executionArn=first)
    # Ids, version and the due time only (and the task's arguments made of them): no
    # payload ever reaches AWS.
    sent = json.loads(description["input"])
    assert set(sent) == {"step_id", "version", "due_at", "body"}
    assert json.loads(sent["body"]) == [[41, 3], {}, {}]
    assert engine.describe(t).state == "waiting"


def test_a_name_taken_by_another_input_is_an_error(aws: Provisioned):
    engine = StepFunctionsEngine()
    engine.arm(timer(step_id=5, version=1, seconds=60))
    with pytest.raises(Exception, match="ExecutionAlreadyExists"):
        engine.arm(timer(step_id=5, version=1, seconds=120))


def test_disarm_stops_and_is_idempotent(aws: Provisioned):
    engine = StepFunctionsEngine()
    t = timer(step_id=6)
    arn = engine.arm(t)
    armed = Timer(**{**t.__dict__, "external_ref": arn})
    engine.disarm(armed)
    engine.disarm(armed)  # already stopped: not an error
    assert engine.describe(armed).state == "stopped"
    assert engine.describe(timer(step_id=999)).state == "absent"
    engine.disarm(timer(step_id=999))  # never existed: not an error


def test_the_execution_sends_the_message_when_due(aws: Provisioned):
    engine = StepFunctionsEngine()
    t = timer(step_id=7, version=2, seconds=2)
    arn = engine.arm(t)
    (message,) = receive(aws.queue_url, wait=15)
    envelope = json.loads(message["Body"])
    assert envelope["headers"]["task"] == "schedules.run_step"
    assert envelope["headers"]["id"] == "step-7-v2"
    assert json.loads(envelope["body"]) == [[7, 2], {}, {}]
    assert envelope["properties"]["delivery_info"] == {
        "exchange": "",
        "routing_key": aws.queue_name,
    }
    # Re-arming a version whose execution already finished is still one execution.
    assert engine.arm(t) == arn
    assert engine.describe(Timer(**{**t.__dict__, "external_ref": arn})).state == "released"
    # Two states ran, so AWS bills two state transitions for the step.
    events = aws_client("stepfunctions").get_execution_history(executionArn=arn)["events"]
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in events if e["type"].endswith("StateEntered")
    ]
    assert entered == ["WaitUntilDue", "SendToQueue"]


def test_an_execution_armed_before_the_body_was_in_the_input_is_still_ours(aws: Provisioned):
    """Re-arming a step armed by an older release (input without ``body``) finds its timer."""
    engine = StepFunctionsEngine()
    t = timer(step_id=12, version=4)
    older = {k: v for k, v in json.loads(execution_input(t)).items() if k != "body"}
    arn = aws_client("stepfunctions").start_execution(
        stateMachineArn=aws.state_machine_arn, name="step-12-v4", input=json.dumps(older)
    )["executionArn"]
    assert engine.arm(t) == arn


def test_provision_updates_an_older_definition_in_place(aws: Provisioned):
    """A state machine deployed with the old three-state definition keeps its ARN."""
    sfn = aws_client("stepfunctions")
    current = json.loads(
        sfn.describe_state_machine(stateMachineArn=aws.state_machine_arn)["definition"]
    )
    older = {
        **current,
        "StartAt": "BuildMessage",
        "States": {
            "BuildMessage": {"Type": "Pass", "ResultPath": "$.task", "Next": "WaitUntilDue"},
            **current["States"],
        },
    }
    sfn.update_state_machine(stateMachineArn=aws.state_machine_arn, definition=json.dumps(older))
    out = StringIO()
    call_command("aws_provision", stdout=out)
    assert "updated   state machine: schedules-step-timer\n" in out.getvalue()
    described = sfn.describe_state_machine(stateMachineArn=aws.state_machine_arn)
    assert json.loads(described["definition"]) == current
    assert "BuildMessage" not in described["definition"]
    machines = sfn.list_state_machines()["stateMachines"]
    assert [m["stateMachineArn"] for m in machines] == [aws.state_machine_arn]


def test_console_link(aws: Provisioned):
    engine = StepFunctionsEngine()
    url = engine.console_url(timer(step_id=8))
    assert url.startswith("https://us-east-1.console.aws.amazon.com/states/home?region=us-east-1")
    assert url.endswith(":execution:schedules-step-timer:step-8-v1")


def test_input_uses_a_z_timestamp():
    t = Timer(
        step_id=1,
        version=1,
        engine="stepfunctions",
        due_at=dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    )
    assert json.loads(execution_input(t))["due_at"] == "2026-12-01T08:00:00.000000Z"


def test_definition_is_rendered_without_string_building():
    rendered = render_definition(queue_url="https://sqs/q", queue_name="q")
    send = rendered["States"]["SendToQueue"]["Parameters"]
    assert send["QueueUrl"] == "https://sqs/q"
    assert send["MessageBody"]["properties"]["delivery_info"]["routing_key"] == "q"
    assert "${" not in json.dumps(rendered)
    assert "${JobsQueueUrl}" in json.dumps(load_definition())


@pytest.mark.django_db(transaction=True)
def test_an_arm_that_keeps_failing_is_marked_and_retried_by_the_sweep(aws: Provisioned, settings):
    from schedules import services
    from schedules.engines import get_engine
    from schedules.models import ArmState

    settings.SCHEDULES_ENGINES = {"seconds": "stepfunctions", "relaxed": "local"}
    settings.SCHEDULES_SFN_STATE_MACHINE_ARN = aws.state_machine_arn + "-missing"
    get_engine.cache_clear()
    job = services.job_schedule(action="noop", due_at=timezone.now() + dt.timedelta(hours=1))
    step = job.steps.get()
    assert step.arm_state == ArmState.ERROR and "StateMachineDoesNotExist" in step.arm_error
    services.steps_arm_pending()
    step.refresh_from_db()
    assert step.arm_state == ArmState.ERROR and step.arm_failures == 2  # still kept, retried
    settings.SCHEDULES_SFN_STATE_MACHINE_ARN = aws.state_machine_arn
    get_engine.cache_clear()
    assert services.steps_arm_pending() == 1
    step.refresh_from_db()
    assert step.arm_state == ArmState.ARMED and step.external_ref.endswith(f"step-{step.pk}-v1")


class ClosedNamesRefused:
    """moto's client, with StartExecution refusing the name of a closed execution.

    AWS answers ExecutionAlreadyExists when the name belongs to an execution that
    has closed (stopped, failed), whatever the input; moto's interpreter returns the
    closed execution instead. Everything else goes to moto unchanged.
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def start_execution(self, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        arn = kwargs["stateMachineArn"].replace(":stateMachine:", ":execution:", 1)
        try:
            status = self.client.describe_execution(executionArn=f"{arn}:{kwargs['name']}")[
                "status"
            ]
        except ClientError:
            status = None
        if status not in (None, "RUNNING"):
            raise ClientError(
                {"Error": {"Code": "ExecutionAlreadyExists", "Message": "closed"}},
                "StartExecution",
            )
        return self.client.start_execution(**kwargs)


@pytest.mark.django_db(transaction=True)
def test_a_stopped_execution_is_not_taken_for_an_armed_timer(
    aws: Provisioned, settings, monkeypatch
):
    """Arming a version whose execution was stopped moves the step to a new version."""
    from schedules import services
    from schedules.engines import TimerNameSpent, get_engine
    from schedules.engines import stepfunctions as module
    from schedules.models import ArmState, Step

    real = module.aws_client
    monkeypatch.setattr(
        module,
        "aws_client",
        lambda name: ClosedNamesRefused(real(name)) if name == "stepfunctions" else real(name),
    )
    engine = StepFunctionsEngine()
    t = timer(step_id=8)
    engine.disarm(Timer(**{**t.__dict__, "external_ref": engine.arm(t)}))
    with pytest.raises(TimerNameSpent, match="ABORTED"):
        engine.arm(t)

    settings.SCHEDULES_ENGINES = {"seconds": "stepfunctions", "relaxed": "local"}
    get_engine.cache_clear()
    job = services.job_schedule(action="noop", due_at=timezone.now() + dt.timedelta(hours=1))
    step = job.steps.get()
    get_engine("stepfunctions").disarm(services.timer_for(step))  # stopped behind our back
    Step.objects.filter(pk=step.pk).update(arm_state=ArmState.UNARMED)  # and forgotten
    assert services.steps_arm_pending() == 1
    step.refresh_from_db()
    assert (step.version, step.arm_state) == (2, ArmState.ARMED)
    assert step.external_ref.endswith(f"step-{step.pk}-v2")
    assert get_engine("stepfunctions").describe(services.timer_for(step)).state == "waiting"


def test_throttling_and_5xx_are_retried_with_backoff(monkeypatch, settings):
    """Over real HTTP: two throttles and a 503, then success, all inside one arm()."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from schedules.aws import aws_client_reset

    answers = [
        (400, {"__type": "ThrottlingException", "message": "Rate exceeded"}),
        (400, {"__type": "ThrottlingException", "message": "Rate exceeded"}),
        (503, {"__type": "ServiceUnavailable", "message": "try later"}),
        (200, {"executionArn": "arn:aws:states:us-east-1:1:execution:m:step-1-v1", "startDate": 0}),
    ]
    seen: list[str] = []

    class FlakyStepFunctions(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers["X-Amz-Target"])
            status, body = answers.pop(0)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyStepFunctions)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SFN", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings.SCHEDULES_AWS_MAX_ATTEMPTS = 5
    aws_client_reset()
    try:
        engine = StepFunctionsEngine(state_machine_arn="arn:aws:states:us-east-1:1:stateMachine:m")
        assert engine.arm(timer()) == "arn:aws:states:us-east-1:1:execution:m:step-1-v1"
    finally:
        server.shutdown()
        aws_client_reset()
    assert seen == ["AWSStepFunctions.StartExecution"] * 4


def test_provision_without_permission_names_the_refused_call(monkeypatch):
    import boto3
    from botocore.stub import Stubber
    from django.core.management.base import CommandError

    clients = {
        name: boto3.client(
            name, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
        )
        for name in ("sqs", "iam", "stepfunctions", "dynamodb", "scheduler")
    }
    stub = Stubber(clients["sqs"])
    stub.add_client_error(
        "get_queue_url",
        service_error_code="AccessDenied",
        http_status_code=403,
        service_message="User: arn:aws:iam::1:user/ci is not authorized to perform: "
        "sqs:getqueueurl",
    )
    monkeypatch.setattr(
        "schedules.management.commands.aws_provision.aws_client", clients.__getitem__
    )
    with stub, pytest.raises(CommandError) as info:
        call_command("aws_provision")
    message = str(info.value)
    assert "AWS refused GetQueueUrl" in message and "not authorized" in message
    assert "docs/aws.md" in message
