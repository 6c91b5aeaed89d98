"""The domain: jobs and classrooms are plans; steps are their timed actions; runs are attempts.

Rows hold data and invariants only. Every write goes through schedules.services.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class Precision(models.TextChoices):
    """How late a step may be released; each class maps to an engine (SCHEDULES_ENGINES)."""

    SECONDS = "seconds", "Seconds (released within a second)"
    MINUTE = "minute", "Minute (released within about a minute)"
    RELAXED = "relaxed", "Relaxed (minutes to hours)"


#: The finest first: an engine that meets a class meets every later one.
PRECISION_ORDER = (Precision.SECONDS, Precision.MINUTE, Precision.RELAXED)
#: Names an earlier release used, still accepted where a precision is read.
LEGACY_PRECISIONS = {"precise": Precision.SECONDS}


class PlanStatus(models.TextChoices):
    """Status of a job or classroom, derived from its steps by the services."""

    SCHEDULED = "scheduled", "Scheduled"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused (nothing new starts until it is resumed)"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


#: Plans in these states have ended: nothing of theirs runs again.
ENDED_PLAN_STATES = (PlanStatus.SUCCEEDED, PlanStatus.FAILED, PlanStatus.CANCELLED)
#: The longest reason a pause keeps.
PAUSE_REASON_MAX = 500


class ScheduleType(models.TextChoices):
    ONCE = "once", "Once, at the due time"
    RATE = "rate", "Every N seconds, minutes, hours or days"
    CRON = "cron", "By a cron expression in the job's time zone"


#: The types a recurring job may switch between.
RECURRING_SCHEDULE_TYPES = [
    (v, label) for v, label in ScheduleType.choices if v != ScheduleType.ONCE
]


class RateUnit(models.TextChoices):
    SECONDS = "seconds", "seconds"
    MINUTES = "minutes", "minutes"
    HOURS = "hours", "hours"
    DAYS = "days", "days"


class MissedPolicy(models.TextChoices):
    """What a recurring job does when it is behind (see docs/architecture.md)."""

    RUN_ONCE = "run_once", "Run once now for all missed occurrences"
    RUN_ALL = "run_all", "Run every missed occurrence"
    SKIP = "skip", "Skip to the next occurrence"


class OverlapPolicy(models.TextChoices):
    """What a recurring job does with an occurrence due while the previous one is going."""

    SKIP = "skip", "Skip it"
    ALLOW = "allow", "Run it alongside"


class Job(models.Model):
    """Work to run: `action` with `payload`, once at `due_at` or by a recurrence rule.

    A recurring job has one pending step at a time (its next occurrence): taking or
    finishing an occurrence plans the next one. A polling job checks again after
    `poll_interval` while its action reports "not done yet".
    """

    name = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=64, help_text="Registered action name, e.g. send_email.")
    payload = models.JSONField(
        default=dict, blank=True, help_text="Arguments of the action, validated by its schema."
    )
    due_at = models.DateTimeField(
        help_text="When the job is due (stored in UTC); for a recurring job, its next occurrence."
    )
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        help_text="The job's IANA time zone: for display, and the zone a cron rule is read in.",
    )
    schedule_type = models.CharField(
        max_length=8,
        choices=ScheduleType.choices,
        default=ScheduleType.ONCE,
        help_text="once (at due_at), rate (every N units) or cron (in the job's time zone).",
    )
    rate_every = models.PositiveIntegerField(
        null=True, blank=True, help_text="A rate rule's N: run every N rate units."
    )
    rate_unit = models.CharField(
        max_length=8, choices=RateUnit.choices, blank=True, help_text="A rate rule's unit."
    )
    cron = models.CharField(
        max_length=200,
        blank=True,
        help_text="A cron rule: 5 fields (minute hour day-of-month month day-of-week).",
    )
    starts_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="A recurring job's first possible occurrence; a rate counts from it.",
    )
    ends_at = models.DateTimeField(
        null=True, blank=True, help_text="A recurring job has no occurrence after this."
    )
    max_runs = models.PositiveIntegerField(
        null=True, blank=True, help_text="A recurring job stops after this many runs."
    )
    run_count = models.PositiveIntegerField(
        default=0, editable=False, help_text="Occurrences run so far (counted against max_runs)."
    )
    last_sequence = models.PositiveIntegerField(
        default=0, editable=False, help_text="The highest occurrence number planned so far."
    )
    missed_policy = models.CharField(
        max_length=8,
        choices=MissedPolicy.choices,
        default=MissedPolicy.RUN_ONCE,
        help_text="When the job is behind (a later occurrence is already due as one is taken).",
    )
    overlap_policy = models.CharField(
        max_length=8,
        choices=OverlapPolicy.choices,
        default=OverlapPolicy.SKIP,
        help_text="An occurrence due while the previous one is still going.",
    )
    poll_interval = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds between checks while the action is not done."
    )
    poll_max_checks = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most checks per occurrence, the first one included."
    )
    poll_timeout = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Seconds after the first check's due time by which the action must be done.",
    )
    precision = models.CharField(
        max_length=16, choices=Precision.choices, default=Precision.SECONDS
    )
    max_attempts = models.PositiveSmallIntegerField(
        default=3, help_text="Attempts before the job is marked failed (transient errors retry)."
    )
    webhook_url = models.CharField(
        max_length=2000,
        blank=True,
        help_text="Alerts about this job are also POSTed here (docs/alerts.md); its host must "
        "be in SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS.",
    )
    pause_after_failures = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="A recurring job pauses itself after this many failed occurrences in a row "
        "(a success starts the count again); resume it once the cause is fixed. Empty: it "
        "never pauses itself.",
    )
    consecutive_failures = models.PositiveIntegerField(
        default=0,
        editable=False,
        help_text="A recurring job's failed occurrences in a row, up to now (a success resets it).",
    )
    status = models.CharField(
        max_length=16, choices=PlanStatus.choices, default=PlanStatus.SCHEDULED, editable=False
    )
    paused_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the job was paused: its pending step is held (its timer disarmed) "
        "until it is resumed. Empty once resumed.",
    )
    pause_reason = models.CharField(
        max_length=PAUSE_REASON_MAX,
        blank=True,
        editable=False,
        help_text="Why it was paused: the reason given, or the failures it paused itself after.",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="scheduled_jobs",
        db_index=False,  # the partial index job_owner below: ownerless jobs stay out of it
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-due_at"]
        indexes = [
            models.Index(fields=["status", "due_at"], name="job_status_due"),
            models.Index(fields=["due_at"], name="job_due"),
            models.Index(fields=["action", "due_at"], name="job_action_due"),
            # Only owned jobs are in it ("owner = X" implies its condition, on both
            # databases): a job scheduled by a program has none, and a row that changes
            # status (twice a run) would otherwise add an entry to it each time.
            models.Index(fields=["owner"], name="job_owner", condition=Q(owner__isnull=False)),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="job_max_attempts_gte_1"),
            models.CheckConstraint(
                condition=Q(schedule_type=ScheduleType.ONCE)
                | Q(schedule_type=ScheduleType.RATE, rate_every__gte=1)
                | (Q(schedule_type=ScheduleType.CRON) & ~Q(cron="")),
                name="job_rule_complete",
            ),
            models.CheckConstraint(
                condition=Q(ends_at__isnull=True)
                | Q(starts_at__isnull=True)
                | Q(ends_at__gt=F("starts_at")),
                name="job_ends_after_starts",
            ),
            models.CheckConstraint(
                condition=Q(poll_interval__isnull=True)
                | Q(poll_max_checks__isnull=False)
                | Q(poll_timeout__isnull=False),
                name="job_poll_has_limit",
            ),
            models.CheckConstraint(
                condition=Q(pause_after_failures__isnull=True) | Q(pause_after_failures__gte=1),
                name="job_pause_after_failures_gte_1",
            ),
        ]

    def __str__(self) -> str:
        return self.name or f"{self.action} #{self.pk}"

    @property
    def is_recurring(self) -> bool:
        return self.schedule_type != ScheduleType.ONCE


class Classroom(models.Model):
    """A class with a start and an end: recording starts, pings while live, stops."""

    title = models.CharField(max_length=200)
    start = models.DateTimeField()
    end = models.DateTimeField()
    recording_service_ref = models.CharField(
        max_length=200, help_text="The recording service's identifier for this class's stream."
    )
    live_ping_interval = models.PositiveIntegerField(
        default=60, help_text="Seconds between live pings while the class runs."
    )
    time_zone = models.CharField(max_length=64, default="UTC")
    precision = models.CharField(
        max_length=16, choices=Precision.choices, default=Precision.SECONDS
    )
    status = models.CharField(
        max_length=16, choices=PlanStatus.choices, default=PlanStatus.SCHEDULED, editable=False
    )
    paused_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the classroom was paused: its steps not yet run are held (their "
        "timers disarmed) until it is resumed. Empty once resumed.",
    )
    pause_reason = models.CharField(
        max_length=PAUSE_REASON_MAX, blank=True, editable=False, help_text="Why it was paused."
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="classrooms",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-start"]
        indexes = [
            models.Index(fields=["status", "start"], name="classroom_status_start"),
            models.Index(fields=["start"], name="classroom_start"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(end__gt=F("start")), name="classroom_end_after_start"
            ),
            models.CheckConstraint(
                condition=Q(live_ping_interval__gte=1), name="classroom_ping_interval_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.title


class StepState(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    PAUSED = "paused", "Paused (held, no timer, until its owner is resumed)"


PENDING_STATES = (StepState.SCHEDULED, StepState.QUEUED)
FINAL_STATES = (StepState.SUCCEEDED, StepState.FAILED, StepState.CANCELLED)
#: Steps that have not run yet: released (pending) or held by a pause.
WAITING_STATES = (*PENDING_STATES, StepState.PAUSED)


class ArmState(models.TextChoices):
    UNARMED = "unarmed", "Not armed yet"
    ARMED = "armed", "Armed"
    ERROR = "error", "Arm failed (retried by the sweep)"
    DISARMED = "disarmed", "Disarmed"


class Step(models.Model):
    """One timed action of a job or a classroom, and the engine timer that releases it.

    `version` is the fence: every reschedule or cancel bumps it, and a message
    carrying another version is skipped by the worker.
    """

    # Both owner links are indexed below, not here: a job's steps by the unique
    # (job, sequence, poll_number) index, a classroom's by a partial index holding only
    # classroom steps. A step row changes state three times a run, and each change adds
    # an entry to every index whose condition holds.
    job = models.ForeignKey(
        Job,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="steps",
        db_index=False,
    )
    classroom = models.ForeignKey(
        Classroom,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="steps",
        db_index=False,
    )
    execution = models.ForeignKey(
        "Execution",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="steps",
        db_index=False,  # the partial index step_execution below: only workflow steps
    )
    action = models.CharField(max_length=64)
    state_name = models.CharField(
        max_length=80, blank=True, help_text="A workflow step's state (a Task or a Wait)."
    )
    payload = models.JSONField(
        null=True,
        blank=True,
        help_text="A workflow Task's payload, rendered from the execution's data when the "
        "state was entered (a job's steps read their job's payload).",
    )
    sequence = models.PositiveIntegerField(
        default=0,
        help_text="Order of the step within its classroom (ping number), job (occurrence) "
        "or execution (state entered).",
    )
    poll_number = models.PositiveIntegerField(
        default=0, help_text="A polling job's check number within its occurrence (0: the first)."
    )
    recurring = models.BooleanField(
        default=False,
        help_text="An occurrence of a recurring job: taking or finishing it plans the next.",
    )
    due_at = models.DateTimeField(help_text="When the engine releases this step (UTC).")
    version = models.PositiveIntegerField(default=1)
    state = models.CharField(max_length=16, choices=StepState.choices, default=StepState.SCHEDULED)
    precision = models.CharField(
        max_length=16, choices=Precision.choices, default=Precision.SECONDS
    )
    engine = models.CharField(
        max_length=32, help_text="Engine chosen for this step by its precision (SCHEDULES_ENGINES)."
    )
    external_ref = models.CharField(
        max_length=2048, blank=True, help_text="The engine's reference for the armed timer."
    )
    arm_state = models.CharField(max_length=16, choices=ArmState.choices, default=ArmState.UNARMED)
    armed_version = models.PositiveIntegerField(null=True, blank=True)
    armed_engine = models.CharField(
        max_length=32, blank=True, help_text="Engine holding the armed timer (disarmed there)."
    )
    armed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the engine last took the timer (the engine's lateness counts from "
        "the later of this and the due time).",
    )
    arm_error = models.TextField(blank=True)
    arm_failures = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Attempts started so far.")
    max_attempts = models.PositiveSmallIntegerField(default=3)
    queued_at = models.DateTimeField(
        null=True, blank=True, help_text="When the step was last handed to the queue."
    )
    holder = models.CharField(
        max_length=200,
        blank=True,
        help_text="The process holding the step (a dispatcher publishing it or a worker "
        "running it); it renews the lease while it lives.",
    )
    lease_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The holder's claim lapses at this time unless renewed; then the step is "
        "released again (a takeover if it was running).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["due_at"]
        indexes = [
            # The admin's filter by state (and the overview's counts of upcoming steps), by
            # due time and then id, the admin list's order: so that PostgreSQL reads a
            # state's newest steps here instead of walking step_due backwards past every
            # pending step (its estimates cannot see that finished steps are all in the
            # past; migration 0014).
            models.Index(fields=["state", "due_at", "id"], name="step_state_due_id"),
            # The dispatcher's "next due steps" of an engine: both equalities and the order
            # in one index, so that a planner seeks it with or without statistics (right
            # after a bulk load nothing has analysed the table yet).
            models.Index(fields=["state", "engine", "due_at"], name="step_state_engine_due"),
            # The arm sweep: steps waiting for their engine, by due time, one equality
            # seek per arm state. Not a partial index: SQLite uses a partial index only
            # when the query's own literals imply its condition, and queries bind values.
            models.Index(fields=["state", "arm_state", "due_at"], name="step_state_arm_due"),
            models.Index(fields=["due_at"], name="step_due"),
            # The admin's action and arm state filters, in the list's order: a seek for
            # any value, where a rare one (arm failed, an action few steps have) read
            # every step (0.5-1 s at 1,000,000 steps on SQLite; migration 0014).
            models.Index(fields=["action", "due_at", "id"], name="step_action_due_id"),
            models.Index(fields=["arm_state", "due_at", "id"], name="step_arm_due_id"),
            models.Index(
                fields=["classroom"],
                name="step_classroom",
                condition=Q(classroom__isnull=False),
            ),
            models.Index(
                fields=["execution", "sequence"],
                name="step_execution",
                condition=Q(execution__isnull=False),
            ),
            # The recovery pass: leases that lapsed. Only held steps are in it (a comparison
            # on lease_until implies its condition, so SQLite uses it with bound values too).
            models.Index(
                fields=["lease_until"], name="step_lease", condition=Q(lease_until__isnull=False)
            ),
            # The recovery pass's steps in the broker, by time queued: only queued steps are
            # in it (a comparison on queued_at implies its condition, as above). Statistics
            # that say most steps share a state would otherwise make SQLite scan the table.
            models.Index(
                fields=["queued_at"], name="step_queued", condition=Q(queued_at__isnull=False)
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(job__isnull=False) & Q(classroom__isnull=True) & Q(execution__isnull=True)
                )
                | (Q(job__isnull=True) & Q(classroom__isnull=False) & Q(execution__isnull=True))
                | (Q(job__isnull=True) & Q(classroom__isnull=True) & Q(execution__isnull=False)),
                name="step_has_one_owner",
            ),
            models.CheckConstraint(condition=Q(version__gte=1), name="step_version_gte_1"),
            # One step per occurrence and check of a job; its index also serves "the job's
            # latest steps" without reading all of a long-running recurring job's steps.
            # (Classroom steps have no job: NULLs never collide in a unique index.)
            models.UniqueConstraint(
                fields=["job", "sequence", "poll_number"], name="step_job_occurrence_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"step {self.pk} v{self.version} {self.action} @ {self.due_at:%Y-%m-%d %H:%M:%S} UTC"

    @property
    def owner_label(self) -> str:
        if self.job_id:
            return f"job {self.job_id}"
        if self.execution_id:
            return f"execution {self.execution_id}"
        return f"classroom {self.classroom_id}"


class RunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    RETRYING = "retrying", "Failed, will retry"
    FAILED = "failed", "Failed"
    NOT_DONE = "not_done", "Not done yet (checks again)"
    SKIPPED = "skipped", "Skipped"
    ABANDONED = "abandoned", "Abandoned (worker lost)"


class Run(models.Model):
    """One attempt to run a step (or one skipped delivery), as the worker saw it."""

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="runs")
    # Denormalized owner links so runs list inline on their job or classroom.
    job = models.ForeignKey(
        Job,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="runs",
        db_index=False,  # served by the (job, started_at) index below
    )
    classroom = models.ForeignKey(
        Classroom,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="runs",
        db_index=False,  # the partial index run_classroom below: only classroom runs
    )
    execution = models.ForeignKey(
        "Execution",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="runs",
        db_index=False,  # the partial index run_execution below: only workflow runs
    )
    action = models.CharField(max_length=64)
    engine = models.CharField(max_length=32, blank=True, help_text="Engine that released it.")
    version = models.PositiveIntegerField()
    attempt = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=16, choices=RunStatus.choices)
    due_at = models.DateTimeField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    lateness = models.DurationField(
        null=True, blank=True, help_text="Start of the action minus its due time."
    )
    engine_lateness = models.DurationField(
        null=True,
        blank=True,
        help_text="Start of the action minus the later of its due time and the moment its "
        "engine took the timer: the engine's own lateness. A job saved after its due time "
        "is late by the first, not by this.",
    )
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    uncertain = models.BooleanField(
        default=False,
        help_text="An earlier attempt was lost mid-run and may already have had its effect.",
    )
    note = models.CharField(max_length=300, blank=True)
    worker = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["started_at"], name="run_started"),
            models.Index(fields=["status", "started_at"], name="run_status_started"),
            # Per-engine lateness over a recent window (admin monitoring).
            models.Index(fields=["engine", "started_at"], name="run_engine_started"),
            # The admin's action filter, in the list's order (see step_action_due_id).
            models.Index(fields=["action", "started_at", "id"], name="run_action_started_id"),
            # A job's newest runs (its page, its API detail, the changelist's last lateness)
            # without reading all runs of a long-running recurring job.
            models.Index(fields=["job", "started_at"], name="run_job_started"),
            models.Index(
                fields=["classroom"], name="run_classroom", condition=Q(classroom__isnull=False)
            ),
            models.Index(
                fields=["execution"], name="run_execution", condition=Q(execution__isnull=False)
            ),
            # The newest uncertain runs (the admin overview, the runs list's filter): only
            # uncertain runs are in it, so it stays small and a healthy system, with none,
            # does not read every run to find out (migration 0013).
            models.Index(
                fields=["started_at"], name="run_uncertain_started", condition=Q(uncertain=True)
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of step {self.step_id} ({self.status})"


class StreamCheckpoint(models.Model):
    """How far forward_ttl_stream has read one shard of a DynamoDB stream."""

    stream_arn = models.CharField(max_length=400)
    shard_id = models.CharField(max_length=200)
    sequence_number = models.CharField(
        max_length=64, blank=True, help_text="Last record forwarded (resume after it)."
    )
    finished = models.BooleanField(default=False, help_text="The shard is closed and read.")
    failing_sequence_number = models.CharField(
        max_length=64,
        blank=True,
        help_text="The record whose send keeps failing, holding the shard back ('' if none).",
    )
    failed_tries = models.PositiveIntegerField(
        default=0,
        help_text="Passes in a row whose send of that record failed; at "
        "SCHEDULES_TTL_STREAM_MAX_TRIES the reader moves past it.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["stream_arn", "shard_id"], name="checkpoint_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.shard_id} @ {self.sequence_number or 'start'}"


class ProcessRole(models.TextChoices):
    DISPATCHER = "dispatcher", "Dispatcher (run_scheduler)"
    WORKER = "worker", "Celery worker"


class Heartbeat(models.Model):
    """A live dispatcher or worker process, written every SCHEDULES_HEARTBEAT_INTERVAL.

    The health checks read it: a role whose newest beat is older than
    SCHEDULES_HEARTBEAT_STALE_AFTER is down. A process deletes its row when it stops
    cleanly; the sweep forgets rows silent for a day.
    """

    name = models.CharField(max_length=200, unique=True, help_text="role:host:pid")
    role = models.CharField(max_length=16, choices=ProcessRole.choices)
    started_at = models.DateTimeField()
    beat_at = models.DateTimeField(help_text="The newest beat (UTC).")
    info = models.JSONField(default=dict, blank=True, help_text="What the process reports.")

    class Meta:
        indexes = [models.Index(fields=["role", "beat_at"], name="heartbeat_role_beat")]

    def __str__(self) -> str:
        return self.name


class IdempotencyRecord(models.Model):
    """The first answer to a create made with an Idempotency-Key, replayed for retries."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    key = models.CharField(max_length=255)
    endpoint = models.CharField(max_length=200, help_text="Method and path of the request.")
    request_hash = models.CharField(max_length=64, help_text="SHA-256 of the request body.")
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key", "endpoint"], name="idempotency_unique"),
        ]
        indexes = [models.Index(fields=["expires_at"], name="idempotency_expires")]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.key}"


