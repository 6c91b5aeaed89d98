"""purge: delete finished runs, steps, jobs, ... older than their keep age, in small batches."""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError, CommandParser

from schedules.services import PurgeProgress, PurgeReport, Retention, retention_purge

from ._shared import EXIT_STATUS, ServiceCommand, write_json

AGE_RE = re.compile(r"\A\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*\Z")
AGE_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 7 * 86400,
    "week": 7 * 86400,
    "weeks": 7 * 86400,
}
#: Seconds between two progress lines when standard error is not a terminal.
LINE_EVERY = 10.0
BAR_WIDTH = 24


def parse_age(value: str) -> dt.timedelta:
    """``"30d"``, ``"12h"``, ``"90 minutes"`` or ``"2w"`` as a positive timedelta."""
    match = AGE_RE.match(value.lower())
    if match is None or match.group(2) not in AGE_UNITS or float(match.group(1)) <= 0:
        raise CommandError(
            f"older-than: {value!r} is not an age; use a positive number and a unit, e.g. "
            "'30d', '12h', '90m', '3600s' or '2w'"
        )
    return dt.timedelta(seconds=float(match.group(1)) * AGE_UNITS[match.group(2)])


def label(kind: str) -> str:
    return kind.replace("_", " ")


class Progress:
    """A bar redrawn in place on a terminal; elsewhere a line every LINE_EVERY seconds and
    one per kind done."""

    def __init__(self, command: ServiceCommand, *, verb: str) -> None:
        self.out = command.stderr
        self.tty = command.stderr.isatty()
        self.verb = verb
        self.kind = ""
        self.next_line = time.monotonic() + LINE_EVERY

    def __call__(self, p: PurgeProgress) -> None:
        done = p.examined >= p.candidates
        share = p.examined / p.candidates if p.candidates else 1.0
        text = (
            f"{label(p.kind):<24} {p.examined:>11,} of {p.candidates:,} looked at, "
            f"{p.deleted:,} {self.verb} ({p.seconds:.0f} s)"
        )
        if self.tty:
            filled = round(share * BAR_WIDTH)
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            self.out.write(f"\r[{bar}] {share:4.0%} {text}\x1b[K", ending="\n" if done else "")
            self.out.flush()
        elif done or time.monotonic() >= self.next_line:
            self.out.write(text)
            self.next_line = time.monotonic() + LINE_EVERY


class Command(ServiceCommand):
    help = (
        "Delete finished runs, steps, jobs, classrooms, workflow executions and "
        "notification deliveries older than their keep age (SCHEDULES_KEEP_SUCCEEDED_DAYS, "
        "_FAILED_DAYS, _UNCERTAIN_DAYS, _CANCELLED_DAYS), and expired Idempotency-Keys. "
        "What is still needed stays: anything of a job, classroom or workflow execution "
        "that has not finished, each job's newest run, runs of steps not finished. Deletes "
        "in batches of --batch-size rows, each its own short transaction, so the scheduler "
        "keeps running meanwhile. Shows its progress on standard error (a bar on a "
        "terminal). docs/operations.md, 'Retention and purge'. " + EXIT_STATUS
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be deleted, per kind; delete nothing.",
        )
        parser.add_argument(
            "--older-than",
            metavar="AGE",
            help="Keep this age for every kind instead of the SCHEDULES_KEEP_* settings, "
            "e.g. 30d, 12h, 90m or 2w (failed and uncertain rows too).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            metavar="N",
            help="Rows looked at, and at most deleted, per transaction (default: "
            "SCHEDULES_PURGE_BATCH, 1000).",
        )
        parser.add_argument(
            "--pause",
            type=float,
            metavar="SECONDS",
            help="Sleep this long after each batch that deleted rows (default: "
            "SCHEDULES_PURGE_PAUSE, 0).",
        )
        parser.add_argument(
            "--max-seconds",
            type=float,
            metavar="SECONDS",
            help="Stop between two batches after this long (the next purge goes on).",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print the summary as JSON (progress on stderr)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size = options["batch_size"]
        if batch_size is not None and not 1 <= batch_size <= 100_000:
            raise CommandError("batch-size: must be from 1 to 100000.")
        if options["pause"] is not None and options["pause"] < 0:
            raise CommandError("pause: must be 0 or more seconds.")
        if options["max_seconds"] is not None and options["max_seconds"] <= 0:
            raise CommandError("max-seconds: must be more than 0.")
        try:
            retention = (
                Retention.older_than(parse_age(options["older_than"]))
                if options["older_than"]
                else Retention.from_settings()
            )
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        dry_run = options["dry_run"]
        progress = None
        if options["verbosity"] >= 1:
            progress = Progress(self, verb="would go" if dry_run else "deleted")
        report = retention_purge(
            retention=retention,
            batch_size=batch_size,
            dry_run=dry_run,
            max_seconds=options["max_seconds"],
            pause=options["pause"],
            progress=progress,
        )
        if options["json"]:
            write_json(self, report.as_dict())
        else:
            self.summary(report)

    def summary(self, report: PurgeReport) -> None:
        out = self.stdout.write
        rate = f", {report.total / report.seconds:,.0f} rows/s" if report.seconds else ""
        if report.dry_run:
            out(f"Dry run: {report.total:,} row(s) would be deleted (nothing was).")
        else:
            out(
                self.style.SUCCESS(
                    f"Deleted {report.total:,} row(s) in {report.seconds:.1f} s{rate}, "
                    f"{report.batches:,} batch(es) of at most {report.batch_size:,}."
                )
            )
        for kind, count in report.deleted.items():
            out(f"  {label(kind):<24} {count:>11,}")
        ages = ", ".join(
            f"{name} {'forever' if days is None else f'{days:g} days'}"
            for name, days in report.retention.as_dict().items()
        )
        out(f"Kept: {ages}.")
        if report.conflicts:
            out(
                self.style.WARNING(
                    f"{report.conflicts} batch(es) were left for the next purge (rows in use)."
                )
            )
        if not report.complete:
            out(
                self.style.WARNING(
                    "Stopped at --max-seconds before the end; run it again to go on."
                )
            )
