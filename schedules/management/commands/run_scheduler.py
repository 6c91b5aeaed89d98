"""run_scheduler: the local engine's dispatcher. Runs until SIGTERM or Ctrl-C."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from schedules.checks import startup_checks
from schedules.dispatcher import Dispatcher


class Command(BaseCommand):
    help = (
        "Release due steps of the local engine to the Celery queue, sleeping until the next "
        "due time. Also releases again the steps of a worker or dispatcher that died and "
        "messages the broker lost (every SCHEDULES_RECOVER_INTERVAL), and arms steps as they "
        "come into the horizon. Safe to run more than once on PostgreSQL. Stops cleanly on "
        "SIGTERM or SIGINT after the batch in flight. Refuses to start if a system check "
        "fails (an unknown engine, a recording service outside its allow-list, ...)."
    )
    # The checks run in handle() (startup_checks), like the Celery worker's: their
    # warnings and errors are logged, so they come out in LOG_FORMAT.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--skip-checks", action="store_true", help="Skip the system checks at start."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="Steps claimed per transaction (default: SCHEDULES_DISPATCH_BATCH).",
        )
        parser.add_argument(
            "--max-sleep",
            type=float,
            default=None,
            help="Longest sleep in seconds when nothing is due (default: "
            "SCHEDULES_DISPATCH_MAX_SLEEP).",
        )
        parser.add_argument(
            "--sweep-interval",
            type=float,
            default=None,
            help="Seconds between sweeps: arming, overdue steps of other engines, idempotency "
            "keys (default: SCHEDULES_SWEEP_INTERVAL).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["skip_checks"]:
            startup_checks("dispatcher")  # exits with status 1 on an error
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stdout.write(f"received signal {signum}; finishing the batch in flight")
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        dispatcher = Dispatcher(
            batch_size=options["batch_size"],
            max_sleep=options["max_sleep"],
            sweep_interval=options["sweep_interval"],
            stop=stop,
        )
        self.stdout.write(self.style.SUCCESS("dispatcher running; Ctrl-C to stop"))
        dispatcher.run()
        self.stdout.write(f"stopped; released {dispatcher.stats.released} step(s)")
