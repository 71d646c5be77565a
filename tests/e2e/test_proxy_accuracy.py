"""The sidecar's own figures agree with what the upstream was told to do.

The demo upstream (its own process, absolute deadlines) sends the first token D after the
request and then one every G; the exported histogram sums and counts must agree within
2 ms on average over 100 requests. Assertions are on the exported figures, not on this
test's own clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.loadgen import request_bytes, run_load
from harness.sidecar import Sidecar, demo_upstream, run_sidecar, value

pytestmark = [pytest.mark.e2e, pytest.mark.serial]  # 2 ms tolerances: no other test runs
D, G, TOKENS, REQUESTS, CONCURRENCY = 0.030, 0.010, 8, 100, 4


async def drive(port: int) -> None:
    """A lean raw-socket client, so the test's own CPU use barely disturbs the timing."""
    streams = CONCURRENCY
    sample = await run_load(
        "127.0.0.1",
        port,
        streams,
        REQUESTS // streams,
        request_bytes(D, G, TOKENS, usage=True),
        stagger=0.021,
    )
    assert (sample.requests, sample.errors) == (REQUESTS, 0)


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Sidecar]:
    """Started in the fixture: only the measuring runs alone (`serial`, tests/conftest.py)."""
    with (
        demo_upstream(tmp_path) as upstream,
        run_sidecar(tmp_path, "--no-gpu-metrics", upstream=upstream) as sidecar,
    ):
        yield sidecar


def test_ttft_itl_tpot_agree_with_the_upstream(sidecar: Sidecar) -> None:
    asyncio.run(drive(int(sidecar.proxy_url.rsplit(":", 1)[1])))
    text = sidecar.wait_metric(
        "infermeter_requests_total", float(REQUESTS), model="bench", code="200"
    )

    def mean(name: str, count: float) -> float:
        assert value(text, name + "_count", model="bench") == count
        total = value(text, name + "_sum", model="bench")
        assert total is not None
        return total / count

    ttft = mean("infermeter_time_to_first_token_seconds", REQUESTS)
    itl = mean("infermeter_inter_token_latency_seconds", REQUESTS * (TOKENS - 1))
    tpot = mean("infermeter_time_per_output_token_seconds", REQUESTS)
    assert abs(ttft - D) < 0.002, ttft
    assert abs(itl - G) < 0.002, itl
    assert abs(tpot - G) < 0.002, tpot
    assert value(text, "infermeter_completion_tokens_total", model="bench") == REQUESTS * TOKENS
    assert value(text, "infermeter_goodput_requests_total", model="bench") == REQUESTS
    assert value(text, "infermeter_request_completion_tokens_count", model="bench") == REQUESTS
