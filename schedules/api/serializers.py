"""Shapes and types only: the rules live in schedules.services and schedules.validation."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from workers.actions import REGISTRY

from ..models import Classroom, Job, Precision, Run, Step
from ..selectors import engine_expected_lateness

ISO_FORMAT = "YYYY-MM-DDThh:mm[:ss[.uuuuuu]]±hh:mm or ...Z"
NAIVE = (
    "must include a time zone offset (a naive date and time is ambiguous): "
    "use e.g. 2026-12-01T09:00:00+01:00 or ...Z for UTC"
)


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


class JobCreateSerializer(StrictSerializer):
    action = serializers.ChoiceField(choices=sorted(REGISTRY), help_text="Registered action.")
    payload = serializers.JSONField(
        required=False, default=dict, help_text="Arguments of the action, checked by its schema."
    )
    due_at = AwareDateTimeField(help_text="When the job runs; must carry a time zone offset.")
    precision = serializers.ChoiceField(choices=Precision.choices, default=Precision.PRECISE)
    max_attempts = serializers.IntegerField(required=False, help_text="1 to the set limit.")
    name = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    time_zone = serializers.CharField(required=False, default="UTC", max_length=64)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Actions registered after import (SCHEDULES_ACTION_MODULES) are choices too.
        action = self.fields["action"]
        assert isinstance(action, serializers.ChoiceField)
        action.choices = sorted(REGISTRY)


class JobUpdateSerializer(StrictSerializer):
    due_at = AwareDateTimeField(required=False, help_text="Reschedule to this time.")
    payload = serializers.JSONField(required=False)
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    max_attempts = serializers.IntegerField(required=False)
    precision = serializers.ChoiceField(choices=Precision.choices, required=False)


class StepSerializer(serializers.ModelSerializer[Step]):
    expected_lateness = serializers.SerializerMethodField()

    class Meta:
        model = Step
        fields = [
            "id",
            "action",
            "sequence",
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
    lateness_seconds = serializers.SerializerMethodField()

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
            "result",
            "error",
            "uncertain",
            "note",
            "worker",
        ]
        read_only_fields = fields

    def get_lateness_seconds(self, run: Run) -> float | None:
        return run.lateness.total_seconds() if run.lateness is not None else None


class JobSerializer(serializers.ModelSerializer[Job]):
    class Meta:
        model = Job
        fields = [
            "id",
            "name",
            "action",
            "payload",
            "due_at",
            "time_zone",
            "precision",
            "max_attempts",
            "status",
            "owner",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class JobDetailSerializer(JobSerializer):
    steps = StepSerializer(many=True, read_only=True)
    runs = serializers.SerializerMethodField()

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "steps", "runs"]
        read_only_fields = fields

    def get_runs(self, job: Job) -> list[dict[str, Any]]:
        """The newest 50 runs; the runs endpoint pages through all of them."""
        runs = job.runs.order_by("-started_at")[:50]
        return list(RunSerializer(runs, many=True).data)


class ClassroomCreateSerializer(StrictSerializer):
    title = serializers.CharField(max_length=200)
    start = AwareDateTimeField()
    end = AwareDateTimeField()
    recording_service_ref = serializers.CharField(max_length=200)
    live_ping_interval = serializers.IntegerField(default=60)
    precision = serializers.ChoiceField(choices=Precision.choices, default=Precision.PRECISE)
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
