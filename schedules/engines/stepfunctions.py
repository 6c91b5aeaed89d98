"""The precise AWS engine: one Standard workflow execution per step version.

The execution waits until the step's due time (``Wait`` with ``TimestampPath``)
and sends the step's Celery message to the jobs queue with the SQS service
integration: no Lambda in between. Its input carries the step id, the version
and the due time, nothing else.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ..aws import aws_client, error_code
from ..ttl_forwarder import task_body
from .base import Engine, Timer, TimerNameSpent, TimerStatus

DEFINITION_PATH = Path(__file__).with_name("stepfunctions.asl.json")
QUEUE_URL_PLACEHOLDER = "${JobsQueueUrl}"
QUEUE_NAME_PLACEHOLDER = "${JobsQueueName}"

STATUS = {
    "RUNNING": "waiting",
    "SUCCEEDED": "released",
    "FAILED": "failed",
    "TIMED_OUT": "failed",
    "ABORTED": "stopped",
    "PENDING_REDRIVE": "failed",
}
#: Closed without sending the message: the name cannot be started again.
CLOSED_UNSENT = frozenset({"ABORTED", "FAILED", "TIMED_OUT", "PENDING_REDRIVE"})


def load_definition() -> dict[str, Any]:
    """The state machine definition as stored in the repository (with placeholders)."""
    definition: dict[str, Any] = json.loads(DEFINITION_PATH.read_text())
    return definition


def render_definition(*, queue_url: str, queue_name: str) -> dict[str, Any]:
    """The definition with the jobs queue filled in (placeholders are whole JSON strings)."""
    values = {QUEUE_URL_PLACEHOLDER: queue_url, QUEUE_NAME_PLACEHOLDER: queue_name}

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: fill(value) for key, value in node.items()}
        if isinstance(node, list):
            return [fill(value) for value in node]
        if isinstance(node, str) and node in values:
            return values[node]
        return node

    rendered: dict[str, Any] = fill(load_definition())
    return rendered


def execution_name(timer: Timer) -> str:
    """Unique per step version, so arming twice starts one execution."""
    return f"step-{timer.step_id}-v{timer.version}"


#: The execution input's fields that say which timer it is (``body`` is derived from them).
TIMER_FIELDS = ("step_id", "version", "due_at")


def execution_input(timer: Timer) -> str:
    """The step id, version and due time, and the Celery body ``[[step_id, version], {}, {}]``.

    The state machine sends ``body`` as the task's arguments (run_step(step_id, version))
    without a Pass state of its own, so each step costs two state transitions.
    """
    due = timer.due_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = task_body(timer.step_id, timer.version)
    return json.dumps(
        {"step_id": timer.step_id, "version": timer.version, "due_at": due, "body": body},
        separators=(",", ":"),
        sort_keys=True,
    )


def same_timer(existing_input: str, payload: str) -> bool:
    """Both inputs name the same step version and due time (an older input had no body)."""
    old, new = json.loads(existing_input or "{}"), json.loads(payload)
    return all(old.get(key) == new[key] for key in TIMER_FIELDS)


#: List prices (US East, read 2026-12-07): Standard workflows $0.025 per 1,000 state
#: transitions, SQS $0.40 per million requests. A step is two transitions (wait, send)
#: and one SQS send: 2 x $0.000025 + $0.0000004.
LIST_PRICE = Decimal("0.0000504")


class StepFunctionsEngine(Engine):
    name = "stepfunctions"
    precision = "seconds"
    list_price = LIST_PRICE
    required_settings = ("SCHEDULES_SFN_STATE_MACHINE_ARN",)

    def __init__(self, client: Any = None, state_machine_arn: str | None = None) -> None:
        self._client = client
        self.state_machine_arn = state_machine_arn or settings.SCHEDULES_SFN_STATE_MACHINE_ARN
        if not self.state_machine_arn:
            raise ImproperlyConfigured(
                "The stepfunctions engine needs SCHEDULES_SFN_STATE_MACHINE_ARN "
                "(python manage.py aws_provision prints it)."
            )

    @property
    def client(self) -> Any:
        return self._client or aws_client("stepfunctions")

    def execution_arn(self, timer: Timer) -> str:
        base = self.state_machine_arn.replace(":stateMachine:", ":execution:", 1)
        return f"{base}:{execution_name(timer)}"

    def arm(self, timer: Timer) -> str:
        payload = execution_input(timer)
        try:
            response = self.client.start_execution(
                stateMachineArn=self.state_machine_arn, name=execution_name(timer), input=payload
            )
        except Exception as exc:
            if error_code(exc) != "ExecutionAlreadyExists":
                raise
            # Ours if it carries the same input: an earlier arm of this version.
            arn = self.execution_arn(timer)
            existing = self.client.describe_execution(executionArn=arn)
            if not same_timer(existing.get("input") or "", payload):
                raise
            if existing.get("status") in CLOSED_UNSENT:
                raise TimerNameSpent(
                    f"execution {execution_name(timer)} is {existing['status']}; "
                    "the step needs a new version"
                ) from exc
            return arn
        return str(response["executionArn"])

    def disarm(self, timer: Timer) -> None:
        arn = timer.external_ref or self.execution_arn(timer)
        try:
            self.client.stop_execution(
                executionArn=arn, error="Disarmed", cause="step rescheduled or cancelled"
            )
        except Exception as exc:
            # Gone or already finished: nothing left to stop.
            if error_code(exc) not in {"ExecutionDoesNotExist", "ValidationException"}:
                raise

    def describe(self, timer: Timer) -> TimerStatus:
        arn = timer.external_ref or self.execution_arn(timer)
        try:
            response = self.client.describe_execution(executionArn=arn)
        except Exception as exc:
            if error_code(exc) == "ExecutionDoesNotExist":
                return TimerStatus(state="absent", detail="no such execution")
            raise
        status = str(response["status"])
        return TimerStatus(
            state=STATUS.get(status, status.lower()), detail=status, url=self.console_url(timer)
        )

    def console_url(self, timer: Timer) -> str:
        arn = timer.external_ref or self.execution_arn(timer)
        region = arn.split(":")[3] if arn.count(":") >= 4 else settings.SCHEDULES_AWS_REGION
        return (
            f"https://{region}.console.aws.amazon.com/states/home?region={region}"
            f"#/v2/executions/details/{arn}"
        )

    def list_timers(self) -> Iterator[Timer]:
        """The running executions of the state machine named ``step-<id>-v<version>``.

        Paginated ``ListExecutions`` (RUNNING only); other names are not ours and
        are skipped. The listing does not carry the input, so ``due_at`` is the
        execution's start date; ``external_ref`` is its ARN.
        """
        pattern = re.compile(r"step-(\d+)-v(\d+)")
        pages = self.client.get_paginator("list_executions").paginate(
            stateMachineArn=self.state_machine_arn, statusFilter="RUNNING"
        )
        for page in pages:
            for execution in page.get("executions", []):
                match = pattern.fullmatch(str(execution.get("name", "")))
                if match is None:
                    continue
                started = execution.get("startDate")
                yield Timer(
                    step_id=int(match[1]),
                    version=int(match[2]),
                    due_at=started if isinstance(started, dt.datetime) else dt.datetime.now(dt.UTC),
                    engine=self.name,
                    external_ref=str(execution["executionArn"]),
                )