class Workflow(models.Model):
    """A named definition of states (schedules/workflow_language.py), in its current
    version. Every edit of the definition is kept as a ``WorkflowVersion``: an
    execution runs the version it started with, whatever is saved after."""

    name = models.SlugField(
        max_length=80,
        unique=True,
        help_text="Letters, digits, hyphens and underscores; how commands and the API name it.",
    )
    description = models.TextField(blank=True)
    definition = models.JSONField(
        help_text="StartAt and States, in the workflow language (docs/workflows.md)."
    )
    version = models.PositiveIntegerField(
        default=1, help_text="Goes up by one each time the definition changes."
    )
    precision = models.CharField(
        max_length=16,
        choices=Precision.choices,
        default=Precision.SECONDS,
        help_text="The precision of its steps (Tasks and Waits): it chooses their engine.",
    )
    overlap_policy = models.CharField(
        max_length=8,
        choices=OverlapPolicy.choices,
        default=OverlapPolicy.SKIP,
        help_text="A start while an execution of this workflow is still running: skip it "
        "(refused, or skipped when its rule starts it), or run it alongside.",
    )
    schedule = models.OneToOneField(
        Job,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="scheduled_workflow",
        help_text="The recurring job that starts this workflow by its rule (action "
        "workflow_start), if it has one.",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="workflows",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.CheckConstraint(condition=Q(version__gte=1), name="workflow_version")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class WorkflowVersion(models.Model):
    """One version of a workflow's definition, as it was saved; never changed."""

    workflow = models.ForeignKey(
        Workflow,
        on_delete=models.CASCADE,
        related_name="versions",
        db_index=False,  # the unique (workflow, version) index serves it
    )
    version = models.PositiveIntegerField()
    definition = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workflow", "-version"]
        constraints = [
            # (its index also serves the workflow's versions, newest first)
            models.UniqueConstraint(fields=["workflow", "version"], name="workflow_version_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow.name} v{self.version}"  # (lists select the workflow with it)


class ExecutionStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class Execution(models.Model):
    """One run of a workflow's definition, at the version it started with.

    Each Task and Wait it enters is a step (``Step.execution``), released by an engine
    and run by the worker like any other; the record of a step's outcome moves the
    execution on, in the same transaction (schedules/services/executions.py).
    """

    workflow = models.ForeignKey(
        Workflow,
        on_delete=models.CASCADE,
        related_name="executions",
        db_index=False,  # the (workflow, status) index below serves it
    )
    version = models.ForeignKey(
        WorkflowVersion,
        on_delete=models.PROTECT,
        related_name="executions",
        help_text="The definition this execution runs (saving a new one does not change it).",
    )
    start_key = models.CharField(
        max_length=255,
        blank=True,
        help_text="Starting again with the same key returns this execution instead of "
        "starting another.",
    )
    status = models.CharField(
        max_length=16, choices=ExecutionStatus.choices, default=ExecutionStatus.RUNNING
    )
    state_name = models.CharField(
        max_length=80, blank=True, help_text="The state it is in, or the one it ended in."
    )
    input = models.JSONField(default=dict, blank=True, help_text="The data it started with.")
    data = models.JSONField(
        default=dict,
        blank=True,
        help_text="The input, and each Task's result under the Task's name.",
    )
    history = models.JSONField(
        default=list,
        blank=True,
        help_text="The states entered, in order, with when and by which way out of the "
        "state before (the latest 1,000).",
    )
    transitions = models.PositiveIntegerField(
        default=0, help_text="States entered so far (the history keeps the latest 1,000)."
    )
    error = models.CharField(max_length=256, blank=True)
    cause = models.TextField(blank=True)
    started_by = models.ForeignKey(
        Job,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="started_executions",
        db_index=False,  # partial index execution_job below
        help_text="The job whose occurrence started it (the workflow's rule), if any.",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="workflow_executions",
        db_index=False,  # partial index execution_owner below
    )
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["workflow", "status"], name="execution_workflow_status"),
            models.Index(fields=["status", "started_at"], name="execution_status_started"),
            models.Index(fields=["started_at"], name="execution_started"),
            models.Index(
                fields=["owner"], name="execution_owner", condition=Q(owner__isnull=False)
            ),
            models.Index(
                fields=["started_by"], name="execution_job", condition=Q(started_by__isnull=False)
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "start_key"],
                condition=~Q(start_key=""),
                name="execution_start_key_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"execution {self.pk} of workflow {self.workflow_id}"


class NotificationEvent(models.TextChoices):
    """The signals of schedules/events.py a notifier can be told about."""

    RUN_FINISHED = "run_finished", "Run finished"
    JOB_FAILED = "job_failed", "Job failed"
    RUN_UNCERTAIN = "run_uncertain", "Run uncertain"
    EXECUTION_FAILED = "execution_failed", "Workflow execution failed"


class Notifier(models.TextChoices):
    MAIL = "mail", "Mail"
    WEBHOOK = "webhook", "Webhook"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending (queued or retrying)"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class NotificationDelivery(models.Model):
    """One alert to one target (schedules/notifications): a mail to the admins or the
    managers, or a webhook POST. Written by a signal receiver, sent by a Celery task that
    records each attempt here; never part of a job's run."""

    event = models.CharField(max_length=32, choices=NotificationEvent.choices)
    notifier = models.CharField(max_length=16, choices=Notifier.choices)
    target = models.CharField(
        max_length=2000, help_text="The webhook's URL, or admins or managers for mail."
    )
    job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="notifications"
    )
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="notifications"
    )
    execution = models.ForeignKey(
        Execution,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="notifications",
    )
    payload = models.JSONField(help_text="What is sent: the webhook's JSON body, the mail's facts.")
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Attempts made so far.")
    last_error = models.TextField(blank=True, help_text="Why the latest attempt failed.")
    response_status = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The webhook's HTTP status at the latest attempt."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When the next attempt is due (a retry with backoff)."
    )
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "notification deliveries"
        indexes = [
            models.Index(fields=["created_at"], name="delivery_created"),
            models.Index(fields=["status", "created_at"], name="delivery_status_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(notifier="webhook") | Q(target__in=["admins", "managers"]),
                name="delivery_mail_target",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} by {self.notifier} to {self.target} ({self.status})"
