"""XID errors as a real counter: a thread blocks in nvmlEventSetWait and counts each event.

Polling a "last XID" field (as dcgm-exporter's gauge does) misses repeats and cannot be
summed; counting events can.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter

from infermeter.gpu import nvml
from infermeter.gpu.api import NvmlApi
from infermeter.gpu.model import DeviceIdentity

log = logging.getLogger(__name__)
WAIT_MS = 500


class XidCounts:
    """Counts that outlive NVML re-initialisation; read by the scrape thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._last: dict[str, int] = {}

    def add(self, identity: DeviceIdentity, xid: int) -> None:
        with self._lock:
            self._counts[(str(identity.index), identity.uuid, str(xid))] += 1
            self._last[identity.uuid] = xid

    def copy(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._counts)

    def last(self) -> dict[str, int]:
        """The latest XID by GPU UUID (what dcgm-exporter's DCGM_FI_DEV_XID_ERRORS shows)."""
        with self._lock:
            return dict(self._last)


class XidWatcher:
    """Registers every GPU for XID events and counts them until stopped or NVML fails."""

    def __init__(
        self,
        event_set: object,
        devices: dict[int, DeviceIdentity],
        counts: XidCounts,
        api: NvmlApi = nvml,
    ) -> None:
        self._api = api
        self._event_set = event_set
        self._devices = devices  # handle key -> identity
        self._counts = counts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="infermeter-xid", daemon=True)

    @classmethod
    def start(
        cls,
        handles: list[tuple[nvml.Handle, DeviceIdentity]],
        counts: XidCounts,
        api: NvmlApi = nvml,
    ) -> XidWatcher | None:
        try:
            event_set = api.event_set_create()
        except nvml.NVMLError as error:
            log.info("XID events unavailable", extra={"reason": nvml.describe(error)})
            return None
        registered: dict[int, DeviceIdentity] = {}
        for handle, identity in handles:
            try:
                api.register_xid_events(handle, event_set)
            except nvml.NVMLError as error:
                log.info(
                    "XID events unavailable for GPU",
                    extra={"gpu": identity.index, "reason": nvml.describe(error)},
                )
                continue
            registered[api.handle_key(handle)] = identity
        watcher = cls(event_set, registered, counts, api)
        watcher._thread.start()
        return watcher

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * WAIT_MS / 1000)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._api.wait_event(self._event_set, WAIT_MS)
            except nvml.NVMLError as error:
                failure = nvml.classify(error)
                if failure is nvml.Failure.NVML_DOWN:
                    log.warning("XID event wait stopped", extra={"reason": nvml.describe(error)})
                    return
                if failure is nvml.Failure.NOT_SUPPORTED:
                    log.info("XID events unavailable", extra={"reason": nvml.describe(error)})
                    break
                self._stop.wait(1.0)  # a lost GPU can make waits fail; keep listening
                continue
            if event is None:
                continue
            key, xid = event
            identity = self._devices.get(key)
            if identity is None:
                continue
            self._counts.add(identity, xid)
            log.warning(
                "GPU XID error", extra={"gpu": identity.index, "uuid": identity.uuid, "xid": xid}
            )
        with contextlib.suppress(nvml.NVMLError):
            self._api.event_set_free(self._event_set)
