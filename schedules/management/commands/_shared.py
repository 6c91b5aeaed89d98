"""What the job and workflow commands share: parsing, error reporting and the JSON shape of a job.

Not a command (Django skips modules whose name starts with ``_``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from schedules.models import (
    Execution,
    Job,
    MissedPolicy,
    OverlapPolicy,
    PlanStatus,
    Precision,
    Run,
    ScheduleType,
    Step,
    Workflow,
)
from schedules.selectors import describe_schedule, job_next_occurrences
from schedules.services import Busy

EXIT_STATUS = (
    "Exit status: 0 on success; 1 on an error (the message on stderr says what to do; "
    "a refused write stores nothing); 2 on bad usage (unknown option, missing argument)."
)
DUE_HELP = (
    "When the job is due: ISO 8601 with a time zone, e.g. 2026-12-01T09:00:00+01:00 or "
    "2026-12-01T08:00:00Z. A value without a time zone is refused."
)


def parse_due(value: str, *, field: str = "due_at") -> dt.datetime:
    """An aware datetime from ISO 8601, or a CommandError naming the field and the rule."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(
            f"{field}: {value!r} is not an ISO 8601 date and time; "
            "use e.g. 2026-12-01T09:00:00+01:00 or 2026-12-01T08:00:00Z"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise CommandError(
            f"{field}: a time zone is required ({value!r} has none, and a naive date and time "
            "is ambiguous); add an offset, e.g. "
            f"{parsed.isoformat()}+01:00, or Z for UTC"
        )
    return parsed


