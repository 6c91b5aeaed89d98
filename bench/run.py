"""End-to-end benchmark of the local engine: real dispatcher, real Celery worker, real broker.

    .venv/bin/python bench/run.py                       # full run (~6-8 min on 2 cores)
    .venv/bin/python bench/run.py --quick               # smoke run (~1-2 min)
    .venv/bin/python bench/run.py --json bench/results/full.json --strict

Each case runs in a fresh temporary SCHEDULES_DATA_DIR (fresh SQLite database
and broker folder; with ``--database postgres --broker redis`` a PostgreSQL
database of its own, created and dropped by the case, and a Redis database
number of its own): migrate, start ``manage.py run_scheduler`` and
``celery -A scheduler_project worker`` as subprocesses, schedule the pending
far-future jobs (bulk, then one by one, both timed), then the due jobs, and
watch the ``bench_mark`` action's own marks (bench/actions.py). See
docs/benchmarks.md for what every figure means.

Everything stays on this machine: SQLite files and the folder broker, or the
PostgreSQL and Redis servers on 127.0.0.1; nothing else is reached.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlparse

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.profile import Profilers, print_summary  # noqa: E402

CASES = ("sparse", "rate", "recurring", "uniform", "burst", "churn", "million")
# Settings a run must not inherit from the shell: the benchmark sets its own.
SCRUBBED_PREFIXES = (
    "SCHEDULES_",
    "CELERY_",
    "DATABASE_URL",
    "EMAIL_URL",
    "AWS_",
    "DJANGO_",
    "SQLITE_",
    "LOG_",
    "BENCH_",
)
LOOPBACK = {"127.0.0.1", "localhost", "::1", None, ""}


@dataclasses.dataclass
class Config:
    cases: list[str]
    pending: int = 100_000
    one_by_one: int = 2_000
    bulk_chunk: int = 10_000
    sparse_due: int = 1_000
    sparse_window: float = 60.0
    rate: int = 500
    rate_seconds: float = 30.0
    recurring_jobs: int = 500
    recurring_every: int = 1
    recurring_seconds: float = 30.0
    uniform_due: int = 100_000
    uniform_window: float = 60.0
    burst_due: int = 10_000
    churn_rate: float = 20.0
    churn_seconds: float = 60.0
    million_pending: int = 1_000_000
    burst: bool = False
    database: str = "sqlite"
    broker: str = "folder"
    postgres_url: str = "postgres://postgres@127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379/14"
    grace: float = 60.0
    concurrency: int = 2
    dispatchers: int = 1
    workers: int = 1
    pool: str = "prefork"
    loglevel: str = "INFO"
    warmup: int = 20
    idle: float = 5.0
    seed: int = 1
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    keep: bool = False
    quick: bool = False
    trace: bool = False
    profile: bool = False
    worker_args: list[str] = dataclasses.field(default_factory=list)
    case_timeout: float = 600.0


# --------------------------------------------------------------------------------------------
# Helpers shared by the orchestrator and the case runner
# --------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary_ms(values_s: list[float]) -> dict[str, float | int | None]:
    values = sorted(v * 1000 for v in values_s)
    return {
        "n": len(values),
        "min": values[0] if values else None,
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": values[-1] if values else None,
        "mean": sum(values) / len(values) if values else None,
    }


def shape(cfg: Config) -> str:
    return f"{cfg.database}+{cfg.broker}"


class CaseServers:
    """The database and broker of one case.

    SQLite and the folder broker live in the case's data dir. PostgreSQL: a database of
    the case's own on the machine's server, created at the start and dropped at the end.
    Redis: the configured database number, emptied (FLUSHDB, that number only) before and
    after the case.
    """

    def __init__(self, case: str, cfg: Config, data_dir: Path) -> None:
        self.cfg = cfg
        self.data_dir = data_dir
        self.db_name = f"bench_{case}_{os.getpid()}"

    @property
    def database_url(self) -> str:
        if self.cfg.database == "sqlite":
            return f"sqlite:///{self.data_dir / 'db.sqlite3'}"
        return urlparse(self.cfg.postgres_url)._replace(path=f"/{self.db_name}").geturl()

    @property
    def broker_url(self) -> str:
        return "filesystem://" if self.cfg.broker == "folder" else self.cfg.redis_url

    def _postgres(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.cfg.postgres_url, autocommit=True) as conn:
            conn.execute(sql)

    def _flush_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.cfg.redis_url)
        client.flushdb()
        client.close()

    def __enter__(self) -> CaseServers:
        if self.cfg.database == "postgres":
            self._postgres(f"DROP DATABASE IF EXISTS {self.db_name}")
            self._postgres(f"CREATE DATABASE {self.db_name}")
        if self.cfg.broker == "redis":
            self._flush_redis()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cfg.database == "postgres":
            self._postgres(f"DROP DATABASE IF EXISTS {self.db_name} WITH (FORCE)")
        if self.cfg.broker == "redis":
            self._flush_redis()

    def backend_pids(self) -> set[int]:
        """The PostgreSQL server processes serving this case's database (none on SQLite)."""
        if self.cfg.database != "postgres":
            return set()
        import psycopg

        with psycopg.connect(self.cfg.postgres_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.db_name]
            ).fetchall()
        return {int(pid) for (pid,) in rows}


