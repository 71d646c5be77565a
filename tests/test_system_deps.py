"""The install step's decisions, driven by what a machine has (hack/system-deps.sh --dry-run).

Each case builds a PATH of stub commands and a root of header files, so the fresh, partial and
non-root machines are covered without changing this one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "hack" / "system-deps.sh"
ALL_COMMANDS = ("promtool", "prometheus", "prometheus-alertmanager", "gcc", "npm", "node", "nginx")
ALL_HEADERS = ("usr/include/stdio.h", "usr/include/cjson/cJSON.h")


def machine(
    tmp_path: Path,
    commands: tuple[str, ...] = ALL_COMMANDS,
    headers: tuple[str, ...] = ALL_HEADERS,
    venv_ok: bool = True,
) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for name in commands:
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)
    python = bin_dir / "python-stub"
    python.write_text(f"#!/bin/sh\nexit {0 if venv_ok else 1}\n")
    python.chmod(0o755)
    for header in headers:
        (tmp_path / "root" / header).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "root" / header).write_text("")
    return {"PATH": str(bin_dir), "SYSDEPS_ROOT": str(tmp_path / "root"), "PYTHON": str(python)}


def run(env: dict[str, str], uid: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), *args],
        env={**env, "SYSDEPS_UID": str(uid)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_nothing_missing_installs_nothing(tmp_path: Path) -> None:
    done = run(machine(tmp_path), 0, "--dry-run")
    assert done.returncode == 0
    assert "missing required: none; missing optional: none" in done.stdout
    assert "apt-get" not in done.stdout
    # Not a dry run either: with nothing missing it never reaches apt-get (absent from PATH).
    assert run(machine(tmp_path / "again"), 0).returncode == 0


def test_only_cjson_missing_beside_nodesource_node(tmp_path: Path) -> None:
    # NodeSource's nodejs brings its own npm: Debian's npm (which conflicts with it) stays out.
    env = machine(tmp_path, headers=("usr/include/stdio.h",))
    done = run(env, 0, "--dry-run")
    assert done.returncode == 0
    assert "missing required: libcjson-dev; missing optional: none" in done.stdout
    assert "would run: apt-get install -y --no-install-recommends libcjson-dev\n" in done.stdout
    assert "npm" not in done.stdout


def test_no_node_at_all_installs_debian_npm(tmp_path: Path) -> None:
    commands = tuple(c for c in ALL_COMMANDS if c not in ("npm", "node"))
    done = run(machine(tmp_path, commands=commands), 0, "--dry-run")
    assert "would run: apt-get install -y --no-install-recommends npm\n" in done.stdout


def test_fresh_machine_lists_each_package_once(tmp_path: Path) -> None:
    done = run(machine(tmp_path, commands=(), headers=(), venv_ok=False), 0, "--dry-run")
    line = next(x for x in done.stdout.splitlines() if x.startswith("would run:"))
    packages = line.split("--no-install-recommends ")[1].split()
    assert packages == [
        "prometheus",
        "prometheus-alertmanager",
        "gcc",
        "libc6-dev",
        "libcjson-dev",
        "npm",
        "python3-venv",
    ]
    assert "would try: apt-get install -y --no-install-recommends nginx" in done.stdout


@pytest.mark.parametrize("dry_run", [True, False])
def test_not_root_names_what_to_install_and_stops(tmp_path: Path, dry_run: bool) -> None:
    env = machine(tmp_path, commands=("gcc", "npm", "nginx"))
    done = run(env, 1000, *(["--dry-run"] if dry_run else []))
    if dry_run:
        assert done.returncode == 0
        assert "not root: would stop and ask for them" in done.stdout
    else:
        assert done.returncode == 1
        assert "not root; install these first: sudo apt-get install prometheus" in done.stderr


def test_not_root_without_nginx_only_is_fine(tmp_path: Path) -> None:
    commands = tuple(c for c in ALL_COMMANDS if c != "nginx")
    done = run(machine(tmp_path, commands=commands), 1000)
    assert done.returncode == 0
    assert "benchmarks skip its path" in done.stdout


@pytest.mark.parametrize("target", ["test", "demo"])
def test_make_targets_go_through_the_script(target: str) -> None:
    plan = subprocess.run(
        ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert "hack/system-deps.sh" in plan
    assert "apt-get" not in plan  # nothing installed behind the script's back
