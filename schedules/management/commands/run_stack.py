"""run_stack: everything the embedded default needs, in one terminal."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

ROOT = Path(settings.BASE_DIR)
#: A child that exits is started again after 1 s, doubling while it keeps exiting (at most
#: 30 s); a child that ran for a minute before it exited starts again after 1 s.
RESTART_PAUSE = 1.0
RESTART_PAUSE_MAX = 30.0
RESTART_RESET_AFTER = 60.0


@dataclass
class Child:
    """One supervised process of the stack."""

    name: str
    cmd: list[str]
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None


class Command(BaseCommand):
    help = (
        "Migrate the database, make sure an admin user exists, then run the web server, the "
        "dispatcher (run_scheduler) and a Celery worker together until Ctrl-C, restarting any "
        "of them that exits (after 1 s, doubling to 30 s while it keeps exiting). For local "
        "use on the embedded default; in production run the three as separate services "
        "(deploy/systemd)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--addr",
            default="127.0.0.1:8000",
            help="Address for the web server (default 127.0.0.1:8000).",
        )
        parser.add_argument(
            "--concurrency", type=int, default=2, help="Celery worker processes (default 2)."
        )
        parser.add_argument(
            "--admin-username",
            default="admin",
            help="Username of the demo superuser created if none exists.",
        )
        parser.add_argument(
            "--no-demo-user", action="store_true", help="Do not create a demo superuser."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write(self.style.SUCCESS("database ready"))
        if not options["no_demo_user"]:
            self._ensure_superuser(options["admin_username"])
        procs = {
            "web": [sys.executable, "manage.py", "runserver", "--noreload", options["addr"]],
            "scheduler": [sys.executable, "manage.py", "run_scheduler"],
            "worker": [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "scheduler_project",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(options["concurrency"]),
            ],
        }
        stopping = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stopping.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        children = {name: Child(name, cmd) for name, cmd in procs.items()}
        for child in children.values():
            self._spawn(child)
        self.stdout.write(
            self.style.SUCCESS(
                f"admin: http://{options['addr']}/admin/  (Ctrl-C stops web, scheduler and worker)"
            )
        )
        while not stopping.is_set():
            for child in children.values():
                self._supervise(child)
            stopping.wait(0.2)
        for child in children.values():
            if child.process is not None and child.process.poll() is None:
                child.process.terminate()  # the main process shuts its children down warmly
        for child in children.values():
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
        self.stdout.write("stopped")

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(  # noqa: S603 - our own fixed commands
            child.cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        child.started = time.monotonic()
        child.restart_at = None
        assert child.process.stdout is not None
        threading.Thread(
            target=self._relay, args=(child.name, child.process.stdout), daemon=True
        ).start()

    def _supervise(self, child: Child) -> None:
        """Restart a child that exited, after a pause that doubles while it keeps failing."""
        now = time.monotonic()
        if child.restart_at is not None:
            if now >= child.restart_at:
                self._spawn(child)
                self.stdout.write(self.style.WARNING(f"[stack] restarted {child.name}"))
            return
        assert child.process is not None
        code = child.process.poll()
        if code is None:
            return
        ran_for = now - child.started
        child.failures = 1 if ran_for >= RESTART_RESET_AFTER else child.failures + 1
        pause = min(RESTART_PAUSE_MAX, RESTART_PAUSE * 2 ** (child.failures - 1))
        child.restart_at = now + pause
        self.stdout.write(
            self.style.WARNING(
                f"[stack] {child.name} exited with code {code} after {ran_for:.0f} s; "
                f"restarting it in {pause:.0f} s"
            )
        )

    def _relay(self, name: str, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self.stdout.write(f"[{name}] {line.decode(errors='replace').rstrip()}")

    def _ensure_superuser(self, username: str) -> None:
        users = get_user_model().objects
        if users.filter(is_superuser=True).exists():
            self.stdout.write(
                "a superuser exists; forgot its password? python manage.py changepassword "
                f"{users.filter(is_superuser=True).values_list('username', flat=True).first()}"
            )
            return
        password = os.environ.get("DEMO_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        users.create_superuser(username=username, email="", password=password)
        self.stdout.write(
            self.style.WARNING(
                f"created superuser {username!r} with password {password!r} (local demo only)"
            )
        )
