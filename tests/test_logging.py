"""Logs: every line about a step carries step_id, version, job_id and engine, in both
formats; LOG_FORMAT=json writes one JSON object per line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone
from pythonjsonlogger.json import JsonFormatter

from schedules import services
from schedules.logcontext import PlainFormatter, StepContextFilter, step_log_context
from schedules.models import Step
from workers.actions.base import REGISTRY, PermanentError, register
from workers.actions.noop import NoopPayload

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("step_id", "version", "job_id", "engine")

action_logger = logging.getLogger("tests.logging_action")


@pytest.fixture
def chatty() -> Iterator[None]:
    """Actions that log a line of their own (as an action or a backend would)."""

    @register("chatty", payload=NoopPayload, description="test")
    def chatty_action(ctx: Any, payload: Any) -> dict[str, int]:
        action_logger.info("working on %s", ctx.step_id)
        return {"step": ctx.step_id}

    @register("chatty_fails", payload=NoopPayload, description="test")
    def chatty_fails(ctx: Any, payload: Any) -> None:
        action_logger.warning("giving up on %s", ctx.step_id)
        raise PermanentError("no")

    try:
        yield
    finally:
        REGISTRY.pop("chatty")
        REGISTRY.pop("chatty_fails")


def console_handler() -> logging.Handler:
    """The handler settings.LOGGING puts on the root logger, the one with the step filter
    (pytest's capture handler, added after it, sees the records it filtered)."""
    for handler in logging.getLogger().handlers:
        if any(isinstance(f, StepContextFilter) for f in handler.filters):
            return handler
    raise AssertionError("no root handler carries StepContextFilter")


def json_formatter() -> JsonFormatter:
    return JsonFormatter(settings.LOGGING["formatters"]["json"]["format"])


def about(records: list[logging.LogRecord], text: str) -> list[logging.LogRecord]:
    return [r for r in records if text in r.getMessage()]


def assert_about_step(record: logging.LogRecord, step: Step, version: int) -> None:
    expected = {"step_id": step.pk, "version": version, "job_id": step.job_id, "engine": "local"}
    assert {name: getattr(record, name) for name in FIELDS} == expected, record.getMessage()
    line = json.loads(json_formatter().format(record))
    assert {name: line[name] for name in FIELDS} == expected
    assert line["message"] == record.getMessage()
    plain = PlainFormatter().format(record)
    assert f" [step {step.pk} v{version} job {step.job_id} local] " in plain


@pytest.mark.django_db(transaction=True)
def test_a_steps_worker_lines_carry_its_ids(chatty, caplog):
    console_handler()
    job = services.job_schedule(action="chatty", due_at=timezone.now())
    step = job.steps.get()
    caplog.set_level(logging.INFO)

    run = services.step_execute(step_id=step.pk, version=step.version, worker="w:1")

    assert run is not None and run.status == "succeeded"
    (inside,) = about(caplog.records, f"working on {step.pk}")
    (outcome,) = about(caplog.records, f"step {step.pk} v{step.version} on local: succeeded")
    for record in (inside, outcome):
        assert_about_step(record, step, step.version)


@pytest.mark.django_db(transaction=True)
def test_a_skipped_delivery_is_logged_with_the_steps_ids(chatty, caplog):
    job = services.job_schedule(action="chatty", due_at=timezone.now())
    step = job.steps.get()
    caplog.set_level(logging.INFO)

    services.step_execute(step_id=step.pk, version=step.version + 5, worker="w:1")  # stale

    (skipped,) = about(caplog.records, f"skipping step {step.pk}")
    assert_about_step(skipped, step, step.version + 5)


@pytest.mark.django_db(transaction=True)
def test_steps_run_together_each_log_their_own_ids(chatty, caplog):
    now = timezone.now()
    services.job_schedule_many(
        jobs=[{"action": "chatty", "due_at": now}] * 3 + [{"action": "chatty_fails", "due_at": now}]
    )
    pairs = [[pk, v] for pk, v in services.steps_claim_due(limit=10, holder="")]
    assert len(pairs) == 4
    caplog.set_level(logging.INFO)

    services.steps_execute(pairs=pairs, worker="w:1")

    for pk, version in pairs:
        step = Step.objects.get(pk=pk)
        action_lines = about(caplog.records, f"on {pk}")  # "working on"/"giving up on" <pk>
        outcome_lines = about(caplog.records, f"step {pk} v{version} on local: ")
        assert len(action_lines) == 1 and len(outcome_lines) == 1
        for record in action_lines + outcome_lines:
            assert_about_step(record, step, version)


def test_lines_not_about_a_step_have_empty_ids(caplog):
    console_handler()
    caplog.set_level(logging.INFO)
    logging.getLogger("tests.logging").info("nothing to do with a step")
    with step_log_context(step_id=1, version=2, job_id=3, engine="local"):
        pass
    logging.getLogger("tests.logging").info("after a step")

    for record in caplog.records:
        assert {name: getattr(record, name) for name in FIELDS} == dict.fromkeys(FIELDS)
        line = json.loads(json_formatter().format(record))
        assert {name: line[name] for name in FIELDS} == dict.fromkeys(FIELDS)
        assert "[step" not in PlainFormatter().format(record)


def manage(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LOG_", "DJANGO"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, "SCHEDULES_DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


LOGS_SOME_LINES = """
import logging, warnings
from schedules.logcontext import step_log_context
log = logging.getLogger("schedules.example")
log.info("a plain line")
log.warning("a line\\nin two parts")
with step_log_context(step_id=12, version=3, job_id=5, engine="local"):
    log.info("about a step")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("with a traceback")
warnings.warn("a Python warning", UserWarning)
"""


def test_log_format_json_writes_one_json_object_per_line(tmp_path):
    result = manage("shell", "-c", LOGS_SOME_LINES, tmp_path=tmp_path, LOG_FORMAT="json")

    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    by_message = {line["message"].strip().splitlines()[-1]: line for line in parsed}
    assert set(parsed[0]) >= {"asctime", "levelname", "name", "message", *FIELDS}
    assert by_message["in two parts"]["message"] == "a line\nin two parts"
    step = by_message["about a step"]
    assert (step["step_id"], step["version"], step["job_id"], step["engine"]) == (
        12,
        3,
        5,
        "local",
    )
    assert by_message["a plain line"]["step_id"] is None
    assert "ZeroDivisionError" in by_message["with a traceback"]["exc_info"]
    assert any("UserWarning: a Python warning" in line["message"] for line in parsed)
    assert len(parsed) == 5


def test_log_format_plain_shows_the_step_compactly(tmp_path):
    result = manage("shell", "-c", LOGS_SOME_LINES, tmp_path=tmp_path, LOG_FORMAT="plain")

    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "about a step" in line]
    assert line.endswith(" INFO schedules.example [step 12 v3 job 5 local] about a step")
    (plain,) = [line for line in result.stderr.splitlines() if "a plain line" in line]
    assert plain.endswith(" INFO schedules.example a plain line")


def test_log_json_is_still_read_when_log_format_is_not_set(tmp_path):
    show = "from django.conf import settings; print(settings.LOG_FORMAT)"
    alias = manage("shell", "-c", show, tmp_path=tmp_path, LOG_JSON="true")
    assert alias.stdout.splitlines()[-1] == "json"
    both = manage("shell", "-c", show, tmp_path=tmp_path, LOG_JSON="true", LOG_FORMAT="plain")
    assert both.stdout.splitlines()[-1] == "plain"
    neither = manage("shell", "-c", show, tmp_path=tmp_path)
    assert neither.stdout.splitlines()[-1] == "plain"


def test_an_unknown_log_format_is_refused(tmp_path):
    result = manage("check", tmp_path=tmp_path, LOG_FORMAT="xml")
    assert result.returncode != 0
    assert "LOG_FORMAT must be 'plain' or 'json', not 'xml'" in result.stderr
