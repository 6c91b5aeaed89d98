"""The minute AWS engine: one EventBridge Scheduler one-time schedule per step version.

The schedule ``step-<id>-v<version>`` (in a schedule group of its own) fires
once, ``at()`` the step's due time rounded up to the whole minute, and sends
the step's Celery message to the jobs queue with the SQS templated target:
no Lambda, no Step Functions. EventBridge Scheduler invokes a target anywhere
within the minute it is given (60 s precision), so rounding up means nothing
arrives before the due time, and a step arrives within a minute after its due
time rounded up. The schedule deletes itself after it fired
(``ActionAfterCompletion=DELETE``). Its input is the message: ids and the
version, nothing else.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from ..aws import aws_client, error_code
from ..ttl_forwarder import celery_message
from .base import Engine, Timer, TimerStatus

#: EventBridge Scheduler invokes a one-time schedule's target within the minute given.
PRECISION_SECONDS = 60
#: A step already due (run now, an overdue step armed again) is scheduled for the
#: next whole minute at least this far ahead: a one-time schedule is for a future time.
ARM_LEAD_SECONDS = 5
#: AWS bounds of a target's RetryPolicy.
MAX_EVENT_AGE_RANGE = (60, 86_400)
MAX_RETRY_ATTEMPTS_RANGE = (0, 185)

NAME_PATTERN = re.compile(r"step-(\d+)-v(\d+)")
AT_PATTERN = re.compile(r"at\((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\)")
#: arn:<partition>:scheduler:<region>:<account>:schedule/<group>/<name>
SCHEDULE_ARN_PATTERN = re.compile(r"arn:[^:]+:scheduler:([^:]*):[^:]*:schedule/([^/]+)/([^/]+)")


def schedule_name(timer: Timer) -> str:
    """Unique per step version, so arming twice leaves one schedule."""
    return f"step-{timer.step_id}-v{timer.version}"


def message_id(timer: Timer) -> str:
    return f"eb-step-{timer.step_id}-v{timer.version}"


def round_up_to_minute(moment: dt.datetime) -> dt.datetime:
    """The first whole minute (UTC) at or after ``moment``: 10:00:00 stays, 10:00:00.001
    becomes 10:01:00."""
    if timezone.is_naive(moment):
        raise ValueError(f"naive datetime {moment!r}: a due time must be timezone-aware")
    utc = moment.astimezone(dt.UTC)
    minute = utc.replace(second=0, microsecond=0)
    return minute if minute == utc else minute + dt.timedelta(minutes=1)


def fire_minute(due_at: dt.datetime, *, now: dt.datetime | None = None) -> dt.datetime:
    """The minute the schedule is for: the due time rounded up to the minute, or, for a
    step already due, the first whole minute ``ARM_LEAD_SECONDS`` or more ahead of now."""
    earliest = (now or timezone.now()) + dt.timedelta(seconds=ARM_LEAD_SECONDS)
    return round_up_to_minute(max(due_at, earliest))


def at_expression(minute: dt.datetime) -> str:
    """``at(YYYY-MM-DDThh:mm:ss)`` of a whole minute, read in ScheduleExpressionTimezone UTC."""
    return f"at({minute.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%S})"


def parse_at(expression: str) -> dt.datetime | None:
    """The UTC time of an ``at()`` expression, or None for any other expression."""
    match = AT_PATTERN.fullmatch(expression)
    if match is None:
        return None
    return dt.datetime.fromisoformat(match[1]).replace(tzinfo=dt.UTC)


def _required(variable: str, value: str) -> str:
    if not value:
        raise ImproperlyConfigured(
            f"The eventbridge engine needs {variable} (python manage.py aws_provision prints it)."
        )
    return value


def _bounded(variable: str, value: int, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if not low <= value <= high:
        raise ImproperlyConfigured(f"{variable} must be between {low} and {high}, not {value}.")
    return value


#: List prices (US East, read 2026-12-07): EventBridge Scheduler $1.00 per million
#: invocations (after 14 million free each month), SQS $0.40 per million requests. A step
#: is one invocation, which is the SQS send: $0.000001 + $0.0000004.
LIST_PRICE = Decimal("0.0000014")


class EventBridgeEngine(Engine):
    name = "eventbridge"
    precision = "minute"
    list_price = LIST_PRICE
    required_settings = ("SCHEDULES_EVENTBRIDGE_ROLE_ARN", "SCHEDULES_SQS_QUEUE_ARN")
    #: Schedules per ListSchedules page (AWS allows at most 100).
    list_page_size = 100

    def __init__(
        self,
        client: Any = None,
        *,
        group_name: str | None = None,
        role_arn: str | None = None,
        queue_arn: str | None = None,
        dlq_arn: str | None = None,
    ) -> None:
        self._client = client
        self.group_name = _required(
            "SCHEDULES_EVENTBRIDGE_GROUP", group_name or settings.SCHEDULES_EVENTBRIDGE_GROUP
        )
        self.role_arn = _required(
            "SCHEDULES_EVENTBRIDGE_ROLE_ARN", role_arn or settings.SCHEDULES_EVENTBRIDGE_ROLE_ARN
        )
        self.queue_arn = _required(
            "SCHEDULES_SQS_QUEUE_ARN", queue_arn or settings.SCHEDULES_SQS_QUEUE_ARN
        )
        # The dead-letter queue aws_provision and the template create: <queue>-dlq.
        self.dlq_arn = dlq_arn or settings.SCHEDULES_SQS_DLQ_ARN or f"{self.queue_arn}-dlq"
        #: The message's routing key: the queue the schedule sends to, which the worker reads.
        self.queue_name = self.queue_arn.rsplit(":", 1)[-1]
        self.max_event_age = _bounded(
            "SCHEDULES_EVENTBRIDGE_MAX_EVENT_AGE",
            settings.SCHEDULES_EVENTBRIDGE_MAX_EVENT_AGE,
            MAX_EVENT_AGE_RANGE,
        )
        self.max_retry_attempts = _bounded(
            "SCHEDULES_EVENTBRIDGE_MAX_RETRY_ATTEMPTS",
            settings.SCHEDULES_EVENTBRIDGE_MAX_RETRY_ATTEMPTS,
            MAX_RETRY_ATTEMPTS_RANGE,
        )

    @property
    def client(self) -> Any:
        return self._client or aws_client("scheduler")

    @property
    def release_overdue_after(self) -> float:
        """SCHEDULES_REDELIVER_AFTER past the latest moment the schedule may fire: up to
        60 s of rounding up plus 60 s of precision after the due time."""
        return float(settings.SCHEDULES_REDELIVER_AFTER + 2 * PRECISION_SECONDS)

    @property
    def expected_lateness(self) -> str:
        return (
            "within a minute after the due time rounded up to the whole minute "
            "(0 to 2 minutes; never early)"
        )

    def message(self, timer: Timer) -> str:
        """The Celery message the schedule sends: the same envelope as the TTL forwarder's."""
        return celery_message(
            timer.step_id, timer.version, queue_name=self.queue_name, message_id=message_id(timer)
        )

    def request(self, timer: Timer, *, now: dt.datetime | None = None) -> dict[str, Any]:
        """The CreateSchedule request for this step version."""
        return {
            "Name": schedule_name(timer),
            "GroupName": self.group_name,
            "ScheduleExpression": at_expression(fire_minute(timer.due_at, now=now)),
            "ScheduleExpressionTimezone": "UTC",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "ActionAfterCompletion": "DELETE",
            "State": "ENABLED",
            "Description": f"schedules step {timer.step_id} version {timer.version}",
            "Target": {
                "Arn": self.queue_arn,
                "RoleArn": self.role_arn,
                "Input": self.message(timer),
                "RetryPolicy": {
                    "MaximumEventAgeInSeconds": self.max_event_age,
                    "MaximumRetryAttempts": self.max_retry_attempts,
                },
                "DeadLetterConfig": {"Arn": self.dlq_arn},
            },
        }

    def _locate(self, timer: Timer) -> tuple[str, str]:
        """(group, name) of the timer's schedule: from its ARN if it has one, so a
        schedule made before the group setting changed is still found."""
        match = SCHEDULE_ARN_PATTERN.fullmatch(timer.external_ref)
        if match is not None:
            return match[2], match[3]
        return self.group_name, schedule_name(timer)

    def arm(self, timer: Timer) -> str:
        request = self.request(timer)
        try:
            response = self.client.create_schedule(**request)
        except Exception as exc:
            if error_code(exc) != "ConflictException":
                raise
            # Ours if it sends the same message to the same queue: an earlier arm of this
            # version (its minute may differ if the step was already due then). Another
            # message under our name (another deployment sharing the group) is an error.
            existing = self.client.get_schedule(GroupName=self.group_name, Name=request["Name"])
            target = existing.get("Target") or {}
            if (target.get("Arn"), target.get("Input")) != (
                request["Target"]["Arn"],
                request["Target"]["Input"],
            ):
                raise
            return str(existing["Arn"])
        return str(response["ScheduleArn"])

    def disarm(self, timer: Timer) -> None:
        group, name = self._locate(timer)
        try:
            self.client.delete_schedule(GroupName=group, Name=name)
        except Exception as exc:
            # Gone already: fired (and deleted itself) or never made.
            if error_code(exc) != "ResourceNotFoundException":
                raise

    def describe(self, timer: Timer, *, now: dt.datetime | None = None) -> TimerStatus:
        group, name = self._locate(timer)
        url = self.console_url(timer)
        try:
            schedule = self.client.get_schedule(GroupName=group, Name=name)
        except Exception as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            # A one-time schedule deletes itself once it fired: past its minute, absence
            # means sent (or lost; the sweep releases the step if no message came).
            fired_by = round_up_to_minute(timer.due_at) + dt.timedelta(seconds=PRECISION_SECONDS)
            if (now or timezone.now()) >= fired_by:
                return TimerStatus(
                    state="released",
                    detail="no schedule after its minute: fired and deleted itself",
                )
            return TimerStatus(state="absent", detail="no such schedule")
        expression = str(schedule.get("ScheduleExpression", ""))
        state = str(schedule.get("State", "ENABLED"))
        if state != "ENABLED":
            return TimerStatus(state="stopped", detail=f"{expression} UTC, {state}", url=url)
        return TimerStatus(state="waiting", detail=f"{expression} UTC", url=url)

    def console_url(self, timer: Timer) -> str:
        match = SCHEDULE_ARN_PATTERN.fullmatch(timer.external_ref)
        region = (match[1] if match else "") or settings.SCHEDULES_AWS_REGION
        group, name = self._locate(timer)
        return (
            f"https://{region}.console.aws.amazon.com/scheduler/home?region={region}"
            f"#schedules/{group}/{name}"
        )

    def list_timers(self) -> Iterator[Timer]:
        """The group's schedules named ``step-<id>-v<version>``, page by page.

        Other names are not ours and are skipped. The listing does not carry the
        expression, so ``due_at`` is the schedule's creation date; ``external_ref``
        is its ARN.
        """
        pages = self.client.get_paginator("list_schedules").paginate(
            GroupName=self.group_name, PaginationConfig={"PageSize": self.list_page_size}
        )
        for page in pages:
            for schedule in page.get("Schedules", []):
                match = NAME_PATTERN.fullmatch(str(schedule.get("Name", "")))
                if match is None:
                    continue
                created = schedule.get("CreationDate")
                yield Timer(
                    step_id=int(match[1]),
                    version=int(match[2]),
                    due_at=created if isinstance(created, dt.datetime) else timezone.now(),
                    engine=self.name,
                    external_ref=str(schedule["Arn"]),
                )
