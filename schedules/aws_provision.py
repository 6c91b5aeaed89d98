"""Create or update, idempotently, the AWS resources the AWS engines use.

The jobs queue and its dead-letter queue, the IAM role Step Functions assumes
(allowed only ``sqs:SendMessage`` on the jobs queue), and the state machine; the
eventbridge engine's schedule group and the role its schedules assume; the
relaxed engine's timer table, the queue of the forwarder's failed stream
batches (``<queue>-ttl-failures``) and the forwarder's event source mapping.
``deploy/cloudformation.yaml`` declares the same resources.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .aws import error_code
from .engines.stepfunctions import render_definition

ROLE_POLICY_NAME = "send-to-jobs-queue"
#: Lambda event filter: only TTL removals reach the forwarder function.
TTL_REMOVAL_FILTER = {
    "eventName": ["REMOVE"],
    "userIdentity": {"type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]},
}
DLQ_RETENTION_SECONDS = 14 * 24 * 3600
#: The queue where Lambda puts what it could not forward: ``<jobs queue>-ttl-failures``.
TTL_FAILURES_SUFFIX = "-ttl-failures"
#: The forwarder's event source mapping (also in deploy/cloudformation.yaml). Lambda retries
#: a failing batch, split in halves (BisectBatchOnFunctionError) to isolate a bad record,
#: at most this many times, then sends its description to the failures queue and moves on.
#: (Lambda's default, -1, retries until the record leaves the stream: a shard stalls 24 h.)
FORWARDER_BATCH_SIZE = 100
FORWARDER_MAX_RETRY_ATTEMPTS = 10
#: Records older than this go to the failures queue unsent: by then the overdue sweep has
#: released their steps (SCHEDULES_TTL_MAX_LATENESS, 15 minutes by default).
FORWARDER_MAX_RECORD_AGE_SECONDS = 3600


def trust_policy(*, account: Any, state_machine_arn: Any) -> dict[str, Any]:
    """Only Step Functions may assume the state machine's role, and only for this account's
    state machine (confused-deputy protection: ``aws:SourceAccount``, ``aws:SourceArn``)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "states.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account},
                    "ArnLike": {"aws:SourceArn": state_machine_arn},
                },
            }
        ],
    }


def state_machine_arn_of(queue_arn: str, name: str) -> str:
    """The ARN a state machine called ``name`` has in the jobs queue's account and region
    (``arn:<partition>:sqs:<region>:<account>:<queue>``): no call to AWS needed."""
    _, partition, _, region, account, _ = queue_arn.split(":", 5)
    return f"arn:{partition}:states:{region}:{account}:stateMachine:{name}"


def role_policy(queue_arn: str) -> dict[str, Any]:
    """Least privilege: the state machine may only send to the jobs queue."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": queue_arn}],
    }


SCHEDULER_ROLE_POLICY_NAME = "send-to-jobs-queue"


def account_of(arn: str) -> str:
    """The account id of an ARN (``arn:aws:sqs:<region>:<account>:<name>``)."""
    return arn.split(":")[4]


#: An ARN or account id, or the CloudFormation expression standing for it (the template).
PolicyValue = str | dict[str, Any]


def scheduler_trust_policy(account_id: PolicyValue) -> dict[str, Any]:
    """EventBridge Scheduler may assume the role, for schedules of this account only
    (the confused-deputy guard AWS recommends)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "scheduler.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
            }
        ],
    }