def bench_env(data_dir: Path, cfg: Config, servers: CaseServers) -> dict[str, str]:
    """The environment of every process of one case: fresh data dir and database, local
    engine, nothing reached beyond this machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_PREFIXES)}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "scheduler_project.settings",
            "DJANGO_ENV": "development",
            "SCHEDULES_DATA_DIR": str(data_dir),
            "DATABASE_URL": servers.database_url,
            "CELERY_BROKER_URL": servers.broker_url,
            "EMAIL_URL": "",
            "SCHEDULES_ENGINE_SECONDS": "local",
            "SCHEDULES_ENGINE_RELAXED": "local",
            "SCHEDULES_ACTION_MODULES": "bench.actions",
            "DEBUG": "False",  # DEBUG keeps every SQL query in memory
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if cfg.trace:
        env["BENCH_TRACE"] = "1"
    env.update(cfg.env)
    return env


def check_loopback(key: str, value: str) -> None:
    if key in ("DATABASE_URL", "CELERY_BROKER_URL") or key.endswith(("_URL", "-url")):
        host = urlparse(value).hostname
        if host not in LOOPBACK:
            raise SystemExit(f"--env {key}: only loopback hosts are allowed, not {host!r}")


class Sampler(threading.Thread):
    """Samples RSS of the dispatcher and the worker (main + pool children) every ~100 ms."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval = interval
        self.procs: dict[str, list[psutil.Process]] = defaultdict(list)
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.peak: dict[str, int] = defaultdict(int)
        self.samples = 0
        self.phase = "setup"
        self.phase_peak: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def watch(self, name: str, pid: int) -> None:
        """Watch one more process of a role ("dispatcher", "worker"): RSS is the largest of
        the role's processes, CPU their sum."""
        with self.lock:
            self.procs[name].append(psutil.Process(pid))

    def _note(self, key: str, value: int) -> None:
        self.peak[key] = max(self.peak[key], value)
        bucket = self.phase_peak[self.phase]
        bucket[key] = max(bucket[key], value)

    def sample(self) -> None:
        with self.lock:
            procs = [(name, proc) for name, group in self.procs.items() for proc in group]
        for name, proc in procs:
            try:
                main = proc.memory_info().rss
                children = proc.children(recursive=True)
            except psutil.Error:
                continue
            total = main
            for child in children:
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            self._note(f"{name}_main", main)
            self._note(f"{name}_total", total)
        self.samples += 1

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.halt.set()


def per_thousand(cpu: dict[str, float], started: int) -> dict[str, float | None]:
    """CPU seconds per 1,000 started steps, per process and for all of them together
    (dispatcher, worker and pool, database server, broker server)."""
    own = ("dispatcher", "worker", "database", "broker")
    if not started:
        return dict.fromkeys((*own, "total"))
    result: dict[str, float | None] = {name: 1000 * cpu[name] / started for name in own}
    result["total"] = 1000 * sum(cpu[name] for name in own) / started
    return result


def machine_busy_seconds() -> float:
    """CPU seconds all processors of the machine spent busy so far."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def cpu_seconds(
    proc: psutil.Process | list[psutil.Process] | None, *, children: bool = True
) -> float:
    """User+system CPU of a process (or of several) and (by default) its live children."""
    if proc is None:
        return 0.0
    if isinstance(proc, list):
        return sum(cpu_seconds(one, children=children) for one in proc)
    total = 0.0
    try:
        for p in [proc, *(proc.children(recursive=True) if children else [])]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


# --------------------------------------------------------------------------------------------
# The case runner (a child process with its own Django settings)
# --------------------------------------------------------------------------------------------


#: The churn case's jobs are due 2 to CHURN_LATEST seconds after their creation.
CHURN_EARLIEST, CHURN_LATEST = 2.0, 20.0


def create_jobs(rate: float, seconds: float, seed: int) -> None:
    """The churn case's other process: ``rate`` jobs a second for ``seconds``, one by one
    through ``services.job_schedule``, each due 2-20 s after its creation."""
    import django

    django.setup()
    from django.utils import timezone

    from schedules import services

    rng = random.Random(seed + 1)
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        pause = start + i / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        services.job_schedule(
            action="bench_mark",
            name="due",
            due_at=timezone.now() + dt.timedelta(seconds=rng.uniform(CHURN_EARLIEST, CHURN_LATEST)),
        )


def numbered(role: str, n: int) -> str:
    """A process's name: "dispatcher", then "dispatcher-2", ... (its log file's name too)."""
    return role if n == 1 else f"{role}-{n}"


class Stack:
    """The dispatcher and worker subprocesses of one case, each in its own process group."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pid_file = data_dir / "pids.json"

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.data_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        recorded = [
            {"name": n, "pid": p.pid, "create_time": psutil.Process(p.pid).create_time()}
            for n, p in self.procs.items()
        ]
        self.pid_file.write_text(json.dumps(recorded))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None and not (name == "creator" and proc.returncode == 0):
                raise RuntimeError(
                    f"{name} exited early with {proc.returncode}:\n{self.tail(name)}"
                )

    def tail(self, name: str, chars: int = 3000) -> str:
        path = self.data_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM each main process (graceful), then SIGKILL its group after ``timeout``."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # Celery stops its own pool children
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            # The group also holds the worker's pool children.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(timeout=5)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_case(case: str, cfg: Config, data_dir: Path) -> dict[str, Any]:
    with CaseServers(case, cfg, data_dir) as servers:
        try:
            return _run_case(case, cfg, data_dir, servers)
        finally:
            if "django.db" in sys.modules:
                from django.db import connections

                connections.close_all()


