"""A trivial action for smoke tests and benchmarks: records when it started."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from .base import ActionContext, Scope, register


class NoopPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = ""


@register(
    "noop",
    payload=NoopPayload,
    description="Does nothing but record the moment it ran.",
    has_side_effects=False,
)
def noop(ctx: ActionContext, payload: NoopPayload) -> dict[str, Any]:
    return {"started_unix": time.time(), "note": payload.note}


class WaitPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")


@register(
    "workflow_wait",
    payload=WaitPayload,
    description="A workflow's Wait state: does nothing when its time comes; the execution "
    "then moves on.",
    has_side_effects=False,
    scope=Scope.WORKFLOW,
)
def workflow_wait(ctx: ActionContext, payload: WaitPayload) -> None:
    return None
