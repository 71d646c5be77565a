"""The process model with real processes: N proxy workers behind one supervisor.

Exact counts across workers, the model cap for the whole sidecar, a worker killed under
load (others' streams complete, counters never go backwards, the restart is counted), a
worker stopped for 5 s while /metrics keeps answering, SIGTERM draining every worker,
`--workers auto` under an affinity mask.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from harness import http_client
from harness.sidecar import Sidecar, run_sidecar, samples, value, wait_for
from harness.upstream import Script, scripted_upstream, sse

pytestmark = pytest.mark.e2e
CHAT = "/v1/chat/completions"
TOKEN = '{"choices":[{"index":0,"delta":{"content":"x"}}]}'
USAGE = '{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":4,"total_tokens":11}}'
QUICK = Script([(0, sse(TOKEN)), (0.005, sse(TOKEN, TOKEN, TOKEN, USAGE, "[DONE]"))])
SLOW = Script([(0, sse(TOKEN))] + [(0.1, sse(TOKEN))] * 20 + [(0, sse("[DONE]"))])  # ~2 s


def total(text: str, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples(text).items() if n == name and want <= set(ls))


@contextmanager
def two_workers(tmp_path: Path, script: Script, *args: str) -> Iterator[Sidecar]:
    """The sidecar with --workers 2 before a scripted upstream (also /quick: QUICK)."""
    with scripted_upstream() as upstream:
        upstream.script(CHAT, script)
        upstream.script("/quick" + CHAT, QUICK)
        with run_sidecar(
            tmp_path, "--no-gpu-metrics", "--workers", "2", *args, upstream=upstream.url
        ) as sidecar:
            yield sidecar


def wait_total(sidecar: Sidecar, name: str, at_least: float) -> str:
    """Scrape until the sum of a metric over all its series reaches `at_least`."""

    def check() -> str | None:
        text = sidecar.metrics()
        return text if total(text, name) >= at_least else None

    return wait_for(check, what=f"sum of {name} >= {at_least}")


def post(url: str, model: str = "m", team: str = "") -> None:
    headers = {"X-Team": team} if team else {}
    with http_client.Client(timeout=10) as client:  # a new connection each time: any worker
        body = {"model": model, "stream": True}
        client.post(url + CHAT, json=body, headers=headers).raise_for_status()


class RawStream:
    """A streaming request on its own socket, so the test knows its client port."""

    def __init__(self, proxy_url: str) -> None:
        port = int(proxy_url.rsplit(":", 1)[1])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        body = b'{"model": "m", "stream": true}'
        self.sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.error: BaseException | None = None
        self.first = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                self.received += chunk
                if b"data:" in self.received:
                    self.first.set()
        except OSError as exc:
            self.error = exc
        finally:
            self.first.set()
            self.sock.close()

    @property
    def complete(self) -> bool:
        return self.received.rstrip().endswith(b"0") and b"data: [DONE]" in self.received


def open_streams(sidecar: Sidecar, count: int) -> list[RawStream]:
    """`count` streams, each past its first event (so each is on some worker)."""
    streams = []
    for _ in range(count):
        streams.append(RawStream(sidecar.proxy_url))
        time.sleep(0.02)  # spread the accepts: both workers' loops get a chance
    for stream in streams:
        assert stream.first.wait(10)
    return streams


def worker_of(stream: RawStream, pids: list[int]) -> int | None:
    for pid in pids:
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == stream.port:
                return pid
    return None


def test_counts_are_exact_across_two_workers(tmp_path: Path) -> None:
    with two_workers(tmp_path, QUICK) as sidecar:
        assert len(sidecar.worker_pids()) == 2
        threads = [
            threading.Thread(target=lambda: [post(sidecar.proxy_url) for _ in range(15)])
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        text = sidecar.wait_metric("infermeter_requests_total", 60.0, code="200")
        text = sidecar.wait_metric("infermeter_inter_token_latency_seconds_count", 180.0, model="m")
    assert value(text, "infermeter_completion_tokens_total", model="m") == 240.0
    assert value(text, "infermeter_prompt_tokens_total", model="m") == 420.0
    assert value(text, "infermeter_time_to_first_token_seconds_count", model="m") == 60.0
    assert value(text, "infermeter_time_to_first_token_seconds_bucket", le="+Inf") == 60.0
    assert value(text, "infermeter_requests_in_flight", model="m") == 0.0
    # Both workers report their loop: each worker's series is its own.
    lag = {dict(ls)["worker"] for (n, ls) in samples(text) if n.startswith("infermeter_event_loop")}
    assert lag == {"0", "1"}


def test_the_model_and_attribute_caps_hold_for_the_whole_sidecar(tmp_path: Path) -> None:
    args = ("--max-models", "3", "--attribute", "team=X-Team", "--max-attribute-values", "2")
    with two_workers(tmp_path, QUICK, *args) as sidecar:
        models = [f"model-{i}" for i in range(10)]

        def client(offset: int) -> None:
            for i in range(len(models)):
                model = models[(i + offset) % len(models)]
                post(sidecar.proxy_url, model, team=f"team-{model[-1]}")

        threads = [threading.Thread(target=client, args=(k * 3,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        text = wait_total(sidecar, "infermeter_requests_total", 40.0)
    counts: dict[str, float] = {}
    teams: dict[str, float] = {}
    for (n, ls), v in samples(text).items():
        if n == "infermeter_requests_total":
            counts[dict(ls)["model"]] = counts.get(dict(ls)["model"], 0.0) + v
            teams[dict(ls)["team"]] = teams.get(dict(ls)["team"], 0.0) + v
    assert len(teams) == 3  # two own values and _other, across both workers
    assert all(v == 4.0 for team, v in teams.items() if team != "_other")
    assert teams["_other"] == 40.0 - 8.0
    assert len(counts) == 4  # three own labels and _other, across both workers
    assert "_other" in counts
    named = {model: v for model, v in counts.items() if model != "_other"}
    assert set(named) <= set(models)
    assert all(v == 4.0 for v in named.values())  # a model has one label in every worker
    assert counts["_other"] == 40.0 - 12.0


def test_a_killed_worker_is_restarted_and_the_other_workers_streams_complete(
    tmp_path: Path,
) -> None:
    with two_workers(tmp_path, SLOW) as sidecar:
        for _ in range(10):
            with http_client.Client(timeout=10) as client:
                client.post(sidecar.proxy_url + "/quick" + CHAT, json={"model": "m"})
        before = sidecar.wait_metric("infermeter_requests_total", 10.0, code="200")
        pids = sidecar.worker_pids()
        streams = open_streams(sidecar, 12)
        where = {id(s): worker_of(s, pids) for s in streams}
        victim = where[id(streams[0])]
        assert victim is not None
        survivors = [s for s in streams if where[id(s)] not in (victim, None)]
        assert survivors, "every stream landed on one worker"
        seen = [total(before, "infermeter_requests_total")]
        os.kill(victim, signal.SIGKILL)
        for stream in streams:
            stream.thread.join(15)
            assert not stream.thread.is_alive()
        assert all(s.complete for s in survivors)
        assert all(s.error is None for s in survivors)

        def restarted() -> str | None:
            text = sidecar.metrics()
            seen.append(total(text, "infermeter_requests_total"))
            ok = value(text, "infermeter_worker_restarts_total", worker="0") is not None
            restarts = total(text, "infermeter_worker_restarts_total")
            ready = sidecar.get("/readyz").status_code == 200
            return text if ok and restarts == 1.0 and ready else None

        wait_for(restarted, what="the worker restarted")
        assert len(sidecar.worker_pids()) == 2
        assert victim not in sidecar.worker_pids()
        post(sidecar.proxy_url)
        final = wait_total(sidecar, "infermeter_requests_total", 10 + len(survivors) + 1)
        seen.append(total(final, "infermeter_requests_total"))
    assert seen == sorted(seen), f"a counter went backwards: {seen}"
    assert "worker died; restarting" in sidecar.log()


def test_a_stopped_worker_never_blocks_metrics(tmp_path: Path) -> None:
    with two_workers(tmp_path, QUICK) as sidecar:
        post(sidecar.proxy_url)
        sidecar.wait_metric("infermeter_requests_total", 1.0, code="200")
        stuck = sidecar.worker_pids()[0]
        os.kill(stuck, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 5
            answers = 0
            while time.monotonic() < deadline:
                response = sidecar.get("/metrics")  # 5 s client timeout
                assert response.status_code == 200
                assert value(response.text, "infermeter_requests_total", code="200") >= 1.0
                answers += 1
                time.sleep(0.25)
            text = sidecar.metrics()
        finally:
            os.kill(stuck, signal.SIGCONT)
        ages = {
            dict(ls)["worker"]: v
            for (n, ls), v in samples(text).items()
            if n == "infermeter_worker_snapshot_age_seconds"
        }
        assert max(ages.values()) >= 4.5
        assert min(ages.values()) < 2
        assert answers >= 10
        wait_for(
            lambda: (
                max(
                    total(sidecar.metrics(), "infermeter_worker_snapshot_age_seconds", worker=w)
                    for w in ("0", "1")
                )
                < 2
            ),
            what="the stopped worker handing over again",
        )


def test_sigterm_drains_every_worker(tmp_path: Path) -> None:
    with two_workers(tmp_path, SLOW, "--drain-timeout", "10") as sidecar:
        streams = open_streams(sidecar, 8)
        pids = sidecar.worker_pids()
        busy = {worker_of(s, pids) for s in streams}
        sidecar.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: sidecar.get("/readyz").status_code == 503, what="not ready")
        with pytest.raises(httpx.ConnectError):
            http_client.post(sidecar.proxy_url + CHAT, json={"model": "m"}, timeout=5)
        for stream in streams:
            stream.thread.join(15)
        code = sidecar.proc.wait(timeout=20)
    assert all(s.complete and s.error is None for s in streams)
    assert code == 0
    assert len(busy) == 2 or None not in busy
    assert sidecar.log().count("infermeter.worker draining") == 2  # each worker drained
    assert "drain timeout" not in sidecar.log()


def test_workers_auto_follows_the_affinity_mask(tmp_path: Path) -> None:
    with scripted_upstream() as upstream:
        upstream.script(CHAT, QUICK)
        with run_sidecar(
            tmp_path, "--no-gpu-metrics", "--workers", "auto", upstream=upstream.url,
            prefix=("taskset", "-c", "0"),
        ) as sidecar:  # fmt: skip
            text = sidecar.metrics()
            assert len(sidecar.worker_pids()) == 1
    restarts = [ls for (n, ls) in samples(text) if n == "infermeter_worker_restarts_total"]
    assert len(restarts) == 1