def scheduler_role_policy(queue_arn: PolicyValue, dlq_arn: PolicyValue) -> dict[str, Any]:
    """Least privilege: the schedules may only send to the jobs queue, and their failed
    invocations to its dead-letter queue (EventBridge Scheduler delivers dead-letter
    events with the schedule's role)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": [queue_arn, dlq_arn]}
        ],
    }


@dataclass
class Change:
    resource: str
    name: str
    action: str  # created, updated, unchanged
    arn: str = ""


@dataclass
class ProvisionResult:
    queue_url: str = ""
    queue_arn: str = ""
    dlq_url: str = ""
    dlq_arn: str = ""
    ttl_failures_url: str = ""
    ttl_failures_arn: str = ""
    role_arn: str = ""
    state_machine_arn: str = ""
    table_name: str = ""
    stream_arn: str = ""
    schedule_group: str = ""
    schedule_group_arn: str = ""
    scheduler_role_arn: str = ""
    changes: list[Change] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Provisioner:
    sqs: Any
    iam: Any
    sfn: Any
    queue_name: str
    state_machine_name: str
    role_name: str
    max_receive_count: int
    visibility_timeout: int
    wait_time_seconds: int
    dynamodb: Any = None
    table_name: str = ""
    lambda_client: Any = None
    forwarder_function_arn: str = ""
    scheduler: Any = None
    schedule_group: str = ""
    scheduler_role_name: str = ""
    role_wait_seconds: float = 60.0
    result: ProvisionResult = field(default_factory=ProvisionResult)

    def run(self) -> ProvisionResult:
        self.result.dlq_url, self.result.dlq_arn = self._queue(
            f"{self.queue_name}-dlq", {"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)}
        )
        redrive = {
            "deadLetterTargetArn": self.result.dlq_arn,
            "maxReceiveCount": str(self.max_receive_count),
        }
        self.result.queue_url, self.result.queue_arn = self._queue(
            self.queue_name,
            {
                "VisibilityTimeout": str(self.visibility_timeout),
                "ReceiveMessageWaitTimeSeconds": str(self.wait_time_seconds),
                "RedrivePolicy": json.dumps(redrive, separators=(",", ":")),
            },
        )
        role_created = self._role()
        self._state_machine(role_created)
        if self.dynamodb is not None:
            self.result.ttl_failures_url, self.result.ttl_failures_arn = self._queue(
                f"{self.queue_name}{TTL_FAILURES_SUFFIX}",
                {"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)},
            )
            self._timer_table()
            if self.forwarder_function_arn:
                self._event_source_mapping()
        if self.scheduler is not None:
            self._schedule_group()
            self._scheduler_role()
        return self.result

    def _queue(self, name: str, attributes: dict[str, str]) -> tuple[str, str]:
        try:
            url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except Exception as exc:
            if error_code(exc) not in {
                "AWS.SimpleQueueService.NonExistentQueue",
                "QueueDoesNotExist",
            }:
                raise
            url = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
            action = "created"
        else:
            current = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
                "Attributes"
            ]
            differs = {k: v for k, v in attributes.items() if not _same(current.get(k), v)}
            if differs:
                self.sqs.set_queue_attributes(QueueUrl=url, Attributes=differs)
            action = "updated" if differs else "unchanged"
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.result.changes.append(Change("sqs queue", name, action, arn))
        return url, arn

    def _role(self) -> bool:
        policy = role_policy(self.result.queue_arn)
        trust = trust_policy(
            account=account_of(self.result.queue_arn),
            state_machine_arn=state_machine_arn_of(self.result.queue_arn, self.state_machine_name),
        )
        try:
            role = self.iam.get_role(RoleName=self.role_name)["Role"]
        except Exception as exc:
            if error_code(exc) != "NoSuchEntity":
                raise
            role = self.iam.create_role(
                RoleName=self.role_name,
                AssumeRolePolicyDocument=json.dumps(trust),
                Description="Assumed by the schedules state machine to send step messages.",
            )["Role"]
            self.iam.put_role_policy(
                RoleName=self.role_name,
                PolicyName=ROLE_POLICY_NAME,
                PolicyDocument=json.dumps(policy),
            )
            self.result.role_arn = role["Arn"]
            self.result.changes.append(Change("iam role", self.role_name, "created", role["Arn"]))
            return True
        changed = False
        if not _same_policy(role.get("AssumeRolePolicyDocument"), trust):
            # E.g. a role made before its trust policy named the account and state machine.
            self.iam.update_assume_role_policy(
                RoleName=self.role_name, PolicyDocument=json.dumps(trust)
            )
            changed = True
        try:
            current = self.iam.get_role_policy(
                RoleName=self.role_name, PolicyName=ROLE_POLICY_NAME
            )["PolicyDocument"]
        except Exception as exc:
            if error_code(exc) != "NoSuchEntity":
                raise
            current = None
        if not _same_policy(current, policy):
            self.iam.put_role_policy(
                RoleName=self.role_name,
                PolicyName=ROLE_POLICY_NAME,
                PolicyDocument=json.dumps(policy),
            )
            changed = True
        self.result.role_arn = role["Arn"]
        self.result.changes.append(
            Change("iam role", self.role_name, "updated" if changed else "unchanged", role["Arn"])
        )
        return False

    def _state_machine(self, role_just_created: bool) -> None:
        definition = render_definition(queue_url=self.result.queue_url, queue_name=self.queue_name)
        arn = self._find_state_machine()
        if arn is None:
            arn = self._with_role_propagation(
                role_just_created,
                lambda: self.sfn.create_state_machine(
                    name=self.state_machine_name,
                    definition=json.dumps(definition),
                    roleArn=self.result.role_arn,
                    type="STANDARD",
                )["stateMachineArn"],
            )
            action = "created"
        else:
            current = self.sfn.describe_state_machine(stateMachineArn=arn)
            if json.loads(current["definition"]) != definition or (
                current["roleArn"] != self.result.role_arn
            ):
                self.sfn.update_state_machine(
                    stateMachineArn=arn,
                    definition=json.dumps(definition),
                    roleArn=self.result.role_arn,
                )
                action = "updated"
            else:
                action = "unchanged"
        self.result.state_machine_arn = arn
        self.result.changes.append(Change("state machine", self.state_machine_name, action, arn))

    def _timer_table(self) -> None:
        """The relaxed engine's table: TTL on ``expires_at``, a NEW_AND_OLD_IMAGES stream."""
        from .engines.dynamodb_ttl import TTL_ATTRIBUTE

        name = self.table_name
        stream = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
        try:
            table = self.dynamodb.describe_table(TableName=name)["Table"]
        except Exception as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            self.dynamodb.create_table(
                TableName=name,
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
                StreamSpecification=stream,
            )
            self.dynamodb.get_waiter("table_exists").wait(TableName=name)
            table = self.dynamodb.describe_table(TableName=name)["Table"]
            action = "created"
        else:
            current = table.get("StreamSpecification") or {}
            action = "unchanged"
            if (
                not current.get("StreamEnabled")
                or current.get("StreamViewType") != (stream["StreamViewType"])
            ):
                active = self.dynamodb.get_waiter("table_exists")  # waits for ACTIVE
                if current.get("StreamEnabled"):  # another view type: replace the stream
                    self.dynamodb.update_table(
                        TableName=name, StreamSpecification={"StreamEnabled": False}
                    )
                    active.wait(TableName=name)  # one update at a time
                self.dynamodb.update_table(TableName=name, StreamSpecification=stream)
                active.wait(TableName=name)
                table = self.dynamodb.describe_table(TableName=name)["Table"]
                action = "updated"
        ttl = self.dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in {"ENABLED", "ENABLING"} or (
            ttl.get("AttributeName") != TTL_ATTRIBUTE
        ):
            self.dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
            )
            action = "updated" if action == "unchanged" else action
        self.result.table_name = name
        self.result.stream_arn = table.get("LatestStreamArn", "")
        self.result.changes.append(Change("dynamodb table", name, action, table["TableArn"]))

    def _event_source_mapping(self) -> None:
        """Subscribe the forwarder Lambda to the stream, TTL removals only.

        A failing batch is split in halves and retried at most FORWARDER_MAX_RETRY_ATTEMPTS
        times (records older than FORWARDER_MAX_RECORD_AGE_SECONDS are not retried), then
        described in the ``-ttl-failures`` queue, so one bad record cannot stall its shard.
        An existing mapping whose settings drifted (filter, batch size, partial batch failure
        reporting, retries, failure destination) is updated in place; its starting position
        cannot change.
        """
        wanted: dict[str, Any] = {
            "BatchSize": FORWARDER_BATCH_SIZE,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "FilterCriteria": {"Filters": [{"Pattern": json.dumps(TTL_REMOVAL_FILTER)}]},
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": FORWARDER_MAX_RETRY_ATTEMPTS,
            "MaximumRecordAgeInSeconds": FORWARDER_MAX_RECORD_AGE_SECONDS,
            "DestinationConfig": {"OnFailure": {"Destination": self.result.ttl_failures_arn}},
        }
        existing = self.lambda_client.list_event_source_mappings(
            EventSourceArn=self.result.stream_arn, FunctionName=self.forwarder_function_arn
        )["EventSourceMappings"]
        if existing:
            current = existing[0]
            uuid = current["UUID"]
            patterns = [
                json.loads(f.get("Pattern") or "{}")
                for f in (current.get("FilterCriteria") or {}).get("Filters", [])
            ]
            same = (
                current.get("BatchSize") == wanted["BatchSize"]
                and list(current.get("FunctionResponseTypes") or [])
                == wanted["FunctionResponseTypes"]
                and patterns == [TTL_REMOVAL_FILTER]
                and current.get("BisectBatchOnFunctionError") is True
                and current.get("MaximumRetryAttempts") == FORWARDER_MAX_RETRY_ATTEMPTS
                and current.get("MaximumRecordAgeInSeconds") == FORWARDER_MAX_RECORD_AGE_SECONDS
                and _failure_destination(current) == self.result.ttl_failures_arn
            )
            if not same:
                self.lambda_client.update_event_source_mapping(UUID=uuid, **wanted)
            self.result.changes.append(
                Change(
                    "event source mapping",
                    self.forwarder_function_arn,
                    "unchanged" if same else "updated",
                    uuid,
                )
            )
            return
        mapping = self.lambda_client.create_event_source_mapping(
            EventSourceArn=self.result.stream_arn,
            FunctionName=self.forwarder_function_arn,
            # From the oldest record kept: removals made before the mapping existed are
            # forwarded too (a repeat is skipped by the worker's fencing).
            StartingPosition="TRIM_HORIZON",
            **wanted,
        )
        self.result.changes.append(
            Change("event source mapping", self.forwarder_function_arn, "created", mapping["UUID"])
        )

    def _schedule_group(self) -> None:
        """The eventbridge engine's schedule group (its schedules and nothing else)."""
        name = self.schedule_group
        try:
            group = self.scheduler.get_schedule_group(Name=name)
            arn, action = str(group["Arn"]), "unchanged"
        except Exception as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            arn = str(self.scheduler.create_schedule_group(Name=name)["ScheduleGroupArn"])
            action = "created"
        self.result.schedule_group = name
        self.result.schedule_group_arn = arn
        self.result.changes.append(Change("schedule group", name, action, arn))

    def _scheduler_role(self) -> None:
        """The role the eventbridge engine's schedules assume to send step messages."""
        name = self.scheduler_role_name
        trust = scheduler_trust_policy(account_of(self.result.queue_arn))
        policy = scheduler_role_policy(self.result.queue_arn, self.result.dlq_arn)
        try:
            role = self.iam.get_role(RoleName=name)["Role"]
        except Exception as exc:
            if error_code(exc) != "NoSuchEntity":
                raise
            role = self.iam.create_role(
                RoleName=name,
                AssumeRolePolicyDocument=json.dumps(trust),
                Description="Assumed by EventBridge Scheduler to send step messages.",
            )["Role"]
            current: Any = None
            action = "created"
        else:
            action = "unchanged"
            if not _same_policy(role.get("AssumeRolePolicyDocument"), trust):
                self.iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
                action = "updated"
            try:
                current = self.iam.get_role_policy(
                    RoleName=name, PolicyName=SCHEDULER_ROLE_POLICY_NAME
                )["PolicyDocument"]
            except Exception as exc:
                if error_code(exc) != "NoSuchEntity":
                    raise
                current = None
        if not _same_policy(current, policy):
            self.iam.put_role_policy(
                RoleName=name,
                PolicyName=SCHEDULER_ROLE_POLICY_NAME,
                PolicyDocument=json.dumps(policy),
            )
            action = "updated" if action == "unchanged" else action
        self.result.scheduler_role_arn = str(role["Arn"])
        self.result.changes.append(Change("iam role", name, action, role["Arn"]))

    def _find_state_machine(self) -> str | None:
        for page in self.sfn.get_paginator("list_state_machines").paginate():
            for machine in page["stateMachines"]:
                if machine["name"] == self.state_machine_name:
                    return str(machine["stateMachineArn"])
        return None

    def _with_role_propagation(self, role_just_created: bool, call: Any) -> str:
        """A new IAM role takes seconds to be assumable; retry only for that error."""
        deadline = time.monotonic() + (self.role_wait_seconds if role_just_created else 0)
        while True:
            try:
                return str(call())
            except Exception as exc:
                if error_code(exc) != "AccessDeniedException" or time.monotonic() > deadline:
                    raise
                time.sleep(3)


def _failure_destination(mapping: dict[str, Any]) -> str:
    """The on-failure destination of an event source mapping ('' if none)."""
    on_failure = (mapping.get("DestinationConfig") or {}).get("OnFailure") or {}
    return str(on_failure.get("Destination") or "")


def _same(current: str | None, wanted: str) -> bool:
    if current is None:
        return False
    try:
        a, b = json.loads(current), json.loads(wanted)
    except ValueError:
        return current == wanted
    if isinstance(a, dict) and isinstance(b, dict):  # AWS may return numbers as strings
        return {k: str(v) for k, v in a.items()} == {k: str(v) for k, v in b.items()}
    return bool(a == b)


def _same_policy(current: Any, wanted: dict[str, Any]) -> bool:
    if isinstance(current, str):
        from urllib.parse import unquote

        current = json.loads(unquote(current))
    return bool(current == wanted)
