"""Workflow executions: each Task and Wait is a step run by the worker; the record of a
step's outcome moves its execution on, exactly once."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from schedules import services
from schedules.models import (
    Execution,
    ExecutionStatus,
    OverlapPolicy,
    Run,
    RunStatus,
    Step,
    StepState,
    Workflow,
)
from schedules.services.executions import MAX_DATA_BYTES, execution_cancel, execution_start
from workers.actions import PermanentError, TransientError, register
from workers.actions.base import REGISTRY
from workers.actions.noop import NoopPayload

pytestmark = pytest.mark.django_db(transaction=True)

#: What the "scripted" action does next: an exception to raise or a result to return.
SCRIPT: list[Any] = []


@pytest.fixture(autouse=True)
def scripted_action():
    @register("scripted", payload=NoopPayload, description="test", has_side_effects=False)
    def scripted(ctx: Any, payload: NoopPayload) -> Any:
        outcome = SCRIPT.pop(0) if SCRIPT else {"note": payload.note}
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    SCRIPT.clear()
    yield SCRIPT
    REGISTRY.pop("scripted")


def task(next_state: str | None = None, **fields: Any) -> dict[str, Any]:
    state: dict[str, Any] = {"Type": "Task", "Action": "scripted", "Payload": {}, **fields}
    state.update({"Next": next_state} if next_state else {"End": True})
    return state


def workflow_of(states: dict[str, Any], start: str, **fields: Any) -> Workflow:
    workflow = services.workflow_create(
        name=f"wf{Workflow.objects.count()}", definition={"StartAt": start, "States": states}
    )
    Workflow.objects.filter(pk=workflow.pk).update(**fields)
    workflow.refresh_from_db()
    return workflow


def pending(execution: Execution) -> Step | None:
    return execution.steps.filter(state__in=[StepState.SCHEDULED, StepState.QUEUED]).first()


def run_next(execution: Execution) -> Run:
    """Deliver the execution's pending step now, as its engine would."""
    step = pending(execution)
    assert step is not None, "no pending step"
    Step.objects.filter(pk=step.pk).update(due_at=timezone.now())
    run = services.step_execute(step_id=step.pk, version=step.version)
    assert run is not None
    execution.refresh_from_db()
    return run


def test_tasks_choice_and_wait_run_as_steps_and_pass_their_results():
    workflow = workflow_of(
        {
            "Check": task("InSync?"),
            "InSync?": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.Check.in_sync", "Equals": True, "Next": "Migrate"}],
                "Default": "NotInSync",
            },
            "NotInSync": {"Type": "Fail", "Error": "OutOfSync", "Cause": "versions differ"},
            "Migrate": task("Pause", Payload={"note.$": "$.Check.ref"}),
            "Pause": {"Type": "Wait", "Seconds": 30, "Next": "Done"},
            "Done": {"Type": "Succeed"},
        },
        "Check",
    )
    started = execution_start(workflow=workflow, input={"from": "test"})
    execution = started.execution
    assert started.created and execution.status == ExecutionStatus.RUNNING
    assert execution.state_name == "Check"
    (first,) = execution.steps.all()
    assert (first.action, first.state_name, first.engine) == ("scripted", "Check", "local")

    SCRIPT.append({"in_sync": True, "ref": "m-42"})
    run_next(execution)
    assert execution.state_name == "Migrate"
    assert execution.data == {"from": "test", "Check": {"in_sync": True, "ref": "m-42"}}
    migrate = pending(execution)
    assert migrate is not None and migrate.payload == {"note": "m-42"}  # rendered from the data

    run_next(execution)
    assert execution.data["Migrate"] == {"note": "m-42"}
    wait = pending(execution)
    assert wait is not None and (wait.state_name, wait.action) == ("Pause", "workflow_wait")
    assert dt.timedelta(seconds=29) < wait.due_at - timezone.now() <= dt.timedelta(seconds=30)

    run_next(execution)
    assert execution.status == ExecutionStatus.SUCCEEDED and execution.state_name == "Done"
    assert execution.finished_at is not None
    assert [(e["state"], e["from"], e["via"]) for e in execution.history] == [
        ("Check", "", "start"),
        ("InSync?", "Check", "Next"),
        ("Migrate", "InSync?", "Choices[0]"),
        ("Pause", "Migrate", "Next"),
        ("Done", "Pause", "Next"),
    ]
    runs = Run.objects.filter(execution=execution).order_by("pk")
    assert [(r.step.state_name, r.status) for r in runs] == [
        ("Check", RunStatus.SUCCEEDED),
        ("Migrate", RunStatus.SUCCEEDED),
        ("Pause", RunStatus.SUCCEEDED),
    ]
    assert all(r.lateness is not None for r in runs)


