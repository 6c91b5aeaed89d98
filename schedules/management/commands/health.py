from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from schedules import health


class Command(BaseCommand):
    help = (
        "Run the health checks (database, broker, dispatcher, workers, AWS engines in use) "
        "and exit 1 when one fails: a container probe."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check",
            action="append",
            choices=sorted(health.NAMES.values()),
            help="Run only this check (repeat for several). Default: every configured check.",
        )
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        answer = health.report(health.run_checks(options["check"]))
        if options["json"]:
            self.stdout.write(json.dumps(answer, indent=2))
        else:
            for name, check in answer["checks"].items():
                line = f"{name}: {'ok' if check['ok'] else check['error']}"
                self.stdout.write(
                    self.style.SUCCESS(line) if check["ok"] else self.style.ERROR(line)
                )
        if answer["status"] != "ok":
            raise CommandError("unhealthy", returncode=1)
