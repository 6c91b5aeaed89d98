"""What the job commands share: parsing, error reporting and the JSON shape of a job.

Not a command (Django skips modules whose name starts with ``_``).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import zoneinfo
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from schedules.models import Job, Precision, Step

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


def add_job_options(parser: CommandParser) -> None:
    """Options every scheduling command takes besides its payload."""
    parser.add_argument("--due", required=True, metavar="ISO8601", help=DUE_HELP)
    parser.add_argument(
        "--precision",
        choices=Precision.values,
        default=Precision.PRECISE,
        help="precise (seconds, SCHEDULES_ENGINE_PRECISE) or relaxed (minutes, "
        "SCHEDULES_ENGINE_RELAXED). Default: precise.",
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
        help="IANA zone the job is displayed in, e.g. Europe/Paris (default: UTC).",
    )
    parser.add_argument("--owner", metavar="USERNAME", help="User who owns the job.")
    parser.add_argument(
        "--json", action="store_true", help="Print the job as JSON instead of its id."
    )


def job_options(options: dict[str, Any]) -> dict[str, Any]:
    """The job_schedule keyword arguments given by add_job_options' options."""
    return {
        "due_at": parse_due(options["due"]),
        "precision": options["precision"],
        "max_attempts": options["max_attempts"],
        "name": options["name"],
        "time_zone": options["time_zone"],
        "owner": get_owner(options["owner"]),
    }


def iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value is not None else None


def local_time(value: dt.datetime, zone: str) -> str:
    """``value`` in the job's zone, for people (storage and JSON stay UTC)."""
    try:
        return value.astimezone(zoneinfo.ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return ""


def step_as_dict(step: Step) -> dict[str, Any]:
    return {
        "id": step.pk,
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
        "max_attempts": job.max_attempts,
        "owner": job.owner.get_username() if job.owner else None,
        "created_at": iso(job.created_at),
    }
    if payload:
        data["payload"] = job.payload
    steps = Step.objects.filter(job=job).order_by("sequence", "pk")[:100]
    data["steps"] = [step_as_dict(step) for step in steps]
    return data


def write_json(command: BaseCommand, data: Any) -> None:
    command.stdout.write(json.dumps(data, indent=2))