def test_a_choice_that_fails_ends_the_execution_there_and_no_later_state_runs():
    workflow = workflow_of(
        {
            "Check": task("InSync?"),
            "InSync?": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.Check.in_sync", "Equals": True, "Next": "Migrate"}],
                "Default": "NotInSync",
            },
            "NotInSync": {"Type": "Fail", "Error": "OutOfSync", "Cause": "versions differ"},
            "Migrate": task(),
        },
        "Check",
    )
    execution = execution_start(workflow=workflow).execution
    SCRIPT.append({"in_sync": False})
    run_next(execution)
    assert execution.status == ExecutionStatus.FAILED
    assert (execution.state_name, execution.error, execution.cause) == (
        "NotInSync",
        "OutOfSync",
        "versions differ",
    )
    assert list(execution.steps.values_list("state_name", flat=True)) == ["Check"]


def test_a_missing_path_fails_the_execution_naming_the_state_and_the_path():
    workflow = workflow_of(
        {
            "Check": task("Use"),
            "Use": task(Payload={"note.$": "$.Check.ref"}),
        },
        "Check",
    )
    execution = execution_start(workflow=workflow).execution
    SCRIPT.append({"other": 1})
    run_next(execution)
    assert execution.status == ExecutionStatus.FAILED
    assert execution.state_name == "Use" and execution.error == "States.Runtime"
    assert execution.cause == "States.Use.Payload: $.Check.ref: nothing at $.Check.ref"
    assert pending(execution) is None


def test_a_choice_on_a_missing_path_fails_naming_the_rule():
    workflow = workflow_of(
        {
            "Check": task("Ok?"),
            "Ok?": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.Check.status", "Equals": "ok", "Next": "Done"}],
                "Default": "Done",
            },
            "Done": {"Type": "Succeed"},
        },
        "Check",
    )
    execution = execution_start(workflow=workflow).execution
    run_next(execution)
    assert execution.status == ExecutionStatus.FAILED
    assert execution.cause == (
        "States.Ok?.Choices[0].Variable: $.Check.status: nothing at $.Check.status"
    )


def test_retry_waits_interval_times_backoff_then_catch_stores_the_error(settings):
    workflow = workflow_of(
        {
            "Call": task(
                "Done",
                Retry=[
                    {
                        "ErrorEquals": ["TransientError"],
                        "IntervalSeconds": 10,
                        "BackoffRate": 3,
                        "MaxAttempts": 2,
                    }
                ],
                Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Cleanup"}],
            ),
            "Cleanup": task(),
            "Done": {"Type": "Succeed"},
        },
        "Call",
    )
    execution = execution_start(workflow=workflow).execution
    step = pending(execution)
    assert step is not None and step.max_attempts == 3
    SCRIPT.extend([TransientError("503"), TransientError("503"), TransientError("still 503")])
    delays = []
    for _ in range(2):
        before = timezone.now()
        run = run_next(execution)
        assert run.status == RunStatus.RETRYING
        step.refresh_from_db()
        delays.append((step.due_at - before).total_seconds())
    assert 10 <= delays[0] < 11 and 30 <= delays[1] < 31  # 10 s, then 10 s times 3
    run = run_next(execution)
    assert run.status == RunStatus.FAILED and run.note == "gave up after 3 attempts"
    assert execution.status == ExecutionStatus.RUNNING and execution.state_name == "Cleanup"
    assert execution.data["Call"] == {
        "Error": "TransientError",
        "Cause": "TransientError: still 503",
    }
    assert execution.history[-1]["via"] == "Catch[0]"


