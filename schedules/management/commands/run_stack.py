"""run_stack: everything the embedded default needs, in one terminal."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

ROOT = Path(settings.BASE_DIR)


class Command(BaseCommand):
    help = (
        "Migrate the database, make sure an admin user exists, then run the web server, the "
        "dispatcher (run_scheduler) and a Celery worker together until Ctrl-C. For local use "
        "on the embedded default; in production run the three as separate services."
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
        running: dict[str, subprocess.Popen[bytes]] = {}
        stopping = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stopping.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        for name, cmd in procs.items():
            running[name] = subprocess.Popen(  # noqa: S603 - our own fixed commands
                cmd,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
            assert running[name].stdout is not None
            threading.Thread(
                target=self._relay, args=(name, running[name].stdout), daemon=True
            ).start()
        self.stdout.write(
            self.style.SUCCESS(
                f"admin: http://{options['addr']}/admin/  (Ctrl-C stops web, scheduler and worker)"
            )
        )
        failed = ""
        while not stopping.is_set():
            for name, proc in running.items():
                if proc.poll() is not None:
                    failed = f"{name} exited with code {proc.returncode}"
                    stopping.set()
            time.sleep(0.2)
        for proc in running.values():
            if proc.poll() is None:
                proc.terminate()  # the main process shuts its children down warmly
        for proc in running.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if failed:
            raise CommandError(f"{failed}; stopped the others")
        self.stdout.write("stopped")

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
