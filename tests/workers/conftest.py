"""A real HTTP server on 127.0.0.1 for the HTTP actions' tests (``service``)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.utils import timezone

from workers.actions import ActionContext

CTX = ActionContext(
    step_id=7, version=2, attempt=1, due_at=timezone.now(), job_id=1, classroom_id=None
)


@dataclass
class Answer:
    status: int = 200
    body: bytes | str | Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_length: bool = True


class StatusService(BaseHTTPRequestHandler):
    """Answers each path as the test scripted it; remembers every request."""

    answers: dict[str, Answer] = {}
    requests: list[tuple[str, dict[str, str]]] = []
    #: (method, path, body) of every request
    calls: list[tuple[str, str, bytes]] = []

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        StatusService.calls.append((self.command, self.path, self.rfile.read(length)))
        StatusService.requests.append((self.path, dict(self.headers.items())))
        answer = StatusService.answers.get(self.path, Answer(404, b"no such path"))
        time.sleep(answer.delay)
        body = answer.body
        if not isinstance(body, bytes):
            body = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if answer.content_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # A client that stops reading (an oversized body, a timeout) closes the connection
        # early, as those tests mean it to.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Service:
    base: str
    handler: type[StatusService]

    def answer(self, path: str, answer: Answer) -> str:
        self.handler.answers[path] = answer
        return f"{self.base}{path}"

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.handler.requests]


@pytest.fixture
def service(settings: Any) -> Iterator[Service]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StatusService)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    StatusService.answers = {}
    StatusService.requests = []
    StatusService.calls = []
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["127.0.0.1"]
    yield Service(f"http://127.0.0.1:{server.server_port}", StatusService)
    server.shutdown()
    server.server_close()