def test_a_permanent_error_is_not_retried_and_fails_the_execution_in_its_state():
    workflow = workflow_of(
        {"Call": task(Retry=[{"ErrorEquals": ["States.ALL"], "MaxAttempts": 3}])}, "Call"
    )
    execution = execution_start(workflow=workflow).execution
    SCRIPT.append(TransientError("blip"))
    assert run_next(execution).status == RunStatus.RETRYING
    SCRIPT.append(PermanentError("404 not found"))
    run = run_next(execution)
    assert run.status == RunStatus.FAILED
    assert execution.status == ExecutionStatus.FAILED and execution.state_name == "Call"
    assert (execution.error, execution.cause) == ("PermanentError", "PermanentError: 404 not found")


def test_without_retry_a_task_is_attempted_once():
    workflow = workflow_of({"Call": task()}, "Call")
    execution = execution_start(workflow=workflow).execution
    SCRIPT.append(TransientError("timeout"))
    assert run_next(execution).status == RunStatus.FAILED
    assert execution.status == ExecutionStatus.FAILED and execution.error == "TransientError"


def test_a_start_key_starts_one_execution():
    workflow = workflow_of({"Call": task()}, "Call", overlap_policy=OverlapPolicy.ALLOW)
    first = execution_start(workflow=workflow, start_key="nightly-2026-12-05")
    again = execution_start(workflow=workflow, start_key="nightly-2026-12-05")
    assert first.created and not again.created
    assert again.execution.pk == first.execution.pk
    assert Execution.objects.count() == 1 and Step.objects.count() == 1


def test_overlap_skip_refuses_a_second_start_while_one_runs_and_allow_starts_it():
    workflow = workflow_of({"Call": task()}, "Call")
    first = execution_start(workflow=workflow).execution
    with pytest.raises(ValidationError) as refused:
        execution_start(workflow=workflow)
    assert refused.value.message_dict == {
        "workflow": [
            f"execution {first.pk} of {workflow.name!r} is still running, and the workflow's "
            "overlap policy is skip"
        ]
    }
    Workflow.objects.filter(pk=workflow.pk).update(overlap_policy=OverlapPolicy.ALLOW)
    assert execution_start(workflow=workflow).created
    run_next(first)
    Workflow.objects.filter(pk=workflow.pk).update(overlap_policy=OverlapPolicy.SKIP)
    assert Execution.objects.filter(status=ExecutionStatus.RUNNING).count() == 1


def test_cancel_stops_the_pending_step_and_no_later_state_runs():
    workflow = workflow_of(
        {"Pause": {"Type": "Wait", "Seconds": 60, "Next": "Call"}, "Call": task()}, "Pause"
    )
    execution = execution_start(workflow=workflow).execution
    step = pending(execution)
    assert step is not None
    execution_cancel(execution=execution)
    execution.refresh_from_db()
    step.refresh_from_db()
    assert execution.status == ExecutionStatus.CANCELLED and execution.finished_at
    assert (step.state, step.version) == (StepState.CANCELLED, 2)
    # The old timer's message arrives anyway: skipped, and nothing moves.
    run = services.step_execute(step_id=step.pk, version=1)
    assert run is not None and run.status == RunStatus.SKIPPED
    assert list(execution.steps.values_list("state_name", flat=True)) == ["Pause"]
    with pytest.raises(ValidationError, match="already cancelled"):
        execution_cancel(execution=execution)


def test_cancel_while_a_task_runs_lets_it_finish_without_moving_on():
    workflow = workflow_of({"Call": task("Next"), "Next": task()}, "Call")
    execution = execution_start(workflow=workflow).execution
    step = pending(execution)
    assert step is not None

    REGISTRY.pop("scripted")

    @register("scripted", payload=NoopPayload, description="test")
    def cancel_mid_run(ctx: Any, payload: NoopPayload) -> Any:
        execution_cancel(execution=execution)
        return {"done": True}

    run = run_next(execution)
    assert run.status == RunStatus.SUCCEEDED
    assert "cancelled or rescheduled while it ran" in run.note
    assert execution.status == ExecutionStatus.CANCELLED
    assert list(execution.steps.values_list("state_name", flat=True)) == ["Call"]


