"""Asks the kubelet's pod-resources socket `List` on a cadence, in its own thread.

A scrape reads the latest attribution and never waits on the kubelet. `List` (served by every
kubelet since 1.20) rather than `Watch`: a restart of either side needs no resync logic.
grpcio does the HTTP/2 and gRPC framing over the Unix socket; the answer is decoded by
`wire`. A missing socket, a refused permission, a slow or garbled answer all end the same
way: no pod labels, `infermeter_collector_success{collector="kubelet"} 0`, one log line
until the kubelet answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from infermeter.collectors import Status
from infermeter.kubelet.attribution import Attribution, attribute
from infermeter.kubelet.wire import WireError, decode_list_response

log = logging.getLogger(__name__)
LIST_METHOD = "/v1.PodResourcesLister/List"
MAX_TIMEOUT = 5.0
MAX_ANSWER_BYTES = 16 * 1024 * 1024  # the kubelet's own limit for this API


class PodResourcesPoller:
    def __init__(self, socket_path: Path, interval: float) -> None:
        self.socket_path = socket_path
        self.interval = interval
        self.timeout = min(interval, MAX_TIMEOUT)
        self._attribution = Attribution()
        self._status = Status(ok=False, seconds=None)
        self._failing = False
        self._channel: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="infermeter-kubelet", daemon=True)

    # --- used by other threads -------------------------------------------------------------
    def attribution(self) -> Attribution:
        return self._attribution

    def status(self) -> Status:
        return self._status

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 1)

    # --- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        import grpc  # only DaemonSets with attribution pay for loading it

        self._channel = grpc.insecure_channel(
            f"unix://{self.socket_path}",
            options=[("grpc.max_receive_message_length", MAX_ANSWER_BYTES)],
        )
        call = self._channel.unary_unary(LIST_METHOD)  # no (de)serialisers: raw bytes
        try:
            while not self._stop.is_set():
                self.refresh(call, grpc.RpcError)
                self._stop.wait(self.interval)
        finally:
            self._channel.close()

    def refresh(self, call: Any, rpc_error: type[Exception]) -> None:
        started = time.perf_counter()
        try:
            answer = call(b"", timeout=self.timeout)
            attribution = attribute(decode_list_response(bytes(answer)))
        except (rpc_error, WireError) as error:
            self._fail(error, time.perf_counter() - started)
            return
        self._attribution = attribution
        self._status = Status(ok=True, seconds=time.perf_counter() - started)
        if self._failing:
            log.info("kubelet pod resources back", extra={"socket": str(self.socket_path)})
        self._failing = False

    def _fail(self, error: Exception, seconds: float) -> None:
        self._attribution = Attribution()  # stale labels would be wrong labels
        self._status = Status(ok=False, seconds=seconds)
        if not self._failing:
            log.warning(
                "kubelet pod resources unavailable: GPU series without pod labels",
                extra={"socket": str(self.socket_path), "reason": _reason(error)},
            )
        self._failing = True


def _reason(error: Exception) -> str:
    code = getattr(error, "code", None)
    if callable(code):
        details = getattr(error, "details", lambda: "")() or ""
        return f"{getattr(code(), 'name', code())}: {details}"[:200]
    return str(error)[:200]
