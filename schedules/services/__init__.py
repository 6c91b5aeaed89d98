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
    Recovered,
    lookahead,
    steps_claim_due,
    steps_next_due_at,
    steps_publish,
    steps_recover,
    steps_release_overdue,
    steps_unclaim,
    steps_waiting_report,
)
from .execution import retry_delay, step_execute, steps_execute
from .executions import execution_cancel, execution_start
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
from .leases import LeaseKeeper, lease_keeper, process_name, steps_hold, steps_let_go
from .maintenance import idempotency_purge_expired
from .sync import (
    steps_arm_pending,
    steps_rearm,
    steps_sync,
    steps_sync_on_commit,
    timer_for,
)
from .transactions import Busy, run_retrying
from .workflows import (
    workflow_create,
    workflow_schedule,
    workflow_unschedule,
    workflow_update,
    workflow_validate,
)

__all__ = [
    "Busy",
    "LeaseKeeper",
    "Recovered",
    "classroom_cancel",
    "classroom_create",
    "classroom_shift",
    "classroom_step_count",
    "classroom_timeline",
    "classroom_update",
    "classroom_validate",
    "email_schedule",
    "execution_cancel",
    "execution_start",
    "idempotency_purge_expired",
    "job_cancel",
    "job_reschedule",
    "job_run_now",
    "job_schedule",
    "job_schedule_many",
    "job_update",
    "job_validate",
    "lease_keeper",
    "lookahead",
    "process_name",
    "retry_delay",
    "run_retrying",
    "step_execute",
    "steps_arm_pending",
    "steps_claim_due",
    "steps_execute",
    "steps_hold",
    "steps_let_go",
    "steps_next_due_at",
    "steps_publish",
    "steps_rearm",
    "steps_recover",
    "steps_release_overdue",
    "steps_sync",
    "steps_sync_on_commit",
    "steps_unclaim",
    "steps_waiting_report",
    "timer_for",
    "workflow_create",
    "workflow_schedule",
    "workflow_unschedule",
    "workflow_update",
    "workflow_validate",
]
