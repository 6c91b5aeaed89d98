"""Thin receivers: after the commit, bring the engine in line with the row."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.db import transaction

from .models import Step


def step_saved(sender: type[Step], instance: Step, **kwargs: Any) -> None:
    from .services import steps_sync_on_commit

    steps_sync_on_commit([instance.pk])


def step_deleted(sender: type[Step], instance: Step, **kwargs: Any) -> None:
    from .services.sync import step_disarm_deleted

    transaction.on_commit(partial(step_disarm_deleted, timer=_timer(instance)))


def _timer(step: Step) -> Any:
    from .services import timer_for

    return timer_for(step, version=step.armed_version or step.version)
