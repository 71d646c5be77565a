"""The Dockerfile's promises, checked without a Docker engine (none runs here).

hadolint is not available from the registries this project can reach, so the rules that
matter for this image are asserted directly: pinned multi-stage slim glibc base, wheels
built in the first stage and installed without extras or network, a numeric non-root
USER, exec-form ENTRYPOINT, NVIDIA utility capability, OCI labels, no cache left behind.
"""

from __future__ import annotations

import re
from pathlib import Path

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
    assert "infermeter[" not in install  # the runtime image has no test extras
    assert "--no-cache-dir" in install
    assert "rm -rf /wheels" in install


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
    for label in ("title", "description", "version", "licenses", "source"):
        assert f"org.opencontainers.image.{label}=" in DOCKERFILE


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".git", ".venv", "tests"):
        assert path in ignored