class ServerCpu:
    """CPU of the servers a case uses, from ``start()``: the PostgreSQL server (its main
    process and every process it forked: backends, WAL writer, checkpointer, and those
    that exited meanwhile, which the main process reaped) and the Redis server. Both are
    shared: the figure includes whatever else used them meanwhile (nothing, on an
    otherwise idle machine)."""

    def __init__(self, servers: CaseServers) -> None:
        self.servers = servers
        self.start_cpu: dict[str, float] = {}

    def _postgres(self) -> psutil.Process | None:
        pids = self.servers.backend_pids()
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                return psutil.Process(pid).parent()
        return None

    def _redis(self) -> psutil.Process | None:
        if self.servers.cfg.broker != "redis":
            return None
        import redis

        client = redis.Redis.from_url(self.servers.cfg.redis_url)
        try:
            return psutil.Process(int(client.info("server")["process_id"]))
        except psutil.Error:
            return None
        finally:
            client.close()

    @staticmethod
    def _tree(root: psutil.Process | None) -> float:
        if root is None:
            return 0.0
        try:
            t = root.cpu_times()
            total = t.user + t.system + t.children_user + t.children_system
            children = root.children()
        except psutil.Error:
            return 0.0
        for child in children:
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
        return float(total)

    def _now(self) -> dict[str, float]:
        return {"database": self._tree(self._postgres()), "broker": self._tree(self._redis())}

    def start(self) -> None:
        self.start_cpu = self._now()

    def seconds(self) -> dict[str, float]:
        now = self._now()
        return {name: max(0.0, now[name] - self.start_cpu.get(name, 0.0)) for name in now}


