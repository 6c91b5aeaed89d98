"""The admin overview: its numbers on a known data set, who may see it, the page, and
plans that read indexes rather than whole tables (on SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.contrib.staticfiles import finders
from django.db import connection
from django.test import Client
from django.urls import reverse

from schedules import overview, services
from schedules.admin_site import SchedulesAdminSite
from schedules.models import Heartbeat, Job, Run, RunStatus, Step, StepState
from schedules.selectors import _percentile

pytestmark = pytest.mark.django_db

#: A whole hour, so every bucket of every window is aligned.
NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
ENDPOINTS = ("lateness", "upcoming", "runs", "problems", "backlog", "health", "cost")


def endpoint(name: str) -> str:
    return reverse(f"admin:schedules_overview_{name}")


@pytest.fixture
def frozen(time_machine: Any) -> dt.datetime:
    time_machine.move_to(NOW, tick=False)
    return NOW


@pytest.fixture
def job(frozen: dt.datetime) -> Job:
    return services.job_schedule(action="noop", due_at=frozen + dt.timedelta(days=30))


def add_run(job: Job, *, started_at: dt.datetime, **fields: Any) -> Run:
    step = job.steps.get()
    fields.setdefault("status", RunStatus.SUCCEEDED)
    fields.setdefault("engine", "local")
    fields.setdefault("lateness", dt.timedelta(seconds=1))
    return Run.objects.create(
        step=step,
        job=job,
        action=job.action,
        version=1,
        due_at=started_at,
        started_at=started_at,
        **fields,
    )


def staff_client(*, superuser: bool = True, perms: tuple[str, ...] = ()) -> Client:
    user = User.objects.create_user(
        "staff" if superuser or perms else "other",
        is_staff=True,
        is_superuser=superuser,
    )
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


# --- The site ----------------------------------------------------------------------------


def test_the_default_admin_site_is_the_projects_and_holds_every_model_admin() -> None:
    assert isinstance(admin.site, SchedulesAdminSite)
    registered = {model._meta.model_name for model in admin.site._registry}
    assert {"job", "classroom", "step", "run", "execution", "workflow"} <= registered
    assert reverse("admin:schedules_overview") == "/admin/overview/"


def test_the_index_links_to_the_overview() -> None:
    response = staff_client().get(reverse("admin:index"))
    assert response.status_code == 200
    assert f'href="{reverse("admin:schedules_overview")}"' in response.content.decode()


# --- Who may see it ----------------------------------------------------------------------


@pytest.mark.parametrize("name", [None, *ENDPOINTS])
def test_anonymous_users_are_sent_to_the_login(name: str | None) -> None:
    url = reverse("admin:schedules_overview") if name is None else endpoint(name)
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize("name", [None, *ENDPOINTS])
def test_users_who_are_not_staff_are_refused(name: str | None) -> None:
    user = User.objects.create_user("visitor", is_staff=False)
    client = Client()
    client.force_login(user)
    url = reverse("admin:schedules_overview") if name is None else endpoint(name)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_without_the_view_run_permission_are_refused() -> None:
    client = staff_client(superuser=False)
    assert client.get(reverse("admin:schedules_overview")).status_code == 403
    assert client.get(endpoint("lateness")).status_code == 403
    allowed = staff_client(superuser=False, perms=("view_run",))
    assert allowed.get(endpoint("lateness")).status_code == 200


def test_an_unknown_window_is_a_400_naming_the_choices() -> None:
    response = staff_client().get(endpoint("lateness"), {"window": "3d"})
    assert response.status_code == 400
    assert "1h, 24h" in response.json()["error"]


# --- The numbers -------------------------------------------------------------------------


def test_lateness_is_the_nearest_rank_p50_and_p99_per_engine_and_minute(job: Job) -> None:
    minute = NOW - dt.timedelta(minutes=10)
    local = [dt.timedelta(seconds=s) for s in (7, 3, 10, 1, 5, 9, 2, 8, 6, 4)]
    for i, value in enumerate(local):
        # The engine's own lateness wins over the lateness from the due time.
        add_run(
            job,
            started_at=minute + dt.timedelta(seconds=i),
            lateness=value + dt.timedelta(hours=1) if i % 2 else value,
            engine_lateness=value if i % 2 else None,
        )
    sfn = [dt.timedelta(milliseconds=ms) for ms in range(1, 101)]
    random.Random(1).shuffle(sfn)
    for i, value in enumerate(sfn):
        add_run(
            job,
            engine="stepfunctions",
            started_at=minute + dt.timedelta(milliseconds=500 * i),
            lateness=value,
            engine_lateness=value,
        )
    add_run(job, started_at=minute + dt.timedelta(minutes=1), lateness=dt.timedelta(seconds=42))
    # Left out: a skipped delivery, a run with no lateness, runs outside the window.
    add_run(job, started_at=minute, status=RunStatus.SKIPPED, lateness=dt.timedelta(hours=5))
    add_run(job, started_at=minute, lateness=None)
    add_run(job, started_at=NOW - dt.timedelta(minutes=61), lateness=dt.timedelta(hours=5))
    add_run(job, started_at=NOW, lateness=dt.timedelta(hours=5))

    client = staff_client()
    data = client.get(endpoint("lateness"), {"window": "1h"}).json()

    assert data["window"] == "1h"
    assert data["bucket_seconds"] == 60
    assert data["until"] - data["since"] == 3_600_000
    engines = {row["engine"]: row for row in data["engines"]}
    assert set(engines) == {"local", "stepfunctions"}
    t = int(minute.timestamp() * 1000)
    assert engines["local"]["points"] == [
        {"t": t, "runs": 10, "p50": 5.0, "p99": 10.0, "max": 10.0},
        {"t": t + 60_000, "runs": 1, "p50": 42.0, "p99": 42.0, "max": 42.0},
    ]
    assert engines["local"]["runs"] == 11
    (point,) = engines["stepfunctions"]["points"]
    ordered = sorted(sfn)
    assert point["runs"] == 100
    assert point["p50"] == pytest.approx(_percentile(ordered, 0.50).total_seconds())
    assert point["p99"] == pytest.approx(_percentile(ordered, 0.99).total_seconds())
    assert point["p50"] == pytest.approx(0.050)
    assert point["p99"] == pytest.approx(0.099)

    # The day's window holds the run 61 minutes ago as well, in its own minute.
    data = client.get(endpoint("lateness"), {"window": "24h"}).json()
    (local,) = (row for row in data["engines"] if row["engine"] == "local")
    points = {point["t"]: point for point in local["points"]}
    assert len(points) == 3
    assert points[int((NOW - dt.timedelta(minutes=61)).timestamp() * 1000)]["p99"] == 18000


def test_upcoming_work_counts_steps_still_to_run_per_bucket(frozen: dt.datetime) -> None:
    def step_at(delta: dt.timedelta, state: str = StepState.SCHEDULED) -> None:
        job = services.job_schedule(action="noop", due_at=frozen + dt.timedelta(days=30))
        Step.objects.filter(job=job).update(due_at=frozen + delta, state=state)

    for minutes in (0, 5, 9):
        step_at(dt.timedelta(minutes=minutes))
    step_at(dt.timedelta(minutes=15), StepState.QUEUED)
    step_at(dt.timedelta(minutes=5), StepState.SUCCEEDED)
    step_at(dt.timedelta(minutes=5), StepState.CANCELLED)
    step_at(dt.timedelta(minutes=5), StepState.RUNNING)
    step_at(dt.timedelta(hours=25))
    step_at(dt.timedelta(minutes=-5))  # overdue: the backlog, not upcoming
    step_at(dt.timedelta(days=7))  # the end of a window is not in it

    client = staff_client()
    day = client.get(endpoint("upcoming"), {"window": "24h"}).json()
    assert day["bucket_seconds"] == 600
    assert len(day["buckets"]) == 144
    assert [b["steps"] for b in day["buckets"][:3]] == [3, 1, 0]
    assert day["total"] == 4
    first = day["buckets"][0]
    assert first["t"] == first["start"] == int(NOW.timestamp() * 1000)
    assert first["end"] - first["start"] == 600_000

    week = client.get(endpoint("upcoming"), {"window": "7d"}).json()
    assert week["bucket_seconds"] == 3600
    assert len(week["buckets"]) == 168
    assert week["buckets"][0]["steps"] == 4
    assert week["buckets"][25]["steps"] == 1
    assert week["total"] == 5


def test_buckets_of_an_unaligned_window_are_partial_at_both_ends() -> None:
    start = NOW + dt.timedelta(minutes=7)
    cuts = overview.buckets(start, start + dt.timedelta(hours=1), dt.timedelta(minutes=10))
    assert len(cuts) == 7
    assert cuts[0].start == start
    assert cuts[0].at == NOW
    assert cuts[0].end == NOW + dt.timedelta(minutes=10)
    assert cuts[-1].end == start + dt.timedelta(hours=1)
    assert all(a.end == b.start for a, b in itertools.pairwise(cuts))


def test_runs_by_status_per_hour_over_the_last_day(job: Job) -> None:
    for status in (RunStatus.SUCCEEDED, RunStatus.SUCCEEDED, RunStatus.FAILED):
        add_run(job, started_at=NOW - dt.timedelta(minutes=30), status=status)
    add_run(job, started_at=NOW - dt.timedelta(hours=23, minutes=30), status=RunStatus.RETRYING)
    add_run(job, started_at=NOW - dt.timedelta(hours=25))  # before the window
    add_run(job, started_at=NOW)  # the window ends now

    data = staff_client().get(endpoint("runs")).json()

    assert data["bucket_seconds"] == 3600
    assert len(data["buckets"]) == 24
    assert data["buckets"][0] == int((NOW - dt.timedelta(hours=24)).timestamp() * 1000)
    statuses = {row["status"]: row for row in data["statuses"]}
    assert set(statuses) == {status.value for status in RunStatus}
    assert statuses["succeeded"]["counts"][-1] == 2
    assert statuses["succeeded"]["total"] == 2
    assert statuses["failed"]["counts"][-1] == 1
    assert statuses["retrying"]["counts"][0] == 1
    assert data["total"] == 4
    assert statuses["failed"]["url"] == (
        reverse("admin:schedules_run_changelist") + "?status__exact=failed&started=past_day"
    )


def test_failures_and_uncertain_runs_newest_first_with_their_links(job: Job) -> None:
    for minutes in range(25):
        add_run(
            job,
            started_at=NOW - dt.timedelta(minutes=minutes, seconds=30),
            status=RunStatus.FAILED,
            error="boom " * 100,
        )
    abandoned = add_run(job, started_at=NOW - dt.timedelta(seconds=10), status="abandoned")
    uncertain = add_run(
        job, started_at=NOW - dt.timedelta(hours=50), uncertain=True, note="took over"
    )
    add_run(job, started_at=NOW - dt.timedelta(minutes=1))  # succeeded: in neither list

    data = staff_client().get(endpoint("problems")).json()

    failures = data["failures"]
    assert len(failures) == 20
    assert failures[0]["id"] == abandoned.pk
    assert [row["status"] for row in failures[1:]] == ["failed"] * 19
    started = [row["started_at"] for row in failures]
    assert started == sorted(started, reverse=True)
    assert len(failures[1]["error"]) == overview.ERROR_CHARS
    assert failures[0]["url"] == reverse("admin:schedules_run_change", args=[abandoned.pk])
    assert failures[0]["owner"] == f"job {job.pk}"
    assert failures[0]["owner_url"] == reverse("admin:schedules_job_change", args=[job.pk])
    assert failures[0]["step_url"] == reverse(
        "admin:schedules_step_change", args=[abandoned.step_id]
    )
    (row,) = data["uncertain"]
    assert row["id"] == uncertain.pk
    assert row["note"] == "took over"
    assert data["uncertain_url"].endswith("?uncertain__exact=1")


def test_backlog_per_engine(frozen: dt.datetime, settings: Any) -> None:
    settings.SCHEDULES_PAST_GRACE = 3600
    for seconds in (30, 90):
        services.job_schedule(action="noop", due_at=frozen - dt.timedelta(seconds=seconds))
    services.job_schedule(action="noop", due_at=frozen + dt.timedelta(hours=1))
    queued = services.job_schedule(action="noop", due_at=frozen + dt.timedelta(minutes=1))
    Step.objects.filter(job=queued).update(state=StepState.QUEUED, queued_at=frozen)

    data = staff_client().get(endpoint("backlog")).json()

    assert data["engines"] == [
        {
            "engine": "local",
            "due_unreleased": 2,
            "oldest_due_at": "2026-12-07T11:58:30Z",
            "oldest_wait_seconds": 90.0,
            "released_unstarted": 1,
        }
    ]
    assert data["due_unreleased"] == 2
    assert data["released_unstarted"] == 1


def test_health_from_the_heartbeats_without_the_broker(
    frozen: dt.datetime, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.SCHEDULES_HEARTBEAT_STALE_AFTER = 30
    Heartbeat.objects.create(
        name="dispatcher:h:1", role="dispatcher", started_at=frozen, beat_at=frozen
    )
    Heartbeat.objects.create(
        name="worker:h:2",
        role="worker",
        started_at=frozen - dt.timedelta(hours=1),
        beat_at=frozen - dt.timedelta(seconds=95),
    )

    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the overview must not ask the broker")

    monkeypatch.setattr("scheduler_project.celery.app.connection_for_write", broker_down)
    data = staff_client().get(endpoint("health")).json()

    roles = {row["role"]: row for row in data["roles"]}
    assert roles["dispatcher"]["ok"] is True
    assert roles["dispatcher"]["alive"] == 1
    assert roles["worker"]["ok"] is False
    assert roles["worker"]["age_seconds"] == 95.0
    assert "95 s" in roles["worker"]["message"]
    assert data["ok"] is False
    assert [(p["name"], p["alive"]) for p in data["processes"]] == [
        ("dispatcher:h:1", True),
        ("worker:h:2", False),
    ]


def test_no_heartbeat_at_all_says_nothing_runs(frozen: dt.datetime) -> None:
    data = staff_client().get(endpoint("health")).json()
    assert [role["ok"] for role in data["roles"]] == [False, False]
    assert "none has written a heartbeat" in data["roles"][0]["message"]


# --- The page ----------------------------------------------------------------------------


def test_the_page_has_every_chart_its_scripts_and_the_lists(job: Job) -> None:
    failed = add_run(job, started_at=NOW - dt.timedelta(minutes=1), status=RunStatus.FAILED)
    response = staff_client().get(reverse("admin:schedules_overview"))
    assert response.status_code == 200
    page = response.content.decode()
    assert [t.name for t in response.templates][:2] == [
        "admin/schedules/overview.html",
        "admin/base_site.html",
    ]
    for chart in ("lateness", "upcoming", "runs"):
        assert f'data-chart="{chart}" data-url="{endpoint(chart)}"' in page
        assert f'data-empty-for="{chart}"' in page
    assert '<div class="breadcrumbs">' in page
    assert "/static/schedules/vendor/chart.umd.min.js" in page
    assert "/static/schedules/overview.js" in page
    assert "<script>" not in page.split("<body", 1)[1]  # no inline script
    assert reverse("admin:schedules_run_change", args=[failed.pk]) in page
    assert "No uncertain run." in page
    assert "Celery worker" in page


def test_the_static_files_are_served_by_the_app() -> None:
    chart = finders.find("schedules/vendor/chart.umd.min.js")
    assert chart is not None
    with open(chart, encoding="utf-8") as source:
        assert "Chart.js v4." in source.read(200)
    assert finders.find("schedules/vendor/chart.js.LICENSE.md") is not None
    script = finders.find("schedules/overview.js")
    assert script is not None
    with open(script, encoding="utf-8") as source:
        text = source.read()
    for mark in ('dataset.drawn = "true"', "dataset.points", "No data in this window."):
        assert mark in text


# --- Query plans -------------------------------------------------------------------------

RUN_TABLE = Run._meta.db_table
STEP_TABLE = Step._meta.db_table
#: Enough rows that a planner prefers an index to reading the table.
RUNS, STEPS = 20_000, 10_000


@pytest.fixture
def loaded(frozen: dt.datetime) -> dt.datetime:
    """20,000 runs over 30 days (a few uncertain, some failed) and 10,000 pending steps
    over 7 days, analysed."""
    job = services.job_schedule(action="noop", due_at=frozen + dt.timedelta(days=30))
    step = job.steps.get()
    span = dt.timedelta(days=30) / RUNS
    statuses = [RunStatus.SUCCEEDED] * 18 + [RunStatus.FAILED, RunStatus.ABANDONED]
    Run.objects.bulk_create(
        Run(
            step=step,
            job=job,
            action="noop",
            engine="local",
            version=1,
            status=statuses[i % len(statuses)],
            uncertain=i % 997 == 0,
            due_at=frozen - span * i,
            started_at=frozen - span * i,
            lateness=dt.timedelta(milliseconds=i % 50),
        )
        for i in range(RUNS)
    )
    services.job_schedule_many(
        jobs=[
            {"action": "noop", "due_at": frozen + dt.timedelta(days=7) * (i + 1) / (STEPS + 1)}
            for i in range(STEPS)
        ]
    )
    with connection.cursor() as cursor:
        for table in (RUN_TABLE, STEP_TABLE):
            cursor.execute(f"ANALYZE {table}")
    return frozen


def captured(call: Callable[[], object]) -> list[tuple[str, tuple[object, ...]]]:
    sent: list[tuple[str, tuple[object, ...]]] = []

    def capture(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        if (RUN_TABLE in sql or STEP_TABLE in sql) and sql.lstrip().upper().startswith(
            ("SELECT", "WITH")
        ):
            sent.append((sql, tuple(params or ())))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        call()
    return sent


def plan_of(sql: str, params: tuple[object, ...]) -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"EXPLAIN {sql}", params)
            return "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        return "\n".join(str(row[-1]) for row in cursor.fetchall())


def whole_table_reads(plan: str) -> list[str]:
    """Lines that read all of the run or step table (or all of one of its indexes)."""
    bad = []
    for line in plan.splitlines():
        for table in (RUN_TABLE, STEP_TABLE):
            if connection.vendor == "postgresql":
                if f"Seq Scan on {table}" in line:
                    bad.append(line)
            elif line.startswith(f"SCAN {table}") and "run_uncertain_started" not in line:
                # (a scan of the partial index holds only the uncertain runs)
                bad.append(line)
    return bad


def test_the_overview_reads_indexes_not_tables(loaded: dt.datetime) -> None:
    now = loaded
    calls: dict[str, Callable[[], object]] = {
        "lateness 1h": lambda: overview.lateness_per_minute(window=dt.timedelta(hours=1), now=now),
        "lateness 24h": lambda: overview.lateness_per_minute(
            window=dt.timedelta(hours=24), now=now
        ),
        "upcoming 24h": lambda: overview.steps_upcoming(
            window=dt.timedelta(hours=24), bucket=dt.timedelta(minutes=10), now=now
        ),
        "upcoming 7d": lambda: overview.steps_upcoming(
            window=dt.timedelta(days=7), bucket=dt.timedelta(hours=1), now=now
        ),
        "runs by status": lambda: overview.runs_by_status(
            window=dt.timedelta(hours=24), bucket=dt.timedelta(hours=1), now=now
        ),
        "failures": overview.runs_failed_latest,
        "uncertain": overview.runs_uncertain_latest,
        "backlog": lambda: overview.steps_backlog(now=now),
    }
    checked = 0
    for name, call in calls.items():
        statements = captured(call)
        assert statements, name
        for sql, params in statements:
            plan = plan_of(sql, params)
            assert not whole_table_reads(plan), f"{name}: {sql[:300]}\n{plan}"
            checked += 1
    assert checked >= len(calls)
    # The lists named the index they rely on.
    (statement,) = captured(overview.runs_uncertain_latest)
    assert "run_uncertain_started" in plan_of(*statement)
    # And the figures are the data's: 24 hours of a 30-day spread of 20,000 runs.
    _cuts, series = overview.runs_by_status(
        window=dt.timedelta(hours=24), bucket=dt.timedelta(hours=1), now=now
    )
    assert sum(row.total for row in series) == pytest.approx(RUNS / 30, abs=2)
    assert len(overview.runs_uncertain_latest()) == 20
    upcoming = overview.steps_upcoming(
        window=dt.timedelta(days=7), bucket=dt.timedelta(hours=1), now=now
    )
    assert sum(count for _cut, count in upcoming) == STEPS


@pytest.mark.parametrize(
    "url",
    [
        "/admin/schedules/step/?action__exact=workflow_wait",
        "/admin/schedules/step/?arm_state__exact=error",
        "/admin/schedules/step/?state__exact=failed",
        "/admin/schedules/run/?action__exact=workflow_wait",
        "/admin/schedules/run/?uncertain__exact=1",
    ],
)
def test_a_changelist_filtered_on_a_rare_value_seeks_an_index(
    loaded: dt.datetime, url: str
) -> None:
    """Migration 0014's indexes: a value few rows have (or none) is a seek, not a read of
    every step or run to find out (docs/benchmarks.md, "The admin at scale")."""
    client = staff_client()
    statements = captured(lambda: client.get(url))
    assert statements
    for sql, params in statements:
        plan = plan_of(sql, params)
        assert not whole_table_reads(plan), f"{url}: {sql[:300]}\n{plan}"
