"""moto's server mode on 127.0.0.1: AWS over real HTTP, never the internet."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from django.core.management import call_command

from schedules.aws import aws_client_reset
from schedules.engines import get_engine

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class Moto:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()
        # Let state machines run (moto only records them otherwise).
        requests.post(
            f"{self.url}/moto-api/config",
            json={"stepfunctions": {"execute_state_machine": True}},
            timeout=10,
        ).raise_for_status()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Moto]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    saved = {k: os.environ.get(k) for k in [*AWS_ENV, "AWS_ENDPOINT_URL", "MOTO_PORT", "TZ"]}
    # moto's Step Functions integrations call http://localhost:$MOTO_PORT, and its
    # Wait compares naive local time with UTC: the process must run in UTC.
    os.environ.update(
        AWS_ENV, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", MOTO_PORT=str(port), TZ="UTC"
    )
    time.tzset()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("moto").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    aws_client_reset()
    try:
        yield Moto(port=port)
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        time.tzset()
        aws_client_reset()


@dataclass
class Provisioned:
    moto: Moto
    state_machine_arn: str
    queue_url: str
    queue_name: str
    dlq_url: str
    queue_arn: str = ""
    dlq_arn: str = ""
    schedule_group: str = ""
    scheduler_role_arn: str = ""


@pytest.fixture
def aws(moto_server: Moto, settings: Any) -> Iterator[Provisioned]:
    """A fresh moto, provisioned by the real aws_provision command."""
    import json
    from io import StringIO

    moto_server.reset()
    aws_client_reset()
    out = StringIO()
    call_command("aws_provision", "--json", stdout=out)
    result = json.loads(out.getvalue())
    settings.SCHEDULES_SFN_STATE_MACHINE_ARN = result["state_machine_arn"]
    settings.SCHEDULES_SQS_QUEUE_URL = result["queue_url"]
    settings.SCHEDULES_SQS_QUEUE_ARN = result["queue_arn"]
    settings.SCHEDULES_SQS_DLQ_ARN = result["dlq_arn"]
    settings.SCHEDULES_EVENTBRIDGE_GROUP = result["schedule_group"]
    settings.SCHEDULES_EVENTBRIDGE_ROLE_ARN = result["scheduler_role_arn"]
    get_engine.cache_clear()
    yield Provisioned(
        moto=moto_server,
        state_machine_arn=result["state_machine_arn"],
        queue_url=result["queue_url"],
        queue_name=settings.CELERY_TASK_DEFAULT_QUEUE,
        dlq_url=result["dlq_url"],
        queue_arn=result["queue_arn"],
        dlq_arn=result["dlq_arn"],
        schedule_group=result["schedule_group"],
        scheduler_role_arn=result["scheduler_role_arn"],
    )
    get_engine.cache_clear()


def ttl_removal(step_id: int, version: int, seq: str = "100") -> dict:
    """A REMOVE record as DynamoDB Streams delivers it when TTL deletes an item."""
    return {
        "eventID": f"e{seq}",
        "eventName": "REMOVE",
        "eventSource": "aws:dynamodb",
        "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
        "dynamodb": {
            "Keys": {"pk": {"S": f"step#{step_id}#v{version}"}},
            "OldImage": {
                "pk": {"S": f"step#{step_id}#v{version}"},
                "step_id": {"N": str(step_id)},
                "version": {"N": str(version)},
                "expires_at": {"N": "1700000000"},
            },
            "SequenceNumber": seq,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }
