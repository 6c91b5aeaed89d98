"""Data migrations, run forwards and back on rows written as the earlier schema wrote them."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = ("schedules", "0015_ttl_stream_poison_tries")
AFTER = ("schedules", "0016_precision_classes")


def migrate(target: tuple[str, str]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])
    return executor


@pytest.mark.django_db(transaction=True)
def test_precise_becomes_seconds_and_back():
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes("schedules")
    try:
        apps = migrate(BEFORE).loader.project_state([BEFORE]).apps
        Job = apps.get_model("schedules", "Job")
        Step = apps.get_model("schedules", "Step")
        due = dt.datetime(2027, 1, 1, 9, tzinfo=dt.UTC)
        precise = Job.objects.create(action="noop", due_at=due, precision="precise")
        relaxed = Job.objects.create(action="noop", due_at=due, precision="relaxed")
        step = Step.objects.create(
            job=precise, due_at=due, precision="precise", engine="local", action="noop"
        )

        apps = migrate(AFTER).loader.project_state([AFTER]).apps
        Job = apps.get_model("schedules", "Job")
        Step = apps.get_model("schedules", "Step")
        assert Job.objects.get(pk=precise.pk).precision == "seconds"
        assert Job.objects.get(pk=relaxed.pk).precision == "relaxed"
        assert Step.objects.get(pk=step.pk).precision == "seconds"
        Job.objects.filter(pk=relaxed.pk).update(precision="minute")

        apps = migrate(BEFORE).loader.project_state([BEFORE]).apps
        Job = apps.get_model("schedules", "Job")
        # minute had no earlier equivalent: back to the finer class.
        assert set(Job.objects.values_list("precision", flat=True)) == {"precise"}
    finally:
        migrate(latest[0])
