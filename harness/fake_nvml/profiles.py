"""Device profiles for the fake NVML: plain dicts, written as the JSON the C library reads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

GiB = 1024**3


def gpu(index: int, **overrides: Any) -> dict[str, Any]:
    """An H100 SXM with every field the fake supports, values varying by index."""
    device: dict[str, Any] = {
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": f"GPU-{index:08x}-1111-2222-3333-{index:012x}",
        "pci_bus_id": f"00000000:{0x17 + index:02X}:00.0",
        "utilization_gpu": 10 + 10 * index,
        "utilization_memory": 5 + index,
        "memory_total": 80 * GiB,
        "memory_reserved": 512 * 1024**2,
        "memory_used": (20 + index) * GiB,
        "memory_free": 80 * GiB - 512 * 1024**2 - (20 + index) * GiB,
        "temperature_gpu": 40 + index,
        "temperature_memory": 50 + index,
        "power_usage_mw": 300_000 + 1_000 * index,
        "power_limit_mw": 700_000,
        "energy_mj": 1_000_000_000 + index,
        "clock_graphics_mhz": 1980,
        "clock_sm_mhz": 1980,
        "clock_mem_mhz": 2619,
        "clocks_event_reasons": 0x004 if index == 1 else 0x001,
        "fan_speed": 30,
        "gpm_graphics_util": 12.5 * (1 + index),  # percent
        "gpm_tensor_util": 6.25 * (1 + index),
        "pcie_replay": index,
        "ecc_corrected_volatile": 2 * index,
        "ecc_uncorrected_volatile": 0,
        "ecc_corrected_aggregate": 10 * index,
        "ecc_uncorrected_aggregate": 0,
        "remapped_rows": {"correctable": index, "uncorrectable": 0, "pending": 0, "failure": 0},
    }
    device.update(overrides)
    return device


def mig(parent: int, slot: int, **overrides: Any) -> dict[str, Any]:
    device: dict[str, Any] = {
        "name": "NVIDIA H100 80GB HBM3 MIG 1g.10gb",
        "uuid": f"MIG-{parent:08x}-aaaa-bbbb-cccc-{slot:012x}",
        "gpu_instance_id": 7 + slot,
        "compute_instance_id": 0,
        "memory_total": 10 * GiB,
        "memory_reserved": 0,
        "memory_used": (1 + slot) * GiB,
        "memory_free": (9 - slot) * GiB,
    }
    device.update(overrides)
    return device


def state(devices: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    return {
        "driver_version": "550.54.15",
        "nvml_version": "12.550.54.15",
        "devices": devices,
        "xid_events": [],
        **top,
    }


def write(path: Path, data: dict[str, Any]) -> None:
    """Replace the file atomically, so the library never reads half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
