"""Actions only the end-to-end tests register (SCHEDULES_ACTION_MODULES=tests.e2e.actions)."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from workers.actions import ActionContext, register
from workers.errors import PermanentError


class NapPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float


@register("nap", payload=NapPayload, description="Sleep, to be killed mid-run in tests.")
def nap(ctx: ActionContext, payload: NapPayload) -> dict[str, Any]:
    time.sleep(payload.seconds)
    return {"slept": payload.seconds, "uncertain": ctx.uncertain}


class FailPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = "told to fail"


@register("fail", payload=FailPayload, description="Fail for good, to see failures counted.")
def fail(ctx: ActionContext, payload: FailPayload) -> dict[str, Any]:
    raise PermanentError(payload.reason)
