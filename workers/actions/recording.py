"""start_recording, stop_recording, live_ping: calls to the recording backend.

Classroom actions: a classroom's service plans them on its timeline with a payload built
from the classroom; a job or a workflow Task cannot run them (``Scope.CLASSROOM``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..backends.recording import get_recording_backend
from .base import ActionContext, Scope, register


class RecordingPayload(BaseModel):
    """For a classroom's steps the worker builds this from the classroom row."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    recording_service_ref: str = Field(min_length=1, max_length=200)
    classroom_id: int | None = None


def _body(ctx: ActionContext, payload: RecordingPayload) -> dict[str, Any]:
    return {
        "recording_service_ref": payload.recording_service_ref,
        "classroom_id": payload.classroom_id,
        "step_id": ctx.step_id,
        "due_at": ctx.due_at.isoformat(),
        "idempotency_key": ctx.idempotency_key,
        "retry_of_uncertain_attempt": ctx.uncertain,
    }


@register(
    "start_recording",
    payload=RecordingPayload,
    description="Start the class recording.",
    scope=Scope.CLASSROOM,
)
def start_recording(ctx: ActionContext, payload: RecordingPayload) -> dict[str, Any]:
    return get_recording_backend().start(_body(ctx, payload))


@register(
    "stop_recording",
    payload=RecordingPayload,
    description="Stop the class recording.",
    scope=Scope.CLASSROOM,
)
def stop_recording(ctx: ActionContext, payload: RecordingPayload) -> dict[str, Any]:
    return get_recording_backend().stop(_body(ctx, payload))


@register(
    "live_ping",
    payload=RecordingPayload,
    description="Tell the recording service the class is still live.",
    has_side_effects=False,
    scope=Scope.CLASSROOM,
)
def live_ping(ctx: ActionContext, payload: RecordingPayload) -> dict[str, Any]:
    return get_recording_backend().ping(_body(ctx, payload))
