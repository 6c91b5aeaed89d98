"""Diagnosis probes for ``bench/run.py --trace``: where the time goes between due and start.

Installed by bench.actions when ``BENCH_TRACE=1``, in every process of the run,
by wrapping (never editing) product functions:

* dispatcher: ``schedules.dispatcher.steps_claim_due`` (claim transaction start and
  commit) and ``schedules.dispatcher.steps_publish`` (end of the broker writes);
* worker main process: ``workers.broker.Channel._get`` (the moment the folder
  broker hands a message to Celery);
* worker pool process: ``workers.tasks.step_execute`` and ``workers.tasks.steps_execute``
  (the task body starts), and ``schedules.services.execution._claim_together`` (the
  worker's claim transaction of steps due together: its start and its commit; a claim
  made ahead, on PostgreSQL, starts SCHEDULES_CLAIM_AHEAD before the due time and
  commits at it).

The action's own mark (bench.actions) is the last point. Each probe appends
``kind unix_time step_id...`` lines to ``<data dir>/trace/trace-<pid>.txt``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from django.conf import settings

_fd: int | None = None
_fd_pid: int | None = None


def _write(line: str) -> None:
    global _fd, _fd_pid
    pid = os.getpid()
    if _fd is None or _fd_pid != pid:
        folder = Path(settings.DATA_DIR) / "trace"
        folder.mkdir(parents=True, exist_ok=True)
        _fd = os.open(folder / f"trace-{pid}.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _fd_pid = pid
    os.write(_fd, line.encode())


def install() -> None:
    from schedules import dispatcher
    from workers import broker, tasks

    claim, publish = dispatcher.steps_claim_due, dispatcher.steps_publish

    def traced_claim(**kwargs: Any) -> list[tuple[int, int]]:
        t0 = time.time()
        rows = claim(**kwargs)
        t1 = time.time()
        if rows:
            ids = " ".join(str(pk) for pk, _ in rows)
            _write(f"claim_start {t0:.6f} {ids}\nclaimed {t1:.6f} {ids}\n")
        else:
            _write(f"claim_empty {t0:.6f} {t1 - t0:.6f}\n")
        return rows

    def traced_publish(pairs: Any) -> None:
        publish(pairs)
        if pairs:
            _write(f"published {time.time():.6f} {' '.join(str(pk) for pk, _ in pairs)}\n")

    dispatcher.steps_claim_due = traced_claim  # type: ignore[assignment]
    dispatcher.steps_publish = traced_publish  # type: ignore[assignment]

    get = broker.Channel._get

    def traced_get(self: Any, queue: str, *args: Any, **kwargs: Any) -> Any:
        message = get(self, queue, *args, **kwargs)
        try:
            body = json.loads(base64.b64decode(message["body"]))
            _write(f"fetched {time.time():.6f} {int(body[0][0])}\n")
        except (KeyError, ValueError, TypeError, IndexError):
            pass
        return message

    broker.Channel._get = traced_get  # type: ignore[method-assign]

    execute = tasks.step_execute

    def traced_execute(**kwargs: Any) -> Any:
        _write(f"task_start {time.time():.6f} {kwargs['step_id']}\n")
        return execute(**kwargs)

    tasks.step_execute = traced_execute

    execute_many = tasks.steps_execute

    def traced_execute_many(**kwargs: Any) -> Any:
        ids = " ".join(str(int(pk)) for pk, _ in kwargs["pairs"])
        _write(f"task_start {time.time():.6f} {ids}\n")
        return execute_many(**kwargs)

    tasks.steps_execute = traced_execute_many

    from schedules.services import execution

    claim_together = execution._claim_together

    def traced_claim_together(steps: Any, now: Any, worker: str, *args: Any) -> Any:
        t0 = time.time()
        claimed = claim_together(steps, now, worker, *args)
        t1 = time.time()
        ids = " ".join(str(step.pk) for step, _ in claimed)
        if ids:
            _write(f"worker_claim_start {t0:.6f} {ids}\nworker_claimed {t1:.6f} {ids}\n")
        return claimed

    execution._claim_together = traced_claim_together

    # SQLite write lock: time to get it (BEGIN IMMEDIATE) and time it is held (until COMMIT).
    from django.db.backends.sqlite3.base import DatabaseWrapper

    role = _role()
    begin, commit = DatabaseWrapper._start_transaction_under_autocommit, DatabaseWrapper._commit

    def traced_begin(self: Any) -> None:
        t0 = time.perf_counter()
        begin(self)
        t1 = time.perf_counter()
        self._bench_locked_at = t1
        _write(f"lockwait {time.time():.6f} {role} {t1 - t0:.6f}\n")

    def traced_commit(self: Any) -> None:
        commit(self)
        locked_at = getattr(self, "_bench_locked_at", None)
        if locked_at is not None:
            self._bench_locked_at = None
            _write(f"lockheld {time.time():.6f} {role} {time.perf_counter() - locked_at:.6f}\n")

    DatabaseWrapper._start_transaction_under_autocommit = traced_begin  # type: ignore[method-assign]
    DatabaseWrapper._commit = traced_commit  # type: ignore[method-assign]


def _role() -> str:
    import sys

    argv = " ".join(sys.argv)
    if "run_scheduler" in argv:
        return "dispatcher"
    if "celery" in argv:
        return "worker"
    return "driver"


def analyse(
    data_dir: Path, due: dict[int, dt.datetime], window: tuple[float, float]
) -> dict[str, Any]:
    """Per due step, the time of each probe relative to its due time, summarised in ms.

    Also the SQLite write-lock waits and hold times per process role during ``window``
    (unix times from the window start to the last action start).
    """
    first: dict[str, dict[int, float]] = defaultdict(dict)
    locks: dict[str, list[float]] = defaultdict(list)
    empty_claims: list[float] = []
    for path in sorted((data_dir / "trace").glob("trace-*.txt")):
        for line in path.read_text().splitlines():
            kind, at, *ids = line.split()
            if kind in ("lockwait", "lockheld"):
                if window[0] <= float(at) <= window[1]:
                    locks[f"{kind} {ids[0]}"].append(float(ids[1]))
                continue
            if kind == "claim_empty":
                if window[0] <= float(at) <= window[1]:
                    empty_claims.append(float(ids[0]))
                continue
            for pk in map(int, ids):
                first[kind].setdefault(pk, float(at))
    marks: dict[int, float] = {}
    for path in sorted((data_dir / "marks").glob("marks-*.txt")):
        for line in path.read_text().splitlines():
            step, _, _, at, _ = line.split()
            marks.setdefault(int(step), float(at))
    first["action_start"] = marks
    order = [
        "claim_start",
        "claimed",
        "published",
        "fetched",
        "task_start",
        "worker_claim_start",
        "worker_claimed",
        "action_start",
    ]
    from bench.run import summary_ms

    since_due = {
        kind: summary_ms(
            [first[kind][pk] - d.timestamp() for pk, d in due.items() if pk in first[kind]]
        )
        for kind in order
    }
    segments: dict[str, Any] = {}
    previous = None
    for kind in order:
        if not first[kind]:
            continue  # a probe this run has not got (the folder broker's fetch on Redis)
        if previous is not None:
            segments[f"{previous}->{kind}"] = summary_ms(
                [
                    first[kind][pk] - first[previous][pk]
                    for pk in due
                    if pk in first[kind] and pk in first[previous]
                ]
            )
        previous = kind
    batch_sizes: dict[float, int] = defaultdict(int)
    for pk in due:
        if pk in first["claimed"]:
            batch_sizes[first["claimed"][pk]] += 1
    sizes = sorted(batch_sizes.values())
    return {
        "sqlite_lock_ms": {key: summary_ms(values) for key, values in sorted(locks.items())},
        "since_due_ms": since_due,
        "segments_ms": segments,
        "claim_batches": len(sizes),
        # Claim transactions that found nothing due (the dispatcher woken by another commit).
        "empty_claims": len(empty_claims),
        "empty_claim_ms": summary_ms(empty_claims),
        "claim_batch_size_p50": sizes[len(sizes) // 2] if sizes else None,
        "claim_batch_size_max": sizes[-1] if sizes else None,
    }


def print_trace(label: str, trace: dict[str, Any]) -> None:
    """Print ``analyse``'s figures under ``label``."""
    from bench.run import fmt

    print(f"  {label} trace (ms; p50 / p99 / max):")
    for name, d in [
        *trace["since_due_ms"].items(),
        *trace["segments_ms"].items(),
        *trace["sqlite_lock_ms"].items(),
    ]:
        name = f"due->{name}" if name in trace["since_due_ms"] else name
        print(
            f"    {name:<36} {fmt(d['p50']):>8} {fmt(d['p99']):>8} {fmt(d['max']):>8}  (n={d['n']})"
        )
    print(
        f"    claim batches {trace['claim_batches']}, size p50 {trace['claim_batch_size_p50']}, "
        f"max {trace['claim_batch_size_max']}; claims that found nothing "
        f"{trace['empty_claims']} (p50 {fmt(trace['empty_claim_ms']['p50'])} ms)"
    )
