"""reconcile: bring the engines' timers in line with the database's steps."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q
from django.utils import timezone

from schedules import services
from schedules.engines import Engine, Timer, configured_engine_names, get_engine
from schedules.models import ArmState, Step, StepState
from schedules.services.sync import SYNC_FIELDS

from ._shared import EXIT_STATUS, write_json

PROGRESS_EVERY = 1000
DETAIL_LIMIT = 1000  # entries listed per kind; the counts are always complete
HEALTHY = {"waiting", "released"}  # released: the message is sent; the sweep redelivers it


def batched(items: Iterable[Timer], size: int) -> Iterator[list[Timer]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


@dataclass
class Report:
    dry_run: bool
    engines: list[str]
    checked_steps: int = 0
    checked_timers: int = 0
    missing_count: int = 0
    orphan_count: int = 0
    failures: int = 0
    missing: list[dict[str, Any]] = field(default_factory=list)
    orphans: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, entries: list[dict[str, Any]], entry: dict[str, Any]) -> None:
        if len(entries) < DETAIL_LIMIT:
            entries.append(entry)


class Command(BaseCommand):
    help = (
        "Compare the steps in the database with the timers the engines hold, and fix the "
        "difference. Missing: a scheduled step due within SCHEDULES_ARM_HORIZON whose timer "
        "is not armed, absent, or stopped/failed in the engine; it is re-armed through the "
        "sync service (under a new version when the engine cannot restart the old timer). "
        "Orphan: a timer the engine holds for a step that does not exist, another version, a "
        "step that is no longer scheduled or lives on another engine; it is disarmed. Steps "
        "and timers are read in batches; a progress line is printed every 1,000. --dry-run "
        "prints the plan and changes nothing. " + EXIT_STATUS + " Any timer that could not be "
        "checked or fixed makes it 1; run it again once the engine answers."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Print what would change; change nothing."
        )
        parser.add_argument(
            "--engine",
            metavar="NAME",
            help="Only this engine (alias or dotted path); default: every engine in "
            "SCHEDULES_ENGINES.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            metavar="N",
            help="Steps or timers read and fixed per batch (default 500).",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print the report as JSON (progress on stderr)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        names = [options["engine"]] if options["engine"] else configured_engine_names()
        if options["batch_size"] < 1:
            raise CommandError("batch_size: must be at least 1.")
        try:
            engines = {name: get_engine(name) for name in names}
        except ImproperlyConfigured as exc:
            raise CommandError(f"engine: {exc}") from exc
        self.as_json = bool(options["json"])
        report = Report(dry_run=options["dry_run"], engines=names)
        for name, engine in engines.items():
            self.missing(name, engine, report, options["batch_size"])
            self.orphans(name, engine, report, options["batch_size"])
        self.summary(report)
        if report.failures:
            raise CommandError(
                f"{report.failures} step(s) or timer(s) could not be checked or fixed (see "
                "above); check the engine's settings and credentials, then run reconcile again."
            )

    # -- output ---------------------------------------------------------------------------

    def line(self, text: str, style: Any = None) -> None:
        if not self.as_json:
            self.stdout.write(style(text) if style else text)

    def progress(self, report: Report, before: int, after: int, what: str, engine: str) -> None:
        if after // PROGRESS_EVERY > before // PROGRESS_EVERY:
            stream = self.stderr if self.as_json else self.stdout
            stream.write(f"... checked {after:,} {what} on {engine}", style_func=str)

    def summary(self, report: Report) -> None:
        if self.as_json:
            data = dict(report.__dict__)
            data["truncated"] = report.missing_count > len(
                report.missing
            ) or report.orphan_count > len(report.orphans)
            write_json(self, data)
            return
        verb = ("to re-arm", "to disarm") if report.dry_run else ("re-armed", "disarmed")
        text = (
            f"{', '.join(report.engines)}: checked {report.checked_steps:,} step(s) and "
            f"{report.checked_timers:,} timer(s); {report.missing_count} missing {verb[0]}, "
            f"{report.orphan_count} orphan(s) {verb[1]}, {report.failures} failure(s)"
        )
        if report.dry_run:
            text += " (dry run: nothing changed)"
        style = self.style.WARNING if report.failures else self.style.SUCCESS
        self.stdout.write(style(text))

    # -- missing timers ---------------------------------------------------------------------

    def missing(self, name: str, engine: Engine, report: Report, size: int) -> None:
        horizon = timezone.now() + dt.timedelta(seconds=settings.SCHEDULES_ARM_HORIZON)
        steps = (
            Step.objects.filter(state=StepState.SCHEDULED, engine=name, due_at__lte=horizon)
            .only(*SYNC_FIELDS)
            .order_by("due_at", "pk")
        )
        after = Q()
        while batch := list(steps.filter(after)[:size]):
            last = batch[-1]
            after = Q(due_at__gt=last.due_at) | Q(due_at=last.due_at, pk__gt=last.pk)
            found: list[tuple[Step, str, str]] = []
            for step in batch:
                diagnosis = self.diagnose(name, engine, step, report)
                if diagnosis is not None:
                    found.append((step, *diagnosis))
            results = {} if report.dry_run else self.rearm(found)
            for step, reason, fix in found:
                result = results.get(step.pk, f"planned: {fix}")
                if result.startswith("failed"):
                    report.failures += 1
                report.missing_count += 1
                report.add(
                    report.missing,
                    {
                        "step_id": step.pk,
                        "version": step.version,
                        "engine": name,
                        "reason": reason,
                        "fix": fix,
                        "result": result,
                    },
                )
                self.line(
                    f"missing  step {step.pk} v{step.version} on {name}: {reason} -> {result}"
                )
            before = report.checked_steps
            report.checked_steps += len(batch)
            self.progress(report, before, report.checked_steps, "step(s)", name)

    def diagnose(
        self, name: str, engine: Engine, step: Step, report: Report
    ) -> tuple[str, str] | None:
        """Why the step's timer is missing and how to fix it, or None if it is there."""
        if step.arm_state != ArmState.ARMED:
            return f"arm_state is {step.arm_state}", "sync"
        holder = step.armed_engine or name
        if step.armed_version != step.version or holder != name:
            return f"armed for v{step.armed_version} on {holder}", "sync"
        try:
            status = engine.describe(services.timer_for(step))
        except Exception as exc:  # noqa: BLE001 - reported; the others are still checked
            report.failures += 1
            report.errors.append(f"step {step.pk} v{step.version} on {name}: describe: {exc}")
            self.line(f"error    step {step.pk}: describe failed: {exc}", self.style.ERROR)
            return None
        if status.state in HEALTHY:
            return None
        if status.state == "absent":
            return "the engine has no timer", "rearm"
        # A stopped execution's name cannot be started again: arm a new version instead.
        return f"the engine's timer is {status.state} ({status.detail})", "new_version"

    def rearm(self, found: list[tuple[Step, str, str]]) -> dict[int, str]:
        """Re-arm through the sync service; each write is fenced by the version read."""
        if not found:
            return {}
        services.steps_rearm(
            forget=[(step.pk, step.version) for step, _reason, fix in found if fix == "rearm"],
            renew=[(step.pk, step.version) for step, _reason, fix in found if fix == "new_version"],
        )
        services.steps_sync(step_ids=[step.pk for step, _reason, fix in found if fix == "sync"])
        ids = [step.pk for step, _reason, _fix in found]
        results: dict[int, str] = {}
        for pk, version, arm_state, error in Step.objects.filter(pk__in=ids).values_list(
            "pk", "version", "arm_state", "arm_error"
        ):
            armed = arm_state == ArmState.ARMED
            results[pk] = f"re-armed as v{version}" if armed else f"failed: {error or arm_state}"
        return results

    # -- orphan timers ----------------------------------------------------------------------

    def orphans(self, name: str, engine: Engine, report: Report, size: int) -> None:
        try:
            for chunk in batched(engine.list_timers(), size):
                rows = {
                    row["id"]: row
                    for row in Step.objects.filter(pk__in={t.step_id for t in chunk}).values(
                        "id", "version", "state", "engine"
                    )
                }
                for timer in chunk:
                    reason = self.unwanted(name, timer, rows.get(timer.step_id))
                    if reason is not None:
                        self.disarm(name, engine, timer, reason, report)
                before = report.checked_timers
                report.checked_timers += len(chunk)
                self.progress(report, before, report.checked_timers, "timer(s)", name)
        except Exception as exc:  # noqa: BLE001 - the listing failed: reported, exit 1
            report.failures += 1
            report.errors.append(f"{name}: listing timers failed: {exc}")
            self.line(f"error    {name}: listing timers failed: {exc}", self.style.ERROR)

    def unwanted(self, name: str, timer: Timer, row: Mapping[str, Any] | None) -> str | None:
        if row is None:
            return "no such step"
        if row["version"] != timer.version:
            return f"the step is at v{row['version']}"
        if row["state"] != StepState.SCHEDULED:
            return f"the step is {row['state']}"
        if row["engine"] != name:
            return f"the step runs on {row['engine']}"
        return None

    def disarm(self, name: str, engine: Engine, timer: Timer, reason: str, report: Report) -> None:
        result = "planned: disarm"
        if not report.dry_run:
            try:
                engine.disarm(timer)
                result = "disarmed"
            except Exception as exc:  # noqa: BLE001 - reported; the others are still fixed
                report.failures += 1
                result = f"failed: {exc}"
        report.orphan_count += 1
        report.add(
            report.orphans,
            {
                "step_id": timer.step_id,
                "version": timer.version,
                "engine": name,
                "external_ref": timer.external_ref,
                "reason": reason,
                "result": result,
            },
        )
        self.line(f"orphan   step {timer.step_id} v{timer.version} on {name}: {reason} -> {result}")
