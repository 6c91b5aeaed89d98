"""The admin at scale: 1,000,000 runs and 1,000,000 steps, then every overview endpoint
and every changelist of the schedules app timed, against a 300 ms target.

    .venv/bin/python bench/admin_scale.py                          # SQLite, a fresh file
    .venv/bin/python bench/admin_scale.py --database postgres      # scheduler_admin_bench
    .venv/bin/python bench/admin_scale.py --reuse --only step      # timings again, no fill
    .venv/bin/python bench/admin_scale.py --json bench/results/admin_sqlite.json --strict

The fill writes rows straight into the tables (multi-row executemany on SQLite, COPY
on PostgreSQL), ids included, then analyses them (SQLite ANALYZE; PostgreSQL VACUUM
ANALYZE). The spread: runs over the last 30 days (two attempts per finished step,
several engines, actions and statuses, some uncertain); steps half finished over the
last 30 days and half pending over the next 7 days (a few hundred overdue, a few
queued), owned by 20,000 jobs and 1,000 classrooms; workflows with their executions
and notification deliveries beside them.

Each URL is requested through Django's test ``Client`` as a logged-in superuser (the
whole stack: middleware, session, the view, the template), once to warm up and count
its queries, then ``--repeat`` times; the median is held against ``--target-ms``.
The changelists: first page, second page, and every choice of every list filter (the
query strings the filter sidebar links to). See docs/benchmarks.md, "The admin at
scale", for the figures.

Everything stays on this machine: a SQLite file under var/bench/, or a database of its
own (``--db-name``, default scheduler_admin_bench) on the PostgreSQL server at
127.0.0.1, kept after the run so that ``--reuse`` can time again without a fill.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import SCRUBBED_PREFIXES  # noqa: E402  (settings a run must not inherit)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}

ENGINES = ("local",) * 6 + ("stepfunctions",) * 2 + ("eventbridge", "dynamodb_ttl")
#: The precision class of a step on each engine.
PRECISION_OF = {"dynamodb_ttl": "relaxed", "eventbridge": "minute"}
JOB_ACTIONS = ("send_email", "send_email", "http_check", "noop", "http_request")
CLASSROOM_ACTIONS = ("start_recording", "live_ping", "live_ping", "live_ping", "stop_recording")
#: (status, weight) of runs: mostly successes, a few of everything else.
RUN_STATUSES = (
    ("succeeded", 880),
    ("failed", 30),
    ("retrying", 30),
    ("not_done", 20),
    ("skipped", 20),
    ("abandoned", 10),
    ("running", 10),
)


# --------------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Fill 1,000,000 runs and steps, then time the admin's overview "
        "endpoints and changelists (docs/benchmarks.md)."
    )
    p.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument(
        "--postgres-url",
        default="postgres://postgres@127.0.0.1:5432/postgres",
        help="a maintenance database of the server (loopback only); the bench creates "
        "--db-name beside it",
    )
    p.add_argument("--db-name", default="scheduler_admin_bench", help="PostgreSQL database")
    p.add_argument(
        "--sqlite-path",
        type=Path,
        default=ROOT / "var" / "bench" / "admin_scale.sqlite3",
        help="the SQLite file (recreated unless --reuse)",
    )
    p.add_argument("--runs", type=int, default=1_000_000)
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--classrooms", type=int, default=1_000)
    p.add_argument("--executions", type=int, default=20_000)
    p.add_argument("--deliveries", type=int, default=50_000)
    p.add_argument("--repeat", type=int, default=5, help="timed requests per URL (5)")
    p.add_argument("--target-ms", type=float, default=300.0)
    p.add_argument("--reuse", action="store_true", help="keep the filled database: no fill")
    p.add_argument("--fill-only", action="store_true", help="fill, analyse, and stop")
    p.add_argument("--only", default="", help="time only the URLs whose name contains this")
    p.add_argument(
        "--compare",
        action="store_true",
        help="also time the overview's queries against their alternatives",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the results as JSON to this file")
    p.add_argument("--strict", action="store_true", help="exit 1 if a URL misses the target")
    p.add_argument("--drop", action="store_true", help="drop the PostgreSQL database at the end")
    return p.parse_args(argv)


def database_url(args: argparse.Namespace) -> str:
    if args.database == "sqlite":
        return f"sqlite:///{args.sqlite_path}"
    server = urlparse(args.postgres_url)
    if server.hostname not in LOOPBACK:
        raise SystemExit(f"--postgres-url: only loopback hosts, not {server.hostname!r}")
    return server._replace(path=f"/{args.db_name}").geturl()


def postgres(args: argparse.Namespace, sql: str) -> None:
    import psycopg

    with psycopg.connect(args.postgres_url, autocommit=True) as conn:
        conn.execute(sql)


def prepare_database(args: argparse.Namespace) -> None:
    """A fresh database, unless --reuse."""
    if args.reuse:
        return
    if args.database == "sqlite":
        args.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{args.sqlite_path}{suffix}").unlink(missing_ok=True)
    else:
        postgres(args, f"DROP DATABASE IF EXISTS {args.db_name} WITH (FORCE)")
        postgres(args, f"CREATE DATABASE {args.db_name}")


def setup_django(args: argparse.Namespace, data_dir: Path) -> None:
    for key in [k for k in os.environ if k.startswith(SCRUBBED_PREFIXES)]:
        del os.environ[key]
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "scheduler_project.settings",
            "DJANGO_ENV": "development",
            "DEBUG": "False",  # DEBUG keeps every query in memory
            "ALLOWED_HOSTS": "testserver,localhost",
            "SCHEDULES_DATA_DIR": str(data_dir),
            "DATABASE_URL": database_url(args),
            "CELERY_BROKER_URL": "memory://",
            "SCHEDULES_ENGINE_SECONDS": "local",
            "SCHEDULES_ENGINE_RELAXED": "local",
        }
    )
    import django

    django.setup()


# --------------------------------------------------------------------------------------------
# Fill
# --------------------------------------------------------------------------------------------


class Rows:
    """Rows of one model's table in column order: every column its default (prepared
    for the database once), but for the ``varying`` ones, given per row."""

    def __init__(self, model: Any, varying: list[str], now: Any) -> None:
        from django.db import connection

        fields = list(model._meta.concrete_fields)
        names = [field.attname for field in fields]
        unknown = set(varying) - set(names)
        if unknown:
            raise SystemExit(f"{model.__name__} has no column {sorted(unknown)}")
        self.table = model._meta.db_table
        self.columns = [field.column for field in fields]
        self.positions = [names.index(name) for name in varying]
        self.template: list[Any] = []
        for field in fields:
            if field.attname in varying:
                self.template.append(None)
            elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                self.template.append(now)
            else:
                default = field.get_default()
                if default is None and not field.null:
                    raise SystemExit(f"{model.__name__}.{field.name} needs a value per row")
                self.template.append(field.get_db_prep_save(default, connection))

    def row(self, values: Iterable[Any]) -> list[Any]:
        row = self.template.copy()
        for position, value in zip(self.positions, values, strict=True):
            row[position] = value
        return row


class Writer:
    """Fast inserts: executemany in big transactions on SQLite, COPY on PostgreSQL."""

    def __init__(self) -> None:
        from django.db import connection

        self.connection = connection
        self.vendor = connection.vendor
        if self.vendor == "sqlite":
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA cache_size = -524288")  # 512 MiB for the index pages
                cursor.execute("PRAGMA synchronous = OFF")  # a benchmark's own file

    def time(self, value: dt.datetime) -> Any:
        if self.vendor == "sqlite":
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")
        return value

    def duration(self, microseconds: int | None) -> Any:
        if microseconds is None:
            return None
        if self.vendor == "sqlite":
            return microseconds
        return dt.timedelta(microseconds=microseconds)

    def flag(self, value: bool) -> Any:
        return int(value) if self.vendor == "sqlite" else value

    def write(self, rows: Rows, values: Iterator[Iterable[Any]], chunk: int = 50_000) -> int:
        from django.db import transaction

        written = 0
        columns = ", ".join(f'"{column}"' for column in rows.columns)
        with transaction.atomic():
            if self.vendor == "sqlite":
                raw = self.connection.connection
                sql = (
                    f'INSERT INTO "{rows.table}" ({columns}) VALUES '
                    f"({', '.join('?' * len(rows.columns))})"
                )
                batch: list[list[Any]] = []
                for value in values:
                    batch.append(rows.row(value))
                    if len(batch) >= chunk:
                        raw.executemany(sql, batch)
                        written += len(batch)
                        batch = []
                if batch:
                    raw.executemany(sql, batch)
                    written += len(batch)
            else:
                with self.connection.cursor() as cursor:
                    copy_sql = f'COPY "{rows.table}" ({columns}) FROM STDIN'
                    with cursor.cursor.copy(copy_sql) as copy:
                        for value in values:
                            copy.write_row(rows.row(value))
                            written += 1
        return written


def weighted(choices: tuple[tuple[str, int], ...]) -> list[str]:
    return [value for value, weight in choices for _ in range(weight)]


def fill(args: argparse.Namespace) -> dict[str, float]:
    """Every table the admin lists, in bulk; returns seconds per phase."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.core.management.color import no_style
    from django.db import connection
    from django.utils import timezone

    from schedules.models import (
        Classroom,
        Execution,
        Heartbeat,
        Job,
        NotificationDelivery,
        Run,
        Step,
        Workflow,
        WorkflowVersion,
    )

    seconds: dict[str, float] = {}
    started = time.monotonic()
    call_command("migrate", verbosity=0)
    seconds["migrate"] = time.monotonic() - started
    writer = Writer()
    rng = random.Random(args.seed)
    now = timezone.now()
    stamp = writer.time(now)
    day = 86_400.0
    jobs, classrooms = args.jobs, args.classrooms
    past_steps = args.steps // 2
    pending_steps = args.steps - past_steps

    def at(offset_seconds: float) -> Any:
        return writer.time(now + dt.timedelta(seconds=offset_seconds))

    # Plans: jobs (a fifth recurring) and classrooms.
    phase = time.monotonic()
    job_rows = Rows(
        Job,
        [
            "id",
            "name",
            "action",
            "due_at",
            "schedule_type",
            "rate_every",
            "rate_unit",
            "starts_at",
            "status",
            "precision",
        ],
        stamp,
    )

    def job_values() -> Iterator[tuple[Any, ...]]:
        for i in range(1, jobs + 1):
            recurring = i % 5 == 0
            yield (
                i,
                f"bench job {i}",
                JOB_ACTIONS[i % len(JOB_ACTIONS)],
                at(rng.uniform(-30 * day, 7 * day)),
                "rate" if recurring else "once",
                3600 if recurring else None,
                "seconds" if recurring else "",
                at(-30 * day) if recurring else None,
                ("scheduled", "scheduled", "succeeded", "succeeded", "failed")[i % 5],
                {9: "relaxed", 8: "minute"}.get(i % 10, "seconds"),
            )

    writer.write(job_rows, job_values())
    classroom_rows = Rows(
        Classroom, ["id", "title", "start", "end", "recording_service_ref", "status"], stamp
    )

    def classroom_values() -> Iterator[tuple[Any, ...]]:
        for i in range(1, classrooms + 1):
            start = rng.uniform(-30 * day, 7 * day)
            yield (
                i,
                f"Class {i}",
                at(start),
                at(start + 3600),
                f"room-{i}",
                "succeeded" if start < 0 else "scheduled",
            )

    writer.write(classroom_rows, classroom_values())
    seconds["jobs and classrooms"] = time.monotonic() - phase

    # Steps: the first half finished over the last 30 days, the second pending over the
    # next 7 (a few hundred overdue at the start of it, a few queued).
    def owner(i: int) -> tuple[int | None, int | None]:
        if i % 20 == 0:
            return None, (i // 20) % classrooms + 1
        return i % jobs + 1, None

    def action_of(i: int) -> str:
        if i % 20 == 0:  # a classroom's: its start, pings, its stop
            return CLASSROOM_ACTIONS[(i // 20) % len(CLASSROOM_ACTIONS)]
        return JOB_ACTIONS[i % len(JOB_ACTIONS)]

    def engine_of(i: int) -> str:
        return ENGINES[(i * 7) % len(ENGINES)]

    def past_due(i: int) -> float:
        return -30 * day + 30 * day * (i + 0.5) / past_steps

    phase = time.monotonic()
    step_rows = Rows(
        Step,
        [
            "id",
            "job_id",
            "classroom_id",
            "action",
            "sequence",
            "due_at",
            "version",
            "state",
            "precision",
            "engine",
            "external_ref",
            "arm_state",
            "armed_version",
            "armed_engine",
            "armed_at",
            "attempts",
            "queued_at",
        ],
        stamp,
    )

    def step_values() -> Iterator[tuple[Any, ...]]:
        for i in range(args.steps):
            job_id, classroom_id = owner(i)
            engine = engine_of(i)
            queued_at = None
            if i < past_steps:
                due = past_due(i)
                roll = rng.random()
                state = "succeeded" if roll < 0.92 else "failed" if roll < 0.97 else "cancelled"
                arm_state, attempts = "disarmed", 1 if state != "cancelled" else 0
            else:
                k = i - past_steps
                # The first 300 overdue (the backlog), the rest over the next 7 days.
                due = -rng.uniform(1, 120) if k < 300 else 7 * day * (k + 0.5) / pending_steps
                state, arm_state, attempts = "scheduled", "armed", 0
                if 300 <= k < 400:
                    state, queued_at = "queued", at(-rng.uniform(0, 30))
            yield (
                i + 1,
                job_id,
                classroom_id,
                action_of(i),
                i,
                at(due),
                1,
                state,
                PRECISION_OF.get(engine, "seconds"),
                engine,
                f"{engine}:{i + 1}:1",
                arm_state,
                1,
                engine,
                at(min(due, 0) - 60),
                attempts,
                queued_at,
            )

    writer.write(step_rows, step_values())
    seconds["steps"] = time.monotonic() - phase

    # Runs: two attempts per finished step, in time order.
    phase = time.monotonic()
    statuses = weighted(RUN_STATUSES)
    run_rows = Rows(
        Run,
        [
            "id",
            "step_id",
            "job_id",
            "classroom_id",
            "action",
            "engine",
            "version",
            "attempt",
            "status",
            "due_at",
            "started_at",
            "finished_at",
            "lateness",
            "engine_lateness",
            "result",
            "error",
            "uncertain",
            "note",
            "worker",
        ],
        stamp,
    )
    scales = {"local": 0.004, "stepfunctions": 0.3, "eventbridge": 30.0, "dynamodb_ttl": 240.0}
    result = json.dumps({"status": 200, "ok": True})

    def run_values() -> Iterator[tuple[Any, ...]]:
        for j in range(args.runs):
            i = j * past_steps // args.runs
            job_id, classroom_id = owner(i)
            engine = engine_of(i)
            due = past_due(i) + (j % 2) * 60
            lateness = scales[engine] * rng.lognormvariate(0, 0.8)
            status = statuses[int(rng.random() * len(statuses))]
            started = due + lateness
            if status == "running" and started < -600:
                status = "succeeded"
            uncertain = rng.random() < 0.003
            micros = int(lateness * 1_000_000)
            yield (
                j + 1,
                i + 1,
                job_id,
                classroom_id,
                action_of(i),
                engine,
                1,
                j % 2 + 1,
                status,
                at(due),
                at(started),
                None if status == "running" else at(started + 0.05),
                writer.duration(micros),
                None if j % 20 == 0 else writer.duration(micros),
                result if status == "succeeded" else None,
                f"ConnectionError: the server at 10.0.0.{j % 250} did not answer in 10 s "
                f"(attempt {j % 2 + 1})"
                if status in ("failed", "retrying", "abandoned")
                else "",
                writer.flag(uncertain),
                "took over an attempt lost mid-run" if uncertain else "",
                f"celery@worker-{j % 4}",
            )

    writer.write(run_rows, run_values())
    seconds["runs"] = time.monotonic() - phase

    # Workflows, their executions, and notification deliveries.
    phase = time.monotonic()
    definition = {
        "StartAt": "Wait",
        "States": {
            "Wait": {"Type": "Wait", "Seconds": 60, "Next": "Ping"},
            "Ping": {"Type": "Task", "Action": "noop", "End": True},
        },
    }
    workflows = [
        Workflow(name=f"bench-flow-{n}", definition=definition, version=1) for n in range(10)
    ]
    Workflow.objects.bulk_create(workflows)
    versions = WorkflowVersion.objects.bulk_create(
        WorkflowVersion(workflow=flow, version=1, definition=definition) for flow in workflows
    )
    execution_rows = Rows(
        Execution,
        ["id", "workflow_id", "version_id", "status", "state_name", "started_at", "finished_at"],
        stamp,
    )

    def execution_values() -> Iterator[tuple[Any, ...]]:
        for n in range(args.executions):
            started = -30 * day + 30 * day * (n + 0.5) / args.executions
            status = ("succeeded",) * 8 + ("failed", "running")
            chosen = status[n % len(status)]
            yield (
                n + 1,
                workflows[n % len(workflows)].pk,
                versions[n % len(versions)].pk,
                chosen,
                "Ping",
                at(started),
                None if chosen == "running" else at(started + 61),
            )

    writer.write(execution_rows, execution_values())
    delivery_rows = Rows(
        NotificationDelivery,
        [
            "id",
            "event",
            "notifier",
            "target",
            "job_id",
            "run_id",
            "payload",
            "status",
            "attempts",
            "created_at",
            "sent_at",
        ],
        stamp,
    )
    events = ("run_finished", "job_failed", "run_uncertain", "execution_failed")

    def delivery_values() -> Iterator[tuple[Any, ...]]:
        payload = json.dumps({"event": "job_failed", "job": 1})
        for n in range(args.deliveries):
            created = -30 * day + 30 * day * (n + 0.5) / args.deliveries
            webhook = n % 3 == 0
            status = ("sent",) * 8 + ("failed", "pending")
            chosen = status[n % len(status)]
            yield (
                n + 1,
                events[n % len(events)],
                "webhook" if webhook else "mail",
                "https://hooks.example.com/schedules" if webhook else "admins",
                n % jobs + 1,
                n * (args.runs // args.deliveries) + 1,
                payload,
                chosen,
                1,
                at(created),
                at(created + 1) if chosen == "sent" else None,
            )

    writer.write(delivery_rows, delivery_values())
    for role, count in (("dispatcher", 1), ("worker", 2)):
        for n in range(count):
            Heartbeat.objects.create(
                name=f"{role}:bench:{n}", role=role, started_at=now, beat_at=now
            )
    User.objects.create_superuser("bench", email="bench@example.com", password=None)
    seconds["workflows, executions, deliveries"] = time.monotonic() - phase

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for sql in connection.ops.sequence_reset_sql(
                no_style(), [Job, Classroom, Step, Run, Execution, NotificationDelivery]
            ):
                cursor.execute(sql)
    phase = time.monotonic()
    analyse()
    seconds["analyse"] = time.monotonic() - phase
    return seconds


def analyse() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("VACUUM ANALYZE")
        else:
            cursor.execute("ANALYZE")
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def urls_to_time() -> list[tuple[str, str]]:
    """(name, url) of every overview endpoint and every changelist page and filter."""
    from django.contrib import admin
    from django.contrib.admin.views.main import ChangeList
    from django.contrib.auth.models import User
    from django.test import RequestFactory
    from django.urls import reverse

    urls = [
        ("admin index", reverse("admin:index")),
        ("overview page", reverse("admin:schedules_overview")),
    ]
    windows = {"lateness": ("1h", "24h"), "upcoming": ("24h", "7d"), "runs": ("24h",)}
    for name in ("lateness", "upcoming", "runs", "problems", "backlog", "health", "cost"):
        url = reverse(f"admin:schedules_overview_{name}")
        for window in windows.get(name, ("",)):
            suffix = f"?window={window}" if window else ""
            urls.append((f"overview {name}{' ' + window if window else ''}", url + suffix))
    user = User.objects.get(username="bench")
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label != "schedules":
            continue
        name = model._meta.model_name
        url = reverse(f"admin:schedules_{name}_changelist")
        urls.append((f"{name} list", url))
        urls.append((f"{name} list page 2", f"{url}?p=2"))
        request = RequestFactory().get(url)
        request.user = user
        changelist: ChangeList = model_admin.get_changelist_instance(request)
        for spec in changelist.filter_specs:
            for choice in spec.choices(changelist):
                query = choice["query_string"]
                if choice.get("selected") or query in ("?", ""):
                    continue  # "All": the first page already
                label = str(choice["display"])
                urls.append((f"{name} list filter {spec.title}={label}", f"{url}{query}"))
    return urls


def time_url(client: Any, url: str, repeat: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as capture:
        response = client.get(url)
    queries = list(capture.captured_queries)  # (read from the log, which the next request clears)
    status = response.status_code
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(url)
        timings.append((time.perf_counter() - start) * 1000)
        status = max(status, response.status_code)
    return {
        "status": status,
        "queries": len(queries),
        "slowest_query_ms": max((float(q["time"]) * 1000 for q in queries), default=0.0),
        "median_ms": statistics.median(timings),
        "max_ms": max(timings),
    }


def run_timings(args: argparse.Namespace) -> list[dict[str, Any]]:
    from django.contrib.auth.models import User
    from django.test import Client

    client = Client(raise_request_exception=False)
    client.force_login(User.objects.get(username="bench"))
    results = []
    print(f"{'median':>8} {'max':>8} {'queries':>7} {'slowest':>8}  {'':4} name", flush=True)
    for name, url in urls_to_time():
        if args.only and args.only not in name:
            continue
        figures = time_url(client, url, args.repeat)
        ok = figures["status"] == 200 and figures["median_ms"] < args.target_ms
        results.append({"name": name, "url": url, "pass": ok, **figures})
        print(
            f"{figures['median_ms']:7.1f}ms {figures['max_ms']:7.1f}ms "
            f"{figures['queries']:>7} {figures['slowest_query_ms']:7.1f}ms  "
            f"{'ok' if ok else 'MISS':4} {name}"
            + ("" if figures["status"] == 200 else f"  (HTTP {figures['status']})"),
            flush=True,
        )
    return results


def compare_alternatives(repeat: int) -> list[dict[str, Any]]:
    """The overview's queries against the obvious alternatives, timed in the database
    connection alone (no view, no JSON): why schedules/overview.py is written as it is."""
    from django.db import connection
    from django.utils import timezone

    from schedules import overview
    from schedules.models import Run, Step

    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    pg = connection.vendor == "postgresql"
    run, step = Run._meta.db_table, Step._meta.db_table

    def epoch(column: str, seconds: int) -> str:
        if pg:
            return f"FLOOR(date_part('epoch', {column}) / {seconds})::bigint"
        return f"CAST(strftime('%%s', {column}) AS INTEGER) / {seconds}"

    value = (
        "date_part('epoch', COALESCE(engine_lateness, lateness))"
        if pg
        else "COALESCE(engine_lateness, lateness)"
    )
    sample = (
        f"SELECT engine, {epoch('started_at', 60)} AS bucket, {value} AS value "
        f"FROM {run} WHERE started_at >= %s AND started_at < %s AND status <> %s "
        "AND lateness IS NOT NULL"
    )
    ranked_in_sql = f"""
        WITH sample AS ({sample}), ranked AS (
            SELECT engine, bucket, value,
                   ROW_NUMBER() OVER (PARTITION BY engine, bucket ORDER BY value) AS rn,
                   COUNT(*) OVER (PARTITION BY engine, bucket) AS n
            FROM sample
        )
        SELECT engine, bucket, MAX(n),
               MAX(CASE WHEN rn = (n + 1) / 2 THEN value END),
               MAX(CASE WHEN rn = (99 * n + 99) / 100 THEN value END),
               MAX(value)
        FROM ranked
        WHERE rn = (n + 1) / 2 OR rn = (99 * n + 99) / 100 OR rn = n
        GROUP BY engine, bucket
    """

    def fetch(sql: str, params: list[Any]) -> Callable[[], object]:
        def call() -> object:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()

        return call

    cases: list[tuple[str, Callable[[], object]]] = []
    for name, window in (("1h", dt.timedelta(hours=1)), ("24h", dt.timedelta(hours=24))):
        params = [adapt(now - window), adapt(now), "skipped"]
        cases.append(
            (
                f"lateness {name}: sorted in SQL, ranks taken in one pass (used)",
                lambda window=window: overview.lateness_per_minute(window=window, now=now),
            )
        )
        cases.append(
            (
                f"lateness {name}: ROW_NUMBER and COUNT OVER PARTITION BY in SQL",
                fetch(ranked_in_sql, params),
            )
        )
        if pg:
            cases.append(
                (
                    f"lateness {name}: percentile_disc WITHIN GROUP (PostgreSQL only)",
                    fetch(
                        f"SELECT engine, bucket, "
                        "percentile_disc(0.5) WITHIN GROUP (ORDER BY value), "
                        "percentile_disc(0.99) WITHIN GROUP (ORDER BY value) "
                        f"FROM ({sample}) AS sample GROUP BY engine, bucket",
                        params,
                    ),
                )
            )
    for name, window, size in (
        ("24h", dt.timedelta(hours=24), 600),
        ("7d", dt.timedelta(days=7), 3600),
    ):
        cases.append(
            (
                f"upcoming {name}: a COUNT subquery per bucket (used)",
                lambda window=window, size=size: overview.steps_upcoming(
                    window=window, bucket=dt.timedelta(seconds=size), now=now
                ),
            )
        )
        cases.append(
            (
                f"upcoming {name}: GROUP BY a time expression",
                fetch(
                    f"SELECT {epoch('due_at', size)} AS b, COUNT(*) FROM {step} "
                    "WHERE state IN (%s, %s) AND due_at >= %s AND due_at < %s GROUP BY b",
                    ["scheduled", "queued", adapt(now), adapt(now + window)],
                ),
            )
        )
    cases.append(
        (
            "runs 24h: a COUNT subquery per status and hour (used)",
            lambda: overview.runs_by_status(
                window=dt.timedelta(hours=24), bucket=dt.timedelta(hours=1), now=now
            ),
        )
    )
    cases.append(
        (
            "runs 24h: GROUP BY status and a time expression",
            fetch(
                f"SELECT status, {epoch('started_at', 3600)} AS b, COUNT(*) "
                f"FROM {run} WHERE started_at >= %s AND started_at < %s GROUP BY status, b",
                [adapt(now - dt.timedelta(hours=24)), adapt(now)],
            ),
        )
    )
    results = []
    print(f"{'median':>8}  query", flush=True)
    for name, call in cases:
        call()
        timings = []
        for _ in range(repeat):
            start = time.perf_counter()
            call()
            timings.append((time.perf_counter() - start) * 1000)
        median = statistics.median(timings)
        results.append({"name": name, "median_ms": median})
        print(f"{median:7.1f}ms  {name}", flush=True)
    return results


def server_version() -> str:
    import sqlite3

    from django.db import connection

    if connection.vendor == "postgresql":
        return str(connection.pg_version)  # type: ignore[attr-defined]
    return sqlite3.sqlite_version


def counts() -> dict[str, int]:
    from schedules.models import Execution, NotificationDelivery, Run, Step

    return {
        "runs": Run.objects.count(),
        "steps": Step.objects.count(),
        "executions": Execution.objects.count(),
        "deliveries": NotificationDelivery.objects.count(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = ROOT / "var" / "bench" / "admin_scale_data"
    data_dir.mkdir(parents=True, exist_ok=True)
    prepare_database(args)
    setup_django(args, data_dir)
    from django.db import connection

    fill_seconds: dict[str, float] = {}
    if not args.reuse:
        started = time.monotonic()
        fill_seconds = fill(args)
        fill_seconds["total"] = time.monotonic() - started
        print(
            "fill: " + ", ".join(f"{phase} {value:.1f} s" for phase, value in fill_seconds.items()),
            flush=True,
        )
    rows = counts()
    print(f"rows: {rows}", flush=True)
    results: list[dict[str, Any]] = []
    alternatives: list[dict[str, Any]] = []
    if args.compare and not args.fill_only:
        alternatives = compare_alternatives(args.repeat)
    if not args.fill_only:
        results = run_timings(args)
        missed = [r for r in results if not r["pass"]]
        print(
            f"{len(results) - len(missed)} of {len(results)} URLs under {args.target_ms:g} ms"
            + (f"; missed: {', '.join(r['name'] for r in missed)}" if missed else ""),
            flush=True,
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "database": args.database,
                    "server_version": server_version(),
                    "machine": {
                        "python": platform.python_version(),
                        "cpus": os.cpu_count(),
                        "platform": platform.platform(),
                    },
                    "rows": rows,
                    "fill_seconds": fill_seconds,
                    "target_ms": args.target_ms,
                    "repeat": args.repeat,
                    "results": results,
                    "alternatives": alternatives,
                },
                indent=2,
            )
        )
    if args.drop and args.database == "postgres":
        connection.close()
        postgres(args, f"DROP DATABASE IF EXISTS {args.db_name} WITH (FORCE)")
    if args.strict and any(not r["pass"] for r in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
