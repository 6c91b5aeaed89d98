"""Keeping engines in step with the database (invariants 2, 5 and 6).

Engines are only ever called after the transaction that changed a step has
committed (``steps_sync_on_commit``). A failed engine call marks the step
``arm_state=error``; the sweep in ``run_scheduler`` (``steps_arm_pending``)
retries it, so no step is dropped.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from .. import metrics
from ..engines import Timer, TimerNameSpent, get_engine
from ..logcontext import step_log_context
from ..models import ArmState, Step, StepState

logger = logging.getLogger(__name__)

CHUNK = 500
SYNC_FIELDS = (
    "id",
    "job_id",  # for the log lines about the step
    "version",
    "state",
    "due_at",
    "engine",
    "external_ref",
    "arm_state",
    "armed_version",
    "armed_engine",
)


def steps_sync_on_commit(step_ids: Iterable[int]) -> None:
    """After the current transaction commits, sync these steps with their engines."""
    ids = sorted(set(step_ids))
    if ids:
        transaction.on_commit(partial(steps_sync, step_ids=ids))


def timer_for(step: Step, *, version: int | None = None, engine: str | None = None) -> Timer:
    return Timer(
        step_id=step.pk,
        version=step.version if version is None else version,
        due_at=step.due_at,
        engine=engine or step.engine,
        external_ref=step.external_ref,
    )


def steps_sync(*, step_ids: Iterable[int], now: dt.datetime | None = None) -> None:
    """Arm, re-arm or disarm each step's timer to match its row. Safe to repeat."""
    now = now or timezone.now()
    horizon = now + dt.timedelta(seconds=settings.SCHEDULES_ARM_HORIZON)
    ids = list(step_ids)
    for start in range(0, len(ids), CHUNK):
        by_engine: dict[str, list[Step]] = defaultdict(list)
        for step in Step.objects.filter(pk__in=ids[start : start + CHUNK]).only(*SYNC_FIELDS):
            by_engine[step.engine].append(step)
        for engine_name, steps in by_engine.items():
            _sync_engine_steps(engine_name, steps, horizon)


def _update_in_order(ids: list[int], version: int, **fields: object) -> None:
    """Update several steps at ``version``, locking them in ascending id (the lock order)."""
    with transaction.atomic():
        locked = Step.objects.filter(pk__in=ids, version=version).order_by("pk")
        if connection.features.has_select_for_no_key_update:
            locked = locked.select_for_update(no_key=True)
        Step.objects.filter(pk__in=list(locked.values_list("pk", flat=True))).update(**fields)


def _record_error(step: Step, exc: BaseException) -> None:
    metrics.ARM_ERRORS.labels(step.engine).inc()
    with step_log_context(
        step_id=step.pk, version=step.version, job_id=step.job_id, engine=step.engine
    ):
        logger.warning(
            "engine %s failed to sync step %s v%s: %s", step.engine, step.pk, step.version, exc
        )
    Step.objects.filter(pk=step.pk, version=step.version).update(
        arm_state=ArmState.ERROR,
        arm_error=f"{type(exc).__name__}: {exc}"[:2000],
        arm_failures=F("arm_failures") + 1,
    )


