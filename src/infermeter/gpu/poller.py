"""The NVML poller thread: reads every selected device at a fixed interval into a snapshot.

A scrape only reads the latest snapshot, so it never waits on NVML (a slow or hung driver
call delays the next poll, not Prometheus). The thread degrades instead of dying: NVML
missing -> retry with backoff; a field unsupported -> stop asking; a GPU lost -> gpu_up 0.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field

from infermeter.gpu import nvml
from infermeter.gpu.api import NvmlApi
from infermeter.gpu.model import DeviceIdentity, DeviceSample, Reading, Snapshot
from infermeter.gpu.xid import XidCounts, XidWatcher

log = logging.getLogger(__name__)
MAX_BACKOFF = 60.0


class _NvmlDown(Exception):
    def __init__(self, error: nvml.ErrorLike) -> None:
        super().__init__(nvml.describe(error))


@dataclass(slots=True)
class _Device:
    """Mutable per-device state, owned by the poller thread alone."""

    index: int
    handle: nvml.Handle | None = None
    identity: DeviceIdentity | None = None
    probes: list[nvml.Probe] = field(default_factory=list)
    up: bool = False
    readings: tuple[Reading, ...] = ()
    is_mig: bool = False


def selected(identity: DeviceIdentity, selection: tuple[str, ...]) -> bool:
    if not selection:
        return True
    keys = {str(identity.index), identity.uuid}
    if identity.parent_uuid:
        keys.add(identity.parent_uuid)
    return bool(keys & set(selection))


class GpuPoller:
    def __init__(
        self, interval: float, selection: tuple[str, ...] = (), api: NvmlApi = nvml
    ) -> None:
        self.interval = interval
        self._api = api
        self.selection = selection
        self.xid_counts = XidCounts()
        self._snapshot = Snapshot()
        self._devices: list[_Device] = []
        self._driver_version = ""
        self._nvml_up = False
        self._xid: XidWatcher | None = None
        self._backoff = interval
        self._logged_down = False
        self._stop = threading.Event()
        self._first_poll = threading.Event()
        self._thread = threading.Thread(target=self._run, name="infermeter-nvml", daemon=True)

    # --- used by other threads -------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def first_poll_done(self) -> bool:
        return self._first_poll.is_set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    # --- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self.step())
        self._teardown()

    def step(self) -> float:
        """One round: (re-)initialise if NVML is down, else poll every device and publish.
        Returns the seconds to wait before the next round (the thread's loop; tests call
        it directly)."""
        if not self._nvml_up:
            try:
                self._initialise()
            except _NvmlDown as down:
                if not self._logged_down:
                    log.warning(
                        "NVML unavailable: GPU metrics off, retrying with backoff",
                        extra={"reason": str(down)},
                    )
                    self._logged_down = True
                self._publish(poll_seconds=None, ok=False)
                self._first_poll.set()
                wait = self._backoff
                self._backoff = min(self._backoff * 2, MAX_BACKOFF)
                return wait
            log.info(
                "NVML initialised",
                extra={"driver": self._driver_version, "devices": len(self._devices)},
            )
            self._backoff, self._logged_down = self.interval, False
        started = time.perf_counter()
        try:
            self._poll()
        except _NvmlDown as down:
            log.warning("NVML failed: re-initialising", extra={"reason": str(down)})
            self._teardown()
            self._publish(poll_seconds=None, ok=False)
            return 0.0
        self._publish(poll_seconds=time.perf_counter() - started, ok=True)
        self._first_poll.set()
        return self.interval

    def _initialise(self) -> None:
        try:
            self._api.init()
        except nvml.NVMLError as error:
            raise _NvmlDown(error) from None
        try:
            self._driver_version = self._api.driver_version()
            self._devices = self._enumerate()
        except nvml.NVMLError as error:
            with contextlib.suppress(nvml.NVMLError):
                self._api.shutdown()
            raise _NvmlDown(error) from None
        self._nvml_up = True
        gpus = [(d.handle, d.identity) for d in self._devices if d.identity and not d.is_mig]
        self._xid = XidWatcher.start(
            [(h, i) for h, i in gpus if h is not None], self.xid_counts, self._api
        )

    def _enumerate(self) -> list[_Device]:
        devices: list[_Device] = []
        for index in range(self._api.device_count()):
            device = _Device(index, probes=self._api.make_probes())
            devices.append(device)
            self._acquire(device)
            if device.handle is None or device.identity is None:
                continue
            try:
                for handle in self._api.mig_handles(device.handle):
                    identity = self._api.mig_identity(device.identity, handle)
                    mig = _Device(index, handle, identity, self._api.make_probes(), is_mig=True)
                    devices.append(mig)
            except nvml.NVMLError as error:
                self._raise_if_down(error)
                log.warning(
                    "MIG devices unreadable", extra={"gpu": index, "reason": nvml.describe(error)}
                )
        chosen = [
            d
            for d in devices
            if (d.identity and selected(d.identity, self.selection))
            or (d.identity is None and (not self.selection or str(d.index) in self.selection))
        ]
        known = {str(d.index) for d in devices} | {d.identity.uuid for d in devices if d.identity}
        for wanted in self.selection:
            if wanted not in known:
                log.warning("selected GPU not found", extra={"gpu": wanted})
        return chosen

    def _acquire(self, device: _Device) -> None:
        """Get the handle and identity of a full GPU; a lost GPU stays without."""
        try:
            handle = self._api.handle_by_index(device.index)
            device.identity = self._api.gpu_identity(device.index, handle)
            device.handle = handle
        except nvml.NVMLError as error:
            self._raise_if_down(error)
            log.warning(
                "GPU unreadable", extra={"gpu": device.index, "reason": nvml.describe(error)}
            )

    @staticmethod
    def _raise_if_down(error: nvml.ErrorLike) -> None:
        if nvml.classify(error) is nvml.Failure.NVML_DOWN:
            raise _NvmlDown(error) from None

    def _poll(self) -> None:
        for device in self._devices:
            was_up = device.up
            if device.handle is None and not device.is_mig:
                self._acquire(device)
            device.up, device.readings = self._read(device)
            if was_up != device.up and device.identity is not None:
                level = logging.INFO if device.up else logging.WARNING
                log.log(
                    level,
                    "GPU back" if device.up else "GPU lost",
                    extra={"gpu": device.index, "uuid": device.identity.uuid},
                )

    def _read(self, device: _Device) -> tuple[bool, tuple[Reading, ...]]:
        if device.handle is None:
            return False, ()
        readings: list[Reading] = []
        answered = False
        for probe in list(device.probes):
            try:
                readings.extend(probe(device.handle))
                answered = True
            except nvml.NVMLError as error:
                failure = nvml.classify(error)
                if failure is nvml.Failure.NOT_SUPPORTED:
                    device.probes.remove(probe)
                    self._api.close_probes([probe])
                    log.info(
                        "GPU field not supported: no longer read",
                        extra={
                            "gpu": device.index,
                            "uuid": device.identity.uuid if device.identity else "",
                            "field": _probe_name(probe),
                            "reason": nvml.describe(error),
                        },
                    )
                elif failure is nvml.Failure.GPU_LOST:
                    return False, ()
                elif failure is nvml.Failure.NVML_DOWN:
                    raise _NvmlDown(error) from None
        if not answered:
            try:
                self._api.uuid_of(device.handle)
            except nvml.NVMLError as error:
                self._raise_if_down(error)
                return False, ()
        return True, tuple(readings)

    def _publish(self, *, poll_seconds: float | None, ok: bool) -> None:
        samples = tuple(
            DeviceSample(d.identity, d.up, d.readings if d.up else ())
            for d in self._devices
            if d.identity is not None
        ) + tuple(
            DeviceSample(DeviceIdentity(d.index, ""), False)
            for d in self._devices
            if d.identity is None
        )
        self._snapshot = Snapshot(
            nvml_up=self._nvml_up,
            driver_version=self._driver_version,
            devices=samples if self._nvml_up else (),
            poll_seconds=poll_seconds,
            poll_ok=ok,
        )

    def _teardown(self) -> None:
        if self._xid is not None:
            self._xid.stop()
            self._xid = None
        for device in self._devices:
            self._api.close_probes(device.probes)
        if self._nvml_up:
            with contextlib.suppress(nvml.NVMLError):
                self._api.shutdown()
        self._nvml_up = False
        self._devices = []


def _probe_name(probe: nvml.Probe) -> str:
    return getattr(probe, "__name__", type(probe).__name__.strip("_").lower())
