"""Fault-injection suite: does the promise (never lose, never double) hold under faults?

    .venv/bin/python bench/faults.py                  # every case, both shapes (~15 min)
    .venv/bin/python bench/faults.py --quick          # fewer jobs and faults (~6 min)
    .venv/bin/python bench/faults.py --shape pg-redis --case worker_kill --json out.json

Two shapes: ``pg-redis`` (PostgreSQL + Redis, each a server of the suite's own on a free
port: a cluster made by initdb and a redis-server, so they can be killed and
restarted) and ``sqlite-folder`` (the embedded default: SQLite and the folder broker).
Each case runs in a child process with a fresh database: a dispatcher (or two) and two
Celery workers (concurrency 2), jobs due over a window, faults injected while they are
due. The action (``bench_mark``, bench/actions.py) appends one line per start to a file
of its own, so a step that starts twice is seen even if the product's records were wrong.

Per case it prints: jobs, lost (never started), doubled (started twice, not flagged),
doubled but flagged uncertain (the first attempt's worker or database died between the
effect and its record: allowed, and said), runs flagged uncertain, and recovery time per
fault (p50 / max): from the fault to the (re)start of the last step it hit. A fault hits
the steps the killed process held (a worker: the one it ran and the rest of its message;
a dispatcher: its claimed batch), or every step in flight (queued or running) for a
broker or database restart.
See docs/reliability.md for the figures and what they mean.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.servers import PostgresCluster, RedisServer  # noqa: E402

SHAPES = ("pg-redis", "sqlite-folder")


@dataclasses.dataclass
class Fault:
    """When a fault struck and which steps it hit (held by the process it killed, or in
    flight when the broker or the database went away)."""

    at: float
    hit: set[int]


@dataclasses.dataclass
class Sizes:
    jobs: int = 2000
    window: float = 30.0
    faults: int = 10
    restarts: int = 2
    races: int = 1000


QUICK = Sizes(jobs=600, window=15.0, faults=4, restarts=2, races=300)


@dataclasses.dataclass
class Result:
    shape: str
    case: str
    jobs: int = 0
    lost: int = 0
    doubled: int = 0
    doubled_uncertain: int = 0
    uncertain: int = 0
    faults: int = 0
    hit: int = 0  # steps the faults hit, summed
    lateness_p99: float | None = None  # of the steps no fault hit: first start - due
    recovery: list[float] = dataclasses.field(default_factory=list)
    worker_exits: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)

    def p50(self) -> float | None:
        ordered = sorted(self.recovery)
        return ordered[(len(ordered) - 1) // 2] if ordered else None  # nearest rank

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["recovery_p50"] = self.p50()
        data["recovery_max"] = max(self.recovery) if self.recovery else None
        return data


class Harness:
    """The processes of one case (dispatchers, workers) on one database and broker, and
    the jobs it schedules, read through the ORM of the calling process."""

    def __init__(
        self,
        folder: Path,
        *,
        database_url: str,
        broker_url: str,
        redis: RedisServer | None = None,
        postgres: PostgresCluster | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.folder = folder
        self.redis = redis
        self.postgres = postgres
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("SCHEDULES_", "CELERY_", "DATABASE_URL", "EMAIL_URL"))
            },
            "DJANGO_SETTINGS_MODULE": "scheduler_project.settings",
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": broker_url,
            "CELERY_TASK_DEFAULT_QUEUE": f"faults-{os.getpid()}-{random.randrange(10**6)}",
            "SCHEDULES_DATA_DIR": str(folder),
            "SCHEDULES_ACTION_MODULES": "bench.actions",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.exits: dict[str, int] = {}
        self.count = 0

    # --- processes ---------------------------------------------------------------------------

    def _start(self, role: str, args: list[str]) -> str:
        self.count += 1
        name = f"{role}-{self.count}"
        log = (self.folder / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return name

    def start_dispatcher(self) -> str:
        return self._start("dispatcher", ["manage.py", "run_scheduler"])

    def start_worker(self, *, wait: bool = True) -> str:
        queue = self.env["CELERY_TASK_DEFAULT_QUEUE"]
        name = self._start(
            "worker",
            [
                "-m",
                "celery",
                "-A",
                "scheduler_project",
                "worker",
                "--concurrency",
                "2",
                "--loglevel",
                "INFO",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-Q",
                queue,
                "-n",
                f"{queue}-{self.count + 1}@%h",  # the number _start gives this process
            ],
        )
        if wait:
            self.wait_for_log(name, "ready.")
        return name

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_log(self, name: str, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log(name):
                return
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{self.log(name)[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{name} did not log {text!r} in {timeout} s")

    def holder_prefix(self, name: str) -> str:
        """How the steps a process holds name it: a worker's pool processes by the worker's
        node name (``<queue>-<n>@host:pid``), a dispatcher by its process id."""
        number = name.rsplit("-", 1)[1]
        if name.startswith("worker"):
            return f"{self.env['CELERY_TASK_DEFAULT_QUEUE']}-{number}@"
        return f"dispatcher:{socket.gethostname()}:{self.processes[name].pid}"

    def kill(self, name: str) -> Fault:
        """SIGKILL the process and its children (a worker's pool): the steps it held are hit."""
        from schedules.models import Step

        prefix = self.holder_prefix(name)
        process = self.processes.pop(name)
        at = time.time()
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        hit = set(Step.objects.filter(holder__startswith=prefix).values_list("pk", flat=True))
        return Fault(at, hit)

    @staticmethod
    def in_flight() -> Fault:
        """Now, and every step queued or running (what a broker or database restart hits)."""
        from schedules.models import Step, StepState

        states = (StepState.QUEUED, StepState.RUNNING)
        return Fault(
            time.time(), set(Step.objects.filter(state__in=states).values_list("pk", flat=True))
        )

    def alive(self, role: str) -> list[str]:
        return [n for n, p in self.processes.items() if n.startswith(role) and p.poll() is None]

    def check_exits(self) -> None:
        """Record processes that exited by themselves (a worker that died on a fault)."""
        for name, process in list(self.processes.items()):
            if process.poll() is not None:
                self.exits[name] = process.returncode
                del self.processes[name]

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # the group holds a worker's pool
            process.wait()
        self.processes.clear()

    # --- jobs ----------------------------------------------------------------------------------

    def schedule(
        self, count: int, *, start: float, window: float, long_every: int = 0, long: float = 1.0
    ) -> list[int]:
        """``count`` jobs due evenly from ``start`` (unix time) over ``window`` seconds; every
        ``long_every``-th one lasts ``long`` seconds (the others 10 ms). Returns job ids."""
        from django.utils import timezone

        from schedules import services

        base = timezone.now() + dt.timedelta(seconds=start - time.time())
        specs = [
            {
                "action": "bench_mark",
                "payload": {"seconds": long if long_every and i % long_every == 0 else 0.01},
                "due_at": base + dt.timedelta(seconds=window * i / max(count - 1, 1)),
                "max_attempts": 5,
            }
            for i in range(count)
        ]
        ids: list[int] = []
        for offset in range(0, count, 1000):
            ids += [
                job.pk for job in services.job_schedule_many(jobs=specs[offset : offset + 1000])
            ]
        return ids

    def wait_final(self, timeout: float) -> bool:
        """Until every step is over (succeeded, failed or cancelled). False on timeout."""
        from schedules.models import FINAL_STATES, Step

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not Step.objects.exclude(state__in=FINAL_STATES).exists():
                return True
            time.sleep(0.5)
        return False

    def tally(self, shape: str, case: str, job_ids: list[int], faults: list[Fault]) -> Result:
        """Count lost and doubled starts from the action's own marks, and recovery times."""
        from bench.actions import MarkReader, marks_dir
        from schedules.models import Job, PlanStatus, Run, Step

        reader = MarkReader(marks_dir(self.folder))
        reader.poll()
        result = Result(shape=shape, case=case, jobs=len(job_ids), faults=len(faults))
        cancelled = set(
            Job.objects.filter(pk__in=job_ids, status=PlanStatus.CANCELLED).values_list(
                "pk", flat=True
            )
        )
        steps: dict[int, list[int]] = {}
        due: dict[int, float] = {}
        for step_id, job_id, due_at in Step.objects.filter(job_id__in=job_ids).values_list(
            "pk", "job_id", "due_at"
        ):
            steps.setdefault(job_id, []).append(step_id)
            due[step_id] = due_at.timestamp()
        flagged = set(Run.objects.filter(uncertain=True).values_list("step_id", flat=True))
        result.uncertain = Run.objects.filter(uncertain=True, job_id__in=job_ids).count()
        for job_id in job_ids:
            starts = [m for step_id in steps.get(job_id, []) for m in reader.marks.get(step_id, [])]
            if not starts and job_id not in cancelled:
                result.lost += 1
            elif len(starts) > 1:
                if any(step_id in flagged for step_id in steps.get(job_id, [])):
                    result.doubled_uncertain += 1
                else:
                    result.doubled += 1
        target = TARGETS.get(case)
        for index, fault in enumerate(faults):
            # From the fault to the first start after it of each step it hit; a step a later
            # fault hit again before it started (a live worker had taken it, and was killed
            # in turn) counts for that later fault instead.
            late = {}
            for step_id in fault.hit:
                after = [at for _v, _a, at, _pid in reader.marks.get(step_id, []) if at > fault.at]
                hit_again = [
                    later.at
                    for later in faults[index + 1 :]
                    if step_id in later.hit and not any(at <= later.at for at in after)
                ]
                if after and not hit_again:
                    late[step_id] = min(after) - fault.at
            slowest = max(late, key=late.__getitem__, default=None)
            result.recovery.append(round(late[slowest], 3) if slowest is not None else 0.0)
            result.hit += len(fault.hit)
            if slowest is not None and target is not None and late[slowest] > target:
                result.notes.append(
                    f"fault at {fault.at:.1f}: step {slowest} restarted after "
                    f"{late[slowest]:.1f} s; its runs: {describe_runs(slowest, fault.at)}"
                )
        untouched = sorted(
            min(at for _v, _a, at, _pid in reader.marks[step_id]) - due_at
            for step_id, due_at in due.items()
            if step_id in reader.marks and not any(step_id in f.hit for f in faults)
        )
        if untouched:
            result.lateness_p99 = round(untouched[int(0.99 * (len(untouched) - 1))], 3)
        self.check_exits()
        result.worker_exits = sum(1 for name in self.exits if name.startswith("worker"))
        return result


def describe_runs(step_id: int, since: float) -> str:
    """A step's runs, relative to ``since`` (a fault), for a note on a slow recovery."""
    from schedules.models import Run

    return "; ".join(
        f"attempt {run.attempt} {run.status} at {run.started_at.timestamp() - since:+.1f} s "
        f"on {run.worker.rsplit('@', 1)[0]} ({run.note[:80]})"
        for run in Run.objects.filter(step_id=step_id).order_by("started_at")
    )


# --- cases --------------------------------------------------------------------------------------


def _at(moments: list[float], action: Callable[[], None]) -> None:
    """Run ``action`` at each unix time in ``moments`` (in order), from this thread."""
    for moment in moments:
        time.sleep(max(0.0, moment - time.time()))
        action()


def _spread(start: float, window: float, count: int) -> list[float]:
    """``count`` moments inside the window, away from its ends."""
    return [start + window * (i + 1) / (count + 1) for i in range(count)]


def _run_case(
    h: Harness,
    shape: str,
    case: str,
    sizes: Sizes,
    *,
    dispatchers: int = 1,
    long_every: int = 0,
    inject: Callable[[float, float], list[Fault]] | None = None,
    grace: float = 120.0,
) -> Result:
    """Start the stack, schedule the jobs, inject faults, wait, count."""
    for _ in range(dispatchers):
        h.start_dispatcher()
    h.start_worker()
    h.start_worker()
    start = time.time() + 3
    ids = h.schedule(sizes.jobs, start=start, window=sizes.window, long_every=long_every)
    faults = inject(start, sizes.window) if inject else []
    finished = h.wait_final(timeout=max(0.0, start + sizes.window - time.time()) + grace)
    result = h.tally(shape, case, ids, faults)
    if not finished:
        result.notes.append(f"not every step was over {grace:.0f} s after the window")
    return result


def worker_kill(h: Harness, shape: str, sizes: Sizes) -> Result:
    """SIGKILL of a whole worker (main process and pool) mid-action, ``faults`` times; a
    supervisor starts a new one at once. One job in 50 lasts a second, so kills land on
    running actions and on held messages."""

    def inject(start: float, window: float) -> list[float]:
        faults: list[Fault] = []

        def kill_one() -> None:
            victim = random.choice(h.alive("worker"))
            faults.append(h.kill(victim))
            h.start_worker(wait=False)

        _at(_spread(start, window, sizes.faults), kill_one)
        return faults

    return _run_case(h, shape, "worker_kill", sizes, long_every=50, inject=inject)


def dispatcher_kill(h: Harness, shape: str, sizes: Sizes) -> Result:
    """SIGKILL of one of two dispatchers at random moments; a supervisor restarts it 1 s later."""

    def inject(start: float, window: float) -> list[float]:
        faults: list[Fault] = []

        def kill_one() -> None:
            victim = random.choice(h.alive("dispatcher"))
            time.sleep(random.uniform(0, 0.2))
            faults.append(h.kill(victim))
            time.sleep(1)
            h.start_dispatcher()

        _at(_spread(start, window, sizes.faults), kill_one)
        return faults

    return _run_case(h, shape, "dispatcher_kill", sizes, dispatchers=2, inject=inject)


def claim_then_die(h: Harness, count: int = 50) -> Fault:
    """A dispatcher process that claims a batch of due steps and dies before it publishes
    it (the window a random SIGKILL rarely hits): its batch is hit."""
    code = (
        "import os, django; django.setup()\n"
        "from django.conf import settings\n"
        "from schedules import services\n"
        f"rows = services.steps_claim_due(limit={count}, holder=services.process_name("
        "'dispatcher'), lease=settings.SCHEDULES_DISPATCH_LEASE_SECONDS)\n"
        "print(' '.join(str(pk) for pk, _ in rows), flush=True)\n"
        "os._exit(9)\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=h.env, capture_output=True, check=False
    )
    if process.returncode != 9:
        raise RuntimeError(f"the claiming process failed: {process.stderr.decode()[-2000:]}")
    return Fault(time.time(), {int(pk) for pk in process.stdout.decode().split()})


def dispatcher_dies_holding_a_claim(h: Harness, shape: str, sizes: Sizes) -> Result:
    """``faults`` times, a dispatcher claims a batch and dies before publishing it, while
    another dispatcher runs: the batch must start within the claim's lease."""

    def inject(start: float, window: float) -> list[float]:
        faults: list[Fault] = []
        _at(_spread(start, window, sizes.faults), lambda: faults.append(claim_then_die(h)))
        return faults

    return _run_case(h, shape, "dispatcher_dies_holding_a_claim", sizes, inject=inject)


def two_dispatchers(h: Harness, shape: str, sizes: Sizes) -> Result:
    """Two dispatchers share the work from start to end; nothing is released twice."""
    return _run_case(h, shape, "two_dispatchers", sizes, dispatchers=2)


def redis_restart(h: Harness, shape: str, sizes: Sizes) -> Result:
    """The Redis broker is killed (nothing kept on disk) and started again, ``restarts``
    times; the workers must keep consuming and every step must still run once."""
    assert h.redis is not None
    redis = h.redis

    def inject(start: float, window: float) -> list[float]:
        faults: list[Fault] = []

        def restart() -> None:
            faults.append(h.in_flight())
            redis.restart(down_for=1.0)

        _at(_spread(start, window, sizes.restarts), restart)
        return faults

    return _run_case(h, shape, "redis_restart", sizes, long_every=50, inject=inject)


def postgres_restart(h: Harness, shape: str, sizes: Sizes) -> Result:
    """PostgreSQL is stopped with ``-m immediate`` (no checkpoint) and started again."""
    assert h.postgres is not None
    postgres = h.postgres

    def inject(start: float, window: float) -> list[float]:
        from django.db import connection

        faults: list[Fault] = []

        def restart() -> None:
            faults.append(h.in_flight())
            postgres.restart_immediate()
            connection.close()

        _at(_spread(start, window, sizes.restarts), restart)
        return faults

    return _run_case(h, shape, "postgres_restart", sizes, long_every=50, inject=inject)


def cancel_race(h: Harness, shape: str, sizes: Sizes) -> Result:
    """While the jobs fall due, another thread (its own database connection) cancels or
    reschedules ``races`` of them, each around its due time (from 0.3 s before to 0.1 s
    after: queued, being claimed, running, being recorded or done). No caller may see
    a database error and nothing may run twice."""
    from django.core.exceptions import ValidationError
    from django.db import connection
    from django.utils import timezone

    from schedules import services
    from schedules.models import Job

    errors: list[str] = []
    refused: list[str] = []

    def inject(start: float, window: float) -> list[float]:
        ids = list(
            Job.objects.filter(action="bench_mark").order_by("due_at").values_list("pk", "due_at")
        )
        chosen = sorted(random.sample(ids, min(sizes.races, len(ids))), key=lambda x: x[1])

        def race() -> None:
            try:
                for index, (job_id, due_at) in enumerate(chosen):
                    # Around its due time: queued, claimed, running, recording or done.
                    moment = due_at.timestamp() + random.uniform(-0.3, 0.1)
                    time.sleep(max(0.0, moment - time.time()))
                    job = Job.objects.get(pk=job_id)
                    try:
                        if index % 2:
                            services.job_cancel(job=job)
                        else:
                            later = timezone.now() + dt.timedelta(seconds=random.uniform(0.5, 3))
                            services.job_reschedule(job=job, due_at=later)
                    except ValidationError as exc:  # it ran already: a clean refusal
                        refused.append(exc.messages[0])
                    except Exception as exc:  # noqa: BLE001 - what the case counts
                        errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                connection.close()

        thread = threading.Thread(target=race)
        thread.start()
        thread.join()
        return []

    result = _run_case(h, shape, "cancel_race", sizes, inject=inject)
    result.notes.append(f"{len(refused)} changes refused (the job had run), {len(errors)} errors")
    result.notes += errors[:5]
    return result


CASES: dict[str, Callable[[Harness, str, Sizes], Result]] = {
    "worker_kill": worker_kill,
    "dispatcher_kill": dispatcher_kill,
    "dispatcher_dies_holding_a_claim": dispatcher_dies_holding_a_claim,
    "two_dispatchers": two_dispatchers,
    "redis_restart": redis_restart,
    "postgres_restart": postgres_restart,
    "cancel_race": cancel_race,
}
ONLY_ON = {"redis_restart": "pg-redis", "postgres_restart": "pg-redis"}
TARGETS = {
    "worker_kill": 30.0,
    "dispatcher_kill": 10.0,
    "dispatcher_dies_holding_a_claim": 10.0,
}


# --- running it ---------------------------------------------------------------------------------


def run_child(shape: str, case: str, sizes: Sizes, folder: Path) -> Result:
    """One case in this process: its own servers and database, then the case."""
    redis = postgres = None
    try:
        if shape == "pg-redis":
            postgres = PostgresCluster(folder / "postgres")
            postgres.start()
            postgres.create_database("faults")
            redis = RedisServer(folder / "redis")
            redis.start()
            database_url, broker_url = postgres.url("faults"), redis.url(0)
        else:
            database_url, broker_url = f"sqlite:///{folder / 'db.sqlite3'}", "filesystem://"
        os.environ.update(
            DJANGO_SETTINGS_MODULE="scheduler_project.settings",
            DATABASE_URL=database_url,
            CELERY_BROKER_URL=broker_url,
            SCHEDULES_DATA_DIR=str(folder),
            SCHEDULES_ACTION_MODULES="bench.actions",
        )
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)
        h = Harness(
            folder, database_url=database_url, broker_url=broker_url, redis=redis, postgres=postgres
        )
        try:
            return CASES[case](h, shape, sizes)
        finally:
            h.stop()
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()


