"""The benchmark's action: ``bench_mark`` writes down the moment it started.

Registered in every process of a benchmark run through
``SCHEDULES_ACTION_MODULES=bench.actions``. Each call appends one line
``step_id version attempt unix_time pid`` to ``<SCHEDULES_DATA_DIR>/marks/marks-<pid>.txt``
with a single ``write`` on an ``O_APPEND`` descriptor. The marks are the
benchmark's own record, independent of the product's Run rows: a step that
runs twice leaves two lines, even if the Run bookkeeping were wrong.

With ``BENCH_TRACE=1`` the module also installs the tracing probes of
``bench.trace`` (diagnosis only; off in a normal run).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field

from workers.actions.base import ActionContext, register

MARKS_DIR = "marks"

_fd: int | None = None
_fd_pid: int | None = None


class BenchPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Seconds the action lasts after its mark (the fault suite kills workers mid-action).
    seconds: float = Field(default=0.0, ge=0, le=600)


def marks_dir(data_dir: Path | str | None = None) -> Path:
    return Path(data_dir if data_dir is not None else settings.DATA_DIR) / MARKS_DIR


def _marks_fd() -> int:
    """One append-only descriptor per process (re-opened after a fork)."""
    global _fd, _fd_pid
    pid = os.getpid()
    if _fd is None or _fd_pid != pid:
        folder = marks_dir()
        folder.mkdir(parents=True, exist_ok=True)
        _fd = os.open(folder / f"marks-{pid}.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _fd_pid = pid
    return _fd


@register(
    "bench_mark",
    payload=BenchPayload,
    description="Benchmark probe: appends (step, version, start time) to a marks file.",
)
def bench_mark(ctx: ActionContext, payload: BenchPayload) -> None:
    started = time.time()
    line = f"{ctx.step_id} {ctx.version} {ctx.attempt} {started:.6f} {os.getpid()}\n"
    os.write(_marks_fd(), line.encode())
    if payload.seconds:
        time.sleep(payload.seconds)


class MarkReader:
    """Reads the marks files incrementally: {step_id: [(version, attempt, unix_time, pid)]}."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.offsets: dict[Path, int] = {}
        self.marks: dict[int, list[tuple[int, int, float, int]]] = defaultdict(list)

    def poll(self) -> None:
        if not self.folder.exists():
            return
        for path in sorted(self.folder.glob("marks-*.txt")):
            offset = self.offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1  # only whole lines
            for line in chunk[:end].decode().splitlines():
                step, version, attempt, at, pid = line.split()
                self.marks[int(step)].append((int(version), int(attempt), float(at), int(pid)))
            self.offsets[path] = offset + end


if os.environ.get("BENCH_TRACE") == "1":
    from . import trace

    trace.install()
