"""Fixtures that run the real dispatcher and a real Celery worker as processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def database_url() -> str:
    """The URL of the test database this process is using, for the child processes."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


class RecordingService(BaseHTTPRequestHandler):
    """A stand-in recording service over real HTTP: remembers every call."""

    calls: list[tuple[float, str, dict[str, Any]]] = []
    lock = threading.Lock()
    port = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with RecordingService.lock:
            RecordingService.calls.append((time.time(), self.path.rsplit("/", 1)[-1], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Stack:
    data_dir: Path
    env: dict[str, str]
    recording: type[RecordingService]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        out = (self.data_dir / log).open("wb")
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def start_dispatcher(self, sweep_interval: float = 5) -> subprocess.Popen[bytes]:
        """``run_scheduler``; returns once its loop has started (a step saved before that
        would wait for the process to start, seconds on a busy machine)."""
        log = f"dispatcher-{len(self.processes)}.log"
        process = self.start(
            "manage.py", "run_scheduler", "--sweep-interval", str(sweep_interval), log=log
        )
        self.wait_for_log(log, " started (batch ")
        return process

    def start_worker(self) -> subprocess.Popen[bytes]:
        """A Celery worker consuming the stack's queue; returns once it is ready."""
        queue = self.env["CELERY_TASK_DEFAULT_QUEUE"]
        log = f"worker-{len(self.processes)}.log"
        process = self.start(
            "-m",
            "celery",
            "-A",
            "scheduler_project",
            "worker",
            "--concurrency",
            "2",
            "--loglevel",
            "INFO",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-Q",
            queue,
            "-n",
            f"{queue}-{len(self.processes)}@%h",
            log=log,
        )
        self.wait_for_log(log, "ready.")
        return process

    def wait_for_log(self, name: str, text: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        log = self.data_dir / name
        while time.time() < deadline:
            if log.exists() and text in log.read_text(errors="replace"):
                return
            if any(p.poll() not in (None, 0, -signal.SIGKILL) for p in self.processes):
                pytest.fail(f"a process exited early:\n{self.logs()}")
            time.sleep(0.1)
        pytest.fail(f"{name} did not show {text!r} in {timeout} s:\n{self.logs()}")

    def mail(self) -> list[Path]:
        folder = self.data_dir / "mail"
        return sorted(folder.iterdir()) if folder.exists() else []

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in self.data_dir.glob("*.log")
        )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()  # warm shutdown: the worker stops its own pool
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def recording_service() -> Iterator[type[RecordingService]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingService)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    RecordingService.calls = []
    RecordingService.port = server.server_port
    yield RecordingService
    server.shutdown()


def start_stack(
    tmp_path: Path,
    recording: type[RecordingService],
    *,
    broker: str,
    queue: str,
    dispatcher: bool = True,
    worker: bool = True,
    **extra_env: str,
) -> Stack:
    """Start the dispatcher (optional) and a Celery worker on the test database."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "scheduler_project.settings",
        "DATABASE_URL": database_url(),
        "SCHEDULES_DATA_DIR": str(tmp_path),
        "CELERY_BROKER_URL": broker,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "SCHEDULES_RECORDING_BACKEND": "http",
        "SCHEDULES_RECORDING_URL": f"http://127.0.0.1:{recording.port}",
        "SCHEDULES_RECORDING_ALLOWED_HOSTS": "127.0.0.1",
        "SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
        # The stack's processes add up their metrics here, apart from this process's.
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        **extra_env,
    }
    env.pop("EMAIL_URL", None)
    s = Stack(data_dir=tmp_path, env=env, recording=recording)
    try:
        if dispatcher:
            s.start_dispatcher()
        if worker:
            s.start_worker()
    except BaseException:
        s.stop()
        raise
    return s


@pytest.fixture(params=["filesystem", "redis"])
def stack(
    request: pytest.FixtureRequest,
    transactional_db: None,
    tmp_path: Path,
    recording_service: type[RecordingService],
) -> Iterator[Stack]:
    """Dispatcher + Celery worker processes on the test database and a real broker."""
    broker = "filesystem://" if request.param == "filesystem" else REDIS_URL
    s = start_stack(tmp_path, recording_service, broker=broker, queue=f"e2e-{uuid.uuid4().hex[:8]}")
    yield s
    s.stop()
