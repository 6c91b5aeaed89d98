"""Prometheus metrics (docs/operations.md lists each one and what to do about it).

Every process counts what it does itself: the dispatcher the steps it releases and
its loop, the worker (each prefork child) the runs it records, whichever process
arms a timer the arming errors. prometheus-client's multiprocess mode keeps each
process's values in a file of its own under SCHEDULES_METRICS_DIR (the environment's
PROMETHEUS_MULTIPROC_DIR, set by the settings before this module is imported), and
``/metrics`` adds them up. What is a state of the database rather than an event
(the backlog, the heartbeats, the dead-letter queue) is read when ``/metrics`` is
scraped, by ``StateCollector``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .models import Run

logger = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: From 1 ms to 1 h: the local engine's milliseconds to DynamoDB TTL's minutes.
LATENESS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
)

STEPS_RELEASED = Counter(
    "schedules_steps_released",
    "Steps handed to the queue by the dispatcher (local engine and overdue releases) or "
    "the TTL forwarder (dynamodb_ttl). Step Functions releases show as runs.",
    ["engine"],
)
STEPS_RELEASED_OVERDUE = Counter(
    "schedules_steps_released_overdue",
    "Steps released by the dispatcher because their engine (Step Functions, DynamoDB TTL) "
    "had not released them past its bound: its timer failed, was late or was lost.",
)
TTL_RECORDS_MALFORMED = Counter(
    "schedules_ttl_records_malformed",
    "TTL removals on the timer table's stream that name no step (no numeric step_id and "
    "version in the old image, e.g. an item added by hand), skipped by forward_ttl_stream.",
)
TTL_RECORDS_ABANDONED = Counter(
    "schedules_ttl_records_abandoned",
    "TTL removals forward_ttl_stream moved past after SCHEDULES_TTL_STREAM_MAX_TRIES failed "
    "sends; the overdue sweep releases their steps.",
)
RUNS = Counter(
    "schedules_runs",
    "Runs recorded by the workers, by action, engine and status.",
    ["action", "engine", "status"],
)
RUN_LATENESS = Histogram(
    "schedules_run_lateness_seconds",
    "The engine's lateness of each run's start: from the later of the due time and the "
    "moment the engine took the timer.",
    ["engine"],
    buckets=LATENESS_BUCKETS,
)
UNCERTAIN_RUNS = Counter(
    "schedules_uncertain_runs",
    "Runs that took over an attempt lost mid-run (its action may have had its effect).",
    ["action", "engine"],
)
DISPATCH_SECONDS = Histogram(
    "schedules_dispatch_seconds",
    "Time of one dispatcher turn that released steps (claim, publish, let go).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
DISPATCH_BATCH = Histogram(
    "schedules_dispatch_batch_size",
    "Steps released by one dispatcher turn.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
ARM_ERRORS = Counter(
    "schedules_arm_errors",
    "Timers an engine failed to arm or disarm (retried by the sweep).",
    ["engine"],
)
DISPATCHER_ERRORS = Counter(
    "schedules_dispatcher_errors",
    "Dispatcher turns that failed (database or broker outage); it backs off and retries.",
)
EXECUTIONS_FINISHED = Counter(
    "schedules_executions_finished",
    "Workflow executions that ended, by status.",
    ["status"],
)


def run_recorded(run: Run) -> None:
    """Count a recorded run (the worker, after the record)."""
    RUNS.labels(run.action, run.engine, run.status).inc()
    if run.engine_lateness is not None:
        RUN_LATENESS.labels(run.engine).observe(max(0.0, run.engine_lateness.total_seconds()))
    if run.uncertain:
        UNCERTAIN_RUNS.labels(run.action, run.engine).inc()


# --- Read at scrape time ------------------------------------------------------------------


class StateCollector(Collector):
    """The gauges that are a state of the database, read when /metrics is scraped."""

    def collect(self) -> Iterator[Metric]:
        from . import overview  # the same reads as the admin's overview page

        now = timezone.now()
        due = GaugeMetricFamily(
            "schedules_steps_due_unreleased",
            "Steps due by now that no engine has released yet.",
            labels=["engine"],
        )
        oldest = GaugeMetricFamily(
            "schedules_steps_due_unreleased_oldest_seconds",
            "How long the oldest due step has waited for its release.",
            labels=["engine"],
        )
        for due_row in overview.steps_due_unreleased(now=now):
            due.add_metric([due_row.engine], due_row.count)
            oldest.add_metric([due_row.engine], (now - due_row.oldest_due_at).total_seconds())
        yield due
        yield oldest
        queued = GaugeMetricFamily(
            "schedules_steps_released_unstarted",
            "Steps released to the queue that no worker has started yet.",
            labels=["engine"],
        )
        for engine, count in overview.steps_released_unstarted().items():
            queued.add_metric([engine], count)
        yield queued
        beats = GaugeMetricFamily(
            "schedules_heartbeat_age_seconds",
            "Seconds since the newest heartbeat of each role (dispatcher, worker).",
            labels=["role"],
        )
        processes = GaugeMetricFamily(
            "schedules_processes_alive",
            "Processes of each role whose heartbeat is fresh.",
            labels=["role"],
        )
        for row in overview.heartbeat_roles(now=now):
            beats.add_metric([row.role], (now - row.newest_beat_at).total_seconds())
            processes.add_metric([row.role], row.alive)
        yield beats
        yield processes
        depth = _dead_letter_depth()
        if depth is not None:
            yield GaugeMetricFamily(
                "schedules_dead_letter_messages",
                "Messages in the jobs queue's dead-letter queue (SQS).",
                value=depth,
            )


def _dead_letter_depth() -> int | None:
    """The dead-letter queue's depth, where the jobs queue is SQS with a redrive policy."""
    if not settings.CELERY_BROKER_URL.startswith("sqs://") or not settings.SCHEDULES_SQS_QUEUE_URL:
        return None
    from .aws import dead_letter_depth

    try:
        return dead_letter_depth()
    except Exception:
        logger.warning("metrics: the dead-letter queue's depth could not be read", exc_info=True)
        return None


def exposition() -> bytes:
    """Every process's metrics added up, and the state gauges, in the text format."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=settings.SCHEDULES_METRICS_DIR)  # type: ignore[no-untyped-call]
    registry.register(StateCollector())
    return generate_latest(registry)


def client_may_read(remote_addr: str, authorization: str) -> bool:
    """/metrics is for the token's holder, or for clients in the allowed networks."""
    token: str = settings.SCHEDULES_METRICS_TOKEN
    if token and hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
        return True
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    return any(
        address in ipaddress.ip_network(network, strict=False)
        for network in settings.SCHEDULES_METRICS_ALLOWED_NETWORKS
    )
