"""Small versions of the fault suite (bench/faults.py) with exact assertions: nothing lost,
nothing started twice unless flagged uncertain, every worker still running.

Real processes (dispatchers, Celery workers) on the test database. The broker is the
folder on SQLite and Redis on PostgreSQL (the shapes teams deploy), or a server the test
starts itself when it kills it: a Redis server, a RabbitMQ node. Times are not asserted
(bench/faults.py measures them); counts are.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

import bench.actions  # noqa: F401  (registers bench_mark here too, for validation)
from bench.faults import Harness, Sizes, claim_then_die, redis_restart
from bench.servers import RabbitNode, RedisServer
from schedules.models import Run, RunStatus, Step, StepState

from .conftest import REDIS_URL, database_url

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def shape() -> str:
    return "pg-redis" if connection.vendor == "postgresql" else "sqlite-folder"


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """A harness on the test database and the broker of the database's shape."""
    broker = REDIS_URL if connection.vendor == "postgresql" else "filesystem://"
    h = Harness(tmp_path, database_url=database_url(), broker_url=broker)
    yield h
    h.stop()


def worker_of(run: Run, h: Harness) -> str:
    """The harness's name of the worker process group a run's worker belongs to."""
    node = run.worker.split("@")[0]  # "<queue>-<n>@<host>:<pid>"
    return f"worker-{node.rsplit('-', 1)[1]}"


def test_a_worker_killed_mid_action_loses_and_doubles_nothing(harness: Harness):
    h = harness
    h.start_dispatcher()
    h.start_worker()
    h.start_worker()
    start = time.time() + 2
    ids = h.schedule(60, start=start, window=4, long_every=30, long=3.0)
    # The first long job (3 s) starts at `start`: kill its worker (main process and pool).
    deadline = time.monotonic() + 30
    running = None
    while running is None and time.monotonic() < deadline:
        running = Run.objects.filter(
            job_id=ids[0], status=RunStatus.RUNNING, started_at__isnull=False
        ).first()
        time.sleep(0.05)
    assert running is not None, "the long job never started"
    time.sleep(0.5)  # mid-action
    killed = h.kill(worker_of(running, h))
    assert running.step_id in killed.hit  # the step it was running was held by it
    h.start_worker(wait=False)  # as a supervisor would
    assert h.wait_final(timeout=90), "not every step finished"
    result = h.tally(shape(), "worker_kill", ids, [killed])
    assert (result.lost, result.doubled, result.worker_exits) == (0, 0, 0), result
    first, second = (
        Run.objects.filter(job_id=ids[0]).exclude(status=RunStatus.SKIPPED).order_by("attempt")
    )
    assert first.status == RunStatus.ABANDONED
    assert second.status == RunStatus.SUCCEEDED and second.uncertain
    assert result.doubled_uncertain >= 1


def test_a_dispatcher_that_dies_holding_a_claim_or_is_killed_loses_nothing(harness: Harness):
    h = harness
    h.start_worker()
    h.start_worker()
    # A dispatcher claims a batch and dies before it publishes it; then one starts.
    early = h.schedule(20, start=time.time() - 1, window=0.5)
    died = claim_then_die(h)
    assert len(died.hit) == 20
    assert Step.objects.filter(state=StepState.QUEUED).exclude(holder="").count() == 20
    h.start_dispatcher()
    # Two dispatchers; one is SIGKILLed while jobs fall due, and started again.
    h.start_dispatcher()
    later = h.schedule(100, start=time.time() + 2, window=5)
    time.sleep(4.5)
    killed = h.kill(h.alive("dispatcher")[0])
    time.sleep(1)
    h.start_dispatcher()
    assert h.wait_final(timeout=90), "not every step finished"
    result = h.tally(shape(), "dispatcher_kill", early + later, [died, killed])
    assert (result.lost, result.doubled, result.doubled_uncertain) == (0, 0, 0), result
    assert result.uncertain == 0 and result.worker_exits == 0


def test_two_dispatchers_at_once_release_every_step_exactly_once(harness: Harness):
    h = harness
    h.start_dispatcher()
    h.start_dispatcher()
    h.start_worker()
    h.start_worker()
    ids = h.schedule(300, start=time.time() + 2, window=2)
    assert h.wait_final(timeout=90), "not every step finished"
    result = h.tally(shape(), "two_dispatchers", ids, [])
    assert (result.lost, result.doubled, result.doubled_uncertain) == (0, 0, 0), result
    assert result.uncertain == 0 and result.worker_exits == 0
    assert Run.objects.filter(step__job_id__in=ids).count() == 300


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_workers_survive_redis_restarts_and_every_step_runs_once(
    tmp_path: Path, own_redis: RedisServer
):
    """The Redis broker is killed (it keeps nothing) and started again twice while jobs
    fall due and workers run them. Before the fix in workers/redis_transport.py the
    worker exited with AttributeError('NoneType' object has no attribute 'hostname')."""
    h = Harness(tmp_path, database_url=database_url(), broker_url=own_redis.url(0), redis=own_redis)
    try:
        result = redis_restart(h, shape(), Sizes(jobs=150, window=8, restarts=2))
        logs = "".join(h.log(name) for name in list(h.processes) + list(h.exits))
    finally:
        h.stop()
    assert (result.lost, result.doubled, result.doubled_uncertain) == (0, 0, 0), result
    assert result.worker_exits == 0, result
    assert "Connection to broker lost" in logs  # the workers were connected when it died
    assert "Unrecoverable error" not in logs


def test_workers_survive_a_rabbitmq_restart_and_every_step_runs_once(tmp_path: Path):
    node = RabbitNode(tmp_path / "rabbitmq")
    node.start()
    h = Harness(tmp_path, database_url=database_url(), broker_url=node.url())
    try:
        h.start_dispatcher()
        h.start_worker()
        h.start_worker()
        start = time.time() + 2
        ids = h.schedule(100, start=start, window=10, long_every=20, long=1.0)
        time.sleep(max(0.0, start + 4 - time.time()))
        restarted = h.in_flight()
        node.restart(down_for=1.0)
        assert h.wait_final(timeout=120), "not every step finished"
        result = h.tally(shape(), "rabbitmq_restart", ids, [restarted])
        logs = "".join(h.log(name) for name in h.processes)
    finally:
        h.stop()
        node.stop()
    assert (result.lost, result.doubled, result.doubled_uncertain) == (0, 0, 0), result
    assert result.worker_exits == 0, result
    assert "Connection to broker lost" in logs


def test_the_harness_counts_a_start_twice_as_doubled(harness: Harness):
    """The suite's count can fail: two marks of one step, no uncertain flag, is doubled."""
    h = harness
    ids = h.schedule(2, start=time.time() + 3600, window=1)
    step = Step.objects.get(job_id=ids[0])
    marks = Path(h.folder) / "marks"
    marks.mkdir(parents=True, exist_ok=True)
    now = time.time()
    (marks / f"marks-{uuid.uuid4().hex}.txt").write_text(
        f"{step.pk} 1 1 {now:.6f} 1\n{step.pk} 1 2 {now + 1:.6f} 2\n"
    )
    result = h.tally(shape(), "self-check", ids, [])
    assert (result.lost, result.doubled) == (1, 1)
