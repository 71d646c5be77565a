"""The engine fetcher thread: reads the engine's /metrics on a cadence into a snapshot.

It runs on its own thread with a plain blocking HTTP client, never on the proxy's loop, and
a scrape only reads the last snapshot. Every fetch is bounded: one deadline for the whole
exchange (enforced by shutting the socket down), a size cap, no redirects followed. A failure
sets engine_up 0 and is logged once per outage; the rest of the sidecar carries on.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from urllib.parse import unquote, urlsplit

from prometheus_client.parser import text_string_to_metric_families

from infermeter import __version__
from infermeter.engine import mapping

log = logging.getLogger(__name__)
VERSION_MAX_BYTES = 64 * 1024
_CHUNK = 64 * 1024


class FetchError(Exception):
    """A fetch that gave nothing usable; `status` is the HTTP status when there was one."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


def resolve_url(setting: str, upstream: str | None) -> str | None:
    """`off` -> None; `auto` -> the upstream origin's /metrics (None without an upstream)."""
    if setting == "off":
        return None
    if setting != "auto":
        return setting
    if upstream is None:
        return None
    parts = urlsplit(upstream)
    return f"{parts.scheme}://{parts.netloc}/metrics"


def redact(url: str) -> str:
    """The URL for logs: credentials in it (user:password@) are never logged."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


@cache
def _tls() -> ssl.SSLContext:
    """The system's trust store, loaded once: building a context reads every CA certificate
    (~40 ms of CPU), which an https engine endpoint would otherwise pay on every poll."""
    return ssl.create_default_context()


def fetch(url: str, timeout: float, max_bytes: int, accept: str) -> bytes:
    """GET `url`: the whole exchange within `timeout` seconds, at most `max_bytes` of body."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout, context=_tls())
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    expired = threading.Event()

    def expire() -> None:  # wakes a recv() blocked on a peer that drips bytes
        expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {
            "Accept": accept,
            "Accept-Encoding": "identity",
            "User-Agent": f"infermeter/{__version__}",
        }
        if parts.username is not None:  # http://user:password@host/metrics: basic auth
            token = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            moved = 300 <= response.status < 400
            raise FetchError(
                "redirect not followed" if moved else f"HTTP {response.status}", response.status
            )
        length = response.getheader("content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            raise FetchError(f"larger than {max_bytes} bytes")
        body = bytearray()
        while chunk := response.read1(_CHUNK):
            body += chunk
            if len(body) > max_bytes:
                raise FetchError(f"larger than {max_bytes} bytes")
        if expired.is_set():  # the shut-down socket reads as a clean end: it is not one
            raise OSError("deadline")
        if length is not None and length.isdigit() and len(body) < int(length):
            raise FetchError(f"body cut short at {len(body)} of {length} bytes")
        return bytes(body)
    except FetchError:
        raise
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise FetchError(f"no complete answer within {timeout:g} s") from None
        raise FetchError(type(exc).__name__ + (f": {exc}" if str(exc) else "")) from None
    finally:
        timer.cancel()
        conn.close()


@dataclass(frozen=True, slots=True)
class Parsed:
    names: frozenset[str]  # every metric name present (to recognise the engine)
    samples: dict[str, list[tuple[dict[str, str], float]]]  # those re-exported, parsed


def parse(body: bytes) -> Parsed:
    """A Prometheus text exposition; FetchError when it does not parse."""
    try:
        kept, names = mapping.select(body.decode("utf-8"))
        return Parsed(names, mapping.flatten(text_string_to_metric_families(kept)))
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise FetchError(f"not Prometheus text: {str(exc)[:200]}") from None


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    """What a scrape shows. `up` None: nothing to report (not fetched yet, or no /metrics)."""

    up: bool | None = None
    engine: str = ""
    version: str = ""
    figures: tuple[mapping.FigureSample, ...] = ()
    fetch_seconds: float | None = None
    fetch_ok: bool = True


class EngineFetcher:
    def __init__(
        self,
        url: str,
        *,
        auto: bool,
        interval: float,
        timeout: float,
        max_bytes: int,
        engine: str = "auto",
        max_models: int = 64,
        model_label: Callable[[str], str] | None = None,
    ) -> None:
        self.url = url
        self._shown = redact(url)  # for logs
        self.auto = auto  # the URL was guessed from --upstream: a 404 means "no /metrics"
        self.interval = interval
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.forced = mapping.BY_NAME.get(engine)
        self._cap = mapping.ModelCap(max_models, model_label)
        self._snapshot = EngineSnapshot()
        self._ever_up = False
        self._failing = False
        self._unrecognised_logged = False
        self._table: mapping.EngineTable | None = None
        self._version = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="infermeter-engine", daemon=True)

    # --- used by other threads -------------------------------------------------------------
    def snapshot(self) -> EngineSnapshot:
        return self._snapshot

    def start(self) -> None:
        log.info("engine metrics on", extra={"url": self._shown, "interval": self.interval})
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 1)

    # --- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.interval)

    def poll_once(self) -> None:
        started = time.perf_counter()
        try:
            parsed = parse(fetch(self.url, self.timeout, self.max_bytes, _ACCEPT))
        except FetchError as error:
            self._failed(error, time.perf_counter() - started)
            return
        table = self.forced or mapping.detect(parsed.names)
        if table is not None and table is not self._table:
            self._table = table
            self._version = self._read_version(table)
            log.info("engine recognised", extra={"engine": table.name, "version": self._version})
        elif table is None and not self._unrecognised_logged:
            self._unrecognised_logged = True
            log.warning(
                "engine metrics not recognised: none re-exported", extra={"url": self._shown}
            )
        found = mapping.figures(table, parsed.samples, self._cap) if table is not None else ()
        if self._failing:
            log.info("engine metrics back", extra={"url": self._shown})
        self._failing, self._ever_up = False, True
        self._snapshot = EngineSnapshot(
            up=True,
            engine=table.name if table is not None else "",
            version=self._version if table is not None else "",
            figures=found,
            fetch_seconds=time.perf_counter() - started,
        )

    def _failed(self, error: FetchError, seconds: float) -> None:
        if self.auto and not self._ever_up and error.status == 404:
            if not self._failing:
                log.info(
                    "the upstream serves no /metrics: no engine metrics (set --engine-metrics)",
                    extra={"url": self._shown},
                )
                self._failing = True
            self._snapshot = EngineSnapshot(fetch_seconds=seconds)
            return
        if not self._failing:
            log.warning(
                "engine metrics unavailable", extra={"url": self._shown, "reason": str(error)}
            )
            self._failing = True
        self._snapshot = EngineSnapshot(up=False, fetch_seconds=seconds, fetch_ok=False)

    def _read_version(self, table: mapping.EngineTable) -> str:
        if table.version_path is None:
            return ""
        parts = urlsplit(self.url)
        url = f"{parts.scheme}://{parts.netloc}{table.version_path}"
        try:
            body = fetch(url, self.timeout, VERSION_MAX_BYTES, "application/json")
            return mapping.version_from(table, json.loads(body))
        except (FetchError, ValueError):
            return ""


_ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
