"""Poll until done: each check is a run; the job checks again after its poll interval until
its action reports done, it has made its maximum number of checks, or its deadline passed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone

from schedules import services
from schedules.models import Job, PlanStatus, Run, RunStatus, Step, StepState
from tests.status_service import task_status
from workers.actions import NotDone, TransientError, register
from workers.actions.base import REGISTRY
from workers.actions.noop import NoopPayload

pytestmark = pytest.mark.django_db(transaction=True)

SECOND = dt.timedelta(seconds=1)
ANSWERS: list[Any] = []


@pytest.fixture
def watch() -> Iterator[list[Any]]:
    """A polling action: each call takes the next queued answer ("done", "not yet" or an
    exception); with none left it is not done."""

    @register("watch", payload=NoopPayload, description="test", polls=True)
    def watch_action(ctx: Any, payload: Any) -> dict[str, Any] | NotDone:
        answer = ANSWERS.pop(0) if ANSWERS else "not yet"
        if isinstance(answer, Exception):
            raise answer
        if answer == "done":
            return {"check": ctx.step_id}
        return NotDone(result={"seen": answer})

    ANSWERS.clear()
    yield ANSWERS
    REGISTRY.pop("watch")


def poll_job(start: dt.datetime, **kw: Any) -> Job:
    options = {"poll_interval": 30, "poll_max_checks": 5, **kw}
    return services.job_schedule(action="watch", due_at=start, **options)


def pending(job: Job) -> list[Step]:
    return list(job.steps.filter(state__in=[StepState.SCHEDULED, StepState.QUEUED]))


def check(job: Job) -> Run:
    """Deliver the job's pending step at its due time, the clock standing still there."""
    (step,) = pending(job)
    with time_machine.travel(step.due_at, tick=False):
        run = services.step_execute(step_id=step.pk, version=step.version)
    assert run is not None
    return run


@pytest.fixture
def start() -> dt.datetime:
    return timezone.now() + dt.timedelta(minutes=5)


def test_a_poll_job_checks_again_until_done_each_check_a_run(watch, start):
    watch.extend(["queued", "running", "done"])
    job = poll_job(start)
    first = check(job)
    assert first.status == RunStatus.NOT_DONE and first.result == {"seen": "queued"}
    assert "not done; checks again at" in first.note
    job.refresh_from_db()
    assert job.status == PlanStatus.SCHEDULED and job.due_at == start + 30 * SECOND
    second = check(job)
    assert second.status == RunStatus.NOT_DONE
    third = check(job)
    assert third.status == RunStatus.SUCCEEDED
    job.refresh_from_db()
    assert job.status == PlanStatus.SUCCEEDED and pending(job) == []
    steps = list(job.steps.order_by("poll_number"))
    assert [(s.poll_number, s.state) for s in steps] == [
        (0, StepState.SUCCEEDED),
        (1, StepState.SUCCEEDED),
        (2, StepState.SUCCEEDED),
    ]
    assert [s.due_at for s in steps] == [start, start + 30 * SECOND, start + 60 * SECOND]
    assert list(
        Run.objects.filter(job=job).order_by("due_at").values_list("status", flat=True)
    ) == [
        RunStatus.NOT_DONE,
        RunStatus.NOT_DONE,
        RunStatus.SUCCEEDED,
    ]


def test_a_poll_job_fails_after_its_maximum_number_of_checks(watch, start):
    job = poll_job(start, poll_max_checks=3)
    runs = [check(job) for _ in range(3)]
    assert [r.status for r in runs] == [RunStatus.NOT_DONE, RunStatus.NOT_DONE, RunStatus.FAILED]
    assert runs[-1].error == "not done after 3 checks (poll_max_checks)"
    assert runs[-1].result == {"seen": "not yet"}
    job.refresh_from_db()
    assert job.status == PlanStatus.FAILED and pending(job) == []


def test_a_poll_job_makes_a_last_check_at_its_deadline(watch, start):
    job = poll_job(start, poll_max_checks=None, poll_timeout=75)
    dues = []
    for _ in range(4):
        (step,) = pending(job)
        dues.append(step.due_at)
        last = check(job)
    # Every 30 s, and a last check at the deadline, 75 s after the first.
    assert dues == [start, start + 30 * SECOND, start + 60 * SECOND, start + 75 * SECOND]
    assert last.status == RunStatus.FAILED
    assert last.error == "not done by the deadline, 75 s after the first check"
    assert pending(job) == []


def test_a_check_that_fails_transiently_is_retried_not_counted_as_a_check(watch, start):
    watch.extend([TransientError("timeout"), "done"])
    job = poll_job(start, poll_max_checks=1)
    assert check(job).status == RunStatus.RETRYING
    (step,) = pending(job)
    assert step.poll_number == 0 and step.version == 2
    assert check(job).status == RunStatus.SUCCEEDED


