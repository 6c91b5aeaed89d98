"""The relaxed AWS engine: a DynamoDB item whose TTL is the step's due time.

DynamoDB deletes expired items some time after their TTL (typically minutes,
up to 48 hours); the deletion appears on the table's stream and the forwarder
(schedules.ttl_forwarder) sends the step's message to the jobs queue. Cheap,
imprecise: the sweep in run_scheduler releases a step straight from the
database once it is overdue by SCHEDULES_TTL_MAX_LATENESS, so lateness stays
bounded. Items hold ids, the version and the due time, nothing else.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator
from typing import Any

from django.conf import settings

from ..aws import aws_client
from .base import Engine, Timer, TimerStatus

TTL_ATTRIBUTE = "expires_at"


def item_key(timer: Timer) -> str:
    return f"step#{timer.step_id}#v{timer.version}"


def ttl_seconds(due_at: dt.datetime) -> int:
    """Epoch seconds, rounded up so the item never expires before the due time."""
    return math.ceil(due_at.timestamp())


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class DynamoDBTTLEngine(Engine):
    name = "dynamodb_ttl"

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
        return (
            f"minutes, at most {settings.SCHEDULES_TTL_MAX_LATENESS // 60} min "
            "(SCHEDULES_TTL_MAX_LATENESS) plus the sweep interval"
        )

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
            if _error_code(exc) != "ConditionalCheckFailedException":
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
