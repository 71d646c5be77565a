"""What a proxy worker needs of the settings, as a plain dataclass.

The supervisor validates the settings (pydantic) and hands each worker this subset. The
worker then never imports pydantic, the settings model or PyYAML: building the settings
model alone costs about 13 MB of RSS per process, which every extra worker would repeat
(bench/README.md, issue #15's memory target).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from infermeter.settings import Settings


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    upstream: str
    upstream_connect_timeout: float
    upstream_read_timeout: float
    upstream_timeout: float
    upstream_pool_size: int
    upstream_pool_timeout: float
    upstream_head_max_bytes: int
    request_head_max_bytes: int
    request_max_headers: int
    request_header_timeout: float
    request_body_timeout: float
    request_buffer_max_bytes: int
    max_connections: int
    drain_timeout: float
    max_models: int
    attribute: tuple[str, ...]
    max_attribute_values: int
    strip_attribute_headers: bool
    prices: Path | None
    models: tuple[str, ...]
    slo_ttft: float | None
    slo_tpot: float | None
    slo_e2e: float | None
    otlp_endpoint: str | None
    trace_sample_ratio: float
    otlp_metrics: bool
    capture_content: bool
    capture_content_max_bytes: int
    log_format: Literal["plain", "json"]
    log_level: str

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerConfig:
        if settings.upstream is None:
            raise ValueError("a proxy worker needs an upstream")
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})