def parse_json(text: str, *, field: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{field}: not valid JSON ({exc}); give a JSON object") from None


def read_json_file(path: str, *, field: str) -> Any:
    """JSON from a file, or from standard input for ``-``."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"{field}: cannot read {path!r} ({exc.strerror})") from None
    return parse_json(text, field=field)


def error_dict(exc: ValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return {field: list(messages) for field, messages in exc.message_dict.items()}
    return {"__all__": list(exc.messages)}


def error_lines(exc: ValidationError) -> str:
    return "\n".join(
        f"  {field}: {message}"
        for field, messages in error_dict(exc).items()
        for message in messages
    )


class ServiceCommand(BaseCommand):
    """A command that writes through the services: a database that keeps reporting a
    conflict (``services.Busy``: nothing was written) ends it with a clear error."""

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except Busy as exc:
            raise CommandError(f"{exc} (nothing was stored)") from exc


def validation_failed(
    command: BaseCommand, exc: ValidationError, *, as_json: bool, what: str
) -> CommandError:
    """The error to raise for a write the services refused (and the JSON of it for scripts)."""
    if as_json:
        command.stdout.write(json.dumps({"errors": error_dict(exc)}, indent=2))
    return CommandError(f"{what}; nothing was stored:\n{error_lines(exc)}")


def get_job(job_id: int) -> Job:
    job = Job.objects.select_related("owner").filter(pk=job_id).first()
    if job is None:
        raise CommandError(
            f"No job with id {job_id}; `python manage.py list_jobs` shows the existing ones."
        )
    return job


def each_job(
    command: BaseCommand,
    ids: list[int],
    service: Callable[[Job], Job],
    *,
    done: str,
    unchanged: Callable[[Job], bool],
    as_json: bool,
) -> None:
    """Call ``service`` on each job by id, on its own (the others are still done when one
    fails); print a line per job, or with ``as_json`` ``{done: [ids], "unchanged": [ids],
    "errors": [{id, error}]}``; end with a CommandError listing the jobs refused."""
    changed: list[int] = []
    same: list[int] = []
    errors: list[dict[str, Any]] = []
    for job_id in ids:
        try:
            job = get_job(job_id)
            was = unchanged(job)
            service(job)
        except CommandError as exc:
            errors.append({"id": job_id, "error": {"id": [str(exc)]}})
            continue
        except ValidationError as exc:
            errors.append({"id": job_id, "error": error_dict(exc)})
            continue
        except Busy as exc:
            errors.append({"id": job_id, "error": {"database": [str(exc)]}})
            continue
        (same if was else changed).append(job_id)
        if not as_json:
            text = f"job {job_id} was already {done}" if was else f"{done} job {job_id}"
            command.stdout.write(command.style.SUCCESS(text))
    if as_json:
        write_json(command, {done: changed, "unchanged": same, "errors": errors})
    if errors:
        raise jobs_refused(errors, total=len(ids), done=done)


def jobs_refused(errors: list[dict[str, Any]], *, total: int, done: str) -> CommandError:
    """The error that ends a command some of whose jobs were refused: one line per field
    and message of each ``{id, error}``."""
    lines = "\n".join(
        f"  job {e['id']}: {field}: {message}"
        for e in errors
        for field, messages in e["error"].items()
        for message in messages
    )
    return CommandError(f"{len(errors)} of {total} job(s) not {done}:\n{lines}")


def get_owner(username: str | None) -> Any:
    if not username:
        return None
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(
            f"owner: no user named {username!r}; check the spelling or create the user "
            "(python manage.py createsuperuser)."
        )
    return user


RATE_UNITS = {
    "s": "seconds",
    "sec": "seconds",
    "second": "seconds",
    "seconds": "seconds",
    "m": "minutes",
    "min": "minutes",
    "minute": "minutes",
    "minutes": "minutes",
    "h": "hours",
    "hour": "hours",
    "hours": "hours",
    "d": "days",
    "day": "days",
    "days": "days",
}
EVERY_RE = re.compile(r"\A\s*(\d+)\s*([a-z]+)\s*\Z")


def parse_every(value: str) -> tuple[int, str]:
    """``"5 minutes"``, ``"30s"``, ``"2h"`` or ``"1 day"`` as (rate_every, rate_unit)."""
    match = EVERY_RE.match(value.lower())
    if match is None or match.group(2) not in RATE_UNITS:
        raise CommandError(
            f"every: {value!r} is not a rate; use a whole number and a unit, e.g. '5 minutes', "
            "'30s', '2h' or '1 day' (units: seconds, minutes, hours, days)"
        )
    return int(match.group(1)), RATE_UNITS[match.group(2)]


def add_rule_options(parser: CommandParser, *, changing: bool = False) -> None:
    """A recurring job's rule bounds: start, end, maximum runs (and, when ``changing``
    an existing rule, dropping its end)."""
    parser.add_argument(
        "--starts",
        metavar="ISO8601",
        help="Recurring jobs: when the rule begins (default: now); a rate counts from it. "
        "ISO 8601 with a time zone.",
    )
    ends = parser.add_mutually_exclusive_group()
    ends.add_argument(
        "--ends", metavar="ISO8601", help="Recurring jobs: no occurrence after this time."
    )
    if changing:
        ends.add_argument("--no-end", action="store_true", help="Recurring jobs: drop the end.")
    parser.add_argument(
        "--max-runs",
        type=int,
        metavar="N",
        help="Recurring jobs: the job ends after N runs in all.",
    )


def add_job_options(parser: CommandParser) -> None:
    """Options every scheduling command takes besides its payload."""
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--due", metavar="ISO8601", help="Run once, at this time. " + DUE_HELP)
    when.add_argument(
        "--every",
        metavar="RATE",
        help="Run by a rate rule, e.g. '5 minutes', '30s', '2h' or '1 day', counted in elapsed "
        "time from --starts (at least SCHEDULES_MIN_RATE_SECONDS, 1 s by default).",
    )
    when.add_argument(
        "--cron",
        metavar="EXPR",
        help="Run by a 5-field cron rule read in --time-zone, e.g. '0 9 * * 1-5' (09:00 on "
        "weekdays); daylight-saving changes neither skip nor double a run.",
    )
    add_rule_options(parser)
    parser.add_argument(
        "--missed",
        choices=MissedPolicy.values,
        default=MissedPolicy.RUN_ONCE,
        help="Recurring jobs, when behind (a later occurrence already due as one is taken): "
        "run_once runs once for all of them (default), run_all runs each, skip runs none.",
    )
    parser.add_argument(
        "--overlap",
        choices=OverlapPolicy.values,
        default=OverlapPolicy.SKIP,
        help="Recurring jobs, an occurrence due while the previous one is going: skip it "
        "(default) or allow it to run alongside.",
    )
    parser.add_argument(
        "--pause-after-failures",
        type=int,
        metavar="N",
        help="Recurring jobs: pause the job after N failed occurrences in a row (N >= 1; a "
        "success starts the count again); resume it with resume_job. Default: never.",
    )
    parser.add_argument(
        "--poll-interval",
        type=int,
        metavar="SECONDS",
        help="Actions that poll (http_check): seconds between checks while not done.",
    )
    parser.add_argument(
        "--poll-max-checks",
        type=int,
        metavar="N",
        help="Actions that poll: most checks, the first included (this or --poll-timeout is "
        "required with --poll-interval).",
    )
    parser.add_argument(
        "--poll-timeout",
        type=int,
        metavar="SECONDS",
        help="Actions that poll: seconds after the first check by which the action must be done.",
    )
    parser.add_argument(
        "--precision",
        choices=Precision.values,
        default=Precision.SECONDS,
        help="seconds (SCHEDULES_ENGINE_SECONDS), minute (SCHEDULES_ENGINE_MINUTE) or "
        "relaxed (minutes to hours, SCHEDULES_ENGINE_RELAXED). Default: seconds.",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=None,
        metavar="N",
        help="Attempts before the job is failed (default: SCHEDULES_DEFAULT_MAX_ATTEMPTS).",
    )
    parser.add_argument("--name", default="", help="A label shown in the admin and list_jobs.")
    parser.add_argument(
        "--time-zone",
        default="UTC",
        metavar="ZONE",
        help="IANA zone, e.g. Europe/Paris (default: UTC): --cron is read in it, and the job "
        "is displayed in it.",
    )
    parser.add_argument("--owner", metavar="USERNAME", help="User who owns the job.")
    parser.add_argument(
        "--webhook-url",
        default="",
        metavar="URL",
        help="Also POST the job's alerts here (docs/alerts.md); its host must be in "
        "SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS.",
    )
    parser.add_argument(
        "--json", action="store_true", help="Print the job as JSON instead of its id."
    )


def rule_options(options: dict[str, Any]) -> dict[str, Any]:
    """The schedule fields given by --every, --cron and add_rule_options' options."""
    fields: dict[str, Any] = {}
    if options.get("every"):
        fields["schedule_type"] = ScheduleType.RATE
        fields["rate_every"], fields["rate_unit"] = parse_every(options["every"])
    elif options.get("cron"):
        fields.update(schedule_type=ScheduleType.CRON, cron=options["cron"])
    if options.get("starts"):
        fields["starts_at"] = parse_due(options["starts"], field="starts_at")
    if options.get("ends"):
        fields["ends_at"] = parse_due(options["ends"], field="ends_at")
    elif options.get("no_end"):
        fields["ends_at"] = None
    if options.get("max_runs") is not None:
        fields["max_runs"] = options["max_runs"]
    return fields


