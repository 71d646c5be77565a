"""CPU of one engine /metrics fetch's parse, by exposition size (`python -m bench.engine_parse`).

The fetcher thread shares the GIL with the proxy's loop, so the parse of a big exposition
is time the loop may wait. Only the lines of re-exported names reach prometheus_client's
parser; this measures that path against parsing everything, on vLLM-shaped text padded with
histograms (what makes real expositions big: ~30 buckets x series x models).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from infermeter.engine.fetcher import parse

FIXTURE = Path(__file__).parents[1] / "tests" / "fixtures" / "engines" / "vllm-0.11.prom"


def exposition(histograms: int, models: int) -> bytes:
    lines = [
        f'vllm:h{h}_bucket{{engine="0",le="{le}",model_name="model-{m}"}} {le}.0'
        for m in range(models)
        for h in range(histograms)
        for le in range(30)
    ]
    return FIXTURE.read_bytes() + ("\n".join(lines) + "\n").encode()


def best_of(repeat: int, run: object) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for histograms, models in ((10, 1), (20, 8), (60, 30), (200, 60)):
        body = exposition(histograms, models)
        text = body.decode()
        selected = best_of(args.repeat, lambda b=body: parse(b))
        full = best_of(args.repeat, lambda t=text: list(text_string_to_metric_families(t)))
        rows.append({"bytes": len(body), "selected_parse_s": selected, "full_parse_s": full})
        print(json.dumps(rows[-1]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
