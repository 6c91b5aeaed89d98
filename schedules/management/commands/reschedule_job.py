"""reschedule_job: move a pending one-off job to a new due time, or change a recurring
job's rule."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from schedules import services
from schedules.models import ScheduleType, Step
from schedules.selectors import describe_schedule

from ._shared import (
    DUE_HELP,
    EXIT_STATUS,
    ServiceCommand,
    add_rule_options,
    get_job,
    iso,
    job_as_dict,
    parse_due,
    rule_options,
    validation_failed,
    write_json,
)


class Command(ServiceCommand):
    help = (
        "Move a scheduled one-off job to a new due time (--due). Its step gets a new version: "
        "the old timer is disarmed and a message already on its way is skipped, so the job "
        "runs once, at the new time. Only a job that has not run yet can be rescheduled. For "
        "a recurring job, change its rule instead (--every or --cron, --starts, --ends or "
        "--no-end, --max-runs): its next occurrence is re-planned from the new rule and its "
        "runs so far keep their history. Prints what changed, or the job as JSON with --json. "
        + EXIT_STATUS
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("id", type=int, metavar="ID", help="Job id.")
        when = parser.add_mutually_exclusive_group()
        when.add_argument("--due", metavar="ISO8601", help="One-off jobs. " + DUE_HELP)
        when.add_argument(
            "--every", metavar="RATE", help="Recurring jobs: a new rate, e.g. '10 minutes'."
        )
        when.add_argument(
            "--cron", metavar="EXPR", help="Recurring jobs: a new cron rule, e.g. '0 9 * * 1-5'."
        )
        add_rule_options(parser, changing=True)
        pause = parser.add_mutually_exclusive_group()
        pause.add_argument(
            "--pause-after-failures",
            type=int,
            metavar="N",
            help="Recurring jobs: pause the job after N failed occurrences in a row (N >= 1).",
        )
        pause.add_argument(
            "--no-pause-after-failures",
            action="store_true",
            help="Recurring jobs: never pause the job after failures.",
        )
        parser.add_argument("--json", action="store_true", help="Print the job as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        job = get_job(options["id"])
        rule = rule_options(options)
        policy: dict[str, Any] = {}
        if options["pause_after_failures"] is not None:
            policy["pause_after_failures"] = options["pause_after_failures"]
        elif options["no_pause_after_failures"]:
            policy["pause_after_failures"] = None
        if options["due"] and policy:
            raise CommandError(
                "--due moves a one-off job; --pause-after-failures applies to a recurring one. "
                "Give one of them."
            )
        if not rule and not policy and not options["due"]:
            raise CommandError(
                "Give --due for a one-off job, or a rule change (--every, --cron, --starts, "
                "--ends, --no-end, --max-runs, --pause-after-failures) for a recurring one."
            )
        if rule.get("schedule_type") == ScheduleType.RATE:
            rule["cron"] = ""
        elif rule.get("schedule_type") == ScheduleType.CRON:
            rule.update(rate_every=None, rate_unit="")
        try:
            if options["due"]:
                job = services.job_reschedule(job=job, due_at=parse_due(options["due"]))
            else:
                job = services.job_update(job=job, **rule, **policy)
        except ValidationError as exc:
            raise validation_failed(
                self, exc, as_json=options["json"], what=f"Job {job.pk} was not rescheduled"
            ) from exc
        if options["json"]:
            write_json(self, job_as_dict(job))
            return
        step = Step.objects.filter(job=job).order_by("-sequence", "-poll_number").first()
        version = f" (step version {step.version})" if step else ""
        words = f" ({describe_schedule(job)})" if job.is_recurring else ""
        self.stdout.write(
            self.style.SUCCESS(f"rescheduled job {job.pk} to {iso(job.due_at)}{version}{words}")
        )
