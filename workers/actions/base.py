"""What an action is: a name, a validated payload schema and a plain function."""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from ..errors import ActionError, PermanentError, TransientError

__all__ = ["ActionError", "PermanentError", "TransientError"]


class UnknownAction(LookupError):
    pass


@dataclass(frozen=True)
class ActionContext:
    """What the worker tells an action about the step it runs (ids, never secrets)."""

    step_id: int
    version: int
    attempt: int
    due_at: dt.datetime
    job_id: int | None
    classroom_id: int | None
    uncertain: bool = False
    #: The workflow execution whose Task this is, if it is one.
    execution_id: int | None = None

    @property
    def idempotency_key(self) -> str:
        """Stable across redeliveries of one step version: pass it to services that dedupe."""
        return f"step-{self.step_id}-v{self.version}"


@dataclass(frozen=True)
class NotDone:
    """What a polling action returns while the work it watches is not finished yet.

    The worker records the check as a run with status "not done" (``result`` is
    kept in it) and, if the job's poll limits allow, checks again after the
    job's ``poll_interval``. Only actions registered with ``polls=True`` may
    return it.
    """

    result: dict[str, Any] | None = None


ActionFunc = Callable[[ActionContext, Any], dict[str, Any] | NotDone | None]


class Scope(StrEnum):
    """Where an action may be named: what plans the steps that run it."""

    #: A job, and a workflow's Task state (the default).
    JOB = "job"
    #: Only a classroom's timeline: its service builds the steps and their payload from the
    #: classroom (start_recording, live_ping, stop_recording).
    CLASSROOM = "classroom"
    #: Only the workflow engine's own steps (workflow_wait, a Wait state).
    WORKFLOW = "workflow"


@dataclass(frozen=True)
class Action:
    name: str
    payload_model: type[BaseModel]
    func: ActionFunc
    description: str
    #: Whether a second attempt after a lost one may repeat an outside effect.
    has_side_effects: bool = True
    #: Whether the action may return ``NotDone`` (a job running it must set poll limits).
    polls: bool = False
    #: Where the action may be used: only ``Scope.JOB`` actions are offered to jobs and Tasks.
    scope: Scope = Scope.JOB

    @property
    def for_jobs(self) -> bool:
        """Whether a job (or a workflow's Task) may run it."""
        return self.scope == Scope.JOB


REGISTRY: dict[str, Action] = {}


def register(
    name: str,
    *,
    payload: type[BaseModel],
    description: str,
    has_side_effects: bool = True,
    polls: bool = False,
    scope: Scope = Scope.JOB,
) -> Callable[[ActionFunc], ActionFunc]:
    """Register ``func`` as the action ``name`` with its payload schema; ``scope`` says
    where it may be used (``Scope.JOB``, the default: jobs and workflow Tasks)."""

    def decorator(func: ActionFunc) -> ActionFunc:
        if name in REGISTRY:
            raise ValueError(f"action {name!r} is already registered")
        REGISTRY[name] = Action(
            name=name,
            payload_model=payload,
            func=func,
            description=description,
            has_side_effects=has_side_effects,
            polls=polls,
            scope=scope,
        )
        return func

    return decorator


def job_action_names() -> list[str]:
    """The actions a job may run, sorted (read per call, so late registrations count)."""
    return sorted(name for name, action in REGISTRY.items() if action.for_jobs)


def get_action(name: str) -> Action:
    try:
        return REGISTRY[name]
    except KeyError:
        nearest = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f" Did you mean {nearest[0]!r}?" if nearest else ""
        raise UnknownAction(
            f"Unknown action {name!r}; known actions: {', '.join(sorted(REGISTRY))}.{hint}"
        ) from None
