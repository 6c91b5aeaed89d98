"""Shapes and types only: the rules live in schedules.services and schedules.validation."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from workers.actions import job_action_names

from ..models import (
    LEGACY_PRECISIONS,
    PAUSE_REASON_MAX,
    RECURRING_SCHEDULE_TYPES,
    Classroom,
    Execution,
    Job,
    MissedPolicy,
    OverlapPolicy,
    Precision,
    RateUnit,
    Run,
    ScheduleType,
    Step,
    Workflow,
)
from ..selectors import describe_schedule, engine_expected_lateness, job_next_occurrences
from ..validation import Errors, check_job_action

ISO_FORMAT = "YYYY-MM-DDThh:mm[:ss[.uuuuuu]]±hh:mm or ...Z"
NAIVE = (
    "must include a time zone offset (a naive date and time is ambiguous): "
    "use e.g. 2026-12-01T09:00:00+01:00 or ...Z for UTC"
)


class JobActionField(serializers.ChoiceField):
    """The registered actions a job may run; a classroom's or the workflow engine's own
    action is refused with the rule (``validation.check_job_action``), not as unknown."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=[], **kwargs)

    def to_internal_value(self, data: Any) -> Any:
        errors = Errors()
        check_job_action(errors, "action", data)
        if "action" in errors:
            raise serializers.ValidationError(errors.by_field["action"])
        return super().to_internal_value(data)


class PrecisionField(serializers.ChoiceField):
    """A precision class (seconds, minute, relaxed). The earlier name ``precise`` is still
    read, as ``seconds``; answers always give the current name."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault(
            "help_text",
            "How late a run may start; it chooses the engine (SCHEDULES_ENGINES): seconds, "
            "minute or relaxed. `precise` is read as `seconds`.",
        )
        super().__init__(choices=Precision.choices, **kwargs)

    def to_internal_value(self, data: Any) -> Any:
        return super().to_internal_value(LEGACY_PRECISIONS.get(data, data))


def parse_aware(value: Any) -> dt.datetime:
    """An ISO 8601 date and time with its offset, as UTC. ValueError names the rule broken."""
    try:
        parsed = parse_datetime(value) if isinstance(value, str) else None
    except ValueError:  # well-formed but impossible, e.g. minute 61
        parsed = None
    if parsed is None:
        raise ValueError(f"Datetime has wrong format. Use this format instead: {ISO_FORMAT}")
    if timezone.is_naive(parsed):
        raise ValueError(NAIVE)
    try:
        # UTC from here on: databases refuse some offsets (PostgreSQL: beyond ±15:59).
        return parsed.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date and time that must carry its offset: a naive time is refused."""

    def to_internal_value(self, value: Any) -> dt.datetime:
        try:
            return parse_aware(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


class StrictSerializer(serializers.Serializer[Any]):
    """Refuses fields it does not know, naming them."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(getattr(self, "initial_data", {}) or {}) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(
                {name: ["unknown field: not accepted here"] for name in sorted(unknown)}
            )
        return attrs


WEBHOOK_HELP = (
    "Also POST this job's alerts here (docs/alerts.md); empty for none. Its host must be in "
    "SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS."
)


def _optional_int(help_text: str) -> serializers.IntegerField:
    return serializers.IntegerField(required=False, allow_null=True, help_text=help_text)


class ScheduleFieldsSerializer(StrictSerializer):
    """A job's rule, policies and poll limits: types only (the services check the rules)."""

    rate_every = _optional_int("A rate rule: run every N rate units.")
    rate_unit = serializers.ChoiceField(
        choices=RateUnit.choices, required=False, allow_blank=True, help_text="A rate rule's unit."
    )
    cron = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=200,
        help_text="A cron rule: 5 fields, read in the job's time_zone, e.g. '0 9 * * 1-5'.",
    )
    starts_at = AwareDateTimeField(
        required=False,
        allow_null=True,
        help_text="When a recurring job's rule begins (default: now); a rate counts from it.",
    )
    ends_at = AwareDateTimeField(
        required=False, allow_null=True, help_text="A recurring job has no occurrence after this."
    )
    max_runs = _optional_int("A recurring job ends after this many runs.")
    missed_policy = serializers.ChoiceField(
        choices=MissedPolicy.choices,
        required=False,
        help_text="When behind (a later occurrence is already due as one is taken); "
        "default run_once.",
    )
    overlap_policy = serializers.ChoiceField(
        choices=OverlapPolicy.choices,
        required=False,
        help_text="An occurrence due while the previous one is going; default skip.",
    )
    poll_interval = _optional_int("Polling actions: seconds between checks.")
    poll_max_checks = _optional_int("Polling actions: most checks, the first included.")
    poll_timeout = _optional_int(
        "Polling actions: seconds after the first check's due time by which it must be done."
    )
    pause_after_failures = _optional_int(
        "Recurring jobs: pause the job after this many failed occurrences in a row (1 or "
        "more; a success starts the count again). Empty: it never pauses itself."
    )


