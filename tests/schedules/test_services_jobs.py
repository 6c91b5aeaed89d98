"""Scheduling rules and invariants 1, 2, 3, 5 and 7 through the services."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from schedules import services
from schedules.models import ArmState, Job, PlanStatus, Run, RunStatus, Step, StepState

pytestmark = pytest.mark.django_db(transaction=True)


def email(due_at: dt.datetime, **kw: object) -> Job:
    return services.email_schedule(
        to=["ada@example.com"], subject="Hello", body="Hi", due_at=due_at, **kw
    )


def test_schedule_creates_job_and_step_and_arms_after_commit(recording_engine, in_a_minute):
    job = email(in_a_minute)
    step = job.steps.get()
    assert step.due_at == in_a_minute
    assert step.version == 1 and step.state == StepState.SCHEDULED
    assert step.engine == "recording"
    assert recording_engine.calls == [("arm", step.pk, 1)]
    step.refresh_from_db()
    assert step.arm_state == ArmState.ARMED and step.armed_version == 1
    assert step.external_ref == f"rec:{step.pk}:1"


def test_rolled_back_save_arms_nothing(recording_engine, in_a_minute):
    """Invariant 2: engines are called on commit; a rollback leaves no timer."""
    with pytest.raises(RuntimeError), transaction.atomic():
        email(in_a_minute)
        assert recording_engine.calls == []  # not before the commit either
        raise RuntimeError("roll back")
    assert recording_engine.calls == []
    assert not Job.objects.exists() and not Step.objects.exists()


def test_engine_failure_after_commit_marks_step_for_the_sweep(recording_engine, in_a_minute):
    recording_engine.fail_next = 1
    job = email(in_a_minute)
    step = job.steps.get()
    assert step.arm_state == ArmState.ERROR
    assert "engine unavailable" in step.arm_error and step.arm_failures == 1
    assert services.steps_arm_pending() == 1
    step.refresh_from_db()
    assert step.arm_state == ArmState.ARMED
    assert recording_engine.calls == [("arm", step.pk, 1)]


def test_steps_beyond_the_horizon_are_armed_by_the_sweep(recording_engine, settings, now):
    settings.SCHEDULES_ARM_HORIZON = 3600
    job = email(now + dt.timedelta(hours=5))
    step = job.steps.get()
    assert recording_engine.calls == [] and step.arm_state == ArmState.UNARMED
    assert services.steps_arm_pending(now=now) == 0
    assert services.steps_arm_pending(now=now + dt.timedelta(hours=4, minutes=1)) == 1
    assert recording_engine.calls == [("arm", step.pk, 1)]


def test_reschedule_bumps_version_and_rearms(recording_engine, in_a_minute):
    """Invariant 3: the old timer is disarmed, the new one armed, the old message skipped."""
    job = email(in_a_minute)
    step = job.steps.get()
    later = in_a_minute + dt.timedelta(hours=1)
    services.job_reschedule(job=job, due_at=later)
    step.refresh_from_db()
    job.refresh_from_db()
    assert step.version == 2 and step.due_at == later and job.due_at == later
    assert recording_engine.calls == [
        ("arm", step.pk, 1),
        ("disarm", step.pk, 1),
        ("arm", step.pk, 2),
    ]
    run = services.step_execute(step_id=step.pk, version=1)
    assert run is not None and run.status == RunStatus.SKIPPED
    assert "stale message: version 1" in run.note
    step.refresh_from_db()
    assert step.state == StepState.SCHEDULED and step.attempts == 0


def test_cancel_disarms_and_the_message_is_skipped(recording_engine, in_a_minute):
    job = email(in_a_minute)
    step = job.steps.get()
    services.job_cancel(job=job)
    step.refresh_from_db()
    assert step.state == StepState.CANCELLED and step.version == 2
    assert ("disarm", step.pk, 1) in recording_engine.calls
    assert step.arm_state == ArmState.DISARMED
    assert services.step_execute(step_id=step.pk, version=1).status == RunStatus.SKIPPED
    assert services.step_execute(step_id=step.pk, version=2).status == RunStatus.SKIPPED
    with pytest.raises(ValidationError) as info:
        services.job_cancel(job=job)
    assert "status" in info.value.message_dict


def test_naive_datetime_is_rejected(now):
    """Invariant 7."""
    naive = dt.datetime(2030, 1, 1, 9, 0)
    with pytest.raises(ValidationError) as info:
        email(naive)
    assert "time zone" in info.value.message_dict["due_at"][0]
    assert not Job.objects.exists()


def test_due_times_are_stored_in_utc():
    paris = dt.timezone(dt.timedelta(hours=1))
    due = (timezone.now() + dt.timedelta(days=1)).astimezone(paris)
    job = email(due, time_zone="Europe/Paris")
    job.refresh_from_db()
    assert job.due_at == due and job.due_at.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"action": "send_emial"}, "action", "Did you mean 'send_email'"),
        (
            {"payload": {"to": ["not-an-address"], "subject": "x", "body": "y"}},
            "payload",
            "to.0: 'not-an-address' is not a valid email address",
        ),
        (
            {"payload": {"to": ["a@example.com"], "subject": "x"}},
            "payload",
            "give a body, an html_body or a template",
        ),
        (
            {"payload": {"to": ["a@example.com"], "subject": "x", "body": "y", "colour": 1}},
            "payload",
            "colour: Extra inputs are not permitted",
        ),
        (
            {"payload": {"to": ["a@example.com"], "subject": "x", "template": "nope"}},
            "payload",
            "no template emails/nope.txt",
        ),
        ({"due_at": "tomorrow"}, "due_at", "must be a date and time"),
        ({"precision": "exact"}, "precision", "must be one of seconds, minute, relaxed"),
        ({"precision": "precise"}, "precision", "'precise' is now called 'seconds'"),
        ({"max_attempts": 0}, "max_attempts", "from 1 to"),
        ({"time_zone": "Mars/Olympus"}, "time_zone", "not a known time zone"),
    ],
)
def test_bad_input_names_the_field_and_the_rule(kwargs, field, text, in_a_minute):
    args = {
        "action": "send_email",
        "payload": {"to": ["a@example.com"], "subject": "x", "body": "y"},
        "due_at": in_a_minute,
    } | kwargs
    with pytest.raises(ValidationError) as info:
        services.job_schedule(**args)
    assert any(text in m for m in info.value.message_dict[field]), info.value.message_dict
    assert not Job.objects.exists() and not Step.objects.exists()


def test_due_time_in_the_past_beyond_grace_is_rejected(settings, now):
    settings.SCHEDULES_PAST_GRACE = 60
    email(now - dt.timedelta(seconds=30))  # within the grace: runs as soon as possible
    with pytest.raises(ValidationError) as info:
        email(now - dt.timedelta(seconds=120))
    assert "in the past by more than the 60 s grace" in info.value.message_dict["due_at"][0]


def test_due_time_beyond_the_maximum_is_rejected(settings, now):
    settings.SCHEDULES_MAX_AHEAD = 86400
    with pytest.raises(ValidationError) as info:
        email(now + dt.timedelta(days=2))
    assert "SCHEDULES_MAX_AHEAD" in info.value.message_dict["due_at"][0]


def test_payload_too_large_is_rejected(settings, in_a_minute):
    settings.SCHEDULES_MAX_PAYLOAD_BYTES = 100
    with pytest.raises(ValidationError) as info:
        services.email_schedule(
            to=["a@example.com"], subject="x", body="y" * 200, due_at=in_a_minute
        )
    message = info.value.message_dict["payload"][0]
    assert "the limit is 100 bytes" in message


def test_message_carries_only_ids_and_the_run_reads_the_current_payload(in_a_minute):
    """Invariant 1: an edit before the due time takes effect; messages hold no payload."""
    job = email(in_a_minute)
    services.job_update(
        job=job, payload={"to": ["grace@example.com"], "subject": "New", "body": "Edited"}
    )
    step = job.steps.get()
    timer = services.timer_for(step)
    assert set(json.loads(json.dumps(timer.__dict__, default=str))) == {
        "step_id",
        "version",
        "due_at",
        "engine",
        "external_ref",
    }
    from django.core import mail

    Step.objects.filter(pk=step.pk).update(due_at=timezone.now())
    run = services.step_execute(step_id=step.pk, version=step.version)
    assert run.status == RunStatus.SUCCEEDED
    assert mail.outbox[-1].to == ["grace@example.com"] and mail.outbox[-1].subject == "New"


def test_duplicate_delivery_runs_once(now):
    """Invariant 4: a second delivery after success, and one during a live lease, do nothing."""
    from django.core import mail

    job = email(now)
    step = job.steps.get()
    first = services.step_execute(step_id=step.pk, version=1)
    second = services.step_execute(step_id=step.pk, version=1)
    assert first.status == RunStatus.SUCCEEDED
    assert second.status == RunStatus.SKIPPED and "duplicate delivery" in second.note
    assert len(mail.outbox) == 1
    job.refresh_from_db()
    assert job.status == PlanStatus.SUCCEEDED
    assert Run.objects.filter(step=step, status=RunStatus.SUCCEEDED).count() == 1


def test_delivery_while_the_lease_is_live_does_nothing(now):
    job = email(now)
    step = job.steps.get()
    Step.objects.filter(pk=step.pk).update(
        state=StepState.RUNNING, lease_until=now + dt.timedelta(minutes=5), attempts=1
    )
    run = services.step_execute(step_id=step.pk, version=1)
    assert run.status == RunStatus.SKIPPED and "live lease" in run.note
    step.refresh_from_db()
    assert step.attempts == 1


def test_delivery_after_the_lease_expired_takes_over_and_says_uncertain(now):
    from django.core import mail

    job = email(now)
    step = job.steps.get()
    # A first worker claimed the step, started its run, then died.
    Step.objects.filter(pk=step.pk).update(
        state=StepState.RUNNING, lease_until=now - dt.timedelta(seconds=1), attempts=1
    )
    lost = Run.objects.create(
        step=step,
        job=job,
        action=step.action,
        version=1,
        attempt=1,
        status=RunStatus.RUNNING,
        due_at=step.due_at,
        started_at=now,
    )
    run = services.step_execute(step_id=step.pk, version=1)
    assert run.status == RunStatus.SUCCEEDED and run.attempt == 2
    assert run.uncertain and "may already have had its effect" in run.note
    lost.refresh_from_db()
    assert lost.status == RunStatus.ABANDONED
    assert len(mail.outbox) == 1


def test_run_now_moves_the_due_time_and_bumps_the_version(recording_engine, now):
    job = email(now + dt.timedelta(days=1))
    services.job_run_now(job=job)
    step = job.steps.get()
    assert step.version == 2 and step.due_at <= timezone.now()
    assert ("arm", step.pk, 2) in recording_engine.calls


def test_bulk_schedule_is_all_or_nothing(in_a_minute):
    good = {"action": "noop", "due_at": in_a_minute}
    with pytest.raises(ValidationError) as info:
        services.job_schedule_many(jobs=[good, {"action": "noop", "due_at": None}, good])
    assert "jobs[1].due_at" in info.value.message_dict
    assert not Job.objects.exists()
    jobs = services.job_schedule_many(jobs=[good, good])
    assert Step.objects.filter(job__in=jobs, arm_state=ArmState.ARMED).count() == 2


def test_changing_precision_moves_the_step_to_the_other_engine(recording_engine, settings, now):
    from schedules.engines import get_engine

    settings.SCHEDULES_ENGINES = {"seconds": "recording", "relaxed": "local"}
    get_engine.cache_clear()
    job = services.job_schedule(action="noop", due_at=now + dt.timedelta(hours=1))
    step = job.steps.get()
    assert step.engine == "recording" and step.armed_engine == "recording"
    services.job_update(job=job, precision="relaxed")
    step.refresh_from_db()
    job.refresh_from_db()
    assert job.precision == "relaxed"
    assert (step.engine, step.armed_engine, step.version) == ("local", "local", 2)
    # Disarmed where it was armed, at the old version; nothing else armed there.
    assert recording_engine.calls == [("arm", step.pk, 1), ("disarm", step.pk, 1)]
    # The old engine's message is stale; the new engine's runs it once.
    assert services.step_execute(step_id=step.pk, version=1).status == RunStatus.SKIPPED
    Step.objects.filter(pk=step.pk).update(due_at=timezone.now())
    assert services.step_execute(step_id=step.pk, version=2).status == RunStatus.SUCCEEDED
    run = Run.objects.get(step=step, status=RunStatus.SUCCEEDED)
    assert run.engine == "local"


def test_a_local_step_is_armed_by_its_commit_and_gone_with_a_rollback(now):
    """The local engine's timer is the row: written armed in the job's transaction."""
    with pytest.raises(RuntimeError), transaction.atomic():
        services.job_schedule(action="noop", due_at=now)
        raise RuntimeError("roll back")
    assert services.steps_claim_due(limit=10) == []  # nothing for the dispatcher to release
    job = services.job_schedule(action="noop", due_at=now)
    step = job.steps.get()
    assert (step.engine, step.arm_state, step.armed_version) == ("local", ArmState.ARMED, 1)
    assert services.steps_claim_due(limit=10) == [(step.pk, 1)]
