"""redrive_dlq: move messages from the jobs queue's dead-letter queue back to the queue."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from schedules.aws import aws_client

from ._shared import EXIT_STATUS, write_json


class Command(BaseCommand):
    help = (
        "Move messages from the dead-letter queue of the jobs queue (the queue named by "
        "SCHEDULES_SQS_QUEUE_URL's RedrivePolicy, else <CELERY_TASK_DEFAULT_QUEUE>-dlq) back "
        "to the jobs queue, with the same body and attributes. A message is deleted from the "
        "dead-letter queue only after the jobs queue accepted it, so none is lost; a message "
        "moved twice runs once (the worker's fence and claim). Prints the count moved, or "
        "JSON with --json. " + EXIT_STATUS + " A send that fails leaves the message in the "
        "dead-letter queue and makes it 1."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--max",
            type=int,
            default=None,
            metavar="N",
            help="Move at most N messages (default: all the dead-letter queue holds).",
        )
        parser.add_argument("--json", action="store_true", help="Print the counts as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        queue_url = settings.SCHEDULES_SQS_QUEUE_URL
        if not queue_url:
            raise CommandError(
                "SCHEDULES_SQS_QUEUE_URL is not set: set it to the jobs queue's URL "
                "(python manage.py aws_provision prints it)."
            )
        limit = options["max"]
        if limit is not None and limit < 1:
            raise CommandError("max: must be at least 1 (leave it out to move everything).")
        sqs = aws_client("sqs")
        try:
            dlq_url = self.dlq_url(sqs, queue_url)
            moved, failed = self.move(sqs, dlq_url, queue_url, limit)
        except (BotoCoreError, ClientError) as exc:
            raise CommandError(f"SQS call failed: {exc}. Check credentials and the URLs.") from exc
        if options["json"]:
            write_json(
                self, {"moved": moved, "failed": failed, "dlq_url": dlq_url, "queue_url": queue_url}
            )
        else:
            self.stdout.write(self.style.SUCCESS(f"moved {moved} message(s) from {dlq_url}"))
        if failed:
            raise CommandError(
                f"{failed} message(s) could not be sent to {queue_url} and stay in the "
                "dead-letter queue; fix the queue and run redrive_dlq again."
            )

    def dlq_url(self, sqs: Any, queue_url: str) -> str:
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
        policy = attributes.get("Attributes", {}).get("RedrivePolicy")
        name = (
            json.loads(policy)["deadLetterTargetArn"].rsplit(":", 1)[-1]
            if policy
            else f"{settings.CELERY_TASK_DEFAULT_QUEUE}-dlq"
        )
        try:
            return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
        except Exception as exc:
            raise CommandError(
                f"No dead-letter queue {name!r} found ({exc}); run aws_provision to create it."
            ) from exc

    def move(self, sqs: Any, dlq_url: str, queue_url: str, limit: int | None) -> tuple[int, int]:
        moved = 0
        while limit is None or moved < limit:
            wanted = 10 if limit is None else min(10, limit - moved)
            messages = sqs.receive_message(
                QueueUrl=dlq_url,
                MaxNumberOfMessages=wanted,
                WaitTimeSeconds=1,
                VisibilityTimeout=60,
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                break
            entries = []
            for index, message in enumerate(messages):
                entry = {"Id": str(index), "MessageBody": message["Body"]}
                if message.get("MessageAttributes"):
                    entry["MessageAttributes"] = message["MessageAttributes"]
                entries.append(entry)
            sent = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            done = [int(entry["Id"]) for entry in sent.get("Successful", [])]
            if done:  # delete only what the jobs queue accepted
                sqs.delete_message_batch(
                    QueueUrl=dlq_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": messages[i]["ReceiptHandle"]} for i in done
                    ],
                )
            moved += len(done)
            if len(done) < len(messages):
                return moved, len(messages) - len(done)
        return moved, 0
