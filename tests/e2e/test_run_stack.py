"""The README's first command: ``run_stack`` on a fresh data folder, used through the admin.

A real browser session over HTTP: log in as the demo superuser, add a job due
in a few seconds on the admin's add form, and see it run on time; a worker killed
with SIGKILL is restarted and runs the next job; Ctrl-C stops web, scheduler and
worker. Nothing is shared with the test database: run_stack
migrates its own SQLite file, as on a newcomer's machine.
"""

from __future__ import annotations

import datetime as dt
import http.cookiejar
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "demo-password-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Browser:
    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=10) as response:
            return str(response.read().decode())

    def post_form(self, path: str, fields: dict[str, str]) -> str:
        page = self.get(path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, page[:2000]
        data = urllib.parse.urlencode({"csrfmiddlewaretoken": token[1], **fields}).encode()
        request = urllib.request.Request(
            self.base + path, data=data, headers={"Referer": self.base + path}
        )
        with self.opener.open(request, timeout=10) as response:
            return str(response.read().decode())


def wait_for(predicate: object, timeout: float, what: str, log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    pytest.fail(f"{what} within {timeout} s; run_stack printed:\n{log.read_text()[-4000:]}")


def test_run_stack_runs_a_job_added_in_the_admin(tmp_path):
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "CELERY_", "SCHEDULES_", "EMAIL_", "DJANGO_"))
    }
    env |= {
        "SCHEDULES_DATA_DIR": str(tmp_path),
        "DEMO_ADMIN_PASSWORD": PASSWORD,
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "run_stack.log"
    with log.open("wb") as out:
        stack = subprocess.Popen(
            [sys.executable, "manage.py", "run_stack", "--addr", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: "celery@" in log.read_text() and " ready." in log.read_text(),
            90,
            "the worker was not ready",
            log,
        )
        assert f"created superuser 'admin' with password '{PASSWORD}'" in log.read_text()
        browser = Browser(f"http://127.0.0.1:{port}")
        page = browser.post_form(
            "/admin/login/?next=/admin/",
            {"username": "admin", "password": PASSWORD, "next": "/admin/"},
        )
        assert "Log out" in page or "logout" in page
        due = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4)).replace(microsecond=0)
        page = browser.post_form(
            "/admin/schedules/job/add/",
            {
                "name": "hello from the admin",
                "action": "noop",
                "payload": "{}",
                "due_at_0": due.strftime("%Y-%m-%d"),
                "due_at_1": due.strftime("%H:%M:%S"),
                "time_zone": "UTC",
                "precision": "seconds",
                "max_attempts": "3",
                # The selects the page shows, left at their defaults.
                "schedule_type": "once",
                "missed_policy": "run_once",
                "overlap_policy": "skip",
            },
        )
        assert "was added successfully" in page, page[:3000]

        database = tmp_path / "db.sqlite3"

        def run_row() -> tuple[str, int] | None:
            with sqlite3.connect(database, timeout=10) as db:
                return db.execute(
                    "SELECT r.status, r.lateness FROM schedules_run r "
                    "JOIN schedules_job j ON j.id = r.job_id WHERE j.name = ?",
                    ["hello from the admin"],
                ).fetchone()

        wait_for(
            lambda: run_row() is not None and run_row()[0] == "succeeded",
            30,
            "the job did not run",
            log,
        )
        _status, lateness_us = run_row()  # type: ignore[misc]
        # On time: the run started at its due time (the worker never starts early).
        assert 0 <= lateness_us < 1_000_000, lateness_us

        # A worker that dies is restarted by run_stack, which says so, and work goes on.
        (worker,) = [
            child
            for child in psutil.Process(stack.pid).children()
            if "celery" in " ".join(child.cmdline())
        ]
        os.killpg(worker.pid, signal.SIGKILL)
        wait_for(
            lambda: "[stack] restarted worker" in log.read_text(),
            30,
            "the worker was not restarted",
            log,
        )
        assert "[stack] worker exited with code -9" in log.read_text()
        wait_for(
            lambda: log.read_text().count(" ready.") >= 2, 90, "the new worker was not ready", log
        )
        due = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).replace(microsecond=0)
        page = browser.post_form(
            "/admin/schedules/job/add/",
            {
                "name": "after the restart",
                "action": "noop",
                "payload": "{}",
                "due_at_0": due.strftime("%Y-%m-%d"),
                "due_at_1": due.strftime("%H:%M:%S"),
                "time_zone": "UTC",
                "precision": "seconds",
                "max_attempts": "3",
                "schedule_type": "once",
                "missed_policy": "run_once",
                "overlap_policy": "skip",
            },
        )
        assert "was added successfully" in page, page[:3000]

        def restarted_run() -> tuple[str] | None:
            with sqlite3.connect(database, timeout=10) as db:
                return db.execute(
                    "SELECT r.status FROM schedules_run r JOIN schedules_job j "
                    "ON j.id = r.job_id WHERE j.name = 'after the restart'"
                ).fetchone()

        wait_for(
            lambda: restarted_run() == ("succeeded",),
            30,
            "the job after the restart did not run",
            log,
        )
    finally:
        stack.send_signal(signal.SIGINT)
        try:
            code = stack.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
            raise
    assert code == 0, log.read_text()[-4000:]
    assert log.read_text().rstrip().endswith("stopped")
