"""infermeter: Prometheus exporter and observability sidecar for LLM inference."""

__version__ = "0.1.0"