def test_a_recurring_poll_plans_its_next_occurrence_when_the_poll_is_over(watch, start):
    watch.extend(["running", "done"])
    job = services.job_schedule(
        action="watch",
        schedule_type="rate",
        rate_every=1,
        rate_unit="hours",
        starts_at=start,
        poll_interval=60,
        poll_max_checks=3,
    )
    check(job)
    (follow,) = pending(job)
    assert (follow.sequence, follow.poll_number) == (0, 1)  # the same occurrence, checked again
    check(job)
    (nxt,) = pending(job)
    assert (nxt.sequence, nxt.poll_number) == (1, 0) and nxt.due_at == start + dt.timedelta(hours=1)
    job.refresh_from_db()
    assert job.status == PlanStatus.SCHEDULED and job.run_count == 1


def test_reschedule_moves_the_pending_check(watch, start):
    job = poll_job(start)
    check(job)
    later = start + dt.timedelta(minutes=10)
    services.job_reschedule(job=job, due_at=later)
    (step,) = pending(job)
    assert step.poll_number == 1 and step.due_at == later and step.version == 2


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"poll_interval": None}, "poll_interval", "watch polls: give the seconds between checks"),
        (
            {"poll_max_checks": None},
            "poll_max_checks",
            "a poll needs a limit: give poll_max_checks, poll_timeout or both",
        ),
        ({"poll_max_checks": 0}, "poll_max_checks", "a whole number from 1 to 2147483647"),
        ({"poll_timeout": -5}, "poll_timeout", "from 1 to 158112000 seconds (at most SCHEDULES"),
        ({"poll_interval": 10**9}, "poll_interval", "from 1 to 158112000 seconds"),
        ({"poll_interval": 5, "min": 10}, "poll_interval", "faster than the minimum of 10 s"),
    ],
)
def test_bad_poll_settings_are_refused(watch, start, settings, kwargs, field, text):
    settings.SCHEDULES_MIN_POLL_INTERVAL = kwargs.pop("min", 1)
    with pytest.raises(ValidationError) as caught:
        poll_job(start, **kwargs)
    assert any(text in m for m in caught.value.message_dict[field]), caught.value.message_dict
    assert not Job.objects.exists()


def test_a_non_polling_action_refuses_poll_settings(start):
    with pytest.raises(ValidationError) as caught:
        services.job_schedule(action="noop", due_at=start, poll_interval=5, poll_timeout=60)
    assert set(caught.value.message_dict) == {"poll_interval", "poll_timeout"}
    assert "noop never reports 'not done', so it does not poll" in str(caught.value)


def test_an_action_not_done_without_poll_settings_fails(start):
    @register("sneaky", payload=NoopPayload, description="test")
    def sneaky(ctx: Any, payload: Any) -> NotDone:
        return NotDone()

    try:
        job = services.job_schedule(action="sneaky", due_at=start)
        run = check(job)
    finally:
        REGISTRY.pop("sneaky")
    assert run.status == RunStatus.FAILED
    assert "the job does not poll (no poll_interval)" in run.error


# --- The real http_check action over HTTP --------------------------------------------------------


@pytest.fixture
def allow_local(settings: Any) -> None:
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["127.0.0.1"]


def test_http_check_waits_until_the_task_reports_stopped(allow_local, start):
    with task_status("Pending", "Running", "Stopped") as status_url:
        job = services.job_schedule(
            action="http_check",
            due_at=start,
            payload={"url": status_url, "field": "task.state", "equals": "Stopped"},
            poll_interval=10,
            poll_max_checks=5,
        )
        runs = [check(job) for _ in range(3)]
    assert [r.status for r in runs] == [RunStatus.NOT_DONE, RunStatus.NOT_DONE, RunStatus.SUCCEEDED]
    assert [r.result["value"] for r in runs] == ["Pending", "Running", "Stopped"]
    job.refresh_from_db()
    assert job.status == PlanStatus.SUCCEEDED


def test_http_check_fails_the_job_on_a_failure_state(allow_local, start):
    with task_status("Running", "Failed") as status_url:
        job = services.job_schedule(
            action="http_check",
            due_at=start,
            payload={
                "url": status_url,
                "field": "task.state",
                "equals": "Stopped",
                "fail_on": ["Failed"],
            },
            poll_interval=10,
            poll_timeout=600,
        )
        assert check(job).status == RunStatus.NOT_DONE
        failed = check(job)
    assert failed.status == RunStatus.FAILED and 'task.state reported "Failed"' in failed.error
    job.refresh_from_db()
    assert job.status == PlanStatus.FAILED and pending(job) == []
