"""REST API views: thin; every write calls schedules.services."""

from __future__ import annotations

import datetime as dt
from typing import Any

import django_filters
from django import forms
from django.db.models import Model, Q, QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from .. import services
from ..models import (
    Classroom,
    Execution,
    ExecutionStatus,
    Job,
    PlanStatus,
    Run,
    RunStatus,
    ScheduleType,
    Workflow,
)
from ..services.executions import OverlapRefused
from . import serializers as s
from .idempotency import header_parameter, idempotent
from .users import request_user


class NewestFirst(CursorPagination):
    """Cursor pages: constant cost at any depth of a table of millions of rows."""

    page_size = 50
    max_page_size = 200
    page_size_query_param = "page_size"
    ordering = "-id"


class OwnedViewSet(viewsets.GenericViewSet[Any]):
    """A user sees and changes what they own; staff and holders of the model permission
    (granted in the admin) see or change all. Other users' objects are 404, so ids
    cannot be probed."""

    pagination_class = NewestFirst
    model: type[Model]

    def owner_filter(self) -> Q:
        return Q(owner=self.request.user)

    def scoped(self, perm: str) -> QuerySet[Any]:
        model = self.model
        queryset: QuerySet[Any] = model._default_manager.all()
        user = self.request.user
        if user.is_staff or user.has_perm(f"schedules.{perm}_{model._meta.model_name}"):
            return queryset
        return queryset.filter(self.owner_filter())

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped("view")

    def get_object_to_change(self) -> Any:
        """The object, if this user may change it (403 if they may only see it)."""
        obj = self.get_object()  # 404 unless visible
        if not self.scoped("change").filter(pk=obj.pk).exists():
            raise PermissionDenied("you may see this object but not change it")
        return obj

    def valid_data(self, serializer_class: Any, data: Any) -> dict[str, Any]:
        serializer = serializer_class(data=data)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)


class AwareDateTimeFormField(forms.Field):
    def to_python(self, value: Any) -> dt.datetime | None:
        if value in self.empty_values:
            return None
        try:
            return s.parse_aware(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


class AwareDateTimeFilter(django_filters.Filter):
    """An ISO 8601 bound that must carry its offset, as the API's writes require."""

    field_class = AwareDateTimeFormField


class JobFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=PlanStatus.choices)
    schedule_type = django_filters.ChoiceFilter(choices=ScheduleType.choices)
    action = django_filters.CharFilter(help_text="Action name, e.g. send_email.")
    due_after = AwareDateTimeFilter(field_name="due_at", lookup_expr="gte")
    due_before = AwareDateTimeFilter(field_name="due_at", lookup_expr="lt")

    class Meta:
        model = Job
        fields = ["status", "schedule_type", "action", "precision", "due_after", "due_before"]