def job_options(options: dict[str, Any]) -> dict[str, Any]:
    """The job_schedule keyword arguments given by add_job_options' options."""
    return {
        "due_at": parse_due(options["due"]) if options["due"] else None,
        **rule_options(options),
        "missed_policy": options["missed"],
        "overlap_policy": options["overlap"],
        "poll_interval": options["poll_interval"],
        "poll_max_checks": options["poll_max_checks"],
        "poll_timeout": options["poll_timeout"],
        "pause_after_failures": options["pause_after_failures"],
        "precision": options["precision"],
        "max_attempts": options["max_attempts"],
        "name": options["name"],
        "time_zone": options["time_zone"],
        "owner": get_owner(options["owner"]),
        "webhook_url": options["webhook_url"],
    }


def iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value is not None else None


def local_time(value: dt.datetime, zone: str) -> str:
    """``value`` in the job's zone, for people (storage and JSON stay UTC)."""
    try:
        return value.astimezone(zoneinfo.ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return ""


STEPS_SHOWN = 100


def step_as_dict(step: Step) -> dict[str, Any]:
    return {
        "id": step.pk,
        "sequence": step.sequence,
        "poll_number": step.poll_number,
        "version": step.version,
        "state": step.state,
        "engine": step.engine,
        "arm_state": step.arm_state,
        "external_ref": step.external_ref,
        "due_at": iso(step.due_at),
        "attempts": step.attempts,
    }


def job_as_dict(job: Job, *, payload: bool = False) -> dict[str, Any]:
    """A job as scripts read it, with its steps (reloaded: the sync ran after the commit)."""
    job = Job.objects.select_related("owner").get(pk=job.pk)
    data: dict[str, Any] = {
        "id": job.pk,
        "name": job.name,
        "action": job.action,
        "status": job.status,
        "precision": job.precision,
        "due_at": iso(job.due_at),
        "time_zone": job.time_zone,
        "schedule_type": job.schedule_type,
        "schedule": describe_schedule(job),
        "max_attempts": job.max_attempts,
        "owner": job.owner.get_username() if job.owner else None,
        "created_at": iso(job.created_at),
    }
    if job.is_recurring:
        data.update(
            rate_every=job.rate_every,
            rate_unit=job.rate_unit,
            cron=job.cron,
            starts_at=iso(job.starts_at),
            ends_at=iso(job.ends_at),
            max_runs=job.max_runs,
            run_count=job.run_count,
            missed_policy=job.missed_policy,
            overlap_policy=job.overlap_policy,
            next_occurrences=[iso(t) for t in job_next_occurrences(job, count=5)],
        )
    if job.poll_interval is not None:
        data.update(
            poll_interval=job.poll_interval,
            poll_max_checks=job.poll_max_checks,
            poll_timeout=job.poll_timeout,
        )
    if job.is_recurring:
        data.update(
            pause_after_failures=job.pause_after_failures,
            consecutive_failures=job.consecutive_failures,
        )
    if job.status == PlanStatus.PAUSED or job.paused_at is not None:
        data.update(paused_at=iso(job.paused_at), pause_reason=job.pause_reason)
    if job.webhook_url:
        data["webhook_url"] = job.webhook_url
    if payload:
        data["payload"] = job.payload
    data["steps"] = [step_as_dict(step) for step in latest_steps(job)]
    return data


def latest_steps(job: Job) -> list[Step]:
    """The job's latest STEPS_SHOWN steps, latest occurrence and check first (one index range)."""
    return list(Step.objects.filter(job=job).order_by("-sequence", "-poll_number")[:STEPS_SHOWN])


def write_json(command: BaseCommand, data: Any) -> None:
    command.stdout.write(json.dumps(data, indent=2))


def get_workflow(name: str) -> Workflow:
    workflow = Workflow.objects.filter(name=name).first()
    if workflow is None:
        raise CommandError(
            f"No workflow named {name!r}; save one with `python manage.py save_workflow NAME "
            "FILE`, or see the existing ones in the admin (Schedules > Workflows)."
        )
    return workflow


def execution_as_dict(execution: Execution, *, detail: bool = False) -> dict[str, Any]:
    """An execution as scripts read it; with ``detail``, its data, history, steps, runs."""
    data: dict[str, Any] = {
        "id": execution.pk,
        "workflow": execution.workflow.name,
        "version": execution.version.version,
        "status": execution.status,
        "state": execution.state_name,
        "start_key": execution.start_key,
        "error": execution.error,
        "cause": execution.cause,
        "started_at": iso(execution.started_at),
        "finished_at": iso(execution.finished_at),
        "transitions": execution.transitions,
    }
    if detail:
        steps = Step.objects.filter(execution=execution).order_by("-sequence")[:STEPS_SHOWN]
        runs = Run.objects.filter(execution=execution).order_by("-started_at", "-pk")
        data.update(
            input=execution.input,
            data=execution.data,
            history=execution.history,
            steps=[
                step_as_dict(step) | {"state_name": step.state_name, "action": step.action}
                for step in steps
            ],
            runs=[run_as_dict(run) for run in runs[:STEPS_SHOWN]],
        )
    return data


def seconds(value: dt.timedelta | None) -> float | None:
    return round(value.total_seconds(), 3) if value is not None else None


RUN_ROW = "  {attempt:>7}  {version:>3}  {status:<9}  {lateness:>10}  {started:<19}  {error}"


def write_runs(command: BaseCommand, runs: list[Run], total: int, *, state: bool = False) -> None:
    """The runs as a table under a "runs" heading (with ``state``: each step's state name)."""
    out = command.stdout.write
    shown = f" (newest {len(runs)} of {total})" if total > len(runs) else ""
    out(command.style.MIGRATE_HEADING(f"runs{shown}"))
    if not runs:
        out("  none yet")
        return
    row = RUN_ROW.replace("  {error}", "  {state:<20}  {error}") if state else RUN_ROW
    header = {"attempt": "ATTEMPT", "version": "VER", "status": "STATUS", "state": "STATE"}
    out(row.format(**header, lateness="LATENESS", started="STARTED (UTC)", error="ERROR / NOTE"))
    for run in runs:
        lateness = seconds(run.lateness)
        first_line = (run.error or run.note).strip().splitlines()
        out(
            row.format(
                attempt=run.attempt,
                version=run.version,
                status=run.status,
                state=run.step.state_name if state else "",
                lateness="-" if lateness is None else f"{lateness:.3f} s",
                started=f"{run.started_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}",
                error=("(uncertain) " if run.uncertain else "")
                + (first_line[0][:100] if first_line else ""),
            ).rstrip()
        )


def run_as_dict(run: Run) -> dict[str, Any]:
    return {
        "id": run.pk,
        "step_id": run.step_id,
        "version": run.version,
        "attempt": run.attempt,
        "status": run.status,
        "engine": run.engine,
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "lateness_seconds": seconds(run.lateness),
        "engine_lateness_seconds": seconds(run.engine_lateness),
        "uncertain": run.uncertain,
        "error": run.error,
        "note": run.note,
    }
