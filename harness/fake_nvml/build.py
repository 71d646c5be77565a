"""Compile the fake NVML (fake_nvml.c) into a ``libnvidia-ml.so.1`` that pynvml loads.

Tests point ``LD_LIBRARY_PATH`` at the output directory, so the real nvidia-ml-py bindings and
the real ``infermeter serve`` run without a GPU. See SPEC.md in this directory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("fake_nvml.c")
LIBRARY_NAME = "libnvidia-ml.so.1"
VARIANTS: dict[str, list[str]] = {
    "current": [],
    # A pre-535 driver: no nvmlDeviceGetMemoryInfo_v2, no nvmlDeviceGetCurrentClocksEventReasons.
    "old-driver": ["-DFAKE_NVML_OLD_DRIVER"],
}
# Everything a device can be asked beyond its identity (count, handle, UUID, name): each can
# be left out of the library with ``omit``, as older drivers, vGPU guests and stubs lack them.
OPTIONAL_SYMBOLS: tuple[str, ...] = (
    "nvmlSystemGetDriverVersion",
    "nvmlDeviceGetPciInfo_v3",
    "nvmlDeviceGetMigMode",
    "nvmlDeviceGetMaxMigDeviceCount",
    "nvmlDeviceGetMigDeviceHandleByIndex",
    "nvmlDeviceGetGpuInstanceId",
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetMemoryInfo_v2",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetTemperatureV",
    "nvmlDeviceGetFieldValues",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetCurrentClocksThrottleReasons",
    "nvmlDeviceGetFanSpeed",
    "nvmlDeviceGetPcieReplayCounter",
    "nvmlDeviceGetTotalEccErrors",
    "nvmlDeviceGetRemappedRows",
    "nvmlEventSetCreate",
    "nvmlDeviceRegisterEvents",
    "nvmlEventSetWait_v2",
    "nvmlGpmQueryDeviceSupport",
    "nvmlGpmSampleAlloc",
    "nvmlGpmSampleGet",
    "nvmlGpmMetricsGet",
)
CFLAGS = ["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread"]


def _variant_stamp(library: Path) -> Path:
    """Records which variant a library was built as: both variants share one file name."""
    return library.with_name(library.name + ".variant")


def _version_script(out_dir: Path, omit: tuple[str, ...]) -> list[str]:
    """Linker flags that keep ``omit`` out of the dynamic symbol table (dlsym fails on them)."""
    if not omit:
        return []
    script = out_dir / "omit.map"
    script.write_text("{ global: *; local: " + " ".join(f"{s};" for s in omit) + " };\n")
    return [f"-Wl,--version-script={script}"]


def _up_to_date(library: Path, variant: str) -> bool:
    """True when the library exists, is newer than the source and is of the wanted variant."""
    stamp = _variant_stamp(library)
    try:
        fresh = library.stat().st_mtime_ns >= SOURCE.stat().st_mtime_ns
        return fresh and stamp.read_text(encoding="utf-8") == variant
    except FileNotFoundError:
        return False


def compile_object(out_dir: Path, variant: str = "current") -> Path:
    """Compile the source once into ``out_dir/fake_nvml-<variant>.o``, for ``build(obj=...)``
    to link many libraries from (each omitting other symbols) without compiling again."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    obj = out_dir / f"fake_nvml-{variant}.o"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{obj.name}.", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        flags = [flag for flag in CFLAGS if flag != "-shared"]
        command = ["gcc", "-c", *flags, *VARIANTS[variant], "-o", str(tmp), str(SOURCE)]
        subprocess.run(command, check=True)
        tmp.replace(obj)
    finally:
        tmp.unlink(missing_ok=True)
    return obj


def build(
    out_dir: Path, variant: str = "current", omit: tuple[str, ...] = (), obj: Path | None = None
) -> Path:
    """Build ``out_dir/libnvidia-ml.so.1`` unless it is already current; return its path.

    ``omit`` names optional symbols (OPTIONAL_SYMBOLS) to leave out of the library's
    exports, so the bindings see them as absent exactly as on a driver that lacks them.
    ``obj``: link from this object (compile_object, of the same variant) instead of
    compiling the source.

    The library is compiled to a temporary name and renamed into place, so a process that
    loads it (or a concurrent build) never sees a half-written file.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    unknown = sorted(set(omit) - set(OPTIONAL_SYMBOLS))
    if unknown:
        raise ValueError(f"cannot omit {unknown}; optional symbols are {OPTIONAL_SYMBOLS}")
    stamp_text = variant + "".join(f" -{symbol}" for symbol in omit)
    out_dir.mkdir(parents=True, exist_ok=True)
    library = out_dir / LIBRARY_NAME
    if _up_to_date(library, stamp_text):
        return library
    _variant_stamp(library).unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{LIBRARY_NAME}.", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        command = [
            "gcc",
            *CFLAGS,
            *VARIANTS[variant],
            *_version_script(out_dir, omit),
            f"-Wl,-soname,{LIBRARY_NAME}",
            "-o",
            str(tmp),
            str(obj or SOURCE),
            "-lcjson",
        ]
        subprocess.run(command, check=True)
        tmp.chmod(0o755)  # mkstemp made it 0600; other users' processes may load it
        tmp.replace(library)
    finally:
        tmp.unlink(missing_ok=True)
    _variant_stamp(library).write_text(stamp_text, encoding="utf-8")
    return library


def main(argv: list[str] | None = None) -> int:
    """Shell entry point, so the demo and humans can build without pytest."""
    parser = argparse.ArgumentParser(description="Build the fake libnvidia-ml.so.1.")
    parser.add_argument("out_dir", type=Path, help="directory to write libnvidia-ml.so.1 into")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="current")
    parser.add_argument(
        "--omit", action="append", default=[], choices=OPTIONAL_SYMBOLS, help="leave out a symbol"
    )
    args = parser.parse_args(argv)
    print(build(args.out_dir, args.variant, tuple(args.omit)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
