"""deploy/systemd: the units systemd would load, each restarting its process when it exits."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
INSTALL = "/srv/schedules"


def read(unit: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(unit)
    return parser


def test_there_is_a_unit_for_each_long_running_process():
    assert [u.name for u in UNITS] == [
        "schedules-dispatcher.service",
        "schedules-ttl-forwarder.service",
        "schedules-web.service",
        "schedules-worker@.service",
    ]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_each_unit_restarts_its_process_and_never_gives_up(unit: Path):
    config = read(unit)
    assert config["Service"]["Restart"] == "always"
    assert float(config["Service"]["RestartSec"]) <= 5
    assert config["Unit"]["StartLimitIntervalSec"] == "0"
    assert config["Service"]["KillSignal"] == "SIGTERM"  # the graceful stop of each process


def test_systemd_accepts_the_units(tmp_path: Path):
    """``systemd-analyze verify`` on the units, installed at this checkout instead of
    /srv/schedules (it checks every command exists and is executable)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (Debian's systemd package) is needed"
    venv_bin = str(Path(sys.executable).parent)
    paths = []
    for unit in UNITS:
        text = (
            unit.read_text()
            .replace(f"{INSTALL}/.venv/bin", venv_bin)
            .replace(INSTALL, str(ROOT))
            .replace("User=schedules", "User=root")
            .replace("Group=schedules", "Group=root")
            .replace("EnvironmentFile=/etc/", "EnvironmentFile=-/etc/")
        )
        name = unit.name.replace("@.service", "@1.service")
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    result = subprocess.run([analyze, "verify", *paths], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_commands_the_units_run_exist():
    for unit in UNITS:
        command = read(unit)["Service"]["ExecStart"]
        if "manage.py" in command:
            name = command.split("manage.py ")[1].split()[0]
            assert (ROOT / "schedules" / "management" / "commands" / f"{name}.py").exists()
