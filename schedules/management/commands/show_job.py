"""show_job: one job with its steps and its runs."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from schedules.models import Job, PlanStatus, Run
from schedules.selectors import describe_schedule, job_next_occurrences

from ._shared import (
    EXIT_STATUS,
    STEPS_SHOWN,
    get_job,
    iso,
    job_as_dict,
    latest_steps,
    local_time,
    run_as_dict,
    write_json,
    write_runs,
)

RUNS_SHOWN = 50
STEP_ROW = (
    "  {id:>8}  {occurrence:>7}  {due:<19}  {engine:<14}  {version:>3}  {state:<9}  {arm:<8}  {ref}"
)


class Command(BaseCommand):
    help = (
        "Show one job: its fields and payload, a recurring job's rule, policies and next five "
        f"occurrences, its latest {STEPS_SHOWN} steps (occurrence and check, due time, engine, "
        "version, state, arm state, the engine's reference) and its newest "
        f"{RUNS_SHOWN} runs (attempt, status, lateness, first line of the error or note). "
        "--json prints the same as one JSON object. " + EXIT_STATUS
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("id", type=int, metavar="ID", help="Job id.")
        parser.add_argument("--json", action="store_true", help="Print the job as JSON.")

    @staticmethod
    def rule_lines(job: Job) -> list[tuple[str, Any]]:
        lines: list[tuple[str, Any]] = []
        if job.is_recurring:
            upcoming = job_next_occurrences(job, count=5)
            lines += [
                ("starts_at", iso(job.starts_at)),
                ("ends_at", iso(job.ends_at) or "-"),
                ("runs", f"{job.run_count}" + (f" of {job.max_runs}" if job.max_runs else "")),
                ("missed_policy", job.missed_policy),
                ("overlap_policy", job.overlap_policy),
                (
                    "pause_after",
                    f"{job.pause_after_failures} failures in a row "
                    f"({job.consecutive_failures} so far)"
                    if job.pause_after_failures
                    else "-",
                ),
                ("next", ", ".join(local_time(t, job.time_zone) for t in upcoming) or "-"),
            ]
        if job.poll_interval is not None:
            lines.append(
                (
                    "polls",
                    f"every {job.poll_interval} s, at most {job.poll_max_checks or '-'} checks, "
                    f"timeout {job.poll_timeout or '-'} s",
                )
            )
        return lines

    def handle(self, *args: Any, **options: Any) -> None:
        job = get_job(options["id"])
        runs = list(Run.objects.filter(job=job).order_by("-started_at", "-pk")[:RUNS_SHOWN])
        total = Run.objects.filter(job=job).count() if len(runs) == RUNS_SHOWN else len(runs)
        if options["json"]:
            data = job_as_dict(job, payload=True)
            data["runs_total"] = total
            data["runs"] = [run_as_dict(run) for run in runs]
            write_json(self, data)
            return
        out = self.stdout.write
        out(self.style.MIGRATE_HEADING(f"job {job.pk}  {job.action}  {job.name}".rstrip()))
        zone = local_time(job.due_at, job.time_zone)
        paused = (
            [("paused_at", iso(job.paused_at)), ("pause_reason", job.pause_reason or "-")]
            if job.status == PlanStatus.PAUSED
            else []
        )
        for label, value in [
            ("status", job.status),
            *paused,
            ("schedule", describe_schedule(job)),
            ("precision", job.precision),
            ("due_at", f"{iso(job.due_at)}" + (f"  ({zone}, {job.time_zone})" if zone else "")),
            *self.rule_lines(job),
            ("max_attempts", job.max_attempts),
            ("owner", job.owner.get_username() if job.owner else "-"),
            ("payload", json.dumps(job.payload, sort_keys=True)),
        ]:
            out(f"  {label:<16}{value}")
        out(self.style.MIGRATE_HEADING("steps"))
        out(
            STEP_ROW.format(
                id="ID",
                occurrence="OCC.CHK",
                due="DUE (UTC)",
                engine="ENGINE",
                version="VER",
                state="STATE",
                arm="ARM",
                ref="EXTERNAL_REF",
            )
        )
        for step in latest_steps(job):
            out(
                STEP_ROW.format(
                    id=step.pk,
                    occurrence=f"{step.sequence}.{step.poll_number}",
                    due=f"{step.due_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}",
                    engine=step.engine,
                    version=step.version,
                    state=step.state,
                    arm=step.arm_state,
                    ref=step.external_ref or "-",
                )
            )
        write_runs(self, runs, total)
