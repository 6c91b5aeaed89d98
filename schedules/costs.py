"""What timers cost at the engines' list prices: one job's, and each engine's load.

Reads only. A price is per timer (arming and releasing one step, the engine's own
requests and its SQS send; docs/aws.md, "Choosing an engine"), from
``engines.price_per_timer``: the documented list price or SCHEDULES_ENGINE_PRICES.
The worker's own SQS requests (a receive and a delete per step) are the same on every
AWS engine and are not counted here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count, F, FloatField, Sum, Value
from django.db.models.functions import Cast
from django.utils import timezone

from . import recurrence
from .engines import configured_engine_names, engine_name_for_precision, price_per_timer
from .models import Job, PlanStatus, ScheduleType, Step, StepState
from .overview import engines_with_steps
from .selectors import rule_for

#: The period of the monthly figures.
MONTH = dt.timedelta(days=30)
#: Occurrences of a cron rule counted one by one before the rest is extrapolated.
CRON_COUNT_CAP = 2000
ACTIVE = (PlanStatus.SCHEDULED, PlanStatus.RUNNING)


def runs_in(rule: recurrence.Rule, *, now: dt.datetime, period: dt.timedelta) -> float:
    """About how many occurrences of a rule fall in the next ``period``.

    A rate rule by arithmetic; a cron rule counted up to CRON_COUNT_CAP occurrences,
    then by its first day's count (a rule that busy repeats daily). Neither counts
    ``max_runs``; both stop at ``ends_at``.
    """
    until = now + period
    if rule.ends_at is not None:
        until = min(until, rule.ends_at)
    if until <= now:
        return 0.0
    start = max(now, rule.starts_at)
    if rule.kind == recurrence.RATE:
        if until <= start:
            return 0.0
        return (until - start) / rule.interval
    counted = recurrence.count_due(rule, now, until, cap=CRON_COUNT_CAP)
    if counted < CRON_COUNT_CAP:
        return float(counted)
    day = dt.timedelta(days=1)
    return recurrence.count_due(rule, now, now + day, cap=24 * 3600) * ((until - now) / day)


@dataclass(frozen=True)
class JobCost:
    """One job's timers at its engine's list price."""

    engine: str
    price: Decimal  # per run (per check, for a polling job)
    runs_per_month: float | None  # recurring jobs; None for a one-off job

    @property
    def per_month(self) -> Decimal | None:
        if self.runs_per_month is None:
            return None
        return self.price * Decimal(str(round(self.runs_per_month, 3)))


def job_cost(job: Job, *, now: dt.datetime | None = None) -> JobCost | None:
    """The job's engine, its price per run and, for a recurring job that has not ended,
    its runs and cost over the next 30 days. None when its class has no engine here."""
    now = now or timezone.now()
    try:
        engine = engine_name_for_precision(job.precision)
        price = price_per_timer(engine)
    except ImproperlyConfigured:
        return None
    rule = rule_for(job)
    if rule is None:
        return JobCost(engine=engine, price=price, runs_per_month=None)
    runs = runs_in(rule, now=now, period=MONTH) if job.status in ACTIVE else 0.0
    if rule.max_runs is not None:
        runs = min(runs, float(max(rule.max_runs - job.run_count, 0)))
    return JobCost(engine=engine, price=price, runs_per_month=runs)


@dataclass(frozen=True)
class EngineLoad:
    """The timers an engine holds or will hold over the next 30 days, and their cost."""

    engine: str
    price: Decimal
    steps: int  # steps scheduled within 30 days (one-offs, classrooms, checks, workflows)
    recurring_runs: float  # projected occurrences of recurring jobs beyond their next

    @property
    def timers(self) -> float:
        return self.steps + self.recurring_runs

    @property
    def per_month(self) -> Decimal:
        return self.price * Decimal(str(round(self.timers, 3)))


def _recurring_runs_by_precision(now: dt.datetime) -> dict[str, float]:
    """Occurrences of active recurring jobs over the next 30 days, per precision, less
    the one each has pending (counted with the steps).

    Rate jobs are summed in the database (30 days / interval, as if each ran the whole
    period); cron jobs, usually few, are counted one by one.
    """
    runs: dict[str, float] = {}
    active = Job.objects.filter(status__in=ACTIVE)
    rates = (
        active.filter(schedule_type=ScheduleType.RATE, rate_every__gte=1)
        .values("precision", "rate_unit")
        .annotate(per_unit=Sum(Value(1.0) / Cast(F("rate_every"), FloatField())), jobs=Count("id"))
        .order_by()
    )
    for row in rates:
        per_month = row["per_unit"] * MONTH.total_seconds() / recurrence.UNITS[row["rate_unit"]]
        runs[row["precision"]] = runs.get(row["precision"], 0.0) + per_month - row["jobs"]
    for job in active.filter(schedule_type=ScheduleType.CRON).iterator():
        rule = rule_for(job)
        assert rule is not None
        runs[job.precision] = runs.get(job.precision, 0.0) + max(
            runs_in(rule, now=now, period=MONTH) - 1, 0.0
        )
    return {precision: max(value, 0.0) for precision, value in runs.items()}


def engines_load(*, now: dt.datetime | None = None) -> list[EngineLoad]:
    """Per engine in use: the steps it holds due within 30 days and the projected runs
    of recurring jobs on it, at its list price per timer."""
    now = now or timezone.now()
    # One count per engine on the index step_state_engine_due (state, engine, due_at).
    steps = {
        engine: Step.objects.filter(
            state=StepState.SCHEDULED, engine=engine, due_at__lte=now + MONTH
        ).count()
        for engine in engines_with_steps(StepState.SCHEDULED)
    }
    recurring: dict[str, float] = {}
    for precision, value in _recurring_runs_by_precision(now).items():
        try:
            engine = engine_name_for_precision(precision)
        except ImproperlyConfigured:
            continue
        recurring[engine] = recurring.get(engine, 0.0) + value
    loads = []
    for engine in sorted({*configured_engine_names(), *steps, *recurring}):
        try:
            price = price_per_timer(engine)
        except ImproperlyConfigured:
            price = Decimal(0)
        loads.append(
            EngineLoad(
                engine=engine,
                price=price,
                steps=steps.get(engine, 0),
                recurring_runs=round(recurring.get(engine, 0.0), 1),
            )
        )
    return loads


def format_usd(amount: Decimal) -> str:
    """Dollars to the cent, or to the first significant digit below a cent."""
    if amount == 0:
        return "$0"
    if amount >= Decimal("0.01"):
        return f"${amount:,.2f}"
    return f"${amount.normalize():f}"
