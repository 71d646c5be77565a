"""Benchmark: what measuring one streamed chunk costs, in a hot loop.

The deferred batch (`proxy.deferred`) calls the proxy's `_Measure` once per upstream body
chunk: SSE framing, the OpenAI interpreter, the meter and the ITL histogram. This calls it
directly, on the bulk chunk of a vLLM chat stream (one `data:` event with a text delta),
with the real parser, meter and recorder, and nothing else: no loop, no sockets. A hot loop
runs on warm caches, so a worker pays more per chunk (see bench/README.md); this is for
comparing two versions of the same code. Usage:
`python -m bench.measure_chunk [--chunks 200000] [--repeat 7]`; the best repeat is reported.
"""

from __future__ import annotations

import argparse
import json
import time

from bench.hot_path import ROLE, TOKEN
from infermeter.proxy.app import ProxyApp, _Measure
from infermeter.proxy.recorder import Recorder
from infermeter.streams.api import Api
from infermeter.streams.parsers import parser_for
from infermeter.streams.timing import SLO, RequestMeter


def _event(framed: bytes) -> bytes:
    """The SSE bytes inside one HTTP chunk of `bench.hot_path`."""
    return framed.split(b"\r\n")[1]


def _run(chunks: int) -> float:
    """CPU seconds per chunk measured, over one stream of `chunks` token chunks."""
    recorder = Recorder.private(8, SLO(None, None, None))
    series = recorder.series("bench", Api.CHAT_COMPLETIONS)
    parser = parser_for(
        Api.CHAT_COMPLETIONS,
        streaming=True,
        content_type="text/event-stream",
        content_encoding=None,
    )
    meter = RequestMeter(0.0, True, expects_terminal=True, on_gap=series.gap)
    app: ProxyApp = None  # type: ignore[assignment]  # only used when measuring fails
    measure = _Measure(app, meter, parser, None, series, ())
    measure(_event(ROLE), 0.001)
    token = _event(TOKEN)
    times = [0.002 + i * 1e-5 for i in range(chunks)]
    begin = time.process_time()
    for now in times:
        measure(token, now)
    spent = time.process_time() - begin
    count = sum(series.child("itl").counts)
    assert count == chunks - 1, count  # every chunk but the first (TTFT) made an ITL gap
    return spent / chunks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    best = min(_run(args.chunks) for _ in range(args.repeat))
    print(
        json.dumps(
            {
                "benchmark": "measure_chunk",
                "chunks": args.chunks,
                "cpu_us_per_chunk": round(best * 1e6, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
