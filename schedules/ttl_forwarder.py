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
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

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


class MalformedRecord(ValueError):
    """A TTL removal whose old image names no step (e.g. an item added to the table by hand)."""


def step_of(record: dict[str, Any]) -> tuple[int, int]:
    """(step_id, version) from the removed item's old image.

    Raises ``MalformedRecord`` when the image lacks either number or holds something
    else than a whole number in it.
    """
    try:
        image = record["dynamodb"]["OldImage"]
        return int(image["step_id"]["N"]), int(image["version"]["N"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedRecord(f"no numeric step_id and version in its old image ({exc!r})") from exc


def sequence_number(record: dict[str, Any]) -> str:
    """The record's sequence number in its shard ('' if it has none)."""
    dynamodb = record.get("dynamodb")
    return str(dynamodb.get("SequenceNumber", "")) if isinstance(dynamodb, dict) else ""


def task_body(step_id: int, version: int) -> str:
    """The Celery task body of run_step(step_id, version): ``[args, kwargs, embed]``.

    No callbacks, errbacks, chain or chord: an empty ``embed``.
    """
    return json.dumps([[step_id, version], {}, {}], separators=(",", ":"))


def celery_message(step_id: int, version: int, *, queue_name: str, message_id: str) -> str:
    """The Celery task message for run_step(step_id, version), as a plain-JSON kombu envelope.

    The same shape the Step Functions state machine sends (see docs/aws.md).
    """
    return json.dumps(
        {
            "body": task_body(step_id, version),
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


@dataclass
class Forwarded:
    """What ``forward_records`` did with a batch of records."""

    sent: int = 0
    #: Sequence numbers of the TTL removals whose send failed (retry them).
    failed: list[str] = field(default_factory=list)
    #: Sequence numbers of the TTL removals skipped because they name no step: logged,
    #: never retried (a retry could not succeed), and not holding up the batch.
    malformed: list[str] = field(default_factory=list)


def forward_records(
    records: Iterable[dict[str, Any]], *, send: Callable[[str], None], queue_name: str
) -> Forwarded:
    """Send the message of every TTL removal; returns what was sent, failed and skipped.

    A failed send does not stop the batch: the caller reports the failures
    (Lambda's partial batch response) or stops its checkpoint before them. A
    malformed TTL removal (its old image has no numeric ``step_id`` and ``version``,
    e.g. an item added to the table by hand) is logged and skipped.
    """
    result = Forwarded()
    for record in records:
        if not is_ttl_removal(record):
            continue
        try:
            step_id, version = step_of(record)
        except MalformedRecord as exc:
            logger.error(
                "skipping the TTL removal at sequence %s of %s: %s; it names no step, so no "
                "message is sent for it",
                sequence_number(record) or "?",
                record.get("eventSourceARN", "the stream"),
                exc,
            )
            result.malformed.append(sequence_number(record))
            continue
        body = celery_message(
            step_id, version, queue_name=queue_name, message_id=f"ttl-step-{step_id}-v{version}"
        )
        try:
            send(body)
        except Exception:  # noqa: BLE001 - reported per record, retried by the caller
            result.failed.append(sequence_number(record))
        else:
            result.sent += 1
    return result


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point; env JOBS_QUEUE_URL and JOBS_QUEUE_NAME name the jobs queue.

    Returns a partial batch response, so only the failed records are retried
    (enable ReportBatchItemFailures on the event source mapping). A malformed record
    is logged and left out of it: retrying it could never succeed.
    """
    import boto3

    queue_url = os.environ["JOBS_QUEUE_URL"]
    sqs = boto3.client("sqs")
    result = forward_records(
        event.get("Records", []),
        send=lambda body: sqs.send_message(QueueUrl=queue_url, MessageBody=body),
        queue_name=os.environ["JOBS_QUEUE_NAME"],
    )
    if result.malformed or result.failed:
        logger.warning(
            "forwarded %s TTL removal(s); %s failed (reported for retry), %s malformed (skipped)",
            result.sent,
            len(result.failed),
            len(result.malformed),
        )
    return {"batchItemFailures": [{"itemIdentifier": seq} for seq in result.failed]}
