"""Every write of the product, in one place. The admin, API, commands and tasks call these."""

from .classrooms import (
    classroom_cancel,
    classroom_create,
    classroom_shift,
    classroom_step_count,
    classroom_timeline,
    classroom_update,
    classroom_validate,
)
from .dispatch import (
    lookahead,
    steps_claim_due,
    steps_next_due_at,
    steps_publish,
    steps_redeliver_lost,
    steps_unclaim,
)
from .execution import retry_delay, step_execute
from .jobs import (
    email_schedule,
    job_cancel,
    job_reschedule,
    job_run_now,
    job_schedule,
    job_schedule_many,
    job_update,
    job_validate,
)
from .maintenance import idempotency_purge_expired
from .sync import (
    steps_arm_pending,
    steps_rearm,
    steps_sync,
    steps_sync_on_commit,
    timer_for,
)

__all__ = [
    "classroom_cancel",
    "classroom_create",
    "classroom_shift",
    "classroom_step_count",
    "classroom_timeline",
    "classroom_update",
    "classroom_validate",
    "email_schedule",
    "idempotency_purge_expired",
    "job_cancel",
    "job_reschedule",
    "job_run_now",
    "job_schedule",
    "job_schedule_many",
    "job_update",
    "job_validate",
    "lookahead",
    "retry_delay",
    "step_execute",
    "steps_arm_pending",
    "steps_claim_due",
    "steps_next_due_at",
    "steps_publish",
    "steps_rearm",
    "steps_redeliver_lost",
    "steps_sync",
    "steps_sync_on_commit",
    "steps_unclaim",
    "timer_for",
]
