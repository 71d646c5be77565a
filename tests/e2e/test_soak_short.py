"""A short soak (the long one is `make soak`): faults mixed in, nothing leaks."""

from __future__ import annotations

import pytest

from bench.soak import run

pytestmark = pytest.mark.e2e


def test_short_soak_leaks_nothing() -> None:
    result = run(requests=2000)
    before, after = result["before"], result["after"]
    assert isinstance(before, dict)
    assert isinstance(after, dict)
    # a leak grows with the 2,000 requests; a few idle keep-alive connections come and go
    assert after["open_fds"] <= before["open_fds"] + 4
    assert after["tasks"] <= before["tasks"] + 1
    assert after["upstream_connections"] <= before["upstream_connections"] + 4
    assert result["rss_growth_ratio"] < 0.10  # type: ignore[operator]
    assert result["requests_counted"] >= 2000 + 200  # warm-up included; every request counted
