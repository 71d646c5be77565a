"""The engine settings: flag, env and YAML like every setting, validated at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from infermeter.app import make_engine_fetcher
from infermeter.settings import SettingsError, load_settings


def test_defaults_fetch_the_upstreams_metrics() -> None:
    settings = load_settings({"upstream": "http://127.0.0.1:8000/v1"}, environ={})
    assert settings.engine_metrics == "auto"
    assert settings.engine_metrics_interval == 5.0
    assert settings.engine_metrics_timeout == 3.0
    assert settings.engine_metrics_max_bytes == 8 * 1024 * 1024
    assert settings.engine == "auto"
    fetcher = make_engine_fetcher(settings)
    assert fetcher is not None
    assert (fetcher.url, fetcher.auto) == ("http://127.0.0.1:8000/metrics", True)
    assert make_engine_fetcher(load_settings({}, environ={})) is None  # exporter only


def test_flag_env_and_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("engine-metrics: http://triton:8002/metrics\nengine: Llama.cpp\n")
    environ = {"INFERMETER_ENGINE_METRICS_INTERVAL": "15", "INFERMETER_ENGINE": "triton"}
    settings = load_settings(
        {"engine_metrics_max_bytes": "2048"}, environ=environ, config_path=str(config)
    )
    assert settings.engine_metrics == "http://triton:8002/metrics"
    assert settings.engine == "triton"  # env over file
    assert settings.engine_metrics_interval == 15
    assert settings.engine_metrics_max_bytes == 2048
    fetcher = make_engine_fetcher(settings)
    assert fetcher is not None
    assert fetcher.auto is False
    assert fetcher.forced is not None
    assert fetcher.forced.name == "triton"
    assert load_settings({}, environ={}, config_path=str(config)).engine == "llamacpp"


@pytest.mark.parametrize("value", ["off", "none", "OFF", ""])
def test_off(value: str) -> None:
    settings = load_settings({"upstream": "http://u:1", "engine_metrics": value}, environ={})
    assert settings.engine_metrics == "off"
    assert make_engine_fetcher(settings) is None


def test_ollama_has_nothing_to_fetch() -> None:
    settings = load_settings({"upstream": "http://u:11434", "engine": "ollama"}, environ={})
    assert make_engine_fetcher(settings) is None


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"engine_metrics": "ftp://x/metrics"}, "engine_metrics"),
        ({"engine_metrics": "http://x/metrics#frag"}, "engine_metrics"),
        ({"engine_metrics": "http://x:99999/metrics"}, "engine_metrics"),
        ({"engine_metrics_interval": "0"}, "engine_metrics_interval"),
        ({"engine_metrics_timeout": "-1"}, "engine_metrics_timeout"),
        ({"engine_metrics_max_bytes": "10"}, "engine_metrics_max_bytes"),
        ({"engine": "mystery"}, "engine"),
    ],
)
def test_bad_values_name_the_setting(source: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=f"invalid setting {message} "):
        load_settings(source, environ={})
