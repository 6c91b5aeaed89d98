"""At start the worker and the dispatcher run the system checks and refuse to start on an
error, with one clear message; the worker logs through settings LOGGING (LOG_FORMAT),
and the folder broker no longer makes kombu warn about a missing hostname."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schedules.checks import startup_checks
from tests.e2e.conftest import database_url

ROOT = Path(__file__).resolve().parents[2]
KOMBU_WARNING = "No hostname was supplied"
OUTSIDE_ALLOW_LIST = {
    "SCHEDULES_RECORDING_BACKEND": "http",
    "SCHEDULES_RECORDING_URL": "https://recorder.evil.test/api",
    "SCHEDULES_RECORDING_ALLOWED_HOSTS": "recorder.example.com",
}
WORKER = ("-m", "celery", "-A", "scheduler_project", "worker", "--concurrency", "1")
WORKER_OPTIONS = ("--without-heartbeat", "--without-gossip", "--without-mingle")


def environment(tmp_path: Path, **env: str) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO", "DATABASE", "CELERY", "SCHEDULES", "LOG_", "PROMETHEUS"))
    }
    return {**base, "SCHEDULES_DATA_DIR": str(tmp_path), **env}


def run(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=environment(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_startup_checks_exit_with_one_message_naming_each_error(settings, caplog):
    settings.SCHEDULES_ENGINES = {"seconds": "locl", "minute": "local", "relaxed": "local"}
    settings.SCHEDULES_DISPATCH_CHUNK = 0
    with pytest.raises(SystemExit) as exit_:
        startup_checks("worker")
    assert exit_.value.code == 1
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    message = record.getMessage()
    assert message.startswith("the worker cannot start: the system checks found 2 errors:")
    assert "(schedules.E001) Unknown schedules engine 'locl'" in message
    assert "HINT: Fix SCHEDULES_ENGINES['seconds']." in message
    assert "(schedules.E004) SCHEDULES_DISPATCH_CHUNK must be at least 1." in message


def test_startup_checks_pass_quietly_when_the_settings_are_right(caplog):
    startup_checks("worker")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            OUTSIDE_ALLOW_LIST,
            "(schedules.E002) SCHEDULES_RECORDING_URL host 'recorder.evil.test' is not in "
            "SCHEDULES_RECORDING_ALLOWED_HOSTS",
        ),
        ({"SCHEDULES_ENGINE_SECONDS": "locl"}, "(schedules.E001) Unknown schedules engine"),
    ],
)
@pytest.mark.parametrize("process", ["worker", "dispatcher"])
def test_the_process_refuses_to_start_on_a_check_error(tmp_path, env, message, process):
    args = (*WORKER, *WORKER_OPTIONS) if process == "worker" else ("manage.py", "run_scheduler")
    started = time.monotonic()
    result = run(*args, tmp_path=tmp_path, **env)

    assert result.returncode == 1, result.stdout + result.stderr
    assert time.monotonic() - started < 60
    assert f"the {process} cannot start: the system checks found 1 error:" in result.stderr
    assert message in result.stderr
    assert result.stderr.count(message) == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert "ready." not in result.stderr  # the worker never consumed


def test_the_refusal_is_one_json_line_with_log_format_json(tmp_path):
    result = run(
        "manage.py", "run_scheduler", tmp_path=tmp_path, LOG_FORMAT="json", **OUTSIDE_ALLOW_LIST
    )

    assert result.returncode == 1
    (line,) = [json.loads(text) for text in result.stderr.splitlines()]
    assert line["levelname"] == "CRITICAL" and line["name"] == "schedules.checks"
    assert "schedules.E002" in line["message"]


def test_publishing_to_the_folder_broker_makes_no_kombu_hostname_warning(tmp_path):
    result = run(
        "manage.py",
        "shell",
        "-c",
        "from schedules.services.dispatch import steps_publish; steps_publish([(1, 1)])",
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "broker" / "queue").glob("*.msg"))  # it did publish
    assert KOMBU_WARNING not in result.stderr


@pytest.mark.django_db(transaction=True)
def test_a_worker_starts_with_json_logs_and_no_kombu_hostname_warning(tmp_path):
    err = tmp_path / "worker.err"
    with err.open("w") as stderr:
        worker = subprocess.Popen(
            [sys.executable, *WORKER, *WORKER_OPTIONS, "-n", "startup@%h"],
            cwd=ROOT,
            env=environment(tmp_path, DATABASE_URL=database_url(), LOG_FORMAT="json"),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while "ready." not in err.read_text() and worker.poll() is None:
                assert time.monotonic() < deadline, err.read_text()
                time.sleep(0.1)
            assert worker.poll() is None, err.read_text()
            time.sleep(0.5)  # the consumer's connection, made after "ready."
        finally:
            worker.send_signal(signal.SIGTERM)  # warm shutdown, as systemd stops it
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()

    output = err.read_text()
    assert KOMBU_WARNING not in output
    lines = [json.loads(text) for text in output.splitlines()]  # one JSON object per line
    messages = [line["message"] for line in lines]
    assert any(m.endswith("ready.") for m in messages), messages
    assert any(m.startswith("Connected to") for m in messages), messages
    assert all("step_id" in line for line in lines)
