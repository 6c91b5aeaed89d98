"""The relaxed AWS engine: a DynamoDB item whose TTL is the step's due time.

DynamoDB deletes expired items some time after their TTL: typically within a
few days of expiry, with no guaranteed maximum (AWS, "Using time to live"). The
deletion appears on the table's stream and the forwarder
(schedules.ttl_forwarder) sends the step's message to the jobs queue. Cheap,
imprecise: the sweep in run_scheduler releases a step straight from the
database once it is overdue by SCHEDULES_TTL_MAX_LATENESS, and that sweep, not
DynamoDB, is what bounds the lateness; it then deletes the step's item, so no
later TTL removal sends a duplicate. Items hold ids, the version and the due
time, nothing else.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from django.conf import settings

from ..aws import aws_client, error_code
from .base import Engine, Timer, TimerStatus

TTL_ATTRIBUTE = "expires_at"


def item_key(timer: Timer) -> str:
    return f"step#{timer.step_id}#v{timer.version}"


def ttl_seconds(due_at: dt.datetime) -> int:
    """Epoch seconds, rounded up so the item never expires before the due time."""
    return math.ceil(due_at.timestamp())


def duration_words(seconds: int) -> str:
    """``45 s``, ``15 min``, ``1 min 30 s``, ``2 h``: a bound read as written, never rounded."""
    if seconds < 60:
        return f"{seconds} s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    return " ".join(p for p in [*parts, f"{secs} s" if secs else ""] if p)


#: List prices (US East, on-demand, read 2026-12-07): a write $0.625 per million write
#: request units, SQS $0.40 per million requests. A step is one write to arm and one
#: SQS send; the TTL deletion is free, and so are the stream reads of a Lambda trigger
#: (which batches up to 100 records per invocation, about $0.002 per million steps).
LIST_PRICE = Decimal("0.000001025")


class DynamoDBTTLEngine(Engine):
    name = "dynamodb_ttl"
    precision = "relaxed"
    list_price = LIST_PRICE
    #: The table (aws_provision and the template create it with the jobs queue) and the
    #: jobs queue its forwarder sends to.
    required_settings = ("SCHEDULES_TTL_TABLE_NAME", "SCHEDULES_SQS_QUEUE_URL")
    #: TTL deletions come when DynamoDB gets to them; the sweep is part of the guarantee.
    sweep_release_is_normal = True

    def __init__(self, client: Any = None, table_name: str | None = None) -> None:
        self._client = client
        self.table_name = table_name or settings.SCHEDULES_TTL_TABLE_NAME

    @property
    def client(self) -> Any:
        return self._client or aws_client("dynamodb")

    @property
    def release_overdue_after(self) -> float:
        return float(settings.SCHEDULES_TTL_MAX_LATENESS)

    @property
    def expected_lateness(self) -> str:
        bound = duration_words(int(settings.SCHEDULES_TTL_MAX_LATENESS))
        return f"at most {bound} (SCHEDULES_TTL_MAX_LATENESS) plus the sweep interval"

    def item(self, timer: Timer) -> dict[str, Any]:
        return {
            "pk": {"S": item_key(timer)},
            "step_id": {"N": str(timer.step_id)},
            "version": {"N": str(timer.version)},
            "due_at": {"S": timer.due_at.astimezone(dt.UTC).isoformat()},
            TTL_ATTRIBUTE: {"N": str(ttl_seconds(timer.due_at))},
        }

    def arm(self, timer: Timer) -> str:
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=self.item(timer),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except Exception as exc:
            # Already armed for this version: one timer, as before.
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
        return item_key(timer)

    def disarm(self, timer: Timer) -> None:
        # A user delete: the forwarder ignores it. Deleting a missing item is no error.
        self.client.delete_item(TableName=self.table_name, Key={"pk": {"S": item_key(timer)}})

    def describe(self, timer: Timer) -> TimerStatus:
        response = self.client.get_item(
            TableName=self.table_name, Key={"pk": {"S": item_key(timer)}}, ConsistentRead=True
        )
        item = response.get("Item")
        if not item:
            return TimerStatus(state="absent", detail="no item (expired, deleted or never armed)")
        expires = dt.datetime.fromtimestamp(int(item[TTL_ATTRIBUTE]["N"]), tz=dt.UTC)
        return TimerStatus(state="waiting", detail=f"expires at {expires.isoformat()}")

    def list_timers(self) -> Iterator[Timer]:
        """The table's items keyed ``step#<id>#v<version>``, by a paginated scan.

        ``due_at`` comes from the item (or its TTL); ``external_ref`` is the key.
        """
        pattern = re.compile(r"step#(\d+)#v(\d+)")
        for page in self.client.get_paginator("scan").paginate(TableName=self.table_name):
            for item in page.get("Items", []):
                key = str(item.get("pk", {}).get("S", ""))
                match = pattern.fullmatch(key)
                if match is None:
                    continue
                if "due_at" in item:
                    due = dt.datetime.fromisoformat(item["due_at"]["S"])
                else:
                    due = dt.datetime.fromtimestamp(int(item[TTL_ATTRIBUTE]["N"]), tz=dt.UTC)
                yield Timer(
                    step_id=int(match[1]),
                    version=int(match[2]),
                    due_at=due,
                    engine=self.name,
                    external_ref=key,
                )
