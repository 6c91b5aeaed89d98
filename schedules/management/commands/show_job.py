"""show_job: one job with its steps and its runs."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from schedules.models import Run, Step

from ._shared import EXIT_STATUS, get_job, iso, job_as_dict, local_time, write_json

RUNS_SHOWN = 50
STEP_ROW = "  {id:>8}  {engine:<14}  {version:>3}  {state:<9}  {arm:<8}  {ref}"
RUN_ROW = "  {attempt:>7}  {version:>3}  {status:<9}  {lateness:>10}  {started:<19}  {error}"


def seconds(value: dt.timedelta | None) -> float | None:
    return round(value.total_seconds(), 3) if value is not None else None


class Command(BaseCommand):
    help = (
        "Show one job: its fields and payload, its steps (engine, version, state, arm state, "
        f"the engine's reference) and its newest {RUNS_SHOWN} runs (attempt, status, lateness, "
        "first line of the error). --json prints the same as one JSON object. " + EXIT_STATUS
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("id", type=int, metavar="ID", help="Job id.")
        parser.add_argument("--json", action="store_true", help="Print the job as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        job = get_job(options["id"])
        runs = list(Run.objects.filter(job=job).order_by("-started_at", "-pk")[:RUNS_SHOWN])
        total = Run.objects.filter(job=job).count() if len(runs) == RUNS_SHOWN else len(runs)
        if options["json"]:
            data = job_as_dict(job, payload=True)
            data["runs_total"] = total
            data["runs"] = [
                {
                    "id": run.pk,
                    "step_id": run.step_id,
                    "version": run.version,
                    "attempt": run.attempt,
                    "status": run.status,
                    "engine": run.engine,
                    "started_at": iso(run.started_at),
                    "finished_at": iso(run.finished_at),
                    "lateness_seconds": seconds(run.lateness),
                    "uncertain": run.uncertain,
                    "error": run.error,
                    "note": run.note,
                }
                for run in runs
            ]
            write_json(self, data)
            return
        out = self.stdout.write
        out(self.style.MIGRATE_HEADING(f"job {job.pk}  {job.action}  {job.name}".rstrip()))
        zone = local_time(job.due_at, job.time_zone)
        for label, value in [
            ("status", job.status),
            ("precision", job.precision),
            ("due_at", f"{iso(job.due_at)}" + (f"  ({zone}, {job.time_zone})" if zone else "")),
            ("max_attempts", job.max_attempts),
            ("owner", job.owner.get_username() if job.owner else "-"),
            ("payload", json.dumps(job.payload, sort_keys=True)),
        ]:
            out(f"  {label:<13}{value}")
        out(self.style.MIGRATE_HEADING("steps"))
        out(
            STEP_ROW.format(
                id="ID",
                engine="ENGINE",
                version="VER",
                state="STATE",
                arm="ARM",
                ref="EXTERNAL_REF",
            )
        )
        for step in Step.objects.filter(job=job).order_by("sequence", "pk")[:100]:
            out(
                STEP_ROW.format(
                    id=step.pk,
                    engine=step.engine,
                    version=step.version,
                    state=step.state,
                    arm=step.arm_state,
                    ref=step.external_ref or "-",
                )
            )
        shown = f" (newest {len(runs)} of {total})" if total > len(runs) else ""
        out(self.style.MIGRATE_HEADING(f"runs{shown}"))
        if not runs:
            out("  none yet")
            return
        out(
            RUN_ROW.format(
                attempt="ATTEMPT",
                version="VER",
                status="STATUS",
                lateness="LATENESS",
                started="STARTED (UTC)",
                error="ERROR / NOTE",
            )
        )
        for run in runs:
            lateness = seconds(run.lateness)
            first_line = (run.error or run.note).strip().splitlines()
            out(
                RUN_ROW.format(
                    attempt=run.attempt,
                    version=run.version,
                    status=run.status,
                    lateness="-" if lateness is None else f"{lateness:.3f} s",
                    started=f"{run.started_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}",
                    error=("(uncertain) " if run.uncertain else "")
                    + (first_line[0][:100] if first_line else ""),
                ).rstrip()
            )
