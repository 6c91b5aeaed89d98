"""A long task's status endpoint over real HTTP, for the tests of polling jobs: each GET
answers ``{"task": {"state": <next queued state>}}`` and is timed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class TaskStatus(BaseHTTPRequestHandler):
    """Answers the queued states in turn ("Running" once none is left); remembers when."""

    states: list[str] = []
    seen: list[float] = []

    def do_GET(self) -> None:
        TaskStatus.seen.append(time.time())
        state = TaskStatus.states.pop(0) if TaskStatus.states else "Running"
        body = json.dumps({"task": {"state": state}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def task_status(*states: str) -> Iterator[str]:
    """Serve the states on 127.0.0.1; yields the status URL."""
    TaskStatus.states, TaskStatus.seen = list(states), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), TaskStatus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/tasks/42"
    finally:
        server.shutdown()
        server.server_close()