def _sync_engine_steps(engine_name: str, steps: list[Step], horizon: dt.datetime) -> None:
    engine = get_engine(engine_name)
    to_arm: list[Step] = []
    failed: set[int] = set()
    for step in steps:
        wants_timer = step.state == StepState.SCHEDULED and step.due_at <= horizon
        armed = step.arm_state == ArmState.ARMED
        holder = step.armed_engine or engine_name
        current = armed and step.armed_version == step.version and holder == engine_name
        if armed and (not current or step.state == StepState.CANCELLED):
            try:
                # Disarmed where it was armed: a precision change moves engines.
                get_engine(holder).disarm(
                    timer_for(step, version=step.armed_version, engine=holder)
                )
            except Exception as exc:  # noqa: BLE001 - recorded; the sweep retries
                _record_error(step, exc)
                failed.add(step.pk)
                continue
            if not wants_timer:
                Step.objects.filter(pk=step.pk, version=step.version).update(
                    arm_state=ArmState.DISARMED, arm_error=""
                )
        if wants_timer and not current:
            to_arm.append(step)
    if not to_arm:
        return
    results = engine.arm_many([timer_for(step) for step in to_arm])
    plain: dict[int, list[int]] = defaultdict(list)  # version -> ids armed with no reference
    spent: list[tuple[int, int]] = []
    armed_at = timezone.now()
    for step in to_arm:
        result = results.get(step.pk, RuntimeError("the engine returned no result"))
        if isinstance(result, TimerNameSpent):
            spent.append((step.pk, step.version))
        elif isinstance(result, Exception):
            _record_error(step, result)
        elif result == "":
            plain[step.version].append(step.pk)
        else:
            Step.objects.filter(pk=step.pk, version=step.version).update(
                arm_state=ArmState.ARMED,
                armed_version=step.version,
                armed_engine=engine_name,
                armed_at=armed_at,
                external_ref=result,
                arm_error="",
            )
    for version, ids in plain.items():
        _update_in_order(
            ids,
            version,
            arm_state=ArmState.ARMED,
            armed_version=version,
            armed_engine=engine_name,
            armed_at=armed_at,
            external_ref="",
            arm_error="",
        )
    if spent:
        # A closed timer holds this version's name: arm the step under a new version.
        steps_rearm(forget=[], renew=spent)


def steps_arm_pending(*, now: dt.datetime | None = None, limit: int = 1000) -> int:
    """The sweep: arm steps that came into the horizon or whose arm failed. Returns a count."""
    now = now or timezone.now()
    horizon = now + dt.timedelta(seconds=settings.SCHEDULES_ARM_HORIZON)
    # One index seek per arm state (an IN over arm_state would scan (state, due_at)).
    waiting = sorted(
        (due_at, pk)
        for arm_state in (ArmState.UNARMED, ArmState.ERROR)
        for pk, due_at in Step.objects.filter(
            state=StepState.SCHEDULED, arm_state=arm_state, due_at__lte=horizon
        )
        .order_by("due_at")
        .values_list("pk", "due_at")[:limit]
    )
    ids = [pk for _due_at, pk in waiting[:limit]]
    steps_sync(step_ids=ids, now=now)
    return len(ids)


def steps_rearm(*, forget: Iterable[tuple[int, int]], renew: Iterable[tuple[int, int]]) -> None:
    """Re-arm timers an engine lost (``reconcile``). Each pair is (step id, version read).

    ``forget``: the engine has no timer although the row says armed; the row forgets
    its arm so the sync arms the same version again. ``renew``: the engine holds a
    stopped or failed timer whose name cannot be reused; the step moves to a new
    version (the old timer's message is then skipped) and is armed afresh. Each write
    is fenced by the version read, so a step rescheduled meanwhile is left alone.
    """
    forget, renew = list(forget), list(renew)
    with transaction.atomic():
        for pk, version in forget:
            Step.objects.filter(pk=pk, version=version, state=StepState.SCHEDULED).update(
                arm_state=ArmState.UNARMED
            )
        for pk, version in renew:
            Step.objects.filter(pk=pk, version=version, state=StepState.SCHEDULED).update(
                version=F("version") + 1, arm_state=ArmState.UNARMED
            )
    steps_sync(step_ids=[pk for pk, _version in forget + renew])


def step_disarm_deleted(*, timer: Timer) -> None:
    """A deleted step's timer must not fire (its message would be skipped anyway)."""
    try:
        get_engine(timer.engine).disarm(timer)
    except Exception as exc:  # noqa: BLE001 - reconcile removes orphans later
        with step_log_context(step_id=timer.step_id, version=timer.version, engine=timer.engine):
            logger.warning(
                "engine %s failed to disarm deleted step %s v%s: %s",
                timer.engine,
                timer.step_id,
                timer.version,
                exc,
            )