def run_case_in_child(shape: str, case: str, sizes: Sizes, keep: bool) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"schedules-faults-{case}-"))
    out = folder / "result.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--shape",
        shape,
        "--case",
        case,
        "--folder",
        str(folder),
        "--sizes",
        json.dumps(dataclasses.asdict(sizes)),
    ]
    started = time.monotonic()
    child = subprocess.run(command, cwd=ROOT, check=False, env={**os.environ})
    if out.exists():
        data: dict[str, Any] = json.loads(out.read_text())
    else:
        data = {"shape": shape, "case": case, "error": f"exit {child.returncode} ({folder})"}
    data["seconds"] = round(time.monotonic() - started, 1)
    if not keep and "error" not in data:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    return data


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def print_table(results: list[dict[str, Any]]) -> bool:
    """The table of docs/reliability.md. Returns whether every target was met."""
    print()
    print(
        "| shape | case | jobs | lost | doubled | doubled, flagged uncertain | uncertain runs "
        "| faults | steps hit | recovery p50 / max | lateness p99, steps not hit | target |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    ok = True
    for r in results:
        if "error" in r:
            print(f"| {r['shape']} | {r['case']} | error: {r['error']} |")
            ok = False
            continue
        target = TARGETS.get(r["case"])
        met = r["lost"] == 0 and r["doubled"] == 0 and r["worker_exits"] == 0
        if target is not None and r["recovery_max"] is not None:
            met = met and r["recovery_max"] <= target
        ok = ok and met
        recovery = f"{fmt(r['recovery_p50'])} / {fmt(r['recovery_max'])}" if r["faults"] else "-"
        print(
            f"| {r['shape']} | {r['case']} | {r['jobs']} | {r['lost']} | {r['doubled']} "
            f"| {r['doubled_uncertain']} | {r['uncertain']} | {r['faults']} | {r['hit']} "
            f"| {recovery} | {fmt(r['lateness_p99'])} "
            f"| {f'≤ {target:.0f} s, ' if target else ''}{'met' if met else 'MISSED'} |"
        )
    for r in results:
        for note in r.get("notes", []):
            print(f"- {r['shape']} {r['case']}: {note}")
        if r.get("worker_exits"):
            print(f"- {r['shape']} {r['case']}: {r['worker_exits']} worker(s) exited by themselves")
    return ok


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=SHAPES, action="append")
    parser.add_argument("--case", choices=sorted(CASES), action="append")
    parser.add_argument("--quick", action="store_true", help="fewer jobs and faults")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--keep", action="store_true", help="keep each case's folder and logs")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    random.seed(args.seed)
    if args.child:
        sizes = Sizes(**json.loads(args.sizes))
        folder = Path(args.folder)
        result = run_child(args.shape[0], args.case[0], sizes, folder)
        (folder / "result.json").write_text(json.dumps(result.as_dict()))
        return 0
    sizes = QUICK if args.quick else Sizes()
    results = []
    for shape in args.shape or SHAPES:
        for case in args.case or CASES:
            if ONLY_ON.get(case, shape) != shape:
                continue
            print(f"== {shape} {case}", flush=True)
            data = run_case_in_child(shape, case, sizes, args.keep)
            print(
                f"   {json.dumps({k: v for k, v in data.items() if k != 'recovery'})}", flush=True
            )
            results.append(data)
    ok = print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
