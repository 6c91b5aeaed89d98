"""schedule_email: schedule an email at a due time."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from schedules import services

from ._shared import (
    EXIT_STATUS,
    ServiceCommand,
    add_job_options,
    job_as_dict,
    job_options,
    parse_json,
    validation_failed,
    write_json,
)


class Command(ServiceCommand):
    help = (
        "Schedule an email (the send_email action) at --due, or by a rule (--every or "
        "--cron, as schedule_job): to one or more --to addresses, "
        "with a --subject and either a plain --body or a --template from templates/emails/ "
        "rendered with --context. Addresses, subject and template are checked now. Prints the "
        "new job's id, or the job as JSON with --json. " + EXIT_STATUS
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--to",
            action="append",
            required=True,
            metavar="ADDR",
            help="Recipient address; repeat for several.",
        )
        parser.add_argument("--cc", action="append", metavar="ADDR", help="Cc address; repeatable.")
        parser.add_argument(
            "--bcc", action="append", metavar="ADDR", help="Bcc address; repeatable."
        )
        parser.add_argument(
            "--from-email",
            default="",
            metavar="ADDR",
            help="Sender (default: DEFAULT_FROM_EMAIL).",
        )
        parser.add_argument("--subject", required=True, help="Subject, one line.")
        content = parser.add_mutually_exclusive_group(required=True)
        content.add_argument("--body", help="Plain-text body.")
        content.add_argument(
            "--template",
            metavar="NAME",
            help="Template templates/emails/NAME.txt (and NAME.html if present).",
        )
        parser.add_argument(
            "--context", metavar="JSON", help="With --template: the template's context object."
        )
        parser.add_argument(
            "--html-body", default="", metavar="TEXT", help="HTML alternative to --body."
        )
        add_job_options(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["context"] and not options["template"]:
            raise CommandError("context: --context is only used with --template; drop one.")
        context = parse_json(options["context"], field="context") if options["context"] else None
        try:
            job = services.email_schedule(
                to=options["to"],
                cc=options["cc"],
                bcc=options["bcc"],
                from_email=options["from_email"],
                subject=options["subject"],
                body=options["body"] or "",
                html_body=options["html_body"],
                template=options["template"] or "",
                context=context,
                **job_options(options),
            )
        except ValidationError as exc:
            raise validation_failed(
                self, exc, as_json=options["json"], what="The email was not scheduled"
            ) from exc
        if options["json"]:
            write_json(self, job_as_dict(job))
        else:
            self.stdout.write(str(job.pk))
