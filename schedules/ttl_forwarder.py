"""The DynamoDB TTL forwarder: a TTL removal becomes the step's message on the jobs queue.

One code path, shipped twice: ``lambda_handler`` (subscribed to the timer
table's stream) and ``python manage.py forward_ttl_stream`` (reads the stream
itself, for deployments without Lambda and for tests). Only REMOVE records made
by DynamoDB's TTL process count; INSERT, MODIFY and user deletes (a cancel or a
reschedule disarming the timer) are ignored.

This module needs only the standard library and boto3, so it can be deployed
to Lambda on its own (see docs/aws.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

TTL_PRINCIPAL = "dynamodb.amazonaws.com"
TASK_NAME = "schedules.run_step"


def is_ttl_removal(record: dict[str, Any]) -> bool:
    """A REMOVE made by the TTL process (AWS marks it with a service identity)."""
    identity = record.get("userIdentity") or {}
    return (
        record.get("eventName") == "REMOVE"
        and identity.get("type") == "Service"
        and identity.get("principalId") == TTL_PRINCIPAL
    )


def step_of(record: dict[str, Any]) -> tuple[int, int]:
    """(step_id, version) from the removed item's old image."""
    image = record["dynamodb"]["OldImage"]
    return int(image["step_id"]["N"]), int(image["version"]["N"])


def celery_message(step_id: int, version: int, *, queue_name: str, message_id: str) -> str:
    """The Celery task message for run_step(step_id, version), as a plain-JSON kombu envelope.

    The same shape the Step Functions state machine sends (see docs/aws.md).
    """
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return json.dumps(
        {
            "body": json.dumps([[step_id, version], {}, embed], separators=(",", ":")),
            "content-type": "application/json",
            "content-encoding": "utf-8",
            "headers": {
                "lang": "py",
                "task": TASK_NAME,
                "id": message_id,
                "root_id": message_id,
                "parent_id": None,
                "group": None,
            },
            "properties": {
                "delivery_info": {"exchange": "", "routing_key": queue_name},
                "priority": 0,
                "body_encoding": "utf-8",
                "delivery_tag": message_id,
            },
        }
    )


def forward_records(
    records: Iterable[dict[str, Any]], *, send: Callable[[str], None], queue_name: str
) -> tuple[int, list[str]]:
    """Send the message of every TTL removal. Returns (sent, sequence numbers that failed).

    A failed send does not stop the batch: the caller reports the failures
    (Lambda's partial batch response) or stops its checkpoint before them.
    """
    sent = 0
    failed: list[str] = []
    for record in records:
        if not is_ttl_removal(record):
            continue
        step_id, version = step_of(record)
        body = celery_message(
            step_id, version, queue_name=queue_name, message_id=f"ttl-step-{step_id}-v{version}"
        )
        try:
            send(body)
        except Exception:  # noqa: BLE001 - reported per record, retried by the caller
            failed.append(str(record["dynamodb"]["SequenceNumber"]))
        else:
            sent += 1
    return sent, failed


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point; env JOBS_QUEUE_URL and JOBS_QUEUE_NAME name the jobs queue.

    Returns a partial batch response, so only the failed records are retried
    (enable ReportBatchItemFailures on the event source mapping).
    """
    import boto3

    queue_url = os.environ["JOBS_QUEUE_URL"]
    sqs = boto3.client("sqs")
    _, failed = forward_records(
        event.get("Records", []),
        send=lambda body: sqs.send_message(QueueUrl=queue_url, MessageBody=body),
        queue_name=os.environ["JOBS_QUEUE_NAME"],
    )
    return {"batchItemFailures": [{"itemIdentifier": seq} for seq in failed]}
