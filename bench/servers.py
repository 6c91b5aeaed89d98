"""Private servers for fault tests and benchmarks: a PostgreSQL cluster, a Redis server and
a RabbitMQ node of their own, on free ports, that may be killed and restarted.

The shared servers of the machine (PostgreSQL on 5432, Redis on 6379, RabbitMQ on 5672)
are never stopped: a test that kills its broker or database starts its own here.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, *, up: bool = True, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not come {'up' if up else 'down'} in {timeout} s")


def _kill_group(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


class RedisServer:
    """A redis-server that keeps nothing on disk, like the machine's own."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port)

    def kill(self) -> None:
        """SIGKILL: everything it held is gone, as after a crash without persistence."""
        _kill_group(self.process)
        wait_for_port(self.port, up=False)

    def restart(self, down_for: float = 1.0) -> None:
        self.kill()
        time.sleep(down_for)
        self.start()

    def stop(self) -> None:
        _kill_group(self.process)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} (PostgreSQL server binaries) not found")
    return path


class PostgresCluster:
    """A PostgreSQL cluster of its own (initdb), user postgres with trust authentication.

    PostgreSQL refuses to run as root: as root, the cluster lives in a folder of its own
    under the system's temporary folder, owned by the ``postgres`` user, and its commands
    run as that user (``runuser``).
    """

    def __init__(self, folder: Path) -> None:
        self.as_root = os.geteuid() == 0
        if self.as_root:
            folder = Path(tempfile.mkdtemp(prefix="schedules-pg-"))
            shutil.chown(folder, "postgres", "postgres")
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, name: str, *args: str) -> None:
        command = [_pg_bin(name), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(
            command, check=True, capture_output=True, env={**os.environ, "LC_ALL": "C.UTF-8"}
        )

    def _ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "pg.log"), *args)

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} "
            "-c max_connections=200 -c shared_buffers=128MB"
        )
        self._ctl("-w", "-t", "60", "-o", options, "start")

    def restart_immediate(self) -> None:
        """Stop with ``-m immediate`` (no checkpoint: crash recovery at start) and start."""
        self._ctl("-w", "-m", "immediate", "stop")
        self.start()

    def create_database(self, name: str) -> None:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._ctl("-w", "-m", "immediate", "stop")
        if self.as_root:
            shutil.rmtree(self.folder, ignore_errors=True)


class RabbitNode:
    """A RabbitMQ node of its own: its own node name, ports, Erlang cookie and data.

    Started from the server's own scripts (the /usr/sbin wrappers switch to the rabbitmq
    user and its cookie); the machine's node and its configuration are left alone.
    """

    BIN = Path("/usr/lib/rabbitmq/bin")

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.name = f"faults{uuid.uuid4().hex[:8]}@localhost"
        self.process: subprocess.Popen[bytes] | None = None
        home = folder / "home"
        home.mkdir(parents=True, exist_ok=True)
        (folder / "log").mkdir(exist_ok=True)
        (folder / "enabled_plugins").write_text("[].\n")
        (folder / "rabbitmq-env.conf").write_text("")
        (folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
            "log.console = false\n"
        )
        cli_ports = free_port()
        self.env = {
            **os.environ,
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(folder / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(folder / "rabbitmq.pid"),
            "RABBITMQ_CTL_DIST_PORT_MIN": str(cli_ports),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(cli_ports),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    @classmethod
    def available(cls) -> bool:
        return (cls.BIN / "rabbitmq-server").exists()

    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self) -> None:
        log = (self.folder / "log" / "server.out").open("ab")
        self.process = subprocess.Popen(
            [str(self.BIN / "rabbitmq-server")],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout=60)

    def kill(self) -> None:
        """SIGKILL of the node (Erlang's epmd is a daemon outside this process group)."""
        _kill_group(self.process)
        wait_for_port(self.port, up=False)

    def restart(self, down_for: float = 1.0) -> None:
        self.kill()
        time.sleep(down_for)
        self.start()

    def stop(self) -> None:
        _kill_group(self.process)