def _run_case(case: str, cfg: Config, data_dir: Path, servers: CaseServers) -> dict[str, Any]:
    env = bench_env(data_dir, cfg, servers)
    os.environ.clear()
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from bench.actions import MarkReader, marks_dir
    from schedules import services
    from schedules.models import Job, Run, RunStatus, Step

    rng = random.Random(cfg.seed)
    result: dict[str, Any] = {
        "case": case,
        "data_dir": str(data_dir),
        "processes": {"dispatchers": cfg.dispatchers, "workers": cfg.workers},
    }
    phases: dict[str, float] = {}
    t0 = time.monotonic()

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - t0, 2)
        sampler.phase = name
        print(f"  [{case} {phases[name]:6.1f} s] {name}", flush=True)

    sampler = Sampler()
    stack = Stack(data_dir, env)
    reader = MarkReader(marks_dir(data_dir))
    try:
        phase("migrate")
        call_command("migrate", interactive=False, verbosity=0)
        connection.close()

        phase("start processes")
        for n in range(1, cfg.dispatchers + 1):
            dispatcher = stack.start(numbered("dispatcher", n), ["manage.py", "run_scheduler"])
            sampler.watch("dispatcher", dispatcher.pid)
        worker_args = [
            "-m",
            "celery",
            "-A",
            "scheduler_project",
            "worker",
            "--concurrency",
            str(cfg.concurrency),
            "--pool",
            cfg.pool,
            "--loglevel",
            cfg.loglevel,
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            *cfg.worker_args,
        ]
        for n in range(1, cfg.workers + 1):
            node = ["-n", f"bench-{case}-{n}@%h"]
            worker = stack.start(numbered("worker", n), [*worker_args, *node])
            sampler.watch("worker", worker.pid)
        sampler.start()

        # Warm-up: proves the whole path works and lets every pool process open its
        # database connection and import what it needs before anything is measured.
        phase("warm-up")
        now = timezone.now()
        services.job_schedule_many(
            jobs=[
                {"action": "bench_mark", "due_at": now, "name": "warmup"} for _ in range(cfg.warmup)
            ]
        )
        warm_ids = set(Step.objects.filter(job__name="warmup").values_list("pk", flat=True))
        connection.close()
        deadline = time.monotonic() + 120
        while not warm_ids <= set(reader.marks):
            stack.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "warm-up jobs did not run in 120 s:\n"
                    f"{stack.tail('dispatcher')}\n{stack.tail('worker')}"
                )
            time.sleep(0.1)
            reader.poll()

        # Pending far-future jobs: in bulk, then one by one (both timed).
        phase("schedule pending (bulk)")
        hour, week = 3600.0, 7 * 24 * 3600.0
        pending = cfg.million_pending if case == "million" else cfg.pending
        started = time.perf_counter()
        now = timezone.now()
        done = 0
        while done < pending:
            n = min(cfg.bulk_chunk, pending - done)
            services.job_schedule_many(
                jobs=[
                    {
                        "action": "bench_mark",
                        "name": "pending",
                        "due_at": now + dt.timedelta(seconds=rng.uniform(hour, week - 60)),
                    }
                    for _ in range(n)
                ]
            )
            done += n
        bulk_s = time.perf_counter() - started
        result["bulk"] = {
            "jobs": pending,
            "chunk": cfg.bulk_chunk,
            "seconds": bulk_s,
            "per_second": pending / bulk_s if bulk_s else None,
        }

        phase("schedule pending (one by one)")
        started = time.perf_counter()
        now = timezone.now()
        for _ in range(cfg.one_by_one):
            services.job_schedule(
                action="bench_mark",
                name="pending",
                due_at=now + dt.timedelta(seconds=rng.uniform(hour, week - 60)),
            )
        single_s = time.perf_counter() - started
        result["one_by_one"] = {
            "jobs": cfg.one_by_one,
            "seconds": single_s,
            "per_second": cfg.one_by_one / single_s if single_s else None,
        }
        pending_ids_count = Step.objects.filter(job__name="pending").count()
        connection.close()
        stack.check_alive()

        # Idle cost: CPU of the dispatcher and the worker while nothing is due.
        phase("idle")
        idle_start = {name: cpu_seconds(procs) for name, procs in sampler.procs.items()}
        time.sleep(cfg.idle)
        result["idle_cpu_percent"] = (
            {
                # per process of the role
                name: 100 * (cpu_seconds(procs) - idle_start[name]) / cfg.idle / len(procs)
                for name, procs in sampler.procs.items()
            }
            if cfg.idle
            else {}
        )

        # The due jobs, scheduled in bulk ahead of a window that starts after they are stored.
        phase("schedule due")
        offsets: list[float] = []
        if case in ("sparse", "million"):
            n_due, window = cfg.sparse_due, cfg.sparse_window
            offsets = sorted(rng.uniform(0, window) for _ in range(n_due))
        elif case == "rate":
            n_due, window = int(cfg.rate * cfg.rate_seconds), cfg.rate_seconds
            # Evenly spaced, `rate` per second; with --burst each second's `rate` steps are all
            # due at the same instant (the shape of many jobs on the same minute or second).
            step = 1.0 / cfg.rate
            offsets = [(i // cfg.rate if cfg.burst else i * step) for i in range(n_due)]
        elif case == "uniform":
            n_due, window = cfg.uniform_due, cfg.uniform_window
            offsets = [i * window / n_due for i in range(n_due)]
        elif case == "burst":
            n_due, window = cfg.burst_due, 0.0
            offsets = [0.0] * n_due
        elif case == "churn":
            # Created while running by another process (``create_jobs``), each due 2-20 s
            # after its creation; the window runs until the last one is due.
            n_due = int(cfg.churn_rate * cfg.churn_seconds)
            window = cfg.churn_seconds + CHURN_LATEST
        else:
            # Each recurring job runs every `recurring_every` s through the window: its
            # occurrences are planned one at a time by the worker, not stored ahead.
            window = cfg.recurring_seconds
            per_job = math.ceil(window / cfg.recurring_every)
            n_due = cfg.recurring_jobs * per_job
        bulk_rate = result["bulk"]["per_second"] or 1000.0
        single_rate = result["one_by_one"]["per_second"] or 300.0
        lead = 3.0 + 1.5 * (len(offsets) / bulk_rate + cfg.recurring_jobs / single_rate)
        window_start = timezone.now() + dt.timedelta(seconds=lead)
        if case == "recurring":
            last = window_start + dt.timedelta(seconds=(per_job - 1) * cfg.recurring_every)
            for _ in range(cfg.recurring_jobs):
                services.job_schedule(
                    action="bench_mark",
                    name="due",
                    schedule_type="rate",
                    rate_every=cfg.recurring_every,
                    rate_unit="seconds",
                    starts_at=window_start,
                    ends_at=last + dt.timedelta(seconds=cfg.recurring_every / 2),
                )
        for i in range(0, len(offsets), cfg.bulk_chunk):
            services.job_schedule_many(
                jobs=[
                    {
                        "action": "bench_mark",
                        "name": "due",
                        "due_at": window_start + dt.timedelta(seconds=off),
                    }
                    for off in offsets[i : i + cfg.bulk_chunk]
                ]
            )

        known: dict[int, dt.datetime] = {}
        read_up_to = 0  # the highest step id the last read saw

        def due_steps(*, full: bool = False) -> dict[int, dt.datetime]:
            """The due steps so far. Read while the case runs (churn, recurring): only the
            steps with an id above the last read's, so the benchmark's own reads stay
            small next to the product's work (reading them all joined to their jobs' names
            took 40-60 ms of the database server every half second). An id taken before
            another but committed after it is seen by the ``full`` read of the analysis."""
            nonlocal read_up_to
            if full or not read_up_to:  # before the window, and for the analysis
                read_up_to = Step.objects.order_by("-pk").values_list("pk", flat=True)[0]
                known.update(Step.objects.filter(job__name="due").values_list("pk", "due_at"))
                return dict(known)
            # Two reads by key (a join on the name would read every job for a hash).
            steps = list(
                Step.objects.filter(pk__gt=read_up_to).values_list("pk", "due_at", "job_id")
            )
            if steps:
                read_up_to = max(pk for pk, _, _ in steps)
                jobs = {job_id for _, _, job_id in steps}
                due_jobs = set(
                    Job.objects.filter(pk__in=jobs, name="due").values_list("pk", flat=True)
                )
                known.update((pk, due_at) for pk, due_at, job_id in steps if job_id in due_jobs)
            return dict(known)

        due = due_steps()
        scheduled_late = (timezone.now() - window_start).total_seconds()
        connection.close()
        result["due"] = {
            "steps": n_due,
            "window_s": window,
            "lead_s": round(lead, 2),
            "stored_after_window_start_s": max(0.0, scheduled_late),
        }

        # The window: wait until every due step was marked (plus a settle time for late
        # doubles), or until the grace after the window is over.
        while timezone.now() < window_start:
            time.sleep(0.05)
        phase("due window")
        if case == "churn":
            stack.start(
                "creator",
                [
                    str(Path(__file__).resolve()),
                    "--create-jobs",
                    f"{cfg.churn_rate}:{cfg.churn_seconds}:{cfg.seed}",
                ],
            )
        profilers = Profilers(data_dir, stack.procs, window, cfg.database) if cfg.profile else None
        me = psutil.Process()
        server_cpu = ServerCpu(servers)
        server_cpu.start()
        cpu_start = {
            "dispatcher": cpu_seconds(sampler.procs.get("dispatcher")),
            "worker": cpu_seconds(sampler.procs.get("worker")),
            "driver": cpu_seconds(me, children=False),
            "machine": machine_busy_seconds(),
        }
        window_end = window_start + dt.timedelta(seconds=window)
        give_up = window_end + dt.timedelta(seconds=cfg.grace)
        all_marked_at: float | None = None
        while timezone.now() < give_up:
            stack.check_alive()
            time.sleep(0.5)
            reader.poll()
            if case == "churn" or (case == "recurring" and timezone.now() > window_end):
                due = due_steps()  # the occurrences planned (jobs created) so far
                connection.close()
            if (
                all_marked_at is None
                and len(due) >= n_due
                and all(pk in reader.marks for pk in due)
            ):
                all_marked_at = time.monotonic()
            if (
                all_marked_at is not None
                and timezone.now() > window_end
                and time.monotonic() - all_marked_at >= 3.0
            ):
                break
        reader.poll()
        window_wall = (timezone.now() - window_start).total_seconds()
        cpu = {
            "dispatcher": cpu_seconds(sampler.procs.get("dispatcher")) - cpu_start["dispatcher"],
            "worker": cpu_seconds(sampler.procs.get("worker")) - cpu_start["worker"],
            "driver": cpu_seconds(me, children=False) - cpu_start["driver"],
            **server_cpu.seconds(),
            "machine": machine_busy_seconds() - cpu_start["machine"],
            "wall": window_wall,
        }
        # CPU used by processes that are not part of this benchmark (noise on a shared machine).
        cpu["other"] = max(
            0.0,
            cpu["machine"]
            - cpu["dispatcher"]
            - cpu["worker"]
            - cpu["driver"]
            - cpu["database"]
            - cpu["broker"],
        )
        cpu["load_avg_1m_at_end"] = os.getloadavg()[0]
        result["cpu_seconds_in_window"] = cpu
        phase("stop")
        if profilers is not None:
            profilers.wait()
            result["profile"] = profilers.summary()
        sampler.stop()
        stack.stop()

        # ------------------------------------------------------------------ analysis
        phase("analyse")
        due = due_steps(full=True)
        lateness: list[float] = []
        first_marks: list[float] = []
        missed: list[int] = []
        doubled = 0
        extra_marks = 0
        stale_marks = 0
        for pk, due_at in due.items():
            marks = reader.marks.get(pk, [])
            if not marks:
                missed.append(pk)
                continue
            if len(marks) > 1:
                doubled += 1
                extra_marks += len(marks) - 1
            first = min(m[2] for m in marks)
            lateness.append(first - due_at.timestamp())
            first_marks.append(first)
            stale_marks += sum(1 for m in marks if m[0] != 1)
        if case == "recurring":
            # An occurrence never planned (or planned twice) shows only against the rule.
            occurrences = Counter(
                Step.objects.filter(job__name="due", pk__in=list(reader.marks)).values_list(
                    "job_id", "due_at"
                )
            )
            doubled += sum(1 for c in occurrences.values() if c > 1)
            missed_count = n_due - len(occurrences)
        else:
            missed_count = len(missed)
        unexpected = sorted(pk for pk in reader.marks if pk not in due and pk not in warm_ids)
        # Cross-check with the product's own bookkeeping (Run rows): the engine's lateness
        # (from the later of the due time and the arming; the same here, every step is
        # armed before it is due) and the lateness from the due time.
        runs = list(
            Run.objects.filter(step_id__in=list(due)).values_list(
                "step_id", "status", "engine_lateness", "started_at", "lateness"
            )
        )
        succeeded = [r for r in runs if r[1] == RunStatus.SUCCEEDED]
        per_step = Counter(r[0] for r in succeeded)
        status_counts = Counter(r[1] for r in runs)
        run_lateness = [r[2].total_seconds() for r in succeeded if r[2] is not None]
        due_lateness = [r[4].total_seconds() for r in succeeded if r[4] is not None]
        deviation = [
            abs(min(m[2] for m in reader.marks[r[0]]) - r[3].timestamp())
            for r in succeeded
            if r[0] in reader.marks
        ]
        result.update(
            {
                "pending": pending_ids_count,
                # Due steps started per second, from the window start to the last start.
                "throughput_per_s": (
                    len(first_marks) / (max(first_marks) - window_start.timestamp())
                    if first_marks
                    else None
                ),
                "last_start_after_window_end_s": (
                    max(first_marks) - window_end.timestamp() if first_marks else None
                ),
                "lateness_ms": summary_ms(lateness),
                "early": sum(1 for late in lateness if late < 0),
                "cpu_per_1000_started_s": per_thousand(cpu, len(first_marks)),
                "missed": missed_count,
                "missed_sample": missed[:10],
                "doubled": doubled,
                "extra_marks": extra_marks,
                "marks_of_another_version": stale_marks,
                "unexpected_marks": len(unexpected),
                "unexpected_sample": unexpected[:10],
                "runs": {
                    "status_counts": dict(status_counts),
                    "steps_with_more_than_one_success": sum(1 for c in per_step.values() if c > 1),
                    "lateness_ms": summary_ms(run_lateness),
                    "lateness_from_due_ms": summary_ms(due_lateness),
                    "max_abs_mark_vs_run_started_ms": max(deviation) * 1000 if deviation else None,
                },
                "rss_mb": {k: v / 2**20 for k, v in sampler.peak.items()},
                "rss_mb_by_phase": {
                    ph: {k: v / 2**20 for k, v in d.items()} for ph, d in sampler.phase_peak.items()
                },
                "rss_samples": sampler.samples,
                "phases_s": phases,
                "dispatcher_log_tail": stack.tail("dispatcher", 400),
            }
        )
        if cfg.trace:
            from bench.trace import analyse

            last = max(
                (min(m[2] for m in reader.marks[pk]) for pk in due if pk in reader.marks),
                default=window_end.timestamp(),
            )
            result["trace"] = analyse(data_dir, due, (window_start.timestamp(), last))
        return result
    finally:
        sampler.stop()
        stack.stop()


# --------------------------------------------------------------------------------------------
# The orchestrator
# --------------------------------------------------------------------------------------------


def kill_leftovers(data_dir: Path) -> None:
    """Kill any process group a case runner left behind (it was killed itself)."""
    pid_file = data_dir / "pids.json"
    if not pid_file.exists():
        return
    for entry in json.loads(pid_file.read_text()):
        try:
            proc = psutil.Process(entry["pid"])
            if abs(proc.create_time() - entry["create_time"]) > 0.01:
                continue  # the pid was reused by someone else's process
            os.killpg(entry["pid"], signal.SIGKILL)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass


def run_child(case: str, cfg: Config) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix=f"schedules-bench-{case}-"))
    (data_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    child = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            case,
            "--data-dir",
            str(data_dir),
        ],
        cwd=ROOT,
    )
    try:
        try:
            child.wait(timeout=cfg.case_timeout)
        except subprocess.TimeoutExpired:
            print(f"  case {case} exceeded {cfg.case_timeout:.0f} s; stopping it", flush=True)
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    except KeyboardInterrupt:
        # The child got the same Ctrl-C; give it time to stop its processes.
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        kill_leftovers(data_dir)
    result_file = data_dir / "result.json"
    if result_file.exists():
        result: dict[str, Any] = json.loads(result_file.read_text())
    else:
        result = {
            "case": case,
            "error": f"the case runner exited with {child.returncode}",
            "data_dir": str(data_dir),
        }
    if not cfg.keep and "error" not in result:
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)
        result["data_dir"] = None
    return result