def test_an_execution_keeps_the_version_it_started_with():
    workflow = workflow_of(
        {
            "Call": task("Pause"),
            "Pause": {"Type": "Wait", "Seconds": 1, "Next": "Done"},
            "Done": {"Type": "Succeed"},
        },
        "Call",
    )
    execution = execution_start(workflow=workflow).execution
    services.workflow_update(
        workflow=workflow,
        definition={"StartAt": "Call", "States": {"Call": task("Other"), "Other": task()}},
    )
    run_next(execution)
    assert execution.version.version == 1 and execution.state_name == "Pause"
    run_next(execution)
    assert execution.status == ExecutionStatus.SUCCEEDED


def test_a_result_that_outgrows_the_data_limit_fails_the_execution():
    workflow = workflow_of({"Call": task()}, "Call")
    execution = execution_start(workflow=workflow).execution
    SCRIPT.append({"blob": "x" * MAX_DATA_BYTES})
    run_next(execution)
    assert execution.status == ExecutionStatus.FAILED
    assert execution.error == "States.DataLimitExceeded"
    assert execution.cause.startswith("States.Call: with its result the data would be")
    assert "Call" not in execution.data


def test_bad_input_is_refused_naming_the_field():
    workflow = workflow_of({"Call": task()}, "Call")
    with pytest.raises(ValidationError) as refused:
        execution_start(workflow=workflow, input=["not", "an", "object"])  # type: ignore[arg-type]
    assert "input" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        execution_start(workflow=workflow, input={"x": "y" * MAX_DATA_BYTES})
    assert refused.value.message_dict["input"][0].endswith(f"the limit is {MAX_DATA_BYTES} bytes")
    assert not Execution.objects.exists()


def test_a_wait_until_a_timestamp_from_the_data():
    at = (timezone.now() + dt.timedelta(hours=2)).replace(microsecond=0)
    workflow = workflow_of(
        {"Until": {"Type": "Wait", "TimestampPath": "$.at", "Next": "Call"}, "Call": task()},
        "Until",
    )
    execution = execution_start(workflow=workflow, input={"at": at.isoformat()}).execution
    step = pending(execution)
    assert step is not None and step.due_at == at
    bad = execution_start(
        workflow=workflow_of(
            {"Until": {"Type": "Wait", "TimestampPath": "$.at", "Next": "Call"}, "Call": task()},
            "Until",
        ),
        input={"at": "tomorrow"},
    ).execution
    assert bad.status == ExecutionStatus.FAILED
    assert bad.cause.startswith("States.Until.TimestampPath: $.at is 'tomorrow', not an ISO 8601")


def test_steps_of_an_execution_count_up():
    workflow = workflow_of({"A": task("B"), "B": task()}, "A")
    execution = execution_start(workflow=workflow).execution
    run_next(execution)
    assert execution.steps.aggregate(Max("sequence"))["sequence__max"] == 2


def test_only_the_step_the_execution_is_at_moves_it():
    from schedules.services.executions import execution_lock, execution_step_settled

    workflow = workflow_of(
        {
            "Pause": {"Type": "Wait", "Seconds": 0, "Next": "Again?"},
            "Again?": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.stop", "IsPresent": False, "Next": "Pause"}],
                "Default": "Done",
            },
            "Done": {"Type": "Succeed"},
        },
        "Pause",
    )
    execution = execution_start(workflow=workflow).execution
    run_next(execution)  # Pause -> Again? -> Pause (a second entry of the same state)
    first, second = execution.steps.order_by("sequence")
    assert (first.state_name, second.state_name) == ("Pause", "Pause")
    # The first entry's step, settling late (it cannot, its fence is closed: belt and
    # braces), does not move the execution: only the step it is at does.
    with transaction.atomic():
        execution_step_settled(
            execution=execution_lock(execution.pk),
            state_name="Pause",
            sequence=first.sequence,
            succeeded=True,
        )
    execution.refresh_from_db()
    assert execution.transitions == 3 and execution.state_name == "Pause"
    assert execution.steps.count() == 2