class JobCreateSerializer(ScheduleFieldsSerializer):
    action = JobActionField(help_text="A registered action a job may run (docs/actions.md).")
    payload = serializers.JSONField(
        required=False, default=dict, help_text="Arguments of the action, checked by its schema."
    )
    schedule_type = serializers.ChoiceField(
        choices=ScheduleType.choices,
        default=ScheduleType.ONCE,
        help_text="once (at due_at), rate (rate_every and rate_unit) or cron (cron).",
    )
    due_at = AwareDateTimeField(
        required=False,
        allow_null=True,
        help_text="When a one-off job runs; must carry a time zone offset. Not for recurring jobs.",
    )
    precision = PrecisionField(default=Precision.SECONDS)
    max_attempts = serializers.IntegerField(required=False, help_text="1 to the set limit.")
    name = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    time_zone = serializers.CharField(
        required=False,
        default="UTC",
        max_length=64,
        help_text="IANA zone: a cron rule is read in it; kept for display.",
    )
    webhook_url = serializers.CharField(
        required=False, allow_blank=True, default="", help_text=WEBHOOK_HELP
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Actions registered after import (SCHEDULES_ACTION_MODULES) are choices too; a
        # classroom's and the workflow engine's own actions are not.
        action = self.fields["action"]
        assert isinstance(action, serializers.ChoiceField)
        action.choices = job_action_names()


class JobUpdateSerializer(ScheduleFieldsSerializer):
    due_at = AwareDateTimeField(required=False, help_text="Reschedule a one-off job to this time.")
    payload = serializers.JSONField(required=False)
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    max_attempts = serializers.IntegerField(required=False)
    precision = PrecisionField(required=False)
    schedule_type = serializers.ChoiceField(
        choices=RECURRING_SCHEDULE_TYPES,
        required=False,
        help_text="A recurring job may switch between rate and cron.",
    )
    webhook_url = serializers.CharField(required=False, allow_blank=True, help_text=WEBHOOK_HELP)


class StepSerializer(serializers.ModelSerializer[Step]):
    expected_lateness = serializers.SerializerMethodField()

    class Meta:
        model = Step
        fields = [
            "id",
            "action",
            "sequence",
            "poll_number",
            "due_at",
            "version",
            "state",
            "precision",
            "engine",
            "expected_lateness",
            "arm_state",
            "external_ref",
            "attempts",
            "max_attempts",
        ]
        read_only_fields = fields

    def get_expected_lateness(self, step: Step) -> str:
        return engine_expected_lateness(step.engine)


class RunSerializer(serializers.ModelSerializer[Run]):
    lateness_seconds = serializers.SerializerMethodField(
        help_text="Start of the action minus its due time."
    )
    engine_lateness_seconds = serializers.SerializerMethodField(
        help_text="The engine's own lateness: start of the action minus the later of its due "
        "time and the moment the engine took the timer."
    )

    class Meta:
        model = Run
        fields = [
            "id",
            "step",
            "job",
            "classroom",
            "action",
            "engine",
            "version",
            "attempt",
            "status",
            "due_at",
            "started_at",
            "finished_at",
            "lateness_seconds",
            "engine_lateness_seconds",
            "result",
            "error",
            "uncertain",
            "note",
            "worker",
        ]
        read_only_fields = fields

    def get_lateness_seconds(self, run: Run) -> float | None:
        return run.lateness.total_seconds() if run.lateness is not None else None

    def get_engine_lateness_seconds(self, run: Run) -> float | None:
        late = run.engine_lateness
        return late.total_seconds() if late is not None else None


class JobSerializer(serializers.ModelSerializer[Job]):
    schedule = serializers.SerializerMethodField(help_text="The rule in words, or 'once'.")

    class Meta:
        model = Job
        fields = [
            "id",
            "name",
            "action",
            "payload",
            "schedule_type",
            "schedule",
            "due_at",
            "time_zone",
            "rate_every",
            "rate_unit",
            "cron",
            "starts_at",
            "ends_at",
            "max_runs",
            "run_count",
            "missed_policy",
            "overlap_policy",
            "poll_interval",
            "poll_max_checks",
            "poll_timeout",
            "precision",
            "max_attempts",
            "webhook_url",
            "pause_after_failures",
            "consecutive_failures",
            "status",
            "paused_at",
            "pause_reason",
            "owner",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_schedule(self, job: Job) -> str:
        return describe_schedule(job)


#: Rows a job's detail lists of its steps and runs (the runs endpoint pages through all).
DETAIL_ROWS = 50


class JobDetailSerializer(JobSerializer):
    steps = serializers.SerializerMethodField(
        help_text=f"The latest {DETAIL_ROWS} steps, latest occurrence and check first."
    )
    runs = serializers.SerializerMethodField(
        help_text=f"The newest {DETAIL_ROWS} runs; /api/runs/?job=<id> pages through all."
    )
    next_occurrences = serializers.SerializerMethodField(
        help_text="A recurring job's next five occurrences (UTC); empty for a one-off job."
    )

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "next_occurrences", "steps", "runs"]
        read_only_fields = fields

    @extend_schema_field(StepSerializer(many=True))
    def get_steps(self, job: Job) -> list[dict[str, Any]]:
        steps = job.steps.order_by("-sequence", "-poll_number")[:DETAIL_ROWS]
        return list(StepSerializer(steps, many=True).data)

    @extend_schema_field(RunSerializer(many=True))
    def get_runs(self, job: Job) -> list[dict[str, Any]]:
        runs = job.runs.order_by("-started_at")[:DETAIL_ROWS]
        return list(RunSerializer(runs, many=True).data)

    def get_next_occurrences(self, job: Job) -> list[dt.datetime]:
        return job_next_occurrences(job, count=5)


class ClassroomCreateSerializer(StrictSerializer):
    title = serializers.CharField(max_length=200)
    start = AwareDateTimeField()
    end = AwareDateTimeField()
    recording_service_ref = serializers.CharField(max_length=200)
    live_ping_interval = serializers.IntegerField(default=60)
    precision = PrecisionField(default=Precision.SECONDS)
    time_zone = serializers.CharField(required=False, default="UTC", max_length=64)


class ClassroomUpdateSerializer(StrictSerializer):
    title = serializers.CharField(max_length=200, required=False)
    start = AwareDateTimeField(required=False)
    end = AwareDateTimeField(required=False)
    recording_service_ref = serializers.CharField(max_length=200, required=False)
    live_ping_interval = serializers.IntegerField(required=False)


class ClassroomSerializer(serializers.ModelSerializer[Classroom]):
    class Meta:
        model = Classroom
        fields = [
            "id",
            "title",
            "start",
            "end",
            "recording_service_ref",
            "live_ping_interval",
            "time_zone",
            "precision",
            "status",
            "paused_at",
            "pause_reason",
            "owner",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ClassroomDetailSerializer(ClassroomSerializer):
    steps = StepSerializer(many=True, read_only=True)

    class Meta(ClassroomSerializer.Meta):
        fields = [*ClassroomSerializer.Meta.fields, "steps"]
        read_only_fields = fields


class WorkflowRuleSerializer(serializers.ModelSerializer[Job]):
    """A workflow's rule: the recurring job that starts it (see /api/jobs/{id}/)."""

    next_start = serializers.DateTimeField(source="due_at", read_only=True)

    class Meta:
        model = Job
        fields = [
            "id",
            "status",
            "pause_reason",
            "schedule_type",
            "rate_every",
            "rate_unit",
            "cron",
            "time_zone",
            "starts_at",
            "ends_at",
            "max_runs",
            "run_count",
            "missed_policy",
            "next_start",
        ]
        read_only_fields = fields


class PauseSerializer(StrictSerializer):
    """What a pause may say about itself."""

    reason = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        trim_whitespace=True,
        help_text=f"Why it is paused (at most {PAUSE_REASON_MAX} characters), shown with it.",
    )


class WorkflowSerializer(serializers.ModelSerializer[Workflow]):
    schedule = WorkflowRuleSerializer(read_only=True, allow_null=True)

    class Meta:
        model = Workflow
        fields = [
            "id",
            "name",
            "description",
            "version",
            "definition",
            "precision",
            "overlap_policy",
            "schedule",
            "owner",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class WorkflowListSerializer(WorkflowSerializer):
    class Meta(WorkflowSerializer.Meta):
        fields = [f for f in WorkflowSerializer.Meta.fields if f != "definition"]
        read_only_fields = fields


class WorkflowCreateSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(
        max_length=200, help_text="1 to 80 letters, digits, hyphens or underscores; unique."
    )
    description = serializers.CharField(required=False, allow_blank=True, default="")
    definition = serializers.JSONField(
        help_text="StartAt and States in the workflow language (docs/workflows.md); every "
        "error names the state and the field."
    )
    precision = PrecisionField(required=False, default=Precision.SECONDS)
    overlap_policy = serializers.ChoiceField(
        choices=OverlapPolicy.choices, required=False, default=OverlapPolicy.SKIP
    )


class WorkflowUpdateSerializer(serializers.Serializer[Any]):
    description = serializers.CharField(required=False, allow_blank=True)
    definition = serializers.JSONField(
        required=False, help_text="A changed definition is saved as the next version."
    )
    precision = PrecisionField(required=False)
    overlap_policy = serializers.ChoiceField(choices=OverlapPolicy.choices, required=False)


class WorkflowScheduleSerializer(serializers.Serializer[Any]):
    """A workflow's rule, as a recurring job's (docs/api.md)."""

    schedule_type = serializers.ChoiceField(choices=RECURRING_SCHEDULE_TYPES)
    rate_every = serializers.IntegerField(required=False, allow_null=True)
    rate_unit = serializers.ChoiceField(choices=RateUnit.choices, required=False)
    cron = serializers.CharField(required=False, allow_blank=True)
    time_zone = serializers.CharField(required=False, default="UTC")
    starts_at = AwareDateTimeField(required=False, allow_null=True)
    ends_at = AwareDateTimeField(required=False, allow_null=True)
    max_runs = serializers.IntegerField(required=False, allow_null=True)
    missed_policy = serializers.ChoiceField(choices=MissedPolicy.choices, required=False)
    input = serializers.JSONField(required=False, help_text="The data each execution starts with.")


class ExecutionStartSerializer(serializers.Serializer[Any]):
    input = serializers.JSONField(
        required=False, default=dict, help_text="The data the execution starts with (an object)."
    )
    start_key = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=255,
        help_text="Starting again with the same key returns the same execution (200).",
    )


class ExecutionSerializer(serializers.ModelSerializer[Execution]):
    workflow_name = serializers.CharField(source="workflow.name", read_only=True)
    version = serializers.IntegerField(source="version.version", read_only=True)

    class Meta:
        model = Execution
        fields = [
            "id",
            "workflow",
            "workflow_name",
            "version",
            "start_key",
            "status",
            "state_name",
            "error",
            "cause",
            "started_by",
            "owner",
            "started_at",
            "finished_at",
            "transitions",
        ]
        read_only_fields = fields


class ExecutionStepSerializer(serializers.ModelSerializer[Step]):
    class Meta:
        model = Step
        fields = ["id", "state_name", "action", "due_at", "state", "version", "attempts", "engine"]
        read_only_fields = fields


class ExecutionDetailSerializer(ExecutionSerializer):
    steps = serializers.SerializerMethodField()
    runs = serializers.SerializerMethodField()

    class Meta(ExecutionSerializer.Meta):
        fields = [*ExecutionSerializer.Meta.fields, "input", "data", "history", "steps", "runs"]
        read_only_fields = fields

    @extend_schema_field(ExecutionStepSerializer(many=True))
    def get_steps(self, execution: Execution) -> Any:
        steps = execution.steps.order_by("-sequence")[:DETAIL_ROWS]
        return ExecutionStepSerializer(steps, many=True).data

    @extend_schema_field(RunSerializer(many=True))
    def get_runs(self, execution: Execution) -> Any:
        runs = execution.runs.order_by("-started_at")[:DETAIL_ROWS]
        return RunSerializer(runs, many=True).data
