from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.sidecar import INFERMETER
from infermeter.settings import HostPort, Settings, SettingsError, load_settings, parse_host_port


def test_defaults() -> None:
    settings = load_settings({}, environ={})
    assert settings == Settings()
    assert settings.metrics_listen == HostPort("0.0.0.0", 8091)
    assert settings.listen == HostPort("0.0.0.0", 8090)
    assert settings.upstream is None
    assert settings.gpu_poll_interval == 1.0


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    config = tmp_path / "infermeter.yaml"
    config.write_text("log-level: debug\ngpu_poll_interval: 5\nlog_format: json\ngpus: [0, 1]\n")
    environ = {"INFERMETER_GPU_POLL_INTERVAL": "2.5", "INFERMETER_LOG_FORMAT": "plain"}
    settings = load_settings({"log_format": "json"}, environ=environ, config_path=str(config))
    assert settings.log_level == "debug"  # file only
    assert settings.gpu_poll_interval == 2.5  # env over file
    assert settings.log_format == "json"  # flag over env
    assert settings.gpus == ("0", "1")  # YAML list of ints
    assert settings.metrics_listen.port == 8091  # default


def test_slo_settings_switch_off_with_none() -> None:
    settings = load_settings(
        {"slo_ttft": "none", "slo_e2e": "2.5"}, environ={"INFERMETER_SLO_TPOT": "off"}
    )
    assert (settings.slo_ttft, settings.slo_tpot, settings.slo_e2e) == (None, None, 2.5)
    assert Settings().slo_ttft == 0.45
    assert Settings().slo_tpot == 0.04


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {"slo_ttft": "-1"},
            "invalid setting slo_ttft (--slo-ttft='-1'): Input should be greater than 0",
        ),
        (
            {"max_models": "0"},
            "invalid setting max_models (--max-models='0'): Input should be greater than or equal",
        ),
        (
            {"upstream_pool_size": "x"},
            "invalid setting upstream_pool_size (--upstream-pool-size='x')",
        ),
        ({"upstream_read_timeout": "-2"}, "invalid setting upstream_read_timeout"),
        ({"drain_timeout": "soon"}, "invalid setting drain_timeout (--drain-timeout='soon')"),
        ({"request_head_max_bytes": "100"}, "invalid setting request_head_max_bytes"),
        ({"request_max_headers": "2"}, "invalid setting request_max_headers"),
        ({"request_header_timeout": "0"}, "invalid setting request_header_timeout"),
        ({"request_body_timeout": "-1"}, "invalid setting request_body_timeout"),
        ({"max_connections": "0"}, "invalid setting max_connections"),
        ({"metrics_max_connections": "x"}, "invalid setting metrics_max_connections"),
        ({"upstream_pool_timeout": "0"}, "invalid setting upstream_pool_timeout"),
        ({"upstream_head_max_bytes": "10"}, "invalid setting upstream_head_max_bytes"),
        ({"request_buffer_max_bytes": "-1"}, "invalid setting request_buffer_max_bytes"),
    ],
)
def test_proxy_settings_validation(source: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(source, environ={})
    assert message in str(info.value)


def test_config_file_from_env(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("upstream: http://127.0.0.1:8000/\n")
    settings = load_settings({}, environ={"INFERMETER_CONFIG": str(config)})
    assert settings.upstream == "http://127.0.0.1:8000"


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.log_level = "debug"  # type: ignore[misc]


def test_unknown_infermeter_env_is_ignored() -> None:
    # Kubernetes service links inject INFERMETER_PORT etc. for a Service named infermeter.
    environ = {"INFERMETER_PORT": "tcp://10.0.0.1:8090", "INFERMETER_SERVICE_HOST": "10.0.0.1"}
    assert load_settings({}, environ=environ) == Settings()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {"metrics_listen": "nope"},
            "invalid setting metrics_listen (--metrics-listen='nope'): expected HOST:PORT",
        ),
        (
            {"metrics_listen": "127.0.0.1:0"},
            "invalid setting metrics_listen (--metrics-listen='127.0.0.1:0'): port must be 1-65535",
        ),
        (
            {"listen": "::1:8090"},
            "invalid setting listen (--listen='::1:8090'): IPv6 hosts need brackets",
        ),
        (
            {"upstream": "ftp://x"},
            "invalid setting upstream (--upstream='ftp://x'): expected an http:// or https:// URL",
        ),
        (
            {"upstream": "http://h:99999"},
            "invalid setting upstream (--upstream='http://h:99999'): bad port",
        ),
        ({"upstream": "http://h/?a=b"}, "must not have a query"),
        (
            {"log_format": "xml"},
            "invalid setting log_format (--log-format='xml'): Input should be 'plain' or 'json'",
        ),
        ({"log_level": "loud"}, "invalid setting log_level (--log-level='loud')"),
        (
            {"gpu_poll_interval": "0"},
            "invalid setting gpu_poll_interval (--gpu-poll-interval='0'): "
            "Input should be greater than 0",
        ),
        ({"gpu_poll_interval": "600"}, "less than or equal to 60"),
        (
            {"gpu_metrics": "maybe"},
            "invalid setting gpu_metrics (--gpu-metrics='maybe'): Input should be a valid boolean",
        ),
        (
            {"gpus": "0,gpu1"},
            "invalid setting gpus (--gpus='0,gpu1'): "
            "expected a GPU index or a GPU-/MIG- UUID, got 'gpu1'",
        ),
        (
            {"watch_pid": "-3"},
            "invalid setting watch_pid (--watch-pid='-3'): Input should be greater than 0",
        ),
        (
            {"watch_pid": "1", "watch_process": "vllm"},
            "watch_pid and watch_process are mutually exclusive",
        ),
        (
            {"upstream": "http://h", "listen": ":9000", "metrics_listen": ":9000"},
            "listen and metrics_listen must use different ports",
        ),
    ],
)
def test_validation_messages_name_the_setting(source: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(source, environ={})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_env_source_is_named() -> None:
    with pytest.raises(SettingsError, match=r"\(INFERMETER_GPU_POLL_INTERVAL='fast'\)"):
        load_settings({}, environ={"INFERMETER_GPU_POLL_INTERVAL": "fast"})


def test_file_errors_are_named(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("gpu_poll_intervall: 2\n")
    with pytest.raises(SettingsError, match="unknown setting 'gpu_poll_intervall'"):
        load_settings({}, environ={}, config_path=str(config))
    config.write_text("gpu_poll_interval: -1\n")
    with pytest.raises(SettingsError, match=r"config file .*c\.yaml key gpu_poll_interval"):
        load_settings({}, environ={}, config_path=str(config))
    config.write_text("- a list\n")
    with pytest.raises(SettingsError, match="must hold a mapping"):
        load_settings({}, environ={}, config_path=str(config))
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings({}, environ={}, config_path=str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8091", HostPort("127.0.0.1", 8091)),
        (":8091", HostPort("0.0.0.0", 8091)),
        ("[::1]:8091", HostPort("::1", 8091)),
        ("localhost:1", HostPort("localhost", 1)),
    ],
)
def test_host_port(text: str, expected: HostPort) -> None:
    assert parse_host_port(text) == expected


def test_cli_bad_value_exits_2_with_one_line() -> None:
    result = subprocess.run(
        [INFERMETER, "serve", "--gpu-poll-interval", "soon"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.startswith("infermeter: invalid setting gpu_poll_interval")
    assert result.stderr.count("\n") == 1


def test_cli_version() -> None:
    from infermeter import __version__

    result = subprocess.run([INFERMETER, "version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"infermeter {__version__}"


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        ({}, 1),
        ({"cli": {"workers": "4"}}, 4),
        ({"cli": {"workers": "AUTO"}}, "auto"),
        ({"env": {"INFERMETER_WORKERS": "auto"}}, "auto"),
        ({"yaml": "workers: 3\n"}, 3),
        ({"yaml": "workers: auto\n", "env": {"INFERMETER_WORKERS": "2"}}, 2),
    ],
)
def test_workers_from_every_source(
    tmp_path: Path, sources: dict[str, object], expected: int | str
) -> None:
    config = None
    if "yaml" in sources:
        config = tmp_path / "c.yaml"
        config.write_text(str(sources["yaml"]))
    settings = load_settings(
        sources.get("cli", {}),  # type: ignore[arg-type]
        sources.get("env", {}),  # type: ignore[arg-type]
        str(config) if config else None,
    )
    assert settings.workers == expected


@pytest.mark.parametrize("bad", ["0", "-1", "65", "two", "1.5", ""])
def test_bad_workers_name_the_setting(bad: str) -> None:
    if bad == "":
        assert load_settings({}, {"INFERMETER_WORKERS": bad}).workers == 1  # empty: unset
        return
    with pytest.raises(SettingsError, match=r"invalid setting workers \(--workers="):
        load_settings({"workers": bad}, {})


def test_attribute_and_prices_from_every_source(tmp_path: Path) -> None:
    from infermeter.cli import build_parser

    prices = tmp_path / "prices.yaml"
    prices.write_text("currency: EUR\nmodels: {m: {prompt: 1, completion: 2}}\n")
    args = vars(build_parser().parse_args(
        ["serve", "--attribute", "team=X-Team", "--attribute", "feature=X-Feature"]
    ))  # fmt: skip
    assert args["attribute"] == ["team=X-Team", "feature=X-Feature"]
    flags = load_settings({"attribute": args["attribute"]}, environ={})
    assert flags.attribute == ("team=x-team", "feature=x-feature")
    env = load_settings(
        {},
        environ={
            "INFERMETER_ATTRIBUTE": "team=X-Team, feature=X-Feature",
            "INFERMETER_MAX_ATTRIBUTE_VALUES": "8",
            "INFERMETER_STRIP_ATTRIBUTE_HEADERS": "true",
            "INFERMETER_PRICES": str(prices),
        },
    )
    assert env.attribute == flags.attribute
    assert (env.max_attribute_values, env.strip_attribute_headers) == (8, True)
    assert env.prices == prices
    config = tmp_path / "infermeter.yaml"
    config.write_text(f"attribute: {{team: X-Team}}\nprices: {prices}\n")
    from_file = load_settings({}, environ={}, config_path=str(config))
    assert from_file.attribute == ("team=x-team",)
    config.write_text("attribute: [team=X-Team, feature=X-Feature]\n")
    assert load_settings({}, environ={}, config_path=str(config)).attribute == flags.attribute
    defaults = Settings()
    assert (defaults.attribute, defaults.max_attribute_values) == ((), 32)
    assert (defaults.strip_attribute_headers, defaults.prices) == (False, None)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {"attribute": ["team"]},
            r"invalid setting attribute \(--attribute=\['team'\]\): expected NAME=HEADER",
        ),
        ({"attribute": ["model=X-Model"]}, "invalid setting attribute .*clashes"),
        ({"attribute": ["api=X-Api"]}, "invalid setting attribute .*clashes"),
        ({"max_attribute_values": "0"}, "invalid setting max_attribute_values"),
        ({"prices": "/nonexistent/prices.yaml"}, "invalid setting prices .*cannot read"),
    ],
)
def test_bad_attribution_settings_are_named(source: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(source, environ={})


def test_broken_prices_file_names_the_setting(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("currency: USD\nmodels: {m: {prompt: -1}}\n")
    result = subprocess.run(
        [INFERMETER, "serve", "--prices", str(prices)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.startswith("infermeter: invalid setting prices (--prices=")
    assert "models['m'].prompt: expected a finite number >= 0" in result.stderr


def test_models_allow_list_from_flag_env_and_file(tmp_path: Path) -> None:
    assert load_settings({"models": "a, b,,c"}, environ={}).models == ("a", "b", "c")
    assert load_settings({}, environ={"INFERMETER_MODELS": "x"}).models == ("x",)
    config = tmp_path / "c.yaml"
    config.write_text("models: [llama, qwen]\nrequest_head_max_bytes: 65536\n")
    settings = load_settings({}, environ={}, config_path=str(config))
    assert settings.models == ("llama", "qwen")
    assert settings.request_head_max_bytes == 65536
