"""schedule_workflow: start a workflow by a rate or cron rule (or remove its rule)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandParser

from schedules import services
from schedules.models import MissedPolicy

from ._shared import (
    EXIT_STATUS,
    ServiceCommand,
    add_rule_options,
    get_workflow,
    job_as_dict,
    parse_json,
    rule_options,
    validation_failed,
    write_json,
)


class Command(ServiceCommand):
    help = (
        "Start the workflow NAME by a rule: --every or --cron (read in --time-zone), with "
        "--starts, --ends, --max-runs and --missed as for a recurring job. A recurring job "
        "(action workflow_start) holds the rule, so only the next start is armed; a rule the "
        "workflow had is replaced. --remove cancels the rule. Prints the rule's job id, or "
        "with --json the job. " + EXIT_STATUS
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The workflow's name.")
        rule = parser.add_mutually_exclusive_group(required=True)
        rule.add_argument("--every", metavar="RATE", help="e.g. '8 hours', '30s', '1 day'.")
        rule.add_argument("--cron", metavar="EXPR", help="5 fields, e.g. '0 */8 * * *'.")
        rule.add_argument("--remove", action="store_true", help="Remove the workflow's rule.")
        add_rule_options(parser)
        parser.add_argument(
            "--missed",
            choices=MissedPolicy.values,
            default=MissedPolicy.RUN_ONCE,
            help="When behind: run_once (default), run_all or skip.",
        )
        parser.add_argument(
            "--time-zone", default="UTC", metavar="ZONE", help="IANA zone --cron is read in."
        )
        parser.add_argument(
            "--input", default="{}", metavar="JSON", help="The data each execution starts with."
        )
        parser.add_argument("--json", action="store_true", help="Print the rule's job as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        workflow = get_workflow(options["name"])
        try:
            if options["remove"]:
                services.workflow_unschedule(workflow=workflow)
                self.stdout.write(f"{workflow.name}: rule removed")
                return
            job = services.workflow_schedule(
                workflow=workflow,
                input=parse_json(options["input"], field="input"),
                time_zone=options["time_zone"],
                missed_policy=options["missed"],
                **rule_options(options),
            )
        except ValidationError as exc:
            raise validation_failed(
                self, exc, as_json=options["json"], what="The rule was not saved"
            ) from exc
        if options["json"]:
            write_json(self, job_as_dict(job, payload=True))
        else:
            self.stdout.write(str(job.pk))