@extend_schema_view(
    list=extend_schema(summary="List jobs (newest first, cursor pages)"),
    retrieve=extend_schema(summary="A job with its steps and newest runs"),
)
class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OwnedViewSet):
    queryset = Job.objects.all()
    model = Job
    filterset_class = JobFilter
    serializer_class = s.JobSerializer

    def get_serializer_class(self) -> Any:
        return s.JobDetailSerializer if self.action == "retrieve" else s.JobSerializer

    @extend_schema(
        summary="Schedule a job: once at due_at, or by a rate or cron rule",
        request=s.JobCreateSerializer,
        responses={201: s.JobDetailSerializer},
        parameters=[header_parameter()],
    )
    def create(self, request: Request) -> Response:
        def do() -> Response:
            data = self.valid_data(s.JobCreateSerializer, request.data)
            job = services.job_schedule(owner=request_user(request), **data)
            return Response(s.JobDetailSerializer(job).data, status=status.HTTP_201_CREATED)

        return idempotent(request, do)

    @extend_schema(
        summary=(
            "Change a job: due_at reschedules a one-off job; payload, name, attempts, "
            "precision, a recurring job's rule and policies, poll limits"
        ),
        request=s.JobUpdateSerializer,
        responses={200: s.JobDetailSerializer},
    )
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object_to_change()
        data = self.valid_data(s.JobUpdateSerializer, request.data)
        due_at = data.pop("due_at", None)

        def change() -> Job:  # both or neither, run again whole on a conflict
            changed: Job = job
            if data:
                changed = services.job_update(job=changed, **data)
            if due_at is not None:
                changed = services.job_reschedule(job=changed, due_at=due_at)
            return changed

        job = services.run_retrying(change, what="PATCH job")
        return Response(s.JobDetailSerializer(job).data)

    @extend_schema(summary="Cancel a job", request=None, responses={200: s.JobDetailSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        job = services.job_cancel(job=self.get_object_to_change())
        return Response(s.JobDetailSerializer(job).data)

    @extend_schema(
        summary="Run a scheduled job now, or a failed one again",
        request=None,
        responses={200: s.JobDetailSerializer},
    )
    @action(detail=True, methods=["post"], url_path="run-now")
    def run_now(self, request: Request, pk: str | None = None) -> Response:
        job = services.job_run_now(job=self.get_object_to_change())
        return Response(s.JobDetailSerializer(job).data)

    @extend_schema(
        summary="Pause a job: its pending step is held (its timer disarmed) until it is "
        "resumed; an attempt already running finishes. A paused job stays as it is (200).",
        request=s.PauseSerializer,
        responses={200: s.JobDetailSerializer},
        parameters=[header_parameter()],
    )
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object_to_change()

        def do() -> Response:
            data = self.valid_data(s.PauseSerializer, request.data)
            return Response(s.JobDetailSerializer(services.job_pause(job=job, **data)).data)

        return idempotent(request, do)

    @extend_schema(
        summary="Resume a paused job: only its next run is armed, re-planned by its missed "
        "policy (a one-off job past its due time runs now). A job not paused stays as it is.",
        request=None,
        responses={200: s.JobDetailSerializer},
        parameters=[header_parameter()],
    )
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object_to_change()

        def do() -> Response:
            return Response(s.JobDetailSerializer(services.job_resume(job=job)).data)

        return idempotent(request, do)


class ClassroomFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=PlanStatus.choices)
    start_after = AwareDateTimeFilter(field_name="start", lookup_expr="gte")
    start_before = AwareDateTimeFilter(field_name="start", lookup_expr="lt")

    class Meta:
        model = Classroom
        fields = ["status", "start_after", "start_before"]


@extend_schema_view(
    list=extend_schema(summary="List classrooms (newest first, cursor pages)"),
    retrieve=extend_schema(summary="A classroom with its timeline of steps"),
)
class ClassroomViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OwnedViewSet):
    queryset = Classroom.objects.all()
    model = Classroom
    filterset_class = ClassroomFilter
    serializer_class = s.ClassroomSerializer

    def get_serializer_class(self) -> Any:
        return s.ClassroomDetailSerializer if self.action == "retrieve" else s.ClassroomSerializer

    @extend_schema(
        summary="Create a classroom (start recording, live pings, stop recording)",
        request=s.ClassroomCreateSerializer,
        responses={201: s.ClassroomDetailSerializer},
        parameters=[header_parameter()],
    )
    def create(self, request: Request) -> Response:
        def do() -> Response:
            data = self.valid_data(s.ClassroomCreateSerializer, request.data)
            classroom = services.classroom_create(owner=request_user(request), **data)
            return Response(
                s.ClassroomDetailSerializer(classroom).data, status=status.HTTP_201_CREATED
            )

        return idempotent(request, do)

    @extend_schema(
        summary="Change a classroom; only steps not yet run are re-planned",
        request=s.ClassroomUpdateSerializer,
        responses={200: s.ClassroomDetailSerializer},
    )
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        classroom = self.get_object_to_change()
        data = self.valid_data(s.ClassroomUpdateSerializer, request.data)
        classroom = services.classroom_update(classroom=classroom, **data)
        return Response(s.ClassroomDetailSerializer(classroom).data)

    @extend_schema(
        summary="Cancel a classroom (stops the recording if it started)",
        request=None,
        responses={200: s.ClassroomDetailSerializer},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        classroom = services.classroom_cancel(classroom=self.get_object_to_change())
        return Response(s.ClassroomDetailSerializer(classroom).data)

    @extend_schema(
        summary="Pause a classroom: its steps not yet started are held (their timers "
        "disarmed) until it is resumed; a step running finishes. A paused one stays (200).",
        request=s.PauseSerializer,
        responses={200: s.ClassroomDetailSerializer},
        parameters=[header_parameter()],
    )
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str | None = None) -> Response:
        classroom = self.get_object_to_change()

        def do() -> Response:
            data = self.valid_data(s.PauseSerializer, request.data)
            paused = services.classroom_pause(classroom=classroom, **data)
            return Response(s.ClassroomDetailSerializer(paused).data)

        return idempotent(request, do)

    @extend_schema(
        summary="Resume a paused classroom: pings whose time passed are dropped, a start "
        "or stop whose time passed runs now, the rest at their times.",
        request=None,
        responses={200: s.ClassroomDetailSerializer},
        parameters=[header_parameter()],
    )
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        classroom = self.get_object_to_change()

        def do() -> Response:
            resumed = services.classroom_resume(classroom=classroom)
            return Response(s.ClassroomDetailSerializer(resumed).data)

        return idempotent(request, do)


class RunFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=RunStatus.choices)
    started_after = AwareDateTimeFilter(field_name="started_at", lookup_expr="gte")
    started_before = AwareDateTimeFilter(field_name="started_at", lookup_expr="lt")

    class Meta:
        model = Run
        fields = ["status", "job", "classroom", "step", "engine", "started_after", "started_before"]


@extend_schema_view(
    list=extend_schema(summary="List runs (newest first, cursor pages)"),
    retrieve=extend_schema(summary="A run"),
)
class RunViewSet(viewsets.ReadOnlyModelViewSet[Run], OwnedViewSet):
    queryset = Run.objects.all()
    model = Run
    filterset_class = RunFilter
    serializer_class = s.RunSerializer

    def owner_filter(self) -> Q:
        user = self.request.user
        return Q(job__owner=user) | Q(classroom__owner=user) | Q(execution__owner=user)


@extend_schema_view(
    list=extend_schema(
        summary="List workflows (newest first, cursor pages; without their definitions)",
        responses={200: s.WorkflowListSerializer(many=True)},
    ),
    retrieve=extend_schema(summary="A workflow with its current definition and version"),
)
class WorkflowViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OwnedViewSet):
    queryset = Workflow.objects.all()
    model = Workflow
    serializer_class = s.WorkflowSerializer

    def get_serializer_class(self) -> Any:
        return s.WorkflowListSerializer if self.action == "list" else s.WorkflowSerializer

    def get_queryset(self) -> QuerySet[Any]:
        queryset = super().get_queryset()
        return queryset.defer("definition") if self.action == "list" else queryset

    @extend_schema(
        summary="Save a workflow definition (version 1)",
        request=s.WorkflowCreateSerializer,
        responses={201: s.WorkflowSerializer},
        parameters=[header_parameter()],
    )
    def create(self, request: Request) -> Response:
        def do() -> Response:
            data = self.valid_data(s.WorkflowCreateSerializer, request.data)
            workflow = services.workflow_create(owner=request_user(request), **data)
            return Response(s.WorkflowSerializer(workflow).data, status=status.HTTP_201_CREATED)

        return idempotent(request, do)

    @extend_schema(
        summary="Change a workflow's description, or its definition (saved as the next version)",
        request=s.WorkflowUpdateSerializer,
        responses={200: s.WorkflowSerializer},
    )
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        workflow = self.get_object_to_change()
        data = self.valid_data(s.WorkflowUpdateSerializer, request.data)
        workflow = services.workflow_update(workflow=workflow, **data)
        return Response(s.WorkflowSerializer(workflow).data)

    @extend_schema(
        summary="Start an execution (201); with a start_key or an Idempotency-Key already "
        "used, the execution it started (200); 409 while one runs and overlap is skip",
        request=s.ExecutionStartSerializer,
        responses={201: s.ExecutionDetailSerializer, 200: s.ExecutionDetailSerializer},
        parameters=[header_parameter()],
    )
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str | None = None) -> Response:
        workflow = self.get_object_to_change()

        def do() -> Response:
            data = self.valid_data(s.ExecutionStartSerializer, request.data)
            try:
                started = services.execution_start(
                    workflow=workflow, owner=request_user(request), **data
                )
            except OverlapRefused as exc:
                return Response(exc.message_dict, status=status.HTTP_409_CONFLICT)
            code = status.HTTP_201_CREATED if started.created else status.HTTP_200_OK
            return Response(s.ExecutionDetailSerializer(started.execution).data, status=code)

        return idempotent(request, do)

    @extend_schema(
        summary="Set the workflow's rule (rate or cron, as a recurring job's; replaces the "
        "rule it had), or remove it (DELETE)",
        request=s.WorkflowScheduleSerializer,
        responses={200: s.WorkflowSerializer},
    )
    @action(detail=True, methods=["post", "delete"])
    def schedule(self, request: Request, pk: str | None = None) -> Response:
        workflow = self.get_object_to_change()
        if request.method == "DELETE":
            workflow = services.workflow_unschedule(workflow=workflow)
        else:
            data = self.valid_data(s.WorkflowScheduleSerializer, request.data)
            services.workflow_schedule(workflow=workflow, **data)
        workflow.refresh_from_db()
        return Response(s.WorkflowSerializer(workflow).data)

    @extend_schema(
        summary="Pause the workflow's rule: no execution starts until it is resumed "
        "(executions running go on). 400 under schedule if it has no rule.",
        request=s.PauseSerializer,
        responses={200: s.WorkflowSerializer},
        parameters=[header_parameter()],
    )
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str | None = None) -> Response:
        workflow = self.get_object_to_change()

        def do() -> Response:
            data = self.valid_data(s.PauseSerializer, request.data)
            paused = services.workflow_pause(workflow=workflow, **data)
            paused.refresh_from_db()
            return Response(s.WorkflowSerializer(paused).data)

        return idempotent(request, do)

    @extend_schema(
        summary="Resume the workflow's paused rule: its next start is planned by the rule's "
        "missed policy.",
        request=None,
        responses={200: s.WorkflowSerializer},
        parameters=[header_parameter()],
    )
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        workflow = self.get_object_to_change()

        def do() -> Response:
            resumed = services.workflow_resume(workflow=workflow)
            resumed.refresh_from_db()
            return Response(s.WorkflowSerializer(resumed).data)

        return idempotent(request, do)


