"""Diagnosis for ``bench/run.py --profile``: where the processes of a case spend the window.

* The dispatcher and the worker (its pool processes included) are sampled by py-spy
  (250 samples a second, idle time left out). Each sample is put in one part by the
  innermost frame that belongs to a known package: waiting on the database server,
  sending to it, psycopg's client-side binding, SQLite (in process), Django, Celery and
  the broker client, the product's code, the action.
* On PostgreSQL, when ``perf`` is on the machine and may sample every CPU, the server's
  processes are sampled too (499 a second, call graphs), and the share of their samples
  under the executor's landmarks is reported: index entries written, rows found,
  planning, parsing, commit.

Neither tool is a requirement of the benchmark: py-spy is installed into the venv
(``.venv/bin/pip install py-spy``); without perf only the Python processes are profiled.
The raw files stay in the case's data dir with ``--keep``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

#: Parts of a Python process's time, by the innermost frame's file. The first rule whose
#: pattern matches a frame, walking from the innermost frame out, names the sample's part.
PYTHON_PARTS: list[tuple[str, re.Pattern[str]]] = [
    ("waiting on the database server", re.compile(r"psycopg/(waiting|connection)\.py")),
    (
        "sending to the database server (libpq, the kernel's loopback)",
        re.compile(r"_execute_send|_exec_command|_communicate_gen|send_packed|psycopg/_pipeline"),
    ),
    ("psycopg: binding and loading values", re.compile(r"psycopg/")),
    ("SQLite (in process)", re.compile(r"django/db/backends/sqlite3/base\.py")),
    ("Django", re.compile(r"django/")),
    ("Celery, the broker client and the pool", re.compile(r"(celery|kombu|redis|billiard|amqp)/")),
    ("the action", re.compile(r"bench/actions\.py")),
    ("the product's code", re.compile(r"(schedules|workers)/")),
]
OTHER = "other (interpreter start, standard library)"

#: Landmarks of a PostgreSQL backend's work: the share of the server's samples with the
#: function on their stack (parts may overlap: a commit inside a statement, say).
SERVER_PARTS: dict[str, tuple[str, ...]] = {
    "index entries written": ("ExecInsertIndexTuples",),
    "rows found (scans and their filters)": ("ExecScan",),
    "rows written (heap)": ("heap_update", "heap_insert", "heap_delete"),
    "planning": ("pg_plan_queries",),
    "parsing and analysis": (
        "pg_parse_query",
        "pg_analyze_and_rewrite_fixedparams",
        "pg_analyze_and_rewrite_varparams",
    ),
    "commit (the WAL flush included)": ("CommitTransactionCommand",),
    "WAL flush": ("XLogFlush",),
}


class Profilers:
    """The profilers of one case's window; ``summary()`` once they have finished."""

    def __init__(self, data_dir: Path, procs: dict[str, Any], window: float, database: str):
        self.data_dir = data_dir
        self.duration = str(int(max(window, 10.0) + 2))  # a burst has no window: watch it drain
        self.running: list[subprocess.Popen[bytes]] = []
        self.notes: list[str] = []
        self._start_py_spy(procs)
        if database == "postgres":
            self._start_perf()

    def _start_py_spy(self, procs: dict[str, Any]) -> None:
        exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if exe is None:
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        for name, proc in procs.items():
            args = [exe, "record", "--pid", str(proc.pid), "--duration", self.duration]
            args += ["--rate", "250", "--format", "raw", "--nonblocking"]
            args += ["--output", str(self.data_dir / f"profile-{name}.txt")]
            if name.startswith("worker"):
                args.append("--subprocesses")
            self._spawn(args, f"py-spy-{name}.log")

    def _start_perf(self) -> None:
        exe = shutil.which("perf")
        if exe is None:
            self.notes.append("perf not found: the database server is not profiled")
            return
        out = self.data_dir / "perf-server.data"
        self._spawn(
            [exe, "record", "-a", "-g", "-F", "499", "-o", str(out), "--", "sleep", self.duration],
            "perf.log",
        )

    def _spawn(self, args: list[str], log: str) -> None:
        with (self.data_dir / log).open("wb") as out:
            self.running.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT))

    def wait(self) -> None:
        for profiler in self.running:
            try:
                profiler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                profiler.kill()

    def summary(self) -> dict[str, Any]:
        """Per process, each part's share of its samples (percent), largest first."""
        parts: dict[str, Any] = {}
        for path in sorted(self.data_dir.glob("profile-*.txt")):
            parts[path.stem.removeprefix("profile-")] = python_parts(path)
        perf_data = self.data_dir / "perf-server.data"
        if perf_data.exists():
            parts["database server"] = server_parts(perf_data)
        return {"parts_percent": parts, "notes": self.notes}


def python_parts(path: Path) -> dict[str, Any]:
    """The parts of a py-spy raw file ("frame;frame;... count" lines, outermost first)."""
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        counts[_part_of(stack.split(";"))] += int(count)
    total = sum(counts.values())
    return {
        "samples": total,
        **{part: round(100 * n / total, 1) for part, n in counts.most_common() if total},
    }


def _part_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for part, pattern in PYTHON_PARTS:
            if pattern.search(frame):
                return part
    return OTHER


def server_parts(perf_data: Path) -> dict[str, Any]:
    """The share of the PostgreSQL processes' samples under each landmark (perf report)."""
    report = subprocess.run(
        [
            "perf",
            "report",
            "-i",
            str(perf_data),
            "--comm",
            "postgres",
            "--children",
            "--sort",
            "symbol",
            "--stdio",
            "-g",
            "none",
            "--percentage",
            "relative",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    # "    30.45%     0.16%  [.] ExecInsertIndexTuples   ..." (children, self, symbol)
    children: dict[str, float] = {}
    for match in re.finditer(r"^\s+([\d.]+)%\s+[\d.]+%\s+\[[.k]\]\s+(\S+)", report, re.M):
        children.setdefault(match.group(2), float(match.group(1)))
    samples = re.search(r"^# Samples: (\S+)", report, re.M)
    return {
        "samples": samples.group(1) if samples else "0",
        **{
            part: round(sum(children.get(symbol, 0.0) for symbol in symbols), 1)
            for part, symbols in SERVER_PARTS.items()
        },
    }


def print_summary(case: str, profile: dict[str, Any]) -> None:
    print(f"  {case} profile (share of each process's samples, %):")
    for name, parts in profile["parts_percent"].items():
        shown = ", ".join(f"{part} {share}" for part, share in parts.items() if part != "samples")
        print(f"    {name} ({parts['samples']} samples): {shown}")
    for note in profile["notes"]:
        print(f"    {note}")
