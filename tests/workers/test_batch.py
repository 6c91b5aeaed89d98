"""A message's steps due together are claimed, run and recorded together, with the
fences one step has: a stale version is skipped, a step under a live lease is not
taken, a lapsed lease is taken over (uncertain where the action has effects), a
recurring occurrence consults its job's plan, and each step runs once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from schedules import services
from schedules.models import Job, PlanStatus, Run, RunStatus, Step, StepState
from schedules.services import execution
from workers.actions import PermanentError
from workers.actions.base import REGISTRY, register
from workers.actions.noop import NoopPayload

pytestmark = pytest.mark.django_db(transaction=True)

STEP_TABLE = Step._meta.db_table
RUN_TABLE = Run._meta.db_table


@pytest.fixture
def effects() -> Iterator[list[int]]:
    """An action with outside effects that counts its starts, and one that fails."""
    started: list[int] = []

    @register("effect", payload=NoopPayload, description="test")
    def effect(ctx: Any, payload: Any) -> dict[str, int]:
        started.append(ctx.step_id)
        return {"step": ctx.step_id}

    @register("refuses", payload=NoopPayload, description="test", has_side_effects=False)
    def refuses(ctx: Any, payload: Any) -> None:
        raise PermanentError("no")

    try:
        yield started
    finally:
        REGISTRY.pop("effect")
        REGISTRY.pop("refuses")


def released(jobs: list[dict[str, Any]]) -> list[list[int]]:
    services.job_schedule_many(jobs=jobs)
    return [[pk, v] for pk, v in services.steps_claim_due(limit=len(jobs), holder="")]


def statements(call: Any) -> list[str]:
    """The statements ``call`` sent; one run several times (``executemany``) counts as one
    on SQLite (prepared once, run in process) and as each of its runs on PostgreSQL
    (each one parsed and planned by the server)."""
    sent: list[str] = []

    def capture(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        times = len(params) if many and connection.vendor == "postgresql" else 1
        sent.extend([sql] * times)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        call()
    return sent


def test_steps_due_together_take_one_statement_each_to_claim_open_and_record(effects):
    now = timezone.now()
    pairs = released([{"action": "effect", "due_at": now}] * 20)
    sent = statements(lambda: services.steps_execute(pairs=pairs, worker="w:1"))
    assert sorted(effects) == sorted(pk for pk, _ in pairs)
    takes = [s for s in sent if s.startswith(f"UPDATE {STEP_TABLE} SET state = %s, holder = %s")]
    settles = [s for s in sent if s.startswith(f"UPDATE {STEP_TABLE} SET state = %s, holder = ''")]
    inserts = [s for s in sent if s.startswith(f"INSERT INTO {RUN_TABLE}")]
    run_updates = [s for s in sent if s.startswith(f"UPDATE {RUN_TABLE}")]
    assert (len(takes), len(inserts), len(settles), len(run_updates)) == (1, 1, 1, 1)
    assert len(sent) <= 12, sent
    runs = Run.objects.filter(status=RunStatus.SUCCEEDED)
    assert runs.count() == 20
    assert {tuple(r) for r in runs.values_list("attempt", "uncertain", "worker")} == {
        (1, False, "w:1")
    }
    assert all(run.result == {"step": run.step_id} for run in runs)
    assert all(run.lateness is not None and run.finished_at for run in runs)
    assert set(Step.objects.values_list("state", "holder", "attempts")) == {
        (StepState.SUCCEEDED, "", 1)
    }
    assert set(Job.objects.values_list("status", flat=True)) == {PlanStatus.SUCCEEDED}


def test_a_batch_mixing_fresh_stale_cancelled_leased_and_lapsed_steps(effects):
    now = timezone.now()
    pairs = released([{"action": "effect", "due_at": now}] * 6)
    (fresh1, fresh2, stale, cancelled, leased, lapsed) = [pk for pk, _ in pairs]
    step = Step.objects.get(pk=stale)
    services.job_reschedule(job=step.job, due_at=now + dt.timedelta(hours=1))  # new version
    services.job_cancel(job=Step.objects.get(pk=cancelled).job)
    later = now + dt.timedelta(minutes=5)
    Step.objects.filter(pk=leased).update(
        state=StepState.RUNNING, holder="other:1", lease_until=later, attempts=1
    )
    Step.objects.filter(pk=lapsed).update(
        state=StepState.RUNNING, holder="dead:1", lease_until=now - dt.timedelta(seconds=1)
    )
    Step.objects.filter(pk=lapsed).update(attempts=1)
    Run.objects.create(
        step_id=lapsed,
        job_id=Step.objects.get(pk=lapsed).job_id,
        action="effect",
        engine="local",
        version=1,
        attempt=1,
        status=RunStatus.RUNNING,
        due_at=now,
        started_at=now,
        worker="dead:1",
    )

    services.steps_execute(pairs=pairs, worker="w:1")

    assert sorted(effects) == sorted([fresh1, fresh2, lapsed])  # each once
    by_step = {
        pk: list(Run.objects.filter(step_id=pk).order_by("pk").values_list("status", "note"))
        for pk, _ in pairs
    }
    assert by_step[fresh1] == [(RunStatus.SUCCEEDED, "")]
    assert by_step[fresh2] == [(RunStatus.SUCCEEDED, "")]
    assert by_step[stale][0][0] == RunStatus.SKIPPED and "stale message" in by_step[stale][0][1]
    # (A cancel moves the version on, so its message is stale first of all.)
    assert by_step[cancelled][0][0] == RunStatus.SKIPPED
    assert Step.objects.get(pk=cancelled).state == StepState.CANCELLED
    assert by_step[leased] == [
        (RunStatus.SKIPPED, "duplicate delivery: the step is running under a live lease")
    ]
    # The lapsed one was taken over: the lost attempt abandoned, the new run uncertain.
    lost, taken = Run.objects.filter(step_id=lapsed).order_by("pk")
    assert lost.status == RunStatus.ABANDONED
    assert taken.status == RunStatus.SUCCEEDED and taken.uncertain and taken.attempt == 2
    # The live holder keeps its step; the stale step waits for its new time.
    assert Step.objects.filter(pk=leased, holder="other:1", state=StepState.RUNNING).exists()
    assert Step.objects.get(pk=stale).state == StepState.SCHEDULED


def test_a_recurring_occurrence_in_the_batch_plans_its_next_one(effects):
    now = timezone.now()
    job = services.job_schedule(
        action="effect",
        schedule_type="rate",
        rate_every=1,
        rate_unit="minutes",
        starts_at=now + dt.timedelta(seconds=0.5),
    )
    services.job_schedule_many(jobs=[{"action": "effect", "due_at": now}] * 2)
    first = Step.objects.get(job=job)
    pairs = [[pk, v] for pk, v in services.steps_claim_due(limit=10, now=first.due_at)]
    assert len(pairs) == 3
    services.steps_execute(pairs=pairs, worker="w:1")
    assert len(effects) == 3
    assert Run.objects.filter(status=RunStatus.SUCCEEDED).count() == 3
    job.refresh_from_db()
    assert job.run_count == 1
    nxt = Step.objects.filter(job=job, state=StepState.SCHEDULED).get()
    assert nxt.due_at == first.due_at + dt.timedelta(minutes=1)


def test_outcomes_are_recorded_by_kind_and_each_job_gets_its_own(effects):
    now = timezone.now()
    pairs = released(
        [{"action": "effect", "due_at": now}, {"action": "refuses", "due_at": now}] * 3
    )
    services.steps_execute(pairs=pairs, worker="w:1")
    assert Run.objects.filter(status=RunStatus.SUCCEEDED).count() == 3
    failed = Run.objects.filter(status=RunStatus.FAILED)
    assert failed.count() == 3 and all("PermanentError: no" in r.error for r in failed)
    statuses = dict(Job.objects.values_list("action", "status").distinct())
    assert statuses == {"effect": PlanStatus.SUCCEEDED, "refuses": PlanStatus.FAILED}


def test_a_job_cancelled_while_its_action_runs_keeps_its_cancel(effects, monkeypatch):
    now = timezone.now()
    pairs = released([{"action": "effect", "due_at": now}] * 2)
    victim = Step.objects.get(pk=pairs[0][0]).job
    real = execution._run_action

    def cancel_first(step: Any, run: Any, payload: Any = None) -> Any:
        if step.pk == pairs[0][0]:
            services.job_cancel(job=victim)
        return real(step, run, payload)

    monkeypatch.setattr(execution, "_run_action", cancel_first)
    services.steps_execute(pairs=pairs, worker="w:1")
    victim.refresh_from_db()
    assert victim.status == PlanStatus.CANCELLED
    run = Run.objects.get(step_id=pairs[0][0])
    assert run.status == RunStatus.SUCCEEDED  # the action did run; the record says so
    assert "cancelled or rescheduled while it ran" in run.note
    assert Step.objects.get(pk=pairs[1][0]).state == StepState.SUCCEEDED


def test_steps_not_started_by_the_deadline_are_given_back_as_they_were(effects):
    now = timezone.now()
    pairs = released([{"action": "effect", "due_at": now}] * 3)
    rest = services.steps_execute(pairs=pairs, worker="w:1", deadline=0)
    assert rest == [tuple(pair) for pair in pairs[1:]]
    assert effects == [pairs[0][0]]  # one action always runs
    assert Run.objects.count() == 1  # the runs of the two not started are gone
    for pk, _ in rest:
        step = Step.objects.get(pk=pk)
        assert (step.state, step.attempts, step.holder) == (StepState.QUEUED, 0, "w:1")
        assert step.job.status == PlanStatus.SCHEDULED
    # Given to a new delivery, they run once each.
    services.steps_execute(pairs=rest, worker="w:2")
    assert sorted(effects) == sorted(pk for pk, _ in pairs)
    assert Run.objects.filter(status=RunStatus.SUCCEEDED).count() == 3


def test_recorded_together_outcomes_keep_every_value_as_the_action_gave_it(effects):
    """One statement writes the outcomes of steps recorded together: results of every
    JSON shape, errors with quotes and newlines, and the times, come back unchanged."""
    results = [
        None,
        {"quote": 'it\'s "fine"', "nested": {"list": [1, 2.5, None, True]}},
        ["a", "b"],
        "plain text",
        {"unicode": "Grüße, 東京 ✓", "backslash": "C:\\path\\n"},
        0,
    ]
    returned = iter(results)

    @register("shapes", payload=NoopPayload, description="test")
    def shapes(ctx: Any, payload: Any) -> Any:
        return next(returned)

    @register("breaks", payload=NoopPayload, description="test", has_side_effects=False)
    def breaks(ctx: Any, payload: Any) -> None:
        raise PermanentError('it\'s\nbroken; DROP TABLE "x" --')

    try:
        now = timezone.now()
        pairs = released(
            [{"action": "shapes", "due_at": now - dt.timedelta(seconds=2)}] * len(results)
            + [{"action": "breaks", "due_at": now}]
        )
        services.steps_execute(pairs=pairs, worker="w:1")
    finally:
        REGISTRY.pop("shapes")
        REGISTRY.pop("breaks")
    runs = list(Run.objects.filter(action="shapes").order_by("step_id"))
    assert [run.result for run in runs] == results
    assert all(run.status == RunStatus.SUCCEEDED for run in runs)
    for run in runs:
        assert run.finished_at is not None and run.finished_at >= run.started_at
        assert run.lateness == run.started_at - run.due_at
        assert run.lateness >= dt.timedelta(seconds=2)
    broken = Run.objects.get(action="breaks")
    assert broken.status == RunStatus.FAILED
    assert 'it\'s\nbroken; DROP TABLE "x" --' in broken.error
    assert broken.result is None
