"""Metrics: what the worker and the dispatcher count, the gauges read at scrape time,
honest lateness, and who may read /metrics."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from schedules import metrics, services
from schedules.dispatcher import Dispatcher
from schedules.models import Run, RunStatus, Step, StepState
from schedules.services import steps_sync

pytestmark = pytest.mark.django_db(transaction=True)


def value(metric: Any, *labels: str) -> float:
    """This process's own value of a counter (its file in the multiprocess folder)."""
    return float(metric.labels(*labels)._value.get() if labels else metric._value.get())


def lateness_count(engine: str) -> float:
    histogram = metrics.RUN_LATENESS.labels(engine)
    return float(sum(bucket.get() for bucket in histogram._buckets))


def gauges(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_run_is_counted_by_action_engine_and_status_with_its_lateness(monkeypatch: Any) -> None:
    ok_before = value(metrics.RUNS, "noop", "local", "succeeded")
    late_before = lateness_count("local")
    released_before = value(metrics.STEPS_RELEASED, "local")
    batches_before = metrics.DISPATCH_BATCH._sum.get()
    for _ in range(3):
        services.job_schedule(action="noop", payload={}, due_at=timezone.now())
    published: list[tuple[int, int]] = []
    monkeypatch.setattr("schedules.dispatcher.steps_publish", published.extend)
    assert Dispatcher().release_once() == 3
    pairs = sorted(published)
    assert pairs == sorted(Step.objects.values_list("pk", "version"))
    services.steps_execute(pairs=pairs, worker="w:1")
    assert Run.objects.filter(status=RunStatus.SUCCEEDED).count() == 3
    assert value(metrics.RUNS, "noop", "local", "succeeded") == ok_before + 3
    assert lateness_count("local") == late_before + 3
    assert value(metrics.STEPS_RELEASED, "local") == released_before + 3
    assert metrics.DISPATCH_BATCH._sum.get() == batches_before + 3


def test_a_job_saved_after_its_due_time_is_late_but_its_engine_is_not() -> None:
    """Honest lateness: the 5 s before the job existed are not the engine's."""
    due = timezone.now() - dt.timedelta(seconds=5)
    job = services.job_schedule(action="noop", payload={}, due_at=due)
    step = job.steps.get()
    assert step.armed_at is not None and step.armed_at > due
    services.steps_execute(pairs=[(step.pk, step.version)], worker="w:1")
    run = Run.objects.get()
    assert run.lateness is not None and run.engine_lateness is not None
    assert run.lateness >= dt.timedelta(seconds=5)
    assert run.engine_lateness < dt.timedelta(seconds=1)
    assert run.lateness - run.engine_lateness >= dt.timedelta(seconds=4.9)


def test_a_job_armed_before_its_due_time_has_one_lateness(time_machine: Any) -> None:
    start = timezone.now()
    time_machine.move_to(start, tick=False)
    job = services.job_schedule(action="noop", payload={}, due_at=start + dt.timedelta(seconds=30))
    step = job.steps.get()
    time_machine.move_to(start + dt.timedelta(seconds=30, milliseconds=250), tick=False)
    services.steps_execute(pairs=[(step.pk, step.version)], worker="w:1")
    run = Run.objects.get()
    assert run.lateness == run.engine_lateness == dt.timedelta(milliseconds=250)


def test_arm_errors_are_counted_by_engine(recording_engine: Any) -> None:
    before = value(metrics.ARM_ERRORS, "recording")
    recording_engine.fail_next = 1
    job = services.job_schedule(
        action="noop", payload={}, due_at=timezone.now() + dt.timedelta(hours=1)
    )
    step = job.steps.get()
    assert step.arm_state == "error"
    assert value(metrics.ARM_ERRORS, "recording") == before + 1
    steps_sync(step_ids=[step.pk])  # armed this time: nothing more counted
    assert value(metrics.ARM_ERRORS, "recording") == before + 1


def test_uncertain_runs_are_counted() -> None:
    run = Run(action="noop", engine="local", status=RunStatus.SUCCEEDED, uncertain=True)
    before = value(metrics.UNCERTAIN_RUNS, "noop", "local")
    runs_before = value(metrics.RUNS, "noop", "local", "succeeded")
    metrics.run_recorded(run)
    assert value(metrics.UNCERTAIN_RUNS, "noop", "local") == before + 1
    assert value(metrics.RUNS, "noop", "local", "succeeded") == runs_before + 1


def test_backlog_gauges_are_read_at_scrape_time(tmp_path: Any, settings: Any) -> None:
    settings.SCHEDULES_METRICS_DIR = str(tmp_path)
    now = timezone.now()
    settings.SCHEDULES_PAST_GRACE = 600
    for seconds in (3, 60):
        services.job_schedule(action="noop", payload={}, due_at=now - dt.timedelta(seconds=seconds))
    services.job_schedule(action="noop", payload={}, due_at=now + dt.timedelta(hours=1))
    queued = services.job_schedule(action="noop", payload={}, due_at=now)
    Step.objects.filter(job=queued).update(state=StepState.QUEUED, queued_at=now)

    values = gauges(Client().get("/metrics").content.decode())
    assert values[("schedules_steps_due_unreleased", (("engine", "local"),))] == 2
    oldest = values[("schedules_steps_due_unreleased_oldest_seconds", (("engine", "local"),))]
    assert 60 <= oldest < 90
    assert values[("schedules_steps_released_unstarted", (("engine", "local"),))] == 1


def test_dead_letter_depth_is_read_from_the_queue_redrive_policy(aws: Any, settings: Any) -> None:
    from schedules.aws import aws_client

    settings.CELERY_BROKER_URL = "sqs://"
    assert metrics._dead_letter_depth() == 0
    aws_client("sqs").send_message(QueueUrl=aws.dlq_url, MessageBody="{}")
    aws_client("sqs").send_message(QueueUrl=aws.dlq_url, MessageBody="{}")
    assert metrics._dead_letter_depth() == 2
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/15"
    assert metrics._dead_letter_depth() is None


@pytest.mark.parametrize(
    ("remote", "authorization", "token", "networks", "status"),
    [
        ("127.0.0.1", "", "", ["127.0.0.0/8"], 200),
        ("10.1.2.3", "", "", ["127.0.0.0/8"], 403),
        ("10.1.2.3", "", "", ["10.0.0.0/8"], 200),
        ("10.1.2.3", "Bearer s3cret", "s3cret", [], 200),
        ("10.1.2.3", "Bearer wrong", "s3cret", [], 403),
        ("10.1.2.3", "Bearer ", "", [], 403),  # no token set: a bearer is not enough
        ("::1", "", "", ["::1/128"], 200),
    ],
)
def test_who_may_read_metrics(
    remote: str, authorization: str, token: str, networks: list[str], status: int, settings: Any
) -> None:
    settings.SCHEDULES_METRICS_TOKEN = token
    settings.SCHEDULES_METRICS_ALLOWED_NETWORKS = networks
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    answer = Client().get("/metrics", REMOTE_ADDR=remote, **headers)
    assert answer.status_code == status
    if status == 403:
        assert b"SCHEDULES_METRICS_TOKEN" in answer.content
    else:
        assert answer["Content-Type"].startswith("text/plain; version=")


def exported_names() -> set[str]:
    """Every sample name the product exports: its counters and histograms, and the
    gauges read at scrape time."""
    from prometheus_client import Counter, Histogram

    names: set[str] = set()
    for metric in vars(metrics).values():
        if isinstance(metric, Counter):
            names.add(f"{metric._name}_total")
        elif isinstance(metric, Histogram):
            names |= {f"{metric._name}_{suffix}" for suffix in ("bucket", "sum", "count")}
    names |= {family.name for family in metrics.StateCollector().collect()}
    names.add("schedules_dead_letter_messages")  # only where SQS is the broker
    return names


def test_the_dashboard_shows_only_metrics_the_product_exports() -> None:
    import json
    import re
    from pathlib import Path

    from django.conf import settings

    path = Path(settings.BASE_DIR) / "deploy" / "grafana" / "schedules-dashboard.json"
    dashboard = json.loads(path.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\bschedules_[a-z_]+", expr)}
    assert used, "the dashboard queries nothing"
    assert used <= exported_names(), used - exported_names()
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Lateness p50 by engine", "Lateness p99 by engine"} <= titles
    assert {"Runs per second by status", "Due but not released"} <= titles
