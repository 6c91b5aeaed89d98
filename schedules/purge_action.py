"""The action that runs the retention purge, so that the product purges itself on a schedule
(``manage.py schedule_purge`` keeps one recurring job of it). Registered when the app is
ready.

Its payload tunes how the purge runs, never what it deletes: the ages are the
SCHEDULES_KEEP_*_DAYS settings, whoever schedules it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from workers.actions import ActionContext, register

#: The most a purge run by a job lasts by default: well inside the task's time limit
#: (CELERY_TASK_SOFT_TIME_LIMIT); what is left goes at the next run.
DEFAULT_MAX_SECONDS = 900.0


class PurgePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Rows per transaction (default: SCHEDULES_PURGE_BATCH).",
    )
    pause: float | None = Field(
        default=None,
        ge=0,
        le=60,
        description="Seconds between two batches (default: SCHEDULES_PURGE_PAUSE).",
    )
    max_seconds: float = Field(
        default=DEFAULT_MAX_SECONDS,
        gt=0,
        le=3600,
        description="Stop between two batches after this long; the next run goes on.",
    )


@register(
    "purge",
    payload=PurgePayload,
    description="Deletes finished runs, steps, jobs and more older than the "
    "SCHEDULES_KEEP_*_DAYS settings (docs/operations.md, 'Retention and purge').",
    has_side_effects=False,
)
def purge(ctx: ActionContext, payload: PurgePayload) -> dict[str, Any]:
    from .services.retention import retention_purge

    report = retention_purge(
        batch_size=payload.batch_size, pause=payload.pause, max_seconds=payload.max_seconds
    )
    summary = report.as_dict()
    del summary["examined"]
    return summary
