"""Workflow executions: start, move on when a step ends, cancel (docs/workflows.md).

An execution walks its definition (the version it started with) one state at a time.
Choice, Succeed and Fail are decided here, at once; each Task and Wait it enters is a
step of the execution, armed on an engine and run by the worker like any job's step
(timers, fences, leases, takeovers, lateness and runs are theirs). When the worker
records a step's outcome, ``execution_step_settled`` moves the execution on in that
same transaction, so a state is left exactly once: the next step is written, or the
execution ends, or nothing at all if the record rolls back.

Locks follow the one lock order (docs/architecture.md): the workflow (a start), then
the execution, then its steps in ascending id, then runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import F
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .. import events
from ..models import (
    PENDING_STATES,
    Execution,
    ExecutionStatus,
    OverlapPolicy,
    Step,
    StepState,
    Workflow,
    WorkflowVersion,
)
from ..validation import Errors, check_action_payload
from ..workflow_language import (
    ALL_ERRORS,
    PathMissing,
    path_get,
    payload_render,
    rule_matches,
)
from .plans import step_plan
from .transactions import retrying

logger = logging.getLogger(__name__)

#: The largest an execution's data may grow, as compact JSON (Step Functions' limit).
MAX_DATA_BYTES = 256 * 1024
#: The history keeps this many of the latest states entered.
MAX_HISTORY = 1000
MAX_START_KEY = 255
#: The action of a Wait state's step: it does nothing when its time comes.
WAIT_ACTION = "workflow_wait"
#: Errors an execution ends with when the data, not an action, is at fault.
RUNTIME_ERROR = "States.Runtime"
DATA_LIMIT_ERROR = "States.DataLimitExceeded"
CANCELLED_ERROR = "States.Cancelled"


class OverlapRefused(ValidationError):
    """A start refused because an execution of the workflow is running (overlap skip)."""


@dataclasses.dataclass(frozen=True)
class Started:
    execution: Execution
    #: False when the start key named an execution that had started already.
    created: bool


def data_size(data: Any) -> int:
    return len(json.dumps(data, separators=(",", ":"), allow_nan=False).encode())


def _check_input(errors: Errors, value: Any) -> None:
    if not isinstance(value, Mapping):
        errors.add("input", "must be a JSON object (the execution's data starts as it)")
        return
    try:
        size = data_size(value)
    except (TypeError, ValueError) as exc:
        errors.add("input", f"must be plain JSON ({exc})")
        return
    if size > MAX_DATA_BYTES:
        errors.add("input", f"is {size} bytes as JSON; the limit is {MAX_DATA_BYTES} bytes")


@retrying
def execution_start(
    *,
    workflow: Workflow,
    input: Mapping[str, Any] | None = None,
    start_key: str = "",
    owner: User | None = None,
    started_by_job_id: int | None = None,
    now: dt.datetime | None = None,
) -> Started:
    """Start ``workflow`` at its current version with ``input`` as its data.

    With a ``start_key``, a second start with the same key returns the execution the
    first one started (``created`` false) instead of starting another. With the
    workflow's overlap policy ``skip``, a start while one of its executions runs is
    refused (``OverlapRefused``, a ``ValidationError`` on ``workflow``).
    """
    errors = Errors()
    data = {} if input is None else input
    _check_input(errors, data)
    if not isinstance(start_key, str) or len(start_key) > MAX_START_KEY:
        errors.add("start_key", f"must be text of at most {MAX_START_KEY} characters")
    errors.raise_if_any()
    now = now or timezone.now()
    workflow = Workflow.objects.select_for_update(no_key=True).get(pk=workflow.pk)
    if start_key:
        same = Execution.objects.filter(workflow=workflow, start_key=start_key).first()
        if same is not None:
            return Started(same, created=False)
    if workflow.overlap_policy == OverlapPolicy.SKIP:
        running = (
            Execution.objects.filter(workflow=workflow, status=ExecutionStatus.RUNNING)
            .values_list("pk", flat=True)
            .first()
        )
        if running is not None:
            raise OverlapRefused(
                {
                    "workflow": f"execution {running} of {workflow.name!r} is still running, "
                    "and the workflow's overlap policy is skip"
                }
            )
    version = WorkflowVersion.objects.get(workflow=workflow, version=workflow.version)
    execution = Execution(
        workflow=workflow,
        version=version,
        start_key=start_key,
        input=dict(data),
        data=dict(data),
        owner=owner,
        started_by_id=started_by_job_id,
        started_at=now,
    )
    execution.save()
    _Walk(execution, version.definition, now).enter(version.definition["StartAt"], via="start")
    execution.save()
    logger.info(
        "execution %s of workflow %s v%s started at %s",
        execution.pk,
        workflow.name,
        version.version,
        execution.state_name,
    )
    return Started(execution, created=True)


@retrying
def execution_cancel(*, execution: Execution, now: dt.datetime | None = None) -> Execution:
    """Cancel a running execution: its pending step never runs, and no later state does.
    A Task's action already running finishes, and its outcome is recorded, but the
    execution does not move on."""
    execution = Execution.objects.select_for_update(no_key=True).get(pk=execution.pk)
    if execution.status != ExecutionStatus.RUNNING:
        raise ValidationError(
            {"status": f"the execution is already {execution.status}; there is nothing to cancel"}
        )
    for step in (
        Step.objects.select_for_update(no_key=True)
        .filter(execution=execution, state__in=[*PENDING_STATES, StepState.RUNNING])
        .order_by("pk")  # the lock order: several steps in ascending id
    ):
        step.version = F("version") + 1  # the fence: its timer and message go stale
        step.state, step.holder, step.lease_until = StepState.CANCELLED, "", None
        step.save()
    _end(execution, ExecutionStatus.CANCELLED, now or timezone.now(), error=CANCELLED_ERROR)
    execution.save()
    logger.info("execution %s cancelled in state %s", execution.pk, execution.state_name)
    return execution


def execution_lock(execution_id: int) -> Execution:
    """The execution of a step being recorded, locked (the record's first lock), with
    the definition it runs."""
    return (
        Execution.objects.select_for_update(no_key=True, of=("self",))
        .select_related("version", "workflow")
        .get(pk=execution_id)
    )


def execution_retry_in(
    *, execution: Execution, state_name: str, attempt: int, error: str
) -> float | None:
    """Seconds before attempt ``attempt + 1`` of a Task whose attempt ``attempt`` ended in
    a transient ``error``, by the first of the Task's retriers that matches the error;
    None when no retrier matches or it has no attempts left (MaxAttempts counts the
    retries of the state)."""
    state = execution.version.definition["States"].get(state_name, {})
    name = error_name(error)
    for retrier in state.get("Retry", []):
        if not _matches(retrier.get("ErrorEquals", [ALL_ERRORS]), name):
            continue
        if attempt > retrier.get("MaxAttempts", 3):
            return None
        interval = retrier.get("IntervalSeconds", 1)
        return float(interval * retrier.get("BackoffRate", 2.0) ** (attempt - 1))
    return None


def max_attempts_of(state: Mapping[str, Any]) -> int:
    """A Task's step may be attempted once, plus its most generous retrier's retries."""
    return 1 + max((r.get("MaxAttempts", 3) for r in state.get("Retry", [])), default=0)


def execution_step_settled(
    *,
    execution: Execution,
    state_name: str,
    sequence: int,
    succeeded: bool,
    result: Any = None,
    error: str = "",
    now: dt.datetime | None = None,
) -> None:
    """A step of ``execution`` (locked by ``execution_lock``) ended for good: move on.

    A Task's result is stored under its name, then the state's Next (or the end). A
    failure goes to the first matching catcher's Next, with ``{"Error", "Cause"}``
    stored under the state's name, or ends the execution failed in that state. An
    execution no longer running, or no longer at that step (``sequence``: the number of
    the state entry that wrote it), does not move.
    """
    at_step = execution.state_name == state_name and execution.transitions == sequence
    if execution.status != ExecutionStatus.RUNNING or not at_step:
        logger.info(
            "execution %s: step of %s ended while the execution is %s in %s; not moving on",
            execution.pk,
            state_name,
            execution.status,
            execution.state_name,
        )
        return
    now = now or timezone.now()
    definition = execution.version.definition
    state = definition["States"][state_name]
    walk = _Walk(execution, definition, now)
    if succeeded:
        if state["Type"] == "Task" and not walk.store(state_name, result):
            execution.save()
            return
        walk.next_of(state, via="Next")
    else:
        name = error_name(error)
        for n, catcher in enumerate(state.get("Catch", [])):
            if _matches(catcher.get("ErrorEquals", [ALL_ERRORS]), name):
                if walk.store(state_name, {"Error": name, "Cause": error}):
                    walk.enter(catcher["Next"], via=f"Catch[{n}]")
                break
        else:
            _end(execution, ExecutionStatus.FAILED, now, error=name, cause=error)
    execution.save()


def error_name(error: str) -> str:
    """The name of a run's error: the exception's type, before its message."""
    head = error.split(":", 1)[0].strip()
    return head if head and " " not in head else "States.TaskFailed"


def _matches(names: list[str], name: str) -> bool:
    return ALL_ERRORS in names or name in names


def _end(
    execution: Execution, status: str, now: dt.datetime, *, error: str = "", cause: str = ""
) -> None:
    execution.status = status
    execution.finished_at = now
    execution.error = error[:256]
    execution.cause = cause[:10000]
    logger.log(
        logging.WARNING if status == ExecutionStatus.FAILED else logging.INFO,
        "execution %s %s in state %s%s",
        execution.pk,
        status,
        execution.state_name,
        f": {error}" if error else "",
    )
    if status == ExecutionStatus.FAILED:
        events.send_on_commit(events.execution_failed, Execution, execution=execution)


class _Walk:
    """Moves one execution through its states, from inside a transaction that holds it."""

    def __init__(self, execution: Execution, definition: Mapping[str, Any], now: dt.datetime):
        self.execution = execution
        self.states: Mapping[str, Any] = definition["States"]
        self.now = now

    def fail(self, error: str, cause: str) -> None:
        _end(self.execution, ExecutionStatus.FAILED, self.now, error=error, cause=cause)

    def store(self, state_name: str, value: Any) -> bool:
        """Keep ``value`` under the state's name in the data; fail the execution (and
        return False) if the data would outgrow its limit."""
        data = {**self.execution.data, state_name: value}
        try:
            size = data_size(data)
        except (TypeError, ValueError) as exc:
            self.fail(RUNTIME_ERROR, f"States.{state_name}: its result is not plain JSON ({exc})")
            return False
        if size > MAX_DATA_BYTES:
            self.fail(
                DATA_LIMIT_ERROR,
                f"States.{state_name}: with its result the data would be {size} bytes as "
                f"JSON; the limit is {MAX_DATA_BYTES} bytes",
            )
            return False
        self.execution.data = data
        return True

    def next_of(self, state: Mapping[str, Any], *, via: str) -> None:
        if state.get("End") is True:
            _end(self.execution, ExecutionStatus.SUCCEEDED, self.now)
        else:
            self.enter(state["Next"], via=via)

    def _log_entry(self, name: str, kind: str, via: str) -> None:
        execution = self.execution
        entry = {
            "state": name,
            "type": kind,
            "from": execution.state_name if via != "start" else "",
            "via": via,
            "at": self.now.isoformat(),
        }
        execution.history = [*execution.history[-(MAX_HISTORY - 1) :], entry]
        execution.transitions += 1
        execution.state_name = name

    def enter(self, name: str, *, via: str) -> None:
        """Enter state ``name`` and go on through Choices until a step is written (a
        Task or a Wait) or the execution ends. A checked definition has a Wait in
        every loop, so this ends within as many states as the definition has."""
        while True:
            state = self.states[name]
            kind = state["Type"]
            self._log_entry(name, kind, via)
            if kind == "Task":
                self._task(name, state)
                return
            if kind == "Wait":
                self._wait(name, state)
                return
            if kind == "Succeed":
                _end(self.execution, ExecutionStatus.SUCCEEDED, self.now)
                return
            if kind == "Fail":
                self.fail(state.get("Error", ""), state.get("Cause", ""))
                return
            chosen = self._choose(name, state)
            if chosen is None:
                return
            name, via = chosen

    def _choose(self, name: str, state: Mapping[str, Any]) -> tuple[str, str] | None:
        for n, rule in enumerate(state["Choices"]):
            try:
                if rule_matches(rule, self.execution.data):
                    return rule["Next"], f"Choices[{n}]"
            except PathMissing as exc:
                self.fail(RUNTIME_ERROR, f"States.{name}.Choices[{n}].Variable: {exc}")
                return None
        return state["Default"], "Default"

    def _task(self, name: str, state: Mapping[str, Any]) -> None:
        action = state["Action"]
        try:
            payload = payload_render(state.get("Payload", {}), self.execution.data)
        except PathMissing as exc:
            self.fail(RUNTIME_ERROR, f"States.{name}.Payload: {exc}")
            return
        errors = Errors()
        normalized = check_action_payload(errors, action, payload)
        if errors.by_field:
            problems = "; ".join(
                f"States.{name}.{field}: {message}"
                for field, messages in errors.by_field.items()
                for message in messages
            )
            self.fail(RUNTIME_ERROR, problems)
            return
        self._plan(name, action, self.now, payload=normalized, max_attempts=max_attempts_of(state))

    def _wait(self, name: str, state: Mapping[str, Any]) -> None:
        if "Seconds" in state:
            due = self.now + dt.timedelta(seconds=state["Seconds"])
        else:
            path = state["TimestampPath"]
            try:
                value = path_get(self.execution.data, path)
            except PathMissing as exc:
                self.fail(RUNTIME_ERROR, f"States.{name}.TimestampPath: {exc}")
                return
            parsed = parse_datetime(value) if isinstance(value, str) else None
            if parsed is None or parsed.tzinfo is None:
                self.fail(
                    RUNTIME_ERROR,
                    f"States.{name}.TimestampPath: {path} is {value!r}, not an ISO 8601 time "
                    "with its offset (e.g. 2026-12-01T09:00:00Z)",
                )
                return
            due = max(parsed.astimezone(dt.UTC), self.now)
        self._plan(name, WAIT_ACTION, due, payload={}, max_attempts=1)

    def _plan(
        self,
        name: str,
        action: str,
        due_at: dt.datetime,
        *,
        payload: dict[str, Any],
        max_attempts: int,
    ) -> None:
        execution = self.execution
        step_plan(
            Step(
                execution_id=execution.pk,
                state_name=name,
                action=action,
                payload=payload,
                sequence=execution.transitions,
                due_at=due_at,
                precision=execution.workflow.precision,
                max_attempts=max_attempts,
            )
        )
