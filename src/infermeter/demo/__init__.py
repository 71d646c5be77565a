"""Synthetic traffic for trying infermeter without a GPU: a simulated inference server.

`infermeter.demo.upstream` behaves like vLLM's OpenAI server on the wire, with configurable
timing, so users can check their Prometheus/Grafana wiring and our tests and benchmarks have a
fast, deterministic upstream behind the proxy.
"""
