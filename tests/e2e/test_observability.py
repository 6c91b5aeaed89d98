"""End to end: /metrics counts what a real dispatcher and worker did, and /health/ sees
each of them stop."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

import tests.e2e.actions  # noqa: F401  (registers "fail" in this process too, for validation)
from schedules import services
from schedules.models import Run, RunStatus

from .conftest import REDIS_URL, RecordingService, start_stack
from .test_local_engine import wait_until_final

pytestmark = pytest.mark.e2e


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_for(what: str, predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"not {what} after {timeout} s")


@pytest.mark.parametrize("broker", ["filesystem://", REDIS_URL], ids=["filesystem", "redis"])
def test_metrics_and_health_of_a_running_stack(
    broker: str,
    transactional_db: None,
    tmp_path: Path,
    recording_service: type[RecordingService],
    settings: Any,
) -> None:
    stack = start_stack(
        tmp_path,
        recording_service,
        broker=broker,
        queue=f"e2e-{uuid.uuid4().hex[:8]}",
        SCHEDULES_ACTION_MODULES="tests.e2e.actions",
        SCHEDULES_HEARTBEAT_INTERVAL="0.5",
    )
    settings.CELERY_BROKER_URL = broker
    settings.SCHEDULES_METRICS_DIR = str(tmp_path / "metrics")
    settings.SCHEDULES_HEARTBEAT_STALE_AFTER = 3
    client = Client()
    try:
        # Both processes beat: healthy.
        healthy = wait_for("healthy", lambda: client.get("/health/").status_code == 200, 30)
        assert healthy
        body = client.get("/health/").json()
        assert set(body["checks"]) == {"database", "broker", "dispatcher", "workers"}

        due = timezone.now() + dt.timedelta(seconds=1)
        for _ in range(3):
            services.job_schedule(action="noop", payload={}, due_at=due)
        services.job_schedule(action="fail", payload={"reason": "on purpose"}, due_at=due)
        wait_until_final(30, stack)
        assert Run.objects.filter(status=RunStatus.FAILED).count() == 1

        runs = "schedules_runs_total"
        noop_ok = (("action", "noop"), ("engine", "local"), ("status", "succeeded"))
        failed = (("action", "fail"), ("engine", "local"), ("status", "failed"))

        def scrape() -> dict[Any, float]:
            scraped = client.get("/metrics")
            assert scraped.status_code == 200
            return samples(scraped.content.decode())

        # The worker counts a run just after its record commits: a scrape may trail the
        # database by that instant, so wait for the counts rather than read them once.
        values = wait_for(
            "every run counted",
            lambda: (v := scrape()).get((runs, noop_ok), 0) + v.get((runs, failed), 0) == 4 and v,
            10,
        )
        assert values[(runs, noop_ok)] == 3
        assert values[(runs, failed)] == 1
        assert values[("schedules_steps_released_total", (("engine", "local"),))] == 4
        lateness = values[("schedules_run_lateness_seconds_count", (("engine", "local"),))]
        assert lateness == 4
        # Every start was within the hour: the +Inf bucket holds them all, and so does 1 h.
        hour = (("engine", "local"), ("le", "3600.0"))
        assert values[("schedules_run_lateness_seconds_bucket", hour)] == 4
        assert values[("schedules_dispatch_batch_size_count", ())] >= 1
        assert values[("schedules_processes_alive", (("role", "dispatcher"),))] == 1
        assert values[("schedules_processes_alive", (("role", "worker"),))] == 1
        # Nothing is left due or queued.
        assert not [key for key in values if key[0] == "schedules_steps_due_unreleased"]

        # The dispatcher stops (cleanly): its check fails at once, the workers' does not.
        dispatcher = stack.processes[0]
        dispatcher.terminate()
        dispatcher.wait(timeout=15)
        answer = client.get("/health/")
        assert answer.status_code == 503
        checks = answer.json()["checks"]
        assert not checks["dispatcher"]["ok"]
        assert "no dispatcher" in checks["dispatcher"]["error"]
        assert checks["workers"]["ok"]

        # The worker is killed: its beat goes stale and its check fails too.
        worker = stack.processes[1]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

        def workers_down() -> bool:
            return not client.get("/health/?check=workers").json()["checks"]["workers"]["ok"]

        wait_for("workers down", workers_down, 15)
        error = client.get("/health/").json()["checks"]["workers"]["error"]
        assert "no Celery worker has written a heartbeat" in error
    finally:
        stack.stop()
