"""One place that builds AWS clients.

Clients honour the standard credential chain and endpoint variables
(``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_<SERVICE>``), so the same code talks to
AWS, moto or LocalStack. boto3 is imported only when a client is first needed,
and each client is built once per process, never at import time.
"""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings


@functools.cache
def aws_client(service: str) -> Any:
    """A boto3 client for ``service`` with standard retries (throttling and 5xx back off)."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": settings.SCHEDULES_AWS_MAX_ATTEMPTS},
        connect_timeout=settings.SCHEDULES_AWS_CONNECT_TIMEOUT,
        read_timeout=settings.SCHEDULES_AWS_READ_TIMEOUT,
    )
    return boto3.session.Session().client(
        service, region_name=settings.SCHEDULES_AWS_REGION, config=config
    )


def error_code(exc: Exception) -> str:
    """The AWS error code of a botocore ClientError ("" for any other exception)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def aws_client_reset() -> None:
    """Forget cached clients (after the environment or settings changed, e.g. in tests)."""
    aws_client.cache_clear()


def dead_letter_depth() -> int | None:
    """Messages waiting in the jobs queue's dead-letter queue (its RedrivePolicy's
    target), or None when the queue has no redrive policy."""
    import json

    sqs = aws_client("sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=settings.SCHEDULES_SQS_QUEUE_URL, AttributeNames=["RedrivePolicy"]
    ).get("Attributes", {})
    if "RedrivePolicy" not in attributes:
        return None
    dlq_arn = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
    # arn:aws:sqs:<region>:<account>:<name>
    _, _, _, _, account, name = dlq_arn.split(":", 5)
    url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    depth = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
        "Attributes"
    ]["ApproximateNumberOfMessages"]
    return int(depth)
