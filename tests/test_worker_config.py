"""The worker's part of the settings: complete, faithful, and free of pydantic."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from infermeter.channel import read_settings, settings_frame
from infermeter.settings import load_settings
from infermeter.worker_config import WorkerConfig


def test_every_field_comes_from_the_validated_settings(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("currency: USD\nmodels:\n  m: {prompt: 1, completion: 2}\n")
    settings = load_settings(
        {
            "upstream": "http://127.0.0.1:9/v1",
            "attribute": "team=x-team",
            "models": "a,b",
            "slo_ttft": "0.5",
            "prices": str(prices),
            "log_format": "json",
        },
        environ={},
    )
    config = WorkerConfig.from_settings(settings)
    for field in fields(WorkerConfig):
        assert getattr(config, field.name) == getattr(settings, field.name), field.name
    assert config.models == ("a", "b")
    assert config.prices == prices


def test_no_upstream_is_refused() -> None:
    with pytest.raises(ValueError, match="upstream"):
        WorkerConfig.from_settings(load_settings({}, environ={}))


def test_the_channel_carries_it_whole() -> None:
    config = WorkerConfig.from_settings(
        load_settings({"upstream": "http://127.0.0.1:9", "slo_tpot": "0.05"}, environ={})
    )
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(settings_frame(config))
        assert read_settings(theirs) == config


def test_the_worker_imports_neither_pydantic_nor_the_settings_model() -> None:
    """Each of them costs every worker process RSS (bench/README.md, issue #15)."""
    code = (
        "import sys, infermeter.worker\n"
        "print(sorted(m for m in ('pydantic', 'infermeter.settings') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