def machine() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    import celery
    import django
    import kombu

    return {
        "nproc": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "memory_gb": round(vm.total / 2**30, 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "django": django.get_version(),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "platform": platform.platform(),
    }


def fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    return format(value, spec)


def targets(results: dict[str, dict[str, Any]], cfg: Config) -> list[tuple[str, str, bool]]:
    checks: list[tuple[str, str, bool]] = []
    # A burst shape (--burst, and the recurring case) must keep up: done within the second.
    limits = {
        "sparse": 20.0,
        "rate": 1000.0 if cfg.burst else 100.0,
        "recurring": 1000.0 * cfg.recurring_every,
        "uniform": 50.0,
        "churn": 5.0,
        "million": 5.0,
    }
    for case, limit in limits.items():
        r = results.get(case)
        if not r or "error" in r:
            continue
        p99 = r["lateness_ms"]["p99"]
        checks.append(
            (
                f"{case} lateness p99 < {limit:.0f} ms",
                f"{fmt(p99)} ms",
                p99 is not None and p99 < limit,
            )
        )
    million = results.get("million")
    if million and "error" not in million:
        rss = million["rss_mb"].get("dispatcher_main", 0.0)
        checks.append(("million: dispatcher RSS <= 100 MB", f"{rss:.0f} MB", rss <= 100))
    burst = results.get("burst")
    if burst and "error" not in burst:
        limit = 3.0 if cfg.database == "sqlite" else 2.0
        last = burst["last_start_after_window_end_s"]
        checks.append(
            (
                f"burst all started within {limit:.0f} s",
                f"{fmt(last, '.2f')} s",
                last is not None and last <= limit and burst["missed"] == 0,
            )
        )
        total = burst["cpu_per_1000_started_s"]["total"]
        checks.append(
            (
                "CPU per 1,000 steps <= 0.5 s",
                f"{fmt(total, '.2f')} s (burst)",
                total is not None and total <= 0.5,
            )
        )
    ok = [r for r in results.values() if "error" not in r]
    if ok:
        one_by_one = min(r["one_by_one"]["per_second"] or 0.0 for r in ok)
        bulk = min(r["bulk"]["per_second"] or 0.0 for r in ok)
        checks.append(
            ("scheduling one by one >= 2,000/s", f"{one_by_one:.0f}/s", one_by_one >= 2000)
        )
        checks.append(("scheduling in bulk >= 10,000/s", f"{bulk:.0f}/s", bulk >= 10_000))
        missed = sum(r["missed"] for r in ok)
        doubled = sum(r["doubled"] for r in ok)
        rss = max(r["rss_mb"].get("dispatcher_main", 0.0) for r in ok)
        checks.append(("0 missed", str(missed), missed == 0))
        checks.append(("0 doubled", str(doubled), doubled == 0))
        checks.append(("dispatcher RSS < 150 MB", f"{rss:.0f} MB", rss < 150))
    for case, r in results.items():
        if "error" in r:
            checks.append((f"{case} ran", r["error"], False))
    return checks


def print_report(results: dict[str, dict[str, Any]], cfg: Config) -> list[tuple[str, str, bool]]:
    head = (
        f"{'case':<9} {'pending':>8} {'due':>6} {'1-by-1/s':>9} {'bulk/s':>8} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'Run p99':>8} "
        f"{'missed':>6} {'doubled':>7} {'disp MB':>8} {'wrk MB':>7} {'wrk+pool MB':>11}"
    )
    print()
    print(head)
    print("-" * len(head))
    for case, r in results.items():
        if "error" in r:
            print(f"{case:<9} ERROR: {r['error']} (logs in {r.get('data_dir')})")
            continue
        lat, rss = r["lateness_ms"], r["rss_mb"]
        print(
            f"{case:<9} {r['pending']:>8} {r['due']['steps']:>6} "
            f"{fmt(r['one_by_one']['per_second'], '.0f'):>9} "
            f"{fmt(r['bulk']['per_second'], '.0f'):>8} "
            f"{fmt(lat['p50']):>8} {fmt(lat['p95']):>8} {fmt(lat['p99']):>8} "
            f"{fmt(lat['max']):>8} {fmt(r['runs']['lateness_ms']['p99']):>8} "
            f"{r['missed']:>6} {r['doubled']:>7} "
            f"{fmt(rss.get('dispatcher_main'), '.0f'):>8} {fmt(rss.get('worker_main'), '.0f'):>7} "
            f"{fmt(rss.get('worker_total'), '.0f'):>11}"
        )
    print()
    head = (
        f"{'case':<9} {'started/s':>9} {'last start s':>12} {'early':>5} "
        f"{'CPU-s per 1,000 started: dispatcher':>36} {'worker':>7} {'database':>8} "
        f"{'broker':>7} {'total':>6}"
    )
    print(head)
    print("-" * len(head))
    for case, r in results.items():
        if "error" in r:
            continue
        k = r["cpu_per_1000_started_s"]
        print(
            f"{case:<9} {fmt(r['throughput_per_s'], '.0f'):>9} "
            f"{fmt(r['last_start_after_window_end_s'], '.2f'):>12} {r['early']:>5} "
            f"{fmt(k['dispatcher'], '.3f'):>36} {fmt(k['worker'], '.3f'):>7} "
            f"{fmt(k['database'], '.3f'):>8} {fmt(k['broker'], '.3f'):>7} "
            f"{fmt(k['total'], '.3f'):>6}"
        )
    print()
    for case, r in results.items():
        if "error" in r:
            continue
        cpu = r["cpu_seconds_in_window"]
        runs = r["runs"]
        print(
            f"{case}: started {fmt(r['throughput_per_s'], '.0f')}/s, last start "
            f"{fmt(r['last_start_after_window_end_s'], '.1f')} s after the window; "
            f"window {cpu['wall']:.1f} s, CPU dispatcher {cpu['dispatcher']:.1f} s, "
            f"worker {cpu['worker']:.1f} s, database server {cpu['database']:.1f} s, "
            f"broker server {cpu['broker']:.1f} s, "
            f"other processes {cpu['other']:.1f} s; "
            f"idle CPU {', '.join(f'{k} {v:.0f}%' for k, v in r['idle_cpu_percent'].items())}; "
            f"runs {runs['status_counts']}; unexpected marks {r['unexpected_marks']}; "
            f"mark vs Run.started_at max {fmt(runs['max_abs_mark_vs_run_started_ms'], '.2f')} ms"
        )
        if "profile" in r:
            print_summary(case, r["profile"])
        if "trace" in r:
            from bench.trace import print_trace

            print_trace(case, r["trace"])
    checks = targets(results, cfg)
    print()
    title = "targets (smoke run: sizes reduced)" if cfg.quick else "targets"
    print(title)
    for name, value, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name:<28} {value}")
    return checks


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Config]:
    p = argparse.ArgumentParser(
        description="End-to-end benchmark: real dispatcher + Celery worker on a fresh SQLite "
        "database and folder broker per case.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 10k pending, 500 one by one, sparse 200 due over 20 s, "
        "rate 200/s for 10 s, 15 s grace",
    )
    p.add_argument("--case", choices=[*CASES, "all"], default="all")
    p.add_argument("--pending", type=int, help="far-future jobs scheduled in bulk (100000)")
    p.add_argument("--one-by-one", type=int, help="far-future jobs scheduled one by one (2000)")
    p.add_argument("--bulk-chunk", type=int, help="jobs per job_schedule_many call (10000)")
    p.add_argument("--sparse-due", type=int, help="due jobs in the sparse case (1000)")
    p.add_argument("--sparse-window", type=float, help="seconds they are spread over (60)")
    p.add_argument("--rate", type=int, help="due jobs per second in the rate case (500)")
    p.add_argument("--rate-seconds", type=float, help="seconds of the rate case (30)")
    p.add_argument(
        "--burst",
        action="store_true",
        help="rate case: each second's steps all due at the same instant",
    )
    p.add_argument("--uniform-due", type=int, help="due jobs in the uniform case (100000)")
    p.add_argument("--uniform-window", type=float, help="seconds they are spread over (60)")
    p.add_argument(
        "--burst-due", type=int, help="jobs due at one instant in the burst case (10000)"
    )
    p.add_argument(
        "--database",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="sqlite: a fresh file per case (default); postgres: a database of the case's own "
        "on the server at --postgres-url, created and dropped by the case",
    )
    p.add_argument(
        "--broker",
        choices=("folder", "redis"),
        default="folder",
        help="folder: the embedded folder broker (default); redis: the Redis database at "
        "--redis-url, emptied before and after each case",
    )
    p.add_argument(
        "--postgres-url",
        default=Config.postgres_url,
        help=f"a maintenance database of the PostgreSQL server ({Config.postgres_url})",
    )
    p.add_argument(
        "--redis-url",
        default=Config.redis_url,
        help=f"the Redis database the benchmark owns: it is emptied ({Config.redis_url})",
    )
    p.add_argument("--recurring-jobs", type=int, help="recurring jobs in the recurring case (500)")
    p.add_argument("--recurring-every", type=int, help="seconds between a recurring job's runs (1)")
    p.add_argument("--recurring-seconds", type=float, help="seconds of the recurring case (30)")
    p.add_argument(
        "--grace",
        type=float,
        help="a due step not marked this many seconds after the window is missed (60)",
    )
    p.add_argument("--idle", type=float, help="seconds with nothing due, to measure idle CPU (5)")
    p.add_argument("--concurrency", type=int, default=2, help="Celery pool processes (2)")
    p.add_argument("--dispatchers", type=int, default=1, help="run_scheduler processes at once (1)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Celery worker processes at once, each with its pool (1)",
    )
    p.add_argument("--pool", default="prefork", help="Celery pool (prefork)")
    p.add_argument("--loglevel", default="INFO", help="Celery worker log level (INFO)")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra setting for every process, e.g. "
        "CELERY_BROKER_POLLING_INTERVAL=0.001 (repeatable)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the results as JSON to this file")
    p.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    p.add_argument("--keep", action="store_true", help="keep the temporary data dirs (logs, DB)")
    p.add_argument(
        "--trace",
        action="store_true",
        help="diagnosis: time each step's path (claim, publish, receive, action); adds overhead",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="diagnosis: py-spy (not a requirement; pip install py-spy) samples the "
        "dispatcher and worker during the window, and perf the PostgreSQL server when "
        "perf is installed; prints where each spends its time (raw files kept with --keep)",
    )
    p.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the celery worker command line, e.g. "
        "--worker-arg=--prefetch-multiplier=1 (repeatable)",
    )
    p.add_argument(
        "--churn-rate", type=float, help="jobs a second created by another process in churn (20)"
    )
    p.add_argument("--churn-seconds", type=float, help="seconds of creating in churn (60)")
    p.add_argument(
        "--million-pending", type=int, help="far-future jobs pending in million (1000000)"
    )
    p.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    p.add_argument("--create-jobs", help=argparse.SUPPRESS)
    p.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.create_jobs:
        return args, Config(cases=[])
    if args.child:
        cfg = Config(**json.loads((args.data_dir / "config.json").read_text()))
        return args, cfg
    quick = {
        "pending": 10_000,
        "one_by_one": 500,
        "sparse_due": 200,
        "sparse_window": 20.0,
        "rate": 200,
        "rate_seconds": 10.0,
        "recurring_jobs": 100,
        "recurring_seconds": 10.0,
        "uniform_due": 5_000,
        "uniform_window": 10.0,
        "burst_due": 1_000,
        "churn_seconds": 10.0,
        "million_pending": 20_000,
        "grace": 15.0,
        "bulk_chunk": 10_000,
        "idle": 3.0,
    }
    cfg = Config(cases=list(CASES) if args.case == "all" else [args.case])
    if args.quick:
        for key, value in quick.items():
            setattr(cfg, key, value)
    for key in (
        "pending",
        "one_by_one",
        "bulk_chunk",
        "sparse_due",
        "sparse_window",
        "rate",
        "rate_seconds",
        "recurring_jobs",
        "recurring_every",
        "recurring_seconds",
        "uniform_due",
        "uniform_window",
        "burst_due",
        "churn_rate",
        "churn_seconds",
        "million_pending",
        "grace",
        "idle",
    ):
        value = getattr(args, key)
        if value is not None:
            setattr(cfg, key, value)
    cfg.concurrency, cfg.pool, cfg.loglevel = args.concurrency, args.pool, args.loglevel
    cfg.dispatchers, cfg.workers = args.dispatchers, args.workers
    if cfg.dispatchers < 1 or cfg.workers < 1:
        p.error("--dispatchers and --workers: at least 1")
    cfg.seed, cfg.keep, cfg.quick, cfg.trace = args.seed, args.keep, args.quick, args.trace
    cfg.profile = args.profile
    cfg.burst = args.burst
    cfg.worker_args = args.worker_arg
    cfg.database, cfg.broker = args.database, args.broker
    for key, url in (("--postgres-url", args.postgres_url), ("--redis-url", args.redis_url)):
        check_loopback(key, url)
    cfg.postgres_url, cfg.redis_url = args.postgres_url, args.redis_url
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--env expects KEY=VALUE, not {item!r}")
        check_loopback(key, value)
        cfg.env[key] = value
    window = max(cfg.sparse_window, cfg.rate_seconds, cfg.recurring_seconds, cfg.uniform_window)
    # Generous bound for one case; each case also ends by itself after window + grace.
    window = max(window, cfg.churn_seconds + CHURN_LATEST)
    pending = max(cfg.pending, cfg.million_pending if "million" in cfg.cases else 0)
    cfg.case_timeout = 300 + window + cfg.grace + (pending + cfg.uniform_due) / 500
    return args, cfg


