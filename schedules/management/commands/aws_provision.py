"""aws_provision: create or update the AWS resources of the AWS engines."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from schedules.aws import aws_client
from schedules.aws_provision import Provisioner

PERMISSION_CODES = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "ExpiredToken",
    "SignatureDoesNotMatch",
}


class Command(BaseCommand):
    help = (
        "Create or update, idempotently, the jobs SQS queue and its dead-letter queue, the IAM "
        "role the state machine assumes (sqs:SendMessage on the jobs queue only, trusted by "
        "this account's state machine only) and the Step Functions state machine; and the "
        "DynamoDB timer table of the relaxed engine (TTL on, NEW_AND_OLD_IMAGES stream), the "
        "<queue>-ttl-failures queue and, if SCHEDULES_TTL_FORWARDER_FUNCTION_ARN is set, the "
        "Lambda event source mapping of the forwarder (bounded retries, failed batches to "
        "<queue>-ttl-failures); and the EventBridge Scheduler schedule "
        "group of the eventbridge engine with the role its schedules assume (sqs:SendMessage on "
        "the jobs queue and its dead-letter queue, this account's schedules only). Prints what "
        "it created or changed and the settings to use. "
        "Exit 0 on success, 1 on missing credentials or permissions."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        prefix = settings.SCHEDULES_AWS_NAME_PREFIX
        parser.add_argument(
            "--queue-name",
            default=settings.CELERY_TASK_DEFAULT_QUEUE,
            help="Jobs queue name; the DLQ is <name>-dlq (default: CELERY_TASK_DEFAULT_QUEUE).",
        )
        parser.add_argument(
            "--state-machine-name",
            default=f"{prefix}-step-timer",
            help="State machine name (default: <prefix>-step-timer).",
        )
        parser.add_argument(
            "--role-name",
            default=f"{prefix}-step-timer-role",
            help="IAM role name (default: <prefix>-step-timer-role).",
        )
        parser.add_argument(
            "--table-name",
            default=settings.SCHEDULES_TTL_TABLE_NAME,
            help="DynamoDB timer table of the relaxed engine (default: SCHEDULES_TTL_TABLE_NAME).",
        )
        parser.add_argument(
            "--schedule-group",
            default=settings.SCHEDULES_EVENTBRIDGE_GROUP,
            help="Schedule group of the eventbridge engine (default: SCHEDULES_EVENTBRIDGE_GROUP).",
        )
        parser.add_argument(
            "--scheduler-role-name",
            default=f"{prefix}-step-scheduler-role",
            help="IAM role the eventbridge engine's schedules assume "
            "(default: <prefix>-step-scheduler-role).",
        )
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        provisioner = Provisioner(
            sqs=aws_client("sqs"),
            iam=aws_client("iam"),
            sfn=aws_client("stepfunctions"),
            queue_name=options["queue_name"],
            state_machine_name=options["state_machine_name"],
            role_name=options["role_name"],
            max_receive_count=settings.SCHEDULES_SQS_MAX_RECEIVE_COUNT,
            visibility_timeout=settings.SCHEDULES_SQS_VISIBILITY_TIMEOUT,
            wait_time_seconds=settings.SCHEDULES_SQS_WAIT_TIME_SECONDS,
            dynamodb=aws_client("dynamodb"),
            table_name=options["table_name"],
            lambda_client=(
                aws_client("lambda") if settings.SCHEDULES_TTL_FORWARDER_FUNCTION_ARN else None
            ),
            forwarder_function_arn=settings.SCHEDULES_TTL_FORWARDER_FUNCTION_ARN,
            scheduler=aws_client("scheduler"),
            schedule_group=options["schedule_group"],
            scheduler_role_name=options["scheduler_role_name"],
        )
        try:
            result = provisioner.run()
        except NoCredentialsError as exc:
            raise CommandError(
                "No AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or AWS_PROFILE, or run where an instance or task role is available."
            ) from exc
        except ClientError as exc:
            error = exc.response.get("Error", {})
            operation = exc.operation_name
            if error.get("Code") in PERMISSION_CODES:
                raise CommandError(
                    f"AWS refused {operation}: {error.get('Message', error.get('Code'))}. "
                    "The identity running aws_provision needs the permissions listed in "
                    "docs/aws.md (Provisioning)."
                ) from exc
            raise CommandError(f"AWS {operation} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise CommandError(f"AWS call failed: {exc}") from exc
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict(), indent=2))
            return
        for change in result.changes:
            style = self.style.SUCCESS if change.action != "unchanged" else str
            self.stdout.write(style(f"{change.action:9} {change.resource}: {change.name}"))
        self.stdout.write("\nSet these for the web, scheduler and worker processes:")
        self.stdout.write(
            "# auto: seconds -> stepfunctions, minute -> eventbridge, relaxed -> dynamodb_ttl\n"
            "SCHEDULES_ENGINE_SECONDS=auto\n"
            "SCHEDULES_ENGINE_MINUTE=auto\n"
            "SCHEDULES_ENGINE_RELAXED=auto\n"
            f"SCHEDULES_SFN_STATE_MACHINE_ARN={result.state_machine_arn}\n"
            f"SCHEDULES_SQS_QUEUE_URL={result.queue_url}\n"
            f"CELERY_BROKER_URL=sqs://\n"
            f"CELERY_TASK_DEFAULT_QUEUE={options['queue_name']}\n"
            f"SCHEDULES_TTL_TABLE_NAME={result.table_name}\n"
            f"SCHEDULES_EVENTBRIDGE_GROUP={result.schedule_group}\n"
            f"SCHEDULES_EVENTBRIDGE_ROLE_ARN={result.scheduler_role_arn}\n"
            f"SCHEDULES_SQS_QUEUE_ARN={result.queue_arn}\n"
            f"SCHEDULES_SQS_DLQ_ARN={result.dlq_arn}"
        )