class ExecutionFilter(django_filters.FilterSet):
    workflow = django_filters.CharFilter(
        field_name="workflow__name", help_text="The workflow's name."
    )
    status = django_filters.ChoiceFilter(choices=ExecutionStatus.choices)

    class Meta:
        model = Execution
        fields = ["workflow", "status"]


@extend_schema_view(
    list=extend_schema(
        summary="List executions (newest first, cursor pages; filter by workflow, status)"
    ),
    retrieve=extend_schema(
        summary="An execution with its data, its state history, its steps and runs"
    ),
)
class ExecutionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OwnedViewSet):
    queryset = Execution.objects.select_related("workflow", "version")
    model = Execution
    filterset_class = ExecutionFilter
    serializer_class = s.ExecutionSerializer

    def owner_filter(self) -> Q:
        user = self.request.user
        return Q(owner=user) | Q(workflow__owner=user)

    def get_serializer_class(self) -> Any:
        return s.ExecutionDetailSerializer if self.action != "list" else s.ExecutionSerializer

    def get_queryset(self) -> QuerySet[Any]:
        queryset = super().get_queryset().select_related("workflow", "version")
        if self.action == "list":
            return queryset.defer("input", "data", "history", "version__definition")
        return queryset

    @extend_schema(
        summary="Cancel a running execution: its pending step never runs, nor any later state",
        request=None,
        responses={200: s.ExecutionDetailSerializer},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        execution = services.execution_cancel(execution=self.get_object_to_change())
        return Response(s.ExecutionDetailSerializer(execution).data)