def main(argv: list[str]) -> int:
    args, cfg = parse_args(argv)
    if args.create_jobs:
        rate, seconds, seed = args.create_jobs.split(":")
        create_jobs(float(rate), float(seconds), int(seed))
        return 0
    if args.child:
        signal.signal(signal.SIGTERM, _raise_interrupt)
        result = run_case(args.child, cfg, args.data_dir)
        (args.data_dir / "result.json").write_text(json.dumps(result, default=str))
        return 0

    signal.signal(signal.SIGTERM, _raise_interrupt)
    info = machine()
    print(
        f"schedules benchmark: {', '.join(cfg.cases)} on {shape(cfg)}; {info['nproc']} CPUs, "
        f"{info['memory_gb']} GB, Python {info['python']}, SQLite {info['sqlite']}; "
        f"{cfg.dispatchers} dispatcher(s), {cfg.workers} worker(s) "
        f"--concurrency {cfg.concurrency} ({cfg.pool}); "
        f"extra env {cfg.env or '{}'}",
        flush=True,
    )
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    for case in cfg.cases:
        print(f"case {case}: fresh data dir, migrate, dispatcher + worker", flush=True)
        results[case] = run_child(case, cfg)
    checks = print_report(results, cfg)
    elapsed = time.monotonic() - started
    print(f"\ntotal {elapsed:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": info,
            "config": dataclasses.asdict(cfg),
            "results": results,
            "targets": [{"target": n, "value": v, "pass": ok} for n, v, ok in checks],
            "elapsed_s": elapsed,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        print(f"results written to {args.json}")
    if args.strict and not all(ok for _, _, ok in checks):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
