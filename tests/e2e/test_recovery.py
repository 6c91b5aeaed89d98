"""Nothing is lost when processes stop or die: the folder broker keeps released work,
and a step whose worker was killed mid-run is taken over once its lease expires."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from django.utils import timezone

import tests.e2e.actions  # noqa: F401  (registers "nap" in this process too, for validation)
from schedules import services
from schedules.models import Run, RunStatus, Step, StepState

from .conftest import RecordingService, start_stack
from .test_local_engine import wait_until_final

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def released_pairs(path: Path) -> list[tuple[int, int]]:
    """The (step id, version) pairs a run_steps message file carries."""
    message = json.loads(path.read_text())
    assert message["headers"]["task"] == "schedules.run_steps"
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return [(pk, version) for pk, version in args[0]]


def test_released_work_survives_a_restart_of_the_folder_broker(
    tmp_path: Path, recording_service: type[RecordingService]
) -> None:
    stack = start_stack(
        tmp_path,
        recording_service,
        broker="filesystem://",
        queue=f"e2e-{uuid.uuid4().hex[:8]}",
        worker=False,
    )
    try:
        due = timezone.now() + dt.timedelta(seconds=1)
        services.job_schedule_many(jobs=[{"action": "noop", "due_at": due}] * 5)
        wait_for(
            lambda: Step.objects.filter(state=StepState.QUEUED).count() == 5,
            30,
            "the dispatcher to release the steps",
        )
        stack.stop()  # everything down: the messages are files now
        queued = [
            pair
            for path in (tmp_path / "broker" / "queue").glob("*.msg")
            for pair in released_pairs(path)
        ]
        assert sorted(queued) == sorted(Step.objects.values_list("pk", "version"))
        stack.processes.clear()
        stack.start_worker()
        wait_until_final(30, stack)
    finally:
        stack.stop()
    runs = Run.objects.all()
    assert runs.count() == 5 and {r.status for r in runs} == {RunStatus.SUCCEEDED}
    assert len({r.step_id for r in runs}) == 5


def test_a_step_whose_worker_died_is_taken_over_and_marked_uncertain(
    tmp_path: Path, recording_service: type[RecordingService]
) -> None:
    stack = start_stack(
        tmp_path,
        recording_service,
        broker="filesystem://",
        queue=f"e2e-{uuid.uuid4().hex[:8]}",
        dispatcher=False,
        worker=False,
        SCHEDULES_LEASE_SECONDS="4",
        SCHEDULES_REDELIVER_AFTER="2",
        SCHEDULES_ACTION_MODULES="tests.e2e.actions",
    )
    try:
        stack.start_dispatcher(sweep_interval=1)
        worker = stack.start_worker()
        job = services.job_schedule(action="nap", payload={"seconds": 2}, due_at=timezone.now())
        step = job.steps.get()
        wait_for(
            lambda: Run.objects.filter(step=step, status=RunStatus.RUNNING).exists(),
            30,
            "the first attempt to start",
        )
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its pool die mid-run
        worker.wait()
        stack.start_worker()
        wait_until_final(60, stack)
    finally:
        stack.stop()
    first, second = Run.objects.filter(step=step).order_by("attempt")
    assert first.status == RunStatus.ABANDONED and first.attempt == 1
    assert second.status == RunStatus.SUCCEEDED and second.attempt == 2
    assert second.uncertain and "may already have had its effect" in second.note
    assert second.result == {"slept": 2.0, "uncertain": True}
